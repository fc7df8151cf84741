"""Atomic file writes: a temporary file beside the target, then a rename over it (local disks through plain Python,
remote paths such as `gs://` through `tf.io.gfile`). A reader — a model server, a resumed run, a user's script —
never sees half a file; the one place this rule is written for the library's files (directories of exports have
their own, in `bert_tf.export`).

>>> import os, tempfile
>>> from bert_tf import atomic
>>> path = atomic.write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"b": 1, "a": 2})
>>> open(path).read()
'{\\n  "a": 2,\\n  "b": 1\\n}\\n'
"""

import functools
import json
import os
import uuid


def _file_system(path):
    """(open, rename over, exists, remove) for `path`: plain Python for a local path, `tf.io.gfile` for a URL."""
    if "://" not in os.fspath(path):
        return open, os.replace, os.path.exists, os.remove
    import tensorflow as tf  # only for remote paths: importing TensorFlow costs seconds of start-up

    gfile = tf.io.gfile
    return gfile.GFile, functools.partial(gfile.rename, overwrite=True), gfile.exists, gfile.remove


def write_file(path, data):
    """Writes `data` (str, written as UTF-8, or bytes) to `path` atomically; returns `path`."""
    open_fn, rename, exists, remove = _file_system(path)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open_fn(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        rename(tmp, path)
    except BaseException:
        if exists(tmp):
            remove(tmp)
        raise
    return path


def write_json(path, obj, indent=2, sort_keys=True, ensure_ascii=True):
    """Writes `obj` as JSON (with a final newline) to `path` atomically; returns `path`."""
    return write_file(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n")
