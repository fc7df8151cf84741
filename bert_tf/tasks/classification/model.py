"""`BertClassifier`: the sentence (pair) classification / regression task model.

The task model holds its encoder, its preprocessor (tokenizer + packer, with
the vocabulary inside) and its head, and knows its labels and task kind. It is
the one object that `bert_tf.tasks.SentencePredictionTask` fine-tunes, that the
training checkpoints hold, that `model.save("m.keras")` writes and
`keras.saving.load_model` reads back, and that `bert_tf.tasks.classification.export.export_classifier`
turns into a serving SavedModel.

The head is Google's fine-tuning head: dropout on the encoder's
``pooled_output`` (the tanh-projected ``[CLS]`` vector) and one dense layer
to ``num_classes`` logits (``num_classes=1`` for regression, e.g. STS-B),
initialised from a truncated normal with ``initializer_range`` (0.02).
The logits are float32 even under a ``mixed_float16`` policy.

Inputs, all giving the same logits:

* raw text: a ``tf.string`` tensor ``[B]``;
* text pairs: a list/tuple of two ``tf.string`` tensors ``[B]``;
* token ids: the dict of int32 ``[B, T]`` tensors ``input_word_ids``,
  ``input_mask``, ``input_type_ids`` (what the preprocessor makes).

Example:

>>> import numpy as np
>>> import bert_tf
>>> config = bert_tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
...                             num_attention_heads=2, intermediate_size=64)
>>> model = bert_tf.BertClassifier(bert_tf.BertEncoder(config), num_classes=3)
>>> ids = {"input_word_ids": np.ones([2, 8], "int32"), "input_mask": np.ones([2, 8], "int32"),
...        "input_type_ids": np.zeros([2, 8], "int32")}
>>> tuple(model(ids).shape)
(2, 3)
"""

import keras
import numpy as np
import tensorflow as tf

from bert_tf.model.task_model import BertTaskModel
from bert_tf.tasks.classification import export as export_lib
from bert_tf.tasks.classification import litert
from bert_tf.text import windows as windows_lib
from bert_tf.text.packer import INPUT_KEYS


def _is_text(inputs):
    if isinstance(inputs, dict):
        return False
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and all(_is_text(x) for x in inputs)
    if isinstance(inputs, (str, bytes)):
        return True
    dtype = getattr(inputs, "dtype", None)
    if isinstance(inputs, np.ndarray):
        return dtype.kind in "OSU"
    return dtype in (tf.string, "string")


@keras.saving.register_keras_serializable(package="bert_tf")
class BertClassifier(BertTaskModel):
    """BERT encoder + dropout + dense head on ``pooled_output``, with its preprocessor.

    Args:
      encoder: a :class:`bert_tf.BertEncoder` (any Keras layer taking the input
        dict and returning a dict with ``pooled_output`` [B, H] works).
      preprocessor: a :class:`bert_tf.BertPreprocessor`; lets the model take raw
        strings and string pairs, and goes with the model into its config and
        exports. Optional for a model fed token ids only.
      num_classes: number of classes; 1 for regression.
      labels: class names in logit order (default "0".."C-1"; none for regression).
      is_pair: the task classifies sentence pairs (exports then read
        ``text_a``/``text_b`` from tf.Examples).
      dropout_rate: dropout before the head (``None``: the encoder's
        ``hidden_dropout_prob``, else 0.1).
      initializer_range: stddev of the head's truncated-normal kernel
        initializer (``None``: the encoder's ``initializer_range``, else 0.02).
      max_windows: single-text models only: > 1 classifies a text longer than the
        preprocessor's ``seq_length`` over up to this many sliding windows
        (`bert_tf.text.windows`); 1 (default): the first window only (truncation).
      window_stride: wordpieces between window starts (required with ``max_windows > 1``, 0 otherwise).
      window_pooling: ``mean`` or ``max`` of the window logits of a document.

    Windowed models take text, or features ``[B, W, T]`` (one row of windows per document,
    `windows.window_features`); features ``[B, T]`` are classified row by row as always.

    Call: ``model(inputs, training=False)`` -> float32 logits ``[B, num_classes]``.
    ``model.outputs_from_logits(logits)`` -> what a user wants: ``probabilities``,
    ``class_ids``, ``labels`` (regression: ``predictions``).

    Example (tiny random encoder; raw text through the preprocessor)::

        >>> import os, tempfile
        >>> import keras, tensorflow as tf
        >>> import bert_tf
        >>> vocab = os.path.join(tempfile.mkdtemp(), "vocab.txt")
        >>> _ = open(vocab, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film"]))
        >>> enc = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=7, hidden_size=16,
        ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
        >>> clf = bert_tf.BertClassifier(enc, bert_tf.BertPreprocessor(vocab, seq_length=8),
        ...                              num_classes=2, labels=["neg", "pos"])
        >>> logits = clf(tf.constant(["good film", "bad film"]))
        >>> tuple(logits.shape)
        (2, 2)
        >>> clf.outputs_from_logits(logits)["labels"].shape
        TensorShape([2])
        >>> path = os.path.join(tempfile.mkdtemp(), "clf.keras")
        >>> clf.save(path); os.remove(vocab)
        >>> keras.saving.load_model(path).labels
        ['neg', 'pos']
    """

    has_litert_export = True

    def __init__(self, encoder, preprocessor=None, num_classes=2, labels=None, is_pair=False, dropout_rate=None,
                 initializer_range=None, max_windows=1, window_stride=0, window_pooling="mean", **kwargs):
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = regression), got {num_classes}")
        if num_classes == 1:
            labels = None
        elif labels is None:
            labels = [str(i) for i in range(num_classes)]
        else:
            labels = [str(x) for x in labels]
            if len(labels) != num_classes:
                raise ValueError(f"{len(labels)} labels {labels} for num_classes={num_classes}")
        super().__init__(encoder, preprocessor, head_units=num_classes, dropout_rate=dropout_rate,
                         initializer_range=initializer_range, **kwargs)
        self.num_classes = num_classes
        self.labels = labels
        self.is_pair = bool(is_pair)
        self.max_windows, self.window_stride, self.window_pooling = int(max_windows), int(window_stride), window_pooling
        if self.is_windowed:
            if self.is_pair:
                raise ValueError("max_windows > 1 (sliding windows) is for single-text models, not pairs")
            if preprocessor is None:
                raise ValueError("max_windows > 1 needs the preprocessor (it cuts the windows)")
        windows_lib.check_windowing(preprocessor.seq_length if preprocessor is not None else 2 + self.window_stride,
                                    self.window_stride, self.max_windows, self.window_pooling)

    @property
    def is_windowed(self):
        """Texts are classified over several sliding windows (`max_windows` > 1)."""
        return self.max_windows > 1

    def window_features(self, texts, preprocessor=None):
        """Texts [B] -> (window features int32 [B, W, T], windows each whole text needs [B])."""
        return windows_lib.window_features(preprocessor or self.preprocessor, texts, self.window_stride,
                                           self.max_windows)

    @property
    def is_regression(self):
        return self.num_classes == 1

    # ------------------------------------------------------------------ call
    def preprocess(self, inputs):
        """Raw text (or a pair of string tensors) -> the input dict; dicts pass through."""
        if not _is_text(inputs):
            return inputs
        if self.preprocessor is None:
            raise ValueError("BertClassifier got text input but has no preprocessor; pass preprocessor= "
                             "or feed the dict of input_word_ids/input_mask/input_type_ids")
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
        if self.is_windowed:
            return self.window_features(inputs)[0]
        return self.preprocessor(inputs)

    def call(self, inputs, training=None):
        features = self.preprocess(inputs)
        if len(features["input_word_ids"].shape) == 3:
            return self._pooled_window_logits(features, training)
        return self._row_logits(features, training)

    def _row_logits(self, features, training):
        outputs = self.encode(features, training=training)
        x = self.dropout(outputs["pooled_output"], training=training)
        return keras.ops.cast(self.head(x), "float32")

    def _pooled_window_logits(self, features, training):
        """Features [B, W, T] -> document logits [B, C]: only real windows are encoded, then pooled."""
        shape = tf.shape(features["input_word_ids"])
        valid = windows_lib.valid_windows(features["input_mask"])
        rows = tf.cast(tf.where(tf.reshape(valid, [-1])), tf.int32)  # [N, 1] positions of real windows in [B * W]
        flat = {k: tf.gather_nd(tf.reshape(features[k], [-1, shape[2]]), rows) for k in INPUT_KEYS}
        logits = self._row_logits(flat, training)
        window_logits = tf.scatter_nd(rows, logits, tf.stack([shape[0] * shape[1], self.num_classes]))
        window_logits = tf.reshape(window_logits, [shape[0], shape[1], self.num_classes])
        return windows_lib.pool_windows(window_logits, valid, self.window_pooling)

    # --------------------------------------------------------------- outputs
    def outputs_from_logits(self, logits):
        """Logits -> the outputs users and exports see (the one place this mapping lives).

        Classification: ``probabilities`` [B, C] (softmax), ``class_ids`` [B]
        int64, ``labels`` [B] string; regression: ``predictions`` [B].
        """
        logits = tf.cast(logits, tf.float32)
        if self.is_regression:
            return {"predictions": logits[:, 0]}
        probabilities = tf.nn.softmax(logits, axis=-1)
        class_ids = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_ids": class_ids,
                "labels": tf.gather(tf.constant(self.labels, tf.string), class_ids)}

    def text_model(self, pair=None, name="bert_text_classifier"):
        """A functional Keras model: raw string(s) ``[B]`` -> ``{"probabilities", "logits"}``
        (regression: ``{"scores", "logits"}``).

        ``pair=True`` makes it take two string inputs, ``text_a`` and ``text_b``.
        """
        if self.preprocessor is None:
            raise ValueError("text_model() needs a BertClassifier built with preprocessor=")
        if self.is_windowed:
            raise ValueError("text_model() truncates to one window; a windowed classifier (max_windows > 1) takes "
                             "text directly (model(texts)) or serves through model.export")
        if pair:
            inputs = [keras.Input(shape=(), dtype="string", name="text_a"),
                      keras.Input(shape=(), dtype="string", name="text_b")]
        else:
            inputs = keras.Input(shape=(), dtype="string", name="text")
        logits = self(self.preprocessor(inputs), training=False)
        key, source = ("scores", "predictions") if self.is_regression else ("probabilities", "probabilities")
        outputs = {key: keras.layers.Lambda(lambda t: self.outputs_from_logits(t)[source], name=key)(logits),
                   "logits": keras.layers.Identity(name="logits_out")(logits)}
        return keras.Model(inputs, outputs, name=name)

    # ------------------------------------------------------- Google's head names
    def head_weights(self):
        """The head under Google's names: ``output_weights`` [C, H] and ``output_bias`` [C] (NumPy)."""
        kernel, bias = self.head.get_weights()
        return {"output_weights": kernel.T.copy(), "output_bias": bias.copy()}

    def load_head_weights(self, weights, source="weights"):
        """Set the head from Google-named ``output_weights`` [C, H] / ``output_bias`` [C]
        (e.g. ``from_pretrained(...).extra_weights`` of a fine-tuned Google checkpoint)."""
        missing = [k for k in ("output_weights", "output_bias") if k not in weights]
        if missing:
            raise KeyError(f"{source}: no classifier head weights {missing}")
        w = np.asarray(weights["output_weights"])
        b = np.asarray(weights["output_bias"])
        kernel, bias = self.head.get_weights()
        if w.shape != kernel.T.shape or b.shape != bias.shape:
            raise ValueError(f"{source}: output_weights {w.shape} / output_bias {b.shape} do not fit this "
                             f"classifier's head ({kernel.T.shape} / {bias.shape})")
        self.head.set_weights([w.T, b])

    # --------------------------------------------------------------- exports
    def export(self, export_base, version=None, task=None, overwrite=False, **options):
        """The serving SavedModel (`bert_tf.tasks.classification.export`; options: `pad_to_multiple_of`,
        `warmup_texts`)."""
        return export_lib.export_classifier(self, export_base, version=version, task=task, overwrite=overwrite,
                                            **options)

    def export_litert(self, export_dir, precision="int8", representative_texts=None, task=None):
        """The .tflite (`bert_tf.tasks.classification.litert`); pair models calibrate on (a, b) pairs."""
        if self.is_windowed:
            raise ValueError("the LiteRT export reads one window per text; a windowed classifier (max_windows > 1) "
                             "exports for serving with model.export")
        return litert.export_litert(self, export_dir, precision=precision,
                                    representative_texts=representative_texts, task=task)

    # ---------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "labels": self.labels, "is_pair": self.is_pair})
        if self.is_windowed:  # a truncating model's config stays what it always was
            config.update({"max_windows": self.max_windows, "window_stride": self.window_stride,
                           "window_pooling": self.window_pooling})
        return config
