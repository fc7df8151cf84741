"""Token tagging end to end: in-graph chunking and entity decoding, `finetune.py --task=tagging` on real
CoNLL-2003 sentences, and the export (raw text -> entity spans) against --do_predict, TF Serving's op set and
session loader, and serving/server.py over gRPC and REST.

The real-data quality test (MiniLM, a few CPU minutes) is at the end; it is tagged slow for Bazel.
"""

import collections
import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops the export uses)

import bert_tf
from bert_tf.tasks.tagging import data as conll
from bert_tf.tasks.tagging import metrics as conll_metrics
from bert_tf.tasks.tagging import ops as tagging_ops
from fixtures import conll as conll_data
from serving.client import ServingClient
from serving.testing import ServerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER", "E-PER", "S-PER", "B-ORG", "I-ORG"]


def _finetune(args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "finetune.py")] + args,
                          capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_long_sentences_are_chunked_without_losing_a_word(minilm_vocab):
    pre = bert_tf.BertPreprocessor(minilm_vocab, seq_length=12, dynamic_padding=True)
    tok = pre.tokenizer
    texts = ["The extraordinarily unbelievable Cambridgeshire committee met in Wolverhampton on Tuesday .",
             "Short one", "Café 北京 naïve"]
    words, _, _ = tok.split_words(tf.constant(texts))
    pieces = tok.tokenize_words(words)
    packed = tagging_ops.pack_words(pieces, pre.packer, tok.special_tokens["unk_id"])
    ids = packed["features"]["input_word_ids"].numpy()
    assert ids.shape[1] <= 12 and ids.shape[0] > len(texts)  # the first sentence needed several chunks
    chunk, position = packed["chunk_of_word"].numpy(), packed["position_of_word"].numpy()
    first_pieces = [p[0] for p in pieces.values.to_list()]
    assert [ids[c, p] for c, p in zip(chunk, position)] == first_pieces  # every word, at its first piece
    assert np.all(np.diff(chunk) >= 0) and packed["row_of_chunk"].numpy().tolist()[-2:] == [1, 2]
    mask = packed["features"]["input_mask"].numpy()
    assert mask.sum(1).max() <= 12 and np.all(ids[:, 0] == tok.special_tokens["cls_id"])


def test_entities_decoded_in_the_graph_equal_conlleval():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, len(LABELS), size=rng.integers(0, 12)).tolist() for _ in range(300)]
    entities = tagging_ops.decode_entities(tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1), LABELS)
    for i, row in enumerate(rows):
        want = conll_metrics.chunks([LABELS[t] for t in row])
        got = list(zip([t.decode() for t in entities["type"][i].numpy()],
                       entities["first_word"][i].numpy().tolist(), (entities["last_word"][i].numpy() + 1).tolist()))
        assert got == want, [LABELS[t] for t in row]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, minilm_vocab):
    """A tiny random BERT fine-tuned for 1 epoch on 160 real CoNLL-2003 sentences, seq 32 (chunking happens)."""
    import keras

    root = tmp_path_factory.mktemp("tagging")
    data_dir = conll_data.subset_dir(str(root / "data"), train=160, valid=40, test=60)
    keras.utils.set_random_seed(0)
    config = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64)
    bert_dir = str(root / "bert")
    bert_tf.save_pretrained(bert_tf.BertEncoder(config), bert_dir, minilm_vocab, lower_case=True)
    model_dir, export_dir = str(root / "run"), str(root / "export")
    out = _finetune(["--task=tagging", f"--data_dir={data_dir}", f"--init_checkpoint={bert_dir}",
                     f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--max_seq_length=32",
                     "--train_batch_size=16", "--learning_rate=1e-3", "--num_train_epochs=1", "--do_train",
                     "--do_eval", "--do_predict"])
    return {"data_dir": data_dir, "model_dir": model_dir, "export": os.path.join(export_dir, "1"), "out": out}


def test_program_writes_conlleval_results_and_predictions(trained):
    assert "tag scheme IOB2 (detected" in trained["out"]
    results = json.load(open(os.path.join(trained["model_dir"], "eval_results.json")))
    for key in ("precision", "recall", "f1", "accuracy", "test_f1", "test_accuracy", "PER_f1", "LOC_recall"):
        assert key in results and 0.0 <= results[key] <= 1.0, key
    gold = conll.read_conll(os.path.join(trained["data_dir"], "test.txt"))
    lines = open(os.path.join(trained["model_dir"], "predictions.txt"), encoding="utf-8").read().split("\n\n")
    rows = [[line.split(" ") for line in block.splitlines()] for block in lines if block.strip()]
    assert len(rows) == len(gold) == 60
    assert all([r[0] for r in row] == s.words and [r[1] for r in row] == s.tags for row, s in zip(rows, gold))
    predicted = [[r[2] for r in row] for row in rows]
    assert conll_metrics.flat_metrics(conll_metrics.evaluate([s.tags for s in gold], predicted))["f1"] == pytest.approx(
        results["test_f1"])


def _served(export_dir, texts):
    m = tf.saved_model.load(export_dir)
    out = m.signatures["serving_default"](text=tf.constant(texts))
    return {k: v.numpy() for k, v in out.items()}


def test_export_gives_the_predictions_of_do_predict(trained, minilm_vocab):
    gold = conll.read_conll(os.path.join(trained["data_dir"], "test.txt"))
    blocks = open(os.path.join(trained["model_dir"], "predictions.txt"), encoding="utf-8").read().split("\n\n")
    predicted = [[line.split(" ")[2] for line in b.splitlines()] for b in blocks if b.strip()]
    tok = bert_tf.BertPreprocessor(minilm_vocab).tokenizer
    texts = [" ".join(s.words) for s in gold]
    words = tok.split_words(tf.constant(texts))[0].to_list()
    same_split = [i for i, w in enumerate(words) if [x.decode() for x in w] == gold[i].words]
    assert len(same_split) >= 30  # CoNLL tokens mostly equal Google's words ("U.S.", "1-0" do not)
    out = _served(trained["export"], [texts[i] for i in same_split])
    for row, i in enumerate(same_split):
        n = len(gold[i].words)
        assert [t.decode() for t in out["tags"][row][:n]] == predicted[i]
        assert [w.decode() for w in out["words"][row][:n]] == gold[i].words
        want = [(k, a, b) for k, a, b in conll_metrics.chunks(predicted[i])]
        got_types = [t.decode() for t in out["entity_type"][row] if t]
        assert got_types == [k for k, _, _ in want]


def test_entity_offsets_index_the_raw_text(trained):
    texts = ["Angela Merkel met Emmanuel Macron in Paris and Zürich (Switzerland) on Tuesday.",
             "北京 and São Paulo host the  World   Cup", "", "no entities here ,"]
    out = _served(trained["export"], texts)
    assert out["entity_text"].shape == out["entity_start"].shape == out["entity_score"].shape
    for row, text in enumerate(texts):
        for t, a, b, kind, score in zip(out["entity_text"][row], out["entity_start"][row],
                                        out["entity_end"][row], out["entity_type"][row], out["entity_score"][row]):
            if a < 0:
                assert t == b"" and kind == b"" and b == -1 and score == 0.0
                continue
            assert text[a:b] == t.decode() and kind.decode() in ("PER", "LOC", "ORG", "MISC") and 0 < score <= 1
    assert out["words"][2].tolist() == [b""] * out["words"].shape[1]


def test_export_loads_in_tf_serving_2_12_and_its_op_set(trained, tf212_python):
    assert bert_tf.check_serving_ops(trained["export"])
    script = r"""
import json, sys
import tensorflow as tf, tensorflow_text
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], sys.argv[1])
    sig = meta.signature_def["serving_default"]
    res = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs["text"].name: json.loads(sys.argv[2])})
print(json.dumps({k: [[x.decode() if isinstance(x, bytes) else float(x) for x in r] for r in v.tolist()]
                  for k, v in res.items()}))
"""
    texts = ["Angela Merkel met Emmanuel Macron in Paris .", "Café 北京"]
    proc = subprocess.run([tf212_python, "-c", script, trained["export"], json.dumps(texts)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = _served(trained["export"], texts)
    assert got["tags"] == [[t.decode() for t in r] for r in want["tags"]]
    assert got["entity_start"] == want["entity_start"].astype(float).tolist()


def test_served_over_grpc_and_rest(trained):
    base = os.path.dirname(trained["export"])
    texts = ["Angela Merkel met Emmanuel Macron in Paris .", "The United Nations said so ."]
    want = _served(trained["export"], texts)
    with ServerProcess(["--model_name=ner", f"--model_base_path={base}"], ready_model="ner") as server:
        grpc_out = ServingClient(server.grpc_address, "ner").predict({"text": texts})
        body = json.dumps({"instances": [{"text": t} for t in texts]}).encode()
        request = urllib.request.Request(f"http://{server.rest_address}/v1/models/ner:predict", data=body)
        rest_out = json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"]
    assert grpc_out["tags"].tolist() == want["tags"].tolist()
    np.testing.assert_array_equal(grpc_out["entity_end"], want["entity_end"])
    assert [r["entity_type"] for r in rest_out] == [[t.decode() for t in row] for row in want["entity_type"]]
    assert [r["entity_start"] for r in rest_out] == want["entity_start"].tolist()


def _most_frequent_tag_baseline(train, test):
    counts = collections.defaultdict(collections.Counter)
    for s in train:
        for w, t in zip(s.words, s.tags):
            counts[w][t] += 1
    predicted = [[counts[w].most_common(1)[0][0] if w in counts else "O" for w in s.words] for s in test]
    return conll_metrics.evaluate([s.tags for s in test], predicted)["f1"]


@pytest.mark.slow
def test_real_minilm_on_conll2003_beats_the_most_frequent_tag(minilm_dir, tmp_path):
    """MiniLM-L6-H384 fine-tuned on the first 1,000 CoNLL-2003 training sentences, 2 epochs, seq 64, batch 16,
    lr 1e-4 (a few CPU minutes); test on the first 300 test sentences against tagging every word with its most
    frequent training tag."""
    data_dir = conll_data.subset_dir(str(tmp_path / "data"), train=1000, valid=300, test=300)
    model_dir = str(tmp_path / "run")
    _finetune(["--task=tagging", f"--data_dir={data_dir}", f"--init_checkpoint={minilm_dir}",
               f"--model_dir={model_dir}", "--max_seq_length=64", "--train_batch_size=16", "--learning_rate=1e-4",
               "--num_train_epochs=2", "--do_train", "--do_eval", "--steps_per_loop=25"])
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    train = conll.read_conll(os.path.join(data_dir, "train.txt"))
    baseline = _most_frequent_tag_baseline(train, conll.read_conll(os.path.join(data_dir, "test.txt")))
    print(f"CoNLL-2003 test (300 sentences): entity F1 {results['test_f1']:.3f}, most-frequent-tag {baseline:.3f}")
    assert results["test_f1"] >= baseline + 0.2
