"""BertClassifier: logits equal Hugging Face's BertForSequenceClassification on the real MiniLM weights;
config round trip; raw-text model; head weights under Google's names."""


import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import bert_tf
from bert_tf.tasks.classification.model import BertClassifier

SENTENCES = ["The movie was a delight from start to finish.", "I would not recommend this phone to anyone.",
             "Stocks closed flat on Tuesday."]
PAIRS = ["A man is playing a flute.", "Nobody plays anything.", "Markets were unchanged."]


def _tiny_encoder(vocab_size=30522):
    cfg = bert_tf.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64)
    return bert_tf.BertEncoder(cfg)


def _inputs(batch=2, length=6):
    ids = np.arange(1, batch * length + 1, dtype="int32").reshape(batch, length) % 50 + 5
    return {"input_word_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return bert_tf.from_pretrained(minilm_dir)


def test_matches_hf_sequence_classification(minilm, minilm_dir):
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=3).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    clf = BertClassifier(minilm.encoder, num_classes=3)
    enc = tok(SENTENCES, PAIRS, padding=True, return_tensors="np")
    feats = {"input_word_ids": enc["input_ids"].astype("int32"), "input_mask": enc["attention_mask"].astype("int32"),
             "input_type_ids": enc["token_type_ids"].astype("int32")}
    clf(feats)
    clf.load_head_weights({"output_weights": hf.classifier.weight.detach().numpy(),
                           "output_bias": hf.classifier.bias.detach().numpy()})
    with torch.no_grad():
        want = hf(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    got = clf(feats, training=False).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 3)
    np.testing.assert_allclose(got, want, atol=2e-4)
    # Training mode applies dropout (different logits), inference does not.
    assert not np.allclose(clf(feats, training=True).numpy(), want, atol=1e-4)
    np.testing.assert_allclose(clf.head_weights()["output_weights"], hf.classifier.weight.detach().numpy())


def test_text_model_and_preprocessor(minilm, minilm_dir):
    pre = bert_tf.BertPreprocessor(minilm.vocab_file, lower_case=True, seq_length=32)
    clf = BertClassifier(minilm.encoder, num_classes=2, preprocessor=pre, labels=["neg", "pos"])
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    enc = tok(SENTENCES, PAIRS, padding="max_length", max_length=32, return_tensors="np")
    feats = {"input_word_ids": enc["input_ids"].astype("int32"), "input_mask": enc["attention_mask"].astype("int32"),
             "input_type_ids": enc["token_type_ids"].astype("int32")}
    want = clf(feats).numpy()
    # Raw text through the classifier itself, and through the functional text model.
    np.testing.assert_allclose(clf([tf.constant(SENTENCES), tf.constant(PAIRS)]).numpy(), want, atol=1e-5)
    model = clf.text_model(pair=True)
    out = model([tf.constant(SENTENCES), tf.constant(PAIRS)])
    np.testing.assert_allclose(out["logits"].numpy(), want, atol=1e-5)
    probs = out["probabilities"].numpy()
    np.testing.assert_allclose(probs, tf.nn.softmax(want).numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    single = clf.text_model()(tf.constant(SENTENCES))["probabilities"]
    assert single.shape == (3, 2)
    with pytest.raises(ValueError, match="no preprocessor"):
        BertClassifier(minilm.encoder, num_classes=2)(tf.constant(["x"]))


def test_regression_head_and_text_model(minilm):
    pre = bert_tf.BertPreprocessor(minilm.vocab_file, seq_length=16)
    clf = BertClassifier(minilm.encoder, num_classes=1, preprocessor=pre)
    assert clf.is_regression
    out = clf.text_model()(tf.constant(SENTENCES))
    assert out["scores"].shape == (3,)
    np.testing.assert_allclose(out["scores"].numpy(), out["logits"].numpy()[:, 0])


def test_get_config_round_trip():
    enc = _tiny_encoder()
    clf = BertClassifier(enc, num_classes=3, dropout_rate=0.2, labels=["a", "b", "c"])
    x = _inputs()
    want = clf(x).numpy()
    config = clf.get_config()
    clone = BertClassifier.from_config(config)
    clone(x)
    clone.set_weights(clf.get_weights())
    assert clone.get_config() == config
    assert (clone.num_classes, clone.dropout_rate, clone.labels) == (3, 0.2, ["a", "b", "c"])
    np.testing.assert_allclose(clone(x).numpy(), want, atol=1e-6)


def test_config_round_trip_with_preprocessor(minilm_vocab):
    pre = bert_tf.BertPreprocessor(minilm_vocab, seq_length=24, dynamic_padding=True)
    clf = BertClassifier(_tiny_encoder(), num_classes=2, preprocessor=pre)
    clone = BertClassifier.from_config(clf.get_config())
    assert clone.preprocessor.seq_length == 24 and clone.preprocessor.dynamic_padding
    assert clone.get_config() == clf.get_config()


def test_defaults_from_encoder_config_and_head_init():
    enc = _tiny_encoder()
    clf = BertClassifier(enc, num_classes=4)
    clf(_inputs())
    assert clf.dropout_rate == enc.config.hidden_dropout_prob
    kernel = clf.head.get_weights()[0]
    assert kernel.shape == (32, 4)
    assert np.abs(kernel).max() <= 2 * 0.02 + 1e-6  # truncated normal, stddev initializer_range
    assert np.all(clf.head.get_weights()[1] == 0)


def test_bad_arguments():
    enc = _tiny_encoder()
    with pytest.raises(ValueError, match="num_classes"):
        BertClassifier(enc, num_classes=0)
    with pytest.raises(ValueError, match="2 labels"):
        BertClassifier(enc, num_classes=3, labels=["a", "b"])
    clf = BertClassifier(enc, num_classes=2)
    clf(_inputs())
    with pytest.raises(ValueError, match="do not fit"):
        clf.load_head_weights({"output_weights": np.zeros((3, 32)), "output_bias": np.zeros(3)})
    with pytest.raises(ValueError, match="lack"):
        clf({"input_word_ids": np.ones((1, 4), "int32")})


def test_mixed_precision_logits_are_float32():
    import keras

    old = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        clf = BertClassifier(_tiny_encoder(), num_classes=2)
        out = clf(_inputs())
        assert out.dtype == tf.float32
        assert clf.head.compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy(old)
