r"""A model server speaking TF Serving's gRPC and REST protocols, for any SavedModel.

The production server is TensorFlow Serving's ``tensorflow_model_server``; this program takes
the same flags and answers the same APIs so one client works against either:

* gRPC ``tensorflow.serving.PredictionService`` (Predict, Classify, Regress, GetModelMetadata)
  and ``tensorflow.serving.ModelService.GetModelStatus`` on ``--port`` (8500);
* REST ``/v1/models/...`` on ``--rest_api_port`` (8501; 0 disables it).

It serves the newest integer version under ``--model_base_path`` (or every model of a
``--model_config_file``), polls for new versions every ``--file_system_poll_wait_seconds`` and
swaps them in without failing requests, merges concurrent requests into batches with
``--enable_batching`` (``--batching_parameters_file``), binds ``--host`` (127.0.0.1), bounds
message sizes (``--max_message_bytes``, ``--rest_api_max_body_bytes``: 413), REST request time
(``--rest_api_timeout_in_ms``: 504, the model run cancelled; gRPC: the client's deadline) and REST
concurrency (``--rest_api_num_threads``), and drains in-flight requests on SIGTERM before exiting 0.
A request that cannot be parsed or validated is INVALID_ARGUMENT (400); INTERNAL (500) only for a
fault inside the model run.

Example:
    python -m serving.server --model_name=bert --model_base_path=/tmp/bert_export \
        --port=8500 --rest_api_port=8501 --enable_batching
    curl -d '{"instances": ["a fine film"]}' localhost:8501/v1/models/bert:predict
"""

import os
import signal
import sys
import threading
import time
from concurrent import futures

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__ in (None, ""):  # `python serving/server.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 8500, "TCP port for the gRPC API. Disabled if 0 (then --rest_api_port is required).")
flags.DEFINE_integer("rest_api_port", 8501, "TCP port for the REST API. Disabled if 0.")
flags.DEFINE_string("host", "127.0.0.1", "Address to bind (use 0.0.0.0 to listen on all interfaces).")
flags.DEFINE_string("model_name", "default", "Name of the model (with --model_base_path).")
flags.DEFINE_string("model_base_path", "", "Directory holding integer version dirs of one SavedModel.")
flags.DEFINE_string("model_config_file", "", "ModelServerConfig text proto (model_config_list) for several "
                    "models; overrides --model_name/--model_base_path.")
flags.DEFINE_boolean("enable_batching", False, "Merge concurrent requests into batched model calls.")
flags.DEFINE_string("batching_parameters_file", "", "BatchingParameters text proto (max_batch_size, "
                    "batch_timeout_micros, num_batch_threads, max_enqueued_batches, pad_variable_length_inputs).")
flags.DEFINE_float("file_system_poll_wait_seconds", 1.0, "Seconds between polls of the base path for new "
                   "versions; 0 polls once at start-up, negative never polls after start-up.")
flags.DEFINE_integer("max_message_bytes", 64 << 20, "Largest gRPC message accepted or sent (and the default "
                     "of --rest_api_max_body_bytes).")
flags.DEFINE_integer("rest_api_max_body_bytes", 0, "Largest REST request body; a larger one is answered 413 "
                     "before it is read or parsed. 0: --max_message_bytes.")
flags.DEFINE_integer("rest_api_timeout_in_ms", 30000, "Timeout for a REST request (TF Serving's flag): one not "
                     "answered in time gets 504 DEADLINE_EXCEEDED and its model run is cancelled. 0: none.")
flags.DEFINE_integer("rest_api_num_threads", 0, "Requests the REST API parses and runs at once (TF Serving's "
                     "flag); others wait within their timeout. 0: 4 x the number of CPUs.")
flags.DEFINE_integer("grpc_max_threads", 64, "Threads handling gRPC calls (bounds concurrent requests).")
flags.DEFINE_float("drain_timeout_seconds", 30.0, "On SIGTERM, how long to wait for in-flight requests.")
flags.DEFINE_boolean("enable_model_warmup", True, "Replay assets.extra/tf_serving_warmup_requests on load.")


def _handlers(service):
    """gRPC handlers for tensorflow.serving.PredictionService and ModelService.

    Requests are parsed here rather than by gRPC, so bytes that are not a valid request proto get
    INVALID_ARGUMENT (gRPC's own deserializer would answer INTERNAL, a client error looking like a
    server fault). The client's deadline, when it sets one, bounds the model run."""
    import time

    import grpc
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                         inference_pb2, model_management_pb2, predict_pb2, regression_pb2)

    from serving.errors import ServingError, from_exception

    def unary(fn, request_cls, api):
        def call(raw, context):
            try:
                request = request_cls()
                try:
                    request.ParseFromString(raw)
                except (DecodeError, RuntimeError, ValueError) as e:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Cannot parse {request_cls.DESCRIPTOR.name}: {e}") from None
                left = context.time_remaining()
                deadline = time.monotonic() + left if left is not None and left < 1e9 else None
                return fn(request, deadline=deadline)
            except ServingError as e:
                context.abort(e.code, e.message)
            except Exception as exc:  # noqa: BLE001 - a bad request must not take the server down
                err = from_exception(exc)
                if err.code == grpc.StatusCode.INTERNAL:
                    logging.exception("%s failed", api)
                context.abort(err.code, err.message)
        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=None,
                                                   response_serializer=lambda m: m.SerializeToString())

    def unimplemented(what):
        def fn(request, deadline=None):
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not supported by this server")
        return fn

    prediction = {
        "Predict": unary(service.predict, predict_pb2.PredictRequest, "Predict"),
        "Classify": unary(service.classify, classification_pb2.ClassificationRequest, "Classify"),
        "Regress": unary(service.regress, regression_pb2.RegressionRequest, "Regress"),
        "GetModelMetadata": unary(service.get_model_metadata, get_model_metadata_pb2.GetModelMetadataRequest,
                                  "GetModelMetadata"),
        "MultiInference": unary(unimplemented("MultiInference"), inference_pb2.MultiInferenceRequest,
                                "MultiInference"),
    }
    models = {
        "GetModelStatus": unary(service.get_model_status, get_model_status_pb2.GetModelStatusRequest,
                                "GetModelStatus"),
        "HandleReloadConfigRequest": unary(unimplemented("HandleReloadConfigRequest"),
                                           model_management_pb2.ReloadConfigRequest, "HandleReloadConfigRequest"),
    }
    return [grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", prediction),
            grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", models)]


def run_warmup(servable, max_records=1000):
    """Replay ``assets.extra/tf_serving_warmup_requests`` (PredictionLog TFRecords) like TF Serving."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.model_manager import to_numpy_inputs
    from serving.service import CLASSIFY_INPUTS, serialize_examples

    path = os.path.join(servable.path, "assets.extra", "tf_serving_warmup_requests")
    if not os.path.exists(path):
        return 0
    n = 0
    for raw in tf.data.TFRecordDataset(path).take(max_records):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            req = log.predict_log.request
            servable.run(req.model_spec.signature_name, to_numpy_inputs(req.inputs), tuple(req.output_filter))
        elif kind in ("classify_log", "regress_log"):
            req = getattr(log, kind).request
            arr = np.array(serialize_examples(req.input), dtype=object)
            servable.run(req.model_spec.signature_name, {CLASSIFY_INPUTS: arr})
        else:
            raise ValueError(f"{path}: unsupported warmup record type {kind!r}")
        n += 1
    logging.info("Finished reading warmup data for model %s version %d: %d records", servable.name,
                 servable.version, n)
    return n


class ModelServer:
    """The gRPC + REST server around a ModelManager; `start()`, then `stop()` drains and exits.

    Example (in-process, e.g. from a notebook):
        >>> from serving.model_manager import ModelSpecConfig
        >>> srv = ModelServer([ModelSpecConfig("toy", "/tmp/toy")], port=8500, rest_api_port=8501)  # doctest: +SKIP
        >>> srv.start()                                                                           # doctest: +SKIP
        >>> srv.stop(grace=10)                                                                    # doctest: +SKIP
    """

    def __init__(self, configs, host="127.0.0.1", port=8500, rest_api_port=8501, batching_options=None,
                 poll_wait_seconds=1.0, max_message_bytes=64 << 20, grpc_max_threads=64, warmup=True,
                 rest_api_max_body_bytes=0, rest_api_timeout_in_ms=30000, rest_api_num_threads=0):
        from serving.model_manager import ModelManager
        from serving.service import ServingService

        self.manager = ModelManager(configs, batching_options, poll_wait_seconds,
                                    on_warmup=run_warmup if warmup else None)
        self.service = ServingService(self.manager)
        self.host, self.port, self.rest_api_port = host, port, rest_api_port
        self.max_message_bytes = max_message_bytes
        self.rest_api_max_body_bytes = rest_api_max_body_bytes or max_message_bytes
        self.rest_api_timeout_in_ms = rest_api_timeout_in_ms
        self.rest_api_num_threads = rest_api_num_threads or 4 * (os.cpu_count() or 1)
        self.grpc_max_threads = grpc_max_threads
        self._grpc = None
        self._http = None
        self._http_thread = None

    def start(self):
        import grpc

        from serving.rest import make_http_server

        self.manager.start()
        if self.port:
            opts = [("grpc.max_receive_message_length", self.max_message_bytes),
                    ("grpc.max_send_message_length", self.max_message_bytes),
                    ("grpc.so_reuseport", 0)]
            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self.grpc_max_threads,
                                                                thread_name_prefix="grpc"),
                                     options=opts, maximum_concurrent_rpcs=self.grpc_max_threads * 4)
            self._grpc.add_generic_rpc_handlers(_handlers(self.service))
            addr = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            if not self._grpc.add_insecure_port(addr):
                raise OSError(f"cannot bind gRPC port {addr}")
            self._grpc.start()
            logging.info("Running gRPC ModelServer at %s ...", addr)
        if self.rest_api_port:
            self._http = make_http_server(self.service, self.host, self.rest_api_port, self.rest_api_max_body_bytes,
                                          self.rest_api_timeout_in_ms, self.rest_api_num_threads)
            self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                                 name="rest", daemon=True)
            self._http_thread.start()
            logging.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_api_port)

    def stop(self, grace=30.0):
        """Stop accepting requests, let in-flight ones finish (up to `grace` s), unload models."""
        t0 = time.monotonic()
        self.manager.stop_polling()
        done = self._grpc.stop(grace) if self._grpc is not None else None
        if self._http is not None:
            self._http.draining = True
            self._http.shutdown()  # stops accepting; handler threads finish their request
        if done is not None:
            done.wait(grace)
        if self._http is not None:
            self._http.wait_idle(max(0.0, t0 + grace - time.monotonic()))
            self._http.server_close()
        self.manager.shutdown()
        logging.info("Server stopped after draining in %.2fs", time.monotonic() - t0)


def _configs_from_flags():
    from serving.model_manager import ModelSpecConfig, configs_from_model_server_config

    if FLAGS.model_config_file:
        return configs_from_model_server_config(FLAGS.model_config_file)
    if not FLAGS.model_base_path:
        raise app.UsageError("Set --model_base_path (with --model_name) or --model_config_file")
    return [ModelSpecConfig(FLAGS.model_name, os.path.abspath(FLAGS.model_base_path))]


def main(argv):
    del argv
    from serving.batching import BatchingOptions

    if not FLAGS.port and not FLAGS.rest_api_port:
        raise app.UsageError("Both --port and --rest_api_port are 0: nothing to serve on")
    configs = _configs_from_flags()
    batching = None
    if FLAGS.enable_batching:
        batching = (BatchingOptions.from_file(FLAGS.batching_parameters_file) if FLAGS.batching_parameters_file
                    else BatchingOptions())
        logging.info("Batching enabled: %s", batching)
    elif FLAGS.batching_parameters_file:
        logging.warning("--batching_parameters_file is ignored without --enable_batching")
    poll = FLAGS.file_system_poll_wait_seconds

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = ModelServer(configs, FLAGS.host, FLAGS.port, FLAGS.rest_api_port, batching,
                         poll_wait_seconds=poll if poll > 0 else 0, max_message_bytes=FLAGS.max_message_bytes,
                         grpc_max_threads=FLAGS.grpc_max_threads, warmup=FLAGS.enable_model_warmup,
                         rest_api_max_body_bytes=FLAGS.rest_api_max_body_bytes,
                         rest_api_timeout_in_ms=FLAGS.rest_api_timeout_in_ms,
                         rest_api_num_threads=FLAGS.rest_api_num_threads)
    server.start()
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    logging.info("Signal received: draining in-flight requests and shutting down")
    server.stop(FLAGS.drain_timeout_seconds)
    return 0


if __name__ == "__main__":
    app.run(main)
