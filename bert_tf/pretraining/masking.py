"""Dynamic masking: Google's masked-LM rule applied on the fly inside `tf.data`.

Every time a batch passes through :class:`DynamicMasker` it gets fresh masks,
so each epoch sees different ones (RoBERTa-style), instead of the `dupe_factor`
fixed masks that `create_pretraining_data` writes. The rule is Google's
(`create_masked_lm_predictions`):

* `num_to_predict = min(max_predictions_per_seq, max(1, round(n * masked_lm_prob)))`
  where `n` counts the real tokens including `[CLS]`/`[SEP]` (round half to even,
  as Python's `round`);
* candidates are all real tokens except `[CLS]` and `[SEP]`, taken in uniformly
  random order; with whole-word masking a `##` piece joins the previous
  candidate's group (so does a piece marked in the optional `word_joins`
  feature: the characters of one segmenter word, see
  `bert_tf.text.word_segmentation`), and a group that would overflow
  `num_to_predict` is skipped (later, smaller groups may still fit);
* each chosen token becomes `[MASK]` with probability 0.8, stays 0.1, becomes a
  uniformly random vocab id 0.1;
* `masked_lm_positions` are sorted, `masked_lm_ids` are the original ids,
  `masked_lm_weights` are 1.0 for real predictions and 0.0 for padding.

Sources:

* :func:`unmask_features` turns Google-format records (masked ones from
  Google's tool or ours, or unmasked pair records written with
  `--masked_lm_prob=0`) back into original ids, so they can be re-masked;
* :func:`raw_text_pairs_dataset` makes unmasked next-sentence pairs straight
  from raw text (one sentence per line, blank line between documents) with
  `bert_tf.pretraining.data`'s sampling, a new sample every epoch.

Randomness is stateless: batch `i` of a pipeline seeded with `seed` is always
masked the same way, so a run is reproducible and a resumed run masks as the
original would have.

Example:

>>> import os, tempfile
>>> import tensorflow as tf
>>> from bert_tf.pretraining.masking import DynamicMasker
>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s"]
>>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
>>> _ = open(path, "w").write("\\n".join(vocab) + "\\n")
>>> masker = DynamicMasker.from_vocab_file(path, max_predictions_per_seq=4, seed=1)
>>> batch = {"input_ids": tf.constant([[2, 5, 6, 8, 7, 3, 0, 0]]),
...          "input_mask": tf.constant([[1, 1, 1, 1, 1, 1, 0, 0]])}
>>> out = masker(batch, step=0)
>>> sorted(out)
['input_ids', 'input_mask', 'masked_lm_ids', 'masked_lm_positions', 'masked_lm_weights']
>>> out["masked_lm_weights"].numpy().tolist()   # round(6 * 0.15) = 1 prediction
[[1.0, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bert_tf.pretraining import data as pd
from bert_tf.text.tokenizer import load_vocab


class DynamicMasker:
    """Masks batches of token ids with Google's 80/10/10 rule (TF ops only).

    Args:
      vocab_size, mask_id, cls_id, sep_id: vocabulary facts.
      is_continuation: bool array `[vocab_size]`, True for `##` pieces (needed
        for `do_whole_word_mask`).
      masked_lm_prob, max_predictions_per_seq: Google's settings.
      do_whole_word_mask: mask whole words (all pieces of a word together).
      seed: base seed of the stateless random streams.

    Call `masker(features, step)` on a dict with int `input_ids` `[B, T]` and
    `input_mask` `[B, T]` (other entries pass through); `step` (int scalar,
    e.g. the batch index from `Dataset.enumerate()`) selects the random stream.
    Returns the dict with `input_ids` masked and `masked_lm_positions` (int32),
    `masked_lm_ids` (int32), `masked_lm_weights` (float32) `[B, P]` added.
    Use :meth:`map_fn` with `dataset.enumerate().map(...)`.
    """

    def __init__(self, vocab_size, mask_id, cls_id, sep_id, is_continuation=None,
                 masked_lm_prob=0.15, max_predictions_per_seq=20, do_whole_word_mask=False,
                 seed=12345):
        if not 0 < masked_lm_prob < 1:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {masked_lm_prob}")
        if max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be >= 1, got {max_predictions_per_seq}")
        if do_whole_word_mask and is_continuation is None:
            raise ValueError("do_whole_word_mask needs is_continuation (use DynamicMasker.from_vocab_file)")
        self.vocab_size = int(vocab_size)
        self.mask_id = int(mask_id)
        self.cls_id = int(cls_id)
        self.sep_id = int(sep_id)
        self.masked_lm_prob = float(masked_lm_prob)
        self.max_predictions_per_seq = int(max_predictions_per_seq)
        self.do_whole_word_mask = bool(do_whole_word_mask)
        self.seed = int(seed)
        if is_continuation is None:
            is_continuation = np.zeros([self.vocab_size], bool)
        is_continuation = np.asarray(is_continuation, bool)
        if is_continuation.shape != (self.vocab_size,):
            raise ValueError(f"is_continuation has shape {is_continuation.shape}, expected ({self.vocab_size},)")
        self._is_cont = tf.constant(is_continuation)

    @classmethod
    def from_vocab_file(cls, vocab_file, **kwargs):
        """Builds a masker from a BERT `vocab.txt` (needs `[MASK]`, `[CLS]`, `[SEP]`)."""
        tokens = load_vocab(vocab_file)
        ids = {t: i for i, t in enumerate(tokens)}
        if "[MASK]" not in ids:
            raise ValueError(f"BERT vocab file {vocab_file!r} has no [MASK] token; masked LM needs one")
        return cls(len(tokens), ids["[MASK]"], ids["[CLS]"], ids["[SEP]"],
                   is_continuation=[t.startswith("##") for t in tokens], **kwargs)

    def get_config(self):
        return {"vocab_size": self.vocab_size, "mask_id": self.mask_id, "cls_id": self.cls_id,
                "sep_id": self.sep_id, "masked_lm_prob": self.masked_lm_prob,
                "max_predictions_per_seq": self.max_predictions_per_seq,
                "do_whole_word_mask": self.do_whole_word_mask, "seed": self.seed}

    # ----------------------------------------------------------------- core
    def _choose(self, ids, real, seed, joins=None):
        """Bool [B, T]: the positions to predict. `joins` [B, T]: pieces that join
        the previous piece's word as `##` pieces do (a word segmenter's words)."""
        batch = tf.shape(ids)[0]
        T = tf.shape(ids)[1]
        cand = real & tf.not_equal(ids, self.cls_id) & tf.not_equal(ids, self.sep_id)
        n = tf.reduce_sum(tf.cast(real, tf.float64), axis=1)
        num = tf.cast(tf.round(n * self.masked_lm_prob), tf.int32)
        num = tf.minimum(self.max_predictions_per_seq, tf.maximum(1, num))  # [B]
        pos = tf.range(T)[tf.newaxis, :]
        if not self.do_whole_word_mask:
            # Random order of the candidates; take the first `num`.
            scores = tf.random.stateless_uniform(tf.shape(ids), seed)
            scores = tf.where(cand, scores, 2.0)
            order = tf.argsort(scores, axis=1, stable=True)
            rank = tf.argsort(order, axis=1, stable=True)
            return cand & (rank < num[:, tf.newaxis])
        # Whole words: group = running count of group starts over candidates.
        cont = tf.gather(self._is_cont, ids)
        if joins is not None:
            cont = cont | (tf.cast(joins, tf.int32) > 0)
        seen_before = tf.cumsum(tf.cast(cand, tf.int32), axis=1, exclusive=True) > 0
        start = cand & tf.logical_not(cont & seen_before)
        group = tf.cumsum(tf.cast(start, tf.int32), axis=1) - 1  # [B, T]
        group = tf.where(cand, group, T)  # non-candidates -> dummy group T
        sizes = tf.math.bincount(group + (T + 1) * tf.range(batch)[:, tf.newaxis],
                                 minlength=(T + 1) * batch, maxlength=(T + 1) * batch)
        sizes = tf.reshape(sizes, [batch, T + 1])[:, :T]  # [B, G=T]
        scores = tf.random.stateless_uniform([batch, T], seed)
        scores = tf.where(sizes > 0, scores, 2.0)
        order = tf.argsort(scores, axis=1, stable=True)  # groups in random order
        sorted_sizes = tf.gather(sizes, order, batch_dims=1)

        def step(count, size):
            take = (size > 0) & (count + size <= num)
            return count + tf.where(take, size, 0)

        counts = tf.scan(step, tf.transpose(sorted_sizes), initializer=tf.zeros([batch], tf.int32))
        counts = tf.transpose(counts)  # running count after each group
        before = tf.concat([tf.zeros([batch, 1], tf.int32), counts[:, :-1]], axis=1)
        taken_sorted = counts > before
        taken = tf.scatter_nd(
            tf.stack([tf.broadcast_to(tf.range(batch)[:, tf.newaxis], [batch, T]), order], -1),
            taken_sorted, [batch, T])
        taken = tf.concat([taken, tf.zeros([batch, 1], tf.bool)], axis=1)
        del pos
        return tf.gather(taken, group, batch_dims=1) & cand

    def __call__(self, features, step=0):
        features = dict(features)
        ids = tf.cast(features["input_ids"], tf.int32)
        real = tf.cast(features["input_mask"], tf.int32) > 0
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        seeds = tf.random.experimental.stateless_split(seed, 4)
        chosen = self._choose(ids, real, seeds[0], features.pop("word_joins", None))
        u1 = tf.random.stateless_uniform(tf.shape(ids), seeds[1])
        u2 = tf.random.stateless_uniform(tf.shape(ids), seeds[2])
        rand_ids = tf.random.stateless_uniform(tf.shape(ids), seeds[3], minval=0,
                                               maxval=self.vocab_size, dtype=tf.int32)
        replaced = tf.where(u1 < 0.8, self.mask_id, tf.where(u2 < 0.5, ids, rand_ids))
        new_ids = tf.where(chosen, replaced, ids)
        T = tf.shape(ids)[1]
        P = self.max_predictions_per_seq
        pos = tf.range(T)[tf.newaxis, :]
        key = tf.where(chosen, pos, T + pos)
        pad = tf.maximum(P - T, 0)
        key = tf.pad(key, [[0, 0], [0, pad]], constant_values=2 * T + P)
        key = tf.sort(key, axis=1)[:, :P]
        valid = key < T
        positions = tf.where(valid, key, 0)
        labels = tf.where(valid, tf.gather(tf.pad(ids, [[0, 0], [0, pad]]), positions, batch_dims=1), 0)
        features["input_ids"] = tf.cast(new_ids, features["input_ids"].dtype)
        features["masked_lm_positions"] = tf.ensure_shape(positions, [None, P])
        features["masked_lm_ids"] = tf.ensure_shape(labels, [None, P])
        features["masked_lm_weights"] = tf.ensure_shape(tf.cast(valid, tf.float32), [None, P])
        return features

    def map_fn(self):
        """For `dataset.enumerate().map(masker.map_fn())` on batched feature dicts."""
        def fn(index, features):
            return self(features, index)
        return fn


def unmask_features(features):
    """Google-format features -> original ids: puts `masked_lm_ids` back at
    `masked_lm_positions` where `masked_lm_weights > 0` (works batched `[B, T]`
    or unbatched `[T]`). Drops the masked_lm_* entries."""
    features = dict(features)
    ids = features["input_ids"]
    positions = features.pop("masked_lm_positions")
    labels = features.pop("masked_lm_ids")
    weights = features.pop("masked_lm_weights")
    T = tf.shape(ids)[-1]
    hot = tf.one_hot(tf.cast(positions, tf.int32), T, dtype=ids.dtype)  # [..., P, T]
    hot = hot * tf.cast(weights > 0, ids.dtype)[..., tf.newaxis]
    restored = tf.reduce_sum(hot * tf.cast(labels, ids.dtype)[..., tf.newaxis], axis=-2)
    covered = tf.reduce_sum(hot, axis=-2) > 0
    features["input_ids"] = tf.where(covered, restored, ids)
    return features


def raw_text_pairs_dataset(input_files, vocab_file, do_lower_case=True, max_seq_length=128,
                           short_seq_prob=0.1, seed=12345, block_tokens=None, nsp=True, word_segmenter=None):
    """Unbatched, unmasked next-sentence pairs from raw text, resampled every epoch.

    Yields dicts of int64 `input_ids`, `input_mask`, `segment_ids` `[max_seq_length]`
    and `next_sentence_labels` `[1]` -- the unmasked Google features. The pairs
    come from `bert_tf.pretraining.data` (Google's sampling, streamed in blocks),
    with the epoch number folded into the seed; the dataset is infinite. With
    `nsp=False`: one-segment chunks packed to the full length across sentence
    and document boundaries (no padding but the last chunk of a block), label 0.
    With `word_segmenter`: also `word_joins` `[max_seq_length]` for
    :class:`DynamicMasker`'s whole-word masking.
    """
    files = pd.expand_input_files(input_files)
    block = int(block_tokens or pd.DEFAULT_BLOCK_TOKENS)
    L = int(max_seq_length)

    def gen(epoch):
        for ids, segs, is_random, joins in pd.iter_pairs(
                files, vocab_file, do_lower_case=do_lower_case, max_seq_length=L,
                short_seq_prob=short_seq_prob, random_seed=f"{seed}:epoch{int(epoch)}",
                block_tokens=block, nsp=nsp, word_segmenter=word_segmenter):
            n = len(ids)
            out = {"input_ids": np.pad(np.asarray(ids, np.int64), (0, L - n)),
                   "input_mask": np.pad(np.ones(n, np.int64), (0, L - n)),
                   "segment_ids": np.pad(np.asarray(segs, np.int64), (0, L - n)),
                   "next_sentence_labels": np.asarray([int(is_random)], np.int64)}
            if word_segmenter:
                out["word_joins"] = np.pad(np.asarray(joins, np.int64), (0, L - n))
            yield out

    sig = {"input_ids": tf.TensorSpec([L], tf.int64), "input_mask": tf.TensorSpec([L], tf.int64),
           "segment_ids": tf.TensorSpec([L], tf.int64),
           "next_sentence_labels": tf.TensorSpec([1], tf.int64)}
    if word_segmenter:
        sig["word_joins"] = tf.TensorSpec([L], tf.int64)
    return tf.data.Dataset.counter().flat_map(
        lambda e: tf.data.Dataset.from_generator(gen, output_signature=sig, args=(e,)))
