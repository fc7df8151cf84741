"""Vocabulary learning (bert_tf.text.vocab_learning, vocab_beam, trainers/build_vocab.py) on real prose."""

import collections
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bert_tf.pretraining import data as pdata
from bert_tf.text import vocab_beam, vocab_learning, vocab_threshold, word_split
from bert_tf.text.preprocessor import BertPreprocessor
from bert_tf.text.tokenizer import BertTokenizer
from bert_tf.text.wordpiece_learner import WordPieceLearner
from bert_tf.training.settings import ConfigError
from fixtures import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "trainers", "build_vocab.py")
TRAIN_BYTES = 200_000
VOCAB_SIZE = 2000
CHINESE = ["我们喜欢自然语言处理。", "今天天气很好，我们去公园。", "语言模型学习词语。"]


def _corpus_lines():
    """Real news + Wikipedia prose: the first ~200 KB for learning, the next lines held out."""
    with open(datasets.pretraining_corpus_file(), encoding="utf-8") as f:
        text = f.read(2 * TRAIN_BYTES)
    cut = text.index("\n", TRAIN_BYTES)
    return text[:cut + 1], [line for line in text[cut + 1:].split("\n")[:-1] if line.strip()]


def _config(tmp_path, name, text, **kwargs):
    path = tmp_path / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    kwargs.setdefault("vocab_size", VOCAB_SIZE)
    return vocab_learning.VocabConfig(input_file=str(path), output_file=str(tmp_path / f"{name}.vocab.txt"),
                                      num_workers=1, **kwargs)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """(uncased vocab path, tokens, held-out lines, learning log)."""
    tmp = tmp_path_factory.mktemp("vocab")
    train, held_out = _corpus_lines()
    config = _config(tmp, "uncased", train)
    log = []
    vocab_learning.build_vocab(config, log=log.append)
    tokens = open(config.output_file, encoding="utf-8").read().split("\n")[:-1]
    return config.output_file, tokens, held_out, log


def test_reserved_tokens_at_googles_ids(learned):
    _, tokens, _, _ = learned
    assert tokens[0] == "[PAD]"
    assert tokens[1:100] == [f"[unused{i}]" for i in range(99)]
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(set(tokens)) == len(tokens)
    assert len(tokens) == VOCAB_SIZE


def test_uncased_vocab_is_lower_case_pieces_of_the_corpus(learned):
    _, tokens, _, _ = learned
    learned_pieces = tokens[104:]
    assert not [t for t in learned_pieces if t != t.lower()]
    assert {"the", "of", "and", "##s"} <= set(learned_pieces)
    # every kept letter and digit also continues a word; punctuation is split off into words of its own, so
    # it has no ## piece and no learned piece joins it to a letter
    chars = [t for t in learned_pieces if len(t) == 1]
    assert {"##" + c for c in chars if c.isalnum()} <= set(learned_pieces)
    assert not [t for t in learned_pieces if re.search(r"[.,;:()\"']", t) and t not in chars]


def test_loads_in_the_tokenizer_and_no_unk_on_held_out_text(learned):
    path, tokens, held_out, _ = learned
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789.,:'\"()-"
    assert set(alphabet) <= set(tokens) and {"##" + c for c in alphabet if c.isalnum()} <= set(tokens)
    ordinary = [line for line in held_out if set(line.lower()) <= set(alphabet + " ")]
    assert len(ordinary) > 100
    pre = BertPreprocessor(path, lower_case=True)
    ids = pre.tokenizer(tf.constant(ordinary)).flat_values.numpy()
    assert ids.size > 3 * len(ordinary)
    assert not np.any(ids == tokens.index("[UNK]"))
    pieces_per_word = ids.size / sum(len(line.split()) for line in ordinary)
    assert pieces_per_word < 2.0  # a 2000-piece vocabulary still keeps most words whole


def test_create_pretraining_data_takes_the_vocab_unchanged(learned, tmp_path):
    path, tokens, held_out, _ = learned
    special = BertPreprocessor(path).tokenizer.special_tokens
    assert (special["vocab_size"], special["pad_id"], special["unk_id"], special["cls_id"], special["sep_id"],
            special["mask_id"]) == (len(tokens), 0, 100, 101, 102, 103)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(held_out[:40]) + "\n\n" + "\n".join(held_out[40:80]) + "\n", encoding="utf-8")
    out = str(tmp_path / "records.tfrecord")
    stats = pdata.create_pretraining_data([str(corpus)], [out], path, dupe_factor=1, num_workers=1, verbose=False)
    assert stats["instances"] > 0
    record = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(out))).numpy())
    ids = list(record.features.feature["input_ids"].int64_list.value)
    assert ids[0] == 101 and 102 in ids


def test_cased_vocab_keeps_case_and_accents(tmp_path):
    train, _ = _corpus_lines()
    accented = "Café Zürich naïve Café Zürich naïve\n" * 5
    for lower, name in ((False, "cased"), (True, "uncased")):
        config = _config(tmp_path, name, train[:60_000] + accented, vocab_size=800, do_lower_case=lower)
        vocab_learning.build_vocab(config, log=lambda m: None)
        tokens = set(open(config.output_file, encoding="utf-8").read().split("\n"))
        if lower:
            assert "é" not in tokens and "Z" not in tokens and "e" in tokens
        else:
            assert {"The", "é", "ü", "Z"} <= tokens


def test_cjk_characters_are_single_words(tmp_path):
    config = _config(tmp_path, "zh", "\n".join(CHINESE * 20 + ["BERT 模型 model models"] * 10) + "\n",
                     vocab_size=300, num_unused=0)
    log = []
    learned, _ = vocab_learning.build_vocab(config, log=log.append)
    cjk = [t for t in learned.tokens if re.search(r"[\u4e00-\u9fff]", t)]
    assert {t for t in cjk if not t.startswith("##")} == set("".join(CHINESE) + "模型") - set("。，")
    assert all(len(t) == 1 for t in cjk)  # never two ideographs in one piece, never a ## piece (no word uses it)
    assert learned.tokens[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = BertTokenizer(config.output_file)
    ids = tok(tf.constant(["我们喜欢语言模型"])).flat_values.numpy().tolist()
    assert [learned.tokens[i] for i in ids] == list("我们喜欢语言模型")


@pytest.mark.parametrize("lower_case", [True, False])
def test_threshold_search_keeps_its_contract_in_at_most_two_rounds(lower_case):
    """On real prose, for small and large vocabularies: the threshold found gives a vocabulary within the slack
    over vocab_size, or the next threshold up falls short of vocab_size; each round runs a pair of thresholds."""
    train, _ = _corpus_lines()
    counts = collections.Counter(word_split.WordSplitter(lower_case).words(train))
    inner = {c for w in counts for c in w[1:]}
    learner = WordPieceLearner(sorted(counts.items()), vocab_learning.reserved_tokens(99), max_unique_chars=10**6)
    for vocab_size in (500, 1200, 2500):
        upper = int(vocab_size * (1 + vocab_learning.SLACK_RATIO))
        log = []
        tokens, threshold, too_small = vocab_threshold.search_threshold(
            learner, vocab_size, upper, 2, max(counts.values()), inner, log=log.append)
        size = lambda t: len(vocab_threshold.learn_at(learner, t, inner))  # noqa: E731
        assert not too_small and len(tokens) == size(threshold) >= vocab_size, (vocab_size, log)
        assert len(tokens) <= upper or size(threshold + 1) < vocab_size, (vocab_size, threshold, log)
        runs = [int(m.split()[4].rstrip(":")) for m in log]
        assert 1 <= len(runs) <= 4 and len(set(runs)) == len(runs), log
    # A vocabulary the corpus cannot fill: one run at the lowest threshold says so.
    log = []
    tokens, threshold, too_small = vocab_threshold.search_threshold(
        learner, 10**6, 10**6, 2, max(counts.values()), inner, log=log.append)
    assert too_small and threshold == 2 and len(log) == 1


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """A glob of two real-prose files (one with Chinese lines) and an empty one."""
    tmp = tmp_path_factory.mktemp("two_files")
    train, _ = _corpus_lines()
    half = train.index("\n", len(train) // 4)
    (tmp / "a.txt").write_text(train[:half + 1], encoding="utf-8")
    (tmp / "b.txt").write_text(train[half + 1:len(train) // 2] + "\n" + "\n".join(CHINESE) + "\n",
                               encoding="utf-8")
    (tmp / "empty.txt").write_text("", encoding="utf-8")
    return str(tmp / "*.txt")


def test_local_and_beam_count_the_same_and_learn_the_same(two_files, tmp_path):
    files = vocab_learning.expand_input_files(two_files)
    local, local_stats = vocab_learning.count_files(files, True, num_workers=1, log=lambda m: None)
    beam, beam_stats = vocab_beam.count_words(two_files, str(tmp_path / "counts"), True, 200,
                                              ["--runner=FnApiRunner"], log=lambda m: None)
    assert local == beam
    assert local_stats == beam_stats and local_stats["files"] == 3 and local_stats["empty_files"] == 1
    config = vocab_learning.VocabConfig(input_file=two_files, output_file=str(tmp_path / "v.txt"), vocab_size=1000)
    assert (vocab_learning.learn_vocab(local, config, log=lambda m: None).tokens
            == vocab_learning.learn_vocab(beam, config, log=lambda m: None).tokens)


def test_program_counting_in_processes_learns_the_same_vocab(two_files, tmp_path):
    out = tmp_path / "vocab.txt"
    run = subprocess.run([sys.executable, PROGRAM, f"--input_file={two_files}", f"--output_file={out}", "--vocab_size=1000",
                          "--num_workers=2"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(3/3 files;" in run.stderr and "no words (empty file)" in run.stderr
    assert "vocabulary: 1000 tokens" in run.stderr and f"wrote {out}" in run.stderr
    files = vocab_learning.expand_input_files(two_files)
    counts, _ = vocab_learning.count_files(files, True, num_workers=1, log=lambda m: None)
    config = vocab_learning.VocabConfig(input_file=two_files, output_file=str(out), vocab_size=1000)
    expected = vocab_learning.learn_vocab(counts, config, log=lambda m: None).tokens
    assert out.read_text(encoding="utf-8").split("\n")[:-1] == expected


def _with_bad_lines(text, every):
    """UTF-8 `text` as bytes, with a Latin-1 line (not UTF-8) after every `every`-th line."""
    lines = text.encode("utf-8").split(b"\n")
    return b"\n".join(line + (b"\ncaf\xe9 latin-1" if i % every == every - 1 else b"") for i, line in enumerate(lines))


def test_program_imports_no_tensorflow_and_counts_byte_ranges_as_one_process(tmp_path):
    """TensorFlow costs seconds of start-up and local counting needs none of it. With two workers the one file
    is cut into byte ranges; counts, stats and skipped lines (by file:line) are those of one process."""
    with open(datasets.pretraining_corpus_file(), encoding="utf-8") as f:
        text = f.read(700_000)
    corpus, out = tmp_path / "corpus.txt", tmp_path / "vocab.txt"
    corpus.write_bytes(_with_bad_lines(text[:text.rindex("\n") + 1], every=700))
    run = subprocess.run([sys.executable, "-X", "importtime", PROGRAM, f"--input_file={corpus}",
                          f"--output_file={out}", "--vocab_size=1000", "--num_workers=2"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = re.findall(r"^import time: .*\| +(\S+)$", run.stderr, re.MULTILINE)
    assert "absl.app" in imported and "bert_tf.text.vocab_learning" in imported
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "tensorflow_text", "keras")]
    assert re.search(r"in 2 processes, [2-9] byte ranges", run.stderr)
    log = []
    counts, stats = vocab_learning.count_files([str(corpus)], True, num_workers=1, log=log.append)
    bad = [m for m in log if "not UTF-8" in m]
    assert len(bad) > 5 and bad == [m for m in run.stderr.split("\n") if "not UTF-8" in m]
    assert f"counted {corpus}: {stats['lines']} lines, {stats['words']} words (1/1 files" in run.stderr
    config = vocab_learning.VocabConfig(input_file=str(corpus), output_file=str(out), vocab_size=1000)
    expected = vocab_learning.learn_vocab(counts, config, log=lambda m: None).tokens
    assert out.read_text(encoding="utf-8").split("\n")[:-1] == expected


def test_byte_ranges_cut_anywhere_count_as_the_whole_file(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes(_with_bad_lines("one two\n\nthree, four\nfive\n\nsix seven eight\nnine\n", every=2))
    size = path.stat().st_size
    whole_log, cut_log = [], []
    whole = vocab_learning.count_file(str(path), True, 200, log=whole_log.append)
    for a in range(size + 1):
        for b in range(a, size + 1, 3):
            bounds = [(0, a), (a, b), (b, None)]
            parts = [vocab_learning.count_range(str(path), True, 200, start, end) for start, end in bounds]
            cut_log.clear()
            stats = vocab_learning.report_file(str(path), [report for _, report in parts], log=cut_log.append)
            assert (sum((c for c, _ in parts), collections.Counter()), stats) == whole, (a, b)
            assert cut_log == whole_log, (a, b)
    assert whole_log == [f"{path}:{n}: skipped a line that is not UTF-8 (invalid continuation byte at byte 3)"
                         for n in (3, 6, 9, 12)]


def test_non_utf8_lines_are_skipped_and_reported_by_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("good words here\n".encode() + b"caf\xe9 latin-1\n" + "more good words\n".encode())
    log = []
    counts, stats = vocab_learning.count_file(str(path), True, 200, log=log.append)
    assert stats["skipped_non_utf8_lines"] == 1 and stats["lines"] == 2
    assert any(f"{path}:2:" in m and "not UTF-8" in m for m in log)
    assert "latin" not in counts and counts["good"] == 2


def test_long_words_are_not_counted(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("short " + "x" * 30 + " word\n", encoding="utf-8")
    counts, stats = vocab_learning.count_file(str(path), True, 20, log=lambda m: None)
    assert set(counts) == {"short", "word"} and stats["long_words"] == 1


def test_bad_corpora_and_settings_give_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    config = vocab_learning.VocabConfig(input_file=str(tmp_path / "empty.txt"), output_file=str(tmp_path / "v"))
    with pytest.raises(ValueError, match="no words to learn from"):
        vocab_learning.build_vocab(config, log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        vocab_learning.expand_input_files(str(tmp_path / "nothing-here*.txt"))
    with pytest.raises(ConfigError, match="max_word_chars"):
        vocab_learning.VocabConfig(input_file="x", output_file="y", max_word_chars=300).check()
    with pytest.raises(ConfigError, match="vocab_size"):
        vocab_learning.VocabConfig(input_file="x", output_file="y", vocab_size=50).check()
    chars = _config(tmp_path, "chars", "abcdefghij klmnopqrst uvwxyz0123 456789\n" * 3, vocab_size=160)
    with pytest.raises(ValueError, match="cannot hold .* 36 characters"):
        vocab_learning.build_vocab(chars, log=lambda m: None)
    assert not os.path.exists(chars.output_file)


def test_too_small_corpus_gives_a_reported_smaller_vocab(tmp_path):
    config = _config(tmp_path, "tiny", "the cat sat on the mat\nthe dog sat on the log\n" * 3, vocab_size=5000)
    log = []
    learned, _ = vocab_learning.build_vocab(config, log=log.append)
    assert learned.too_small and len(learned.tokens) < 200
    assert any("WARNING: the corpus is too small for --vocab_size=5000" in m and f"{len(learned.tokens)} tokens" in m
               for m in log)
    assert len(open(config.output_file).read().split("\n")[:-1]) == len(learned.tokens)
