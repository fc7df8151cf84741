"""Preemption: a SIGTERM flag, agreed on by every worker between loops.

The handler only sets a flag; the controller checks :meth:`PreemptionWatcher.
requested_anywhere` after each loop, writes a checkpoint and stops. Under
multi-worker training every worker must stop at the same step, so the flag is
summed over workers (one tiny all-reduce per loop).
"""

from __future__ import annotations

import logging
import signal
import threading

import tensorflow as tf

logger = logging.getLogger(__name__)


class PreemptionWatcher:
    """Catches SIGTERM while active (``with watcher:``) and tells all workers."""

    def __init__(self, strategy, num_workers: int, handle_sigterm: bool = True):
        self.strategy = strategy
        self.num_workers = num_workers
        self.handle_sigterm = handle_sigterm
        self.requested = False
        self._old_handler = None
        self._any_worker_fn = None

    def _on_sigterm(self, signum, frame):
        self.requested = True
        logger.warning("SIGTERM received: will checkpoint after the current loop")

    def __enter__(self):
        self.requested = False
        self._old_handler = None
        # Python only lets the main thread install signal handlers.
        if self.handle_sigterm and threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc):
        if self._old_handler is not None:
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None
        return False

    def requested_anywhere(self) -> bool:
        """Whether any worker got SIGTERM (a collective: every worker must call it)."""
        if self.num_workers <= 1:
            return self.requested
        if self._any_worker_fn is None:
            strategy = self.strategy

            @tf.function
            def any_fn(x):
                per_replica = strategy.run(lambda v: tf.identity(v), args=(x,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._any_worker_fn = any_fn
        flag = tf.constant(1 if self.requested else 0, tf.int32)
        return bool(self._any_worker_fn(flag).numpy() > 0)
