"""Tokenizer parity of a LiteRT export against the SavedModel preprocessor: per text and per character.

The .tflite tokenizes with tensorflow-text's ``FastBertNormalize`` + ``FastWordpieceTokenize`` (the ops with
LiteRT kernels). The SavedModel preprocessor (`bert_tf.BertPreprocessor`) runs the same ``FastBertTokenizer``
on printable-ASCII rows, so those agree exactly; other rows it normalises with regex string ops by Google's
rules (no LiteRT kernels). Where the two differ:

* compatibility characters: ``FastBertNormalize`` applies NFKC-style compatibility mappings and full case
  folding (``ﬁ`` -> ``fi``, ``²`` -> ``2``, fullwidth ``Ａ`` -> ``a``, ``ß`` -> ``ss``, ``µ`` -> ``μ``, ``①``,
  ``㎏``, Roman numerals, math alphanumerics); Google's uncased rules use ``str.lower()`` + NFD, which keep them;
* control and format characters: Google deletes C1 controls (U+0080-U+009F) and Cf characters (e.g. U+0600
  ARABIC NUMBER SIGN), joining the letters around them; ``FastBertNormalize`` treats several as word breaks;
* a few characters Google keeps or splits as punctuation that the normaliser maps to their ASCII forms.

`token_agreement` measures agreement on real texts; `differing_characters` probes single characters;
`explain` names the reason for each.
"""

import collections
import sys
import unicodedata

import numpy as np
import tensorflow as tf


def _pieces(batch):
    ids, mask = np.asarray(batch["input_word_ids"]), np.asarray(batch["input_mask"])
    return [row[: int(m.sum())].tolist() for row, m in zip(ids, mask)]


def _reference(preprocessor, seq_length):
    return preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=1, seq_length=seq_length)


def token_agreement(preprocessor, litert_tokenize, texts, seq_length, batch_size=256, max_examples=10):
    """Compares packed ids (up to `seq_length`) of the .tflite with the SavedModel preprocessor's.

    Args:
      preprocessor: the model's `bert_tf.BertPreprocessor`.
      litert_tokenize: `texts -> {"input_word_ids", "input_mask", ...}` of the .tflite
        (`bert_tf.tasks.classification.litert.LiteRTClassifier(...).tokenize`).
      texts: real texts.
      seq_length: the .tflite's packed length (its model.json ``max_seq_length``).

    Returns {"texts", "identical", "agreement", "differences": [(text, ours, litert), ...]}.
    """
    ref = _reference(preprocessor, seq_length)
    texts = list(texts)
    same, diffs = 0, []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        ours = _pieces(ref(tf.constant(chunk)))
        theirs = _pieces(litert_tokenize(chunk))
        for text, a, b in zip(chunk, ours, theirs):
            if a == b:
                same += 1
            elif len(diffs) < max_examples:
                diffs.append((text, a, b))
    return {"texts": len(texts), "identical": same, "agreement": same / max(len(texts), 1), "differences": diffs}


def assigned_code_points(start=0x80, stop=None):
    """Assigned, non-surrogate, non-private-use code points (this Python's Unicode tables)."""
    stop = sys.maxunicode + 1 if stop is None else stop
    return [c for c in range(start, stop)
            if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]


def differing_characters(preprocessor, litert_tokenize, code_points=None, batch_size=2048):
    """Single-character probes ``"a{c}b c{c} {c}"`` (inside a word, ending one, alone): the code points
    whose ids differ between the .tflite and the SavedModel preprocessor, as dicts with the pieces."""
    code_points = assigned_code_points() if code_points is None else list(code_points)
    vocab = preprocessor.vocabulary
    ref = _reference(preprocessor, 64)
    out = []
    for i in range(0, len(code_points), batch_size):
        chunk = code_points[i:i + batch_size]
        probes = [f"a{chr(c)}b c{chr(c)} {chr(c)}" for c in chunk]
        for c, a, b in zip(chunk, _pieces(ref(tf.constant(probes))), _pieces(litert_tokenize(probes))):
            if a != b:
                out.append({"code_point": c, "char": chr(c), "name": unicodedata.name(chr(c), ""),
                            "category": unicodedata.category(chr(c)), "reason": explain(chr(c)),
                            "ours": [vocab[t] for t in a[1:-1]], "litert": [vocab[t] for t in b[1:-1]]})
    return out


def explain(char):
    """Why FastBertNormalize treats `char` otherwise than Google's rules (best reading of the Unicode data)."""
    cat = unicodedata.category(char)
    if cat in ("Cc", "Cf"):
        return "control/format character: Google deletes it, FastBertNormalize keeps it or breaks the word"
    if unicodedata.normalize("NFKC", char) != unicodedata.normalize("NFC", char):
        return "compatibility mapping (NFKC): FastBertNormalize folds it, Google's NFD keeps it"
    if char.casefold() != char.lower():
        return "full case folding: FastBertNormalize casefolds, Google lower-cases"
    return "other normalisation table difference (Unicode version or punctuation class)"


def summarize(differences):
    """{"by_reason": {reason: count}, "by_category": {category: count}} of `differing_characters` output."""
    return {"by_reason": dict(collections.Counter(d["reason"] for d in differences).most_common()),
            "by_category": dict(collections.Counter(d["category"] for d in differences).most_common())}


def characters_in(texts):
    """Distinct non-ASCII code points of `texts`, with their counts."""
    return collections.Counter(ord(ch) for t in texts for ch in t if ord(ch) > 0x7F)
