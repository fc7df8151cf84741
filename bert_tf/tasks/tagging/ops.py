"""In-graph pieces of token tagging: words -> packed chunks -> per-word logits -> entity spans.

All plain TensorFlow ops (a `tf.scan` for the greedy chunking), so they run in
`tf.data`, in exported SavedModels and in TF Serving 2.12+.

* `pack_words(pieces, packer)`: wordpiece ids per word (ragged `[B, (W), (P)]`) ->
  packed `[CLS] ... [SEP]` chunks. A sentence whose pieces do not fit in
  `seq_length - 2` is cut into chunks at word boundaries, greedily (a chunk takes
  words while they fit), so no word is dropped; each word is scored at its first
  piece.
* `gather_word_logits(logits, packed)`: token logits of the chunks -> one row of
  logits per word, ragged `[B, (W), C]`, in the original word order.
* `decode_entities(...)`: per-word tag ids -> entities by conlleval's chunk rules
  (`bert_tf.tasks.tagging.data.start_of_chunk` / `end_of_chunk`), as word spans with their
  type and mean score.
"""

import tensorflow as tf

PREFIX_CODES = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4}


def _ensure_a_piece(pieces, unk_id):
    """Words that tokenize to nothing get `[UNK]`, so every word has a first piece to be scored at."""
    words = pieces.values  # [N, (P)]
    empty = tf.cast(tf.equal(words.row_lengths(), 0), tf.int64)
    filler = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(empty)], tf.cast(unk_id, words.dtype)), empty)
    return pieces.with_values(tf.concat([words, filler], axis=1))


def chunk_of_word(counts, budget):
    """The greedy chunking rule, the one place it is written: per word (flat over the batch, `[N]` int64), the
    chunk it goes in. `counts` is ragged `[B, (W)]`, the pieces of each word (clipped to `[1, budget]`: every
    word has a piece, a longer word keeps its first `budget`); a new chunk starts at each row and whenever the
    next word's pieces do not fit in the `budget` left. Training (`TaggingTask`) and prediction (`pack_words`)
    both cut sentences with it."""
    n = tf.clip_by_value(tf.cast(counts.flat_values, tf.int64), 1, budget)
    rows = counts.value_rowids()
    row_starts = tf.concat([tf.ones_like(rows[:1], tf.bool), tf.not_equal(rows[1:], rows[:-1])], 0)

    def step(state, x):
        chunk, used = state
        n, first = x
        new = tf.logical_or(first, used + n > budget)
        return (tf.where(new, chunk + 1, chunk), tf.where(new, n, used + n))

    chunk_ids, _ = tf.scan(step, (n, row_starts), initializer=(tf.constant(-1, tf.int64), tf.constant(0, tf.int64)))
    return chunk_ids


def pack_words(pieces, packer, unk_id):
    """Packs words' pieces into chunks; returns a dict with the packed `features` and the word <-> chunk maps.

    Returns `features` (the packer's dict, `[C, T]`), `chunk_of_word` and
    `position_of_word` (int64 `[N]`, N = all words of the batch in order: the
    chunk and token position of each word's first piece), `row_of_chunk`
    (`[C]`), and `word_row_splits` (to rebuild `[B, (W)]`).
    """
    budget = packer.seq_length - 2
    pieces = _ensure_a_piece(tf.cast(pieces, tf.int32), unk_id)
    words = pieces.values[:, :budget]  # a word longer than a chunk keeps its first `budget` pieces
    counts = tf.cast(words.row_lengths(), tf.int64)
    word_rows = pieces.value_rowids()
    chunks = chunk_of_word(tf.RaggedTensor.from_row_splits(counts, pieces.row_splits), budget)
    num_chunks = tf.reduce_max(tf.concat([chunks, [-1]], 0)) + 1
    chunk_pieces = tf.RaggedTensor.from_value_rowids(words, chunks, nrows=num_chunks).merge_dims(1, 2)
    before = tf.cumsum(counts, exclusive=True)
    chunk_first = tf.math.unsorted_segment_min(before, chunks, num_chunks)
    position_of_word = 1 + before - tf.gather(chunk_first, chunks)
    row_of_chunk = tf.math.unsorted_segment_min(word_rows, chunks, num_chunks)
    return {"features": packer(chunk_pieces), "chunk_of_word": chunks, "position_of_word": position_of_word,
            "row_of_chunk": row_of_chunk, "word_row_splits": pieces.row_splits}


def word_labels(packed, labels):
    """Token labels `[C, T]` for training: each word's label at its first piece, -1 (ignored) elsewhere."""
    shape = tf.shape(packed["features"]["input_word_ids"], out_type=tf.int64)
    index = tf.stack([packed["chunk_of_word"], packed["position_of_word"]], axis=1)
    return tf.scatter_nd(index, tf.cast(labels, tf.int32) + 1, shape) - 1


def gather_word_logits(logits, packed):
    """Token logits `[C, T, K]` -> word logits, ragged `[B, (W), K]`."""
    index = tf.stack([packed["chunk_of_word"], packed["position_of_word"]], axis=1)
    return tf.RaggedTensor.from_row_splits(tf.gather_nd(logits, index), packed["word_row_splits"])


def _prefix_and_type(labels):
    """Per label id: conlleval prefix code and entity type id (0 for O)."""
    prefixes, types, names = [], [], [""]
    for label in labels:
        prefix, _, kind = label.partition("-") if label != "O" else ("O", "", "")
        if kind and kind not in names:
            names.append(kind)
        prefixes.append(PREFIX_CODES.get(prefix, 0))
        types.append(names.index(kind) if kind else 0)
    return tf.constant(prefixes, tf.int32), tf.constant(types, tf.int32), tf.constant(names, tf.string)


def _chunk_rules(prev_prefix, prefix, prev_type, kind):
    """conlleval's (start of chunk here, end of chunk before here), vectorised over code tensors."""
    O, B, I, E, S = (PREFIX_CODES[k] for k in "OBIES")  # noqa: E741

    def isin(x, values):
        return tf.reduce_any(tf.stack([tf.equal(x, v) for v in values]), axis=0)

    start = (isin(prefix, [B, S]) | (isin(prev_prefix, [E, S, O]) & isin(prefix, [E, I]))
             | ((prefix != O) & (prev_type != kind)))
    end = (isin(prev_prefix, [E, S]) | (isin(prev_prefix, [B, I]) & isin(prefix, [B, S, O]))
           | ((prev_prefix != O) & (prev_type != kind)))
    return start, end


def decode_entities(tag_ids, labels):
    """Per-word tag ids, ragged `[B, (W)]` -> entities: a dict of ragged `[B, (E)]` tensors
    `type` (string), `first_word`, `last_word` (word indices in the row, inclusive)."""
    prefix_table, type_table, type_names = _prefix_and_type(labels)
    flat = tag_ids.flat_values
    prefix, kind = tf.gather(prefix_table, flat), tf.gather(type_table, flat)
    rows = tag_ids.value_rowids()
    first_in_row = tf.concat([[True], tf.not_equal(rows[1:], rows[:-1])], 0)
    last_in_row = tf.concat([tf.not_equal(rows[1:], rows[:-1]), [True]], 0)
    prev_prefix = tf.where(first_in_row, 0, tf.roll(prefix, 1, 0))
    prev_type = tf.where(first_in_row, 0, tf.roll(kind, 1, 0))
    next_prefix = tf.where(last_in_row, 0, tf.roll(prefix, -1, 0))
    next_type = tf.where(last_in_row, 0, tf.roll(kind, -1, 0))
    starts, _ = _chunk_rules(prev_prefix, prefix, prev_type, kind)
    _, ends_after = _chunk_rules(prefix, next_prefix, kind, next_type)
    first = tf.where(starts)[:, 0]
    last = tf.where(ends_after)[:, 0]  # chunks close in order: the k-th end belongs to the k-th start
    row_start = tf.gather(tag_ids.row_splits, tf.gather(rows, first))
    entity_rows = tf.gather(rows, first)
    nrows = tag_ids.nrows(out_type=tf.int64)
    return {
        "type": tf.RaggedTensor.from_value_rowids(tf.gather(type_names, tf.gather(kind, first)), entity_rows, nrows),
        "first_word": tf.RaggedTensor.from_value_rowids(first - row_start, entity_rows, nrows),
        "last_word": tf.RaggedTensor.from_value_rowids(last - row_start, entity_rows, nrows),
    }
