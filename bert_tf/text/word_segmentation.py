"""Word segmenters for text without spaces between words (Chinese), for whole-word masking.

Google's `--do_whole_word_mask` groups a word's `##` pieces; in Chinese every character is a word of its own
(BERT's tokenizer puts spaces around CJK ideographs), so that rule masks single characters. Chinese BERT-wwm
instead masks the characters of one *segmenter* word together. Here a segmenter is any function
`str -> list[str]` whose words, concatenated, give back the text (what `jieba.lcut` returns):

* `--word_segmenter=jieba` (pinned in requirements.txt), or
* `--word_segmenter=package.module:function` for your own (pkuseg, LTP, a dictionary matcher, ...).

:func:`segmenter_word_joins` turns the segmenter's words into one flag per wordpiece: True where a piece starts
a new BasicTokenizer word that lies in the same segmenter word as the piece before it, and that segmenter word
has a CJK ideograph. Whole-word masking then groups such a piece with the one before, exactly as it groups a
`##` piece; words without CJK ideographs keep Google's `##` rule alone.

>>> segment = lambda text: ["使用", "语言", "模型", " ", "BERT"]
>>> text = "使用语言模型 BERT"
>>> starts = [0, 1, 2, 3, 4, 5, 7, 7]   # the code-point start of each wordpiece's word (B ##ER ##T: one word)
>>> segmenter_word_joins(text, starts, segment)
[False, True, False, True, False, True, False, False]
"""

import importlib
import logging

from bert_tf.text.tokenizer import is_cjk_ideograph


class WordSegmenterError(ValueError):
    """A word segmenter that cannot be loaded, or that does not give back its input."""


def _jieba():
    try:
        import jieba  # noqa: PLC0415  (optional dependency, loaded only when named)
    except ImportError:
        raise WordSegmenterError("--word_segmenter=jieba needs the jieba package: pip install jieba==0.42.1 "
                                 "(pinned in requirements.txt)") from None
    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading messages would go to every log
    return jieba.lcut


BUILTIN_SEGMENTERS = {"jieba": _jieba}


def load_word_segmenter(spec):
    """`"jieba"` or `"package.module:function"` -> a function `str -> list[str]`."""
    if spec in BUILTIN_SEGMENTERS:
        return BUILTIN_SEGMENTERS[spec]()
    module_name, sep, function_name = str(spec).partition(":")
    if not sep or not module_name or not function_name:
        raise WordSegmenterError(f"--word_segmenter={spec!r}: give one of {', '.join(BUILTIN_SEGMENTERS)} or "
                                 "'package.module:function' (a function str -> list of words)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise WordSegmenterError(f"--word_segmenter={spec!r}: cannot import {module_name!r} ({e})") from None
    if not callable(getattr(module, function_name, None)):
        raise WordSegmenterError(f"--word_segmenter={spec!r}: {module_name} has no function {function_name!r}")
    return getattr(module, function_name)


def word_spans(text, segment):
    """The code-point spans `[start, end)` of `segment(text)`'s words; checks that they give back `text`."""
    spans, pos = [], 0
    for word in segment(text):
        if text.startswith(word, pos):
            spans.append((pos, pos + len(word)))
            pos += len(word)
        elif word.strip():  # segmenters may drop or normalise whitespace; anything else is an error
            found = text.find(word, pos)
            if found < 0 or text[pos:found].strip():
                raise WordSegmenterError(f"the word segmenter returned {word!r}, which is not the text at "
                                         f"character {pos} of {text[:80]!r}")
            spans.append((found, found + len(word)))
            pos = found + len(word)
    return spans


def segmenter_word_joins(text, piece_word_starts, segment):
    """One flag per wordpiece: True where the piece joins the previous piece's segmenter word (see the module
    docstring). `piece_word_starts[i]` is the code-point offset in `text` of the BasicTokenizer word of piece
    `i` (`BertTokenizer.tokenize_with_word_offsets`)."""
    word_of_char = [-1] * (len(text) + 1)
    has_cjk = []
    for w, (start, end) in enumerate(word_spans(text, segment)):
        word_of_char[start:end] = [w] * (end - start)
        has_cjk.append(any(is_cjk_ideograph(c) for c in text[start:end]))
    joins = []
    for i, start in enumerate(piece_word_starts):
        start = int(start)
        if i == 0 or start == int(piece_word_starts[i - 1]):  # first piece, or a ## piece of the same word
            joins.append(False)
            continue
        w = word_of_char[start]
        joins.append(w >= 0 and has_cjk[w] and w == word_of_char[int(piece_word_starts[i - 1])])
    return joins
