"""Test helper: run a training program, SIGTERM it once it is under way, and report what it did."""

import re
import signal
import subprocess
import time


def sigterm_when(command, under_way, env=None, timeout=300, before_signal=None):
    """Starts `command`, reads its output until the regex `under_way` matches (within `timeout` s), calls
    `before_signal()` if given, sends SIGTERM and waits for the exit.

    Returns (returncode, output, step): `step` is the global step of the checkpoint the program says it
    saved on preemption ("preempted (SIGTERM): saved checkpoint ... at global step N"), None if none.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out, t0 = "", time.time()
    try:
        while not re.search(under_way, out):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, out[-3000:]
            out += line
            assert time.time() - t0 < timeout, out[-3000:]
        if before_signal is not None:
            before_signal()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out += rest
    saved = re.search(r"preempted \(SIGTERM\): saved checkpoint.*?at global step (\d+)", out, re.S)
    return proc.returncode, out, int(saved.group(1)) if saved else None
