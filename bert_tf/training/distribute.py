"""Distribution strategies and mixed precision from command-line style settings.

Two entry points used by the trainers (``--strategy``, ``--num_gpus``, ``--tpu``,
``--mixed_precision`` flags):

* :func:`get_strategy` -> a ``tf.distribute.Strategy`` for ``one_device``,
  ``mirrored``, ``multi_worker`` (``TF_CONFIG``) or ``tpu``.
* :func:`configure_mixed_precision` -> sets the global Keras dtype policy
  (``float32``, ``mixed_float16``, ``mixed_bfloat16``) and, for bfloat16 on CPU,
  logs whether the CPU has native bfloat16 instructions (AVX512-BF16 / AMX).

Example::

    >>> from bert_tf.training.distribute import get_strategy, configure_mixed_precision
    >>> strategy = get_strategy("one_device")
    >>> strategy.num_replicas_in_sync
    1
    >>> configure_mixed_precision("float32")
    'float32'

To test multi-replica code on a CPU-only machine, split the CPU into logical
devices *before* TensorFlow initializes its runtime::

    set_logical_cpus(2)               # first thing in the program
    strategy = get_strategy("mirrored")  # 2 replicas on /cpu:0 and /cpu:1
"""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")
PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def set_logical_cpus(n: int) -> list:
    """Splits the first physical CPU into ``n`` logical devices.

    Must run before TensorFlow initializes its runtime (before any op runs).
    Returns the list of logical CPU devices. Raises ``RuntimeError`` with a clear
    message if the runtime is already initialized with a different layout.

    Example::

        >>> import bert_tf.training.distribute as d
        >>> len(d.set_logical_cpus(len(tf.config.list_logical_devices("CPU"))))  >= 1
        True
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"set_logical_cpus: n must be >= 1, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as e:
        have = tf.config.list_logical_devices("CPU")
        if len(have) == n:
            return have
        raise RuntimeError(
            f"set_logical_cpus({n}): TensorFlow is already initialized with "
            f"{len(have)} logical CPU device(s); call it first thing in the "
            f"program, before any TensorFlow op runs ({e})"
        ) from e
    return tf.config.list_logical_devices("CPU")


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}: {raw[:200]!r}") from e


def get_strategy(
    name: str = "one_device",
    num_gpus: int | None = None,
    tpu: str | None = None,
    all_reduce_alg: str | None = None,
) -> tf.distribute.Strategy:
    """Returns a ``tf.distribute.Strategy`` by name.

    Args:
      name: ``one_device`` (first GPU, else CPU), ``mirrored`` (all local GPUs, or
        the first ``num_gpus``; on a machine without GPUs, every logical CPU device,
        see :func:`set_logical_cpus`), ``multi_worker``
        (``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``) or
        ``tpu`` (``TPUStrategy`` through ``TPUClusterResolver(tpu=tpu)``).
      num_gpus: number of GPUs to use (``None`` = all; ``0`` forces CPU).
      tpu: TPU name or ``grpc://`` address for ``name="tpu"`` (``None`` or
        ``"local"`` works on a TPU VM).
      all_reduce_alg: for ``mirrored``: ``nccl`` | ``hierarchical_copy`` |
        ``reduction_to_one_device``; for ``multi_worker``: ``ring`` | ``nccl``
        (``None`` = TensorFlow's choice).

    Example::

        >>> s = get_strategy("mirrored", num_gpus=0)
        >>> s.num_replicas_in_sync >= 1
        True
    """
    name = (name or "one_device").lower().replace("-", "_")
    aliases = {"onedevice": "one_device", "default": "one_device",
               "multiworker": "multi_worker", "multi_worker_mirrored": "multi_worker"}
    name = aliases.get(name, name)
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r} is not one of {', '.join(STRATEGIES)}")
    # Multi-worker collectives must be configured before anything initializes the
    # TensorFlow runtime (listing logical devices does): create it first.
    if name == "multi_worker":
        cfg = _tf_config()
        if cfg and "cluster" not in cfg:
            raise ValueError("TF_CONFIG has no 'cluster' entry: " + json.dumps(cfg)[:200])
        impl = tf.distribute.experimental.CommunicationImplementation.AUTO
        if all_reduce_alg:
            impls = {"ring": tf.distribute.experimental.CommunicationImplementation.RING,
                     "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
            if all_reduce_alg not in impls:
                raise ValueError(f"all_reduce_alg={all_reduce_alg!r} not in {sorted(impls)}")
            impl = impls[all_reduce_alg]
        options = tf.distribute.experimental.CommunicationOptions(implementation=impl)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    gpus = tf.config.list_logical_devices("GPU") if name != "tpu" else []
    if num_gpus is not None:
        if num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0, got {num_gpus}")
        if num_gpus > len(gpus):
            raise ValueError(
                f"num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible")
        gpus = gpus[:num_gpus]

    if name == "one_device":
        device = "/gpu:0" if gpus else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)

    if name == "mirrored":
        if gpus:
            devices = [d.name for d in gpus]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        cross_device_ops = None
        if all_reduce_alg:
            ops = {
                "nccl": tf.distribute.NcclAllReduce,
                "hierarchical_copy": tf.distribute.HierarchicalCopyAllReduce,
                "reduction_to_one_device": tf.distribute.ReductionToOneDevice,
            }
            if all_reduce_alg not in ops:
                raise ValueError(f"all_reduce_alg={all_reduce_alg!r} not in {sorted(ops)}")
            cross_device_ops = ops[all_reduce_alg]()
        elif not gpus:
            cross_device_ops = tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)

    # tpu
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=None if tpu in (None, "", "local") else tpu)
    if tpu not in (None, "", "local"):
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on the worker that writes real checkpoints and summaries.

    That is the only worker of a single-worker strategy, the ``chief`` task, or
    worker 0 of a cluster without a chief task (TensorFlow's convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def num_workers(strategy: tf.distribute.Strategy | None) -> int:
    """Number of worker processes taking part in ``strategy``."""
    if strategy is None:
        return 1
    return int(getattr(strategy.extended, "_num_workers", 1) or 1)


def cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty set if unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and ":" in line:
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True if the CPU has bfloat16 arithmetic (``avx512_bf16`` or ``amx_bf16``)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def configure_mixed_precision(policy: str = "float32") -> str:
    """Sets the global Keras dtype policy and returns its name.

    ``mixed_float16`` is meant for GPUs (the :class:`bert_tf.training.Trainer`
    wraps the optimizer in ``keras.optimizers.LossScaleOptimizer``);
    ``mixed_bfloat16`` for TPUs, recent GPUs and CPUs with AVX512-BF16/AMX. On a
    machine without a GPU, the log says whether the CPU computes bfloat16 natively
    (otherwise it is emulated and usually slower than float32).

    Example::

        >>> configure_mixed_precision("float32")
        'float32'
    """
    import keras

    policy = (policy or "float32").lower()
    aliases = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16",
               "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    policy = aliases.get(policy, policy)
    if policy not in PRECISION_POLICIES:
        raise ValueError(
            f"--mixed_precision={policy!r} is not one of {', '.join(PRECISION_POLICIES)}")
    keras.mixed_precision.set_global_policy(policy)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if policy == "mixed_bfloat16" and not has_gpu:
        flags = cpu_flags()
        if cpu_has_native_bf16(flags):
            found = sorted({"avx512_bf16", "amx_bf16"} & flags)
            logger.info("mixed_bfloat16: CPU has native bfloat16 (%s)", ", ".join(found))
            if "amx_bf16" not in flags:
                # measured (bench/end_to_end.py, bench/accuracy.py) on an AVX512-BF16 Xeon
                # without AMX: bf16 inference 0.65x float32, bf16 fine-tuning 1.26x
                logger.info("mixed_bfloat16: no AMX; bf16 matmuls are not much faster than float32 "
                            "on this CPU, so measure before relying on a speed-up")
        else:
            logger.warning(
                "mixed_bfloat16: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 "
                "in /proc/cpuinfo); bfloat16 math is emulated and may be slower than float32")
    elif policy == "mixed_float16" and not has_gpu:
        logger.warning("mixed_float16 without a GPU: float16 math on CPU is slow")
    return policy
