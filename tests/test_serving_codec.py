"""serving.codec: the one JSON <-> numpy tensor codec of TF Serving's REST API (server and clients),
and the rule that nothing in serving/ imports bert_tf, trainers or fixtures. No server, no TensorFlow
graph: fast."""

import ast
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from serving import codec
from serving.codec import CodecError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_json_tensor_rules():
    """json_tensor.cc conventions: row vs columnar answers, `_bytes` outputs as b64, strict leaf types."""
    outs = {"ids_bytes": np.array([b"\x00\xff", b"ok"], dtype=object), "score": np.array([0.1, 2.5], np.float32)}
    assert codec.encode_predict_response(outs, "row") == {
        "predictions": [{"ids_bytes": {"b64": "AP8="}, "score": 0.1}, {"ids_bytes": {"b64": "b2s="}, "score": 2.5}]}
    assert codec.encode_predict_response({"score": outs["score"]}, "columnar") == {"outputs": [0.1, 2.5]}
    assert codec.encode_predict_response({"t": np.array([b"caf\xc3\xa9"], dtype=object)}, "row") == {
        "predictions": ["café"]}
    dtypes = {"x": np.int32, "s": "string"}
    inputs, fmt = codec.decode_predict_request({"instances": [{"x": [1, 2], "s": {"b64": "aGk="}},
                                                              {"x": [3, 4], "s": "yo"}]}, dtypes)
    assert fmt == "row" and inputs["x"].tolist() == [[1, 2], [3, 4]] and inputs["s"].tolist() == [b"hi", b"yo"]
    assert inputs["x"].dtype == np.int32 and inputs["s"].dtype == object
    for bad, fragment in [([[1], 2], "incorrect level"), ([1, [2]], "unexpected level"),
                          ([[1], [2, 3]], "unexpected size"), ([1.5], "is not of expected type: int32"),
                          ([True], "is not of expected type"), ([2 ** 31], "out of range for type: int32"),
                          (["1"], "Type: STRING is not of expected type: int32")]:
        with pytest.raises(CodecError, match=fragment):
            codec.json_to_array(bad, np.int32)
    with pytest.raises(CodecError, match="Expecting shape"):
        codec.decode_predict_request({"instances": [{"x": [1], "s": "a"}, {"x": [1, 2], "s": "b"}]}, dtypes)
    with pytest.raises(CodecError, match="keys must be equal to"):
        codec.decode_predict_request({"instances": [{"x": [1]}]}, dtypes)
    with pytest.raises(CodecError, match="does not have named input"):
        codec.decode_predict_request({"instances": [{"x": [1], "zz": "a"}]}, dtypes)
    with pytest.raises(CodecError, match="Unknown named input"):
        codec.decode_predict_request({"inputs": {"x": [1], "s": ["a"], "zz": 1}}, dtypes)
    with pytest.raises(CodecError, match="Missing 'inputs' or 'instances'"):
        codec.decode_predict_request({"signature_name": "x"}, dtypes)


def test_tf_dtypes_are_accepted_without_importing_tensorflow_here():
    import tensorflow as tf

    assert codec.json_to_array(["a", {"b64": "Yg=="}], tf.string).tolist() == [b"a", b"b"]
    assert codec.json_to_array([[1.5]], tf.float32).dtype == np.float32
    with pytest.raises(CodecError, match="is not of expected type: float"):
        codec.json_to_array(["1.5"], tf.float32)


def test_client_round_trip_row_and_columnar():
    arrays = {"text": ["a", "\u00fcber", b"\xff\x00"], "ids": np.array([[1, 2], [3, 4], [5, 6]], np.int32)}
    for fmt in ("columnar", "row"):
        body = codec.loads(codec.dumps(codec.encode_predict_request(arrays, "sig", fmt)))
        assert body["signature_name"] == "sig"
        got, got_fmt = codec.decode_predict_request(body, {"text": "string", "ids": np.int32})
        assert got_fmt == fmt
        assert got["text"].tolist() == [b"a", "\u00fcber".encode(), b"\xff\x00"]
        assert got["ids"].tolist() == arrays["ids"].tolist()
        resp = codec.loads(codec.dumps(codec.encode_predict_response(got, fmt)))
        back = codec.decode_predict_response(resp)
        assert back["text"].tolist() == got["text"].tolist() and back["ids"].tolist() == got["ids"].tolist()
    # A single unnamed output is named by the caller (lazily: only then).
    assert list(codec.decode_predict_response({"outputs": [1, 2]}, lambda: ["y"])) == ["y"]
    assert list(codec.decode_predict_response({"outputs": {"a": [1]}}, lambda: 1 / 0)) == ["a"]


def test_examples_one_typing_rule():
    feats = {"text": "a", "raw": b"\xff", "n": [1, 2], "f": 0.5, "flag": True}
    assert codec.example_features(feats) == {
        "text": ("bytes_list", [b"a"]), "raw": ("bytes_list", [b"\xff"]), "n": ("int64_list", [1, 2]),
        "f": ("float_list", [0.5]), "flag": ("int64_list", [1])}
    as_json = codec.example_to_json(feats)
    assert as_json == {"text": "a", "raw": {"b64": "/w=="}, "n": [1, 2], "f": 0.5, "flag": True}
    back = codec.example_from_json(codec.loads(codec.dumps(as_json)))
    assert back == codec.example_features(feats)
    for bad, fragment in [({"a": [1, "x"]}, "Unexpected element type"), ({"a": None}, "unexpected JSON type"),
                          ({"a": 2 ** 64}, "uint64"), ([1], "must be JSON object")]:
        with pytest.raises(CodecError, match=fragment):
            codec.example_from_json(bad)


@pytest.mark.parametrize("body, fragment", [
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b"", "document is empty"),
    (b"\xff\xfe{}", "Invalid encoding"),
    (b'{"instances": [1e999]}', "Number too big"),
    (b'{"instances": [' + b"9" * 5000 + b"]}", "JSON Parse error"),
    (b'{"instances": ["a"', "JSON Parse error"),
])
def test_hostile_json_is_a_codec_error(body, fragment):
    with pytest.raises(CodecError, match=fragment):
        codec.loads(body)


def test_hostile_values_are_codec_errors():
    deep = [[0]]
    for _ in range(codec.MAX_RANK + 5):
        deep = [deep]
    with pytest.raises(CodecError, match="nested deeper"):
        codec.json_to_array(deep, np.int32)
    with pytest.raises(CodecError, match="STRING"):
        codec.json_to_array(["\ud800"], np.float32)  # wrong type reported before anything else
    with pytest.raises(CodecError, match="lone surrogate"):
        codec.json_to_array(["\ud800"], "string")
    with pytest.raises(CodecError, match="out of range for type: float"):
        codec.json_to_array([1e300], np.float32)
    with pytest.raises(CodecError, match="out of range for type: double"):
        codec.json_to_array([10 ** 400], np.float64)
    nan = codec.loads(b"[NaN, Infinity, -Infinity]")  # accepted like TF Serving, for float inputs only
    assert math.isnan(codec.json_to_array(nan, np.float32)[0])
    with pytest.raises(CodecError, match="Type: NUMBER is not of expected type: string"):
        codec.json_to_array(nan, "string")
    with pytest.raises(CodecError, match="base64"):
        codec.json_to_array([{"b64": "!!!"}], "string")
    with pytest.raises(CodecError, match="maximum input batch size 4"):
        codec.decode_predict_request({"instances": ["a"] * 5}, {"t": "string"}, max_rows=4)
    with pytest.raises(CodecError, match="maximum input batch size 4"):
        codec.decode_predict_request({"inputs": {"t": ["a"] * 5}}, {"t": "string"}, max_rows=4)
    assert len(codec.debug_string(list(range(10 ** 6)))) <= 203
    assert codec.dumps({"error": "bad key \ud800"})  # a lone surrogate never breaks a reply


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_serving_imports_nothing_from_the_library_or_programs():
    """serving/ is generic: no module there imports bert_tf, trainers or fixtures (statically or at import)."""
    serving_dir = os.path.join(REPO, "serving")
    offenders = []
    for name in sorted(os.listdir(serving_dir)):
        if name.endswith(".py"):
            for mod in _imports(os.path.join(serving_dir, name)):
                if mod.split(".")[0] in ("bert_tf", "trainers", "fixtures"):
                    offenders.append(f"serving/{name}: {mod}")
    assert not offenders, offenders
    modules = [f"serving.{n[:-3]}" for n in sorted(os.listdir(serving_dir)) if n.endswith(".py")]
    code = ("import sys; import " + ", ".join(modules) +
            "; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('bert_tf', 'trainers', 'fixtures'));"
            " print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_rest_client_needs_no_tensorflow():
    code = ("import sys; import serving.rest_client, serving.client, serving.codec; "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
