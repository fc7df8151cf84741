"""CoNLL token-tagging data: files (reading, writing predictions), tag sets and schemes.

Files: one token per line, whitespace-separated columns (spaces or tabs), the
token in the first column and the tag in the last; a blank line between
sentences; `-DOCSTART-` lines are document separators (skipped). A line with
fewer than two columns or a tag that is neither `O` nor `<B|I|E|S>-<type>` is
malformed: reported with file:line and skipped (counted), or an error with
`strict=True`.

Tag schemes: IOB1 (`I-` everywhere, `B-` only between two adjacent entities of
one type), IOB2/BIO (every entity starts with `B-`) and BIOES (`S-` single,
`E-` last). `detect_tag_scheme` tells them apart.

Example:

>>> from bert_tf.tasks.tagging import data
>>> data.detect_tag_scheme([["B-PER", "I-PER", "O", "B-LOC"]])
'IOB2'
>>> data.label_list([["B-PER", "I-PER", "O", "B-LOC"]])
['O', 'B-LOC', 'B-PER', 'I-PER']
"""

import dataclasses
import re
import sys
from bert_tf import atomic

_TAG = re.compile(r"^(O|[BIES]-\S+)$")
_MAX_REPORTED = 20


class MalformedLineError(ValueError):
    """A malformed CoNLL line under `strict=True`."""


@dataclasses.dataclass
class Sentence:
    """One sentence: its words, their tags (None for unlabelled files) and where it starts (file:line)."""

    words: list
    tags: list
    source: str = ""


def split_tag(tag):
    """`B-PER` -> ("B", "PER"); `O` -> ("O", "")."""
    if tag == "O" or "-" not in tag:
        return tag, ""
    prefix, kind = tag.split("-", 1)
    return prefix, kind


def read_conll(path, strict=False, labelled=True):
    """Sentences of a CoNLL file (see the module docstring). Prints a summary line with the counts."""
    sentences, words, tags, start, skipped = [], [], [], None, 0

    def flush():
        if words:
            sentences.append(Sentence(list(words), list(tags) if labelled else None, f"{path}:{start}"))
        words.clear()
        tags.clear()

    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                flush()
                continue
            problem = None
            if labelled and len(fields) < 2:
                problem = "needs a token and a tag"
            elif labelled and not _TAG.match(fields[-1]):
                problem = f"tag {fields[-1]!r} is not O or B-/I-/E-/S-<type>"
            if problem:
                message = f"{path}:{lineno}: malformed line ({problem})"
                if strict:
                    raise MalformedLineError(message + "; strict mode")
                skipped += 1
                if skipped <= _MAX_REPORTED:
                    print(f"WARNING: {message}; skipped", file=sys.stderr, flush=True)
                continue
            if not words:
                start = lineno
            words.append(fields[0])
            tags.append(fields[-1] if labelled else None)
    flush()
    print(f"conll: read {len(sentences)} sentences ({sum(len(s.words) for s in sentences)} tokens) from {path}, "
          f"skipped {skipped} malformed lines", flush=True)
    return sentences


def detect_tag_scheme(tag_sequences):
    """"BIOES" if any S-/E- tag, "IOB1" if an entity starts with I-, else "IOB2"."""
    prefixes = {t[:2] for seq in tag_sequences for t in seq}
    if prefixes & {"S-", "E-"}:
        return "BIOES"
    for seq in tag_sequences:
        prev_prefix, prev_type = "O", ""
        for tag in seq:
            prefix, kind = split_tag(tag)
            if prefix == "I" and (prev_prefix == "O" or prev_type != kind):
                return "IOB1"
            prev_prefix, prev_type = prefix, kind
    return "IOB2"


def label_list(tag_sequences):
    """The label set in id order: `O` first, then the other tags sorted by type, then prefix."""
    tags = {t for seq in tag_sequences for t in seq}
    order = {"B": 0, "I": 1, "E": 2, "S": 3}
    rest = sorted(tags - {"O"}, key=lambda t: (split_tag(t)[1], order.get(split_tag(t)[0], 9), t))
    return ["O"] + rest


def write_predictions(path, sentences, predicted_tags):
    """CoNLL predictions: `token gold prediction` per line (`token prediction` when unlabelled)."""
    lines = []
    for sentence, tags in zip(sentences, predicted_tags):
        gold = sentence.tags or [None] * len(sentence.words)
        for word, g, p in zip(sentence.words, gold, tags):
            lines.append(f"{word} {g} {p}" if g is not None else f"{word} {p}")
        lines.append("")
    return atomic.write_file(path, "\n".join(lines) + ("\n" if lines else ""))
