"""The words `BertTokenizer.normalize_text` makes of text, computed in plain Python (no TensorFlow).

The same steps in the same order as the tokenizer's string ops (Google's BasicTokenizer rules): drop Cc
characters except TAB/LF/CR, Cf characters and U+FFFD; TAB/LF/CR, Zs, U+2028 and U+2029 become spaces; when
uncased, lower-case (full case mapping, as `tf.strings.lower(encoding="utf-8")`), NFD, drop Mn marks; every CJK
ideograph and punctuation character (ASCII 33-47, 58-64, 91-96, 123-126, Unicode P*) is a word of its own.
Character classes come from this interpreter's `unicodedata`, as the tokenizer's regexes do; they are looked
up only for the characters a text holds. tests/test_vocab_equivalence.py checks the words against the tokenizer on
every code point and on real text (English prose, Chinese reviews, accents, Greek, control characters).

Used to count words for a vocabulary without importing TensorFlow (seconds of start-up).
"""

import collections
import re
import unicodedata


# Google's rules as constants, written here once: `bert_tf.text.tokenizer` imports them from this module (which,
# unlike it, imports no TensorFlow). CJK ideograph blocks (words of their own), ASCII symbols treated as
# punctuation, the word length limit in characters.
MAX_CHARS_PER_WORD = 200
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
ASCII_PUNCT_RANGES = ((33, 47), (58, 64), (91, 96), (123, 126))
# The tokenizer puts this character (the next code point if it is a vocabulary token) in place of a word over
# its limit, and counts every word equal to it as too long (also one that was this character in the text):
# counted the same way here.
LONG_WORD_PLACEHOLDER = "\ue000"
# Code points that this interpreter's Unicode data (Python 3.11: Unicode 14) and the ICU of TensorFlow's string
# ops (a later Unicode) lower-case, case-context or decompose differently, found by comparing every code point
# in context with the tokenizer (tests/test_vocab_equivalence.py re-checks them). Uncased text holding one of them
# must be counted by the tokenizer itself; cased text has no such difference.
UNCASED_DIFFERENCES = (
    (0x0888, 0x0888), (0x0898, 0x089F), (0x08C9, 0x08D2), (0x0C3C, 0x0C3C), (0x1734, 0x1734), (0x180F, 0x180F),
    (0x1AC1, 0x1ACE), (0x1DFA, 0x1DFA), (0x2C2F, 0x2C2F), (0x2C5F, 0x2C5F), (0xA7C0, 0xA7C1), (0xA7D0, 0xA7D1),
    (0xA7D3, 0xA7D3), (0xA7D5, 0xA7D9), (0xA7F2, 0xA7F4), (0xFBC2, 0xFBC2), (0x10570, 0x1057A),
    (0x1057C, 0x1058A), (0x1058C, 0x10592), (0x10594, 0x10595), (0x10597, 0x105A1), (0x105A3, 0x105B1),
    (0x105B3, 0x105B9), (0x105BB, 0x105BC), (0x105C9, 0x105C9), (0x105E4, 0x105E4), (0x10780, 0x10785),
    (0x10787, 0x107B0), (0x107B2, 0x107BA), (0x10F82, 0x10F85), (0x11070, 0x11070), (0x11073, 0x11074),
    (0x110C2, 0x110C2), (0x11383, 0x11383), (0x11385, 0x11385), (0x1138E, 0x1138E), (0x11391, 0x11391),
    (0x113C5, 0x113C5), (0x113C7, 0x113C8), (0x16121, 0x16128), (0x16D68, 0x16D6A), (0x1AFF0, 0x1AFF3),
    (0x1AFF5, 0x1AFFB), (0x1AFFD, 0x1AFFE), (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46), (0x1DF00, 0x1DF09),
    (0x1DF0B, 0x1DF1E), (0x1E2AE, 0x1E2AE),
)
_UNCASED_DIFFERENT_CHARS = frozenset(chr(cp) for lo, hi in UNCASED_DIFFERENCES for cp in range(lo, hi + 1))
_KEPT_CONTROLS = frozenset("\t\n\r")
_EXTRA_SPACES = frozenset("\u2028\u2029")


def _is_removed(c):
    category = unicodedata.category(c)
    return (category == "Cc" and c not in _KEPT_CONTROLS) or category == "Cf" or c == "\ufffd"


def _is_space(c):
    return c in _KEPT_CONTROLS or c in _EXTRA_SPACES or unicodedata.category(c) == "Zs"


def _is_own_word(c):
    """CJK ideographs and punctuation (ASCII symbols included, as in Google's rules)."""
    cp = ord(c)
    return (any(lo <= cp <= hi for lo, hi in CJK_RANGES + ASCII_PUNCT_RANGES)
            or unicodedata.category(c).startswith("P"))


def _class_body(chars):
    return "".join(re.escape(c) for c in sorted(chars))


class _CharClass:
    """A character predicate, remembered for the characters seen so far."""

    def __init__(self, predicate):
        self._predicate = predicate
        self._seen = {}

    def members(self, chars):
        new = [c for c in chars if c not in self._seen]
        for c in new:
            self._seen[c] = self._predicate(c)
        return {c for c in chars if self._seen[c]}


# Up to this many distinct characters are replaced by one str.replace each (a scan per character, ~1 ms a MB of
# English prose); more by one regex pass (~15 ms a MB).
MAX_REPLACED_ONE_BY_ONE = 8


def _replaced(text, chars, new):
    """`text` with every character of `chars` (none of them `new`) replaced by `new`."""
    if len(chars) > MAX_REPLACED_ONE_BY_ONE:
        return re.sub(f"[{_class_body(chars)}]", new, text)
    for c in chars:
        text = text.replace(c, new)
    return text


class WordSplitter:
    """Text -> the words `BertTokenizer(..., lower_case=lower_case).normalize_text` separates by spaces."""

    def __init__(self, lower_case):
        self.lower_case = bool(lower_case)
        self._removed = _CharClass(_is_removed)
        self._space = _CharClass(_is_space)
        self._mark = _CharClass(lambda c: unicodedata.category(c) == "Mn")
        self._own_word = _CharClass(_is_own_word)

    def differing_chars(self, chars):
        """The characters of `chars` this class cannot split as the tokenizer does (see UNCASED_DIFFERENCES)."""
        return _UNCASED_DIFFERENT_CHARS.intersection(chars) if self.lower_case else set()

    def normalize(self, text):
        """`text` with the tokenizer's character rules applied (before the split into words)."""
        return self._normalized(text, set(text))[0]

    def words(self, text, chars=None):
        """The words of `text` (lines joined by newlines may be given at once: a line break separates words);
        `chars`: the set of its characters, if known."""
        text, chars = self._normalized(text, set(text) if chars is None else chars)
        own = _class_body(self._own_word.members(chars))
        # only spaces are left between words: every other separator became one
        return re.findall(f"[{own}]|[^ {own}]+" if own else "[^ ]+", text)

    def _normalized(self, text, chars):
        """(normalized text, its characters): the character set is carried along rather than re-read (each
        `set(text)` is a pass over the text), except after lower-casing and NFD."""
        removed = self._removed.members(chars)
        text, chars = _replaced(text, removed, ""), chars - removed
        spaces = self._space.members(chars) - {" "}
        if spaces:
            text, chars = _replaced(text, spaces, " "), (chars - spaces) | {" "}
        if self.lower_case:
            text = unicodedata.normalize("NFD", text.lower())
            chars = set(text)
            marks = self._mark.members(chars)
            text, chars = _replaced(text, marks, ""), chars - marks
        return text, chars


def count_words(splitter, text, max_word_chars=MAX_CHARS_PER_WORD, chars=None):
    """(Counter word -> n of the words of `text` up to `max_word_chars` characters, number of longer words);
    `chars`: the set of its characters, if known."""
    counts = collections.Counter(splitter.words(text, chars))
    long_words = [w for w in counts if len(w) > max_word_chars or w == LONG_WORD_PLACEHOLDER]
    too_long = sum(counts.pop(w) for w in long_words)
    return counts, too_long
