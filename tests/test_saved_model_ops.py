"""Custom-op listing and the TF Serving 2.12+ allow-list, on real SavedModels:
our preprocessor (passes), a RoundRobinTrimmer model and keras-hub's
round-robin packer (fail)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402

import keras  # noqa: E402
import keras_hub  # noqa: E402

from bert_tf.text.preprocessor import BertPreprocessor  # noqa: E402
from bert_tf.export.serving_ops import TF_SERVING_CUSTOM_OPS, UnsupportedServingOpsError, check_serving_ops, list_custom_ops, op_usage  # noqa: E402

STRINGS = tf.TensorSpec([None], tf.string)


@pytest.fixture(scope="module")
def preprocessor_export(minilm_vocab, tmp_path_factory):
    pre = BertPreprocessor(minilm_vocab, seq_length=32)
    path = str(tmp_path_factory.mktemp("sm") / "preprocessor")
    archive = keras.export.ExportArchive()
    archive.track(pre)
    archive.add_endpoint("serve", lambda s: pre(s), input_signature=[STRINGS])
    archive.add_endpoint("pairs", lambda a, b: pre([a, b]), input_signature=[STRINGS, STRINGS])
    archive.add_endpoint("tokenize", lambda s: pre.tokenize(s), input_signature=[STRINGS])
    archive.write_out(path, verbose=False)
    return path


class _RoundRobin(tf.Module):
    @tf.function(input_signature=[STRINGS, STRINGS])
    def pack(self, a, b):
        ta = tf.strings.split(a)
        tb = tf.strings.split(b)
        trimmed = tf_text.RoundRobinTrimmer(max_seq_length=6).trim([ta, tb])
        return {"a": trimmed[0].to_tensor(), "b": trimmed[1].to_tensor()}


def test_preprocessor_export_passes(preprocessor_export):
    custom = list_custom_ops(preprocessor_export)
    # Exactly the tf-text ops we mean to use; all in tensorflow-text 2.12.1.
    assert custom == ["FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "NormalizeUTF8"]
    assert check_serving_ops(preprocessor_export) == custom
    usage = op_usage(preprocessor_export)
    assert "StaticRegexReplace" in usage and "StaticRegexReplace" not in custom  # core op
    assert not any("RoundRobin" in op for op in usage)
    assert "RaggedGather" not in usage


def test_round_robin_trimmer_fails(tmp_path):
    path = str(tmp_path / "rr")
    tf.saved_model.save(_RoundRobin(), path)
    assert list_custom_ops(path) == ["TFText>RoundRobinTrim"]
    with pytest.raises(UnsupportedServingOpsError, match=r"RoundRobinTrim") as info:
        check_serving_ops(path)
    assert "rr" in str(info.value) and "WaterfallTrimmer" in str(info.value)
    assert set(info.value.disallowed) == {"TFText>RoundRobinTrim"}
    # A caller may allow it explicitly (e.g. for TF Serving 2.20).
    assert check_serving_ops(path, allowed=TF_SERVING_CUSTOM_OPS | {"TFText>RoundRobinTrim"})


def test_keras_hub_round_robin_packer_fails(tmp_path):
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=8, start_value=101, end_value=102, truncate="round_robin"
    )

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.packer = packer

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2)
        def pack(self, a, b):
            ids, types = self.packer((tf.RaggedTensor.from_tensor(a), tf.RaggedTensor.from_tensor(b)))
            return {"ids": ids, "types": types}

    path = str(tmp_path / "khub")
    tf.saved_model.save(M(), path)
    with pytest.raises(UnsupportedServingOpsError, match="RoundRobinTrim"):
        check_serving_ops(path)


def test_allow_list_contents():
    # tensorflow-text 2.12.1 had these (checked against its ops_lib at tag v2.12.1)...
    for op in ("FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "NormalizeUTF8", "CaseFoldUTF8",
               "WordpieceTokenizeWithOffsets", "RegexSplitWithOffsets", "SentencepieceOp"):
        assert op in TF_SERVING_CUSTOM_OPS
    # ...but not the round-robin trimmer ops (linked from 2.13 on).
    assert "TFText>RoundRobinTrim" not in TF_SERVING_CUSTOM_OPS
    assert "TFText>RoundRobinGenerateMasks" not in TF_SERVING_CUSTOM_OPS
    # Every allow-listed op is a real tensorflow-text op registered in this process.
    from tensorflow.python.framework import op_def_registry

    missing = [op for op in TF_SERVING_CUSTOM_OPS if op_def_registry.get(op) is None]
    assert not missing


def test_unknown_op_and_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_custom_ops(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        check_serving_ops(str(tmp_path / "empty"))
    # A graph op no library registers counts as custom and is not allowed.
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    mg = sm.meta_graphs.add()
    mg.graph_def.node.add(name="x", op="MyCompany>SecretOp")
    mg.graph_def.node.add(name="c", op="Const")
    d = tmp_path / "fake"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(sm.SerializeToString())
    assert list_custom_ops(str(d)) == ["MyCompany>SecretOp"]
    with pytest.raises(UnsupportedServingOpsError, match=r"MyCompany>SecretOp  \(in graph\)"):
        check_serving_ops(str(d))


_TF212_SCRIPT = r"""
import json, sys
import tensorflow as tf, tensorflow_text
assert tf.__version__.startswith("2.12"), tf.__version__
texts = [t.encode("utf-8", "surrogateescape") for t in json.loads(sys.argv[2])]
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], sys.argv[1])
    sig = meta.signature_def["serve"]
    feed = {v.name: texts for v in sig.inputs.values()}
    res = sess.run({k: v.name for k, v in sig.outputs.items()}, feed)
print(json.dumps({"tf": tf.__version__, "text": tensorflow_text.__version__,
                  "out": {k: v.tolist() for k, v in res.items()}}))
"""


def test_loads_in_tf_2_12_session(preprocessor_export, tf212_python):
    """The real TF Serving 2.12 stack (TF 2.12 + tensorflow-text 2.12.1) loads the
    export in a session and gives our ids. Needs a Python with those two
    packages: the `tf212_python` fixture (`make setup-tf212`, or
    $BERT_TF_TF212_PYTHON)."""
    import json
    import subprocess

    python = tf212_python
    texts = ["Hello, World! café 北京 😀", "", "x\u200by ΑΧΙΛΛΕΥΣ " + "é" * 250, "plain ascii text."]
    proc = subprocess.run([python, "-c", _TF212_SCRIPT, preprocessor_export, json.dumps(texts)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["text"].startswith("2.12")
    loaded = tf.saved_model.load(preprocessor_export)
    want = loaded.serve(tf.constant(texts))
    for key in ("input_word_ids", "input_mask", "input_type_ids"):
        assert got["out"][key] == want[key].numpy().tolist(), key
