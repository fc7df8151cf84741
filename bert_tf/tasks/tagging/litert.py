"""LiteRT export of the token tagger (`bert_tf.BertTokenTagger`): raw strings in, tags with byte offsets out.

`export_litert_tagger(tagger, export_dir, precision=...)` writes ``model.tflite`` + ``model.json`` like
`bert_tf.tasks.classification.litert.export_litert`. LiteRT has no kernel for ``Substr`` (nor for the regex word splitting the
SavedModel export uses), so the .tflite returns offsets, not strings. Signature ``serving_default``:
``text`` [B] ->

* ``tag_ids`` int32 [B, P], ``tags`` string [B, P], ``scores`` float32 [B, P]: the tag (and its probability) of
  each wordpiece (P = longest row's pieces, at most ``max_seq_length - 2``);
* ``word_start`` int32 [B, P]: 1 at the first piece of a word: the tag of a word is its first piece's, as in
  training; a word runs until the next ``word_start``;
* ``start_offsets``, ``end_offsets`` int32 [B, P]: UTF-8 byte offsets of each piece in the input string
  (``text.encode()[start:end]``); a word spans from its first piece's start to its last piece's end;
* ``num_pieces`` int32 [B]: the real pieces of each row; the rest is padding (tag id 0, offsets 0, and
  ``tags`` the first label: LiteRT has no string select).

Words come from ``FastBertNormalize`` + ``FastWordpieceTokenize`` (the LiteRT kernels), which split words as
Google's rules do on printable ASCII; a text longer than ``max_seq_length - 2`` pieces is cut there (the
SavedModel export instead tags it in chunks).
"""

import tensorflow as tf
import tensorflow_text as tf_text

from bert_tf.export import litert
from bert_tf.text.packer import BertPacker
from bert_tf.text.tokenizer import MAX_CHARS_PER_WORD, wordpiece_vocab

OUTPUTS = ["tag_ids", "tags", "scores", "word_start", "start_offsets", "end_offsets", "num_pieces"]


class LiteRTTaggerModel(tf.Module):
    """The tagger's .tflite functions: strings -> pieces with byte offsets -> encoder -> per-piece tags."""

    def __init__(self, tagger, seq_length=None):
        super().__init__(name="litert_tagger_model")
        pre = tagger.preprocessor
        self._model = tagger
        self.labels = list(tagger.labels)
        self.seq_length = int(seq_length or pre.seq_length)
        self.lower_case = bool(pre.lower_case)
        vocab = list(pre.vocabulary)
        self.normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=self.lower_case)
        self.wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=wordpiece_vocab(vocab), max_bytes_per_word=MAX_CHARS_PER_WORD, token_out_type=tf.int32,
            unknown_token="[UNK]", no_pretokenization=False)
        self._continuation = tf.constant([t.startswith("##") for t in vocab], tf.bool)
        ids = pre.special_tokens
        self.packer = BertPacker(self.seq_length, cls_id=ids["cls_id"], sep_id=ids["sep_id"], pad_id=ids["pad_id"],
                                 dynamic_padding=True, pad_to_multiple_of=None, name="litert_tagger_packer")
        self.input_names, self.output_names, self.is_pair = ["text"], list(OUTPUTS), False
        self.serving_default = tf.function(self.outputs, input_signature=[tf.TensorSpec([None], tf.string,
                                                                                           name="text")],
                                           autograph=False)

    def pieces(self, text):
        """text [B] -> (ids, starts, ends) int32 [B, seq_length - 2] zero padded, lengths [B] (not cut)."""
        normalized, offsets = self.normalizer.normalize_with_offsets(text)
        ids, starts, ends = self.wordpiece.tokenize_with_offsets(normalized)
        width = self.seq_length - 2
        shape = tf.stack([tf.shape(text)[0], width])
        # Offsets in the normalized text -> in the input: a dense gather (the ragged one needs RaggedRange).
        to_input = tf.cast(offsets.to_tensor(), tf.int32)

        def dense(x):
            return tf.cast(x.to_tensor(default_value=0, shape=shape), tf.int32)

        return (dense(ids), tf.gather(to_input, dense(starts), batch_dims=1),
                tf.gather(to_input, dense(ends), batch_dims=1), tf.cast(ids.row_lengths(), tf.int32))

    def outputs(self, text):
        ids, starts, ends, lengths = self.pieces(text)
        features = self.packer.pack_dense(ids, lengths, seq_length=self.seq_length)
        x = litert.encoder_sequence_output(self._model.encoder, features)
        logits = tf.cast(self._model.head(x), tf.float32)[:, 1:-1]  # drop [CLS]; [SEP] or padding at the end
        n = tf.minimum(lengths, self.seq_length - 2)
        width = tf.shape(logits)[1]
        real = tf.range(width)[tf.newaxis, :] < n[:, tf.newaxis]
        pieces = ids[:, :width]
        probabilities = tf.nn.softmax(logits, axis=-1)
        tag_ids = tf.where(real, tf.argmax(logits, axis=-1, output_type=tf.int32), 0)
        return {
            "tag_ids": tag_ids,
            "tags": tf.gather(tf.constant(self.labels, tf.string), tag_ids),  # no string select in LiteRT
            "scores": tf.where(real, tf.reduce_max(probabilities, axis=-1), 0.0),
            "word_start": tf.cast(real & tf.logical_not(tf.gather(self._continuation, pieces)), tf.int32),
            "start_offsets": tf.where(real, starts[:, :width], 0),
            "end_offsets": tf.where(real, ends[:, :width], 0),
            "num_pieces": n,
        }


def convert_tagger(tagger, precision="dynamic_int8", representative_texts=None, seq_length=None):
    """The .tflite bytes of a `BertTokenTagger` (raw strings in), at one of `bert_tf.export.litert.PRECISIONS`."""
    module = LiteRTTaggerModel(tagger, seq_length=seq_length)
    module.serving_default(tf.constant(["a"]))
    return litert.convert_module(module, {"serving_default": module.serving_default}, precision,
                                 representative_texts), module


def export_litert_tagger(tagger, export_dir, precision="dynamic_int8", representative_texts=None, task=None,
                         seq_length=None):
    """Writes ``<export_dir>/model.tflite`` + ``model.json`` for a `BertTokenTagger`; returns the .tflite path."""
    tflite, module = convert_tagger(tagger, precision, representative_texts, seq_length)
    runner = litert.load_interpreter(tflite).get_signature_runner("serving_default")
    runner(text=tf.constant(["A check request in Paris."]).numpy().astype(object))
    metadata = {
        "format": "bert_tf LiteRT token tagger",
        "task": task,
        "precision": precision,
        "labels": module.labels,
        "tag_scheme": tagger.tag_scheme,
        "signatures": {"serving_default": {"inputs": module.input_names, "outputs": module.output_names}},
        "inputs": module.input_names,
        "outputs": module.output_names,
        "offsets": "UTF-8 byte offsets into the input string, per wordpiece",
        "max_seq_length": module.seq_length,
        "lower_case": module.lower_case,
        "representative_examples": len(representative_texts or []) if precision == "int8" else 0,
        "runtime": litert.RUNTIME,
        "size_bytes": len(tflite),
    }
    return litert.write_litert_export(export_dir, tflite, metadata)
