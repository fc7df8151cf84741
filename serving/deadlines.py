"""Request deadlines: bound how long the model works on a request, and cancel what runs past it.

A deadline is an absolute `time.monotonic()` value (None: no deadline). `cancel_at(deadline)` is a
context manager: TensorFlow function calls made inside it, in this thread, run under a
`CancellationManager` that a watchdog thread cancels when the deadline passes; the call then raises
`ServingError(DEADLINE_EXCEEDED)` instead of running on unbounded. TensorFlow keeps the active
cancellation manager in a process-wide global; `install()` makes it per-thread so that concurrent
requests cannot cancel each other (done once, on first use).

Example:
    >>> import time
    >>> with cancel_at(time.monotonic() + 0.5):          # doctest: +SKIP
    ...     signature_fn(text=texts)                        # cancelled after 0.5 s
"""

import contextlib
import heapq
import itertools
import threading
import time

from serving.errors import Code, ServingError

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


def install():
    """Route TensorFlow's active cancellation manager through a thread-local (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from tensorflow.python.eager import cancellation

        cancellation.context = lambda: getattr(_local, "manager", None)
        _installed = True


def remaining(deadline):
    """Seconds left before `deadline` (None: no deadline)."""
    return None if deadline is None else deadline - time.monotonic()


def expired(deadline):
    return deadline is not None and time.monotonic() >= deadline


def deadline_error(what="Request"):
    return ServingError(Code.DEADLINE_EXCEEDED, f"{what} exceeded its deadline (timeout) and was cancelled")


def check(deadline, what="Request"):
    if expired(deadline):
        raise deadline_error(what)


class _Watchdog:
    """One thread that calls `start_cancel()` on managers whose deadline has passed."""

    def __init__(self):
        self._heap = []
        self._cv = threading.Condition()
        self._ids = itertools.count()
        self._thread = None

    def add(self, deadline, manager):
        entry = [deadline, next(self._ids), manager, False]  # [3]: fired
        with self._cv:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()
        return entry

    def remove(self, entry):
        with self._cv:
            entry[2] = None  # lazily dropped from the heap

    def _run(self):
        while True:
            with self._cv:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                entry[3] = True
                manager = entry[2]
            manager.start_cancel()  # a manager removed meanwhile is simply cancelled unused


_watchdog = _Watchdog()


@contextlib.contextmanager
def cancel_at(deadline, what="Request"):
    """Run TensorFlow calls in this block under `deadline` (see module docstring)."""
    if deadline is None:
        yield
        return
    check(deadline, what)
    install()
    from tensorflow.python.eager import cancellation

    manager = cancellation.CancellationManager()
    entry = _watchdog.add(deadline, manager)
    previous = getattr(_local, "manager", None)
    _local.manager = manager
    try:
        yield
    except Exception:  # noqa: BLE001
        # Not `manager.is_cancelled`: TensorFlow cancels the manager itself when an op fails.
        if entry[3] or expired(deadline):
            raise deadline_error(what) from None
        raise
    finally:
        _local.manager = previous
        _watchdog.remove(entry)
