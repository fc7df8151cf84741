"""serving.server: TF Serving protocols (gRPC stubs + REST), errors, batching, load, version swap, SIGTERM.

The server runs in a subprocess on free loopback ports and is called with the official
tensorflow-serving-api stubs and over HTTP. Expected outputs come from loading the same SavedModel
in-process with TensorFlow. The protocol tests also run against a real `tensorflow_model_server`
when one is on PATH (the only skip in this module).
"""

import base64
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving.batching import Batcher, BatchingOptions
from serving.model_manager import configs_from_model_server_config
from serving.testing import ServerProcess, tf_serving_binary
from serving.toy_model import LABELS, cached_toy_model

MAX_BATCH = 8
MAX_MESSAGE = 1 << 20


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def toy_version_dir(tmp_path_factory):
    return cached_toy_model(str(tmp_path_factory.getbasetemp() / "toy_model_cache"))


@pytest.fixture(scope="module")
def bases(tmp_path_factory, toy_version_dir):
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for name in ("toy", "swap"):
        base = root / name
        base.mkdir()
        shutil.copytree(toy_version_dir, base / "1")
        (base / "not_a_version").mkdir()  # ignored by the poller
        out[name] = str(base)
    (root / "empty").mkdir()
    out["empty"] = str(root / "empty")
    cfg = root / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow"'
        + (' version_labels { key: "stable" value: 1 }' if n == "toy" else "") + " }\n"
        for n, p in out.items()) + "}\n")
    batching = root / "batching.config"
    batching.write_text(f"max_batch_size {{ value: {MAX_BATCH} }}\nbatch_timeout_micros {{ value: 3000 }}\n"
                        "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 1000 }\n")
    out["config"], out["batching"] = str(cfg), str(batching)
    return out


@pytest.fixture(scope="module")
def ours(bases):
    srv = ServerProcess([f"--model_config_file={bases['config']}", "--enable_batching",
                         f"--batching_parameters_file={bases['batching']}", "--file_system_poll_wait_seconds=0.3",
                         f"--max_message_bytes={MAX_MESSAGE}"], ready_model="toy")
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def server(ours):
    """The protocol tests' server; test_protocols_against_tensorflow_model_server reruns them on TF Serving."""
    return ours, "ours"


@pytest.fixture(scope="module")
def reference(toy_version_dir):
    """The same SavedModel loaded in this process: the expected outputs."""
    return tf.saved_model.load(toy_version_dir)


def stubs(srv):
    ch = grpc.insecure_channel(srv.grpc_address, options=[("grpc.max_send_message_length", 16 << 20)])
    return (prediction_service_pb2_grpc.PredictionServiceStub(ch), model_service_pb2_grpc.ModelServiceStub(ch))


def rest(srv, path, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{srv.rest_address}{path}", data=data,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def predict_request(model="toy", signature="", version=None, label=None, **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def example(text):
    e = tf.train.Example()
    e.features.feature["text"].bytes_list.value.append(text.encode())
    return e


def expect_grpc_error(call, code, *fragments):
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, (info.value.code(), info.value.details())
    for f in fragments:
        assert f in info.value.details(), info.value.details()
    return info.value.details()


TEXTS = ["a wonderful, moving film", "dull and far too long", "", "Ünïcödé 文字 ok"]


# ------------------------------------------------------------------------------------ protocol tests
def test_model_status_grpc_and_rest(server):
    srv, _ = server
    _, model_stub = stubs(srv)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "toy"
    resp = model_stub.GetModelStatus(req, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in resp.model_version_status] == [(1, 30, 0)]
    status, body = rest(srv, "/v1/models/toy")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    status, body = rest(srv, "/v1/models/toy/versions/1")
    assert status == 200 and body["model_version_status"][0]["version"] == "1"


def test_model_metadata_grpc_and_rest(server, reference):
    srv, _ = server
    pred, _ = stubs(srv)
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "toy"
    resp = pred.GetModelMetadata(req, timeout=30)
    assert resp.model_spec.name == "toy" and resp.model_spec.version.value == 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    for name in ("serving_default", "predict_pairs", "classify", "regress", "encode"):
        assert name in sig_map.signature_def
        assert set(sig_map.signature_def[name].outputs) == set(reference.signatures[name].structured_outputs)
    sd = sig_map.signature_def["serving_default"]
    assert sd.inputs["text"].dtype == tf.string.as_datatype_enum
    assert sd.method_name == "tensorflow/serving/predict"
    status, body = rest(srv, "/v1/models/toy/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
    sd_json = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sd_json["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sd_json["inputs"]["text"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert sd_json["method_name"] == "tensorflow/serving/predict"


def test_predict_grpc_matches_in_process(server, reference):
    srv, _ = server
    pred, _ = stubs(srv)
    resp = pred.Predict(predict_request(text=TEXTS), timeout=30)
    want = reference.signatures["serving_default"](text=tf.constant(TEXTS))
    assert resp.model_spec.name == "toy" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    assert set(resp.outputs) == {"probabilities", "class_ids", "labels"}
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["probabilities"]), want["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert tf.make_ndarray(resp.outputs["labels"]).tolist() == want["labels"].numpy().tolist()
    assert tf.make_ndarray(resp.outputs["class_ids"]).tolist() == want["class_ids"].numpy().tolist()
    # output_filter, a named signature with two inputs, a version label and an explicit version.
    req = predict_request(signature="predict_pairs", label="stable", text_a=["a", "b"], text_b=["c", "d"])
    req.output_filter.append("labels")
    resp = pred.Predict(req, timeout=30)
    assert list(resp.outputs) == ["labels"] and resp.model_spec.version.value == 1
    want = reference.signatures["predict_pairs"](text_a=tf.constant(["a", "b"]), text_b=tf.constant(["c", "d"]))
    assert tf.make_ndarray(resp.outputs["labels"]).tolist() == want["labels"].numpy().tolist()
    resp = pred.Predict(predict_request(version=1, text=["x"]), timeout=30)
    assert resp.model_spec.version.value == 1


def test_predict_rest_row_and_columnar(server, reference):
    srv, _ = server
    want = reference.signatures["serving_default"](text=tf.constant(TEXTS))
    status, body = rest(srv, "/v1/models/toy:predict", {"instances": TEXTS})
    assert status == 200, body
    assert [p["labels"] for p in body["predictions"]] == [s.decode() for s in want["labels"].numpy()]
    assert [p["class_ids"] for p in body["predictions"]] == want["class_ids"].numpy().tolist()
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], want["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-6)
    # Columnar form, b64 strings, explicit version and signature_name.
    b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]
    status, body2 = rest(srv, "/v1/models/toy/versions/1:predict", {"signature_name": "serving_default",
                                                                     "inputs": {"text": b64}})
    assert status == 200, body2
    assert body2["outputs"]["labels"] == [p["labels"] for p in body["predictions"]]
    np.testing.assert_allclose(body2["outputs"]["probabilities"], want["probabilities"].numpy(), rtol=1e-5,
                               atol=1e-6)
    # Named instances with two inputs; a single-output signature answers with plain values.
    status, body = rest(srv, "/v1/models/toy:predict", {"signature_name": "predict_pairs",
                                                         "instances": [{"text_a": "a", "text_b": "c"}]})
    assert status == 200 and set(body["predictions"][0]) == {"labels", "class_ids", "probabilities"}
    status, body = rest(srv, "/v1/models/toy:predict", {"signature_name": "encode", "instances": ["a b"]})
    want = reference.signatures["encode"](text=tf.constant(["a b"]))["pooled_output"].numpy()
    assert status == 200 and isinstance(body["predictions"][0], list)
    np.testing.assert_allclose(body["predictions"], want, rtol=1e-5, atol=1e-6)
    status, body = rest(srv, "/v1/models/toy:predict", {"signature_name": "encode", "inputs": ["a b"]})
    assert status == 200
    np.testing.assert_allclose(body["outputs"], want, rtol=1e-5, atol=1e-6)
    ids = [[5, 6, 7], [8, 9, 0]]
    status, body = rest(srv, "/v1/models/toy:predict", {"signature_name": "ids", "instances": ids})
    want = reference.signatures["ids"](input_word_ids=tf.constant(ids))["logits"].numpy()
    assert status == 200
    np.testing.assert_allclose([p["logits"] for p in body["predictions"]], want, rtol=1e-5, atol=1e-6)


def test_classify_and_regress_grpc_and_rest(server, reference):
    srv, _ = server
    pred, _ = stubs(srv)
    serialized = tf.constant([example(t).SerializeToString() for t in TEXTS])
    want_scores = reference.signatures["classify"](inputs=serialized)["scores"].numpy()
    want_reg = reference.signatures["regress"](inputs=serialized)["outputs"].numpy()

    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "toy", "classify"
    req.input.example_list.examples.extend(example(t) for t in TEXTS)
    resp = pred.Classify(req, timeout=30)
    assert resp.model_spec.signature_name == "classify" and resp.model_spec.version.value == 1
    got = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
    assert [[label for label, _ in row] for row in got] == [list(LABELS)] * len(TEXTS)
    np.testing.assert_allclose([[s for _, s in row] for row in got], want_scores, rtol=1e-5, atol=1e-6)

    # Context: the text feature comes from the context for every example.
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "toy", "classify"
    req.input.example_list_with_context.context.CopyFrom(example(TEXTS[0]))
    req.input.example_list_with_context.examples.add()
    resp = pred.Classify(req, timeout=30)
    np.testing.assert_allclose([c.score for c in resp.result.classifications[0].classes], want_scores[0],
                               rtol=1e-5, atol=1e-6)

    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name, rreq.model_spec.signature_name = "toy", "regress"
    rreq.input.example_list.examples.extend(example(t) for t in TEXTS)
    resp = pred.Regress(rreq, timeout=30)
    np.testing.assert_allclose([r.value for r in resp.result.regressions], want_reg, rtol=1e-5, atol=1e-6)

    status, body = rest(srv, "/v1/models/toy:classify", {"signature_name": "classify",
                                                          "examples": [{"text": t} for t in TEXTS]})
    assert status == 200, body
    assert [[c[0] for c in row] for row in body["results"]] == [list(LABELS)] * len(TEXTS)
    np.testing.assert_allclose([[c[1] for c in row] for row in body["results"]], want_scores, rtol=1e-5,
                               atol=1e-6)
    status, body = rest(srv, "/v1/models/toy:regress", {"signature_name": "regress", "context": {"text": TEXTS[1]},
                                                         "examples": [{}]})
    assert status == 200, body
    np.testing.assert_allclose(body["results"], want_reg[1:2], rtol=1e-5, atol=1e-6)


def test_protocol_errors(server):
    """Errors whose codes TF Serving and this server share."""
    srv, _ = server
    pred, model_stub = stubs(srv)
    inv, nf = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    expect_grpc_error(lambda: pred.Predict(predict_request(model="nope", text=["a"]), timeout=30), nf, "nope")
    expect_grpc_error(lambda: pred.Predict(predict_request(version=7, text=["a"]), timeout=30), nf, "7")
    st = get_model_status_pb2.GetModelStatusRequest()
    st.model_spec.name = "nope"
    expect_grpc_error(lambda: model_stub.GetModelStatus(st, timeout=30), nf, "nope")
    expect_grpc_error(lambda: pred.Predict(predict_request(signature="predict_pairs", text_a=["a"]), timeout=30),
                      inv, "Missing but required: {text_b}")
    expect_grpc_error(lambda: pred.Predict(predict_request(text=["a"], extra=["b"]), timeout=30), inv,
                      "Sent extra: {extra}")
    expect_grpc_error(lambda: pred.Predict(predict_request(text=np.array([1.5], np.float32)), timeout=30), inv)
    req = predict_request(text=["a"])
    req.output_filter.append("nope")
    expect_grpc_error(lambda: pred.Predict(req, timeout=30), inv, "nope")
    assert rest(srv, "/v1/models/nope:predict", {"instances": ["a"]})[0] == 404
    assert rest(srv, "/v1/models/toy/versions/7:predict", {"instances": ["a"]})[0] == 404
    assert rest(srv, "/v1/models/nope")[0] == 404
    status, body = rest(srv, "/v1/models/toy:predict", {"instances": [1]})
    assert status == 400 and "is not of expected type: string" in body["error"]
    status, body = rest(srv, "/v1/models/toy:predict", raw=b"{not json")
    assert status == 400 and "error" in body
    status, body = rest(srv, "/v1/models/toy:predict", {"signature_name": "predict_pairs",
                                                         "inputs": {"text_a": ["a"]}})
    assert status == 400 and "text_b" in body["error"]
    status, body = rest(srv, "/v1/models/toy:predict", {"instances": ["a"], "inputs": ["b"]})
    assert status == 400
    status, body = rest(srv, "/v1/models/toy:predict", {"signature_name": "serving_default"})
    assert status == 400 and "Missing 'inputs' or 'instances' key" in body["error"]
    status, body = rest(srv, "/v1/models/toy:classify", {"signature_name": "classify"})
    assert status == 400 and "examples" in body["error"]
    # The server still answers normally afterwards.
    assert pred.Predict(predict_request(text=["still fine"]), timeout=30).outputs["labels"].string_val


# -------------------------------------------------------------------------------- this server only
def test_error_codes_specific_to_this_server(ours):
    """NOT_FOUND for an unknown signature and UNAVAILABLE before any version is loaded (the issue's spec;
    TF Serving answers FAILED_PRECONDITION / NOT_FOUND there), size (413) and batch (400) limits, bad shapes."""
    pred, model_stub = stubs(ours)
    code = grpc.StatusCode
    expect_grpc_error(lambda: pred.Predict(predict_request(signature="nope", text=["a"]), timeout=30),
                      code.NOT_FOUND, '"nope" not found')
    assert rest(ours, "/v1/models/toy:predict", {"signature_name": "nope", "instances": ["a"]})[0] == 404
    expect_grpc_error(lambda: pred.Predict(predict_request(model="empty", text=["a"]), timeout=30),
                      code.UNAVAILABLE, "empty")
    status, body = rest(ours, "/v1/models/empty:predict", {"instances": ["a"]})
    assert status == 503 and "no version" in body["error"]
    expect_grpc_error(lambda: pred.Predict(predict_request(text=[["a"]]), timeout=30), code.INVALID_ARGUMENT,
                      "expects shape [-1]")
    expect_grpc_error(lambda: pred.Predict(predict_request(signature="ids", input_word_ids=np.ones((2, 3), np.int64)),
                                           timeout=30), code.INVALID_ARGUMENT, "int32")
    # Over the batch limit (INVALID_ARGUMENT, as TF Serving; issue #16) and over the message size limit
    # (gRPC: RESOURCE_EXHAUSTED from gRPC itself; REST: 413 before the body is read).
    expect_grpc_error(lambda: pred.Predict(predict_request(text=["a"] * (MAX_BATCH + 1)), timeout=30),
                      code.INVALID_ARGUMENT, f"maximum input batch size {MAX_BATCH}")
    status, body = rest(ours, "/v1/models/toy:predict", {"instances": ["a"] * (MAX_BATCH + 1)})
    assert status == 400 and f"maximum input batch size {MAX_BATCH}" in body["error"]
    status, body = rest(ours, "/v1/models/toy:predict", {"inputs": {"text": ["a"] * (MAX_BATCH + 1)}})
    assert status == 400 and f"maximum input batch size {MAX_BATCH}" in body["error"]
    expect_grpc_error(lambda: pred.Predict(predict_request(text=["x" * (MAX_MESSAGE + 10)]), timeout=30),
                      code.RESOURCE_EXHAUSTED)
    status, body = rest(ours, "/v1/models/toy:predict", {"instances": ["x" * (MAX_MESSAGE + 10)]})
    assert status == 413 and "exceeds the limit" in body["error"]
    # Classify against a signature that is not a classification signature, and a missing model name.
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "toy"
    req.input.example_list.examples.add()
    expect_grpc_error(lambda: pred.Classify(req, timeout=30), code.INVALID_ARGUMENT, "inputs")
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "toy", "classify"
    expect_grpc_error(lambda: pred.Classify(req, timeout=30), code.INVALID_ARGUMENT, "Input is empty")
    st = get_model_status_pb2.GetModelStatusRequest()
    st.model_spec.name = "toy"
    st.model_spec.version.value = 9
    expect_grpc_error(lambda: model_stub.GetModelStatus(st, timeout=30), code.NOT_FOUND, "version 9")
    assert rest(ours, "/v1/models")[0] == 400
    assert rest(ours, "/v1/models/toy:explode", {"instances": ["a"]})[0] == 400


def test_undecodable_example_does_not_poison_batch(ours, reference):
    """Garbage in a serialized tf.Example fails that request only, even when batched with good ones."""
    pred, _ = stubs(ours)
    good = [example(t).SerializeToString() for t in TEXTS[:2]]
    want = reference.signatures["classify"](inputs=tf.constant(good))["scores"].numpy()

    def call(i):
        payload = [b"\xff\x00not a proto"] if i % 4 == 0 else [good[i % 2]]
        try:
            r = pred.Predict(predict_request(signature="classify", inputs=np.array(payload, dtype=object)),
                             timeout=60)
            return i, tf.make_ndarray(r.outputs["scores"])[0], None
        except grpc.RpcError as e:
            return i, None, e.code()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(48)))
    for i, scores, err in results:
        if i % 4 == 0:
            assert err == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert err is None
            np.testing.assert_allclose(scores, want[i % 2], rtol=1e-5, atol=1e-6)


def test_batching_merges_and_groups_by_shape(ours, reference):
    pred, _ = stubs(ours)
    barrier = threading.Barrier(8)

    def probe(i):
        barrier.wait()
        r = pred.Predict(predict_request(signature="probe", text=["x" * i]), timeout=60)
        return int(tf.make_ndarray(r.outputs["batch_size"])[0]), int(tf.make_ndarray(r.outputs["length"])[0])

    for _ in range(3):  # concurrent single-row requests run as merged batches
        with ThreadPoolExecutor(8) as pool:
            out = list(pool.map(probe, range(8)))
        assert [length for _, length in out] == list(range(8))  # each caller gets its own row back
        if max(b for b, _ in out) > 1:
            break
    assert max(b for b, _ in out) > 1, out
    assert max(b for b, _ in out) <= MAX_BATCH

    # int inputs of different lengths: grouped by shape, each result equals the unbatched call.
    rows = [np.arange(1, 2 + (i % 3), dtype=np.int32)[None, :] + i for i in range(12)]

    def ids(i):
        r = pred.Predict(predict_request(signature="ids", input_word_ids=rows[i]), timeout=60)
        return tf.make_ndarray(r.outputs["logits"])

    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(ids, range(12)))
    for i in range(12):
        want = reference.signatures["ids"](input_word_ids=tf.constant(rows[i]))["logits"].numpy()
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_1000_requests_at_concurrency_16(ours, reference):
    pred, _ = stubs(ours)
    texts = [f"request number {i} is {'good' if i % 3 else 'bad'}" for i in range(1000)]
    want = reference.signatures["serving_default"](text=tf.constant(texts))["labels"].numpy()

    def call(i):
        if i % 4 == 3:
            status, body = rest(ours, "/v1/models/toy:predict", {"instances": [texts[i]]})
            assert status == 200, body
            return body["predictions"][0]["labels"].encode()
        r = pred.Predict(predict_request(text=[texts[i]]), timeout=60)
        return tf.make_ndarray(r.outputs["labels"])[0]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, range(1000)))  # any error raises here
    assert got == list(want)


def test_version_swap_under_load(ours, bases):
    pred, _ = stubs(ours)
    base = bases["swap"]
    stop = threading.Event()
    versions, errors = [], []

    def worker():
        while not stop.is_set():
            try:
                r = pred.Predict(predict_request(model="swap", text=["swap me"]), timeout=60)
                versions.append(r.model_spec.version.value)
            except grpc.RpcError as e:  # pragma: no cover - the assertion below reports it
                errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        while len(versions) < 100 and not errors:
            threading.Event().wait(0.05)
        # An exporter writes a temporary sibling, then renames it into place.
        shutil.copytree(os.path.join(base, "1"), os.path.join(base, ".tmp-2"))
        write_warmup(os.path.join(base, ".tmp-2"))
        shutil.copytree(os.path.join(base, "1"), os.path.join(base, "3.partial"))
        os.rename(os.path.join(base, ".tmp-2"), os.path.join(base, "2"))
        for _ in range(1200):  # up to 60 s on a busy machine
            if versions and versions[-1] == 2 and len(versions) - versions.index(2) > 200:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert versions[0] == 1 and versions[-1] == 2
    first_two = versions.index(2)
    assert set(versions[first_two + 64:]) == {2}  # after the switch only the new version answers
    _, model_stub = stubs(ours)
    st = get_model_status_pb2.GetModelStatusRequest()
    st.model_spec.name = "swap"
    for _ in range(100):
        states = {s.version: s.state for s in model_stub.GetModelStatus(st, timeout=30).model_version_status}
        if states.get(1) == 50:
            break
        threading.Event().wait(0.1)
    assert states == {2: 30, 1: 50}  # 2 AVAILABLE, 1 END; "3.partial" and ".tmp-2" never loaded
    assert "Finished reading warmup data for model swap version 2: 2 records" in ours.log()


def write_warmup(version_dir):
    """TF Serving's warmup file: PredictionLog records in assets.extra/tf_serving_warmup_requests."""
    from tensorflow_serving.apis import prediction_log_pb2

    os.makedirs(os.path.join(version_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) as w:
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_request(model="swap", text=["warm up"]))
        w.write(log.SerializeToString())
        log = prediction_log_pb2.PredictionLog()
        req = log.classify_log.request
        req.model_spec.name, req.model_spec.signature_name = "swap", "classify"
        req.input.example_list.examples.add().CopyFrom(example("warm"))
        w.write(log.SerializeToString())


def test_protocols_against_tensorflow_model_server(bases, reference):
    """The protocol tests above, against the real TF Serving binary when it is installed."""
    binary = tf_serving_binary()
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH: protocol tests ran against serving.server only")
    with ServerProcess([f"--model_config_file={bases['config']}", "--enable_batching",
                        f"--batching_parameters_file={bases['batching']}"], binary=binary, ready_model="toy") as srv:
        server = (srv, "tfms")
        test_model_status_grpc_and_rest(server)
        test_model_metadata_grpc_and_rest(server, reference)
        test_predict_grpc_matches_in_process(server, reference)
        test_predict_rest_row_and_columnar(server, reference)
        test_classify_and_regress_grpc_and_rest(server, reference)
        test_protocol_errors(server)


def test_sigterm_drains_in_flight_requests(ours):
    """Runs last (uses the shared server): SIGTERM while slow requests run; they all succeed, exit code 0."""
    pred, _ = stubs(ours)
    started = threading.Barrier(5)

    def slow(_):
        started.wait()
        r = pred.Predict(predict_request(signature="slow", text=["a"], iterations=np.int32(500)), timeout=120)
        return tf.make_ndarray(r.outputs["probabilities"]).shape

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(slow, i) for i in range(4)]
        started.wait()
        threading.Event().wait(0.2)  # let the calls reach the server
        rc = ours.terminate(timeout=120)
        assert [f.result() for f in futures] == [(1, 3)] * 4
    assert rc == 0, ours.log()[-2000:]
    assert "draining" in ours.log()


# ---------------------------------------------------------------------------------------- unit tests
def test_batching_parameters_text_proto():
    text = """
    # TF Serving's documented form
    max_batch_size { value: 64 }
    batch_timeout_micros { value: 500 }
    max_enqueued_batches: 7
    num_batch_threads { value: 3 }
    pad_variable_length_inputs: true
    """
    o = BatchingOptions.from_text(text)
    assert (o.max_batch_size, o.batch_timeout_micros, o.max_enqueued_batches, o.num_batch_threads,
            o.pad_variable_length_inputs) == (64, 500, 7, 3, True)
    with pytest.raises(ValueError, match="unknown batching parameter 'max_batch'"):
        BatchingOptions.from_text("max_batch: 3")
    with pytest.raises(ValueError, match="must be >= 1"):
        BatchingOptions.from_text("max_batch_size { value: 0 }")


def test_batcher_pads_variable_lengths_and_isolates_failures():
    seen = []

    def run(d):
        seen.append(d["x"].shape)
        if (d["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": d["x"].sum(axis=1)}

    b = Batcher(run, BatchingOptions(max_batch_size=16, batch_timeout_micros=200000, num_batch_threads=1,
                                     pad_variable_length_inputs=True))
    arrays = [np.full((1, n), 1, np.int32) for n in (2, 3, 5)] + [np.full((1, 3), -1, np.int32)]
    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(b.submit, {"x": a}) for a in arrays]
        results = []
        for f in futs:
            try:
                results.append(int(f.result()["y"][0]))
            except Exception as e:  # noqa: BLE001
                results.append(type(e).__name__)
    b.close()
    assert results == [2, 3, 5, "ServingError"]
    assert any(s[0] > 1 for s in seen)  # merged (padded to the longest) at least once


def test_model_config_file_parsing(tmp_path):
    cfg = tmp_path / "m.config"
    cfg.write_text('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow" '
                   'model_version_policy { latest { num_versions: 2 } } } '
                   'config { name: "b" base_path: "/y" model_version_policy { specific { versions: 3 } } } }')
    a, b = configs_from_model_server_config(str(cfg))
    assert (a.name, a.base_path, a.policy, a.num_versions) == ("a", "/x", "latest", 2)
    assert (b.policy, b.versions) == ("specific", (3,))
    cfg.write_text("model_config_list { config { name: 'a' } }")
    with pytest.raises(ValueError, match="base_path"):
        configs_from_model_server_config(str(cfg))
