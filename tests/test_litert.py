"""LiteRT export (bert_tf.export.litert): raw strings in a .tflite run by ai_edge_litert's InterpreterWithCustomOps.

Tiny random encoders on the real MiniLM vocabulary (30,522 tokens): the tokenizer inside is the real one.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.export import litert
from bert_tf.tasks.classification import litert as classifier_litert
from bert_tf.export import litert_parity
from fixtures import datasets

TEXTS = ["I love this phone, best purchase ever!", "meh", "Worst customer service I have ever had. " * 4,
         "The meeting is at 3pm on Tuesday."]


@pytest.fixture(scope="module")
def vocab():
    return bert_tf.load_vocab(os.path.join(datasets.minilm_dir(), "vocab.txt"))


def _classifier(vocab, num_classes=3, is_pair=False, seq_length=32, seed=0):
    tf.keras.utils.set_random_seed(seed)
    enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=64))
    pre = bert_tf.BertPreprocessor(vocabulary=vocab, seq_length=seq_length)
    labels = None if num_classes == 1 else ["negative", "neutral", "positive"][:num_classes]
    clf = bert_tf.BertClassifier(enc, pre, num_classes=num_classes, labels=labels, is_pair=is_pair)
    clf.build()
    # A head that separates classes clearly, so argmax comparisons are not decided by rounding.
    kernel, bias = clf.head.get_weights()
    clf.head.set_weights([kernel * 40, bias])
    return clf


@pytest.fixture(scope="module")
def clf(vocab):
    return _classifier(vocab)


@pytest.fixture(scope="module")
def float_export(clf, tmp_path_factory):
    return classifier_litert.export_litert(clf, tmp_path_factory.mktemp("litert") / "f32", precision="float32", task="tweets")


def _keras_outputs(clf, texts):
    pre = clf.preprocessor.with_padding(dynamic_padding=True)
    inputs = [tf.constant(t) for t in texts] if isinstance(texts, tuple) else tf.constant(texts)
    return {k: v.numpy() for k, v in clf.outputs_from_logits(clf(pre(inputs), training=False)).items()}


def test_float32_matches_keras_raw_strings_any_batch(clf, float_export):
    runner = classifier_litert.LiteRTClassifier(float_export)
    ref = _keras_outputs(clf, TEXTS)
    out = runner.predict(TEXTS)  # batch 4, padded to its longest row inside
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=2e-5)
    assert out["class_ids"].dtype == np.int64
    np.testing.assert_array_equal(out["class_ids"], ref["class_ids"])
    assert list(out["labels"]) == [x.decode() for x in ref["labels"]]
    for i, text in enumerate(TEXTS):  # batch 1
        one = runner.predict([text])
        np.testing.assert_allclose(one["probabilities"][0], ref["probabilities"][i], atol=2e-5)


def test_batch_one_runs_at_its_own_length(clf, float_export):
    runner = classifier_litert.LiteRTClassifier(float_export)
    short = runner.tokenize(["great"])
    assert short["input_word_ids"].shape == (1, 3)  # [CLS] great [SEP], not padded to 32
    long = runner.tokenize([TEXTS[2]])
    assert long["input_word_ids"].shape == (1, 32)  # truncated at the model's seq_length
    assert long["input_word_ids"][0, -1] == clf.preprocessor.special_tokens["sep_id"]


def test_metadata_and_files(float_export):
    export_dir = os.path.dirname(float_export)
    assert sorted(os.listdir(export_dir)) == ["model.json", "model.tflite"]
    meta = litert.read_metadata(export_dir)
    assert meta["labels"] == ["negative", "neutral", "positive"]
    assert meta["inputs"] == ["text"] and meta["outputs"] == ["probabilities", "class_ids", "labels"]
    assert meta["signatures"]["tokenize"]["outputs"] == ["input_word_ids", "input_mask", "input_type_ids"]
    assert meta["precision"] == "float32" and meta["task"] == "tweets" and meta["max_seq_length"] == 32
    assert meta["size_bytes"] == os.path.getsize(float_export)
    interpreter = litert.load_interpreter(float_export)
    signatures = interpreter.get_signature_list()
    assert sorted(signatures["serving_default"]["outputs"]) == sorted(meta["outputs"])
    assert signatures["serving_default"]["inputs"] == ["text"]


def test_runs_in_interpreter_with_custom_ops_directly(float_export):
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text import tflite_registrar

    interpreter = InterpreterWithCustomOps(model_path=str(float_export),
                                           custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)
    out = interpreter.get_signature_runner("serving_default")(text=np.array(["great phone"], dtype=object))
    assert out["probabilities"].shape == (1, 3) and out["labels"].shape == (1,)


def test_quantized_precisions(clf, float_export, tmp_path):
    texts = datasets.real_sentences(300)
    ref = _keras_outputs(clf, texts)
    sizes = {"float32": os.path.getsize(float_export)}
    for precision in ("float16", "dynamic_int8", "int8"):
        path = classifier_litert.export_litert(clf, tmp_path / precision, precision=precision,
                                    representative_texts=texts[:50] if precision == "int8" else None)
        sizes[precision] = os.path.getsize(path)
        runner = classifier_litert.LiteRTClassifier(path)
        probs = np.concatenate([runner.predict(texts[i:i + 50])["probabilities"] for i in range(0, 300, 50)])
        agree = np.mean(probs.argmax(-1) == ref["class_ids"])
        err = np.abs(probs - ref["probabilities"]).max()
        assert agree >= {"float16": 0.99, "dynamic_int8": 0.95, "int8": 0.9}[precision], (precision, agree)
        assert err < {"float16": 1e-2, "dynamic_int8": 0.2, "int8": 0.3}[precision], (precision, err)
        assert litert.read_metadata(tmp_path / precision)["precision"] == precision
    assert sizes["float32"] > sizes["float16"] > sizes["int8"], sizes
    assert sizes["dynamic_int8"] < 0.55 * sizes["float32"], sizes  # 2 MB of the tiny model is the tokenizer


def test_int8_needs_texts_and_known_precision(clf, tmp_path):
    with pytest.raises(ValueError, match="representative_texts"):
        classifier_litert.export_litert(clf, tmp_path / "x", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        classifier_litert.export_litert(clf, tmp_path / "x", precision="int4")
    assert not os.path.exists(tmp_path / "x")


def test_atomic_write(clf, tmp_path, monkeypatch):
    out = tmp_path / "lite"
    classifier_litert.export_litert(clf, out, precision="float32")
    first = (out / "model.tflite").read_bytes()
    classifier_litert.export_litert(clf, out, precision="dynamic_int8")  # an existing dir: files replaced by rename
    assert sorted(os.listdir(out)) == ["model.json", "model.tflite"]
    assert (out / "model.tflite").read_bytes() != first
    assert json.loads((out / "model.json").read_text())["precision"] == "dynamic_int8"

    def broken(*args):
        raise RuntimeError("conversion check failed")

    monkeypatch.setattr(classifier_litert, "_check", broken)
    with pytest.raises(RuntimeError):
        classifier_litert.export_litert(clf, tmp_path / "never", precision="float32")
    assert sorted(os.listdir(tmp_path)) == ["lite"]  # no half-written dir or hidden temp left


def test_pair_classifier_and_regression(vocab, tmp_path):
    pair = _classifier(vocab, num_classes=2, is_pair=True, seed=1)
    a = ["a man is playing a guitar", "how do i reset my password?"]
    b = ["someone plays an instrument", "the weather is lovely " * 10]
    path = classifier_litert.export_litert(pair, tmp_path / "pair", precision="float32")
    assert litert.read_metadata(tmp_path / "pair")["inputs"] == ["text_a", "text_b"]
    out = classifier_litert.LiteRTClassifier(path).predict(list(zip(a, b)))
    ref = _keras_outputs(pair, (a, b))
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=2e-5)
    got = classifier_litert.LiteRTClassifier(path).tokenize(list(zip(a, b)))
    want = pair.preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=1)([tf.constant(a), tf.constant(b)])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key].numpy())

    reg = _classifier(vocab, num_classes=1, seed=2)
    path = classifier_litert.export_litert(reg, tmp_path / "reg", precision="float32")
    meta = litert.read_metadata(tmp_path / "reg")
    assert meta["outputs"] == ["predictions"] and meta["regression"] and meta["labels"] is None
    out = classifier_litert.LiteRTClassifier(path).predict(TEXTS)
    np.testing.assert_allclose(out["predictions"], _keras_outputs(reg, TEXTS)["predictions"], atol=2e-5)


@pytest.fixture(scope="module")
def tokenizer_tflite(vocab):
    pre = bert_tf.BertPreprocessor(vocabulary=vocab, seq_length=128)
    return pre, classifier_litert.LiteRTClassifier(litert.convert_tokenizer(pre))


def test_tokenizer_parity_ascii_is_exact(tokenizer_tflite):
    pre, runner = tokenizer_tflite
    real = [s for s in datasets.real_sentences(6000) if s.isascii()][:4000]
    tweets = [t for t, _ in datasets.tweets() if t.isascii()][:2000]
    edge = ["", "   ", "\tTabs\nand\r\nnewlines ", "x" * 199, "y" * 200, "z" * 201, "UPPER lower MiXeD",
            "!!!???...,,,;;;", "don't won't can't", "e-mail: a.b@c.com #tag @user http://t.co/x",
            "12.5% of $3,000 (approx.) ~ [x] {y} <z> | ` ^ _ =", "unaffable " * 100]
    result = litert_parity.token_agreement(pre, runner.tokenize, real + tweets + edge, seq_length=128)
    assert result["agreement"] == 1.0, result["differences"][:3]


def test_tokenizer_parity_non_ascii_measured(tokenizer_tflite):
    """Accented Latin, CJK, Cyrillic, Greek, Arabic... agree; the known differences are compatibility
    characters (NFKC), full case folding and control/format characters."""
    pre, runner = tokenizer_tflite
    agree = ["Café déjà vu, naïve São Paulo façade", "Zürich: no, Zurich", "北京欢迎你。東京も", "Привет, мир! Как дела?",
             "Ελληνικά γράμματα", "مرحبا بالعالم", "한국어 문장입니다", "Crème brûlée — 20 €", "“Smart quotes” and ‘single’"]
    result = litert_parity.token_agreement(pre, runner.tokenize, agree, seq_length=128)
    assert result["agreement"] == 1.0, result["differences"]
    # Known differences: ß and final sigma casefold (ss, σ); fullwidth punctuation, the ellipsis, ligatures and
    # superscripts fold by NFKC; C1 controls and Cf characters break words where Google deletes them.
    differ = ["Straße", "λόγος", "北京，東京！", "ones…", "ＡＢＣ", "ﬁne", "x²", "a\u0085b", "a\u0600b"]
    for text in differ:
        assert litert_parity.token_agreement(pre, runner.tokenize, [text], seq_length=128)["agreement"] == 0, text
    # Real non-ASCII sentences (news + Wikipedia): measured, and every difference has a named cause.
    real = [s for s in datasets.real_sentences() if not s.isascii()][:600]
    measured = litert_parity.token_agreement(pre, runner.tokenize, real, seq_length=128, max_examples=50)
    assert measured["agreement"] > 0.9, measured
    chars = litert_parity.characters_in(real)
    differing = litert_parity.differing_characters(pre, runner.tokenize, sorted(chars))
    bad = {d["char"] for d in differing}
    for text, _, _ in measured["differences"]:
        assert bad & set(text), text


def test_differing_characters_have_known_causes(tokenizer_tflite):
    pre, runner = tokenizer_tflite
    # Latin-1 Supplement to Greek and CJK punctuation: a quick sample of the full scan bench/litert.py runs.
    points = list(range(0x80, 0x400)) + list(range(0x3000, 0x3100)) + list(range(0xFF00, 0xFF60))
    differing = litert_parity.differing_characters(pre, runner.tokenize, points)
    reasons = litert_parity.summarize(differing)["by_reason"]
    assert set(reasons) <= {
        "control/format character: Google deletes it, FastBertNormalize keeps it or breaks the word",
        "compatibility mapping (NFKC): FastBertNormalize folds it, Google's NFD keeps it",
        "full case folding: FastBertNormalize casefolds, Google lower-cases",
        "other normalisation table difference (Unicode version or punctuation class)"}
    by_char = {d["char"]: d for d in differing}
    assert "é" not in by_char and "。" not in by_char  # accents strip and CJK punctuation split the same
    assert by_char["ß"]["litert"] == ["ass", "##b", "cs", "##s", "ss"]
    assert by_char["Ａ"]["reason"].startswith("compatibility")
