"""Reader of the embedding task's files: scored text pairs and (anchor, positive) text pairs.

`<data_dir>/train.tsv`, `dev.tsv`, `test.tsv`, tab-separated with a header row:

* scored pairs (cosine regression, and every evaluation): ``sentence1  sentence2  score`` (the score column may
  also be called ``label``, as STS-B-style files write it);
* text pairs (multiple-negatives ranking): ``anchor  positive`` (or ``sentence1  sentence2``), no score.

A row with the wrong number of fields, an empty or whitespace-only text (it would embed as ``[CLS] [SEP]`` and
teach or score nothing) or a score that is not a finite number is reported by file:line and skipped; with
`strict` it is an error.
"""

import dataclasses
import math
import os

from absl import logging

SCORE_COLUMNS = ("score", "label")
PAIR_HEADERS = (("anchor", "positive"), ("sentence1", "sentence2"))


@dataclasses.dataclass(frozen=True)
class PairExample:
    """Two texts and, for scored pairs, their gold similarity (None for anchor/positive pairs)."""

    text_a: str
    text_b: str
    score: float | None
    line: int


class MalformedRowError(ValueError):
    """A row of a pairs file that cannot be used (raised with `strict`)."""


def _header_kind(path, header):
    """'scored' or 'pairs' for a header row; an error naming the file otherwise."""
    names = tuple(h.strip().lower() for h in header)
    if len(names) == 3 and names[:2] == ("sentence1", "sentence2") and names[2] in SCORE_COLUMNS:
        return "scored"
    if names in PAIR_HEADERS:
        return "pairs"
    raise ValueError(f"{path}:1: header {list(header)}; expected 'sentence1<TAB>sentence2<TAB>score' (scored "
                     "pairs) or 'anchor<TAB>positive' (text pairs)")


def _row_problem(fields, width):
    if len(fields) != width:
        return f"{len(fields)} fields, expected {width}"
    for name, text in zip(("first", "second"), fields[:2]):
        if not text.strip():
            return f"the {name} text is empty or whitespace only"
    if width == 3:
        try:
            score = float(fields[2])
        except ValueError:
            return f"score {fields[2]!r} is not a number"
        if not math.isfinite(score):
            return f"score {fields[2]!r} is not finite"
    return None


def read_pairs(path, strict=False):
    """(kind, examples) of a pairs file: kind 'scored' or 'pairs'; malformed rows skipped (see the module)."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: empty file (no header row)")
    kind = _header_kind(path, lines[0].rstrip("\r").split("\t"))
    width = 3 if kind == "scored" else 2
    examples, skipped = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        problem = _row_problem(fields, width)
        if problem:
            if strict:
                raise MalformedRowError(f"{path}:{lineno}: {problem}")
            skipped.append(f"{path}:{lineno}: {problem}")
            continue
        score = float(fields[2]) if kind == "scored" else None
        examples.append(PairExample(fields[0], fields[1], score, lineno))
    for message in skipped[:20]:
        logging.warning("skipped %s", message)
    print(f"embedding: read {len(examples)} {kind} from {path}"
          + (f", skipped {len(skipped)} malformed rows (first: {skipped[0]})" if skipped else ""), flush=True)
    return kind, examples


def write_pairs(path, pairs, scored=True):
    """Writes `(text_a, text_b, score)` (or `(anchor, positive)`) tuples as a pairs file; returns `path`."""
    header = "sentence1\tsentence2\tscore" if scored else "anchor\tpositive"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for row in pairs:
            if any("\t" in t or "\n" in t for t in row[:2]):
                raise ValueError(f"{path}: a text holds a tab or a newline: {row[0][:40]!r} / {row[1][:40]!r}")
            f.write("\t".join([row[0], row[1]] + ([f"{float(row[2]):.6g}"] if scored else [])) + "\n")
    return path
