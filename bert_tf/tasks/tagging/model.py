"""`BertTokenTagger`: the token-tagging (named entity) task model.

It holds its encoder, its preprocessor (tokenizer + packer, vocabulary inside)
and a per-token head, and knows its tag set and scheme. Words are split into
wordpieces in the graph; each word is labelled at its first piece; sentences
longer than `seq_length - 2` pieces are cut into chunks at word boundaries and
their words' logits put back together (`bert_tf.tasks.tagging.ops`).

Inputs:

* token ids (the packer's dict) -> token logits `[B, T, num_tags]` (training);
* `tag_words(words)`: words, ragged string `[B, (W)]` -> `{"logits", "tag_ids",
  "scores"}` per word (what evaluation and `--do_predict` use);
* `tag_text(text)`: raw strings `[B]`, split into words by Google's BERT rules ->
  words, tags and entity spans with code-point offsets (what the export serves).

Example:

>>> import os, tempfile
>>> import tensorflow as tf
>>> import bert_tf
>>> vocab = os.path.join(tempfile.mkdtemp(), "vocab.txt")
>>> _ = open(vocab, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "john", "lives", "in", "paris"]))
>>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1,
...                                              num_attention_heads=2, intermediate_size=32))
>>> tagger = bert_tf.BertTokenTagger(enc, bert_tf.BertPreprocessor(vocab, seq_length=16),
...                                  labels=["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
>>> out = tagger.tag_text(tf.constant(["John lives in Paris"]))
>>> [w.decode() for w in out["words"].numpy()[0]]
['John', 'lives', 'in', 'Paris']
>>> out["tags"].shape, out["entity_start"].dtype
(TensorShape([1, 4]), tf.int64)
"""

import keras
import tensorflow as tf

from bert_tf.tasks.tagging import ops as tagging_ops
from bert_tf.text.preprocessor import BertPreprocessor
from bert_tf.model.task_model import BertTaskModel
from bert_tf.tasks.tagging import export as export_lib
from bert_tf.tasks.tagging import litert

TAG_SCHEMES = ("IOB1", "IOB2", "BIOES")


@keras.saving.register_keras_serializable(package="bert_tf")
class BertTokenTagger(BertTaskModel):
    """BERT encoder + dropout + dense head on `sequence_output`, with its preprocessor and tag set.

    Args:
      encoder: a :class:`bert_tf.BertEncoder`.
      preprocessor: a :class:`bert_tf.BertPreprocessor` (its `seq_length` bounds a chunk).
      labels: the tags in id order (`O`, `B-PER`, ...).
      tag_scheme: "IOB1", "IOB2" or "BIOES" (how the tags mark entities).
      dropout_rate, initializer_range: as `BertClassifier` (default: the encoder's).
    """

    task_kind = "tagging"
    has_litert_export = True

    def __init__(self, encoder, preprocessor, labels, tag_scheme="IOB2", dropout_rate=None, initializer_range=None,
                 **kwargs):
        if not isinstance(preprocessor, BertPreprocessor):
            raise TypeError(f"preprocessor must be a bert_tf.BertPreprocessor, got {type(preprocessor).__name__}")
        if tag_scheme not in TAG_SCHEMES:
            raise ValueError(f"tag_scheme must be one of {TAG_SCHEMES}, got {tag_scheme!r}")
        labels = [str(x) for x in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be at least 2 distinct tags, got {labels}")
        super().__init__(encoder, preprocessor, head_units=len(labels), dropout_rate=dropout_rate,
                         initializer_range=initializer_range, head_name="tag_logits", **kwargs)
        self.labels = labels
        self.tag_scheme = tag_scheme

    @property
    def num_tags(self):
        return len(self.labels)

    def call(self, inputs, training=None):
        x = self.dropout(self.encode(inputs, training=training)["sequence_output"], training=training)
        return keras.ops.cast(self.head(x), "float32")

    # ------------------------------------------------------------- words
    def pack_words(self, words, packer=None):
        """Words, ragged string `[B, (W)]` -> packed chunks + word maps (`bert_tf.tasks.tagging.ops.pack_words`)."""
        tokenizer = self.preprocessor.tokenizer
        return tagging_ops.pack_words(tokenizer.tokenize_words(words), packer or self.preprocessor.packer,
                                      tokenizer.special_tokens["unk_id"])

    def tag_words(self, words, training=False):
        """Per word: `logits` ragged `[B, (W), num_tags]`, `tag_ids` and `scores` (its tag's probability)."""
        packed = self.pack_words(words)
        logits = tagging_ops.gather_word_logits(self(packed["features"], training=training), packed)
        probabilities = tf.nn.softmax(logits.flat_values, axis=-1)
        tag_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        scores = tf.reduce_max(probabilities, axis=-1)
        splits = logits.row_splits
        return {"logits": logits, "tag_ids": tf.RaggedTensor.from_row_splits(tag_ids, splits),
                "scores": tf.RaggedTensor.from_row_splits(scores, splits)}

    def tag_text(self, text):
        """Raw strings `[B]` -> dense, padded outputs: `words`, `tags` `[B, W]` (padded ""), and the entities
        `entity_text`, `entity_type` `[B, E]` (""), `entity_start`, `entity_end` (Unicode code-point offsets,
        `text[start:end] == entity_text`; -1 padding) and `entity_score` (mean tag probability; 0 padding)."""
        text = tf.reshape(tf.convert_to_tensor(text, tf.string), [-1])
        words, starts, ends = self.preprocessor.tokenizer.split_words(text)
        tagged = self.tag_words(words)
        entities = tagging_ops.decode_entities(tagged["tag_ids"], self.labels)
        return _entity_outputs(text, words, starts, ends, tagged, entities, self.labels)

    # --------------------------------------------------------------- exports
    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """The serving SavedModel (`bert_tf.tasks.tagging.export`; option: `warmup_texts`)."""
        return export_lib.export_tagger(self, export_base, version=version, task=task or self.task_kind,
                                        overwrite=overwrite, **options)

    def export_litert(self, export_dir, precision="int8", representative_texts=None, task=None):
        """The .tflite (`bert_tf.tasks.tagging.litert`): per-wordpiece tags with byte offsets."""
        return litert.export_litert_tagger(self, export_dir, precision, representative_texts,
                                           task=task or self.task_kind)

    # ---------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update({"labels": self.labels, "tag_scheme": self.tag_scheme})
        return config


def _entity_outputs(text, words, starts, ends, tagged, entities, labels):
    """The dense serving outputs of `BertTokenTagger.tag_text`."""
    rows = entities["first_word"].value_rowids()
    first = entities["first_word"].flat_values + tf.gather(words.row_splits, rows)
    last = entities["last_word"].flat_values + tf.gather(words.row_splits, rows)
    start = tf.gather(starts.flat_values, first)
    end = tf.gather(ends.flat_values, last)
    clean = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="ignore", replace_control_characters=False)
    entity_text = tf.strings.substr(tf.gather(clean, rows), start, end - start, unit="UTF8_CHAR")
    cumulative = tf.concat([[0.0], tf.cumsum(tagged["scores"].flat_values)], 0)
    score = (tf.gather(cumulative, last + 1) - tf.gather(cumulative, first)) / tf.cast(last - first + 1, tf.float32)

    def dense(values, default):
        return entities["first_word"].with_flat_values(values).to_tensor(default_value=default)

    tags = tf.gather(tf.constant(labels, tf.string), tagged["tag_ids"].flat_values)
    return {
        "words": words.to_tensor(default_value=""),
        "tags": words.with_flat_values(tags).to_tensor(default_value=""),
        "entity_text": dense(entity_text, ""),
        "entity_type": entities["type"].to_tensor(default_value=""),
        "entity_start": dense(start, tf.constant(-1, tf.int64)),
        "entity_end": dense(end, tf.constant(-1, tf.int64)),
        "entity_score": dense(score, 0.0),
    }
