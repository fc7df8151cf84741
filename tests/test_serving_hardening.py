"""serving.server against a hostile client (issue #16): every request it cannot parse or validate is
400 / INVALID_ARGUMENT (413 for a body over --rest_api_max_body_bytes, before it is read), a request
past --rest_api_timeout_in_ms is 504 / DEADLINE_EXCEEDED with its model run cancelled, 5xx never
answers bad input, and the server keeps serving. Ends with a seeded fuzz run over the REST grammar
whose valid bodies must give the outputs of an in-process call.

`HOSTILE_REST` / `HOSTILE_GRPC` below are the table of hostile inputs and the status each gets.
"""

import base64
import http.client
import json
import os
import random
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import codec
from serving.testing import ServerProcess
from serving.toy_model import cached_toy_model

MAX_BATCH = 8
MAX_BODY = 1 << 20
TIMEOUT_MS = 4000


@pytest.fixture(scope="session")
def toy_version_dir(tmp_path_factory):
    return cached_toy_model(str(tmp_path_factory.getbasetemp() / "toy_model_cache"))


@pytest.fixture(scope="module")
def srv(toy_version_dir, tmp_path_factory):
    batching = tmp_path_factory.mktemp("hardening") / "batching.config"
    batching.write_text(f"max_batch_size {{ value: {MAX_BATCH} }}\nbatch_timeout_micros {{ value: 1000 }}\n"
                        "num_batch_threads { value: 2 }\n")
    with ServerProcess(["--model_name=toy", f"--model_base_path={os.path.dirname(toy_version_dir)}",
                        "--enable_batching", f"--batching_parameters_file={batching}",
                        f"--rest_api_max_body_bytes={MAX_BODY}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
                        "--rest_api_num_threads=4"], ready_model="toy") as s:
        yield s


@pytest.fixture(scope="module")
def reference(toy_version_dir):
    return tf.saved_model.load(toy_version_dir)


def post(srv, body, path="/v1/models/toy:predict", method="POST", headers=None, timeout=60):
    """(status, parsed JSON or None) for raw bytes; one connection per call."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {},
                     encode_chunked="chunked" in (headers or {}).get("Transfer-Encoding", ""))
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data) if data else None
    except ValueError:
        return resp.status, data


def raw_exchange(srv, head, body=b""):
    """Send raw bytes (headers, maybe part of a body) and read the answer's status line and body."""
    with socket.create_connection(("127.0.0.1", srv.rest_port), timeout=30) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head_part.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head_part.split(b" ")[1]), json.loads(rest) if rest else None


def stub(srv):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_address))


def predict_request(signature="", **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "toy"
    req.model_spec.signature_name = signature
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_idle(srv, window=1.0, limit=0.5):
    """The server burns (almost) no CPU: a cancelled model run is not still going."""
    before = cpu_seconds(srv.proc.pid)
    time.sleep(window)
    used = cpu_seconds(srv.proc.pid) - before
    assert used < limit, f"server used {used:.2f} CPU s in {window} s: the timed-out run is still going"


def assert_still_serving(srv, reference):
    assert srv.proc.poll() is None, srv.log()[-3000:]
    status, body = post(srv, json.dumps({"instances": ["still serving"]}).encode())
    want = reference.signatures["serving_default"](text=tf.constant(["still serving"]))["labels"].numpy()
    assert status == 200 and body["predictions"][0]["labels"] == want[0].decode(), body


def _nested(depth, leaf='"a"'):
    return "[" * depth + leaf + "]" * depth


# (name, body bytes, REST status). Every one must also leave the server serving.
HOSTILE_REST = [
    ("100,000 nested [ (~200 KB)", b"[" * 100000 + b"]" * 100000, 400),
    ("100,000 nested [ inside instances", b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400),
    ("40 nested lists inside instances (valid JSON)", ('{"instances": %s}' % _nested(40)).encode(), 400),
    ("invalid UTF-8", b'{"instances": ["\xff\xfe"]}', 400),
    ("truncated JSON", b'{"instances": ["a good fi', 400),
    ("empty body", b"", 400),
    ("null", b"null", 400),
    ("top-level array", b'["a good film"]', 400),
    ("top-level string", b'"a good film"', 400),
    ("wrong keys", b'{"instance": ["a"]}', 400),
    ("both instances and inputs", b'{"instances": ["a"], "inputs": ["a"]}', 400),
    ("numbers for text", b'{"instances": [1, 2]}', 400),
    ("huge number 1e999 for text", b'{"instances": [1e999]}', 400),
    ("5,000-digit integer", b'{"instances": [' + b"9" * 5000 + b"]}", 400),
    ("2**70 for int32 ids", b'{"signature_name": "ids", "instances": [[1180591620717411303424]]}', 400),
    ("1e300 for int32 ids", b'{"signature_name": "ids", "instances": [[1e300]]}', 400),
    ("NaN for text", b'{"instances": [NaN]}', 400),
    ("Infinity / -Infinity for text", b'{"inputs": {"text": [Infinity, -Infinity]}}', 400),
    ("NaN for int ids", b'{"signature_name": "ids", "instances": [[NaN]]}', 400),
    ("more instances than max_batch_size", json.dumps({"instances": ["a"] * (MAX_BATCH + 1)}).encode(), 400),
    ("more columnar rows than max_batch_size", json.dumps({"inputs": {"text": ["a"] * 1000}}).encode(), 400),
    ("more examples than max_batch_size (classify)",
     json.dumps({"signature_name": "classify", "examples": [{"text": "a"}] * (MAX_BATCH + 1)}).encode(), 400),
    ("ragged instances", b'{"signature_name": "ids", "instances": [[1, 2], [3]]}', 400),
    ("signature_name not a string", b'{"signature_name": 7, "instances": ["a"]}', 400),
    ("bad base64", b'{"instances": [{"b64": "%%%"}]}', 400),
    ("b64 not a string", b'{"instances": [{"b64": 5}]}', 400),
    ("lone surrogate in text", b'{"instances": ["\\ud800"]}', 400),
    ("lone surrogate in an input name", b'{"instances": [{"\\udfff": "a"}]}', 400),
    ("unknown input name", b'{"inputs": {"text": ["a"], "txet": ["b"]}}', 400),
    ("missing input of two", b'{"signature_name": "predict_pairs", "instances": [{"text_a": "a"}]}', 400),
    ("bool for text", b'{"instances": [true]}', 400),
    ("object for text", b'{"instances": [{"x": 1}]}', 400),
    ("classify: example not an object", b'{"signature_name": "classify", "examples": [1]}', 400),
    ("classify: mixed feature types", b'{"signature_name": "classify", "examples": [{"text": ["a", 1]}]}', 400),
    ("unknown signature", b'{"signature_name": "nope", "instances": ["a"]}', 404),
]


@pytest.mark.parametrize("name, body, want", HOSTILE_REST, ids=[h[0] for h in HOSTILE_REST])
def test_hostile_rest_bodies(srv, name, body, want):
    status, reply = post(srv, body)
    assert status == want, (name, status, reply)
    assert isinstance(reply, dict) and set(reply) == {"error"} and reply["error"], reply


def test_hostile_http_framing(srv, reference):
    path = "/v1/models/toy:predict"
    # 64 MB announced: 413 before the body is read (with Expect: 100-continue the body is never sent).
    status, reply = raw_exchange(srv, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\n"
                                 "Expect: 100-continue\r\n\r\n".encode())
    assert status == 413 and "exceeds the limit" in reply["error"]
    status, reply = raw_exchange(srv, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\n\r\n"
                                 .encode(), b"{" * 1000)
    assert status == 413 and "exceeds the limit" in reply["error"]
    # A real over-limit body, sent whole: drained, then 413.
    status, reply = post(srv, json.dumps({"instances": ["x" * (MAX_BODY + 10)]}).encode())
    assert status == 413
    # Chunked bodies: decoded within the limit, 413 past it.
    chunked = {"Transfer-Encoding": "chunked"}
    status, reply = post(srv, iter([b'{"instances": ', b'["chunked ok"]}']), headers=chunked)
    assert status == 200 and reply["predictions"][0]["labels"], reply
    status, reply = post(srv, iter([b"[" * (MAX_BODY // 2), b"[" * (MAX_BODY // 2 + 10)]), headers=chunked)
    assert status == 413
    for bad_length in (b"-5", b"abc", b"1e3"):
        status, reply = raw_exchange(srv, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                     + bad_length + b"\r\n\r\n")
        assert status == 400, bad_length
    for method in ("PUT", "DELETE", "PATCH"):
        status, reply = post(srv, b"{}", method=method)
        assert status == 400 and "Malformed request" in reply["error"]
    assert post(srv, b'{"instances": ["a"]}', path="/v1/models/toy/versions/x:predict")[0] == 400
    assert post(srv, b'{"instances": ["a"]}', path="/v1/models/toy:explode")[0] == 400
    assert post(srv, None, path="/v1/models/%ff%fe/metadata", method="GET")[0] == 404
    assert_still_serving(srv, reference)


def test_rest_timeout_cancels_the_run(srv, reference):
    """A request past --rest_api_timeout_in_ms: 504 DEADLINE_EXCEEDED, and the model stops working on it."""
    body = json.dumps({"signature_name": "slow", "inputs": {"text": ["a"], "iterations": 10 ** 8}}).encode()
    t0 = time.monotonic()
    status, reply = post(srv, body)
    elapsed = time.monotonic() - t0
    assert status == 504 and "deadline" in reply["error"].lower(), reply
    assert TIMEOUT_MS / 1000 - 0.1 <= elapsed < TIMEOUT_MS / 1000 + 10, elapsed
    assert_idle(srv)
    assert_still_serving(srv, reference)


def test_hostile_grpc_requests(srv, reference):
    channel = grpc.insecure_channel(srv.grpc_address)
    raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    pred = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    code = grpc.StatusCode

    def err(call):
        try:
            call()
        except grpc.RpcError as e:
            return e.code()
        return code.OK

    huge = predict_request(text=["a"])
    huge.inputs["text"].tensor_shape.dim[0].size = 1 << 40
    ids_huge = predict_pb2.PredictRequest()
    ids_huge.model_spec.name, ids_huge.model_spec.signature_name = "toy", "ids"
    ids_huge.inputs["input_word_ids"].dtype = tf.int32.as_datatype_enum
    ids_huge.inputs["input_word_ids"].tensor_shape.dim.add().size = 4
    ids_huge.inputs["input_word_ids"].tensor_shape.dim.add().size = 1 << 35
    ids_huge.inputs["input_word_ids"].int_val.append(1)
    # name -> (the call, the gRPC code it must get)
    table = {
        "bytes that are not a PredictRequest": (lambda: raw_predict(b"\xff\xff\xff\xff garbage", timeout=30),
                                                code.INVALID_ARGUMENT),
        "truncated PredictRequest": (lambda: raw_predict(predict_request(text=["abc"]).SerializeToString()[:-3],
                                                         timeout=30), code.INVALID_ARGUMENT),
        "string tensor claiming 2**40 rows": (lambda: pred.Predict(huge, timeout=30), code.INVALID_ARGUMENT),
        "int tensor [4, 2**35] from one value": (lambda: pred.Predict(ids_huge, timeout=30), code.INVALID_ARGUMENT),
        "more rows than max_batch_size": (lambda: pred.Predict(predict_request(text=["a"] * (MAX_BATCH + 1)),
                                                               timeout=30), code.INVALID_ARGUMENT),
        "NaN floats for text": (lambda: pred.Predict(predict_request(text=np.array([np.nan], np.float32)),
                                                     timeout=30), code.INVALID_ARGUMENT),
        "rank-3 text": (lambda: pred.Predict(predict_request(text=[[["a"]]]), timeout=30), code.INVALID_ARGUMENT),
    }
    for name, (call, want) in table.items():
        assert err(call) == want, name
    # A gRPC deadline bounds the model run too.
    slow = predict_request(signature="slow", text=["a"], iterations=np.int32(10 ** 8))
    assert err(lambda: pred.Predict(slow, timeout=1.0)) == code.DEADLINE_EXCEEDED
    time.sleep(0.5)
    assert_idle(srv)
    channel.close()
    assert_still_serving(srv, reference)


# ------------------------------------------------------------------------------------------- fuzzing
WORDS = ["good", "bad", "film", "movie", "dull", "moving", "far", "too", "long", "ok", "Ünïcödé", "文字", ""]


class Grammar:
    """Random REST bodies from the API's grammar; each valid one knows its in-process expectation."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def text(self):
        return " ".join(self.r.choice(WORDS) for _ in range(self.r.randint(0, 6)))

    def string_leaf(self, s):
        return {"b64": base64.b64encode(s.encode()).decode()} if self.r.random() < 0.3 else s

    def valid(self):
        """(body dict, signature, inputs as numpy) for a valid request."""
        r = self.r
        n = r.randint(1, MAX_BATCH)
        kind = r.choice(["serving_default", "predict_pairs", "encode", "ids"])
        if kind == "ids":
            width = r.randint(1, 5)
            inputs = {"input_word_ids": np.array([[r.randint(0, 999) for _ in range(width)] for _ in range(n)],
                                                 np.int32)}
        elif kind == "predict_pairs":
            inputs = {"text_a": [self.text() for _ in range(n)], "text_b": [self.text() for _ in range(n)]}
        else:
            inputs = {"text": [self.text() for _ in range(n)]}
        jsonable = {k: (v.tolist() if isinstance(v, np.ndarray) else [self.string_leaf(s) for s in v])
                    for k, v in inputs.items()}
        body = {}
        if kind != "serving_default" or r.random() < 0.5:
            body["signature_name"] = kind
        if r.random() < 0.5:  # row format
            if len(jsonable) == 1 and r.random() < 0.7:
                body["instances"] = next(iter(jsonable.values()))
            else:
                body["instances"] = [{k: v[i] for k, v in jsonable.items()} for i in range(n)]
        else:
            only = len(jsonable) == 1 and r.random() < 0.5
            body["inputs"] = next(iter(jsonable.values())) if only else jsonable
        if r.random() < 0.3:
            keys = list(body)
            r.shuffle(keys)
            body = {k: body[k] for k in keys}
        arrays = {k: (v if isinstance(v, np.ndarray) else np.array([s.encode() for s in v], dtype=object))
                  for k, v in inputs.items()}
        return body, kind, arrays

    def mutate_value(self, v):
        r = self.r
        choice = r.randrange(12)
        if choice == 0:
            return None
        if choice == 1:
            return r.choice([float("nan"), float("inf"), -float("inf"), 1e308, -(2 ** 80), 2 ** 63])
        if choice == 2:
            return {"b64": r.choice(["%%", "", "a", 5, None, "YQ", "Y-_Q"])}
        if choice == 3:
            return [v, [v]]
        if choice == 4:
            return [[v]] * r.randint(1, 3)
        if choice == 5:
            return r.choice([True, 0, 1.5, "x", {}, [], {"a": 1}])
        if choice == 6:
            return [v] * r.randint(MAX_BATCH + 1, 3 * MAX_BATCH)
        if choice == 7:
            deep = v
            for _ in range(r.randint(30, 300)):
                deep = [deep]
            return deep
        if choice == 8:
            return "\ud800" + str(v)
        if choice == 9 and isinstance(v, list) and v:
            return v[: r.randint(0, len(v) - 1)] + [r.choice([1, "a", None, [1]])]
        if choice == 10 and isinstance(v, dict):
            return {**v, r.choice(["text", "zz", "b64", "text_a"]): r.choice(["a", 1, [1]])}
        return str(v)

    def mutate(self, body):
        r = self.r
        body = json.loads(json.dumps(body))
        op = r.randrange(6)
        if op == 0 and body:  # replace a top-level value
            k = r.choice(list(body))
            body[k] = self.mutate_value(body[k])
        elif op == 1:  # replace a leaf deep inside
            key = "instances" if "instances" in body else "inputs"
            target = body[key]
            path = []
            while isinstance(target, (list, dict)) and target and not codec.is_b64(target):
                k = r.randrange(len(target)) if isinstance(target, list) else r.choice(list(target))
                path.append(k)
                target = target[k]
            parent = body
            for k in [key] + path[:-1]:
                parent = parent[k]
            if path:
                parent[path[-1]] = self.mutate_value(target)
            else:
                body[key] = self.mutate_value(target)
        elif op == 2:  # rename / add / drop keys
            what = r.randrange(3)
            if what == 0 and body:
                body.pop(r.choice(list(body)))
            elif what == 1:
                body[r.choice(["instances", "inputs", "signature_name", "examples", "context", "x"])] = \
                    self.mutate_value("a")
            else:
                body = {("instance" if k == "instances" else k): v for k, v in body.items()}
        elif op == 3:
            body["signature_name"] = r.choice(["nope", "", "classify", "regress", "slow", "probe", 5, None,
                                               "__saved_model_init_op"])
        elif op == 4:
            return r.choice([None, [], "text", 1, [body], {"instances": body}]), False
        else:
            return body, True  # text-level damage below
        return body, False

    def damage_text(self, data):
        r = self.r
        op = r.randrange(5)
        if op == 0:
            return data[: r.randrange(len(data))]
        if op == 1:
            i = r.randrange(len(data))
            return data[:i] + bytes([r.randrange(256)]) + data[i + 1:]
        if op == 2:
            i = r.randrange(len(data))
            return data[:i] + r.choice([b"\xff", b"\xc3", b"\x00", b"NaN", b"[", b"}", b"\\u"]) + data[i:]
        if op == 3:
            return data.replace(b'"', b"'", 1)
        return data + r.choice([b"]", b"}", b",", b" garbage"])


def test_fuzz_rest_api(srv, reference):
    """A few hundred generated bodies (seeded): valid ones give the in-process outputs, invalid ones
    get a 4xx with TF Serving's error shape, nothing gets a 5xx, and the server stays up."""
    g = Grammar(seed=16)
    counts = {"valid": 0, "invalid": 0}
    statuses = {}
    t0 = time.monotonic()
    for i in range(600):
        body, sig, arrays = g.valid()
        if i % 3 == 0:  # valid: compare with the same SavedModel loaded in this process
            status, reply = post(srv, json.dumps(body).encode())
            assert status == 200, (body, reply)
            want = {k: v.numpy() for k, v in reference.signatures[sig](
                **{k: tf.constant(v) for k, v in arrays.items()}).items()}
            got = codec.decode_predict_response(reply, lambda: list(want))
            assert set(got) == set(want), (body, reply)
            for k in want:
                if want[k].dtype == object:
                    assert got[k].tolist() == want[k].tolist(), (body, k)
                else:
                    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=str(body))
            counts["valid"] += 1
            continue
        mutated, textual = g.mutate(body)
        data = json.dumps(mutated).encode() if not textual else g.damage_text(json.dumps(mutated).encode())
        status, reply = post(srv, data)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (data[:300], status, reply)
        if status != 200:
            assert isinstance(reply, dict) and list(reply) == ["error"], (data[:300], reply)
        counts["invalid"] += 1
    # Raw garbage on the gRPC port: never INTERNAL / UNKNOWN.
    channel = grpc.insecure_channel(srv.grpc_address)
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    r = random.Random(16)
    for _ in range(40):
        data = bytes(r.randrange(256) for _ in range(r.randint(0, 64)))
        try:
            raw(data, timeout=30)
        except grpc.RpcError as e:
            assert e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (data, e.details())
    channel.close()
    assert counts["valid"] >= 200 and counts["invalid"] >= 400, (counts, statuses)
    assert statuses.get(400, 0) > 200, statuses
    assert time.monotonic() - t0 < 120
    assert_still_serving(srv, reference)


def test_rest_num_threads_bounds_concurrent_work():
    """--rest_api_num_threads: no more requests are parsed and run at once; the rest wait within their
    timeout (in-process REST server over a stand-in service)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from serving import deadlines
    from serving.rest import make_http_server

    lock, state = threading.Lock(), {"now": 0, "max": 0, "calls": 0}

    class Service:
        def signature_limits(self, spec):
            return {"x": (np.float32, [-1])}, None

        def predict_arrays(self, spec, inputs, output_filter=(), deadline=None):
            with lock:
                state["now"] += 1
                state["calls"] += 1
                state["max"] = max(state["max"], state["now"])
            try:
                time.sleep(0.3)
                return "toy", 1, "serving_default", {"y": inputs["x"] * 2}
            finally:
                with lock:
                    state["now"] -= 1

    httpd = make_http_server(Service(), "127.0.0.1", 0, max_body_bytes=1000, timeout_ms=1000, num_threads=2)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]

    class Srv:
        rest_port = port

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: post(Srv, json.dumps({"instances": [float(i)]}).encode()), range(8)))
        ok = [r for s, r in results if s == 200]
        late = [r for s, r in results if s == 504]
        assert len(ok) + len(late) == 8, results
        assert state["max"] == 2 and len(ok) >= 4, (state, results)  # 2 at a time, ~0.3 s each, 1 s budget
        assert all("deadline" in r["error"] for r in late)
        assert {r["predictions"][0] for r in ok} <= {2.0 * i for i in range(8)}
        assert post(Srv, b"x" * 1001)[0] == 413
        assert deadlines.remaining(None) is None
    finally:
        httpd.shutdown()
        httpd.server_close()
