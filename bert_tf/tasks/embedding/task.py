"""`EmbeddingTask` (`--task=embedding`): fine-tunes a `BertSentenceEmbedder` on text pairs or scored pairs.

Two losses, as sentence-transformers names them:

* ``mnr`` (multiple-negatives ranking): `train.tsv` holds (anchor, positive) pairs; in each batch the cosine of
  every anchor with every positive, times `mnr_scale`, are the logits of a softmax whose target is the anchor's
  own positive (the other positives of the batch are its negatives);
* ``cosine`` (cosine regression): `train.tsv` holds scored pairs; the loss is the mean squared difference of
  the pair's cosine and its score / `max_score`.

Evaluation (after every epoch, `--do_eval`) embeds both texts of each scored pair of `dev.tsv` (and of a scored
`test.tsv`, as `test_*`) and reports the Spearman and Pearson correlation of the cosines with the gold scores
(best checkpoint by `spearman`). `--do_predict` writes `predictions.tsv` (`index`, `cosine`) for `test.tsv`.
Pooling and normalisation default to the init checkpoint's sentence-transformers settings (mean + L2 for
all-MiniLM-L6-v2), as does `--max_seq_length` (its `sentence_bert_config.json`; else 128). Training batches are
not sorted by length (that would make the in-batch negatives of `mnr` all of one length); each is padded to
its longest text. File layouts and malformed rows: `bert_tf.tasks.embedding.data`.

Long documents: `--max_windows > 1 --window_stride=N [--window_pooling=mean|max]` embeds each text over sliding
windows (`bert_tf.tasks.embedding.model`), in training, evaluation and the export; the eval results count the
texts longer than `max_windows` windows (`documents_over_max_windows`, their tail unread). The LiteRT export
(`--litert_export_dir`) reads one window per text and is refused for a windowed run.

Example (a tiny random encoder on two scored pairs):

>>> import os, tempfile
>>> import bert_tf
>>> from bert_tf.tasks.embedding import data
>>> from bert_tf.tasks.embedding.task import EmbeddingTask
>>> d = tempfile.mkdtemp()
>>> _ = data.write_pairs(os.path.join(d, "train.tsv"), [("good film", "fine film", 0.9), ("good", "bad", 0.1)])
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad",
...     "fine", "film"]))
>>> task = EmbeddingTask(d)
>>> examples = task.examples("train")  # doctest: +ELLIPSIS
embedding: read 2 scored from ...
>>> encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1,
...                                                  num_attention_heads=2, intermediate_size=32))
>>> model = task.build_model(encoder, bert_tf.BertPreprocessor(os.path.join(d, "vocab.txt"), seq_length=16))
embedding: mean pooling, normalize=True, max_seq_length=16
>>> batch = next(iter(task.build_train_dataset(model, examples, batch_size=2)))
>>> loss, metrics = task.compute_loss(model, batch, training=True)
>>> sorted(task.metrics(examples, task.predict(model, examples, batch_size=2)))
['pearson', 'spearman']
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from bert_tf.tasks.base import FinetuningTask, data_dir_setting, strict_setting
from bert_tf.tasks.window_settings import max_windows_setting, window_pooling_setting, window_stride_setting
from bert_tf.tasks.embedding import data as pairs_data
from bert_tf.tasks.embedding import metrics as metrics_lib
from bert_tf.tasks.embedding.model import POOLING_MODES, BertSentenceEmbedder, sentence_transformers_settings
from bert_tf.tasks.embedding.ops import cosine_matrix, cosine_similarity
from bert_tf.text import windows as windows_lib
from bert_tf.text.batches import bucketed_batches
from bert_tf.training.settings import ConfigError, setting

LOSSES = ("mnr", "cosine")
_LOSS_OF_KIND = {"pairs": "mnr", "scored": "cosine"}


@dataclasses.dataclass
class EmbeddingConfig:
    """Settings of `--task=embedding`."""

    data_dir: str | None = data_dir_setting()
    strict: bool = strict_setting()
    loss: str | None = setting(
        None, "embedding: 'mnr' (multiple-negatives ranking on anchor/positive pairs, in-batch negatives) or "
              "'cosine' (cosine regression on scored pairs). Default: from train.tsv's header.", choices=LOSSES)
    pooling: str | None = setting(
        None, "embedding: pooling over the last layer. Default: the init checkpoint's sentence-transformers "
              "Pooling module, else mean.", choices=POOLING_MODES)
    normalize_embeddings: bool | None = setting(
        None, "embedding: L2-normalise the embeddings. Default: whether the init checkpoint's sentence-transformers "
              "modules end in Normalize, else true.")
    mnr_scale: float = setting(20.0, "embedding: the mnr loss's logits are cosines times this "
                                     "(sentence-transformers' default).")
    max_score: float = setting(1.0, "embedding: the cosine loss's target is score / max_score (5 for STS-B's 0-5 "
                                    "scores); training scores beyond it are an error.")
    max_windows: int = max_windows_setting()
    window_stride: int = window_stride_setting()
    window_pooling: str = window_pooling_setting()


class EmbeddingTask(FinetuningTask):
    """Sentence embeddings fine-tuned on `<data_dir>/train.tsv` and scored on `dev.tsv` / `test.tsv`."""

    name = "embedding"
    main_metric = "spearman"
    model_class = BertSentenceEmbedder
    config_class = EmbeddingConfig

    @classmethod
    def from_config(cls, name, config):
        del name
        if not config.data_dir:
            raise ConfigError("--data_dir is required (train.tsv / dev.tsv / test.tsv pairs files)")
        return cls(**dataclasses.asdict(config))

    def __init__(self, data_dir, strict=False, loss=None, pooling=None, normalize_embeddings=None, mnr_scale=20.0,
                 max_score=1.0, max_windows=1, window_stride=0, window_pooling="mean"):
        if max_score <= 0:
            raise ConfigError(f"--max_score must be positive, got {max_score}")
        self.windowing = dict(max_windows=int(max_windows), window_stride=int(window_stride),
                              window_pooling=window_pooling)
        self.data_dir, self.strict = data_dir, bool(strict)
        self.loss, self.pooling, self.normalize = loss, pooling, normalize_embeddings
        self.mnr_scale, self.max_score = float(mnr_scale), float(max_score)
        self.checkpoint_settings = None  # the init checkpoint's sentence-transformers settings (`check`)
        self._read = {}

    def check(self, run_config):
        """Checks the run and takes the defaults the init checkpoint's sentence-transformers files give."""
        init = run_config.init_checkpoint
        if init and os.path.isdir(init):
            self.checkpoint_settings = sentence_transformers_settings(init)
        if self.checkpoint_settings and self.checkpoint_settings.max_seq_length:
            self.default_max_seq_length = int(self.checkpoint_settings.max_seq_length)
        try:
            windows_lib.check_windowing(run_config.max_seq_length or self.default_max_seq_length, **self.windowing)
        except ValueError as e:
            raise ConfigError(f"--task={self.name}: {e}") from e
        if self.windowing["max_windows"] > 1 and run_config.litert_export_dir:
            raise ConfigError("--max_windows > 1: the LiteRT export reads one window per text; drop "
                              "--litert_export_dir (--export_dir serves the windowed embedder)")
        if run_config.do_train:
            if not self.has_split("train"):
                raise ConfigError(f"--do_train needs {self._path('train')}")
            if self.train_loss() == "mnr" and run_config.train_batch_size < 2:
                raise ConfigError("--loss=mnr needs --train_batch_size >= 2 (the other pairs are the negatives)")

    # ------------------------------------------------------------ data
    @property
    def final_eval_splits(self):
        splits = dict(self.eval_splits)
        if self.has_split("test") and self._kind("test") == "scored":
            splits["test"] = "test_"
        return splits

    def _path(self, split):
        return os.path.join(self.data_dir, f"{split}.tsv")

    def has_split(self, split):
        return os.path.isfile(self._path(split))

    def _pairs(self, split):
        if split not in self._read:
            self._read[split] = pairs_data.read_pairs(self._path(split), strict=self.strict)
        return self._read[split]

    def _kind(self, split):
        return self._pairs(split)[0]

    def examples(self, split):
        kind, examples = self._pairs(split)
        if split != "train" and kind != "scored":
            raise ValueError(f"{self._path(split)}: evaluation files hold scored pairs "
                             "(sentence1<TAB>sentence2<TAB>score)")
        return examples

    def train_loss(self):
        """The loss of this run: `--loss`, else the one train.tsv's header implies (checked against it)."""
        kind = self._kind("train")
        loss = self.loss or _LOSS_OF_KIND[kind]
        if loss == "cosine" and kind != "scored":
            raise ConfigError(f"--loss=cosine needs scored pairs; {self._path('train')} holds anchor/positive pairs")
        return loss

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """The built embedder: pooling/normalisation from the flags, else an earlier run's, else the checkpoint's."""
        del dropout_rate  # no head: the encoder's own dropout is the only one
        saved = saved_config or {}
        st = self.checkpoint_settings
        pooling = self.pooling or saved.get("pooling") or (st.pooling if st else "mean")
        normalize = self.normalize
        if normalize is None:
            normalize = saved.get("normalize", st.normalize if st else True)
        try:
            model = BertSentenceEmbedder(encoder, preprocessor, pooling=pooling, normalize=normalize,
                                         **self.windowing)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if saved:
            keys = ("pooling", "normalize", "max_windows", "window_stride", "window_pooling")
            now = {k: model.get_config().get(k) for k in keys}
            before = {k: saved.get(k) for k in keys}
            if now != before:
                raise ValueError(f"the model directory holds an embedder with {before}; this run asks for {now}: "
                                 "use a fresh --model_dir")
        model.build()
        windowing = (f", {model.max_windows} windows of stride {model.window_stride} ({model.window_pooling})"
                     if model.is_windowed else "")
        print(f"embedding: {pooling} pooling, normalize={normalize}, max_seq_length={preprocessor.seq_length}"
              + windowing, flush=True)
        return model

    # ----------------------------------------------------------- steps
    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None):
        del bucket_window  # see the module docstring: batches are never sorted by length
        columns = {"text_a": np.array([e.text_a for e in examples], dtype=object),
                   "text_b": np.array([e.text_b for e in examples], dtype=object),
                   "score": np.array([e.score or 0.0 for e in examples], np.float32) / self.max_score}
        if self.train_loss() == "cosine":
            beyond = [e for e in examples if abs(e.score / self.max_score) > 1.0]
            if beyond:
                raise ValueError(f"{self._path('train')}:{beyond[0].line}: score {beyond[0].score} is beyond "
                                 f"--max_score={self.max_score:g} ({len(beyond)} such rows)")
        pre = model.preprocessor.with_padding(dynamic_padding=dynamic_padding)

        def featurize(batch):
            features = {"a": model.features(batch["text_a"], pre), "b": model.features(batch["text_b"], pre)}
            return features, batch["score"]

        return bucketed_batches(columns, featurize, batch_size, seed=seed, bucket_window=1,
                                dynamic_padding=dynamic_padding, input_context=input_context)

    def compute_loss(self, model, batch, training):
        features, scores = batch
        a = model(features["a"], training=training)
        b = model(features["b"], training=training)
        if self.train_loss() == "cosine":
            return keras.ops.mean(keras.ops.square(cosine_similarity(a, b) - tf.cast(scores, tf.float32))), {}
        logits = cosine_matrix(a, b) * self.mnr_scale
        targets = tf.range(tf.shape(logits)[0])
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True))
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets)
        return loss, {"accuracy": tf.reduce_mean(tf.cast(hits, tf.float32))}

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"cosine", "labels"}` in example order: each distinct text is embedded once (on one replica)."""
        del strategy
        texts = sorted({t for e in examples for t in (e.text_a, e.text_b)})
        row = {t: i for i, t in enumerate(texts)}
        vectors = model.embed(texts, batch_size=batch_size)
        a = vectors[[row[e.text_a] for e in examples]]
        b = vectors[[row[e.text_b] for e in examples]]
        cosines = cosine_similarity(a, b).numpy() if examples else np.zeros([0], np.float32)
        labels = np.array([np.nan if e.score is None else e.score for e in examples], np.float64)
        outputs = {"cosine": cosines, "labels": labels}
        if model.is_windowed:
            needed = self.windows_needed(model, texts)
            outputs["windows_needed"] = np.stack([needed[[row[e.text_a] for e in examples]],
                                                  needed[[row[e.text_b] for e in examples]]], axis=-1)
        return outputs

    @staticmethod
    def windows_needed(model, texts, batch_size=256):
        """NumPy int32 [N]: the windows each whole text needs (more than `model.max_windows`: partly unread)."""
        counts = [np.zeros([0], np.int32)]
        for i in range(0, len(texts), batch_size):
            _, lengths = model.preprocessor.tokenizer.tokenize_dense(tf.constant(texts[i:i + batch_size]), width=1)
            counts.append(windows_lib.windows_needed(lengths, model.preprocessor.seq_length,
                                                     model.window_stride).numpy())
        return np.concatenate(counts)

    def metrics(self, examples, outputs):
        results = metrics_lib.similarity_metrics(outputs["cosine"], outputs["labels"])
        if "windows_needed" in outputs:  # the texts (each side of each pair) whose tail past max_windows was unread
            needed = np.asarray(outputs["windows_needed"]).reshape([-1])
            results["documents_over_max_windows"] = int(np.sum(needed > self.windowing["max_windows"]))
            results["mean_windows_needed"] = float(np.mean(needed)) if needed.size else 0.0
        return results

    def representative_texts(self, n, seed=0):
        """`n` real training texts (both sides of the pairs, a fixed random sample in file order): int8 LiteRT
        calibration."""
        if not self.has_split("train"):
            raise FileNotFoundError(f"{self._path('train')}: no training texts to calibrate int8 LiteRT with; use "
                                    "another --litert_precision or give training data")
        texts = [t for e in self.examples("train") for t in (e.text_a, e.text_b)]
        if n >= len(texts):
            return texts
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
        return [texts[i] for i in keep]

    def degenerate_predictions(self, examples, outputs):
        cosines = np.asarray(outputs["cosine"])
        if len(cosines) > 1 and float(np.std(cosines)) < 1e-4:
            return f"every pair has a cosine of about {float(np.mean(cosines)):.4f} (collapsed embeddings)"
        return None

    def write_predictions(self, split, examples, outputs, out_dir):
        """`index<TAB>cosine` per pair of `split`, in file order."""
        path = os.path.join(out_dir, self.test_splits[split])
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("index\tcosine\n")
            for i, cosine in enumerate(outputs["cosine"]):
                f.write(f"{i}\t{float(cosine):.6f}\n")
        return path

    def prediction_metrics(self, split, examples, outputs):
        if examples and all(e.score is not None for e in examples):
            return {f"{split}_{k}": v for k, v in self.metrics(examples, outputs).items()}
        return {}
