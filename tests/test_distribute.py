"""bert_tf.training.distribute: strategies by name, logical CPUs, mixed precision policies."""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_tf.training import distribute  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_device_and_mirrored_in_process():
    s = distribute.get_strategy("one_device")
    assert isinstance(s, tf.distribute.OneDeviceStrategy)
    assert s.num_replicas_in_sync == 1
    assert s.extended.worker_devices[0].endswith("CPU:0")
    m = distribute.get_strategy("mirrored", num_gpus=0)
    assert isinstance(m, tf.distribute.MirroredStrategy)
    assert m.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    assert distribute.is_chief(m) and distribute.num_workers(m) == 1


def test_bad_names_are_clear_errors():
    with pytest.raises(ValueError, match="one_device, mirrored, multi_worker, tpu"):
        distribute.get_strategy("horovod")
    with pytest.raises(ValueError, match="num_gpus=3"):
        distribute.get_strategy("mirrored", num_gpus=3)
    with pytest.raises(ValueError, match="float32, mixed_float16, mixed_bfloat16"):
        distribute.configure_mixed_precision("int8")


def test_two_logical_cpus_give_two_mirrored_replicas():
    code = (
        "from bert_tf.training import distribute as d\n"
        "import tensorflow as tf\n"
        "devs = d.set_logical_cpus(2)\n"
        "s = d.get_strategy('mirrored')\n"
        "r = s.run(lambda: tf.distribute.get_replica_context().replica_id_in_sync_group)\n"
        "print(len(devs), s.num_replicas_in_sync,"
        " sorted(int(x) for x in s.experimental_local_results(r)))\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "2 2 [0, 1]"


def test_set_logical_cpus_after_init_is_a_clear_error():
    tf.constant(1.0) + 1.0  # runtime initialized in this process
    have = len(tf.config.list_logical_devices("CPU"))
    assert len(distribute.set_logical_cpus(have)) == have  # same layout: fine
    with pytest.raises(RuntimeError, match="already initialized"):
        distribute.set_logical_cpus(have + 3)


def test_bf16_cpu_detection_from_flags():
    assert distribute.cpu_has_native_bf16({"avx512f", "avx512_bf16"})
    assert distribute.cpu_has_native_bf16({"amx_bf16", "amx_tile"})
    assert not distribute.cpu_has_native_bf16({"avx2", "fma", "avx512f"})
    flags = distribute.cpu_flags()
    assert "fpu" in flags or not os.path.exists("/proc/cpuinfo")  # read for real
    assert distribute.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_mixed_precision_policies(caplog):
    try:
        with caplog.at_level("INFO", logger="bert_tf.training.distribute"):
            assert distribute.configure_mixed_precision("mixed_bfloat16") == "mixed_bfloat16"
        assert keras.mixed_precision.dtype_policy().compute_dtype == "bfloat16"
        if not tf.config.list_physical_devices("GPU"):
            assert "bfloat16" in caplog.text
            assert ("native bfloat16" in caplog.text)
        assert distribute.configure_mixed_precision("fp16") == "mixed_float16"
        assert keras.mixed_precision.dtype_policy().compute_dtype == "float16"
    finally:
        assert distribute.configure_mixed_precision("float32") == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_tf_config_errors(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"task": {"type": "worker", "index": 0}}')
    with pytest.raises(ValueError, match="no 'cluster'"):
        distribute.get_strategy("multi_worker")
