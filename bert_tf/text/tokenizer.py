"""`BertTokenizer`: Google's BERT tokenization rules as a Keras layer (tensorflow-text ops, in the graph).

Token ids follow Google's BERT tokenizer rules (google-research/bert
`tokenization.py`: BasicTokenizer + WordpieceTokenizer) exactly:

* bytes are read as UTF-8 and invalid bytes are dropped;
* U+0000, U+FFFD and Cc/Cf characters (except TAB/LF/CR) are removed, TAB/LF/CR
  and Zs characters are whitespace;
* CJK ideographs become words of their own;
* uncased: Python-style lower-casing, NFD, removal of Mn marks;
* every punctuation character (ASCII symbols and Unicode P*) is its own word;
* greedy longest-match WordPiece; a word longer than 200 characters is `[UNK]`.

Unicode character classes (P*, Mn, Cf, Zs) are taken from the running Python's
`unicodedata` when the layer is built, so the layer agrees with Google's Python
reference on the same interpreter even for characters whose category changed
between Unicode versions.

How it runs fast: rows of printable ASCII (most English text) go straight to
tensorflow-text's `FastBertNormalizer` + `FastWordpieceTokenizer` (what
`FastBertTokenizer` is made of), whose normalisation equals Google's on
printable ASCII (lower-casing, splitting) and whose 200-byte word limit equals
Google's 200-character limit there. Other rows go through explicit TF string
ops (`unicode_transcode`, `regex_replace`, `strings.lower`, NFD) that implement
the rules above, then through `FastWordpieceTokenizer`. The two results are
stitched back in order as dense tensors.

The vocabulary is data of the layer: `get_config()` holds the token list, so a
saved model (`.keras`, SavedModel) needs no `vocab.txt` beside it.
"""


import functools
import sys
import unicodedata

import tensorflow as tf
import tensorflow_text as tf_text

import keras

# Google's constants, written once in the TensorFlow-free word split that counts words for a vocabulary: the
# 200-character word limit, the CJK ideograph blocks surrounded by spaces, the ASCII symbols treated as
# punctuation, the placeholder put in place of a longer word.
from bert_tf.text.word_split import ASCII_PUNCT_RANGES, CJK_RANGES, LONG_WORD_PLACEHOLDER, MAX_CHARS_PER_WORD

REQUIRED_TOKENS = ("[CLS]", "[SEP]", "[UNK]", "[PAD]")


def is_cjk_ideograph(char):
    """True for a character of the CJK ideograph blocks (Google's `_is_chinese_char`)."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def load_vocab(path):
    """Reads a BERT `vocab.txt`: one token per line, id = line number.

    Lines are stripped of surrounding whitespace (as Google's loader does).
    Raises `FileNotFoundError` naming `path` if it does not exist, and
    `ValueError` naming `path` if it is empty, not UTF-8, or lacks any of
    `[CLS]`, `[SEP]`, `[UNK]`, `[PAD]`.

    >>> import bert_tf, tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "vocab.txt")
    >>> _ = open(p, "w").write("[PAD]\\n[UNK]\\n[CLS]\\n[SEP]\\nhello\\n")
    >>> bert_tf.load_vocab(p)
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'hello']
    """
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"BERT vocab file not found: {path!r}")
    if tf.io.gfile.isdir(path):
        raise ValueError(f"BERT vocab path {path!r} is a directory, expected a vocab.txt file")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"BERT vocab file {path!r} is not valid UTF-8: {e}") from None
    tokens = [line.strip() for line in text.split("\n")]
    if tokens and tokens[-1] == "":  # final newline
        tokens.pop()
    if not tokens:
        raise ValueError(f"BERT vocab file {path!r} is empty")
    missing = [t for t in REQUIRED_TOKENS if t not in tokens]
    if missing:
        raise ValueError(
            f"BERT vocab file {path!r} lacks required special token(s) {missing}; "
            f"a BERT vocab must contain {list(REQUIRED_TOKENS)}"
        )
    return tokens


def _token_ids(tokens):
    """token -> id; like Google's dict-based vocab, a repeated token keeps its last id."""
    return {t: i for i, t in enumerate(tokens)}


def wordpiece_vocab(tokens):
    """The list handed to tf-text: ids kept, unreachable entries made unique.

    tf-text rejects empty and duplicate tokens; Google's loader would map a
    repeated token to its last line and an empty line to nothing a word can
    produce, so those lines get unique placeholders that no text can match.
    """
    last = _token_ids(tokens)
    out = []
    for i, t in enumerate(tokens):
        if t == "" or last[t] != i:
            out.append(f"[bert_tf unused line {i}]")
        else:
            out.append(t)
    return out


def _ranges_to_class(ranges):
    parts = []
    for lo, hi in ranges:
        parts.append(r"\x{%X}" % lo if lo == hi else r"\x{%X}-\x{%X}" % (lo, hi))
    return "".join(parts)


@functools.lru_cache(maxsize=None)
def _unicode_classes():
    """RE2 character-class bodies for the categories Google's rules use.

    Built from this interpreter's `unicodedata`, which is what Google's Python
    tokenizer consults.
    """
    cats = {"P": [], "Mn": [], "Cf": [], "Zs": []}
    current = {k: None for k in cats}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            cat = "Cs"
        else:
            cat = unicodedata.category(chr(cp))
        for key in cats:
            hit = cat.startswith("P") if key == "P" else cat == key
            if hit and current[key] is None:
                current[key] = cp
            elif not hit and current[key] is not None:
                cats[key].append((current[key], cp - 1))
                current[key] = None
    for key in cats:
        if current[key] is not None:
            cats[key].append((current[key], sys.maxunicode))
    return {k: _ranges_to_class(v) for k, v in cats.items()}


def _regexes():
    c = _unicode_classes()
    return {
        # Cc except TAB/LF/CR (Cc is exactly U+0000-001F, U+007F-009F), Cf, U+FFFD.
        "remove": r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F" + c["Cf"] + r"\x{FFFD}]",
        # Google's whitespace plus U+2028/U+2029, which Python's str.split() splits on.
        "space": r"[\t\n\r" + c["Zs"] + r"\x{2028}\x{2029}]",
        "mn": "[" + c["Mn"] + "]",
        # Characters that become words of their own: CJK ideographs and punctuation.
        "split": "(["
        + _ranges_to_class(CJK_RANGES)
        + _ranges_to_class(ASCII_PUNCT_RANGES)
        + c["P"]
        + "])",
        # A word (after splitting) longer than Google's limit.
        "long_word": "[^ ]{%d,}" % (MAX_CHARS_PER_WORD + 1),
    }


def _valid_utf8(strings):
    """strings (any shape) -> [N] with invalid UTF-8 bytes dropped (Google's reader drops them too)."""
    return tf.strings.unicode_transcode(tf.reshape(tf.convert_to_tensor(strings, tf.string), [-1]), "UTF-8", "UTF-8",
                                        errors="ignore", replace_control_characters=False)


def _vocabulary_tokens(vocabulary):
    """A vocab.txt path or a list of tokens -> the validated token list."""
    if isinstance(vocabulary, (list, tuple)):
        tokens = [str(t) for t in vocabulary]
        if not tokens:
            raise ValueError("BERT vocabulary is empty")
        missing = [t for t in REQUIRED_TOKENS if t not in tokens]
        if missing:
            raise ValueError(f"BERT vocabulary lacks required special token(s) {missing}; "
                             f"a BERT vocab must contain {list(REQUIRED_TOKENS)}")
        return tokens
    return load_vocab(vocabulary)


@keras.saving.register_keras_serializable(package="bert_tf")
class BertTokenizer(keras.layers.Layer):
    """Raw strings -> WordPiece ids by Google's BERT rules (TensorFlow + tensorflow-text ops only).

    Args:
      vocabulary: a BERT `vocab.txt` path, or the list of tokens (id = position).
        It must contain `[CLS]`, `[SEP]`, `[UNK]`, `[PAD]`.
      lower_case: `True` for uncased models (lower-case, strip accents).

    Call: `tokenizer(strings)` on a `tf.string` tensor `[B]` -> int32
    `tf.RaggedTensor` `[B, None]` of wordpiece ids (no special tokens, not
    truncated). `tokenize_dense(strings, width)` gives the same ids as a dense
    zero-padded tensor plus the true lengths (what the packer consumes).

    Example:

    >>> import tensorflow as tf
    >>> from bert_tf.text.tokenizer import BertTokenizer
    >>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "!"])
    >>> tok(tf.constant(["Unaffable!"])).to_list()
    [[4, 5, 6, 7]]
    >>> BertTokenizer.from_config(tok.get_config()).vocabulary[:4]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]']
    """

    def __init__(self, vocabulary, lower_case=True, **kwargs):
        super().__init__(**kwargs)
        # Strings pass through Keras untouched (no float conversion).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.lower_case = bool(lower_case)
        self.vocabulary = _vocabulary_tokens(vocabulary)
        ids = _token_ids(self.vocabulary)
        self.vocab_size = len(self.vocabulary)
        self.special_tokens = {
            "vocab_size": self.vocab_size,
            "cls_id": ids["[CLS]"], "sep_id": ids["[SEP]"], "pad_id": ids["[PAD]"], "unk_id": ids["[UNK]"],
            "mask_id": ids.get("[MASK]"),
        }
        for token in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"):
            self.special_tokens[token] = ids.get(token)

        wp_vocab = wordpiece_vocab(self.vocabulary)
        # Placeholder for words over the length limit (`normalize_text` puts it in their place): a
        # private-use character that is not a vocab token, so WordPiece maps it to [UNK].
        cp = ord(LONG_WORD_PLACEHOLDER)
        while chr(cp) in ids:
            cp += 1
        self.long_word_placeholder = chr(cp)
        self._re = _regexes()
        # ASCII rows: tf-text's own normaliser is exact there, and the
        # 200-byte word limit is Google's 200-character limit.
        self._ascii_normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=self.lower_case)
        self._ascii_wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=wp_vocab, max_bytes_per_word=MAX_CHARS_PER_WORD, token_out_type=tf.int32,
            unknown_token="[UNK]", no_pretokenization=False)
        # Other rows: normalised and split into words by our own ops, then
        # WordPiece. Words over 200 characters are already replaced, and a
        # 200-character word has at most 800 UTF-8 bytes.
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=wp_vocab, max_bytes_per_word=4 * MAX_CHARS_PER_WORD, token_out_type=tf.int32,
            unknown_token="[UNK]", no_pretokenization=True)
        # Which ids are word continuations ("##..."): where the ASCII fast path's words begin.
        self._continuation = tf.constant([t.startswith("##") for t in wp_vocab], tf.bool)
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary": list(self.vocabulary), "lower_case": self.lower_case})
        return config

    def save_vocabulary(self, path):
        """Writes the vocabulary as a BERT `vocab.txt` (one token per line) to `path`; returns it."""
        with tf.io.gfile.GFile(path, "w") as f:
            f.write("\n".join(self.vocabulary) + "\n")
        return path

    def normalize_text(self, strings):
        """Google's BasicTokenizer as string ops: returns text whose words are
        separated by spaces (punctuation and CJK characters split off, words
        over 200 characters replaced by a placeholder that maps to [UNK]).

        Used for rows that are not pure ASCII; public for inspection/tests.
        """
        r = self._re
        s = tf.strings.unicode_transcode(strings, "UTF-8", "UTF-8", errors="ignore",
                                         replace_control_characters=False)
        s = tf.strings.regex_replace(s, r["remove"], "")
        s = tf.strings.regex_replace(s, r["space"], " ")
        if self.lower_case:
            s = tf.strings.lower(s, encoding="utf-8")
            s = tf_text.normalize_utf8(s, "NFD")
            s = tf.strings.regex_replace(s, r["mn"], "")
        s = tf.strings.regex_replace(s, r["split"], r" \1 ")
        s = tf.strings.regex_replace(s, r["long_word"], self.long_word_placeholder)
        return s

    def tokenize_dense(self, strings, width=None):
        """strings [B] -> (ids int32 [B, W] zero padded, lengths int32 [B]).

        W = `width` if given (pieces beyond are cut; lengths are not), else the
        longest row. Rows are routed by whether they are printable ASCII.
        """
        strings = tf.reshape(tf.convert_to_tensor(strings, dtype=tf.string), [-1])
        # Fast rows: printable ASCII plus TAB/LF/CR. (tf-text splits words at
        # other control characters, where Google deletes them.)
        ascii_pos, other_pos, inverse = self._route(strings, self._is_printable_ascii(strings))
        ascii_ids = self._ascii_pieces(tf.gather(strings, ascii_pos))
        # Split on the spaces our normaliser left (tf-text's own splitter would
        # also split on characters its newer ICU tables call punctuation).
        other_words = tf.strings.split(self.normalize_text(tf.gather(strings, other_pos)))
        other_ids = self._wordpiece.tokenize(other_words).merge_dims(-2, -1)
        # Back in input order, as dense tensors (a ragged gather would add RaggedGather to every export).
        lengths = tf.gather(tf.cast(tf.concat([ascii_ids.row_lengths(), other_ids.row_lengths()], 0), tf.int32),
                            inverse)
        if width is None:
            width = tf.maximum(tf.reduce_max(tf.concat([lengths, [0]], 0)), 0)
        ascii_dense = ascii_ids.to_tensor(default_value=0, shape=tf.stack([tf.size(ascii_pos), width]))
        other_dense = other_ids.to_tensor(default_value=0, shape=tf.stack([tf.size(other_pos), width]))
        dense = tf.gather(tf.concat([ascii_dense, other_dense], 0), inverse)
        if isinstance(width, int):
            dense = tf.ensure_shape(dense, [None, width])
        return dense, lengths

    def _ascii_pieces(self, strings):
        """Printable-ASCII strings [N] -> ids [N, (P)]: tf-text's BERT normaliser, then WordPiece."""
        return self._ascii_wordpiece.tokenize(self._ascii_normalizer.normalize(strings))

    @staticmethod
    def _is_printable_ascii(strings):
        """Rows (or words) the tf-text fast path handles exactly: printable ASCII plus TAB/LF/CR."""
        return tf.strings.regex_full_match(strings, r"[\t\n\r -~]*")

    @staticmethod
    def _route(strings, fast):
        """Positions of the rows where `fast` holds and of the others, and the permutation that undoes
        `concat([fast rows, other rows])`."""
        positions = tf.range(tf.shape(strings, out_type=tf.int32)[0])
        fast_pos = tf.boolean_mask(positions, fast)
        other_pos = tf.boolean_mask(positions, tf.logical_not(fast))
        return fast_pos, other_pos, tf.math.invert_permutation(tf.concat([fast_pos, other_pos], 0))

    def tokenize_with_word_offsets(self, strings):
        """strings [B] -> (ids int32, word_starts int64, word_ends int64), each ragged [B, (N)].

        The ids equal `tokenizer(strings)`; each piece carries the code-point span of
        the word it belongs to (the words of `split_words`), so in Python
        `text[word_starts[i]:word_ends[i]]` is the whole word of piece i.
        Printable-ASCII rows take the fast path (tf-text's normaliser and one
        FastWordpiece op with offsets: byte offsets are code points there, and a word
        starts at every piece that is not a "##" continuation); the others
        `split_words` + `tokenize_words`.
        """
        strings = _valid_utf8(strings)
        fast_pos, other_pos, inverse = self._route(strings, self._is_printable_ascii(strings))
        # Normalising printable ASCII keeps every byte in place, so offsets into the normalised text are
        # offsets into the input (FastBertTokenizer.tokenize_with_offsets maps them back with a ragged
        # gather that costs ~6 ms per call inside tf.data).
        ids, starts, ends = self._ascii_wordpiece.tokenize_with_offsets(
            self._ascii_normalizer.normalize(tf.gather(strings, fast_pos)))
        first = tf.logical_not(tf.gather(self._continuation, ids.flat_values))
        word = tf.cumsum(tf.cast(first, tf.int32)) - 1  # every row starts with a word's first piece
        num_words = tf.reduce_sum(tf.cast(first, tf.int32))
        fast = (ids,
                starts.with_flat_values(tf.gather(tf.math.unsorted_segment_min(starts.flat_values, word, num_words),
                                                  word)),
                ends.with_flat_values(tf.gather(tf.math.unsorted_segment_max(ends.flat_values, word, num_words),
                                                word)))
        words, word_starts, word_ends = self._split_valid_words(tf.gather(strings, other_pos))
        pieces = self.tokenize_words(words)  # [b, (W), (P)]
        piece_word = pieces.values.value_rowids()  # the word (flat index) of each piece
        other_ids = pieces.merge_dims(1, 2)
        other = (other_ids, other_ids.with_flat_values(tf.gather(word_starts.flat_values, piece_word)),
                 other_ids.with_flat_values(tf.gather(word_ends.flat_values, piece_word)))
        return tuple(tf.gather(tf.concat([tf.cast(f, o.dtype), o], axis=0), inverse) for f, o in zip(fast, other))

    def split_words(self, strings):
        """Google's word split with offsets: strings [B] -> (words, starts, ends), each ragged [B, (W)].

        Words are what Google's BasicTokenizer makes before WordPiece: runs between
        whitespace, with every punctuation character and CJK ideograph a word of its
        own. `starts`/`ends` are int64 Unicode code-point offsets into the input
        (invalid UTF-8 bytes dropped first, as Google does), so in Python
        `text[start:end] == word`. Words that normalise to nothing (only control or
        format characters) are left out.
        """
        return self._split_valid_words(_valid_utf8(strings))

    def _split_valid_words(self, strings):
        """`split_words` of strings [B] that are already valid UTF-8."""
        r = self._re
        # regex_split stops at a NUL byte; U+0001 is removed by the same rule and has the same length.
        _, byte_starts, byte_ends = tf_text.regex_split_with_offsets(
            tf.strings.regex_replace(strings, r"\x00", "\x01"),
            delim_regex_pattern=r["space"][:-1] + "]+|" + r["split"], keep_delim_regex_pattern=r["split"])
        row_strings = tf.gather(strings, byte_starts.value_rowids())
        words = byte_starts.with_flat_values(tf.strings.substr(
            row_strings, byte_starts.flat_values, byte_ends.flat_values - byte_starts.flat_values))
        # Byte offsets -> code-point offsets: the index of the character starting at each byte offset.
        _, char_starts = tf.strings.unicode_decode_with_offsets(strings, "UTF-8")
        byte_len = tf.strings.length(strings)[:, tf.newaxis]
        table = tf.concat([char_starts.to_tensor(default_value=tf.int64.max), tf.cast(byte_len, tf.int64)
                           + tf.zeros([tf.shape(strings)[0], 1], tf.int64)], axis=1)
        table = tf.sort(table, axis=1)  # the end-of-string offset goes before the padding

        def to_chars(byte_offsets):
            # one extra column: searchsorted cannot take a [B, 0] tensor (a batch without words)
            dense = tf.pad(byte_offsets.to_tensor(default_value=0), [[0, 0], [0, 1]])
            chars = tf.searchsorted(table, tf.cast(dense, tf.int64), side="left")
            return tf.RaggedTensor.from_tensor(tf.cast(chars, tf.int64), lengths=byte_offsets.row_lengths())

        starts, ends = to_chars(byte_starts), to_chars(byte_ends)
        # A word normalises to nothing iff it is only characters Google deletes (and, uncased, accent marks):
        # checked on the raw word instead of normalising every word twice (tokenize_words normalises them).
        empty = "(?:" + r["remove"] + ("|" + r["mn"] if self.lower_case else "") + ")*"
        keep = tf.logical_not(tf.strings.regex_full_match(tf.strings.regex_replace(words, r"\x00", "\x01"), empty))
        return (tf.ragged.boolean_mask(words, keep), tf.ragged.boolean_mask(starts, keep),
                tf.ragged.boolean_mask(ends, keep))

    def tokenize_words(self, words):
        """Words (a ragged string tensor [B, (W)], e.g. from `split_words`) -> wordpiece ids [B, (W), (P)].

        The ids of a row's words, concatenated, equal `tokenizer(strings)` of the
        row (each word gets at least one piece: `[UNK]` if nothing else).
        """
        flat = words.flat_values
        # Printable-ASCII words (nearly all) take the fast path, whose normalisation is exact there.
        fast_pos, other_pos, inverse = self._route(flat, self._is_printable_ascii(flat))
        fast = self._ascii_pieces(tf.gather(flat, fast_pos))  # [n, (P)]
        normalized = tf.strings.split(self.normalize_text(tf.gather(flat, other_pos)))  # [m, (k)], k = 1 mostly
        other = self._wordpiece.tokenize(normalized).merge_dims(-2, -1)  # [m, (P)]
        return words.with_flat_values(tf.gather(tf.concat([fast, other], axis=0), inverse))

    def call(self, strings):
        dense, lengths = self.tokenize_dense(strings)
        return tf.RaggedTensor.from_tensor(dense, lengths=lengths)

    def compute_output_spec(self, strings):
        return keras.KerasTensor((strings.shape[0] if strings.shape.rank else None, None), dtype="int32",
                                 ragged=True)
