"""trainers/create_pretraining_data.py as a program: Google's flags, globbed inputs, sharded
outputs written by parallel workers, progress and counts printed, the same records as the
library call, non-UTF-8 lines skipped and counted, and clear errors for bad flags.

Input: real documents from the project's corpus (fixtures.datasets), split over two files.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fixtures import datasets
from bert_tf.pretraining import data as pdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "trainers", "create_pretraining_data.py")
SEQ, PRED = 64, 10


def _run(*args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, PROGRAM, *args], capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    print(out[-4000:])
    if check:
        assert proc.returncode == 0, out[-4000:]
    return proc.returncode, out


def _records(paths):
    spec = pdata.google_feature_spec(SEQ, PRED)
    out = []
    for p in paths:
        for r in tf.data.TFRecordDataset(p):
            out.append({k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()})
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cpd")
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    docs = [x for x in text.split("\n\n") if x.strip()][:60]
    (d / "part-a.txt").write_text("\n\n".join(docs[:30]) + "\n", encoding="utf-8")
    # the second file carries two non-UTF-8 lines, which are skipped and counted
    data = ("\n\n".join(docs[30:]) + "\n").encode("utf-8")
    (d / "part-b.txt").write_bytes(b"caf\xe9 latin-1 line\n" + data + b"\n\xff\xfe broken\n")
    return d


def test_cli_globs_shards_parallel_and_matches_library(inputs, minilm_vocab, tmp_path):
    prefix = str(tmp_path / "out" / "pretrain")
    common = [f"--vocab_file={minilm_vocab}", "--do_lower_case", f"--max_seq_length={SEQ}",
              f"--max_predictions_per_seq={PRED}", "--dupe_factor=2", "--random_seed=7"]
    _, out = _run(f"--input_file={inputs}/part-*.txt", f"--output_file={prefix}", "--num_output_shards=2",
                  "--num_workers=2", *common)
    shards = sorted(os.listdir(tmp_path / "out"))
    assert shards == ["pretrain-00000-of-00002.tfrecord", "pretrain-00001-of-00002.tfrecord"], shards
    recs = _records([str(tmp_path / "out" / s) for s in shards])
    assert len(recs) > 100
    assert "instances" in out and "documents" in out and "/s" in out  # progress and final counts
    assert str(len(recs)) in out
    assert "skipped_non_utf8_lines=2" in out

    # the same flags through the library in this process give the same records (determinism)
    lib = [str(tmp_path / "lib" / s) for s in shards]
    pdata.create_pretraining_data(sorted(str(p) for p in inputs.glob("part-*.txt")), lib, minilm_vocab,
                                  max_seq_length=SEQ, max_predictions_per_seq=PRED, dupe_factor=2,
                                  random_seed=7, num_workers=1, verbose=False)
    again = _records(lib)
    assert len(again) == len(recs)
    for a, b in zip(recs, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])

    # comma-separated outputs; a different seed gives different masks
    outs = [str(tmp_path / "c1.tfrecord"), str(tmp_path / "c2.tfrecord")]
    _run(f"--input_file={inputs}/part-a.txt,{inputs}/part-b.txt", f"--output_file={','.join(outs)}",
         *common[:-1], "--random_seed=8")
    other = _records(outs)
    assert any(not np.array_equal(a["masked_lm_positions"], b["masked_lm_positions"])
               for a, b in zip(recs, other))


def test_cli_errors_are_clear(inputs, minilm_vocab, tmp_path):
    rc, out = _run(f"--input_file={tmp_path}/nothing-*.txt", f"--output_file={tmp_path}/x.tfrecord",
                   f"--vocab_file={minilm_vocab}", check=False)
    assert rc != 0 and "nothing-*.txt" in out
    rc, out = _run(f"--input_file={inputs}/part-a.txt", f"--output_file={tmp_path}/x.tfrecord", check=False)
    assert rc != 0 and "vocab_file" in out
    rc, out = _run(f"--input_file={inputs}/part-a.txt", f"--output_file={tmp_path}/x.tfrecord",
                   f"--vocab_file={tmp_path}/missing_vocab.txt", check=False)
    assert rc != 0 and "missing_vocab.txt" in out
    assert not os.path.exists(tmp_path / "x.tfrecord")
