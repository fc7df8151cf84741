"""What the gRPC and REST clients share: addressing a model, the list-of-texts shortcut of `predict`,
signature lookups through `metadata`, and the context-manager protocol. No transport here.

Example:
    >>> from serving.grpc_client import GrpcClient
    >>> with GrpcClient("localhost:8500", "bert") as c:                  # doctest: +SKIP
    ...     c.signature_inputs("serving_default")
    {'text': ('DT_STRING', [-1])}
"""

from serving.codec import to_array
from serving.errors import ServingClientError

DEFAULT_SIGNATURE = "serving_default"


class ClientBase:
    """Subclasses implement `_predict`, `classify`, `regress`, `metadata`, `status` (and `close`)."""

    rest = False

    def __init__(self, server, model_name="default", timeout=30.0, version=None):
        self.server, self.model_name = server, model_name
        self.timeout, self.version = timeout, version

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def predict(self, inputs, signature_name=DEFAULT_SIGNATURE, input_name=None, output_filter=()):
        """Predict API. `inputs`: dict name -> array-like, or one array-like (e.g. a list of texts) for
        the signature's sole input (`input_name`, default: looked up from metadata).
        Returns dict output name -> np.ndarray (strings as bytes objects)."""
        if not isinstance(inputs, dict):
            if input_name is None:
                names = list(self.signature_inputs(signature_name))
                if len(names) != 1:
                    raise ValueError(f"signature {signature_name!r} has inputs {names}; pass a dict")
                input_name = names[0]
            inputs = {input_name: inputs}
        return self._predict({k: to_array(v) for k, v in inputs.items()}, signature_name, tuple(output_filter))

    def _predict(self, arrays, signature_name, output_filter):
        raise NotImplementedError

    def signature_inputs(self, signature_name=DEFAULT_SIGNATURE):
        """{input name: (dtype name, shape)} of a signature."""
        return self._signature(signature_name)["inputs"]

    def signature_outputs(self, signature_name=DEFAULT_SIGNATURE):
        return self._signature(signature_name)["outputs"]

    def _signature(self, name):
        meta = self.metadata()
        key = name or DEFAULT_SIGNATURE
        if key not in meta:
            raise ServingClientError("NOT_FOUND", f"model {self.model_name!r} has no signature {key!r}; it has "
                                     f"{sorted(k for k in meta if not k.startswith('__'))}")
        return meta[key]
