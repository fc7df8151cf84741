"""TF Serving API semantics on the official protos: Predict, Classify, Regress, metadata, status.

`ServingService` turns `tensorflow_serving.apis` request protos into calls on a `ModelManager`
and fills the response protos; both the gRPC servicers and the REST handler use it, so the
two front ends cannot disagree. Errors are raised as `serving.errors.ServingError`.

Example:
    >>> from tensorflow_serving.apis import predict_pb2                 # doctest: +SKIP
    >>> svc = ServingService(manager)                                    # doctest: +SKIP
    >>> req = predict_pb2.PredictRequest()                               # doctest: +SKIP
    >>> req.model_spec.name = "toy"                                      # doctest: +SKIP
    >>> req.inputs["text"].CopyFrom(tf.make_tensor_proto(["hello"]))     # doctest: +SKIP
    >>> svc.predict(req).outputs["labels"]                               # doctest: +SKIP
"""

import numpy as np

from serving.errors import Code, ServingError
from serving.model_manager import (AVAILABLE, DEFAULT_SIGNATURE, END, LOADING, START, UNLOADING,
                                   to_numpy_inputs, to_tensor_proto)

CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"


def _spec_version(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label if model_spec.WhichOneof("version_choice") == "version_label" else None
    return version, label


def _fill_spec(out_spec, name, version, signature_name):
    out_spec.name = name
    out_spec.version.value = version
    out_spec.signature_name = signature_name


def serialize_examples(input_proto):
    """tensorflow.serving.Input -> list of serialized tf.Example (context merged into each)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = list(input_proto.example_list.examples)
        context = None
    elif kind == "example_list_with_context":
        examples = list(input_proto.example_list_with_context.examples)
        context = input_proto.example_list_with_context.context
    else:
        raise ServingError(Code.INVALID_ARGUMENT, "Input is empty.")
    if not examples:
        raise ServingError(Code.INVALID_ARGUMENT, "Input is empty.")
    if context is None:
        return [e.SerializeToString() for e in examples]
    # Serialized concatenation = proto merge: example features override context features.
    ctx = context.SerializeToString()
    return [ctx + e.SerializeToString() for e in examples]


class ServingService:
    """Protocol logic shared by the gRPC and REST front ends."""

    def __init__(self, manager):
        self.manager = manager

    # -- Predict -------------------------------------------------------------------------
    def predict_arrays(self, model_spec, inputs, output_filter=(), deadline=None):
        """Run a signature on numpy inputs; returns (name, version, signature_name, outputs).
        `deadline`: `time.monotonic()` value bounding the run (None: none)."""
        version, label = _spec_version(model_spec)
        sig_name = model_spec.signature_name or DEFAULT_SIGNATURE
        with self.manager.acquire(model_spec.name, version, label) as servable:
            outputs = servable.run(sig_name, inputs, tuple(output_filter), deadline)
            return servable.name, servable.version, sig_name, outputs

    def predict(self, request, response=None, deadline=None):
        from tensorflow_serving.apis import predict_pb2

        response = response or predict_pb2.PredictResponse()
        self._check_rows(request.model_spec, {k: v.tensor_shape for k, v in request.inputs.items()})
        inputs = to_numpy_inputs(request.inputs)
        name, version, sig_name, outputs = self.predict_arrays(
            request.model_spec, inputs, request.output_filter, deadline)
        _fill_spec(response.model_spec, name, version, sig_name)
        for k, v in outputs.items():
            response.outputs[k].CopyFrom(to_tensor_proto(v))
        return response

    def input_info(self, model_spec):
        """SignatureDef inputs of the addressed signature (REST needs dtypes to parse JSON)."""
        return self.signature_limits(model_spec)[0]

    def signature_limits(self, model_spec):
        """(inputs {name: (tf.DType, shape)}, max rows per request or None) of the addressed signature."""
        version, label = _spec_version(model_spec)
        with self.manager.acquire(model_spec.name, version, label) as servable:
            sig = servable.signature(model_spec.signature_name)
            return sig.inputs, sig.max_batch_size

    def _check_rows(self, model_spec, shapes):
        """INVALID_ARGUMENT, before decoding, when a batched signature gets more rows than max_batch_size."""
        try:
            _, max_rows = self.signature_limits(model_spec)
        except ServingError:
            return  # unknown model/signature: the run reports it
        if max_rows is None:
            return
        for k, shape in shapes.items():
            if shape.dim and shape.dim[0].size > max_rows:
                raise ServingError(Code.INVALID_ARGUMENT, f"Task size {shape.dim[0].size} (input '{k}') is larger "
                                   f"than maximum input batch size {max_rows}")

    # -- Classify / Regress ----------------------------------------------------------------
    def _run_examples(self, request, api, deadline=None):
        version, label = _spec_version(request.model_spec)
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        serialized = serialize_examples(request.input)
        with self.manager.acquire(request.model_spec.name, version, label) as servable:
            sig = servable.signature(sig_name)
            if len(sig.inputs) != 1:
                raise ServingError(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
            if CLASSIFY_INPUTS not in sig.inputs:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"No {api} inputs found in SignatureDef '{sig_name}': it must have one "
                                   f"DT_STRING input named '{CLASSIFY_INPUTS}' (serialized tf.Example); "
                                   f"it has {sorted(sig.inputs)}")
            if api == "classification":
                wanted = [k for k in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if k in sig.outputs]
                if not wanted:
                    raise ServingError(Code.INVALID_ARGUMENT,
                                       f"Expected classification signature outputs to contain at least one of "
                                       f"\"{CLASSIFY_CLASSES}\" or \"{CLASSIFY_SCORES}\". Signature '{sig_name}' "
                                       f"has outputs {sorted(sig.outputs)}")
            else:
                if len(sig.outputs) != 1:
                    raise ServingError(Code.INVALID_ARGUMENT, "Expected one output Tensor.")
                if REGRESS_OUTPUTS not in sig.outputs:
                    raise ServingError(Code.INVALID_ARGUMENT,
                                       f"No regression outputs found in SignatureDef '{sig_name}': expected "
                                       f"output '{REGRESS_OUTPUTS}', it has {sorted(sig.outputs)}")
                wanted = [REGRESS_OUTPUTS]
            arr = np.empty(len(serialized), dtype=object)
            arr[:] = serialized
            outputs = sig.run({CLASSIFY_INPUTS: arr}, tuple(wanted), deadline)
            return servable.name, servable.version, sig_name, outputs, len(serialized)

    def classify(self, request, response=None, deadline=None):
        from tensorflow_serving.apis import classification_pb2

        response = response or classification_pb2.ClassificationResponse()
        name, version, sig_name, out, n = self._run_examples(request, "classification", deadline)
        classes, scores = out.get(CLASSIFY_CLASSES), out.get(CLASSIFY_SCORES)
        for key, t, kind in ((CLASSIFY_CLASSES, classes, "O"), (CLASSIFY_SCORES, scores, "f")):
            if t is None:
                continue
            if t.ndim != 2:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"Expected Tensor shape: [batch_size num_classes] but got {list(t.shape)} "
                                   f"for '{key}'")
            if (kind == "O") != (t.dtype == object) or (kind == "f" and t.dtype != np.float32):
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"Expected {key} Tensor of {'DT_STRING' if kind == 'O' else 'DT_FLOAT'}. "
                                   f"Got: {t.dtype}")
            if t.shape[0] != n:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"Expected {key} output batch size of {n}. Got: {t.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                               f"{scores.shape[1]}")
        num_classes = (classes if classes is not None else scores).shape[1]
        for i in range(n):
            c = response.result.classifications.add()
            for j in range(num_classes):
                cls = c.classes.add()
                if classes is not None:
                    cls.label = bytes(classes[i, j]).decode("utf-8", "replace")
                if scores is not None:
                    cls.score = float(scores[i, j])
        _fill_spec(response.model_spec, name, version, sig_name)
        return response

    def regress(self, request, response=None, deadline=None):
        from tensorflow_serving.apis import regression_pb2

        response = response or regression_pb2.RegressionResponse()
        name, version, sig_name, out, n = self._run_examples(request, "regression", deadline)
        t = out[REGRESS_OUTPUTS]
        if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                               f"got {list(t.shape)}")
        if t.shape[0] != n:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
        if t.dtype != np.float32:
            raise ServingError(Code.INVALID_ARGUMENT, f"Expected output Tensor of DT_FLOAT.  Got: {t.dtype}")
        for v in t.reshape(-1):
            response.result.regressions.add().value = float(v)
        _fill_spec(response.model_spec, name, version, sig_name)
        return response

    # -- Metadata / status -------------------------------------------------------------------
    def get_model_metadata(self, request, response=None, deadline=None):
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = response or get_model_metadata_pb2.GetModelMetadataResponse()
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(Code.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise ServingError(Code.INVALID_ARGUMENT, f"Metadata field {f} is not supported")
        version, label = _spec_version(request.model_spec)
        with self.manager.acquire(request.model_spec.name, version, label) as servable:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for k, v in servable.signature_defs.items():
                sig_map.signature_def[k].CopyFrom(v)
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(sig_map)
        return response

    def get_model_status(self, request, response=None, deadline=None):
        from tensorflow_serving.apis import get_model_status_pb2

        response = response or get_model_status_pb2.GetModelStatusResponse()
        if not request.HasField("model_spec"):
            raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        name = spec.name
        model = self.manager.models.get(name)
        if not name:
            raise ServingError(Code.INVALID_ARGUMENT, "Missing model name in request.")
        version, label = _spec_version(spec)
        if label:
            if model is None or label not in model.config.version_labels:
                raise ServingError(Code.NOT_FOUND, f"Unrecognized servable version label: {label}")
            version = model.config.version_labels[label]
        states = dict(model.states) if model is not None else {}
        if version is not None:
            if version not in states:
                raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        elif not states:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        from tensorflow.core.protobuf import error_codes_pb2

        for v in sorted(states, reverse=True):
            state, code, msg = states[v]
            s = response.model_version_status.add()
            s.version = v
            s.state = state
            s.status.error_code = error_codes_pb2.Code.Value(code) if code in error_codes_pb2.Code.keys() else 2
            s.status.error_message = msg
        return response


__all__ = ["ServingService", "serialize_examples", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
