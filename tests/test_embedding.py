"""Sentence embeddings (`--task=embedding`) with the real MiniLM (a sentence-transformers model) on real text:
parity with `SentenceTransformer(dir).encode`, fine-tuning with both losses through the driver (the loss falls),
the serving export (TF Serving's op set, a TF 2.12 session, serving/server.py over gRPC and REST), the `.keras`
round trip and bad input."""

import json
import os
import subprocess
import urllib.request

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bert_tf import check_serving_ops
from bert_tf.tasks.embedding import BertSentenceEmbedder, sentence_transformers_settings
from bert_tf.tasks.embedding import data as pairs_data
from bert_tf.tasks.embedding.task import EmbeddingTask
from bert_tf.training.finetuning import FinetuneConfig, run
from fixtures import datasets, embedding_pairs
from serving.testing import ServerProcess


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    return BertSentenceEmbedder.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def sentences():
    """Real news/Wikipedia sentences, a whole article (past 256 wordpieces: truncated), non-ASCII text, and
    empty / whitespace-only texts (sentence-transformers embeds those as [CLS] [SEP] too)."""
    docs = datasets.lee_documents()
    return datasets.real_sentences(24) + [" ".join(docs[:3]), "Zürich's café served crème brûlée, 北京!", "",
                                          "  \t "]


@pytest.fixture(scope="module")
def ours(embedder, sentences):
    return embedder.embed(sentences, batch_size=16)


@pytest.fixture(scope="module")
def export_dir(embedder, tmp_path_factory):
    base = tmp_path_factory.mktemp("embedding_export")
    return embedder.export(str(base), task="embedding"), str(base)


def test_reads_sentence_transformers_settings(embedder, minilm_dir):
    settings = sentence_transformers_settings(minilm_dir)
    assert (settings.pooling, settings.normalize, settings.max_seq_length) == ("mean", True, 256)
    assert (embedder.pooling, embedder.normalize, embedder.preprocessor.seq_length) == ("mean", True, 256)


def test_parity_with_sentence_transformers(ours, minilm_dir, sentences):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_dir, device="cpu").encode(sentences, batch_size=16)
    assert ours.shape == reference.shape == (len(sentences), 384)
    assert np.abs(ours - reference).max() < 1e-5
    assert (ours * reference).sum(-1).min() >= 0.99999


def test_pooling_modes(embedder):
    features = embedder.preprocessor(tf.constant(["a short one", "a somewhat longer sentence than that"]))
    sequence = embedder.encode(features)["sequence_output"].numpy()
    mask = features["input_mask"].numpy().astype(bool)
    for pooling, want in (("cls", sequence[:, 0]),
                          ("max", np.stack([s[m].max(0) for s, m in zip(sequence, mask)]))):
        model = BertSentenceEmbedder(embedder.encoder, embedder.preprocessor, pooling=pooling, normalize=False)
        np.testing.assert_allclose(model(features).numpy(), want, atol=1e-6)


def test_unsupported_sentence_transformers_modules_are_errors(tmp_path):
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ValueError, match=r"modules.json: module 2 is 'sentence_transformers.models.Dense'"):
        sentence_transformers_settings(str(tmp_path))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match=r"1_Pooling/config.json: pooling"):
        sentence_transformers_settings(str(tmp_path))


def _mean_loss(task, model, examples):
    ds = task.build_train_dataset(model, examples, batch_size=8, seed=3)
    losses = [float(task.compute_loss(model, batch, training=False)[0]) for batch in ds.take(len(examples) // 8)]
    return float(np.mean(losses))


@pytest.mark.parametrize("loss", ["mnr", "cosine"])
def test_finetuning_loss_falls(loss, embedder, minilm_dir, tmp_path):
    """A few steps of each loss on real pairs through the driver; the loss on the training pairs falls and the
    held-out Lee pairs are scored (cosine regression: pairs of the documents' first sentences)."""
    data_dir = str(tmp_path / "data")
    embedding_pairs.lee_task_dir(data_dir, max_sentences=1)
    if loss == "mnr":
        pairs_data.write_pairs(os.path.join(data_dir, "train.tsv"), embedding_pairs.news_lead_pairs(16), scored=False)
    else:
        _, train = pairs_data.read_pairs(os.path.join(data_dir, "train.tsv"))
        pairs_data.write_pairs(os.path.join(data_dir, "train.tsv"),
                               [(e.text_a, e.text_b, e.score) for e in train[::37]])
    config = FinetuneConfig(model_dir=str(tmp_path / "run"), init_checkpoint=minilm_dir, max_seq_length=32,
                            train_batch_size=8, learning_rate=1e-4, num_train_epochs=2, warmup_proportion=0.0,
                            do_train=True, do_eval=True, steps_per_loop=4)
    task = EmbeddingTask(data_dir)
    task.check(config)
    # The pretrained weights, read once for the module (run() trains its own copy).
    before_model = BertSentenceEmbedder(embedder.encoder, embedder.preprocessor.with_padding(seq_length=32))
    examples = task.examples("train")[:16]
    before = _mean_loss(task, before_model, examples)
    results = run(task, config)
    after_model = keras.saving.load_model(os.path.join(config.model_dir, "model.keras"))
    after = _mean_loss(task, after_model, examples)
    print(f"{loss}: training loss {before:.4f} -> {after:.4f}; held-out {results}")
    assert after < 0.8 * before
    assert set(results) >= {"test_spearman", "test_pearson"} and -1 <= results["test_spearman"] <= 1


def test_keras_round_trip(embedder, ours, sentences, tmp_path):
    path = str(tmp_path / "embedder.keras")
    embedder.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.pooling, loaded.normalize, loaded.preprocessor.seq_length) == ("mean", True, 256)
    np.testing.assert_allclose(loaded.embed(sentences), ours, atol=1e-6)


def test_export_signatures(ours, export_dir, sentences):
    path, _ = export_dir
    check_serving_ops(path)
    m = tf.saved_model.load(path)
    out = m.signatures["serving_default"](text=tf.constant(sentences))
    np.testing.assert_allclose(out["embedding"].numpy(), ours, atol=1e-5)
    num_tokens = out["num_tokens"].numpy()
    assert num_tokens[-2:].tolist() == [0, 0] and num_tokens[-4] > 254 and (num_tokens[:-2] > 0).all()
    a, b = sentences[:10], sentences[10:20]
    cos = m.signatures["similarity"](text_a=tf.constant(a), text_b=tf.constant(b))["similarity"].numpy()
    want = (ours[:10] * ours[10:20]).sum(-1)
    np.testing.assert_allclose(cos, want, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="as many texts"):
        m.signatures["similarity"](text_a=tf.constant(a), text_b=tf.constant(b[:3]))


_TF212 = r"""
import json, sys
import tensorflow as tf, tensorflow_text
assert tf.__version__.startswith("2.12"), tf.__version__
texts = json.loads(open(sys.argv[2]).read())
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], sys.argv[1])
    sig = meta.signature_def["serving_default"]
    emb = sess.run(sig.outputs["embedding"].name, {sig.inputs["text"].name: texts})
    sig = meta.signature_def["similarity"]
    cos = sess.run(sig.outputs["similarity"].name, {sig.inputs["text_a"].name: texts,
                                                    sig.inputs["text_b"].name: texts[::-1]})
print(json.dumps({"embedding": emb.tolist(), "similarity": cos.tolist()}))
"""


def test_export_runs_in_tf_2_12_session(ours, export_dir, sentences, tf212_python, tmp_path):
    texts = sentences[:12] + sentences[-4:]
    inputs = tmp_path / "texts.json"
    inputs.write_text(json.dumps(texts))
    proc = subprocess.run([tf212_python, "-c", _TF212, export_dir[0], str(inputs)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = np.concatenate([ours[:12], ours[-4:]])
    np.testing.assert_allclose(got["embedding"], want, atol=1e-5)
    np.testing.assert_allclose(got["similarity"], (want * want[::-1]).sum(-1), atol=1e-5)


def test_served_over_grpc_and_rest(ours, export_dir, sentences):
    texts, want = sentences[:4], ours[:4]
    srv = ServerProcess(["--model_name=emb", f"--model_base_path={export_dir[1]}"], ready_model="emb")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_address))
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "emb"
        req.inputs["text"].CopyFrom(tf.make_tensor_proto(texts))
        got = tf.make_ndarray(stub.Predict(req, timeout=120).outputs["embedding"])
        np.testing.assert_allclose(got, want, atol=1e-5)
        body = {"signature_name": "similarity", "instances": [{"text_a": a, "text_b": texts[0]} for a in texts]}
        http = urllib.request.Request(f"http://{srv.rest_address}/v1/models/emb:predict",
                                      data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(http, timeout=120) as r:
            rest = json.loads(r.read())["predictions"]
        np.testing.assert_allclose(rest, want @ want[0], atol=1e-5)
    finally:
        srv.terminate()


def test_bad_rows_are_reported_by_file_and_line(tmp_path, capsys):
    path = tmp_path / "train.tsv"
    path.write_text("sentence1\tsentence2\tscore\na cat\ta kitten\t0.9\n \ta dog\t0.5\na\tb\tnot-a-number\n"
                    "only one field\na bird\ta plane\tnan\nthe sun\tthe moon\t0.3\n", encoding="utf-8")
    kind, examples = pairs_data.read_pairs(str(path))
    assert kind == "scored" and [(e.text_a, e.line) for e in examples] == [("a cat", 2), ("the sun", 7)]
    assert f"skipped 4 malformed rows (first: {path}:3: the first text is empty or whitespace only)" in \
        capsys.readouterr().out
    with pytest.raises(pairs_data.MalformedRowError, match=rf"{path}:3: the first text is empty"):
        pairs_data.read_pairs(str(path), strict=True)
    path.write_text("query\tdocument\nq\td\n")
    with pytest.raises(ValueError, match=rf"{path}:1: header"):
        pairs_data.read_pairs(str(path))


def test_cosine_loss_needs_scores_in_range(tmp_path):
    pairs_data.write_pairs(str(tmp_path / "train.tsv"), [("a cat", "a kitten", 4.5), ("a", "b", 0.5)])
    task = EmbeddingTask(str(tmp_path))
    with pytest.raises(ValueError, match=r"train.tsv:2: score 4.5 is beyond --max_score=1"):
        task.build_train_dataset(_tiny_embedder(tmp_path), task.examples("train"), batch_size=2)
    pairs_data.write_pairs(str(tmp_path / "train.tsv"), [("a", "b")], scored=False)
    with pytest.raises(ValueError, match="--loss=cosine needs scored pairs"):
        EmbeddingTask(str(tmp_path), loss="cosine").train_loss()


def _tiny_embedder(tmp_path):
    import bert_tf

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "cat"]))
    encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16))
    return BertSentenceEmbedder(encoder, bert_tf.BertPreprocessor(str(vocab), seq_length=8))
