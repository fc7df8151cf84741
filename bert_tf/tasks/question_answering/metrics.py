"""The official SQuAD evaluation (v1.1 and v2.0 scripts' rules), as functions.

Normalisation (both scripts): lower-case, remove every ASCII punctuation
character (`string.punctuation`), remove the articles "a", "an", "the" as
whole words, collapse whitespace. Exact match and token F1 of a prediction are
the maximum over the gold answers.

* v1.1 (`evaluate_v1`): `exact_match`, `f1` in percent over the questions of
  the data set (a question without a prediction scores 0). F1 of two empty
  token lists is 0, as in the v1.1 script.
* v2.0 (`evaluate_v2`): gold answers that normalise to "" are dropped and a
  question without gold answers has the gold answer "" (unanswerable); F1 of
  an empty prediction or gold is 1 when both are empty, else 0. Reports
  `exact`, `f1`, `total`, `HasAns_*` / `NoAns_*` and, given the no-answer
  odds (`null_odds.json` of Google's run_squad.py), `best_exact`,
  `best_exact_thresh`, `best_f1`, `best_f1_thresh`: the best scores over
  thresholds on the odds, the way the v2.0 script computes them with
  `--na-prob-file`.

>>> evaluate_v1({"q": ["Denver Broncos"]}, {"q": "the Denver Broncos!"})
{'exact_match': 100.0, 'f1': 100.0}
>>> round(f1_score("Broncos won", "Denver Broncos"), 4)
0.5
"""

import collections
import re
import string

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace (the official rule)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction, ground_truth):
    """v1.1's token F1 (0 when nothing is shared, empty strings included)."""
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(ground_truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def evaluate_v1(gold, predictions):
    """`gold`: {qid: [answer texts]}; `predictions`: {qid: text} -> {"exact_match", "f1"} in percent."""
    em = f1 = 0.0
    for qid, answers in gold.items():
        if qid not in predictions:
            continue  # the official script prints a message and scores it 0
        pred = predictions[qid]
        em += max(float(exact_match_score(pred, a)) for a in answers)
        f1 += max(f1_score(pred, a) for a in answers)
    total = len(gold)
    return {"exact_match": 100.0 * em / total if total else 0.0, "f1": 100.0 * f1 / total if total else 0.0}


def _v2_f1(gold, pred):
    gold_toks, pred_toks = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _best_threshold(preds, scores, na_probs, has_ans):
    num_no_ans = sum(1 for q in has_ans if not has_ans[q])
    cur = best = float(num_no_ans)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1.0 if preds[qid] else 0.0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def evaluate_v2(gold, predictions, na_probs=None, na_prob_thresh=None):
    """`gold`: {qid: [answer texts]} ([] = unanswerable); `predictions`: {qid: text};
    `na_probs`: {qid: no-answer score} (e.g. null_odds) -> the v2.0 script's figures (percent).

    `exact`/`f1` score the predictions as given; with `na_prob_thresh` (the script's
    `--na-prob-thresh`, 1.0 there) a question whose `na_probs` value exceeds it counts as
    answered "" first, as the script does when it is given `--na-prob-file`."""
    has_ans = {}
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        golds = [a for a in answers if normalize_answer(a)] or [""]
        has_ans[qid] = bool(answers)
        if qid not in predictions:
            continue
        pred = predictions[qid]
        exact[qid] = max(float(normalize_answer(a) == normalize_answer(pred)) for a in golds)
        f1[qid] = max(_v2_f1(a, pred) for a in golds)
    probs = na_probs or {}

    def thresholded(scores):
        if na_prob_thresh is None:
            return dict(scores)
        return {qid: float(not has_ans[qid]) if probs.get(qid, 0.0) > na_prob_thresh else s
                for qid, s in scores.items()}

    exact_t, f1_t = thresholded(exact), thresholded(f1)
    total = len(gold)
    result = collections.OrderedDict([
        ("exact", 100.0 * sum(exact_t.values()) / total if total else 0.0),
        ("f1", 100.0 * sum(f1_t.values()) / total if total else 0.0),
        ("total", total)])
    for prefix, keep in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in gold if has_ans[q] == keep]
        if ids:
            result[f"{prefix}_exact"] = 100.0 * sum(exact_t.get(q, 0.0) for q in ids) / len(ids)
            result[f"{prefix}_f1"] = 100.0 * sum(f1_t.get(q, 0.0) for q in ids) / len(ids)
            result[f"{prefix}_total"] = len(ids)
    if na_probs is not None and exact:
        preds = {q: predictions[q] for q in exact}
        result["best_exact"], result["best_exact_thresh"] = _best_threshold(preds, exact, na_probs, has_ans)
        result["best_f1"], result["best_f1_thresh"] = _best_threshold(preds, f1, na_probs, has_ans)
    return dict(result)
