"""keras-hub presets both ways on the real MiniLM weights: a preset that keras-hub's own converter made is read by
`from_pretrained`; `save_keras_hub_preset` writes presets that keras-hub loads (backbone, tokenizer, a
BertTextClassifier). Outputs agree within 1e-5 and token ids are equal; bad presets are clear errors."""

import dataclasses
import logging
import os
import shutil
import subprocess
import sys

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.model.checkpoints import CheckpointError
from fixtures.datasets import real_sentences

TOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Accents, CJK, punctuation: where casing rules and keras-hub's normaliser could part from Google's.
HARD_TEXTS = ["Café Müller's naïve résumé — Ångström, São Paulo!", "北京大学 is in Beijing (中国).",
              "ÉCOLE Normale Supérieure: façade, crème brûlée?"]


@pytest.fixture(scope="module")
def sentences():
    return real_sentences(300)


@pytest.fixture(scope="module")
def keras_hub_preset(tmp_path_factory, minilm_dir):
    """MiniLM converted and saved by keras-hub's own code (its Hugging Face loader, then save_to_preset)."""
    path = str(tmp_path_factory.mktemp("keras_hub_made") / "preset")
    keras_hub.models.BertBackbone.from_preset(minilm_dir).save_to_preset(path)
    keras_hub.models.BertTokenizer.from_preset(minilm_dir).save_to_preset(path)
    return path


@pytest.fixture(scope="module")
def keras_hub_backbone(keras_hub_preset):
    return keras_hub.models.BertBackbone.from_preset(keras_hub_preset)


@pytest.fixture(scope="module")
def minilm_tanh(minilm_dir):
    """MiniLM with keras-hub's tanh GELU: the model a keras-hub MiniLM preset holds."""
    config = bert_tf.BertConfig.from_json_file(os.path.join(minilm_dir, "config.json"))
    return bert_tf.from_pretrained(minilm_dir, config=dataclasses.replace(config, hidden_act="gelu_tanh"))


def _packed(vocab_file, texts, seq_length=64):
    return bert_tf.BertPreprocessor(vocab_file, lower_case=True, seq_length=seq_length)(tf.constant(texts))


def _max_diff(ours, theirs, inputs):
    mask = inputs["input_mask"].numpy()[..., None].astype(bool)
    seq = np.abs(np.where(mask, ours["sequence_output"].numpy() - theirs["sequence_output"].numpy(), 0.0)).max()
    pooled = np.abs(ours["pooled_output"].numpy() - theirs["pooled_output"].numpy()).max()
    return seq, pooled


def _keras_hub_outputs(backbone, inputs):
    return backbone({"token_ids": inputs["input_word_ids"], "segment_ids": inputs["input_type_ids"],
                     "padding_mask": inputs["input_mask"]})


def _ids(tokenize, texts):
    return [[int(i) for i in row] for row in tokenize(tf.constant(texts))]


# --------------------------------------------------------------------------- keras-hub -> bert_tf


def test_from_pretrained_reads_a_keras_hub_preset(keras_hub_preset, keras_hub_backbone, minilm_tanh, sentences,
                                                  caplog):
    with caplog.at_level(logging.WARNING):
        pretrained = bert_tf.from_pretrained(keras_hub_preset)
    assert pretrained.format == "keras_hub" and pretrained.lower_case
    assert pretrained.config == dataclasses.replace(minilm_tanh.config, hidden_dropout_prob=0.1,
                                                    attention_probs_dropout_prob=0.1)
    assert pretrained.extra_weights == {}
    # keras-hub's converter writes lowercase=True, strip_accents=False: the warning says so.
    assert "strip_accents=False" in caplog.text
    for ours, reference in zip(pretrained.encoder.weights, minilm_tanh.encoder.weights):
        np.testing.assert_array_equal(ours.numpy(), reference.numpy())

    inputs = _packed(pretrained.vocab_file, sentences[:16])
    seq, pooled = _max_diff(pretrained.encoder(inputs), _keras_hub_outputs(keras_hub_backbone, inputs), inputs)
    assert seq < TOL and pooled < TOL, (seq, pooled)


def test_token_ids_equal_keras_hubs_tokenizer_of_its_preset(keras_hub_preset, sentences):
    pretrained_vocab = os.path.join(keras_hub_preset, "assets", "tokenizer", "vocabulary.txt")
    ours = bert_tf.BertPreprocessor(pretrained_vocab, lower_case=True).tokenize
    theirs = keras_hub.models.BertTokenizer.from_preset(keras_hub_preset)
    assert _ids(ours, sentences) == _ids(theirs, sentences)
    # Documented difference: that preset keeps accents (strip_accents=False), Google's uncased rule drops them.
    assert _ids(ours, HARD_TEXTS[:1]) != _ids(theirs, HARD_TEXTS[:1])


# --------------------------------------------------------------------------- bert_tf -> keras-hub


@pytest.fixture(scope="module")
def written_preset(tmp_path_factory, minilm_tanh):
    return bert_tf.save_keras_hub_preset(minilm_tanh, str(tmp_path_factory.mktemp("ours") / "preset"))


def test_keras_hub_loads_our_preset_with_equal_outputs(written_preset, keras_hub_backbone, minilm_tanh, sentences):
    assert sorted(os.listdir(written_preset)) == ["assets", "config.json", "metadata.json", "model.weights.h5",
                                                  "tokenizer.json"]
    backbone = keras_hub.models.BertBackbone.from_preset(written_preset)
    inputs = _packed(minilm_tanh.vocab_file, sentences[16:32] + HARD_TEXTS)
    seq, pooled = _max_diff(minilm_tanh.encoder(inputs), _keras_hub_outputs(backbone, inputs), inputs)
    assert seq < TOL and pooled < TOL, (seq, pooled)
    # The same numbers in the same places as keras-hub's own conversion of the same Hugging Face file.
    for ours, theirs in zip(backbone.weights, keras_hub_backbone.weights):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


def test_keras_hub_tokenizer_of_our_preset_gives_our_ids(written_preset, minilm_tanh, sentences):
    texts = sentences + HARD_TEXTS
    ours = bert_tf.BertPreprocessor(minilm_tanh.vocab_file, lower_case=True).tokenize
    theirs = keras_hub.models.BertTokenizer.from_preset(written_preset)
    assert _ids(ours, texts) == _ids(theirs, texts)


def test_our_preset_reads_back_exactly_and_is_not_overwritten_by_accident(written_preset, minilm_tanh):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        bert_tf.save_keras_hub_preset(minilm_tanh, written_preset)
    again = bert_tf.from_pretrained(written_preset)
    assert again.format == "keras_hub" and again.lower_case and again.config == minilm_tanh.config
    for ours, reference in zip(again.encoder.weights, minilm_tanh.encoder.weights):
        np.testing.assert_array_equal(ours.numpy(), reference.numpy())


def _tiny_encoder(tmp_path, hidden_act="gelu_tanh", layer_norm_eps=1e-12, tokens=("[MASK]", "a", "b", "c")):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *tokens]) + "\n")
    config = bert_tf.BertConfig(vocab_size=4 + len(tokens), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, hidden_act=hidden_act, layer_norm_eps=layer_norm_eps)
    return bert_tf.BertEncoder(config), str(vocab)


def test_exact_gelu_is_refused_unless_allowed(tmp_path):
    encoder, vocab = _tiny_encoder(tmp_path, hidden_act="gelu")
    with pytest.raises(ValueError, match="exact erf GELU.*allow_gelu_tanh"):
        bert_tf.save_keras_hub_preset(encoder, str(tmp_path / "refused"), vocab_file=vocab, lower_case=True)
    assert not os.path.exists(tmp_path / "refused")
    path = bert_tf.save_keras_hub_preset(encoder, str(tmp_path / "allowed"), vocab_file=vocab, lower_case=True,
                                         allow_gelu_tanh=True)
    assert bert_tf.from_pretrained(path).config.hidden_act == "gelu_tanh"


def test_unrepresentable_settings_are_errors(tmp_path):
    encoder, vocab = _tiny_encoder(tmp_path, layer_norm_eps=1e-6)
    with pytest.raises(ValueError, match="layer_norm_eps=1e-06"):
        bert_tf.save_keras_hub_preset(encoder, str(tmp_path / "eps"), vocab_file=vocab, lower_case=True)
    encoder, vocab = _tiny_encoder(tmp_path, hidden_act="relu")
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        bert_tf.save_keras_hub_preset(encoder, str(tmp_path / "relu"), vocab_file=vocab, lower_case=True)
    encoder, vocab = _tiny_encoder(tmp_path, tokens=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match=r"lacks \['\[MASK\]'\]"):
        bert_tf.save_keras_hub_preset(encoder, str(tmp_path / "mask"), vocab_file=vocab, lower_case=True)
    with pytest.raises(ValueError, match="vocab_file= and lower_case="):
        bert_tf.save_keras_hub_preset(encoder, str(tmp_path / "novocab"))


# --------------------------------------------------------------------------- classifier


@pytest.fixture(scope="module")
def classifier(minilm_tanh):
    preprocessor = bert_tf.BertPreprocessor(minilm_tanh.vocab_file, lower_case=True, seq_length=24)
    model = bert_tf.BertClassifier(minilm_tanh.encoder, preprocessor, num_classes=3, is_pair=True)
    model.build()
    rng = np.random.default_rng(0)
    model.head.set_weights([rng.normal(0, 0.2, (384, 3)).astype("float32"), np.array([0.1, -0.2, 0.3], "float32")])
    return model


def test_classifier_becomes_a_bert_text_classifier_preset(classifier, sentences, tmp_path):
    path = bert_tf.save_keras_hub_preset(classifier, str(tmp_path / "clf"))
    task = keras_hub.models.BertTextClassifier.from_preset(path)
    # Long pairs: both sides are truncated to fit 24 tokens, by Google's rule and by keras-hub's round robin.
    first, second = tf.constant(sentences[100:112]), tf.constant(sentences[200:212])
    features = task.preprocessor(x=(first, second))
    ours = classifier.preprocessor((first, second))
    length = int(ours["input_word_ids"].shape[1])
    for ours_key, theirs_key in (("input_word_ids", "token_ids"), ("input_type_ids", "segment_ids"),
                                 ("input_mask", "padding_mask")):
        np.testing.assert_array_equal(ours[ours_key].numpy(), np.asarray(features[theirs_key])[:, :length])
    theirs = np.asarray(task(features))
    np.testing.assert_allclose(classifier((first, second)).numpy(), theirs, atol=TOL, rtol=0)

    again = bert_tf.from_pretrained(path)
    np.testing.assert_array_equal(again.extra_weights["output_weights"], classifier.head_weights()["output_weights"])
    np.testing.assert_array_equal(again.extra_weights["output_bias"], classifier.head_weights()["output_bias"])


def test_a_head_that_does_not_map_is_refused(minilm_tanh, tmp_path):
    preprocessor = bert_tf.BertPreprocessor(minilm_tanh.vocab_file, lower_case=True, seq_length=16)
    tagger = bert_tf.BertTokenTagger(minilm_tanh.encoder, preprocessor, labels=["O", "B-PER", "I-PER"])
    with pytest.raises(ValueError, match="BertTokenTagger: no keras-hub task"):
        bert_tf.save_keras_hub_preset(tagger, str(tmp_path / "tagger"))


def test_export_program_writes_a_preset(tmp_path):
    encoder, vocab = _tiny_encoder(tmp_path)
    model = bert_tf.BertClassifier(encoder, bert_tf.BertPreprocessor(vocab, seq_length=8), num_classes=2)
    model.build()
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    preset = str(tmp_path / "preset")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "export.py"), f"--keras_model={model_path}",
                           "--format=keras_hub", f"--preset_dir={preset}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    task = keras_hub.models.BertTextClassifier.from_preset(preset)
    texts = tf.constant(["a b c", "c a"])
    np.testing.assert_allclose(np.asarray(task.predict(texts, verbose=0)), model(texts).numpy(), atol=TOL, rtol=0)


# --------------------------------------------------------------------------- bad presets


def _tiny_backbone(kind):
    common = dict(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                  max_sequence_length=8)
    if kind == "DistilBertBackbone":
        return keras_hub.models.DistilBertBackbone(**common)
    return keras_hub.models.RobertaBackbone(**common)


@pytest.mark.parametrize("kind", ["DistilBertBackbone", "RobertaBackbone"])
def test_a_preset_of_another_architecture_is_an_error(kind, tmp_path):
    path = str(tmp_path / kind)
    _tiny_backbone(kind).save_to_preset(path)
    with pytest.raises(CheckpointError, match=f"config.json: a keras-hub preset of 'keras_hub>{kind}'.*"
                                              "keras_hub>BertBackbone"):
        bert_tf.from_pretrained(path)


@pytest.mark.parametrize("missing, expected", [
    ("model.weights.h5", r"without weights \(expected model.weights.h5 or model.weights.json"),
    ("tokenizer.json", "without tokenizer.json .*keras_hub>BertTokenizer"),
    ("assets", r"without its vocabulary \(expected assets/tokenizer/vocabulary.txt\)"),
])
def test_a_partial_preset_names_what_is_missing(written_preset, tmp_path, missing, expected):
    path = str(tmp_path / "partial")
    shutil.copytree(written_preset, path)
    target = os.path.join(path, missing)
    if os.path.isdir(target):
        shutil.rmtree(target)
    else:
        os.remove(target)
    with pytest.raises(CheckpointError, match=expected + ".*found: "):
        bert_tf.from_pretrained(path)
