"""Masked-LM / next-sentence pretraining records from raw text, at corpus scale.

Input: plain text, one sentence per line, a blank line between documents
(Google BERT's `create_pretraining_data.py` format). Output: TFRecord files of
`tf.train.Example`s with Google's features, so records made by Google's tool
train here and ours train with Google's `run_pretraining.py`:

| feature                | type    | shape                     |
|------------------------|---------|---------------------------|
| `input_ids`            | int64   | `[max_seq_length]`        |
| `input_mask`           | int64   | `[max_seq_length]`        |
| `segment_ids`          | int64   | `[max_seq_length]`        |
| `masked_lm_positions`  | int64   | `[max_predictions_per_seq]` (sorted, 0-padded) |
| `masked_lm_ids`        | int64   | `[max_predictions_per_seq]` (0-padded) |
| `masked_lm_weights`    | float   | `[max_predictions_per_seq]` (1.0 real, 0.0 pad) |
| `next_sentence_labels` | int64   | `[1]` (0 = B follows A, 1 = B is random) |

Sampling rules are Google's, on wordpiece ids from `bert_tf.BertPreprocessor`
(so ids equal the preprocessor's):

* per document, a target length of `max_seq_length - 3` tokens, or with
  probability `short_seq_prob` a uniform length in `[2, max_seq_length - 3]`;
* sentences are gathered into a chunk until the target is reached; segment A is
  the first `a_end` sentences (`a_end` uniform in `[1, len(chunk) - 1]`);
* with probability 0.5 (always, for a one-sentence chunk) B is taken from a
  random other document starting at a random sentence, and the unused sentences
  of the chunk are put back; otherwise B is the rest of the chunk;
* the pair is truncated by removing one token at a time from the longer side,
  from the front or the back with equal probability;
* `num_to_predict = min(max_predictions_per_seq, max(1, round(len * masked_lm_prob)))`
  positions are chosen in random order, never `[CLS]`/`[SEP]`; each becomes
  `[MASK]` 80%, stays 10%, becomes a uniformly random vocab id 10%; with whole
  word masking, a `##` piece joins the previous piece's group and groups that
  would overflow `num_to_predict` are skipped.

Where this deviates from Google's tool, and why: Google loads the whole corpus,
makes `dupe_factor` passes over all documents, draws random-next documents from
the whole corpus and shuffles all instances in memory -- memory grows with
corpus size x `dupe_factor`. Here documents are streamed in *blocks* of about
`block_tokens` wordpieces (a final block smaller than half a block is merged
into the previous one). Within a block everything is Google's: documents are
shuffled, `dupe_factor` passes are made, random-next documents are drawn
uniformly from the block's documents, and the block's instances are shuffled
before they are written. So memory is bounded by one block (plus its serialized
instances), random-next documents come from a window of the corpus rather than
all of it, and the shuffle is per block (training input pipelines shuffle
again). With the default `block_tokens` (2 M wordpieces, several thousand
documents) the chance that a random-next document is the current one is
negligible, as in Google's tool.

Parallelism and determinism: input files are planned into tasks
(`plan_tasks`); a task's files are read in order and cut into blocks. Every
block has its own random stream, seeded from `(random_seed, task, block)`, and
its work is cut into fixed units (`block_units`: each dupe pass over a fixed
eighth of the block's documents, with a stream of its own). This process reads
and tokenizes (TensorFlow); worker processes (`num_workers`, default: the CPUs
available) make the units' instances in pure Python and send back framed
records; the block's instances are shuffled and written in order. So the
output depends only on the inputs, flags, seed and the number of output files
-- not on `num_workers` -- and the Beam pipeline (`bert_tf.pretraining.beam`),
which runs the same units, writes the same records.

Where the time went (cProfile, one process, 2.9 MB of real text, dupe factor
10, seq 128), before -> after this design: masking 54% -> 25% (`rng.sample`
-like partial shuffle instead of a generator and set checks), building and
serializing `tf.train.Example` protos 28% -> hand-written wire bytes
(`ExampleEncoder`), pair sampling 15% (truncation cut once), TFRecord framing
~1% (CRC32C via crcmod, in the workers), tokenization ~3% of the old total (now
~20% of the CPU, in the main process, overlapped with the workers). About 40 us
of CPU per instance in a worker, against ~100 us before (measured with the
same corpus and flags, no profiler); and parallel at any
corpus size, where before one input file meant one process.

Example (a tiny corpus; `python trainers/create_pretraining_data.py` wraps this):

>>> import os, tempfile
>>> from bert_tf.pretraining.data import create_pretraining_data
>>> d = tempfile.mkdtemp()
>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", ".",
...          "dog", "ran", "a", "mat", "on"]
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(vocab) + "\\n")
>>> _ = open(os.path.join(d, "in.txt"), "w").write(
...     "the cat sat .\\nthe dog ran .\\n\\na cat sat on a mat .\\nthe dog sat .\\n")
>>> stats = create_pretraining_data(
...     [os.path.join(d, "in.txt")], [os.path.join(d, "out.tfrecord")],
...     os.path.join(d, "vocab.txt"), max_seq_length=16, dupe_factor=2, verbose=False)
>>> stats["documents"], stats["instances"] > 0
(2, True)
"""

from __future__ import annotations

import array
import collections
import os
import random
import sys
import time

MASK_PROB_MASK = 0.8  # Google: replace with [MASK]
MASK_PROB_KEEP = 0.5  # of the rest: keep original (else random id)

FEATURE_NAMES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)

DEFAULT_BLOCK_TOKENS = 2_000_000


def google_feature_spec(max_seq_length, max_predictions_per_seq):
    """The `tf.io.parse_single_example` spec of Google's `run_pretraining.py`.

    >>> sorted(google_feature_spec(128, 20))[:2]
    ['input_ids', 'input_mask']
    """
    import tensorflow as tf

    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


# --------------------------------------------------------------------- vocab
class VocabInfo:
    """Ids the sampler needs, read from a BERT `vocab.txt`.

    Attributes: `size`, `cls_id`, `sep_id`, `mask_id`, `pad_id`, and
    `is_continuation` (bytes; 1 where the token starts with `##`).
    """

    def __init__(self, vocab_file):
        from bert_tf.text.preprocessor import load_vocab

        tokens = load_vocab(vocab_file)
        ids = {t: i for i, t in enumerate(tokens)}
        if "[MASK]" not in ids:
            raise ValueError(f"BERT vocab file {vocab_file!r} has no [MASK] token; masked LM needs one")
        self.vocab_file = str(vocab_file)
        self.size = len(tokens)
        self.cls_id = ids["[CLS]"]
        self.sep_id = ids["[SEP]"]
        self.mask_id = ids["[MASK]"]
        self.pad_id = ids["[PAD]"]
        self.is_continuation = bytes(1 if t.startswith("##") else 0 for t in tokens)


# ------------------------------------------------------------ Google's rules
def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Google's rule: while too long, drop one token of the longer list (B on
    ties), from the front or the back with probability 1/2 each. In place.

    The draws are Google's (one per dropped token); the lists are cut once."""
    la, lb = len(tokens_a), len(tokens_b)
    if la + lb <= max_num_tokens:
        return
    fa = ba = fb = bb = 0
    rand = rng.random
    while la + lb > max_num_tokens:
        if la > lb:
            if rand() < 0.5:
                fa += 1
            else:
                ba += 1
            la -= 1
        else:
            if rand() < 0.5:
                fb += 1
            else:
                bb += 1
            lb -= 1
    tokens_a[:] = tokens_a[fa:fa + la]
    tokens_b[:] = tokens_b[fb:fb + lb]


def _choose_and_mask(ids, cand, masked_lm_prob, max_predictions_per_seq, vocab, rng,
                     do_whole_word_mask):
    """Google's masking given the candidate positions `cand` (all but [CLS]/[SEP]).

    Candidates (whole words with `do_whole_word_mask`) are visited in uniformly
    random order; a word that would overflow `num_to_predict` is skipped. Each
    chosen position becomes [MASK] with probability 0.8, stays with 0.1, or
    becomes a uniformly random id with 0.1. Returns `(out, positions, labels)`.
    """
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(ids) * masked_lm_prob))))
    if do_whole_word_mask:
        cont = vocab.is_continuation
        groups = []
        for i in cand:  # Google: a ## piece joins the previous candidate's group
            if groups and cont[ids[i]]:
                groups[-1].append(i)
            else:
                groups.append([i])
        rng.shuffle(groups)
        positions = []
        for group in groups:
            if len(positions) >= num_to_predict:
                break
            if len(positions) + len(group) > num_to_predict:
                continue
            positions.extend(group)
    else:  # the first k of a uniform random permutation (partial Fisher-Yates)
        rand = rng.random
        m = len(cand)
        k = min(num_to_predict, m)
        for i in range(k):
            j = i + int(rand() * (m - i))
            cand[i], cand[j] = cand[j], cand[i]
        positions = cand[:k]
    out = list(ids)
    rand = rng.random
    mask_id, size = vocab.mask_id, vocab.size
    for i in positions:
        r = rand()
        if r < MASK_PROB_MASK:
            out[i] = mask_id
        elif r >= MASK_PROB_MASK + (1 - MASK_PROB_MASK) * MASK_PROB_KEEP:
            out[i] = int(rand() * size)
    positions.sort()
    return out, positions, [ids[i] for i in positions]


def create_masked_lm_predictions(ids, masked_lm_prob, max_predictions_per_seq, vocab, rng,
                                 do_whole_word_mask=False):
    """Google's masking on a packed id list `[CLS] a [SEP] b [SEP]`.

    Returns `(output_ids, masked_positions (sorted), masked_label_ids)`.
    """
    cls_id, sep_id = vocab.cls_id, vocab.sep_id
    cand = [i for i, t in enumerate(ids) if t != cls_id and t != sep_id]  # reordered in place
    return _choose_and_mask(ids, cand, masked_lm_prob, max_predictions_per_seq, vocab, rng,
                            do_whole_word_mask)


def create_pairs_from_document(documents, document_index, max_seq_length, short_seq_prob, rng,
                               stats=None):
    """Google's segment-pair sampling for one document of `documents`.

    `documents` is a list of documents, each a list of sentences (sequences of
    wordpiece ids). Returns a list of `(tokens_a, tokens_b, is_random_next)`,
    already truncated to `max_seq_length - 3` tokens in total. With `stats`,
    counts in `stats["forced_random_next"]` the pairs whose chunk had a single
    sentence (Google then always takes a random next).
    """
    document = documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    pairs = []
    chunk = []
    length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        chunk.append(segment)
        length += len(segment)
        if i == len(document) - 1 or length >= target_seq_length:
            if chunk:
                a_end = 1
                if len(chunk) >= 2:
                    a_end = rng.randint(1, len(chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(chunk[j])
                tokens_b = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    if stats is not None and len(chunk) == 1:
                        stats["forced_random_next"] += 1
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_index = rng.randint(0, len(documents) - 1)
                        if random_index != document_index:
                            break
                    random_document = documents[random_index]
                    start = rng.randint(0, len(random_document) - 1)
                    for j in range(start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(chunk) - a_end  # put the unused sentences back
                else:
                    is_random_next = False
                    for j in range(a_end, len(chunk)):
                        tokens_b.extend(chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                if tokens_a and tokens_b:  # Google asserts this; only degenerate docs fail it
                    pairs.append((tokens_a, tokens_b, is_random_next))
            chunk = []
            length = 0
        i += 1
    return pairs


# ------------------------------------------------------- fast serialization
def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_FLOAT_ONE = b"\x00\x00\x80\x3f"  # little-endian float32 1.0
_FLOAT_ZERO = b"\x00\x00\x00\x00"


class ExampleEncoder:
    """Google's `tf.train.Example` for one instance, written as protobuf wire
    bytes directly (features in `FEATURE_NAMES` order, packed lists). Parses to
    the same message as building the proto and calling `SerializeToString`
    (which this replaces: it was a quarter of the time per instance)."""

    def __init__(self, max_seq_length, max_predictions_per_seq, vocab_size):
        self.L, self.P = int(max_seq_length), int(max_predictions_per_seq)
        self._v = [_varint(i) for i in range(max(int(vocab_size), 1 << 15))]
        self._zeros = [b"\x00" * i for i in range(max(self.L, self.P) + 1)]
        self._ones = [b"\x01" * i for i in range(self.L + 1)]
        self._keys = {k: b"\x0a" + _varint(len(k)) + k.encode() for k in FEATURE_NAMES}
        self._weights = [self._item("masked_lm_weights", _FLOAT_ONE * k + _FLOAT_ZERO * (self.P - k), True)
                         for k in range(self.P + 1)]
        self._nsp = [self._item("next_sentence_labels", bytes([v])) for v in (0, 1)]

    def _len(self, n):
        v = self._v
        return v[n] if n < len(v) else _varint(n)

    def _item(self, key, packed, is_float=False):
        vl = self._len
        lst = b"\x0a" + vl(len(packed)) + packed                       # Int64List / FloatList
        feat = (b"\x12" if is_float else b"\x1a") + vl(len(lst)) + lst  # Feature oneof
        entry = self._keys[key] + b"\x12" + vl(len(feat)) + feat        # map entry
        return b"\x0a" + vl(len(entry)) + entry                         # Features.feature

    def encode(self, ids, len_segment_a, positions, labels, is_random_next):
        """`ids` = packed (masked) ids `[CLS] a [SEP] b [SEP]`, `len_segment_a` =
        tokens through the first [SEP]. Returns serialized `tf.train.Example` bytes."""
        v, z, item = self._v, self._zeros, self._item
        n = len(ids)
        pad = self.L - n
        k = len(positions)
        pk = self.P - k
        body = b"".join((
            item("input_ids", b"".join([v[i] for i in ids]) + z[pad]),
            item("input_mask", self._ones[n] + z[pad]),
            item("segment_ids", z[len_segment_a] + self._ones[n - len_segment_a] + z[pad]),
            item("masked_lm_positions", b"".join([v[i] for i in positions]) + z[pk]),
            item("masked_lm_ids", b"".join([v[i] for i in labels]) + z[pk]),
            self._weights[k],
            self._nsp[1 if is_random_next else 0],
        ))
        return b"\x0a" + self._len(len(body)) + body


def _crc32c_function():
    try:
        from crcmod.predefined import mkPredefinedCrcFun

        return mkPredefinedCrcFun("crc-32c")
    except ImportError:  # pure Python, slow; crcmod is in requirements.txt
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)

        def crc(data):
            c = 0xFFFFFFFF
            for b in data:
                c = table[(c ^ b) & 0xFF] ^ (c >> 8)
            return c ^ 0xFFFFFFFF

        return crc


class TFRecordFramer:
    """TFRecord framing of one record (length, masked CRC32C of the length,
    data, masked CRC32C of the data), so that worker processes need no
    TensorFlow and the writer only concatenates bytes."""

    def __init__(self):
        import struct

        self._crc = _crc32c_function()
        self._pack_len = struct.Struct("<Q").pack
        self._pack_crc = struct.Struct("<I").pack

    def _masked(self, data):
        c = self._crc(data)
        return self._pack_crc((((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    def __call__(self, record):
        n = self._pack_len(len(record))
        return b"".join((n, self._masked(n), record, self._masked(record)))


_ENCODERS = {}


def _encoder(max_seq_length, max_predictions_per_seq, vocab_size):
    key = (int(max_seq_length), int(max_predictions_per_seq), int(vocab_size))
    if key not in _ENCODERS:
        _ENCODERS[key] = ExampleEncoder(*key)
    return _ENCODERS[key]


def _pack_and_mask(tokens_a, tokens_b, vocab, max_seq_length, max_predictions_per_seq, masked_lm_prob,
                   rng, do_whole_word_mask):
    la, lb = len(tokens_a), len(tokens_b)
    n = la + lb + 3
    if n > max_seq_length:
        raise AssertionError(f"instance of {n} tokens exceeds max_seq_length={max_seq_length}")
    ids = [vocab.cls_id]
    ids.extend(tokens_a)
    ids.append(vocab.sep_id)
    ids.extend(tokens_b)
    ids.append(vocab.sep_id)
    if masked_lm_prob > 0:
        cand = list(range(1, la + 1))
        cand.extend(range(la + 2, n - 1))
        out, positions, labels = _choose_and_mask(ids, cand, masked_lm_prob, max_predictions_per_seq,
                                                  vocab, rng, do_whole_word_mask)
    else:
        out, positions, labels = ids, [], []
    return out, la + 2, positions, labels


def serialize_instance(tokens_a, tokens_b, is_random_next, vocab, max_seq_length,
                       max_predictions_per_seq, masked_lm_prob, rng, do_whole_word_mask=False,
                       stats=None):
    """Packs, masks (Google's rule) and serializes one pair -> `tf.train.Example` bytes.

    With `masked_lm_prob=0` nothing is masked and the masked_lm_* features are
    all padding (unmasked pair records for dynamic masking).
    """
    out, len_a, positions, labels = _pack_and_mask(tokens_a, tokens_b, vocab, max_seq_length,
                                                   max_predictions_per_seq, masked_lm_prob, rng,
                                                   do_whole_word_mask)
    if stats is not None:
        stats["instances"] += 1
        stats["random_next"] += int(is_random_next)
        stats["tokens_in_instances"] += len(out)
        stats["masked"] += len(positions)
    enc = _encoder(max_seq_length, max_predictions_per_seq, vocab.size)
    return enc.encode(out, len_a, positions, labels, is_random_next)


# ------------------------------------------------------------------ streaming
def read_documents(path, stats, open_fn=None):
    """Yields documents of `path` as lists of stripped sentence strings.

    Lines that are not valid UTF-8 are skipped and counted in
    `stats["skipped_non_utf8_lines"]`; blank lines separate documents.
    `open_fn(path)` opens the file for binary reading (default `tf.io.gfile.GFile`;
    the Beam pipeline passes Beam's `FileSystems.open`).
    """
    if open_fn is None:
        import tensorflow as tf

        def open_fn(p):
            return tf.io.gfile.GFile(p, "rb")

    doc = []
    with open_fn(path) as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats["skipped_non_utf8_lines"] += 1
                continue
            line = line.strip()
            if not line:
                if doc:
                    yield doc
                    doc = []
            else:
                doc.append(line)
    if doc:
        yield doc


class _BatchTokenizer:
    """`BertPreprocessor.tokenize` on batches of lines inside one tf.function."""

    def __init__(self, vocab_file, do_lower_case):
        import tensorflow as tf

        from bert_tf.text.preprocessor import BertPreprocessor

        self.pre = BertPreprocessor(vocab_file, lower_case=do_lower_case)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tok(lines):
            r = self.pre.tokenize(lines)
            return r.flat_values, r.row_splits

        self._tok = tok

    def __call__(self, lines):
        import tensorflow as tf

        values, splits = self._tok(tf.constant(lines, dtype=tf.string))
        values = values.numpy().astype("int32")
        splits = splits.numpy()
        return [array.array("i", values[splits[i]:splits[i + 1]].tobytes()) for i in range(len(lines))]


_TOKENIZERS = {}


def get_tokenizer(vocab_file, do_lower_case):
    """A cached `_BatchTokenizer` (building one traces a tf.function: seconds)."""
    key = (os.path.abspath(str(vocab_file)), bool(do_lower_case))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _BatchTokenizer(vocab_file, do_lower_case)
    return _TOKENIZERS[key]


def tokenize_documents(docs, tokenizer, stats, batch_lines=8192):
    """Documents of strings -> documents of `array('i')` wordpiece ids, tokenizing
    lines in batches. Lines with no wordpieces are dropped; empty documents too."""
    pending = []
    n_lines = 0

    def flush():
        lines = [s for d in pending for s in d]
        ids = tokenizer(lines) if lines else []
        k = 0
        out = []
        for d in pending:
            sents = [x for x in ids[k:k + len(d)] if len(x)]
            stats["skipped_empty_lines"] += len(d) - len(sents)
            k += len(d)
            if sents:
                stats["documents"] += 1
                stats["sentences"] += len(sents)
                stats["tokens"] += sum(len(x) for x in sents)
                out.append(sents)
        return out

    for d in docs:
        pending.append(d)
        n_lines += len(d)
        if n_lines >= batch_lines:
            yield from flush()
            pending, n_lines = [], 0
    if pending:
        yield from flush()


def iter_blocks(documents, block_tokens):
    """Groups documents into blocks of >= `block_tokens` wordpieces; a final block
    under half that size is merged into the previous one."""
    ready = None
    current, size = [], 0
    for d in documents:
        current.append(d)
        size += sum(len(s) for s in d)
        if size >= block_tokens:
            if ready is not None:
                yield ready
            ready, current, size = current, [], 0
    if current:
        if ready is not None and size < block_tokens / 2:
            ready.extend(current)
        else:
            if ready is not None:
                yield ready
            ready = current
    if ready:
        yield ready


def iter_pairs(input_files, vocab_file, do_lower_case=True, max_seq_length=128,
               short_seq_prob=0.1, random_seed=12345, block_tokens=DEFAULT_BLOCK_TOKENS,
               dupe_factor=1, tokenizer=None):
    """Unmasked pairs, one pass of Google's sampling streamed in blocks.

    Yields `(input_ids, segment_ids, is_random_next)` (Python lists, no padding)
    for `bert_tf.pretraining.masking` dynamic masking.
    """
    tokenizer = tokenizer or get_tokenizer(vocab_file, do_lower_case)
    vocab = VocabInfo(vocab_file)
    rng = random.Random(str(random_seed))
    stats = new_stats()

    def docs():
        for path in input_files:
            yield from read_documents(path, stats)

    for block in iter_blocks(tokenize_documents(docs(), tokenizer, stats), block_tokens):
        rng.shuffle(block)
        out = []
        for _ in range(dupe_factor):
            for idx in range(len(block)):
                for a, b, is_random in create_pairs_from_document(
                        block, idx, max_seq_length, short_seq_prob, rng):
                    out.append(([vocab.cls_id, *a, vocab.sep_id, *b, vocab.sep_id],
                                [0] * (len(a) + 2) + [1] * (len(b) + 1), is_random))
        rng.shuffle(out)
        yield from out


def new_stats():
    """Zeroed counters of a run (documents, sentences, tokens, instances, skips...)."""
    return collections.Counter(
        documents=0, sentences=0, tokens=0, instances=0, random_next=0, forced_random_next=0, masked=0,
        tokens_in_instances=0, skipped_non_utf8_lines=0, skipped_empty_lines=0)


# ---------------------------------------------------------------- the tasks
def plan_tasks(input_files, output_files):
    """Assigns inputs to outputs so that every output file has one writer.

    With at least as many outputs as inputs, task `t` reads input `t` and writes
    round-robin to outputs `t, t + n_in, ...`; otherwise task `t` reads inputs
    `t, t + n_out, ...` in order and writes output `t`. Returns a list of
    `(inputs, outputs)`.
    """
    n_in, n_out = len(input_files), len(output_files)
    if n_in == 0:
        raise ValueError("no input files")
    if n_out == 0:
        raise ValueError("no output files")
    if n_out >= n_in:
        return [([input_files[t]], output_files[t::n_in]) for t in range(n_in)]
    return [(input_files[t::n_out], [output_files[t]]) for t in range(n_out)]


# ------------------------------------------------------------ blocks -> records
DOC_CHUNKS = 8  # each dupe pass over a block is cut into this many fixed document ranges


def block_seed(random_seed, task_index, block_index):
    """The random stream of one block: its document shuffle and its final
    instance shuffle. Work units derive theirs from it, so the records depend
    only on (seed, task, block) -- never on workers, processes or runners."""
    return f"{random_seed}:{task_index}:{block_index}"


def block_units(num_documents, dupe_factor):
    """Work units `(pass, chunk, lo, hi)` of one block: `dupe_factor` passes,
    each over `DOC_CHUNKS` fixed ranges `[lo, hi)` of the shuffled documents."""
    units = []
    for p in range(dupe_factor):
        for c in range(DOC_CHUNKS):
            lo, hi = num_documents * c // DOC_CHUNKS, num_documents * (c + 1) // DOC_CHUNKS
            if hi > lo:
                units.append((p, c, lo, hi))
    return units


class InstanceMaker:
    """Google's pair sampling, masking and `tf.train.Example` encoding for work
    units of a block. Pure Python (no TensorFlow), so worker processes stay small."""

    def __init__(self, settings, vocab):
        self.settings = dict(settings)
        self.vocab = vocab
        self.encoder = ExampleEncoder(settings["max_seq_length"], settings["max_predictions_per_seq"],
                                      vocab.size)
        self._framer = None

    @property
    def framer(self):
        if self._framer is None:
            self._framer = TFRecordFramer()
        return self._framer

    def unit(self, block, task_index, block_index, pass_index, chunk, lo, hi, stats):
        """Serialized Examples of documents `[lo, hi)` of `block` in one pass."""
        s, vocab, encode = self.settings, self.vocab, self.encoder.encode
        L, P = s["max_seq_length"], s["max_predictions_per_seq"]
        prob, wwm, short = s["masked_lm_prob"], s["do_whole_word_mask"], s["short_seq_prob"]
        rng = random.Random(f"{block_seed(s['random_seed'], task_index, block_index)}:{pass_index}:{chunk}")
        out = []
        n_random = n_tokens = n_masked = 0
        for idx in range(lo, hi):
            for a, b, is_random in create_pairs_from_document(block, idx, L, short, rng, stats):
                ids, len_a, positions, labels = _pack_and_mask(a, b, vocab, L, P, prob, rng, wwm)
                out.append(encode(ids, len_a, positions, labels, is_random))
                n_random += is_random
                n_tokens += len(ids)
                n_masked += len(positions)
        stats["instances"] += len(out)
        stats["random_next"] += n_random
        stats["tokens_in_instances"] += n_tokens
        stats["masked"] += n_masked
        return out


def block_records(block, task_index, block_index, settings, vocab, stats, maker=None):
    """Google's `create_training_instances` on one block, in this process:
    shuffle the documents, `dupe_factor` passes, shuffle the serialized
    instances. The parallel local tool runs the same units in worker processes
    and gets the same list; the Beam pipeline calls this."""
    maker = maker or InstanceMaker(settings, vocab)
    rng = random.Random(block_seed(settings["random_seed"], task_index, block_index))
    rng.shuffle(block)
    out = []
    for unit in block_units(len(block), settings["dupe_factor"]):
        out.extend(maker.unit(block, task_index, block_index, *unit, stats))
    rng.shuffle(out)
    return out


def instances_from_block(block, settings, vocab, rng, stats):
    """One block's serialized instances with the caller's `rng` for its block
    stream (kept for callers of the earlier API; see `block_records`)."""
    maker = InstanceMaker(settings, vocab)
    rng.shuffle(block)
    out = []
    seed = rng.random()
    for p, c, lo, hi in block_units(len(block), settings["dupe_factor"]):
        out.extend(maker.unit(block, f"r{seed}", 0, p, c, lo, hi, stats))
    rng.shuffle(out)
    return out


def task_blocks(inputs, settings, stats, tokenizer=None, open_fn=None):
    """The blocks of one task: its input files read in order, tokenized, grouped."""
    tokenizer = tokenizer or get_tokenizer(settings["vocab_file"], settings["do_lower_case"])

    def docs():
        for path in inputs:
            yield from read_documents(path, stats, open_fn=open_fn)

    return iter_blocks(tokenize_documents(docs(), tokenizer, stats), settings["block_tokens"])


# ------------------------------------------------------ parallel local writer
_WORKER = {}

# A worker process runs this (python -c): it loads this module without the
# bert_tf package's __init__ (which imports Keras and TensorFlow), so a worker
# costs tens of MiB, and serves work units read from stdin as pickles. (That is
# why this module imports TensorFlow and bert_tf.text inside the functions that
# need them: a worker never calls those.)
_WORKER_MAIN = r"""
import os, pickle, sys, traceback, types
for name in ("bert_tf", "bert_tf.pretraining"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.join(sys.argv[1], *name.split("."))]
    sys.modules[name] = pkg
from bert_tf.pretraining import data as pd
inp, out = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr
pd._init_worker(*pickle.load(inp))
while True:
    try:
        args = pickle.load(inp)
    except EOFError:
        break
    try:
        res = (True, pd._worker_unit(*args))
    except BaseException as e:
        res = (False, f"{e!r}\n{traceback.format_exc()}")
    pickle.dump(res, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()
"""


class _WorkerPool:
    """Worker processes fed by one thread each from a shared queue (submit ->
    concurrent.futures.Future). Plain subprocesses, so a worker neither imports
    the caller's `__main__` nor the bert_tf package (see `_WORKER_MAIN`)."""

    def __init__(self, num_workers, settings, vocab):
        import pickle
        import queue
        import subprocess
        import threading

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._queue = queue.Queue()
        self._procs, self._threads = [], []
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        for _ in range(num_workers):
            p = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, root], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env=env)
            pickle.dump((settings, vocab), p.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            p.stdin.flush()
            th = threading.Thread(target=self._serve, args=(p,), daemon=True)
            th.start()
            self._procs.append(p)
            self._threads.append(th)

    def _serve(self, proc):
        import pickle

        while True:
            item = self._queue.get()
            if item is None:
                return
            args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                pickle.dump(args, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                ok, value = pickle.load(proc.stdout)
            except (OSError, EOFError) as e:
                future.set_exception(RuntimeError(f"pretraining data worker {proc.pid} died: {e!r}"))
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(f"in pretraining data worker {proc.pid}: {value}"))

    def submit(self, *args):
        import concurrent.futures

        future = concurrent.futures.Future()
        self._queue.put((args, future))
        return future

    def shutdown(self):
        for _ in self._threads:
            self._queue.put(None)
        for p in self._procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for th in self._threads:
            th.join(timeout=60)
        for p in self._procs:
            try:
                p.wait(timeout=60)
            except Exception:  # noqa: BLE001
                p.kill()
        while not self._queue.empty():  # futures never served (an error stopped the run)
            item = self._queue.get_nowait()
            if item is not None:
                item[1].cancel()


def _init_worker(settings, vocab):
    _WORKER["maker"] = InstanceMaker(settings, vocab)
    _WORKER["block"] = (None, None)


def _load_block(path):
    import pickle

    cached_path, block = _WORKER.get("block", (None, None))
    if cached_path != path:
        _WORKER["block"] = (None, None)
        with open(path, "rb") as f:
            block = pickle.load(f)
        _WORKER["block"] = (path, block)
    return block


def _worker_unit(path, task_index, block_index, pass_index, chunk, lo, hi):
    """In a worker process: one unit -> (TFRecord-framed records, stats)."""
    maker = _WORKER["maker"]
    stats = new_stats()
    recs = maker.unit(_load_block(path), task_index, block_index, pass_index, chunk, lo, hi, stats)
    frame = maker.framer
    return [frame(r) for r in recs], dict(stats)


class _Done:
    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class TaskOutput:
    """The output files of one task, TFRecord-framed records dealt round-robin
    across them (continuing from block to block). `open_fn(path)` opens a file
    for binary writing (default `tf.io.gfile.GFile`)."""

    def __init__(self, paths, open_fn=None):
        if open_fn is None:
            import tensorflow as tf

            def open_fn(p):
                return tf.io.gfile.GFile(p, "wb")

        self.paths = list(paths)
        self.files = [open_fn(p) for p in self.paths]
        self.counts = [0] * len(self.files)
        self.next = 0

    def write(self, framed, chunk=8192):
        n = len(self.files)
        for j in range(min(n, len(framed))):
            w = (self.next + j) % n
            part = framed[j::n] if n > 1 else framed
            for i in range(0, len(part), chunk):  # bounded copies, not one block-sized join
                self.files[w].write(b"".join(part[i:i + chunk]))
            self.counts[w] += len(part)
        self.next = (self.next + len(framed)) % n

    def close(self):
        for f in self.files:
            f.close()


def _write_tasks(tasks, settings, vocab, workers, stats, on_block=None, max_blocks_in_flight=1):
    """Runs `tasks` (`(task_index, inputs, outputs)`): this process reads and tokenizes (TensorFlow), worker
    processes make the instances of each block's units (pure Python); blocks are
    finished in order, so the records are those of `block_records`."""
    import collections as _c
    import pickle
    import shutil
    import tempfile

    tokenizer = get_tokenizer(settings["vocab_file"], settings["do_lower_case"])
    pool = tmpdir = None
    maker = InstanceMaker(settings, vocab)
    if workers > 1:
        pool = _WorkerPool(workers, settings, vocab)
        tmpdir = tempfile.mkdtemp(prefix="bert_tf_blocks_")
    in_flight = _c.deque()
    per_output = {}

    def finish(entry):
        kind = entry[0]
        if kind == "close":
            out = entry[1]
            out.close()
            per_output.update(zip(out.paths, out.counts))
            return
        _, out, rng, futures, path = entry
        framed = []
        for f in futures:
            recs, delta = f.result()
            framed.extend(recs)
            stats.update(delta)
        futures.clear()
        rng.shuffle(framed)
        out.write(framed)
        if path:
            os.remove(path)
        if on_block is not None:
            on_block()

    try:
        for t, inputs, outputs in tasks:
            out = TaskOutput(outputs)
            for b, block in enumerate(task_blocks(inputs, settings, stats, tokenizer)):
                rng = random.Random(block_seed(settings["random_seed"], t, b))
                rng.shuffle(block)
                units = block_units(len(block), settings["dupe_factor"])
                if pool is None:
                    futures = []
                    for unit in units:
                        delta = new_stats()
                        recs = maker.unit(block, t, b, *unit, delta)
                        futures.append(_Done(([maker.framer(r) for r in recs], dict(delta))))
                    path = None
                else:
                    path = os.path.join(tmpdir, f"block-{t}-{b}.pickle")
                    with open(path, "wb") as f:
                        pickle.dump(block, f, protocol=pickle.HIGHEST_PROTOCOL)
                    futures = [pool.submit(path, t, b, *unit) for unit in units]
                del block
                in_flight.append(("block", out, rng, futures, path))
                while sum(e[0] == "block" for e in in_flight) > max_blocks_in_flight:
                    finish(in_flight.popleft())
            in_flight.append(("close", out))
        while in_flight:
            finish(in_flight.popleft())
    finally:
        if pool is not None:
            pool.shutdown()
            shutil.rmtree(tmpdir, ignore_errors=True)
    return per_output


def run_task(task_index, inputs, outputs, settings, report=None):
    """Runs one task in this process (no workers): streams `inputs`, writes
    `outputs` (round-robin). Returns stats with `per_output`: the same records as
    that task within `create_pretraining_data`."""
    vocab = VocabInfo(settings["vocab_file"])
    stats = new_stats()
    per_output = _write_tasks([(task_index, inputs, outputs)], settings, vocab, 1, stats)
    out = {k: stats[k] for k in new_stats()}
    out["per_output"] = per_output
    if report is not None:
        report(("progress", task_index, dict(out)))
    return out


def expand_input_files(spec):
    """Comma list of paths/globs -> sorted existing files (order of the list kept)."""
    import tensorflow as tf

    files = []
    for pattern in [p.strip() for p in (spec if isinstance(spec, (list, tuple)) else str(spec).split(","))]:
        if not pattern:
            continue
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"--input_file pattern {pattern!r} matches no file")
        files.extend(matches)
    return files


def output_file_names(spec, num_output_shards=None):
    """`--output_file` (comma list, or a prefix with `num_output_shards`) -> list of paths.

    >>> output_file_names("/tmp/x", 2)
    ['/tmp/x-00000-of-00002.tfrecord', '/tmp/x-00001-of-00002.tfrecord']
    """
    if num_output_shards:
        n = int(num_output_shards)
        return [f"{spec}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return [p.strip() for p in str(spec).split(",") if p.strip()]


def available_cpus():
    """CPUs this process may run on (its affinity mask; cgroup-unaware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_settings(vocab_file, do_lower_case=True, max_seq_length=128, max_predictions_per_seq=20,
                  masked_lm_prob=0.15, dupe_factor=10, short_seq_prob=0.1, random_seed=12345,
                  do_whole_word_mask=False, block_tokens=DEFAULT_BLOCK_TOKENS):
    """Checks Google's flags and returns the settings dict every stage uses
    (the local tool and the Beam pipeline alike)."""
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length must be >= 5, got {max_seq_length}")
    if not 0 <= masked_lm_prob < 1:
        raise ValueError(f"masked_lm_prob must be in [0, 1), got {masked_lm_prob}")
    if max_predictions_per_seq < 1:
        raise ValueError(f"max_predictions_per_seq must be >= 1, got {max_predictions_per_seq}")
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be >= 1, got {dupe_factor}")
    return dict(vocab_file=str(vocab_file), do_lower_case=bool(do_lower_case),
                max_seq_length=int(max_seq_length),
                max_predictions_per_seq=int(max_predictions_per_seq),
                masked_lm_prob=float(masked_lm_prob), dupe_factor=int(dupe_factor),
                short_seq_prob=float(short_seq_prob), random_seed=int(random_seed),
                do_whole_word_mask=bool(do_whole_word_mask), block_tokens=int(block_tokens))


def summary_line(stats):
    """The final counts line both tools print."""
    return (f"documents={stats['documents']} sentences={stats['sentences']} tokens={stats['tokens']} "
            f"instances={stats['instances']} random_next={stats['random_next']} "
            f"masked={stats['masked']} skipped_non_utf8_lines={stats['skipped_non_utf8_lines']} "
            f"skipped_empty_lines={stats['skipped_empty_lines']}")


def create_pretraining_data(input_files, output_files, vocab_file, do_lower_case=True,
                            max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15,
                            dupe_factor=10, short_seq_prob=0.1, random_seed=12345,
                            do_whole_word_mask=False, block_tokens=DEFAULT_BLOCK_TOKENS,
                            num_workers=None, verbose=True, log=None, progress_seconds=10.0):
    """Writes pretraining TFRecords; returns total counts.

    Args mirror Google's flags; `input_files`/`output_files` are lists (see
    `expand_input_files` / `output_file_names`). `masked_lm_prob=0` writes
    unmasked pair records (for `bert_tf.pretraining.masking` dynamic masking).
    `num_workers`: processes that make instances (default: the CPUs available
    to this process; 1 = all in this process). This process reads and
    tokenizes; workers take fixed work units of each block (`block_units`), so
    the records do not depend on `num_workers`.

    Returns a dict: `documents`, `sentences`, `tokens`, `instances`,
    `random_next`, `forced_random_next` (of those, pairs from one-sentence
    chunks, which Google always makes random), `masked`, `tokens_in_instances`,
    `skipped_non_utf8_lines`, `skipped_empty_lines` (lines without wordpieces),
    `per_output` (path -> instances), `seconds`, `instances_per_second`.
    """
    settings = make_settings(vocab_file, do_lower_case, max_seq_length, max_predictions_per_seq,
                             masked_lm_prob, dupe_factor, short_seq_prob, random_seed,
                             do_whole_word_mask, block_tokens)
    vocab = VocabInfo(vocab_file)  # fail early with a clear message
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    input_files = list(input_files)
    output_files = list(output_files)
    tasks = plan_tasks(input_files, output_files)
    for p in output_files:
        d = os.path.dirname(p)
        if d:
            os.makedirs(d, exist_ok=True)
    workers = max(1, int(num_workers or available_cpus()))
    start = time.time()
    stats = new_stats()
    last_print = [start]

    def show(final=False):
        dt = max(time.time() - start, 1e-9)
        if verbose:
            log(f"{'done' if final else 'progress'}: documents={stats['documents']} "
                f"instances={stats['instances']} instances/s={stats['instances'] / dt:.0f} "
                f"elapsed={dt:.1f}s")

    def on_block():
        if time.time() - last_print[0] >= progress_seconds:
            last_print[0] = time.time()
            show()

    if verbose:
        log(f"create_pretraining_data: {len(input_files)} input file(s) -> {len(output_files)} "
            f"output file(s), {len(tasks)} task(s), {workers} worker process(es)"
            f"{'' if workers > 1 else ' (in this process)'}")
    per_output = _write_tasks([(t, ins, outs) for t, (ins, outs) in enumerate(tasks)], settings, vocab,
                              workers, stats, on_block=on_block)
    seconds = time.time() - start
    out = {k: stats[k] for k in new_stats()}
    out["per_output"] = per_output
    out["seconds"] = seconds
    out["instances_per_second"] = stats["instances"] / max(seconds, 1e-9)
    if verbose:
        show(final=True)
        log(summary_line(stats))
        for p, n in per_output.items():
            log(f"  wrote {n} instances to {p}")
    return out
