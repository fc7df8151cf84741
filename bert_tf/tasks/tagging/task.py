"""`TaggingTask`: token tagging (named entities) on CoNLL files, evaluated with conlleval's rules.

Data: `<data_dir>/train.txt`, `dev.txt` (or `valid.txt`) and `test.txt` in CoNLL
format (`bert_tf.tasks.tagging.data`). The tag set comes from the training file; the scheme
(IOB1, IOB2, BIOES) is detected there unless given. The model is a
`bert_tf.BertTokenTagger`; each word is labelled at its first wordpiece and the
others are left out of the loss. For training, a sentence longer than
`seq_length - 2` pieces is cut at word boundaries into chunks (the same greedy
rule the model applies at prediction time, where the chunks' words are put back
together), so no word is dropped.

Example (a tiny random encoder on two sentences):

>>> import os, tempfile
>>> import bert_tf
>>> from bert_tf.tasks import TaggingTask
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "train.txt"), "w").write("John B-PER\\nlives O\\nin O\\nParis B-LOC\\n\\nHi O\\n")
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "john", "in"]))
>>> task = TaggingTask(d)
>>> examples = task.examples("train")  # doctest: +ELLIPSIS
conll: read 2 sentences ...
>>> task.labels, task.tag_scheme  # doctest: +ELLIPSIS
tagging: tag scheme IOB2 (detected in .../train.txt)
(['O', 'B-LOC', 'B-PER'], 'IOB2')
>>> encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=1,
...                                                  num_attention_heads=2, intermediate_size=32))
>>> model = task.build_model(encoder, bert_tf.BertPreprocessor(os.path.join(d, "vocab.txt"), seq_length=8))
>>> batch = next(iter(task.build_train_dataset(model, examples, batch_size=2, bucket_window=1)))
>>> loss, metrics = task.compute_loss(model, batch, training=True)
>>> sorted(task.metrics(examples, task.predict(model, examples, batch_size=2)))[:3]
['LOC_f1', 'LOC_precision', 'LOC_recall']
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from bert_tf.distillation.losses import DistillTarget
from bert_tf.tasks.tagging import data as conll

from bert_tf.tasks.tagging import metrics as conll_metrics
from bert_tf.tasks.tagging.model import TAG_SCHEMES, BertTokenTagger
from bert_tf.tasks.tagging.ops import chunk_of_word, word_labels
from bert_tf.tasks.base import FinetuningTask, data_dir_setting, strict_setting
from bert_tf.training.settings import ConfigError, setting
from bert_tf.text.batches import bucketed_batches


@dataclasses.dataclass
class TaggingConfig:
    """Settings of token tagging (`--task=tagging`): CoNLL train.txt, dev.txt (or valid.txt), test.txt."""

    data_dir: str | None = data_dir_setting()
    strict: bool = strict_setting()
    tag_scheme: str | None = setting(None, "Tagging: the tag scheme (default: detected).", choices=TAG_SCHEMES)


class TaggingTask(FinetuningTask):
    """Fine-tunes a `BertTokenTagger` on CoNLL files in `data_dir` (see the module docstring)."""

    name = "tagging"
    model_class = BertTokenTagger
    config_class = TaggingConfig

    @classmethod
    def from_config(cls, name, config):
        del name
        if not config.data_dir:
            raise ConfigError("--data_dir is required")
        return cls(config.data_dir, tag_scheme=config.tag_scheme, strict=config.strict)
    main_metric = "f1"
    predictions_subdir = ""  # predictions.txt goes to --model_dir

    def __init__(self, data_dir, tag_scheme=None, strict=False):
        self.data_dir = data_dir
        self.strict = strict
        self._tag_scheme = tag_scheme
        self._labels = None
        self._examples = {}
        self._predictors = {}

    # ------------------------------------------------------------ data
    def split_path(self, split):
        names = {"train": ["train.txt"], "dev": ["dev.txt", "valid.txt"], "test": ["test.txt"]}[split]
        for name in names:
            path = os.path.join(self.data_dir, name)
            if os.path.isfile(path):
                return path
        return os.path.join(self.data_dir, names[0])

    def has_split(self, split):
        return os.path.isfile(self.split_path(split))

    def examples(self, split):
        if split not in self._examples:
            path = self.split_path(split)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no CoNLL file for {split}: {path}")
            self._examples[split] = conll.read_conll(path, strict=self.strict, labelled=self._labelled(path))
        return self._examples[split]

    @staticmethod
    def _labelled(path):
        """A file whose lines have at least two columns carries tags (a test file may hold tokens only)."""
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] != "-DOCSTART-":
                    return len(fields) >= 2
        return True

    @property
    def labels(self):
        if self._labels is None:
            self._labels = conll.label_list(s.tags for s in self.examples("train"))
        return self._labels

    @property
    def tag_scheme(self):
        if self._tag_scheme is None:
            self._tag_scheme = conll.detect_tag_scheme([s.tags for s in self.examples("train")])
            print(f"tagging: tag scheme {self._tag_scheme} (detected in {self.split_path('train')})", flush=True)
        return self._tag_scheme

    @property
    def test_splits(self):
        return {"test": "predictions.txt"}

    @property
    def final_eval_splits(self):
        splits = dict(self.eval_splits)
        if self.has_split("test") and self._labelled(self.split_path("test")):
            splits["test"] = "test_"
        return splits

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        if saved_config is not None and not self.has_split("train"):
            self._labels = saved_config["labels"]
            self._tag_scheme = self._tag_scheme or saved_config["tag_scheme"]
        model = BertTokenTagger(encoder, preprocessor, labels=self.labels, tag_scheme=self.tag_scheme,
                                dropout_rate=dropout_rate)
        model.build()
        if saved_config is not None:
            before = {k: saved_config.get(k) for k in ("labels", "tag_scheme")}
            if before != {"labels": model.labels, "tag_scheme": model.tag_scheme}:
                raise ValueError(f"the model directory holds a tagger with {before}, but the data now give "
                                 f"labels={model.labels} tag_scheme={model.tag_scheme}; use a fresh --model_dir")
        return model

    # ----------------------------------------------------------- steps
    def _chunks(self, model, examples):
        """Training sentences cut into chunks that fit (words and tag ids), by the model's own rule."""
        budget = model.preprocessor.seq_length - 2
        tokenizer = model.preprocessor.tokenizer
        ids = {label: i for i, label in enumerate(model.labels)}
        words_out, tags_out = [], []
        for i in range(0, len(examples), 512):
            batch = examples[i:i + 512]
            words = tf.ragged.constant([s.words for s in batch], dtype=tf.string)
            counts = tokenizer.tokenize_words(words).row_lengths(axis=2)
            chunks = chunk_of_word(counts, budget).numpy()
            flat_words = [(w, t) for s in batch for w, t in zip(s.words, s.tags)]
            previous = -1
            for (word, tag), chunk in zip(flat_words, chunks):
                if chunk != previous:
                    words_out.append([])
                    tags_out.append([])
                    previous = chunk
                words_out[-1].append(word)
                tags_out[-1].append(str(ids[tag]))
        return {"words": np.array([" ".join(w) for w in words_out], dtype=object),
                "tags": np.array([" ".join(t) for t in tags_out], dtype=object)}

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None, shuffle_batches=True):
        if not examples or examples[0].tags is None:
            raise ValueError("training sentences have no tags")
        packer = model.preprocessor.with_padding(dynamic_padding=dynamic_padding).packer

        def featurize(batch):
            words = tf.strings.split(batch["words"], sep=" ")
            tags = tf.strings.to_number(tf.strings.split(batch["tags"], sep=" "), tf.int32)
            packed = model.pack_words(words, packer=packer)
            return packed["features"], word_labels(packed, tags.flat_values)

        return bucketed_batches(self._chunks(model, examples), featurize, batch_size, seed=seed,
                                bucket_window=bucket_window, dynamic_padding=dynamic_padding,
                                input_context=input_context, shuffle_batches=shuffle_batches)

    def logits_loss(self, model, logits, labels):
        mask = keras.ops.cast(labels >= 0, "float32")
        safe = keras.ops.maximum(labels, 0)
        losses = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
        count = keras.ops.maximum(keras.ops.sum(mask), 1.0)
        hits = keras.ops.cast(keras.ops.equal(keras.ops.argmax(logits, -1), keras.ops.cast(safe, "int64")), "float32")
        return keras.ops.sum(losses * mask) / count, {"accuracy": keras.ops.sum(hits * mask) / count}

    def distillation_targets(self, model, features, labels, logits):
        # the first piece of every word: the positions the tags are read from
        return [DistillTarget(logits, "softmax", row_weights=keras.ops.cast(labels >= 0, "float32"))]

    def examples_from_texts(self, texts):
        return [conll.Sentence(words=text.split(), tags=["O"] * len(text.split()), source=source)
                for text, source in texts]

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"tags": [[tag, ...] per sentence], "scores": [...]}` in example order (whole sentences)."""
        if id(model) not in self._predictors:
            spec = tf.TensorSpec([None], tf.string)
            self._predictors = {id(model): tf.function(
                lambda joined: model.tag_words(tf.strings.split(joined, sep=" ")), input_signature=[spec])}
        tag_words = self._predictors[id(model)]
        tags, scores = [], []
        for i in range(0, len(examples), batch_size):
            out = tag_words(tf.constant([" ".join(s.words) for s in examples[i:i + batch_size]]))
            tags += [[model.labels[t] for t in row] for row in out["tag_ids"].to_list()]
            scores += out["scores"].to_list()
        return {"tags": tags, "scores": scores}

    def metrics(self, examples, outputs):
        return conll_metrics.flat_metrics(conll_metrics.evaluate([s.tags for s in examples], outputs["tags"]))

    def degenerate_predictions(self, examples, outputs):
        gold = sum(t != "O" for s in examples for t in (s.tags or []))
        predicted = sum(t != "O" for tags in outputs["tags"] for t in tags)
        if gold and not predicted:
            words = sum(len(s.words) for s in examples)
            return (f"no entity predicted: every one of the {words} words is tagged O "
                    f"({gold / max(words, 1):.1%} of the words are inside entities)")
        return None

    def write_predictions(self, split, examples, outputs, out_dir):
        return conll.write_predictions(os.path.join(out_dir, self.test_splits[split]), examples, outputs["tags"])

    def representative_texts(self, n, seed=0):
        sentences = self.examples("train")
        keep = sorted(np.random.default_rng(seed).permutation(len(sentences))[:int(n)])
        return [" ".join(sentences[i].words) for i in keep]
