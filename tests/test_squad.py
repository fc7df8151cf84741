"""SQuAD reader, Google's prediction rules on logits, and the official v1.1/v2.0 evaluation (hand-computed
cases from the official scripts' rules). Fast: no model."""

import json
import os

import numpy as np
import pytest

from bert_tf.tasks.question_answering import data as squad
from bert_tf.tasks.question_answering import metrics as squad_metrics


# ------------------------------------------------------------------ official metrics, by hand
def test_normalization_is_the_official_one():
    n = squad_metrics.normalize_answer
    assert n("The  Denver Broncos!") == "denver broncos"
    assert n("an apple, a pear & the end.") == "apple pear end"
    assert n("theater anthem") == "theater anthem"  # articles only as whole words
    assert n("Café—Ünïcode") == "café—ünïcode"  # only ASCII punctuation is removed
    assert n("  ") == ""


def test_v1_exact_and_f1_by_hand():
    # F1("Broncos won", "Denver Broncos"): 1 common token, P = 1/2, R = 1/2 -> 0.5
    assert squad_metrics.f1_score("Broncos won", "Denver Broncos") == pytest.approx(0.5)
    # "the cat sat on the mat" -> [cat sat on mat]; "a cat on a mat" -> [cat on mat]: 3 common,
    # P = 3/3, R = 3/4 -> 2*1*0.75/1.75 = 0.857142...
    assert squad_metrics.f1_score("a cat on a mat", "the cat sat on the mat") == pytest.approx(6 / 7)
    # repeated tokens count with multiplicity: pred [a? no] "go go go" vs "go": common 1, P=1/3, R=1 -> 0.5
    assert squad_metrics.f1_score("go go go", "go") == pytest.approx(0.5)
    assert squad_metrics.f1_score("", "") == 0.0  # v1.1: nothing shared -> 0
    gold = {"q1": ["Denver Broncos", "The Broncos"], "q2": ["Santa Clara, California"], "q3": ["1990"]}
    preds = {"q1": "broncos", "q2": "Santa Clara", "q3": "1990."}
    # q1: EM 1 (vs "The Broncos"); q2: EM 0, F1 = 2*(2/2)*(2/3)/(1+2/3) = 0.8; q3: EM 1
    got = squad_metrics.evaluate_v1(gold, preds)
    assert got["exact_match"] == pytest.approx(100 * 2 / 3)
    assert got["f1"] == pytest.approx(100 * (1 + 0.8 + 1) / 3)
    # a question without a prediction scores 0 but counts
    got = squad_metrics.evaluate_v1(gold, {"q1": "Denver Broncos"})
    assert got == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3)}


def test_v2_has_ans_no_ans_and_best_threshold_by_hand():
    gold = {"a": ["Paris"], "b": ["in 1990", "1990"], "c": [], "d": []}
    preds = {"a": "Paris", "b": "", "c": "", "d": "London"}
    got = squad_metrics.evaluate_v2(gold, preds)
    # a: 1/1; b: empty prediction vs answers -> 0/0; c: "" vs "" -> 1/1; d: "London" vs "" -> 0/0
    assert got["exact"] == pytest.approx(50.0) and got["f1"] == pytest.approx(50.0) and got["total"] == 4
    assert got["HasAns_exact"] == pytest.approx(50.0) and got["HasAns_total"] == 2
    assert got["NoAns_f1"] == pytest.approx(50.0) and got["NoAns_total"] == 2
    assert "best_f1" not in got
    # best threshold on the no-answer odds: start at #NoAns = 2 (everything answered ""), walk the odds
    # upwards: d (-3): NoAns predicted "London" -> -1 => 1; a (-1): +1 => 2; b (0.5): +0 => 2; c (2): 0 => 2.
    # the best (2) is reached first at the start, so the threshold stays 0.0 and best_f1 = 2/4.
    odds = {"a": -1.0, "b": 0.5, "c": 2.0, "d": -3.0}
    got = squad_metrics.evaluate_v2(gold, preds, na_probs=odds)
    assert got["best_f1"] == pytest.approx(50.0) and got["best_f1_thresh"] == 0.0
    # now predicting "Paris" for a, "1990" for b: walk d -1 => 1, a +1 => 2, b +1 => 3 (thresh 0.5), c 0 => 3
    preds2 = dict(preds, b="1990")
    got = squad_metrics.evaluate_v2(gold, preds2, na_probs=odds)
    assert got["best_f1"] == pytest.approx(75.0) and got["best_f1_thresh"] == 0.5
    assert got["f1"] == pytest.approx(75.0)
    # the script's --na-prob-thresh: c's odds 2.0 > 1.0 -> answered "" (it was already)
    got = squad_metrics.evaluate_v2(gold, preds2, na_probs=odds, na_prob_thresh=1.0)
    assert got["f1"] == pytest.approx(75.0)
    # v2 F1 of empty gold and empty prediction is 1; gold answers normalising to "" are dropped
    assert squad_metrics.evaluate_v2({"x": ["the"]}, {"x": ""})["exact"] == 100.0


# ------------------------------------------------------------------ reader
def _squad_json(qas, context="Paris is the capital of France.", version="1.1"):
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_reader_spans_problems_and_strict(tmp_path):
    qas = [
        {"id": "ok", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "bad_start", "question": "Where?", "answers": [{"text": "France", "answer_start": 3}]},
        {"id": "no_question", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "no_answers", "question": "Q?"},
        {"id": "neg", "question": "Who?", "answers": [], "is_impossible": True},
    ]
    path = str(tmp_path / "train.json")
    with open(path, "w") as f:
        json.dump(_squad_json(qas), f)
    data = squad.read_squad(path, is_training=True, log=False)
    assert [e.qas_id for e in data.examples] == ["ok"]
    e = data.examples[0]
    assert e.context[e.answer_start:e.answer_end] == "Paris"
    assert data.skipped == 4 and any("bad_start" in p and "answer_start" in p for p in data.problems)
    assert any(p.endswith("question neg: is_impossible in a v1.1 file (give --version_2_with_negative)")
               for p in data.problems)
    v2 = squad.read_squad(path, is_training=True, version_2_with_negative=True, log=False)
    assert [e.qas_id for e in v2.examples] == ["ok", "neg"] and v2.examples[1].is_impossible
    # prediction keeps a question whose offsets are wrong (its gold texts still score it)
    pred = squad.read_squad(path, is_training=False, log=False)
    assert [e.qas_id for e in pred.examples] == ["ok", "bad_start"] and pred.skipped == 3
    with pytest.raises(squad.SquadFormatError, match="bad_start"):
        squad.read_squad(path, is_training=True, strict=True, log=False)
    with pytest.raises(squad.SquadFormatError, match="not SQuAD JSON"):
        squad.read_squad({"version": "1.1"}, is_training=False)


def test_reader_non_ascii_offsets_are_code_points():
    context = "Le café 北京 est à Zürich — naïve résumé."
    start = context.index("Zürich")
    data = squad.read_squad(_squad_json([{"id": "q", "question": "Où?",
                                          "answers": [{"text": "Zürich", "answer_start": start}]}], context),
                            is_training=True, log=False)
    e = data.examples[0]
    assert (e.answer_start, e.answer_end) == (start, start + 6)


# ------------------------------------------------------------------ Google's prediction rules on logits
def _window(start_logits, end_logits, starts, ends, max_context, example=0):
    return {"example_index": np.array([example]), "start_logits": np.array([start_logits], np.float32),
            "end_logits": np.array([end_logits], np.float32), "token_char_start": np.array([starts]),
            "token_char_end": np.array([ends]), "token_is_max_context": np.array([max_context])}


def _concat(*windows):
    return {k: np.concatenate([w[k] for w in windows]) for k in windows[0]}


def test_best_spans_follow_googles_rules():
    context = "aa bb cc dd"
    # tokens: [CLS] q [SEP] aa bb cc dd [SEP]
    cs = [-1, -1, -1, 0, 3, 6, 9, -1]
    ce = [-1, -1, -1, 2, 5, 8, 11, -1]
    mc = [False, False, False, True, True, True, True, False]
    # best raw pair (start 6=cc.. end 4=bb) is invalid (end < start); question token start invalid
    start = [5, 9, 0, 1, 2, 8, 0, 0]
    end = [4, 0, 0, 1, 7, 2, 3, 0]
    r = squad.best_spans(_window(start, end, cs, ce, mc), 1, n_best_size=20, max_answer_length=30,
                         contexts=[context])[0]
    # candidates: (s=5 cc, e=5 cc) 8+2=10, (5, 6 dd) 8+3=11, (4 bb, 4 bb) 2+7 = 9, ...
    assert r["best"]["text"] == "cc dd" and r["best"]["start"] == 6 and r["best"]["end"] == 11
    assert [x["text"] for x in r["nbest"]][:3] == ["cc dd", "cc", "bb"]
    assert sum(x["probability"] for x in r["nbest"]) == pytest.approx(1.0)
    # max_answer_length=1 forbids "cc dd"; a start token without max context is skipped
    r = squad.best_spans(_window(start, end, cs, ce, mc), 1, max_answer_length=1, contexts=[context])[0]
    assert r["best"]["text"] == "cc"
    mc2 = list(mc)
    mc2[5] = False
    r = squad.best_spans(_window(start, end, cs, ce, mc2), 1, contexts=[context])[0]
    assert r["best"]["text"] == "bb"
    # n_best_size=1: only the top start (a question token) and the top end (bb) pair up: nothing valid
    r = squad.best_spans(_window(start, end, cs, ce, mc), 1, n_best_size=1, contexts=[context])[0]
    assert r["best"] is None and r["nbest"][0]["text"] == "empty"


def test_best_spans_v2_null_score_over_windows():
    context = "aa bb"
    cs, ce, mc = [-1, 0, 3, -1], [-1, 2, 5, -1], [False, True, True, False]
    w0 = _window([4.0, 1, 0, 0], [4.0, 0, 1, 0], cs, ce, mc)          # null 8, best span aa..bb = 2
    w1 = _window([1.0, 3, 0, 0], [1.0, 0, 2, 0], cs, ce, [False, True, False, False])  # null 2, aa..bb 5
    r = squad.best_spans(_concat(w0, w1), 1, version_2_with_negative=True, contexts=[context])[0]
    assert r["null_score"] == pytest.approx(2.0)  # the smallest over windows
    assert r["best"]["text"] == "aa bb" and r["score_diff"] == pytest.approx(2.0 - 5.0)
    texts, starts, ends, odds = squad.final_answers([r], True, null_score_diff_threshold=0.0)
    assert texts == ["aa bb"] and (starts, ends) == ([0], [5]) and odds == [pytest.approx(-3.0)]
    texts, *_ = squad.final_answers([r], True, null_score_diff_threshold=-4.0)
    assert texts == [""]
    assert "" in [x["text"] for x in r["nbest"]]


def test_prediction_files(tmp_path):
    examples = squad.read_squad(_squad_json([{"id": "q1", "question": "Capital?",
                                              "answers": [{"text": "Paris", "answer_start": 0}]}]),
                                is_training=False, version_2_with_negative=True, log=False).examples
    spans = [{"best": {"text": "Paris", "start": 0, "end": 5, "start_logit": 1.0, "end_logit": 2.0},
              "nbest": [{"text": "Paris", "start": 0, "end": 5, "start_logit": 1.0, "end_logit": 2.0,
                         "probability": 1.0}], "null_score": 0.5, "score_diff": -2.5}]
    paths, preds = squad.write_prediction_files(str(tmp_path), examples, spans, version_2_with_negative=True)
    assert sorted(paths) == ["nbest_predictions.json", "null_odds.json", "predictions.json"]
    assert json.load(open(os.path.join(tmp_path, "predictions.json"))) == {"q1": "Paris"}
    assert json.load(open(os.path.join(tmp_path, "null_odds.json"))) == {"q1": -2.5}
    got = squad.evaluate(examples, preds, version_2_with_negative=True,
                         null_odds=json.load(open(paths["null_odds.json"])))
    assert got["HasAns_f1"] == 100.0 and got["best_f1"] == 100.0


def test_real_files_read_cleanly():
    """The official SQuAD v1.1 dev and train files through the reader: every training answer is at its
    answer_start (nothing skipped), every dev question is kept with all its reference answers."""
    from fixtures import squad as squad_data

    dev = squad.read_squad(squad_data.squad_v11_dev(), is_training=True, log=False)
    assert len(dev.examples) == 10570 and dev.skipped == 0 and not dev.problems
    train = squad.read_squad(squad_data.squad_v11_train(), is_training=True, log=False)
    assert len(train.examples) == 87599 and train.skipped == 0
    e = train.examples[0]
    assert e.context[e.answer_start:e.answer_end] == e.answer_text
    assert any(not x.context.isascii() for x in dev.examples)
    pred = squad.read_squad(squad_data.squad_v11_dev(), is_training=False, log=False)
    assert len(pred.examples) == 10570 and sum(len(x.answers) for x in pred.examples) > 30000
