"""Atomic file writes: a temporary file beside the target, then a rename over it (through `tf.io.gfile`, so local
disks and GCS alike). A reader — a model server, a resumed run, a user's script — never sees half a file; the one
place this rule is written for the library's files (directories of exports have their own, in `bert_tf.export`).

>>> import os, tempfile
>>> from bert_tf import atomic
>>> path = atomic.write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"b": 1, "a": 2})
>>> open(path).read()
'{\\n  "a": 2,\\n  "b": 1\\n}\\n'
"""

import json
import os
import uuid

import tensorflow as tf


def write_file(path, data):
    """Writes `data` (str or bytes) to `path` atomically; returns `path`."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with tf.io.gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise
    return path


def write_json(path, obj, indent=2, sort_keys=True, ensure_ascii=True):
    """Writes `obj` as JSON (with a final newline) to `path` atomically; returns `path`."""
    return write_file(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n")
