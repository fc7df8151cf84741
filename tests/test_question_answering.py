"""BertQuestionAnswerer's in-graph features against a plain-Python rendering of Google's run_squad.py rules
(windows, doc stride, max-context, labels with improve-answer-span) on real SQuAD questions; answers are
exact substrings of the original context (accented, CJK); the in-graph answer selection equals
`bert_tf.tasks.question_answering.data.best_spans` (what --do_predict uses); the .keras round trip. Tiny random encoder: fast."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.tasks.question_answering import data as squad
from bert_tf.tasks.question_answering.model import BertQuestionAnswerer
from fixtures import squad as squad_data

NON_ASCII = [
    ("Où est le café?", "Le café «Zürich» est à côté de la gare, naïve résumé.", "Zürich"),
    ("Which city?", "首都是北京，人口很多。", "北京"),
    ("Wer?", "Die Straße gehört Jürgen Müller-Lüdenscheidt seit 1990.", "Jürgen Müller-Lüdenscheidt"),
    ("What?", "Emoji 😀 before the ﬁnal answer: Ελληνικά text.", "Ελληνικά"),
]


@pytest.fixture(scope="module")
def model(minilm_vocab):
    keras.utils.set_random_seed(1)
    pre = bert_tf.BertPreprocessor(minilm_vocab, seq_length=48)
    enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=pre.vocab_size, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32))
    m = BertQuestionAnswerer(enc, pre, max_query_length=10, doc_stride=12)
    m.build()
    return m


@pytest.fixture(scope="module")
def real_examples():
    data = squad_data.limit_questions(squad_data.squad_v11_dev(), 150)
    return squad.read_squad(data, is_training=True, log=False).examples


def _google_reference(model, example):
    """run_squad.py's convert_examples_to_features for one question, in plain Python over our tokenizer's
    words (Google's basic-tokenizer words, code-point offsets) and pieces."""
    tok = model.preprocessor.tokenizer
    ids = tok.special_tokens
    query = tok(tf.constant([example.question]))[0].numpy().tolist()[:model.max_query_length]
    words, starts, ends = tok.split_words(tf.constant([example.context]))
    pieces = tok.tokenize_words(words)[0].to_list()
    starts, ends = starts[0].numpy().tolist(), ends[0].numpy().tolist()
    doc, tok_word = [], []
    for w, ps in enumerate(pieces):
        doc += ps
        tok_word += [w] * len(ps)
    first_piece = np.cumsum([0] + [len(p) for p in pieces]).tolist()
    # answer chars -> words -> pieces, then improve_answer_span
    a, b = example.answer_start, example.answer_end
    sw = min(w for w in range(len(words[0])) if ends[w] > a)
    ew = max(w for w in range(len(words[0])) if starts[w] < b)
    ts, te = first_piece[sw], first_piece[ew + 1] - 1
    answer = tok(tf.constant([example.context[a:b]]))[0].numpy().tolist()
    for i in range(ts, te + 1):
        if doc[i:i + len(answer)] == answer and i + len(answer) - 1 <= te:
            ts, te = i, i + len(answer) - 1
            break
    max_tokens = model.seq_length - len(query) - 3
    spans, start = [], 0
    while start < len(doc):
        length = min(len(doc) - start, max_tokens)
        spans.append((start, length))
        if start + length == len(doc):
            break
        start += min(length, model.doc_stride)

    def is_max_context(k, p):
        best, best_k = None, None
        for kk, (s, n) in enumerate(spans):
            if not s <= p <= s + n - 1:
                continue
            score = min(p - s, s + n - 1 - p) + 0.01 * n
            if best is None or score > best:
                best, best_k = score, kk
        return best_k == k

    out = []
    for k, (s, n) in enumerate(spans):
        word_ids = [ids["cls_id"]] + query + [ids["sep_id"]] + doc[s:s + n] + [ids["sep_id"]]
        types = [0] * (len(query) + 2) + [1] * (n + 1)
        max_ctx = [False] * (len(query) + 2) + [is_max_context(k, s + i) for i in range(n)] + [False]
        inside = ts >= s and te <= s + n - 1
        offset = len(query) + 2 - s
        out.append({"input_word_ids": word_ids, "input_type_ids": types, "token_is_max_context": max_ctx,
                    "start_positions": ts + offset if inside else 0, "end_positions": te + offset if inside else 0,
                    "token_char_start": [-1] * (len(query) + 2) + [starts[tok_word[s + i]] for i in range(n)] + [-1]})
    return out


def test_windows_and_labels_follow_googles_rules(model, real_examples):
    examples = real_examples
    w = model.featurize(tf.constant([e.question for e in examples]), tf.constant([e.context for e in examples]),
                        tf.constant([e.answer_start for e in examples]), tf.constant([e.answer_end for e in examples]),
                        dynamic_padding=False)
    w = {k: v.numpy() for k, v in w.items() if k != "context"}
    f = 0
    multi = 0
    for i, e in enumerate(examples):
        ref = _google_reference(model, e)
        multi += len(ref) > 1
        for r in ref:
            assert w["example_index"][f] == i
            n = len(r["input_word_ids"])
            assert w["input_word_ids"][f, :n].tolist() == r["input_word_ids"], (e.qas_id, f)
            assert w["input_mask"][f].sum() == n
            assert w["input_type_ids"][f, :n].tolist() == r["input_type_ids"]
            assert w["token_is_max_context"][f, :n].tolist() == r["token_is_max_context"], (e.qas_id, f)
            assert w["token_char_start"][f, :n].tolist() == r["token_char_start"]
            assert (w["start_positions"][f], w["end_positions"][f]) == (r["start_positions"], r["end_positions"])
            f += 1
    assert f == len(w["example_index"])
    assert multi > 50  # the small window makes most real contexts several windows long


def _peak_logits(windows):
    """Logits peaking at each window's labels (a perfect model) -> decode gives the labelled span."""
    width = windows["input_word_ids"].shape[1]
    start = tf.one_hot(windows["start_positions"], width) * 10.0
    end = tf.one_hot(windows["end_positions"], width) * 10.0
    pad = tf.equal(windows["input_mask"], 0)
    return {"start_logits": tf.where(pad, -1e9, start), "end_logits": tf.where(pad, -1e9, end)}


def test_answers_are_exact_substrings_of_the_original_context(model, real_examples):
    questions = [q for q, _, _ in NON_ASCII] + [e.question for e in real_examples]
    contexts = [c for _, c, _ in NON_ASCII] + [e.context for e in real_examples]
    starts = [c.index(a) for _, c, a in NON_ASCII] + [e.answer_start for e in real_examples]
    ends = [s + len(a) for s, (_, _, a) in zip(starts, NON_ASCII)] + [e.answer_end for e in real_examples]
    w = model.featurize(tf.constant(questions), tf.constant(contexts), tf.constant(starts), tf.constant(ends))
    out = model.decode(w, _peak_logits(w), len(questions))
    answers = [x.decode("utf-8") for x in out["answer"].numpy()]
    for (a, b, text, context, s, t) in zip(out["start"].numpy(), out["end"].numpy(), answers, contexts,
                                           starts, ends):
        assert context[a:b] == text
    assert answers[:len(NON_ASCII)] == [a for _, _, a in NON_ASCII]
    # real answers: the gold text exactly, except gold answers that start or end inside a word ("gold" of
    # "golden", "8" of "18": the answer is the whole word, as Google's is when the word is one wordpiece) and
    # answers longer than these 48-token windows (labelled [CLS]): 8 of the 150
    exact = sum(t == c[s:e] for t, c, s, e in zip(answers, contexts, starts, ends))
    assert exact >= len(answers) - 10, exact


@pytest.mark.parametrize("v2", [False, True])
def test_in_graph_answers_equal_googles_rules_on_the_host(model, real_examples, v2):
    m = BertQuestionAnswerer(model.encoder, model.preprocessor, max_query_length=10, doc_stride=12,
                             version_2_with_negative=v2, n_best_size=5, max_answer_length=8)
    m.build()
    examples = real_examples[:80]
    w = m.featurize(tf.constant([e.question for e in examples]), tf.constant([e.context for e in examples]))
    rng = np.random.RandomState(0)
    shape = w["input_word_ids"].shape
    pad = w["input_mask"].numpy() == 0
    logits = {k: np.where(pad, -1e9, rng.randn(*shape).astype("float32")) for k in ("start_logits", "end_logits")}
    got = m.decode(w, {k: tf.constant(v) for k, v in logits.items()}, len(examples))
    host = {k: w[k].numpy() for k in ("example_index", "token_char_start", "token_char_end",
                                      "token_is_max_context")}
    host.update(logits)
    spans = squad.best_spans(host, len(examples), n_best_size=5, max_answer_length=8, version_2_with_negative=v2,
                             contexts=[e.context for e in examples])
    texts, starts, ends, odds = squad.final_answers(spans, v2, 0.0)
    assert [x.decode() for x in got["answer"].numpy()] == texts
    assert got["start"].numpy().tolist() == starts and got["end"].numpy().tolist() == ends
    if v2:
        np.testing.assert_allclose(got["null_score_diff"].numpy(), odds, rtol=1e-5, atol=1e-4)
        assert 0 < sum(texts[i] == "" for i in range(len(texts))) < len(texts)


def test_windows_encoded_in_length_groups_give_the_same_logits(model, real_examples):
    """window_logits sorts windows by length and encodes each group cut to its own longest window: the logits
    equal one batch over all windows, also for fewer windows than groups."""
    for n in (40, 2):
        w = model.featurize(tf.constant([e.question for e in real_examples[:n]]),
                            tf.constant([e.context for e in real_examples[:n]]))
        one, grouped = model.window_logits(w, length_groups=1), model.window_logits(w)
        for key in ("start_logits", "end_logits"):
            np.testing.assert_allclose(grouped[key].numpy(), one[key].numpy(), rtol=1e-5, atol=1e-5)
        if n == 40:
            lengths = w["input_mask"].numpy().sum(1)
            assert lengths.min() < lengths.max()  # windows of different lengths were grouped


def test_keras_round_trip_and_answer(model, tmp_path):
    path = str(tmp_path / "qa.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, BertQuestionAnswerer) and loaded.doc_stride == 12
    q, c = tf.constant([x[0] for x in NON_ASCII]), tf.constant([x[1] for x in NON_ASCII])
    a, b = model.answer(q, c), loaded.answer(q, c)
    assert a["answer"].numpy().tolist() == b["answer"].numpy().tolist()
    np.testing.assert_allclose(a["score"].numpy(), b["score"].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no room"):
        BertQuestionAnswerer(model.encoder, model.preprocessor, max_query_length=46)
