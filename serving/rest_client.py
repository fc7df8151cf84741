"""A small client for TF Serving's REST API (``/v1/models/...``) on the standard library's urllib.

Same methods and return values as `serving.grpc_client.GrpcClient`; the JSON tensor codec is
`serving.codec`, the one the server uses. Errors are raised as `serving.errors.ServingClientError`
with the gRPC status code name TF Serving maps the HTTP status from, and `http_status` set.
Needs neither TensorFlow nor gRPC stubs.

Example:
    >>> from serving.rest_client import RestClient
    >>> c = RestClient("localhost:8501", "bert")                                 # doctest: +SKIP
    >>> c.predict({"text": ["a fine film"]})["labels"]                           # doctest: +SKIP
    array([b'positive'], dtype=object)
    >>> c.predict({"text": ["a fine film"]}, fmt="row")                          # doctest: +SKIP
"""

import json
import urllib.error
import urllib.parse
import urllib.request

from serving import codec
from serving.client_base import DEFAULT_SIGNATURE, ClientBase
from serving.errors import HTTP_TO_CODE_NAME, ServingClientError


class RestClient(ClientBase):
    """One model on one REST server (``host:8501``); `timeout` is each call's timeout in seconds.
    `fmt`: request format of `predict`, ``"columnar"`` (``"inputs"``) or ``"row"`` (``"instances"``)."""

    rest = True

    def __init__(self, server="localhost:8501", model_name="default", timeout=30.0, version=None, fmt="columnar"):
        super().__init__(server, model_name, timeout, version)
        self.fmt = fmt

    def _url(self, suffix=""):
        v = f"/versions/{int(self.version)}" if self.version is not None else ""
        return f"http://{self.server}/v1/models/{urllib.parse.quote(self.model_name, safe='')}{v}{suffix}"

    def _http(self, url, body=None):
        data = None if body is None else codec.dumps(body)
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return codec.loads(r.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                msg = json.loads(raw)["error"]
            except Exception:  # noqa: BLE001 - not TF Serving's error shape: show the text
                msg = raw.decode("utf-8", "replace")
            raise ServingClientError(HTTP_TO_CODE_NAME.get(e.code, "UNKNOWN"), msg, e.code) from None
        except urllib.error.URLError as e:
            raise ServingClientError("UNAVAILABLE", f"cannot reach {url}: {e.reason}") from None
        except TimeoutError:
            raise ServingClientError("DEADLINE_EXCEEDED", f"no answer from {url} within {self.timeout}s") from None
        except codec.CodecError as e:
            raise ServingClientError("INTERNAL", f"unparsable answer from {url}: {e}") from None

    def predict(self, inputs, signature_name=DEFAULT_SIGNATURE, input_name=None, output_filter=(), fmt=None):
        """Predict API (see `ClientBase.predict`); `fmt` overrides the client's request format."""
        if fmt is None:
            return super().predict(inputs, signature_name, input_name, output_filter)
        saved, self.fmt = self.fmt, fmt
        try:
            return super().predict(inputs, signature_name, input_name, output_filter)
        finally:
            self.fmt = saved

    def _predict(self, arrays, signature_name, output_filter):
        body = codec.encode_predict_request(arrays, signature_name, self.fmt)
        doc = self._http(self._url(":predict"), body)
        out = codec.decode_predict_response(doc, lambda: list(self.signature_outputs(signature_name)))
        if output_filter:  # REST has no output_filter: select here
            out = {k: out[k] for k in output_filter}
        return out

    def _examples_body(self, examples, signature_name, context):
        body = {"examples": [codec.example_to_json(e) for e in examples]}
        if context:
            body["context"] = codec.example_to_json(context)
        if signature_name:
            body["signature_name"] = signature_name
        return body

    def classify(self, examples, signature_name="classify", context=None):
        """Classify API. Returns per example a list of (label, score) pairs."""
        res = self._http(self._url(":classify"), self._examples_body(examples, signature_name, context))["results"]
        return [[(c[0], float(c[1])) for c in row] for row in res]

    def regress(self, examples, signature_name="regress", context=None):
        """Regress API. Returns one float per example."""
        res = self._http(self._url(":regress"), self._examples_body(examples, signature_name, context))["results"]
        return [float(v) for v in res]

    def metadata(self):
        """dict signature name -> {"inputs": {name: (dtype, shape)}, "outputs": {...}}."""
        sig_map = self._http(self._url("/metadata"))["metadata"]["signature_def"]["signature_def"]

        def info(d):
            return {k: (v["dtype"], [int(x["size"]) for x in v.get("tensor_shape", {}).get("dim", [])])
                    for k, v in d.items()}
        return {k: {"inputs": info(v.get("inputs", {})), "outputs": info(v.get("outputs", {}))}
                for k, v in sig_map.items()}

    def status(self):
        """List of {"version", "state", "error_code", "error_message"} per version."""
        out = self._http(self._url())["model_version_status"]
        return [{"version": int(s["version"]), "state": s["state"],
                 "error_code": s["status"]["error_code"], "error_message": s["status"]["error_message"]}
                for s in out]
