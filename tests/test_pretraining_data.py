"""create_pretraining_data on a real corpus, checked against Google's rules and spec.

The corpus is DATA's real English text (news articles + Wikipedia from the
gensim wheel, `fixtures.datasets.pretraining_corpus_file`), the vocab the real
MiniLM (BERT uncased) vocab; tokenization is checked against Hugging Face.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from fixtures import datasets
from bert_tf.pretraining import data as pdata

MAX_SEQ = 128
MAX_PRED = 20

# Google's run_pretraining.py input_fn spec, written out independently of ours.
GOOGLE_SPEC = {
    "input_ids": tf.io.FixedLenFeature([MAX_SEQ], tf.int64),
    "input_mask": tf.io.FixedLenFeature([MAX_SEQ], tf.int64),
    "segment_ids": tf.io.FixedLenFeature([MAX_SEQ], tf.int64),
    "masked_lm_positions": tf.io.FixedLenFeature([MAX_PRED], tf.int64),
    "masked_lm_ids": tf.io.FixedLenFeature([MAX_PRED], tf.int64),
    "masked_lm_weights": tf.io.FixedLenFeature([MAX_PRED], tf.float32),
    "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
}


def _read(paths):
    out = {k: [] for k in GOOGLE_SPEC}
    for rec in tf.data.TFRecordDataset(paths).map(
            lambda r: tf.io.parse_single_example(r, GOOGLE_SPEC)).batch(4096):
        for k in out:
            out[k].append(rec[k].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def corpus():
    return datasets.pretraining_corpus_file()


@pytest.fixture(scope="module")
def made(corpus, minilm_vocab, tmp_path_factory):
    d = tmp_path_factory.mktemp("pt")
    out = str(d / "rec.tfrecord")
    stats = pdata.create_pretraining_data(
        [corpus], [out], minilm_vocab, max_seq_length=MAX_SEQ, max_predictions_per_seq=MAX_PRED,
        dupe_factor=2, random_seed=7, verbose=False)
    return stats, _read([out]), out


@pytest.fixture(scope="module")
def vocab(minilm_vocab):
    from bert_tf import load_vocab

    return load_vocab(minilm_vocab)


def test_records_parse_with_googles_spec_and_types(made):
    stats, rec, path = made
    assert stats["instances"] == len(rec["input_ids"]) > 5000
    ex = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset([path]))).numpy())
    kinds = {k: v.WhichOneof("kind") for k, v in ex.features.feature.items()}
    assert kinds == {k: ("float_list" if k == "masked_lm_weights" else "int64_list") for k in GOOGLE_SPEC}
    n = rec["input_mask"].sum(1)
    # input_mask is a prefix of ones; ids/segments are zero-padded after it
    pos = np.arange(MAX_SEQ)[None]
    assert ((rec["input_mask"] == 1) == (pos < n[:, None])).all()
    assert (rec["input_ids"][pos >= n[:, None]] == 0).all()
    assert (rec["segment_ids"][pos >= n[:, None]] == 0).all()
    assert set(np.unique(rec["next_sentence_labels"])) == {0, 1}


def test_packing_and_masking_rules(made, vocab):
    _, rec, _ = made
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    ids, seg, w = rec["input_ids"], rec["segment_ids"], rec["masked_lm_weights"]
    pos, lab = rec["masked_lm_positions"], rec["masked_lm_ids"]
    n = rec["input_mask"].sum(1)
    k = (w > 0).sum(1)
    # Google: num_to_predict = min(max_pred, max(1, round(n * 0.15))), Python's round
    want = np.array([min(MAX_PRED, max(1, int(round(x * 0.15)))) for x in n])
    np.testing.assert_array_equal(k, want)
    for i in range(len(ids)):
        real = ids[i, :n[i]].copy()
        p = pos[i, :k[i]]
        assert (np.diff(p) > 0).all(), "positions sorted"
        assert (pos[i, k[i]:] == 0).all() and (lab[i, k[i]:] == 0).all() and (w[i, k[i]:] == 0).all()
        orig = real.copy()
        orig[p] = lab[i, :k[i]]
        # [CLS] a [SEP] b [SEP], segment 0 through the first [SEP]
        seps = np.flatnonzero(orig == sep_id)
        assert orig[0] == cls_id and len(seps) == 2 and seps[1] == n[i] - 1
        assert (seg[i, :seps[0] + 1] == 0).all() and (seg[i, seps[0] + 1:n[i]] == 1).all()
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2, "A and B non-empty"
        assert 0 not in p and not set(p) & set(seps.tolist()), "never mask [CLS]/[SEP]"


def test_sampling_statistics_on_real_corpus(made, vocab):
    stats, rec, _ = made
    mask_id = vocab.index("[MASK]")
    # next sentence: Google takes a random B for half of the multi-sentence chunks
    # and always for one-sentence chunks
    labels = rec["next_sentence_labels"][:, 0]
    assert labels.sum() == stats["random_next"]
    free = len(labels) - stats["forced_random_next"]
    frac = (labels.sum() - stats["forced_random_next"]) / free
    assert abs(frac - 0.5) < 3 * np.sqrt(0.25 / free) + 0.005, frac
    assert 0.45 < labels.mean() < 0.65
    # ~15% of tokens predicted (the 20 cap is above 0.15 * 128)
    w = rec["masked_lm_weights"] > 0
    masked_frac = w.sum() / rec["input_mask"].sum()
    assert abs(masked_frac - 0.15) < 0.005, masked_frac
    # 80 / 10 / 10 at the predicted positions
    at = np.take_along_axis(rec["input_ids"], rec["masked_lm_positions"], 1)[w]
    lab = rec["masked_lm_ids"][w]
    n = len(at)
    is_mask = (at == mask_id).mean()
    kept = (at == lab).mean()
    rand = ((at != mask_id) & (at != lab)).mean()
    tol = 4 * np.sqrt(0.1 * 0.9 / n)
    assert abs(is_mask - 0.8) < 4 * np.sqrt(0.16 / n), is_mask
    assert abs(kept - 0.1) < tol + 1e-3 and abs(rand - 0.1) < tol + 1e-3, (kept, rand)
    # random replacements are spread over the whole vocab
    assert np.unique(at[(at != mask_id) & (at != lab)]).size > 0.5 * (n * 0.1)
    # most sequences are filled; short_seq_prob gives some short ones
    L = rec["input_mask"].sum(1)
    assert (L >= MAX_SEQ - 10).mean() > 0.5 and (L < MAX_SEQ // 2).mean() > 0.02


def test_segments_are_real_text_tokenized_like_hugging_face(made, corpus, minilm_dir, vocab):
    """Every A and B is a contiguous run of the HF-tokenized corpus; for label 0, B
    comes after A in the same document, for label 1 from another document."""
    from transformers import BertTokenizerFast

    _, rec, _ = made
    tok = BertTokenizerFast.from_pretrained(minilm_dir)
    docs = [d.split("\n") for d in open(corpus, encoding="utf-8").read().split("\n\n") if d.strip()]
    streams = []
    for d in docs:
        enc = tok(d, add_special_tokens=False)["input_ids"]
        streams.append(np.concatenate([np.asarray(e, np.int32) for e in enc]).tobytes())
    sep_id = vocab.index("[SEP]")

    def find(seg):
        b = np.asarray(seg, np.int32).tobytes()
        hits = []
        for j, s in enumerate(streams):
            at = s.find(b)
            while at != -1 and at % 4:
                at = s.find(b, at + 1)
            if at != -1:
                hits.append((j, at // 4))
        return hits

    rng = np.random.RandomState(0)
    checked = {0: 0, 1: 0}
    for i in rng.choice(len(rec["input_ids"]), 120, replace=False):
        n = rec["input_mask"][i].sum()
        k = int((rec["masked_lm_weights"][i] > 0).sum())
        orig = rec["input_ids"][i, :n].copy()
        orig[rec["masked_lm_positions"][i, :k]] = rec["masked_lm_ids"][i, :k]
        s1, s2 = np.flatnonzero(orig == sep_id)
        a, b = orig[1:s1], orig[s1 + 1:s2]
        ha, hb = find(a), find(b)
        assert ha, f"instance {i}: segment A is not a run of the HF tokenization"
        assert hb, f"instance {i}: segment B is not a run of the HF tokenization"
        label = rec["next_sentence_labels"][i, 0]
        if label == 0:
            assert any(da == db and pb >= pa + len(a) for da, pa in ha for db, pb in hb), i
        else:
            assert any(da != db for da, _ in ha for db, _ in hb), i
        checked[int(label)] += 1
    assert min(checked.values()) > 30


def test_whole_word_masking_masks_every_piece(corpus, minilm_vocab, vocab, tmp_path):
    small = tmp_path / "small.txt"
    text = open(corpus, encoding="utf-8").read()
    small.write_text(text[:300_000].rsplit("\n\n", 1)[0] + "\n", encoding="utf-8")
    out = str(tmp_path / "wwm.tfrecord")
    pdata.create_pretraining_data([str(small)], [out], minilm_vocab, max_seq_length=MAX_SEQ,
                                  max_predictions_per_seq=MAX_PRED, dupe_factor=1,
                                  do_whole_word_mask=True, verbose=False)
    rec = _read([out])
    cont = np.array([t.startswith("##") for t in vocab])
    sep_id = vocab.index("[SEP]")
    words_with_pieces = 0
    for i in range(len(rec["input_ids"])):
        n = rec["input_mask"][i].sum()
        k = int((rec["masked_lm_weights"][i] > 0).sum())
        p = rec["masked_lm_positions"][i, :k]
        orig = rec["input_ids"][i, :n].copy()
        orig[p] = rec["masked_lm_ids"][i, :k]
        assert k <= min(MAX_PRED, max(1, int(round(n * 0.15))))
        chosen = np.zeros(n, bool)
        chosen[p] = True
        for j in range(1, n):
            if cont[orig[j]] and orig[j - 1] != sep_id and orig[j - 1] != vocab.index("[CLS]"):
                # a ## piece is masked exactly when the piece before it is
                assert chosen[j] == chosen[j - 1], (i, j)
                words_with_pieces += chosen[j]
    assert words_with_pieces > 50


def test_deterministic_and_seed_dependent(corpus, minilm_vocab, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text(open(corpus, encoding="utf-8").read()[:60_000].rsplit("\n\n", 1)[0] + "\n")
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        p = str(tmp_path / f"{name}.tfrecord")
        pdata.create_pretraining_data([str(small)], [p], minilm_vocab, max_seq_length=64,
                                      dupe_factor=2, random_seed=seed, verbose=False)
        outs.append(open(p, "rb").read())
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_streaming_blocks_and_non_utf8_lines(corpus, minilm_vocab, tmp_path):
    """Small blocks: the corpus is processed window by window (bounded memory) with
    the same statistics; undecodable lines are skipped and counted."""
    text = open(corpus, encoding="utf-8").read()[:200_000].rsplit("\n\n", 1)[0]
    raw = text.encode("utf-8").replace(b"\n\n", b"\n\xff\xfe broken line\n\n", 3)
    src = tmp_path / "in.txt"
    src.write_bytes(raw + b"\n")
    out = str(tmp_path / "o.tfrecord")
    blocks = []
    real_iter_blocks = pdata.iter_blocks

    def spy(docs, block_tokens):
        for b in real_iter_blocks(docs, block_tokens):
            blocks.append(sum(len(s) for d in b for s in d))
            yield b

    pdata.iter_blocks = spy
    try:
        stats = pdata.create_pretraining_data([str(src)], [out], minilm_vocab, max_seq_length=MAX_SEQ,
                                              dupe_factor=1, block_tokens=8000, verbose=False)
    finally:
        pdata.iter_blocks = real_iter_blocks
    assert stats["skipped_non_utf8_lines"] == 3
    assert len(blocks) >= 4 and max(blocks) < 8000 * 3
    assert sum(blocks) == stats["tokens"]
    rec = _read([out])
    assert len(rec["input_ids"]) == stats["instances"]
    assert 0.45 < rec["next_sentence_labels"].mean() < 0.7


def test_tokenization_equals_preprocessor(minilm_vocab):
    from bert_tf import BertPreprocessor

    lines = datasets.real_sentences(300)
    ours = pdata._BatchTokenizer(minilm_vocab, True)(lines)
    ref = BertPreprocessor(minilm_vocab, lower_case=True).tokenize(tf.constant(lines)).to_list()
    assert [list(x) for x in ours] == ref


def test_task_plan_and_output_names():
    assert pdata.plan_tasks(["a", "b"], ["x", "y", "z", "w"]) == [(["a"], ["x", "z"]), (["b"], ["y", "w"])]
    assert pdata.plan_tasks(["a", "b", "c"], ["x", "y"]) == [(["a", "c"], ["x"]), (["b"], ["y"])]
    assert pdata.output_file_names("/o/p", 3)[2] == "/o/p-00002-of-00003.tfrecord"
    assert pdata.output_file_names("a.tfr, b.tfr") == ["a.tfr", "b.tfr"]
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        pdata.expand_input_files(os.path.join("/nonexistent", "nothing_here*"))


def test_example_encoding_and_framing_equal_tensorflows(tmp_path):
    """The hand-written tf.train.Example bytes parse to the proto TF builds, and the
    TFRecord framing (masked CRC32C) is byte-identical to tf.io.TFRecordWriter's."""
    import random

    rng = random.Random(0)
    enc = pdata.ExampleEncoder(MAX_SEQ, MAX_PRED, 30522)
    for _ in range(300):
        n = rng.randint(5, MAX_SEQ)
        len_a = rng.randint(2, n - 1)
        ids = [rng.randint(0, 30521) for _ in range(n)]
        pos = sorted(rng.sample(range(n), rng.randint(0, min(MAX_PRED, n))))
        lab = [rng.randint(0, 30521) for _ in pos]
        is_random = rng.random() < 0.5
        pad, k = MAX_SEQ - n, len(pos)

        def ints(v):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

        want = tf.train.Example(features=tf.train.Features(feature={
            "input_ids": ints(ids + [0] * pad), "input_mask": ints([1] * n + [0] * pad),
            "segment_ids": ints([0] * len_a + [1] * (n - len_a) + [0] * pad),
            "masked_lm_positions": ints(pos + [0] * (MAX_PRED - k)),
            "masked_lm_ids": ints(lab + [0] * (MAX_PRED - k)),
            "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(
                value=[1.0] * k + [0.0] * (MAX_PRED - k))),
            "next_sentence_labels": ints([int(is_random)])}))
        got = enc.encode(ids, len_a, pos, lab, is_random)
        assert tf.train.Example.FromString(got) == want
        assert len(got) == len(want.SerializeToString())
    records = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000))) for _ in range(30)]
    path = str(tmp_path / "ref.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    frame = pdata.TFRecordFramer()
    assert open(path, "rb").read() == b"".join(frame(r) for r in records)
