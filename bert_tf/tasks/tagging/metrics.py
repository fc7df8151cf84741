"""conlleval's entity-level evaluation of token tags (`bert_tf.tasks.tagging.ops` applies the same chunk rules in
the graph; tests/test_tagging.py checks one against the other).

`evaluate` follows conlleval's rules: an entity (chunk) starts and ends where conlleval's startOfChunk /
endOfChunk say (so `I-X` after `O` or after another type starts an entity, as in IOB1), sentence boundaries end
every entity, and a predicted entity is correct when its span and type equal a gold one. It returns micro
`precision`, `recall`, `f1` (fractions, not percent), token `accuracy` and the same per entity type.

Example:

>>> from bert_tf.tasks.tagging import metrics
>>> gold = [["B-PER", "I-PER", "O", "B-LOC"]]
>>> pred = [["B-PER", "I-PER", "O", "I-ORG"]]
>>> r = metrics.evaluate(gold, pred)
>>> r["precision"], r["recall"], r["accuracy"], r["per_type"]["PER"]["f1"]
(0.5, 0.5, 0.75, 1.0)
>>> metrics.chunks(["O", "I-LOC", "I-LOC", "B-LOC", "O"])
[('LOC', 1, 3), ('LOC', 3, 4)]
"""

import collections

from bert_tf.tasks.tagging.data import split_tag


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
        prefix, kind = split_tag(tag)
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
