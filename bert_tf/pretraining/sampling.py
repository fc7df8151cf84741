"""The sampler of `bert_tf.pretraining.data`: Google's pair sampling and masking rules, one-segment packing,
`tf.train.Example` wire encoding and TFRecord framing, and the work units of a block -- pure Python.

`create_pretraining_data`'s worker processes import only this module (the standard library, no TensorFlow and
no `bert_tf` package `__init__`), so each costs tens of MiB; the rules and the reasons for the design are in
`bert_tf.pretraining.data`'s docstring. A wordpiece that joins the previous piece's segmenter word (whole-word
masking with `--word_segmenter`) travels as `~id` (a negative int) until `_pack_and_mask` (see `split_joins`).
"""

from __future__ import annotations

import collections
import pickle
import random
import struct

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


# --------------------------------------------------------------------- vocab
class VocabInfo:
    """Ids the sampler needs, from the tokens of a BERT `vocab.txt`
    (`bert_tf.pretraining.data.vocab_info(path)` reads the file).

    Attributes: `size`, `cls_id`, `sep_id`, `mask_id`, `pad_id`, and
    `is_continuation` (bytes; 1 where the token starts with `##`).
    """

    def __init__(self, tokens, vocab_file="vocab.txt"):
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
                     do_whole_word_mask, joins=None):
    """Google's masking given the candidate positions `cand` (all but [CLS]/[SEP]).

    Candidates (whole words with `do_whole_word_mask`) are visited in uniformly
    random order; a word that would overflow `num_to_predict` is skipped. Each
    chosen position becomes [MASK] with probability 0.8, stays with 0.1, or
    becomes a uniformly random id with 0.1. Returns `(out, positions, labels)`.
    `joins[i]` (with a word segmenter) puts position `i` in the previous
    candidate's group as a `##` piece would be.
    """
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(ids) * masked_lm_prob))))
    if do_whole_word_mask:
        cont = vocab.is_continuation
        groups = []
        for i in cand:  # Google: a ## piece joins the previous candidate's group
            if groups and (cont[ids[i]] or (joins is not None and joins[i])):
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


def split_joins(ids):
    """Ids from a tokenizer with a word segmenter -> `(ids, joins)`: a piece that
    joins the previous piece's segmenter word is stored as `~id` (negative) from
    tokenization until packing, so the sampling code moves plain ints."""
    return [t if t >= 0 else ~t for t in ids], [t < 0 for t in ids]


def _pack_and_mask(tokens_a, tokens_b, vocab, max_seq_length, max_predictions_per_seq, masked_lm_prob,
                   rng, do_whole_word_mask, segmented=False):
    """`[CLS] a [SEP] b [SEP]`, or `[CLS] a [SEP]` for `tokens_b=None` (one
    segment: `a` may hold [SEP]s between documents), masked by Google's rule."""
    la = len(tokens_a)
    n = la + 2 if tokens_b is None else la + len(tokens_b) + 3
    if n > max_seq_length:
        raise AssertionError(f"instance of {n} tokens exceeds max_seq_length={max_seq_length}")
    ids = [vocab.cls_id]
    ids.extend(tokens_a)
    ids.append(vocab.sep_id)
    if tokens_b is not None:
        ids.extend(tokens_b)
        ids.append(vocab.sep_id)
    joins = None
    if segmented:
        ids, joins = split_joins(ids)
    if masked_lm_prob > 0:
        if tokens_b is None:
            sep = vocab.sep_id
            cand = [i for i in range(1, la + 1) if ids[i] != sep]
        else:
            cand = list(range(1, la + 1))
            cand.extend(range(la + 2, n - 1))
        out, positions, labels = _choose_and_mask(ids, cand, masked_lm_prob, max_predictions_per_seq,
                                                  vocab, rng, do_whole_word_mask, joins)
    else:
        out, positions, labels = ids, [], []
    return out, la + 2, positions, labels


def pack_documents(documents, max_seq_length, sep_id, rng):
    """One segment per instance, for MLM without next-sentence prediction:
    the documents' sentences run on, a [SEP] between documents, cut into
    chunks of `max_seq_length - 2` tokens (the first chunk a random length, so
    that each pass cuts elsewhere). Returns the chunks (lists of ids)."""
    size = max_seq_length - 2
    chunks, current = [], []
    room = rng.randint(1, size)
    for d, document in enumerate(documents):
        pieces = [[sep_id]] if d and current else []
        pieces.extend(document)
        for piece in pieces:
            k = 0
            while k < len(piece):
                take = piece[k:k + room]
                current.extend(take)
                k += len(take)
                room -= len(take)
                if room == 0:
                    chunks.append(current)
                    current, room = [], size
    if current and any(t != sep_id for t in current):
        chunks.append(current)
    return chunks


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


def new_stats():
    """Zeroed counters of a run (documents, sentences, tokens, instances, skips...)."""
    return collections.Counter(
        documents=0, sentences=0, tokens=0, instances=0, random_next=0, forced_random_next=0, masked=0,
        tokens_in_instances=0, skipped_non_utf8_lines=0, skipped_empty_lines=0)


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
        segmented = bool(s["word_segmenter"])
        rng = random.Random(f"{block_seed(s['random_seed'], task_index, block_index)}:{pass_index}:{chunk}")
        if s["nsp"]:
            instances = (pair for idx in range(lo, hi)
                         for pair in create_pairs_from_document(block, idx, L, short, rng, stats))
        else:
            instances = ((a, None, False) for a in pack_documents(block[lo:hi], L, vocab.sep_id, rng))
        out = []
        n_random = n_tokens = n_masked = 0
        for a, b, is_random in instances:
            ids, len_a, positions, labels = _pack_and_mask(a, b, vocab, L, P, prob, rng, wwm, segmented)
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


# ------------------------------------------------------ parallel local writer
_WORKER = {}


def _init_worker(settings, vocab):
    _WORKER["maker"] = InstanceMaker(settings, vocab)
    _WORKER["block"] = (None, None)


def _load_block(path):
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
