"""CoNLL token-tagging data and conlleval's entity-level evaluation.

Files: one token per line, whitespace-separated columns (spaces or tabs), the
token in the first column and the tag in the last; a blank line between
sentences; `-DOCSTART-` lines are document separators (skipped). A line with
fewer than two columns or a tag that is neither `O` nor `<B|I|E|S>-<type>` is
malformed: reported with file:line and skipped (counted), or an error with
`strict=True`.

Tag schemes: IOB1 (`I-` everywhere, `B-` only between two adjacent entities of
one type), IOB2/BIO (every entity starts with `B-`) and BIOES (`S-` single,
`E-` last). `detect_tag_scheme` tells them apart.

`evaluate` follows conlleval's rules: an entity (chunk) starts and ends where
conlleval's startOfChunk / endOfChunk say (so `I-X` after `O` or after
another type starts an entity, as in IOB1), sentence boundaries end every
entity, and a predicted entity is correct when its span and type equal a gold
one. It returns micro `precision`, `recall`, `f1` (fractions, not percent),
token `accuracy` and the same per entity type.

Example:

>>> from bert_tf import conll
>>> gold = [["B-PER", "I-PER", "O", "B-LOC"]]
>>> pred = [["B-PER", "I-PER", "O", "I-ORG"]]
>>> r = conll.evaluate(gold, pred)
>>> r["precision"], r["recall"], r["accuracy"], r["per_type"]["PER"]["f1"]
(0.5, 0.5, 0.75, 1.0)
>>> conll.chunks(["O", "I-LOC", "I-LOC", "B-LOC", "O"])
[('LOC', 1, 3), ('LOC', 3, 4)]
"""

import collections
import dataclasses
import os
import re
import sys

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


def _split_tag(tag):
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
            prefix, kind = _split_tag(tag)
            if prefix == "I" and (prev_prefix == "O" or prev_type != kind):
                return "IOB1"
            prev_prefix, prev_type = prefix, kind
    return "IOB2"


def label_list(tag_sequences):
    """The label set in id order: `O` first, then the other tags sorted by type, then prefix."""
    tags = {t for seq in tag_sequences for t in seq}
    order = {"B": 0, "I": 1, "E": 2, "S": 3}
    rest = sorted(tags - {"O"}, key=lambda t: (_split_tag(t)[1], order.get(_split_tag(t)[0], 9), t))
    return ["O"] + rest


def end_of_chunk(prev_tag, tag, prev_type, kind):
    """conlleval's endOfChunk: does an entity end at the previous token?"""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != kind


def start_of_chunk(prev_tag, tag, prev_type, kind):
    """conlleval's startOfChunk: does an entity start at this token?"""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def chunks(tags):
    """Entities of one sentence's tags as (type, start, end) word spans, end exclusive."""
    found, start, prev_tag, prev_type = [], None, "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = _split_tag(tag)
        if start is not None and end_of_chunk(prev_tag, prefix, prev_type, kind):
            found.append((prev_type, start, i))
            start = None
        if start_of_chunk(prev_tag, prefix, prev_type, kind) and i < len(tags):
            start = i
        prev_tag, prev_type = prefix, kind
    return found


def _prf(correct, predicted, gold):
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def evaluate(gold_sequences, predicted_sequences):
    """conlleval over sentences of gold and predicted tags: micro and per-type P/R/F1, token accuracy."""
    if len(gold_sequences) != len(predicted_sequences):
        raise ValueError(f"{len(gold_sequences)} gold sentences but {len(predicted_sequences)} predicted")
    counts = collections.defaultdict(lambda: [0, 0, 0])  # type -> correct, predicted, gold
    tokens = right = 0
    for gold, pred in zip(gold_sequences, predicted_sequences):
        if len(gold) != len(pred):
            raise ValueError(f"a sentence has {len(gold)} gold tags but {len(pred)} predicted")
        tokens += len(gold)
        right += sum(g == p for g, p in zip(gold, pred))
        gold_chunks, pred_chunks = set(chunks(gold)), set(chunks(pred))
        for kind, *_ in gold_chunks:
            counts[kind][2] += 1
        for chunk in pred_chunks:
            counts[chunk[0]][1] += 1
            counts[chunk[0]][0] += chunk in gold_chunks
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    result = _prf(*total)
    result["accuracy"] = right / tokens if tokens else 0.0
    result["per_type"] = {kind: dict(_prf(*c), support=c[2]) for kind, c in sorted(counts.items())}
    return result


def flat_metrics(result):
    """`evaluate`'s result as one flat dict of floats (`LOC_f1`, ...) for eval_results.json."""
    flat = {k: float(v) for k, v in result.items() if k != "per_type"}
    for kind, figures in result["per_type"].items():
        for name in ("precision", "recall", "f1"):
            flat[f"{kind}_{name}"] = float(figures[name])
    return flat


def write_predictions(path, sentences, predicted_tags):
    """CoNLL predictions: `token gold prediction` per line (`token prediction` when unlabelled)."""
    lines = []
    for sentence, tags in zip(sentences, predicted_tags):
        gold = sentence.tags or [None] * len(sentence.words)
        for word, g, p in zip(sentence.words, gold, tags):
            lines.append(f"{word} {g} {p}" if g is not None else f"{word} {p}")
        lines.append("")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    os.replace(tmp, path)
    return path
