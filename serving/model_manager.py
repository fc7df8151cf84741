"""Loading, version polling and request dispatch for SavedModels (knows nothing about BERT).

`ModelManager` holds one `Model` per configured name. A poller thread scans each model's base path
every `poll_wait_seconds` for integer version directories (``<base>/<N>/saved_model.pb``; other
names such as ``.tmp-3`` or ``3.partial`` are ignored, so exporters write to a temporary sibling
and rename), loads the versions the version policy asks for (default: the newest), makes them
available atomically, and only then retires the old ones; a retired version is unloaded after its
in-flight requests have finished. Requests hold a reference (`Model.acquire`) for their whole call.

Example:
    >>> mgr = ModelManager([ModelSpecConfig("toy", "/tmp/toy_base")], poll_wait_seconds=1)  # doctest: +SKIP
    >>> mgr.start()                                                                         # doctest: +SKIP
    >>> with mgr.acquire("toy") as servable:                                               # doctest: +SKIP
    ...     outputs = servable.run("serving_default", {"text": np.array([b"hi"], object)})
"""

import contextlib
import dataclasses
import logging
import os
import threading
import time

import numpy as np

from serving import deadlines
from serving.batching import Batcher
from serving.errors import Code, ServingError, from_exception

log = logging.getLogger("serving")

# tensorflow_serving/apis/get_model_status.proto ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50

DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass
class ModelSpecConfig:
    """One served model (a subset of TF Serving's ModelConfig)."""

    name: str
    base_path: str
    policy: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1  # for "latest"
    versions: tuple = ()  # for "specific"
    version_labels: dict = dataclasses.field(default_factory=dict)


def configs_from_model_server_config(path):
    """Read a ModelServerConfig text proto (``--model_config_file``) into ModelSpecConfig list."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path) as f:
        text = f.read()
    cfg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: invalid ModelServerConfig text proto: {e}") from None
    if cfg.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{path}: expected a model_config_list")
    out = []
    for mc in cfg.model_config_list.config:
        if not mc.name or not mc.base_path:
            raise ValueError(f"{path}: every config needs name and base_path (got {mc.name!r}, {mc.base_path!r})")
        if mc.model_platform and mc.model_platform != "tensorflow":
            raise ValueError(f"{path}: model {mc.name!r}: only model_platform 'tensorflow' is supported")
        pol = mc.model_version_policy
        kind = pol.WhichOneof("policy_choice")
        spec = ModelSpecConfig(mc.name, mc.base_path, version_labels=dict(mc.version_labels))
        if kind == "all":
            spec.policy = "all"
        elif kind == "specific":
            spec.policy, spec.versions = "specific", tuple(pol.specific.versions)
        elif kind == "latest":
            spec.num_versions = max(1, pol.latest.num_versions)
        out.append(spec)
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate model names in {names}")
    return out


def _list_versions(base_path):
    """Integer version dirs holding a SavedModel; anything else is ignored."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return []
    out = []
    for n in names:
        if not n.isdigit():
            continue
        d = os.path.join(base_path, n)
        if os.path.isfile(os.path.join(d, "saved_model.pb")) or os.path.isfile(os.path.join(d, "saved_model.pbtxt")):
            out.append(int(n))
    return sorted(out)


def _np_dtype_for(tf_dtype):
    import tensorflow as tf

    return object if tf_dtype == tf.string else tf_dtype.as_numpy_dtype


class Signature:
    """One callable signature of a loaded version, with its SignatureDef for validation/metadata."""

    def __init__(self, name, fn, signature_def, batching_options):
        import tensorflow as tf

        self.name = name
        self.fn = fn
        self.signature_def = signature_def
        self.inputs = {}  # name -> (tf.DType, shape list or None)
        for k, info in signature_def.inputs.items():
            shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
            self.inputs[k] = (tf.dtypes.as_dtype(info.dtype), shape)
        self.outputs = {k: tf.dtypes.as_dtype(v.dtype) for k, v in signature_def.outputs.items()}
        # Batchable when every input has an unknown (batch) leading dimension.
        self.batchable = bool(self.inputs) and all(
            s is not None and len(s) >= 1 and s[0] == -1 for _, s in self.inputs.values())
        self.batcher = None
        if batching_options is not None and self.batchable:
            self.batcher = Batcher(self._call, batching_options, name=f"batch-{name}")

    def _call(self, inputs):
        import tensorflow as tf

        feeds = {k: tf.constant(v, dtype=self.inputs[k][0]) for k, v in inputs.items()}
        out = self.fn(**feeds)
        return {k: v.numpy() for k, v in out.items()}

    def validate(self, inputs):
        """Check names, dtypes and shapes of a dict of numpy arrays against the SignatureDef."""
        import tensorflow as tf

        sent, want = set(inputs), set(self.inputs)
        if sent != want:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(want)} len({{{','.join(sorted(sent))}}})"
                f" != len({{{','.join(sorted(want))}}}). Sent extra: {{{','.join(sorted(sent - want))}}}. "
                f"Missing but required: {{{','.join(sorted(want - sent))}}}.")
        for k, arr in inputs.items():
            dtype, shape = self.inputs[k]
            got = tf.string if arr.dtype == object or arr.dtype.kind in "SU" else tf.dtypes.as_dtype(arr.dtype)
            if got != dtype:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"Input '{k}' of signature '{self.name}' expects dtype {dtype.name} "
                                   f"(DT_{dtype.name.upper()}) but got {got.name} (DT_{got.name.upper()})")
            if shape is not None:
                ok = len(shape) == arr.ndim and all(s == -1 or s == a for s, a in zip(shape, arr.shape))
                if not ok:
                    raise ServingError(Code.INVALID_ARGUMENT,
                                       f"Input '{k}' of signature '{self.name}' expects shape {shape} "
                                       f"(-1: any size) but got {list(arr.shape)}")

    @property
    def max_batch_size(self):
        """Most rows one request may carry (None: no limit, when this signature is not batched)."""
        return self.batcher.options.max_batch_size if self.batcher is not None else None

    def run(self, inputs, output_filter=(), deadline=None):
        """Validate and run; `deadline` (`time.monotonic()` value) bounds queueing and the model run."""
        self.validate(inputs)
        for alias in output_filter:
            if alias not in self.outputs:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {alias} Outputs expected to be "
                                   f"in the set {{{','.join(sorted(self.outputs))}}}.")
        if len(set(output_filter)) != len(output_filter):
            raise ServingError(Code.INVALID_ARGUMENT, "duplicate output tensor alias in output_filter")
        try:
            if self.batcher is not None:
                out = self.batcher.submit(inputs, deadline)
            else:
                with deadlines.cancel_at(deadline):
                    out = self._call(inputs)
        except Exception as exc:  # noqa: BLE001
            raise from_exception(exc) from None
        if output_filter:
            out = {k: out[k] for k in output_filter}
        return out

    def close(self):
        if self.batcher is not None:
            self.batcher.close()


class Servable:
    """A loaded version of a model. Reference-counted by in-flight requests."""

    def __init__(self, name, version, path, batching_options=None):
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401 - registers custom ops used by exports
        except ImportError:  # pragma: no cover
            log.warning("tensorflow_text not importable; models using its ops will fail to load")
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, path
        sm = saved_model_pb2.SavedModel()
        pb = os.path.join(path, "saved_model.pb")
        if os.path.exists(pb):
            with open(pb, "rb") as f:
                sm.ParseFromString(f.read())
        else:
            from google.protobuf import text_format

            with open(os.path.join(path, "saved_model.pbtxt")) as f:
                text_format.Parse(f.read(), sm)
        metas = [m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags] or list(sm.meta_graphs)
        if not metas:
            raise ValueError(f"{path}: SavedModel has no MetaGraphDef")
        self.signature_defs = metas[0].signature_def
        self.loaded = tf.saved_model.load(path, tags=list(metas[0].meta_info_def.tags) or None)
        self.signatures = {}
        for key, sig_def in self.signature_defs.items():
            if key.startswith("__"):  # e.g. __saved_model_init_op
                continue
            if key not in self.loaded.signatures:
                continue
            self.signatures[key] = Signature(key, self.loaded.signatures[key], sig_def, batching_options)
        self._refs = 0
        self._cv = threading.Condition()

    def signature(self, name):
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise ServingError(Code.NOT_FOUND,
                               f"Serving signature key \"{key}\" not found. Model '{self.name}' version "
                               f"{self.version} has signatures: {sorted(self.signatures)}")
        return sig

    def run(self, signature_name, inputs, output_filter=(), deadline=None):
        return self.signature(signature_name).run(inputs, output_filter, deadline)

    def _acquire(self):
        with self._cv:
            self._refs += 1

    def _release(self):
        with self._cv:
            self._refs -= 1
            if self._refs == 0:
                self._cv.notify_all()

    def wait_idle(self):
        with self._cv:
            while self._refs:
                self._cv.wait()

    def close(self):
        for sig in self.signatures.values():
            sig.close()
        self.signatures = {}
        self.loaded = None


class Model:
    """All versions of one named model and their states."""

    MAX_LOAD_RETRIES = 5

    def __init__(self, config, batching_options=None, on_warmup=None):
        self.config = config
        self.batching_options = batching_options
        self.on_warmup = on_warmup
        self._lock = threading.Lock()
        self._serving = {}  # version -> Servable (AVAILABLE)
        self.states = {}  # version -> (state, error_code_name, message)
        self._failures = {}  # version -> count

    @property
    def name(self):
        return self.config.name

    def available_versions(self):
        with self._lock:
            return sorted(self._serving)

    @contextlib.contextmanager
    def acquire(self, version=None, label=None):
        name = self.name
        with self._lock:
            if label:
                if version is not None:
                    raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec sets both version and version_label")
                if label not in self.config.version_labels:
                    raise ServingError(Code.NOT_FOUND, f"Unrecognized servable version label: {label}")
                version = self.config.version_labels[label]
            if version is None:
                if not self._serving:
                    raise ServingError(Code.UNAVAILABLE,
                                       f"Servable not available for request: Latest({name}): no version of model "
                                       f"'{name}' is loaded yet (base path {self.config.base_path})")
                version = max(self._serving)
            servable = self._serving.get(version)
            if servable is None:
                if not self._serving:
                    raise ServingError(Code.UNAVAILABLE,
                                       f"Servable not available for request: Specific({name}, {version}): no "
                                       f"version of model '{name}' is loaded yet")
                raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
            servable._acquire()
        try:
            yield servable
        finally:
            servable._release()

    def _set_state(self, version, state, code="OK", message=""):
        with self._lock:
            self.states[version] = (state, code, message)

    def wanted_versions(self, on_disk):
        c = self.config
        if c.policy == "all":
            return set(on_disk)
        if c.policy == "specific":
            return set(on_disk) & set(c.versions)
        return set(on_disk[-c.num_versions:])

    def poll(self):
        """One reconciliation pass: load wanted versions, then retire unwanted ones."""
        on_disk = _list_versions(self.config.base_path)
        wanted = self.wanted_versions(on_disk)
        for v in sorted(wanted, reverse=True):
            with self._lock:
                if v in self._serving or self._failures.get(v, 0) > self.MAX_LOAD_RETRIES:
                    continue
            self._load(v)
        with self._lock:
            loaded_wanted = wanted & set(self._serving)
            # Availability-preserving: retire old versions only once a wanted one is serving.
            retire = [v for v in self._serving if v not in wanted] if loaded_wanted or not wanted else []
            retired = [(v, self._serving.pop(v)) for v in retire]
        for v, servable in retired:
            threading.Thread(target=self._unload, args=(v, servable), daemon=True).start()

    def _load(self, version):
        path = os.path.join(self.config.base_path, str(version))
        self._set_state(version, LOADING)
        log.info("Loading servable %s version %d from %s", self.name, version, path)
        t0 = time.monotonic()
        try:
            servable = Servable(self.name, version, path, self.batching_options)
            if self.on_warmup is not None:
                self.on_warmup(servable)
        except Exception as exc:  # noqa: BLE001
            err = from_exception(exc)
            self._failures[version] = self._failures.get(version, 0) + 1
            log.error("Loading servable %s version %d failed: %s", self.name, version, err.message)
            self._set_state(version, END, "UNKNOWN" if err.code == Code.INTERNAL else err.code.name, err.message)
            return
        with self._lock:
            self._serving[version] = servable
            self.states[version] = (AVAILABLE, "OK", "")
        log.info("Successfully loaded servable %s version %d in %.1fs", self.name, version, time.monotonic() - t0)

    def _unload(self, version, servable):
        self._set_state(version, UNLOADING)
        servable.wait_idle()
        servable.close()
        self._set_state(version, END)
        log.info("Unloaded servable %s version %d", self.name, version)

    def shutdown(self):
        with self._lock:
            items = list(self._serving.items())
            self._serving.clear()
        for v, s in items:
            self._unload(v, s)


class ModelManager:
    """All served models plus the file-system poller."""

    def __init__(self, configs, batching_options=None, poll_wait_seconds=1.0, on_warmup=None):
        self.models = {c.name: Model(c, batching_options, on_warmup) for c in configs}
        self.poll_wait_seconds = poll_wait_seconds
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Load what is on disk now (blocking), then keep polling in the background."""
        for m in self.models.values():
            if not os.path.isdir(m.config.base_path):
                log.warning("Model %s: base path %s does not exist (yet)", m.name, m.config.base_path)
            m.poll()
            if not m.available_versions():
                log.warning("No versions of servable %s found under base path %s", m.name, m.config.base_path)
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="fs-poller", daemon=True)
            self._thread.start()

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            for m in self.models.values():
                try:
                    m.poll()
                except Exception:  # noqa: BLE001 - the poller must survive anything
                    log.exception("Polling model %s failed", m.name)

    def model(self, name):
        if not name:
            raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec name")
        m = self.models.get(name)
        if m is None:
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return m

    def acquire(self, name, version=None, label=None):
        return self.model(name).acquire(version, label)

    def stop_polling(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def shutdown(self):
        self.stop_polling()
        for m in self.models.values():
            m.shutdown()


# A TensorProto can describe a huge tensor in a few bytes (shape plus one repeated value); refuse to
# expand one past this size rather than let a small request allocate gigabytes.
MAX_DECODED_TENSOR_BYTES = 256 << 20


def to_numpy_inputs(tensor_protos):
    """dict name->TensorProto to dict name->np.ndarray, INVALID_ARGUMENT on malformed protos."""
    import tensorflow as tf

    out = {}
    for k, tp in tensor_protos.items():
        dims = [d.size for d in tp.tensor_shape.dim]
        if any(d < 0 for d in dims):
            raise ServingError(Code.INVALID_ARGUMENT, f"Input '{k}': TensorProto has a negative dimension {dims}")
        n = 1
        for d in dims:
            n *= d
        if n * max(tf.dtypes.as_dtype(tp.dtype).size if tp.dtype else 1, 1) > MAX_DECODED_TENSOR_BYTES:
            raise ServingError(Code.INVALID_ARGUMENT, f"Input '{k}': TensorProto of shape {dims} would decode to "
                               f"more than {MAX_DECODED_TENSOR_BYTES} bytes")
        try:
            out[k] = tf.make_ndarray(tp)
        except Exception as exc:  # noqa: BLE001
            raise ServingError(Code.INVALID_ARGUMENT, f"Input '{k}': cannot decode TensorProto: {exc}") from None
        if tp.dtype == 0:
            raise ServingError(Code.INVALID_ARGUMENT, f"Input '{k}': TensorProto has no dtype (DT_INVALID)")
    return out


def to_tensor_proto(arr):
    import tensorflow as tf

    if arr.dtype == object:
        arr = np.asarray(arr)
    return tf.make_tensor_proto(arr)
