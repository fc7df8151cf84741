"""`BertQuestionAnswerer`: the extractive (span) question answering task model, SQuAD style.

The model holds its encoder, its preprocessor (Google's tokenizer with the
vocabulary inside; its `seq_length` is `--max_seq_length`) and a head: one
dense layer from `sequence_output` to two logits per token (Google's
`cls/squad/output_weights` [2, H]), `start_logits` and `end_logits`.

Feature conversion runs in the graph (`featurize`, used by `tf.data` in
training and prediction and inside the serving export), with Google's
run_squad.py rules:

* the question's wordpieces are cut to `max_query_length`;
* the context is tokenized with each piece's word offsets
  (`BertTokenizer.tokenize_with_word_offsets`: Google's words, code points):
  every context token carries its word's span in the original text, so an
  answer is always an exact substring of the context;
* windows `[CLS] question [SEP] context[s : s + m] [SEP]` with
  `m = seq_length - len(question) - 3`, window starts `0, k, 2k, ...`
  (`k = min(doc_stride, m)`) until a window reaches the end of the context;
* "max context": a token is scored only in the window where
  `min(left context, right context) + 0.01 * window length` is largest (the
  first such window on ties);
* training labels: the answer's character span -> the first and last tokens
  whose words overlap it -> Google's "improve answer span" (the first
  sub-span whose pieces equal the answer text's pieces) -> positions in each
  window, or `[CLS]` (0) for windows that do not contain the whole answer and
  for unanswerable (v2.0) questions.

`answer(questions, contexts)` runs everything in the graph and keeps the best
span over all windows of a question by Google's rules (see `bert_tf.tasks.question_answering.data`):
`answer` text, `start`/`end` code-point offsets (`context[start:end] ==
answer`), `score`, and for v2.0 models `has_answer` and `null_score_diff`.
Two deliberate differences from run_squad.py, both documented in README: a
window's padding positions never enter the top-`n_best_size` logits (Google
pads every window to `seq_length` and ranks pad logits too), and an answer
covers whole words (Google's `get_final_text` can cut inside a word when the
best span starts or ends with a non-initial wordpiece).
"""

import keras
import tensorflow as tf

from bert_tf.text.packer import INPUT_KEYS
from bert_tf.text.preprocessor import BertPreprocessor
from bert_tf.model.task_model import BertTaskModel
from bert_tf.tasks.question_answering import export as export_lib

_NEG = -1e9  # logit of positions that can never be an answer (padding)
LENGTH_GROUPS = 4  # windows of similar length encoded together at prediction (see `window_logits`)


def group_by_length(input_mask, groups=LENGTH_GROUPS):
    """Windows `input_mask` [F, T] -> (order, [(rows, cut)] * groups): the window indices sorted by length
    (stable), split into `groups` consecutive parts, each with the width that holds its longest window
    (rounded up to 8, at most T). `BertQuestionAnswerer.window_logits` encodes each part cut to that width.

    >>> import numpy as np
    >>> order, parts = group_by_length(np.array([[1] * 12 + [0] * 4, [1] * 3 + [0] * 13]), groups=2)
    >>> order.numpy().tolist(), [(rows.numpy().tolist(), int(cut)) for rows, cut in parts]
    ([1, 0], [([1], 8), ([0], 16)])
    """
    mask = tf.convert_to_tensor(input_mask)
    num, width = tf.unstack(tf.shape(mask, out_type=tf.int32))
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    order = tf.argsort(lengths, stable=True)
    parts = []
    for g in range(groups):
        rows = order[num * g // groups:num * (g + 1) // groups]
        longest = tf.reduce_max(tf.concat([tf.gather(lengths, rows), [1]], 0))
        parts.append((rows, tf.minimum((longest + 7) // 8 * 8, width)))
    return order, parts


def _first_true(mask, axis=-1):
    """Index of the first True along `axis` (the length of the axis when there is none)."""
    n = tf.shape(mask, out_type=tf.int32)[axis]
    idx = tf.range(n, dtype=tf.int32)
    shape = [1] * mask.shape.rank
    shape[axis] = -1
    return tf.reduce_min(tf.where(mask, tf.reshape(idx, shape), n), axis=axis)


@keras.saving.register_keras_serializable(package="bert_tf")
class BertQuestionAnswerer(BertTaskModel):
    """BERT encoder + span head, with its preprocessor and SQuAD settings.

    Args:
      encoder: a :class:`bert_tf.BertEncoder`.
      preprocessor: a :class:`bert_tf.BertPreprocessor` (tokenizer + vocabulary;
        its `seq_length` is the window length).
      max_query_length: question wordpieces kept (64).
      doc_stride: tokens between window starts (128).
      version_2_with_negative: questions may have no answer (SQuAD v2.0).
      n_best_size, max_answer_length, null_score_diff_threshold: Google's
        prediction settings (20, 30, 0.0), used by `answer` and the export.
      initializer_range: stddev of the head's truncated-normal kernel
        (`None`: the encoder's).

    Call: `model(features)` on the dict of int32 `[F, T]` `input_word_ids`,
    `input_mask`, `input_type_ids` (windows, e.g. from `featurize`) ->
    `{"start_logits", "end_logits"}` float32 `[F, T]`.
    """

    task_kind = "squad"

    def __init__(self, encoder, preprocessor, max_query_length=64, doc_stride=128, version_2_with_negative=False,
                 n_best_size=20, max_answer_length=30, null_score_diff_threshold=0.0, initializer_range=None,
                 dropout_rate=0.0, **kwargs):
        if not isinstance(preprocessor, BertPreprocessor):
            raise TypeError(f"preprocessor must be a bert_tf.BertPreprocessor, got {type(preprocessor).__name__}")
        # Google's span head has no dropout of its own (the encoder's applies): dropout_rate 0 by default.
        super().__init__(encoder, preprocessor, head_units=2, dropout_rate=dropout_rate,
                         initializer_range=initializer_range, head_name="span_logits", **kwargs)
        self.seq_length = int(preprocessor.seq_length)
        self.max_query_length = int(max_query_length)
        self.doc_stride = int(doc_stride)
        if self.seq_length - self.max_query_length - 3 < 1:
            raise ValueError(f"max_seq_length={self.seq_length} leaves no room for the context after "
                             f"max_query_length={self.max_query_length} and 3 special tokens")
        if self.doc_stride < 1:
            raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
        self.version_2_with_negative = bool(version_2_with_negative)
        self.n_best_size = int(n_best_size)
        self.max_answer_length = int(max_answer_length)
        self.null_score_diff_threshold = float(null_score_diff_threshold)

    # ------------------------------------------------------------------ model
    def call(self, inputs, training=None):
        sequence = self.dropout(self.encode(inputs, training=training)["sequence_output"], training=training)
        logits = keras.ops.cast(self.head(sequence), "float32")
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}

    # ------------------------------------------------------------------ features (in the graph)
    def featurize(self, questions, contexts, answer_start=None, answer_end=None, example_index=None,
                  dynamic_padding=True, pad_to_multiple_of=8):
        """Questions and contexts (string [B]) -> windows (see the module docstring).

        Returns a dict over F windows: `input_word_ids`, `input_mask`,
        `input_type_ids` int32 [F, T]; `example_index` [F] (`example_index[b]`
        if given, else b); `token_char_start`/`token_char_end` int32 [F, T]
        (code points of the token's word in the cleaned context, -1 off the
        context); `token_is_max_context` bool [F, T]; `context` [B] (the
        context as the offsets count it: invalid UTF-8 dropped); with
        `answer_start`/`answer_end` (code points, -1 for none) also
        `start_positions`/`end_positions` [F]. T = the longest window
        rounded up to `pad_to_multiple_of` with `dynamic_padding`, else `seq_length`.
        """
        tok = self.preprocessor.tokenizer
        ids = tok.special_tokens
        L = self.seq_length
        questions = tf.reshape(tf.convert_to_tensor(questions, tf.string), [-1])
        contexts = tf.strings.unicode_transcode(tf.reshape(tf.convert_to_tensor(contexts, tf.string), [-1]),
                                                "UTF-8", "UTF-8", errors="ignore", replace_control_characters=False)
        batch = tf.shape(contexts, out_type=tf.int32)[0]
        # Question: the tokenizer's ids, cut to max_query_length.
        q_ids, q_len = tok.tokenize_dense(questions, width=self.max_query_length)
        q_len = tf.minimum(q_len, self.max_query_length)
        # Context: pieces, each with the code-point span of its word.
        ctx, ctx_cs, ctx_ce = tok.tokenize_with_word_offsets(contexts)  # [B, (N)]
        n = tf.cast(ctx.row_lengths(), tf.int32)
        ctx_ids = ctx.to_tensor(default_value=0)
        ctx_cs_d = tf.cast(ctx_cs.to_tensor(default_value=-1), tf.int32)
        ctx_ce_d = tf.cast(ctx_ce.to_tensor(default_value=-1), tf.int32)
        n_max = tf.shape(ctx_ids, out_type=tf.int32)[1]

        # Windows (Google's loop in closed form; an empty context still gets one window).
        max_tokens = L - q_len - 3  # >= 1 by the constructor's check
        step = tf.minimum(max_tokens, self.doc_stride)
        num_windows = tf.where(n <= max_tokens, 1, (n - max_tokens + step - 1) // step + 1)
        ex = tf.repeat(tf.range(batch, dtype=tf.int32), num_windows)  # [F]
        k = tf.ragged.range(num_windows).flat_values
        win_start = k * tf.gather(step, ex)
        n_f, mt_f, ql_f = tf.gather(n, ex), tf.gather(max_tokens, ex), tf.gather(q_len, ex)
        win_len = tf.maximum(tf.minimum(n_f - win_start, mt_f), 0)

        j = tf.range(L, dtype=tf.int32)[tf.newaxis, :]
        qf, wsf, wlf = ql_f[:, tf.newaxis], win_start[:, tf.newaxis], win_len[:, tf.newaxis]
        doc_first = qf + 2
        in_doc = (j >= doc_first) & (j < doc_first + wlf)
        pos = tf.clip_by_value(wsf + j - doc_first, 0, tf.maximum(n_max - 1, 0))  # context token at column j
        ctx_rows = tf.gather(ctx_ids, ex)
        doc_ids = tf.gather(ctx_rows, pos, batch_dims=1)
        q_rows = tf.gather(q_ids, ex)
        q_at = tf.pad(q_rows, [[0, 0], [1, L]])[:, :L]  # q_rows[:, j-1] at column j
        total = doc_first + wlf + 1
        word_ids = tf.where(j == 0, ids["cls_id"], tf.where(j <= qf, q_at, tf.where(
            j == qf + 1, ids["sep_id"], tf.where(in_doc, doc_ids, tf.where(j == total - 1, ids["sep_id"],
                                                                           ids["pad_id"])))))
        features = {"input_word_ids": tf.cast(word_ids, tf.int32),
                    "input_mask": tf.cast(j < total, tf.int32),
                    "input_type_ids": tf.cast((j >= doc_first) & (j < total), tf.int32)}
        cs = tf.where(in_doc, tf.gather(tf.gather(ctx_cs_d, ex), pos, batch_dims=1), -1)
        ce = tf.where(in_doc, tf.gather(tf.gather(ctx_ce_d, ex), pos, batch_dims=1), -1)

        # Max context: score(window w, token p) = min(p - s_w, s_w + l_w - 1 - p) + 0.01 * l_w, kept as
        # integers (x100) so ties are exact; the first best window wins.
        w_max = tf.reduce_max(tf.concat([num_windows, [1]], 0))
        kk = tf.range(w_max, dtype=tf.int32)[tf.newaxis, tf.newaxis, :]  # [1, 1, Wmax]
        s_all = kk * tf.gather(step, ex)[:, tf.newaxis, tf.newaxis]
        l_all = tf.maximum(tf.minimum(n_f[:, tf.newaxis, tf.newaxis] - s_all, mt_f[:, tf.newaxis, tf.newaxis]), 0)
        p3 = (wsf + j - doc_first)[:, :, tf.newaxis]  # [F, L, 1]
        contains = (kk < tf.gather(num_windows, ex)[:, tf.newaxis, tf.newaxis]) & (p3 >= s_all) & (
            p3 < s_all + l_all)
        score = 100 * tf.minimum(p3 - s_all, s_all + l_all - 1 - p3) + l_all
        score = tf.where(contains, score, -1)
        best = tf.reduce_max(score, axis=-1, keepdims=True)
        first_best = _first_true(score == best, axis=-1)
        max_context = in_doc & tf.equal(first_best, k[:, tf.newaxis])

        out = dict(features)
        out.update({"token_char_start": cs, "token_char_end": ce, "token_is_max_context": max_context,
                    "example_index": ex if example_index is None else tf.gather(
                        tf.cast(example_index, tf.int32), ex),
                    "context": contexts})
        if answer_start is not None:
            tok_start, tok_end = self._answer_tokens(tok, contexts, ctx_ids, ctx_cs_d, ctx_ce_d, n,
                                                     tf.cast(answer_start, tf.int32), tf.cast(answer_end, tf.int32))
            ts, te = tf.gather(tok_start, ex), tf.gather(tok_end, ex)
            inside = (ts >= 0) & (ts >= win_start) & (te < win_start + win_len) & (te >= ts)
            out["start_positions"] = tf.where(inside, ts - win_start + ql_f + 2, 0)
            out["end_positions"] = tf.where(inside, te - win_start + ql_f + 2, 0)
        if dynamic_padding:
            longest = tf.reduce_max(tf.concat([tf.reduce_sum(features["input_mask"], 1), [1]], 0))
            m = pad_to_multiple_of or 1
            width = tf.minimum((longest + m - 1) // m * m, L)
            for key in ("input_word_ids", "input_mask", "input_type_ids", "token_char_start", "token_char_end",
                        "token_is_max_context"):
                out[key] = out[key][:, :width]
        return out

    @staticmethod
    def _answer_tokens(tok, contexts, ctx_ids, ctx_cs, ctx_ce, n, a, b):
        """Answer code points [a, b) -> (first, last) context token, refined by Google's improve-answer-span
        rule; (-1, -1) where there is no answer (a < 0) or no token overlaps it."""
        n_max = tf.shape(ctx_ids, out_type=tf.int32)[1]
        valid = tf.sequence_mask(n, n_max)
        has = a >= 0
        # first token whose word ends after a; last token whose word starts before b
        tok_start = tf.reduce_sum(tf.cast(valid & (ctx_ce <= a[:, tf.newaxis]), tf.int32), axis=1)
        tok_end = tf.reduce_sum(tf.cast(valid & (ctx_cs < b[:, tf.newaxis]), tf.int32), axis=1) - 1
        ok = has & (tok_start <= tok_end) & (tok_start < n)
        # improve answer span: the first [i, i + m) inside [tok_start, tok_end] equal to the answer's pieces
        answer = tf.strings.substr(contexts, tf.maximum(a, 0), tf.maximum(b - a, 0), unit="UTF8_CHAR")
        ans_ids, m = tok.tokenize_dense(answer)
        m_max = tf.shape(ans_ids, out_type=tf.int32)[1]
        span = tf.maximum(tok_end - tok_start + 1, 0)
        kmax = tf.reduce_max(tf.concat([span, [1]], 0))
        i = tok_start[:, tf.newaxis] + tf.range(kmax, dtype=tf.int32)[tf.newaxis, :]  # [B, K]
        r = tf.range(m_max, dtype=tf.int32)[tf.newaxis, tf.newaxis, :]  # [1, 1, M]
        at = tf.clip_by_value(i[:, :, tf.newaxis] + r, 0, tf.maximum(n_max - 1, 0))
        got = tf.gather(ctx_ids, tf.reshape(at, [tf.shape(at)[0], -1]), batch_dims=1)
        got = tf.reshape(got, tf.shape(at))
        used = r < m[:, tf.newaxis, tf.newaxis]
        equal = tf.reduce_all(tf.where(used, tf.equal(got, ans_ids[:, tf.newaxis, :]), True), axis=-1)
        fits = i + m[:, tf.newaxis] - 1 <= tok_end[:, tf.newaxis]
        match = equal & fits & (m[:, tf.newaxis] > 0)
        first = _first_true(match, axis=1)
        improved = first < kmax
        new_start = tf.where(improved, tok_start + first, tok_start)
        new_end = tf.where(improved, tok_start + first + m - 1, tok_end)
        return tf.where(ok, new_start, -1), tf.where(ok, new_end, -1)

    # ------------------------------------------------------------------ answers (in the graph)
    def window_logits(self, windows, length_groups=LENGTH_GROUPS):
        """Per-window logits of `featurize` output, padding positions set to a large negative value.

        The windows are encoded in the groups of `group_by_length`, each cut to its own
        longest window: a batch mixes full windows of long contexts with short ones, and
        a third of its tokens would otherwise be padding. Each window's logits are the
        same either way (padding is masked).
        """
        mask = windows["input_mask"]
        order, groups = group_by_length(mask, length_groups)
        width = tf.shape(mask, out_type=tf.int32)[1]
        parts = {"start_logits": [], "end_logits": []}
        for rows, cut in groups:
            logits = self({k: tf.gather(windows[k], rows)[:, :cut] for k in INPUT_KEYS}, training=False)
            for key, value in logits.items():
                parts[key].append(tf.pad(tf.cast(value, tf.float32), [[0, 0], [0, width - cut]]))
        inverse = tf.math.invert_permutation(order)
        pad = tf.equal(mask, 0)
        return {k: tf.where(pad, _NEG, tf.gather(tf.concat(v, 0), inverse)) for k, v in parts.items()}

    def decode(self, windows, logits, num_examples):
        """Google's best span per question over its windows, in the graph -> `answer`, `start`, `end`,
        `score` (+ v2: `has_answer`, `null_score_diff`)."""
        start_logits, end_logits = logits["start_logits"], logits["end_logits"]
        cs, ce = windows["token_char_start"], windows["token_char_end"]
        ex = windows["example_index"]
        width = tf.shape(start_logits, out_type=tf.int32)[1]
        k = tf.minimum(self.n_best_size, width)
        top_s = tf.math.top_k(start_logits, k=k).indices  # ties: lower index first, as Google's sort
        top_e = tf.math.top_k(end_logits, k=k).indices
        s_val = tf.gather(start_logits, top_s, batch_dims=1)
        e_val = tf.gather(end_logits, top_e, batch_dims=1)
        s_ok = (tf.gather(cs, top_s, batch_dims=1) >= 0) & tf.gather(windows["token_is_max_context"], top_s,
                                                                      batch_dims=1)
        e_ok = tf.gather(cs, top_e, batch_dims=1) >= 0
        si, ei = top_s[:, :, tf.newaxis], top_e[:, tf.newaxis, :]
        valid = s_ok[:, :, tf.newaxis] & e_ok[:, tf.newaxis, :] & (ei >= si) & (ei - si + 1 <= self.max_answer_length)
        pair = tf.where(valid, s_val[:, :, tf.newaxis] + e_val[:, tf.newaxis, :], -float("inf"))
        flat = tf.reshape(pair, [tf.shape(pair)[0], -1])
        win_best = tf.reduce_max(flat, axis=1)
        win_arg = _first_true(tf.equal(flat, win_best[:, tf.newaxis]) & tf.math.is_finite(flat), axis=1)
        win_arg = tf.minimum(win_arg, k * k - 1)
        # best window of each question: the highest score, the first window on ties
        best = tf.math.unsorted_segment_max(win_best, ex, num_examples)
        f = tf.range(tf.shape(ex)[0], dtype=tf.int32)
        num_f = tf.shape(ex)[0]
        chosen = tf.math.unsorted_segment_min(tf.where(tf.equal(win_best, tf.gather(best, ex)), f, num_f), ex,
                                              num_examples)
        found = tf.math.is_finite(best) & (chosen < num_f)
        chosen = tf.minimum(chosen, tf.maximum(num_f - 1, 0))
        arg = tf.gather(win_arg, chosen)
        s_tok = tf.gather(tf.gather(top_s, chosen), arg // k, batch_dims=1)
        e_tok = tf.gather(tf.gather(top_e, chosen), arg % k, batch_dims=1)
        start = tf.where(found, tf.gather(tf.gather(cs, chosen), s_tok, batch_dims=1), -1)
        end = tf.where(found, tf.gather(tf.gather(ce, chosen), e_tok, batch_dims=1), -1)
        score = tf.where(found, best, _NEG)  # finite, for JSON clients
        out = {"score": score}
        if self.version_2_with_negative:
            null = tf.math.unsorted_segment_min(start_logits[:, 0] + end_logits[:, 0], ex, num_examples)
            diff = tf.where(found, null - score, -_NEG)
            has_answer = found & (diff <= self.null_score_diff_threshold)
            start, end = tf.where(has_answer, start, -1), tf.where(has_answer, end, -1)
            out.update({"has_answer": has_answer, "null_score_diff": diff})
        text = tf.strings.substr(windows["context"], tf.maximum(start, 0), tf.maximum(end - start, 0),
                                 unit="UTF8_CHAR")
        if not self.version_2_with_negative:
            text = tf.where(found, text, "empty")  # Google's text when no span is valid
        out.update({"answer": text, "start": tf.cast(start, tf.int32), "end": tf.cast(end, tf.int32)})
        return out

    def answer(self, questions, contexts):
        """Raw questions and contexts (string [B]) -> the best answer of each (see `decode`)."""
        contexts = tf.reshape(tf.convert_to_tensor(contexts, tf.string), [-1])
        windows = self.featurize(questions, contexts)
        return self.decode(windows, self.window_logits(windows), tf.shape(contexts)[0])

    # ------------------------------------------------------------------ Google's head names
    def head_weights(self):
        """The head under Google's names: `cls/squad/output_weights` [2, H], `cls/squad/output_bias` [2]."""
        kernel, bias = self.head.get_weights()
        return {"cls/squad/output_weights": kernel.T.copy(), "cls/squad/output_bias": bias.copy()}

    # ------------------------------------------------------------------ exports
    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """The serving SavedModel (`bert_tf.tasks.question_answering.export`): question + context in, answer out."""
        return export_lib.export_question_answerer(self, export_base, version=version, task=task or self.task_kind,
                                                   overwrite=overwrite, **options)

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update({
            "max_query_length": self.max_query_length,
            "doc_stride": self.doc_stride,
            "version_2_with_negative": self.version_2_with_negative,
            "n_best_size": self.n_best_size,
            "max_answer_length": self.max_answer_length,
            "null_score_diff_threshold": self.null_score_diff_threshold,
        })
        return config
