"""TF Serving's REST API (``/v1/models/...``) over `serving.service.ServingService`.

Follows tensorflow_serving/model_servers/http_rest_api_handler.cc and util/json_tensor.cc:
`GET /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]`,
`POST /v1/models/<name>[/versions/<v>|/labels/<l>]:(predict|classify|regress)`; predict takes the
row form (``"instances"``) answered with ``"predictions"``, or the columnar form (``"inputs"``)
answered with ``"outputs"``; binary strings travel as ``{"b64": "..."}`` (outputs whose name
ends in ``_bytes`` are always written so) -- the JSON tensor codec is `serving.codec`, shared with
the clients. Errors are ``{"error": "<message>"}`` with the HTTP status TF Serving maps the gRPC code
to (400, 404, 429, 503, 504, ...): anything that cannot be parsed or validated is 400
(INVALID_ARGUMENT), a body over the size limit is 413 before it is read, a request past
``--rest_api_timeout_in_ms`` is 504 (DEADLINE_EXCEEDED) with its model run cancelled; 500 is left
for faults inside the model run.

Example:
    >>> httpd = make_http_server(service, "127.0.0.1", 8501)   # doctest: +SKIP
    >>> threading.Thread(target=httpd.serve_forever).start()   # doctest: +SKIP
    $ curl -d '{"instances": ["a good film"]}' localhost:8501/v1/models/bert:predict
"""

import http.server
import logging
import os
import re
import threading
import time
import urllib.parse

from serving import codec, deadlines
from serving.errors import Code, ServingError, from_exception

log = logging.getLogger("serving.rest")

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)

DEFAULT_TIMEOUT_MS = 30000  # TF Serving's --rest_api_timeout_in_ms default
DEFAULT_NUM_THREADS = 4 * (os.cpu_count() or 1)


def _bad(msg):
    return ServingError(Code.INVALID_ARGUMENT, msg)


def _fill_example(features, example):
    for name, (kind, vals) in features.items():
        getattr(example.features.feature[name], kind).value.extend(vals)


class RestHandler:
    """Routes REST calls to a ServingService; returns (http_status, json-able body)."""

    def __init__(self, service):
        self.service = service

    def handle(self, method, path, body, deadline=None):
        try:
            return 200, self._dispatch(method, path, body, deadline)
        except Exception as exc:  # noqa: BLE001
            err = from_exception(exc)
            if err.code == Code.INTERNAL:
                log.exception("REST %s %s failed", method, path)
            return err.http_status, {"error": err.message}

    @staticmethod
    def _spec(spec, name, version, label):
        spec.name = urllib.parse.unquote(name or "")
        if version:
            try:
                spec.version.value = int(version)
            except ValueError:
                raise _bad(f"Failed to convert version: {version} to numeric.") from None
        if label:
            spec.version_label = urllib.parse.unquote(label)

    def _dispatch(self, method, path, body, deadline=None):
        from google.protobuf import json_format
        from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                             get_model_status_pb2, predict_pb2, regression_pb2)

        path = urllib.parse.urlsplit(path).path.rstrip("/") if path != "/" else path
        if method == "POST":
            m = _PREDICT_RE.fullmatch(path)
            if not m:
                raise _bad(f"Malformed request: POST {codec.debug_string(path)}")
            name, version, label, verb = m.groups()
            doc = codec.loads(body or b"")
            if not isinstance(doc, dict):
                raise _bad(f"JSON Value: {codec.debug_string(doc)} Is not object")
            sig = doc.get("signature_name", "")
            if not isinstance(sig, str):
                raise _bad(f"JSON Value: {codec.debug_string(doc)} not formatted correctly. 'signature_name' key "
                           "must be a string value.")
            verb = verb.lower()
            if verb == "predict":
                req = predict_pb2.PredictRequest()
                self._spec(req.model_spec, name, version, label)
                req.model_spec.signature_name = sig
                info, max_rows = self.service.signature_limits(req.model_spec)
                if not info:
                    raise _bad(f"Failed to get input map for signature: {sig or 'DEFAULT'}")
                inputs, fmt = codec.decode_predict_request(doc, {k: v[0] for k, v in info.items()}, max_rows)
                deadlines.check(deadline)
                _, _, _, outputs = self.service.predict_arrays(req.model_spec, inputs, deadline=deadline)
                return codec.encode_predict_response(outputs, fmt)
            req = (classification_pb2.ClassificationRequest() if verb == "classify"
                   else regression_pb2.RegressionRequest())
            self._spec(req.model_spec, name, version, label)
            req.model_spec.signature_name = sig
            context, examples = codec.decode_classify_request(doc)
            if context is not None:
                _fill_example(context, req.input.example_list_with_context.context)
                target = req.input.example_list_with_context.examples
            else:
                target = req.input.example_list.examples
            for e in examples:
                _fill_example(e, target.add())
            deadlines.check(deadline)
            if verb == "classify":
                res = self.service.classify(req, deadline=deadline).result
                return {"results": [[[c.label, c.score] for c in cl.classes] for cl in res.classifications]}
            res = self.service.regress(req, deadline=deadline).result
            return {"results": [r.value for r in res.regressions]}
        if method == "GET":
            m = _STATUS_RE.fullmatch(path)
            if not m:
                raise _bad(f"Malformed request: GET {codec.debug_string(path)}")
            name, version, label, sub = m.groups()
            if not name:
                raise _bad("Missing model name in request.")
            opts = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            if sub:
                req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                self._spec(req.model_spec, name, version, label)
                resp = self.service.get_model_metadata(req)
                sig_map = get_model_metadata_pb2.SignatureDefMap()
                resp.metadata["signature_def"].Unpack(sig_map)
                return {"model_spec": json_format.MessageToDict(resp.model_spec, **opts),
                        "metadata": {"signature_def": json_format.MessageToDict(sig_map, **opts)}}
            req = get_model_status_pb2.GetModelStatusRequest()
            self._spec(req.model_spec, name, version, label)
            return json_format.MessageToDict(self.service.get_model_status(req), **opts)
        # TF Serving answers other methods as a malformed request.
        raise _bad(f"Malformed request: {method} {codec.debug_string(path)}")


class _BodyError(Exception):
    def __init__(self, status, message, drain=0):
        super().__init__(message)
        self.status, self.message, self.drain = status, message, drain


def make_http_server(service, host, port, max_body_bytes=64 << 20, timeout_ms=DEFAULT_TIMEOUT_MS,
                     num_threads=DEFAULT_NUM_THREADS):
    """A threading HTTP/1.1 server speaking TF Serving's REST API. Call serve_forever() on it.

    `max_body_bytes`: larger bodies get 413 before they are read or parsed. `timeout_ms` (0: none):
    a request not answered within it gets 504 DEADLINE_EXCEEDED and its model run is cancelled.
    `num_threads`: at most this many requests are parsed and run at once (others wait, within
    their deadline); connections are served by their own threads."""
    handler = RestHandler(service)
    work_slots = threading.BoundedSemaphore(max(1, num_threads))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bert_tf-model-server"
        timeout = 120  # seconds a connection may sit idle or stall mid-request before it is closed

        def log_message(self, fmt, *args):  # quiet: route to logging at debug level
            log.debug("%s - " + fmt, self.address_string(), *args)

        def _reply(self, status, body, close=False):
            data = codec.dumps(body) + b"\n"
            if close:
                self.close_connection = True
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _content_length(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return None
            raw = self.headers.get("Content-Length")
            if raw is None:
                return 0
            if not raw.strip().isdigit():
                raise _BodyError(400, f"Invalid Content-Length header: {codec.debug_string(raw)}")
            length = int(raw)
            if length > max_body_bytes:
                raise _BodyError(413, f"Request body of {length} bytes exceeds the limit of {max_body_bytes} "
                                 "bytes (--rest_api_max_body_bytes)", drain=length)
            return length

        def _read_body(self):
            length = self._content_length()
            if length is not None:
                return self.rfile.read(length) if length else b""
            chunks, total = [], 0  # Transfer-Encoding: chunked
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BodyError(400, "Malformed chunked request body") from None
                if size < 0:
                    raise _BodyError(400, "Malformed chunked request body")
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                total += size
                if total > max_body_bytes:
                    raise _BodyError(413, f"Request body exceeds the limit of {max_body_bytes} bytes "
                                     "(--rest_api_max_body_bytes)", drain=16 * max_body_bytes)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)

        def _drain(self, length):
            """After answering, read (a bounded part of) an unwanted body so that closing the socket does
            not reset the connection before the client has read the answer; never wait long for it."""
            left = min(length, 16 * max_body_bytes)
            try:
                self.connection.settimeout(2.0)
                while left > 0:
                    chunk = self.rfile.read1(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass

        def handle_expect_100(self):
            try:
                self._content_length()
            except _BodyError as e:  # refuse before the client sends the body
                self._reply(e.status, {"error": e.message}, close=True)
                return False
            return super().handle_expect_100()

        def _handle(self, method):
            start = time.monotonic()
            deadline = start + timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else None
            try:
                body = self._read_body()
            except _BodyError as e:
                self._reply(e.status, {"error": e.message}, close=True)
                if e.drain:
                    self.wfile.flush()
                    self._drain(e.drain)
                return
            with self.server.inflight_cv:
                self.server.inflight += 1
            try:
                if self.server.draining:
                    err = ServingError(Code.UNAVAILABLE, "Server is shutting down")
                    return self._reply(err.http_status, {"error": err.message}, close=True)
                if not work_slots.acquire(timeout=deadlines.remaining(deadline)):
                    err = deadlines.deadline_error("Request (waiting for a REST worker thread)")
                    return self._reply(err.http_status, {"error": err.message})
                try:
                    status, out = handler.handle(method, self.path, body, deadline)
                finally:
                    work_slots.release()
                if status == 200 and deadlines.expired(deadline):
                    err = deadlines.deadline_error()
                    status, out = err.http_status, {"error": err.message}
                self._reply(status, out)
            finally:
                with self.server.inflight_cv:
                    self.server.inflight -= 1
                    self.server.inflight_cv.notify_all()

        def do_GET(self):  # noqa: N802
            self._handle("GET")

        def do_POST(self):  # noqa: N802
            self._handle("POST")

        def do_PUT(self):  # noqa: N802
            self._handle("PUT")

        def do_DELETE(self):  # noqa: N802
            self._handle("DELETE")

        def do_PATCH(self):  # noqa: N802
            self._handle("PATCH")

        def do_HEAD(self):  # noqa: N802
            self._handle("HEAD")

        def do_OPTIONS(self):  # noqa: N802
            self._handle("OPTIONS")

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128
        draining = False
        inflight = 0
        inflight_cv = threading.Condition()

        def wait_idle(self, timeout):
            """Wait until no request is being handled (idle keep-alive connections do not count)."""
            deadline = time.monotonic() + timeout
            with self.inflight_cv:
                while self.inflight and time.monotonic() < deadline:
                    self.inflight_cv.wait(max(0.0, deadline - time.monotonic()))
                return self.inflight == 0

    return Server((host, port), Handler)
