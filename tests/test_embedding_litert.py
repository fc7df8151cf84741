"""LiteRT export of the sentence embedder (`BertSentenceEmbedder.export_litert`, `--litert_export_dir`) with the
real MiniLM: raw text in, embedding out, the tokenizer inside; the .tflite's embeddings against the serving
SavedModel's on real sentences (float32 and calibrated int8), through the fine-tuning driver, and refused for a
windowed embedder (tests/test_long_embeddings.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

from bert_tf.tasks.embedding import BertSentenceEmbedder
from bert_tf.tasks.embedding.litert import LiteRTEmbedder
from bert_tf.tasks.embedding.task import EmbeddingTask
from bert_tf.training.finetuning import FinetuneConfig, run
from fixtures import datasets, embedding_pairs


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    return BertSentenceEmbedder.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def sentences():
    """Real news/Wikipedia sentences and two whole Lee news articles (not the calibration texts)."""
    return datasets.real_sentences(24) + datasets.lee_documents()[:2]


@pytest.fixture(scope="module")
def served(embedder, sentences, tmp_path_factory):
    path = embedder.export(str(tmp_path_factory.mktemp("embedding_export")))
    return tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(sentences))["embedding"].numpy()


def _cosines(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_float32_equals_the_saved_model(embedder, sentences, served, tmp_path):
    path = embedder.export_litert(str(tmp_path / "f32"), precision="float32", task="embedding")
    lite = LiteRTEmbedder(path)
    assert (lite.metadata["pooling"], lite.metadata["normalize"], lite.metadata["embedding_size"]) == ("mean", True,
                                                                                                      384)
    one_by_one, batched = lite.embed(sentences), lite.embed(sentences, batch_size=8)
    assert one_by_one.shape == served.shape == (len(sentences), 384)
    assert _cosines(one_by_one, served).min() >= 0.9999
    assert _cosines(batched, served).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(one_by_one, axis=-1), 1.0, atol=1e-5)


def test_int8_keeps_the_embeddings_close(embedder, sentences, served, tmp_path):
    """Full int8 (calibrated on 60 other real sentences): measured worst cosine with the SavedModel ~0.91, mean
    ~0.94 on MiniLM (per-tensor int8 activations lose its outlier features; see the litert module)."""
    calibration = datasets.real_sentences(100)[40:]
    path = embedder.export_litert(str(tmp_path / "int8"), precision="int8", representative_texts=calibration)
    cosines = _cosines(LiteRTEmbedder(path).embed(sentences), served)
    print(f"int8 vs SavedModel: cosine min {cosines.min():.4f} mean {cosines.mean():.4f}")
    assert cosines.min() >= 0.85 and cosines.mean() >= 0.9
    assert os.path.getsize(path) < 0.5 * embedder.count_params() * 4  # int8 weights: well under float32's size


def test_finetune_driver_writes_the_litert_export(minilm_dir, sentences, tmp_path):
    data_dir = embedding_pairs.lee_task_dir(str(tmp_path / "data"), max_sentences=1)
    config = FinetuneConfig(model_dir=str(tmp_path / "run"), init_checkpoint=minilm_dir, max_seq_length=32,
                            do_eval=True, litert_export_dir=str(tmp_path / "lite"), litert_precision="float32")
    task = EmbeddingTask(data_dir)
    task.check(config)
    run(task, config)
    metadata = json.load(open(tmp_path / "lite" / "model.json"))
    assert (metadata["task"], metadata["precision"], metadata["max_seq_length"]) == ("embedding", "float32", 32)
    model = BertSentenceEmbedder.from_pretrained(minilm_dir, seq_length=32)
    lite = LiteRTEmbedder(str(tmp_path / "lite"))
    assert _cosines(lite.embed(sentences[:8]), model.embed(sentences[:8])).min() >= 0.9999
    assert len(task.representative_texts(10)) == 10
