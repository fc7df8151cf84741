"""Long documents for sentence embeddings (`--task=embedding --max_windows --window_stride --window_pooling`) with
the real MiniLM on gensim's real Lee news documents: the windowed embedding against a per-window computation by
hand (the classification window rule, `bert_tf.text.windows`), a text that fits one window embeds as before,
windows past `max_windows` are ignored and counted, the serving export, the config and `.keras` round trips,
training batches and gradients on windowed pairs, Spearman on the Lee document pairs (printed, not asserted to
win), and bad settings."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)

from bert_tf.export.saved_model import read_metadata
from bert_tf.export.serving_ops import check_serving_ops
from bert_tf.tasks.embedding import BertSentenceEmbedder
from bert_tf.tasks.embedding import data as pairs_data
from bert_tf.tasks.embedding.task import EmbeddingTask
from bert_tf.training.finetuning import FinetuneConfig
from bert_tf.training.settings import ConfigError
from fixtures import datasets, embedding_pairs

SEQ = 64  # Lee documents hold 51-152 wordpieces: 1 to 4 windows of 62
STRIDE = 32


@pytest.fixture(scope="module")
def plain(minilm_dir):
    return BertSentenceEmbedder.from_pretrained(minilm_dir, seq_length=SEQ)


def _windowed(plain, max_windows=4, window_pooling="mean", pooling="mean"):
    return BertSentenceEmbedder(plain.encoder, plain.preprocessor, pooling=pooling, max_windows=max_windows,
                                window_stride=STRIDE, window_pooling=window_pooling)


@pytest.fixture(scope="module")
def documents():
    return datasets.lee_documents()


def _by_hand(plain, text, max_windows, window_pooling, pooling="mean"):
    """Each window [CLS] pieces[s : s + SEQ - 2] [SEP] (s = 0, STRIDE, ...) embedded alone, unnormalised, then
    pooled: mean weighted by the window's tokens, or max; L2-normalised."""
    pieces = plain.preprocessor.tokenizer.tokenize_dense(tf.constant([text]), width=4096)
    ids, n = pieces[0][0].numpy().tolist(), int(pieces[1][0])
    ids = ids[:n]
    special = plain.preprocessor.special_tokens
    body, start, vectors, counts = SEQ - 2, 0, [], []
    row_model = BertSentenceEmbedder(plain.encoder, plain.preprocessor, pooling=pooling, normalize=False)
    while True:
        row = [special["cls_id"]] + ids[start:start + body] + [special["sep_id"]]
        features = {"input_word_ids": tf.constant([row]), "input_mask": tf.ones([1, len(row)], tf.int32),
                    "input_type_ids": tf.zeros([1, len(row)], tf.int32)}
        vectors.append(row_model(features).numpy()[0])
        counts.append(len(row))
        if start + body >= n or len(vectors) == max_windows:
            break
        start += STRIDE
    vectors, counts = np.array(vectors), np.array(counts, np.float32)
    doc = (vectors * counts[:, None]).sum(0) / counts.sum() if window_pooling == "mean" else vectors.max(0)
    return doc / np.linalg.norm(doc)


@pytest.mark.parametrize("window_pooling,pooling,max_windows", [("mean", "mean", 4), ("max", "mean", 4),
                                                                ("mean", "cls", 2)])
def test_windows_match_a_computation_by_hand(plain, documents, window_pooling, pooling, max_windows):
    model = _windowed(plain, max_windows=max_windows, window_pooling=window_pooling, pooling=pooling)
    texts = sorted(documents, key=len)[-2:] + [documents[0]]
    got = model.embed(texts, batch_size=4)
    for text, vector in zip(texts, got):
        np.testing.assert_allclose(vector, _by_hand(plain, text, max_windows, window_pooling, pooling), atol=2e-5)


def test_a_text_that_fits_one_window_embeds_as_before(plain):
    sentences = datasets.real_sentences(12) + [""]
    for window_pooling in ("mean", "max"):
        np.testing.assert_allclose(_windowed(plain, window_pooling=window_pooling).embed(sentences),
                                   plain.embed(sentences), atol=1e-6)


def test_windows_past_max_windows_are_ignored_and_counted(plain, documents, tmp_path):
    two = _windowed(plain, max_windows=2)
    needed = EmbeddingTask.windows_needed(two, documents)
    assert needed.max() == 4 and (needed > 2).sum() > 0
    longest = documents[int(np.argmax(needed))]
    np.testing.assert_allclose(two.embed([longest])[0], _by_hand(plain, longest, 2, "mean"), atol=2e-5)
    data_dir = embedding_pairs.lee_task_dir(str(tmp_path / "lee"))
    task = EmbeddingTask(data_dir, max_windows=2, window_stride=STRIDE)
    examples = task.examples("test")
    results = task.metrics(examples, task.predict(two, examples, batch_size=16))
    texts = [t for e in examples for t in (e.text_a, e.text_b)]
    assert results["documents_over_max_windows"] == int((EmbeddingTask.windows_needed(two, texts) > 2).sum()) > 0


def test_lee_document_pairs_spearman_windows_vs_truncation(plain, documents):
    """Spearman of cosines with the 1,225 human ratings: windows of 64 vs the first 64 wordpieces (and the
    whole document in one 256-wordpiece window, for reference). Printed; sanity only is asserted."""
    from bert_tf.tasks.embedding.metrics import similarity_metrics

    pairs = datasets.lee_similarity_pairs()
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    assert len(texts) == len(documents)
    row = {d: i for i, d in enumerate(texts)}
    scores = np.array([s for _, _, s in pairs])
    results = {}
    whole = BertSentenceEmbedder(plain.encoder, plain.preprocessor.with_padding(seq_length=256))
    for name, model in (("truncated to 64", plain), ("4 windows of 64, stride 32", _windowed(plain)),
                        ("whole (256)", whole)):
        vectors = model.embed(texts, batch_size=16)
        cosines = np.array([vectors[row[a]] @ vectors[row[b]] for a, b, _ in pairs])
        results[name] = similarity_metrics(cosines, scores)["spearman"]
        print(f"Lee document pairs ({len(pairs)}), {name}: Spearman {results[name]:.4f}")
    assert all(0.3 < r < 1 for r in results.values())


def test_export_config_and_keras_round_trip(plain, documents, tmp_path):
    model = _windowed(plain, window_pooling="max")
    want = model.embed(documents[:6])
    config = model.get_config()
    assert (config["max_windows"], config["window_stride"], config["window_pooling"]) == (4, STRIDE, "max")
    copy = BertSentenceEmbedder.from_config(config)
    copy.build()
    copy.set_weights(model.get_weights())
    np.testing.assert_allclose(copy.embed(documents[:6]), want, atol=1e-6)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert (loaded.max_windows, loaded.window_stride, loaded.window_pooling) == (4, STRIDE, "max")
    np.testing.assert_allclose(loaded.embed(documents[:6]), want, atol=1e-6)
    path = model.export(str(tmp_path / "export"))
    check_serving_ops(path)
    metadata = read_metadata(path)
    assert (metadata["max_windows"], metadata["window_stride"], metadata["window_pooling"]) == (4, STRIDE, "max")
    served = tf.saved_model.load(path)
    out = served.signatures["serving_default"](text=tf.constant(documents[:6]))
    np.testing.assert_allclose(out["embedding"].numpy(), want, atol=1e-5)
    assert out["windows_needed"].numpy().tolist() == EmbeddingTask.windows_needed(model, documents[:6]).tolist()
    similarity = served.signatures["similarity"](text_a=tf.constant(documents[:3]), text_b=tf.constant(documents[3:6]))
    np.testing.assert_allclose(similarity["similarity"].numpy(), (want[:3] * want[3:]).sum(-1), atol=1e-5)


def test_windowed_training_batches_and_gradients(plain, tmp_path):
    """The training batches of windowed pairs are [B, W, T] window features; the cosine loss has gradients in
    every encoder layer but the unused pooler (the windows are encoded in the training graph)."""
    data_dir = str(tmp_path / "data")
    train, _ = embedding_pairs.lee_pairs_by_document()
    pairs_data.write_pairs(os.path.join(data_dir, "train.tsv"), train[:4])
    task = EmbeddingTask(data_dir, max_windows=3, window_stride=STRIDE)
    model = task.build_model(plain.encoder, plain.preprocessor)
    features, scores = next(iter(task.build_train_dataset(model, task.examples("train"), batch_size=4)))
    assert features["a"]["input_word_ids"].shape.rank == 3 and features["a"]["input_word_ids"].shape[1] > 1
    with tf.GradientTape() as tape:
        loss, _ = task.compute_loss(model, (features, scores), training=False)
    grads = tape.gradient(loss, model.encoder.trainable_variables)
    missing = [v.path for v, g in zip(model.encoder.trainable_variables, grads) if g is None]
    assert np.isfinite(float(loss)) and missing and all("pooler" in name for name in missing)  # no head: unused
    with pytest.raises(ValueError, match="fresh --model_dir"):
        EmbeddingTask(data_dir, max_windows=2, window_stride=STRIDE).build_model(
            plain.encoder, plain.preprocessor, saved_config=model.get_config())


def test_bad_window_settings_are_errors(plain, tmp_path):
    with pytest.raises(ValueError, match="window_stride=5 has no effect"):
        BertSentenceEmbedder(plain.encoder, plain.preprocessor, window_stride=5)
    with pytest.raises(ValueError, match="window_stride must be in"):
        BertSentenceEmbedder(plain.encoder, plain.preprocessor, max_windows=2, window_stride=SEQ)
    with pytest.raises(ValueError, match="LiteRT export reads one window"):
        _windowed(plain).export_litert(str(tmp_path / "lite"), precision="float32")
    data_dir = embedding_pairs.lee_task_dir(str(tmp_path / "lee"), max_sentences=1)
    config = FinetuneConfig(model_dir=str(tmp_path / "run"), max_seq_length=SEQ, do_eval=True,
                            litert_export_dir=str(tmp_path / "lite"))
    with pytest.raises(ConfigError, match="LiteRT export reads one window"):
        EmbeddingTask(data_dir, max_windows=2, window_stride=STRIDE).check(config)
    with pytest.raises(ConfigError, match="window_stride must be in"):
        EmbeddingTask(data_dir, max_windows=2, window_stride=0).check(config)
