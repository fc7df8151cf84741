"""SQuAD v1.1 / v2.0 data: the JSON reader, Google's prediction rules and the files run_squad.py writes.

Reader (`read_squad`): one `SquadExample` per question, in file order. A
training example carries the character span of its first answer
(`answer_start`, `answer_end`, Unicode code points into `context`, so
`context[answer_start:answer_end] == answer_text`); v2.0 questions with
`is_impossible` (or no answers) have no span. Malformed entries — a missing
id / question / context / answers field, an answer that is not at its
`answer_start` — are reported with the question id and skipped (training) or
kept without the bad span (prediction: the gold texts still score it); the
counts are in `SquadData.skipped` / `SquadData.problems`. `strict=True` makes
any of them an error.

Prediction (`best_spans`, Google's `write_predictions` rules): per window, the
`n_best_size` largest start logits and end logits are paired; a pair is a
candidate when both are context tokens, the start token has its maximum context
in that window, `end >= start` and the span has at most `max_answer_length`
tokens. Candidates of all windows of a question are ranked by
`start_logit + end_logit`; the answer is the exact substring of the original
context from the first character of the start token's word to the last
character of the end token's word (Google re-derives the text from the
tokens with `get_final_text`; here the code-point offsets make that
unnecessary). For v2.0 the null score is the smallest `start_logits[0] +
end_logits[0]` over the windows; the answer is "" when `null_score -
best_span_score > null_score_diff_threshold` (that difference is the
question's entry in `null_odds.json`).

The official evaluation is in `bert_tf.tasks.question_answering.metrics`.
"""

import collections
import dataclasses
import json
import math
import os

import numpy as np
from absl import logging

from bert_tf.tasks.question_answering import metrics as squad_metrics
from bert_tf import atomic


@dataclasses.dataclass
class SquadExample:
    """One question. `answers`: the gold answer texts (all of them, for evaluation)."""

    qas_id: str
    question: str
    context: str
    answers: list
    answer_text: str = ""
    answer_start: int = -1  # code points into context; -1: no span (impossible / not for training)
    answer_end: int = -1
    is_impossible: bool = False
    title: str = ""


@dataclasses.dataclass
class SquadData:
    examples: list
    skipped: int = 0
    problems: list = dataclasses.field(default_factory=list)  # "qid: what is wrong"
    version_2_with_negative: bool = False


class SquadFormatError(ValueError):
    pass


def _load_json(source):
    if isinstance(source, dict):
        return source, "<data>"
    import tensorflow as tf

    with tf.io.gfile.GFile(source, "r") as f:
        return json.load(f), str(source)


def read_squad(source, is_training, version_2_with_negative=False, strict=False, log=True):
    """SQuAD JSON (path or parsed dict) -> `SquadData`.

    Training examples take the first answer's span. Without
    `version_2_with_negative`, an `is_impossible` question in training data is
    a problem (skipped / error).
    """
    data, name = _load_json(source)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SquadFormatError(f"{name}: not SQuAD JSON (no top-level 'data' list)")
    out = SquadData([], version_2_with_negative=version_2_with_negative)

    def problem(qid, what, skip):
        msg = f"{name}: question {qid}: {what}"
        if strict:
            raise SquadFormatError(msg)
        out.problems.append(msg)
        if skip:
            out.skipped += 1
        if log:
            logging.warning("%s (%s)", msg, "skipped" if skip else "kept")

    for ai, article in enumerate(data["data"]):
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            problem(f"<article {ai}>", "no 'paragraphs' list", True)
            continue
        for pi, para in enumerate(paragraphs):
            context = para.get("context") if isinstance(para, dict) else None
            qas = para.get("qas") if isinstance(para, dict) else None
            if not isinstance(context, str) or not isinstance(qas, list):
                problem(f"<article {ai} paragraph {pi}>", "no 'context' string or 'qas' list", True)
                continue
            for qa in qas:
                qid = qa.get("id") if isinstance(qa, dict) else None
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(qid, str) or not qid or not isinstance(question, str):
                    problem(qid or f"<article {ai} paragraph {pi}>", "missing 'id' or 'question'", True)
                    continue
                impossible = bool(qa.get("is_impossible", False))
                answers = qa.get("answers", [] if impossible else None)
                if not isinstance(answers, list) or not all(
                        isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
                    problem(qid, "missing or malformed 'answers'", True)
                    continue
                texts = [a["text"] for a in answers]
                example = SquadExample(qid, question, context, texts, is_impossible=impossible, title=title)
                if impossible and not version_2_with_negative:
                    problem(qid, "is_impossible in a v1.1 file (give --version_2_with_negative)", True)
                    continue
                if impossible or not answers:
                    if not answers and not version_2_with_negative:
                        problem(qid, "no answers", True)
                        continue
                    example.is_impossible = True
                    out.examples.append(example)
                    continue
                bad = [a for a in answers if not isinstance(a.get("answer_start"), int)
                       or context[a["answer_start"]:a["answer_start"] + len(a["text"])] != a["text"]]
                if is_training:
                    first = answers[0]
                    if first in bad:
                        problem(qid, f"answer {first['text']!r} is not at answer_start "
                                     f"{first.get('answer_start')!r}", True)
                        continue
                    example.answer_text = first["text"]
                    example.answer_start = first["answer_start"]
                    example.answer_end = first["answer_start"] + len(first["text"])
                elif bad:
                    problem(qid, f"{len(bad)} answer(s) not at their answer_start", False)
                out.examples.append(example)
    if log:
        logging.info("%s: %d questions, %d skipped", name, len(out.examples), out.skipped)
    return out


# ------------------------------------------------------------------ prediction (Google's rules)


def _top_indices(logits, n):
    """Indices of the n largest values, largest first, lower index first on ties (Google's sort)."""
    order = np.argsort(-logits, kind="stable")
    return order[:n]


def best_spans(window_outputs, num_examples, n_best_size=20, max_answer_length=30,
               version_2_with_negative=False, contexts=None):
    """Google's write_predictions over the windows of `num_examples` questions.

    `window_outputs`: dict of NumPy arrays over windows: `example_index` [F],
    `start_logits`/`end_logits` [F, T], `token_char_start`/`token_char_end` [F, T]
    (code points of the token's word in the context; -1 off the context),
    `token_is_max_context` [F, T] bool. `contexts`: the context strings (the
    answer texts are cut from them).

    Returns a list (one per question) of dicts: `nbest` (list of
    {text, start, end, start_logit, end_logit, probability}, at most
    `n_best_size`, distinct texts, v2: the null "" among them), `best` (the
    best non-null entry or None), `null_score` (v2), `score_diff` (v2:
    null_score - best non-null score).
    """
    by_example = collections.defaultdict(list)
    for f, e in enumerate(np.asarray(window_outputs["example_index"]).tolist()):
        by_example[e].append(f)
    start_all = np.asarray(window_outputs["start_logits"], np.float32)
    end_all = np.asarray(window_outputs["end_logits"], np.float32)
    cs_all = np.asarray(window_outputs["token_char_start"])
    ce_all = np.asarray(window_outputs["token_char_end"])
    mc_all = np.asarray(window_outputs["token_is_max_context"]).astype(bool)
    results = []
    for e in range(num_examples):
        prelim = []
        null_score = math.inf
        null_logits = (0.0, 0.0)
        for f in by_example.get(e, []):
            start, end = start_all[f], end_all[f]
            cs, ce, mc = cs_all[f], ce_all[f], mc_all[f]
            if version_2_with_negative:
                score = float(start[0]) + float(end[0])
                if score < null_score:
                    null_score, null_logits = score, (float(start[0]), float(end[0]))
            for s in _top_indices(start, n_best_size):
                for t in _top_indices(end, n_best_size):
                    if cs[s] < 0 or cs[t] < 0 or not mc[s] or t < s or t - s + 1 > max_answer_length:
                        continue
                    prelim.append((float(start[s]) + float(end[t]), float(start[s]), float(end[t]),
                                   int(cs[s]), int(ce[t])))
        prelim.sort(key=lambda x: x[0], reverse=True)  # stable: window, then start rank, then end rank
        nbest, seen = [], set()
        context = contexts[e] if contexts is not None else None
        for total, sl, el, a, b in prelim:
            if len(nbest) >= n_best_size:
                break
            text = context[a:b] if context is not None else None
            key = (a, b) if text is None else text
            if key in seen:
                continue
            seen.add(key)
            nbest.append({"text": text, "start": a, "end": b, "start_logit": sl, "end_logit": el})
        best = nbest[0] if nbest else None
        if version_2_with_negative and null_score < math.inf:
            if "" not in seen:
                nbest.append({"text": "", "start": -1, "end": -1, "start_logit": null_logits[0],
                              "end_logit": null_logits[1]})
        if not nbest:
            nbest.append({"text": "empty" if not version_2_with_negative else "", "start": -1, "end": -1,
                          "start_logit": 0.0, "end_logit": 0.0})
        totals = np.array([x["start_logit"] + x["end_logit"] for x in nbest], np.float64)
        probs = np.exp(totals - totals.max())
        probs /= probs.sum()
        for x, p in zip(nbest, probs):
            x["probability"] = float(p)
        out = {"nbest": nbest, "best": best}
        if version_2_with_negative:
            out["null_score"] = null_score
            # no valid span: a large finite difference (valid JSON; the export gives the same 1e9)
            out["score_diff"] = null_score - (best["start_logit"] + best["end_logit"]) if best else 1e9
        results.append(out)
    return results


def final_answers(spans, version_2_with_negative=False, null_score_diff_threshold=0.0):
    """`best_spans` output -> (predictions {index: text}, start/end code points, null_odds list or None)."""
    texts, starts, ends, odds = [], [], [], []
    for r in spans:
        best = r["best"]
        if version_2_with_negative:
            odds.append(float(r["score_diff"]))
            if best is None or r["score_diff"] > null_score_diff_threshold:
                texts.append(""), starts.append(-1), ends.append(-1)
                continue
        if best is None:
            texts.append("" if version_2_with_negative else "empty"), starts.append(-1), ends.append(-1)
            continue
        texts.append(best["text"]), starts.append(best["start"]), ends.append(best["end"])
    return texts, starts, ends, (odds if version_2_with_negative else None)


def _write_json(path, obj):
    return atomic.write_json(path, obj, indent=4, sort_keys=False, ensure_ascii=False)


def write_prediction_files(out_dir, examples, spans, version_2_with_negative=False, null_score_diff_threshold=0.0):
    """Google's files: `predictions.json` (id -> text), `nbest_predictions.json`, v2: `null_odds.json`.
    Returns {file name: path} and the predictions dict."""
    texts, _, _, odds = final_answers(spans, version_2_with_negative, null_score_diff_threshold)
    predictions = collections.OrderedDict((e.qas_id, t) for e, t in zip(examples, texts))
    nbest = collections.OrderedDict(
        (e.qas_id, [{"text": x["text"], "probability": x["probability"], "start_logit": x["start_logit"],
                     "end_logit": x["end_logit"]} for x in r["nbest"]]) for e, r in zip(examples, spans))
    paths = {"predictions.json": _write_json(os.path.join(out_dir, "predictions.json"), predictions),
             "nbest_predictions.json": _write_json(os.path.join(out_dir, "nbest_predictions.json"), nbest)}
    if version_2_with_negative:
        null_odds = collections.OrderedDict((e.qas_id, o) for e, o in zip(examples, odds))
        paths["null_odds.json"] = _write_json(os.path.join(out_dir, "null_odds.json"), null_odds)
    return paths, predictions


def evaluate(examples, predictions, version_2_with_negative=False, null_odds=None):
    """The official evaluation of {qid: text} against the examples' gold answers.

    v1.1 -> {exact_match, f1}; v2.0 -> {exact, f1, HasAns_*, NoAns_*, best_*} (with `null_odds`)."""
    gold = collections.OrderedDict((e.qas_id, list(e.answers)) for e in examples)
    if version_2_with_negative:
        return squad_metrics.evaluate_v2(gold, predictions, na_probs=null_odds)
    return squad_metrics.evaluate_v1(gold, predictions)


def has_answers(examples):
    """Whether the examples carry gold answers to score (any question with a non-empty answer list)."""
    return any(e.answers for e in examples)
