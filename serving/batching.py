"""Server-side request batching: merge concurrent calls into one model call.

A `Batcher` wraps one function ``run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]``
whose inputs and outputs all have the batch on axis 0. Threads call `Batcher.submit(inputs)`; a
pool of `num_batch_threads` workers takes the oldest waiting request, adds later requests whose
inputs have the same shapes after axis 0 (or, with ``pad_variable_length_inputs``, the same
rank, preferring those with the most similar lengths, padded with zeros / empty strings) until
`max_batch_size` rows are collected or the oldest request has waited `batch_timeout_micros`,
makes one call, and splits the outputs back along axis 0.

A failed merged call is retried request by request, so one bad request never fails its
neighbours. A request may carry a deadline (`time.monotonic()` value): it is dropped from the queue
once the deadline passes, its caller gets DEADLINE_EXCEEDED, and a running merged call is cancelled
(`serving.deadlines.cancel_at`) when the last deadline among its requests passes. The parameters are those of TF Serving's ``BatchingParameters`` text proto
(`--batching_parameters_file`), see `BatchingOptions.from_text`.

Example:
    >>> import numpy as np
    >>> b = Batcher(lambda d: {"y": d["x"] * 2}, BatchingOptions(max_batch_size=8))
    >>> b.submit({"x": np.array([1.0, 2.0])})["y"].tolist()
    [2.0, 4.0]
    >>> b.close()
"""

import collections
import dataclasses
import os
import re
import threading
import time

import numpy as np

from serving import deadlines
from serving.errors import Code, ServingError, from_exception


@dataclasses.dataclass
class BatchingOptions:
    """TF Serving's BatchingParameters (session_bundle_config.proto) that this server honours."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    max_enqueued_batches: int = 100
    pad_variable_length_inputs: bool = False

    _INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
    _IGNORED = ("thread_pool_name", "enable_large_batch_splitting", "max_execution_batch_size",
                "allowed_batch_sizes")

    @classmethod
    def from_text(cls, text, source="<batching parameters>"):
        """Parse a BatchingParameters text proto.

        Accepts the wrapper form TF Serving documents (``max_batch_size { value: 32 }``) and the plain
        form (``max_batch_size: 32``); ``#`` comments are ignored.

        >>> BatchingOptions.from_text("max_batch_size { value: 32 }  batch_timeout_micros: 500").max_batch_size
        32
        """
        text = re.sub(r"#[^\n]*", "", text)
        opts = cls()
        pos = 0
        token = re.compile(
            r"\s*([A-Za-z_]+)\s*(?:\{\s*value\s*:\s*([^\s}]+)\s*\}|:\s*(\"[^\"]*\"|[^\s{}]+))\s*")
        while pos < len(text):
            if not text[pos:].strip():
                break
            m = token.match(text, pos)
            if not m:
                raise ValueError(f"{source}: cannot parse batching parameters near: {text[pos:pos + 40]!r}")
            name, value = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
            pos = m.end()
            if name in cls._INT_FIELDS:
                try:
                    setattr(opts, name, int(value))
                except ValueError:
                    raise ValueError(f"{source}: {name} must be an integer, got {value!r}") from None
            elif name == "pad_variable_length_inputs":
                if value not in ("true", "false"):
                    raise ValueError(f"{source}: pad_variable_length_inputs must be true/false, got {value!r}")
                opts.pad_variable_length_inputs = value == "true"
            elif name not in cls._IGNORED:
                raise ValueError(f"{source}: unknown batching parameter {name!r}")
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(opts, name) < 1:
                raise ValueError(f"{source}: {name} must be >= 1, got {getattr(opts, name)}")
        if opts.batch_timeout_micros < 0:
            raise ValueError(f"{source}: batch_timeout_micros must be >= 0")
        return opts

    @classmethod
    def from_file(cls, path):
        with open(path) as f:
            return cls.from_text(f.read(), source=path)


class _Task:
    __slots__ = ("inputs", "size", "key", "lengths", "arrival", "done", "result", "error", "deadline")

    def __init__(self, inputs, size, key, lengths, deadline=None):
        self.deadline = deadline
        self.inputs = inputs
        self.size = size
        self.key = key
        self.lengths = lengths
        self.arrival = time.monotonic()
        self.done = threading.Event()
        self.result = None
        self.error = None


def _pad_value(arr):
    return b"" if arr.dtype == object else 0


def _concat(arrays, pad):
    if not pad or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    target = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    padded = []
    for a in arrays:
        widths = [(0, 0)] + [(0, t - s) for s, t in zip(a.shape[1:], target)]
        padded.append(np.pad(a, widths, constant_values=_pad_value(a)) if any(w[1] for w in widths) else a)
    return np.concatenate(padded, axis=0)


class Batcher:
    """Merges concurrent `submit` calls into batched calls of `run_fn` (see module docstring)."""

    def __init__(self, run_fn, options=None, name="batcher"):
        self._run = run_fn
        self.options = options or BatchingOptions()
        self._queue = collections.deque()
        self._queued_rows = 0
        self._cv = threading.Condition()
        self._closed = False
        self.stats = collections.Counter()  # calls, rows, tasks (for tests/benchmarks)
        self._threads = [threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True)
                         for i in range(self.options.num_batch_threads)]
        for t in self._threads:
            t.start()

    # -- client side -----------------------------------------------------------------
    def submit(self, inputs, deadline=None):
        """Run `inputs` (dict of arrays sharing axis-0 size) as part of a batch; returns outputs.
        `deadline`: `time.monotonic()` by which the result is needed (None: no limit)."""
        sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
        if len(sizes) != 1 or None in sizes:
            raise ServingError(Code.INVALID_ARGUMENT,
                               "Batching session Run() input tensors must have equal 0th-dimension size "
                               f"(got {', '.join(f'{k}: {list(v.shape)}' for k, v in sorted(inputs.items()))})")
        size = sizes.pop()
        opts = self.options
        if size > opts.max_batch_size:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Task size {size} is larger than maximum input batch size {opts.max_batch_size}")
        if size == 0:
            with deadlines.cancel_at(deadline):
                return self._run(inputs)
        if opts.pad_variable_length_inputs:
            key = tuple(sorted((k, v.ndim, v.dtype.str) for k, v in inputs.items()))
        else:
            key = tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        lengths = tuple(v.shape[1:] for _, v in sorted(inputs.items()))
        task = _Task(inputs, size, key, lengths, deadline)
        with self._cv:
            if self._closed:
                raise ServingError(Code.UNAVAILABLE, "Server is shutting down; batch queue closed")
            if self._queued_rows + size > opts.max_enqueued_batches * opts.max_batch_size:
                raise ServingError(Code.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._queued_rows += size
            self._cv.notify()
        if not task.done.wait(deadlines.remaining(deadline)):
            with self._cv:
                if task in self._queue:  # never started: drop it
                    self._queue.remove(task)
                    self._queued_rows -= task.size
            # If it is running, the merged call is cancelled when its last deadline passes.
            raise deadlines.deadline_error()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self, wait=True):
        """Stop accepting work; queued work still runs. With `wait`, join the workers."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if wait:
            for t in self._threads:
                t.join()

    # -- worker side -----------------------------------------------------------------
    def _select(self, now):
        """Pick tasks for the next batch (called with the lock held). Returns (tasks, ready)."""
        opts = self.options
        head = self._queue[0]
        candidates = [t for t in self._queue if t.key == head.key]
        if opts.pad_variable_length_inputs and len(candidates) > 1:
            # Prefer similar lengths: sort the others by distance from the oldest request's shapes.
            def dist(t):
                return sum(abs(a - b) for la, lb in zip(t.lengths, head.lengths) for a, b in zip(la, lb))
            candidates = [head] + sorted(candidates[1:], key=dist)
        chosen, rows = [], 0
        for t in candidates:
            if rows + t.size > opts.max_batch_size:
                continue
            chosen.append(t)
            rows += t.size
            if rows == opts.max_batch_size:
                break
        deadline = head.arrival + opts.batch_timeout_micros * 1e-6
        ready = rows >= opts.max_batch_size or now >= deadline or self._closed
        return chosen, ready, deadline

    def _worker(self):
        while True:
            with self._cv:
                while True:
                    if not self._queue:
                        if self._closed:
                            return
                        self._cv.wait()
                        continue
                    chosen, ready, deadline = self._select(time.monotonic())
                    if ready:
                        break
                    self._cv.wait(max(0.0, deadline - time.monotonic()))
                ids = {id(t) for t in chosen}
                self._queue = collections.deque(t for t in self._queue if id(t) not in ids)
                self._queued_rows -= sum(t.size for t in chosen)
                late = [t for t in chosen if deadlines.expired(t.deadline)]
                chosen = [t for t in chosen if not deadlines.expired(t.deadline)]
                if self._queue:
                    self._cv.notify()
            for t in late:  # expired while queued: never run
                t.error = deadlines.deadline_error()
                t.done.set()
            if chosen:
                self._process(chosen)

    def _call(self, tasks):
        pad = self.options.pad_variable_length_inputs
        if len(tasks) == 1:
            merged = tasks[0].inputs
        else:
            merged = {k: _concat([t.inputs[k] for t in tasks], pad) for k in tasks[0].inputs}
        total = sum(t.size for t in tasks)
        last = None if any(t.deadline is None for t in tasks) else max(t.deadline for t in tasks)
        with deadlines.cancel_at(last):
            outputs = self._run(merged)
        self.stats["calls"] += 1
        self.stats["rows"] += total
        self.stats["tasks"] += len(tasks)
        if len(tasks) == 1:
            return [outputs]
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != total:
                raise ServingError(Code.INTERNAL,
                                   f"Batched output {name!r} has shape {list(arr.shape)}; its 0th dimension "
                                   f"must equal the batch size {total} for results to be split")
        results, start = [], 0
        for t in tasks:
            results.append({k: v[start:start + t.size] for k, v in outputs.items()})
            start += t.size
        return results

    def _process(self, tasks):
        try:
            results = self._call(tasks)
            for t, r in zip(tasks, results):
                t.result = r
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the callers
            if len(tasks) > 1:
                # One bad request must not fail its neighbours: run them one by one.
                for t in tasks:
                    self._process([t])
                return
            tasks[0].error = from_exception(exc)
        for t in tasks:
            t.done.set()
