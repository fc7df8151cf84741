"""A small client for TF Serving's gRPC API over the official ``tensorflow_serving.apis`` stubs.

Works against ``tensorflow_model_server`` and ``serving.server`` alike. Errors are raised as
`serving.errors.ServingClientError` with the gRPC status code name.

Example:
    >>> from serving.grpc_client import GrpcClient
    >>> with GrpcClient("localhost:8500", "bert") as c:                          # doctest: +SKIP
    ...     c.predict(["a fine film"])["probabilities"]
    ...     c.classify([{"text": "a fine film"}], signature_name="classify")
    ...     c.status()
"""

from serving.client_base import ClientBase
from serving.codec import example_features
from serving.errors import ServingClientError


class GrpcClient(ClientBase):
    """One model on one gRPC server (``host:8500``); `timeout` is each call's deadline in seconds."""

    def __init__(self, server="localhost:8500", model_name="default", timeout=30.0, version=None,
                 max_message_bytes=64 << 20):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        super().__init__(server, model_name, timeout, version)
        self._channel = grpc.insecure_channel(server, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def _spec(self, spec, signature_name=None):
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details()) from None

    def _predict(self, arrays, signature_name, output_filter):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec, signature_name)
        for k, v in arrays.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        req.output_filter.extend(output_filter)
        resp = self._call(self._predict_stub.Predict, req)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}

    def _examples(self, request, examples, signature_name, context):
        self._spec(request.model_spec, signature_name)
        target = request.input.example_list_with_context if context else request.input.example_list
        if context:
            _fill_example(target.context, context)
        for e in examples:
            _fill_example(target.examples.add(), e)
        return request

    def classify(self, examples, signature_name="classify", context=None):
        """Classify API. `examples`: list of dicts feature -> value(s). Returns per example a list of
        (label, score) pairs."""
        from tensorflow_serving.apis import classification_pb2

        req = self._examples(classification_pb2.ClassificationRequest(), examples, signature_name, context)
        resp = self._call(self._predict_stub.Classify, req)
        return [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]

    def regress(self, examples, signature_name="regress", context=None):
        """Regress API. Returns one float per example."""
        from tensorflow_serving.apis import regression_pb2

        req = self._examples(regression_pb2.RegressionRequest(), examples, signature_name, context)
        resp = self._call(self._predict_stub.Regress, req)
        return [r.value for r in resp.result.regressions]

    def metadata(self):
        """dict signature name -> {"inputs": {name: (dtype, shape)}, "outputs": {...}}."""
        from tensorflow.core.framework import types_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(req.model_spec)
        resp = self._call(self._predict_stub.GetModelMetadata, req)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sig_map)

        def info(d):
            return {k: (types_pb2.DataType.Name(v.dtype), [x.size for x in v.tensor_shape.dim]) for k, v in d.items()}
        return {k: {"inputs": info(v.inputs), "outputs": info(v.outputs)} for k, v in sig_map.signature_def.items()}

    def status(self):
        """List of {"version", "state", "error_code", "error_message"} per version."""
        from tensorflow.core.protobuf import error_codes_pb2
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec)
        resp = self._call(self._model_stub.GetModelStatus, req)
        return [{"version": s.version, "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                 "error_code": error_codes_pb2.Code.Name(s.status.error_code),
                 "error_message": s.status.error_message} for s in resp.model_version_status]


def _fill_example(example, features):
    for name, (kind, vals) in example_features(features).items():
        getattr(example.features.feature[name], kind).value.extend(vals)
