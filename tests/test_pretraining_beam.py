"""The Apache Beam pipeline (trainers/create_pretraining_data.py --runner) writes the same
multiset of records as the local tool, on Beam's in-process runner with two worker
processes (task-owned shards: the very same files) and through WriteToTFRecord; counters
and the final summary; the program's flag errors.

Input: real documents from the project's corpus (fixtures.datasets), over three files (one
with a non-UTF-8 line and a line without wordpieces), the real MiniLM vocab, whole-word masking.
"""

import collections
import os
import subprocess
import sys

import tensorflow as tf

from fixtures import datasets
from bert_tf.pretraining import data as pdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "trainers", "create_pretraining_data.py")
SEQ, PRED = 64, 10


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, PROGRAM, *args], capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    print(out[-4000:])
    return proc.returncode, out


def _multiset(paths):
    return collections.Counter(r.numpy() for p in paths for r in tf.data.TFRecordDataset(p))


def _inputs(d):
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    docs = [x for x in text.split("\n\n") if x.strip()][:75]
    for i in range(3):
        data = ("\n\n".join(docs[25 * i:25 * (i + 1)]) + "\n").encode("utf-8")
        if i == 1:  # one undecodable line, one line that has no wordpieces
            data = b"caf\xe9 latin-1 line\n\x07\x07\n" + data
        (d / f"part-{i}.txt").write_bytes(data)
    return sorted(str(p) for p in d.glob("part-*.txt"))


def test_beam_pipeline_writes_the_local_tools_records(minilm_vocab, tmp_path):
    inputs = _inputs(tmp_path)
    flags = [f"--vocab_file={minilm_vocab}", f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PRED}",
             "--dupe_factor=2", "--random_seed=11", "--do_whole_word_mask", "--block_tokens=4000"]
    prefix = str(tmp_path / "beam" / "pt")
    rc, out = _run("--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing",
                   f"--input_file={tmp_path}/part-*.txt", f"--output_file={prefix}", "--num_output_shards=2",
                   *flags)
    assert rc == 0, out[-4000:]
    shards = sorted(os.listdir(tmp_path / "beam"))
    assert shards == ["pt-00000-of-00002.tfrecord", "pt-00001-of-00002.tfrecord"], shards
    beam = _multiset([str(tmp_path / "beam" / s) for s in shards])

    # the local tool, same flags and seed and number of outputs (in this process, and with workers)
    for workers in (1, 2):
        outs = pdata.output_file_names(str(tmp_path / f"local{workers}" / "pt"), 2)
        stats = pdata.create_pretraining_data(
            inputs, outs, minilm_vocab, max_seq_length=SEQ, max_predictions_per_seq=PRED, dupe_factor=2,
            random_seed=11, do_whole_word_mask=True, block_tokens=4000, num_workers=workers, verbose=False)
        local = _multiset(outs)
        assert sum(local.values()) == stats["instances"] > 300
        assert local == beam, f"num_workers={workers}: Beam and the local tool wrote different records"
        for s, o in zip(shards, outs):  # each task writes the shards it owns, as the local tool does
            assert open(tmp_path / "beam" / s, "rb").read() == open(o, "rb").read()
    # counters and the final summary
    assert stats["skipped_non_utf8_lines"] == 1 and stats["skipped_empty_lines"] == 1
    for key in ("documents", "instances", "skipped_non_utf8_lines", "skipped_empty_lines"):
        assert f"{key}={stats[key]}" in out, key
    assert "instances/s=" in out

    # another seed: other records
    other = pdata.output_file_names(str(tmp_path / "seed" / "pt"), 2)
    pdata.create_pretraining_data(inputs, other, minilm_vocab, max_seq_length=SEQ, max_predictions_per_seq=PRED,
                                  dupe_factor=2, random_seed=12, do_whole_word_mask=True, block_tokens=4000,
                                  num_workers=1, verbose=False)
    assert _multiset(other) != beam


def test_write_to_tfrecord_variant_same_multiset(minilm_vocab, tmp_path):
    """Beam's WriteToTFRecord (records shuffled to shards) in this process: the same multiset."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from bert_tf.pretraining import beam as pretraining_beam

    inputs = _inputs(tmp_path)
    settings = pdata.make_settings(minilm_vocab, max_seq_length=SEQ, max_predictions_per_seq=PRED, dupe_factor=1,
                                   random_seed=5, block_tokens=4000)
    prefix = str(tmp_path / "beam" / "pt")
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        pretraining_beam.build_pipeline(p, pretraining_beam.match_input_files(f"{tmp_path}/part-*.txt"), prefix, 3,
                                        settings, write_to_tfrecord=True)
    beam_files = sorted(str(x) for x in (tmp_path / "beam").glob("pt-*-of-00003.tfrecord"))
    assert len(beam_files) == 3
    outs = pdata.output_file_names(str(tmp_path / "local" / "pt"), 3)
    pdata.create_pretraining_data(inputs, outs, minilm_vocab, max_seq_length=SEQ, max_predictions_per_seq=PRED,
                                  dupe_factor=1, random_seed=5, block_tokens=4000, num_workers=1, verbose=False)
    local = _multiset(outs)
    assert sum(local.values()) > 100 and _multiset(beam_files) == local


def test_beam_options_need_runner(minilm_vocab, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a sentence here.\nand another one.\n", encoding="utf-8")
    rc, out = _run("--direct_num_workers=2", f"--input_file={src}", f"--output_file={tmp_path}/x.tfrecord",
                   f"--vocab_file={minilm_vocab}")
    assert rc != 0 and "direct_num_workers" in out and "--runner" in out
    assert not os.path.exists(tmp_path / "x.tfrecord")
