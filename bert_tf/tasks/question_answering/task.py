"""`QuestionAnsweringTask`: extractive question answering on SQuAD v1.1 / v2.0 JSON (Google's run_squad.py).

Splits: `train` (`train_file`, first answer's span per question) and
`predict` (`predict_file`). The predict file is also the evaluation split
(after every epoch and for `--do_eval`) when it carries answers, as SQuAD's
dev set does. The model is a `bert_tf.BertQuestionAnswerer`; windows and
labels are made in the `tf.data` pipeline by `model.featurize` (Google's
max_seq_length / doc_stride / max_query_length rules). The loss is Google's:
the mean of the start and end positions' softmax cross-entropies. Predictions
follow Google's `write_predictions` (`bert_tf.tasks.question_answering.data.best_spans`), and
`write_predictions` writes `predictions.json`, `nbest_predictions.json`, for
v2.0 `null_odds.json`, and, when the file has answers, the official
evaluation into `eval_results.json` — all in `--model_dir`
(`predictions_subdir = ""`).

Example (a tiny random encoder on a two-question file):

>>> import json, os, tempfile
>>> import bert_tf
>>> from bert_tf.tasks import QuestionAnsweringTask
>>> d = tempfile.mkdtemp()
>>> data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
...     {"id": "1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
...     {"id": "2", "question": "What is in France?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}
>>> _ = open(os.path.join(d, "train.json"), "w").write(json.dumps(data))
>>> _ = open(os.path.join(d, "vocab.txt"), "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "paris", "is",
...     "in", "france", ".", "where", "what", "?"]))
>>> task = QuestionAnsweringTask(os.path.join(d, "train.json"), os.path.join(d, "train.json"), max_query_length=8)
>>> encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=12, hidden_size=16, num_hidden_layers=1,
...                                                  num_attention_heads=2, intermediate_size=32))
>>> model = task.build_model(encoder, bert_tf.BertPreprocessor(os.path.join(d, "vocab.txt"), seq_length=32))
>>> examples = task.examples("train")  # doctest: +ELLIPSIS
squad: read 2 questions from ...
>>> batch = next(iter(task.build_train_dataset(model, examples, batch_size=2, bucket_window=1)))
>>> loss, metrics = task.compute_loss(model, batch, training=True)
>>> sorted(task.metrics(examples, task.predict(model, examples, batch_size=2)))
['exact_match', 'f1']
"""

import dataclasses
import json

import keras
import numpy as np
import tensorflow as tf

from bert_tf.distillation.losses import DistillTarget
from bert_tf.tasks.question_answering import data as squad
from bert_tf.tasks.question_answering.model import BertQuestionAnswerer
from bert_tf.tasks.base import FinetuningTask, strict_setting
from bert_tf.training.settings import ConfigError, setting
from bert_tf.text.batches import bucketed_batches

_WINDOW_KEYS = ("token_char_start", "token_char_end", "token_is_max_context")


@dataclasses.dataclass
class QuestionAnsweringConfig:
    """Settings of span question answering (`--task=squad`): Google's run_squad.py flags."""

    train_file: str | None = setting(None, "SQuAD: training JSON (v1.1, or v2.0 with --version_2_with_negative).")
    predict_file: str | None = setting(None, "SQuAD: JSON to predict (and evaluate, when it has answers).")
    version_2_with_negative: bool = setting(False, "SQuAD v2.0: questions may have no answer.")
    doc_stride: int = setting(128, "SQuAD: tokens between the starts of a long context's windows.")
    max_query_length: int = setting(64, "SQuAD: question wordpieces kept.")
    n_best_size: int = setting(20, "SQuAD: n-best start/end logits considered and n-best answers written.")
    max_answer_length: int = setting(30, "SQuAD: longest answer in wordpieces.")
    null_score_diff_threshold: float = setting(0.0, "SQuAD v2.0: answer \"\" if null - best > this.")
    strict: bool = strict_setting()


class QuestionAnsweringTask(FinetuningTask):
    """SQuAD-style span question answering.

    Args:
      train_file, predict_file: SQuAD JSON files (either may be None).
      version_2_with_negative: SQuAD v2.0 (questions without an answer).
      strict: a malformed entry is an error instead of being skipped.
      max_query_length, doc_stride, n_best_size, max_answer_length,
      null_score_diff_threshold: Google's run_squad.py settings.
    """

    name = "squad"
    model_class = BertQuestionAnswerer
    config_class = QuestionAnsweringConfig
    default_max_seq_length = 384  # run_squad.py's

    @classmethod
    def from_config(cls, name, config):
        del name
        return cls(**dataclasses.asdict(config))

    def check(self, run_config):
        if run_config.do_train and not self.files["train"]:
            raise ConfigError("--do_train needs --train_file")
        if (run_config.do_predict or run_config.do_eval) and not self.files["predict"]:
            raise ConfigError("--do_predict/--do_eval need --predict_file")
    main_metric = "f1"
    predictions_subdir = ""

    def __init__(self, train_file=None, predict_file=None, version_2_with_negative=False, strict=False,
                 max_query_length=64, doc_stride=128, n_best_size=20, max_answer_length=30,
                 null_score_diff_threshold=0.0):
        self.files = {"train": train_file, "predict": predict_file}
        self.version_2_with_negative = bool(version_2_with_negative)
        self.strict = bool(strict)
        self.settings = dict(max_query_length=max_query_length, doc_stride=doc_stride, n_best_size=n_best_size,
                             max_answer_length=max_answer_length,
                             null_score_diff_threshold=null_score_diff_threshold)
        self._data = {}
        self._forward = {}

    # ------------------------------------------------------------ data
    def data(self, split):
        """The `bert_tf.tasks.question_answering.data.SquadData` of a split (read once)."""
        if split not in self._data:
            path = self.files.get(split)
            if not path:
                raise FileNotFoundError(f"no file for the {split} split (give --{split}_file)")
            self._data[split] = squad.read_squad(path, is_training=(split == "train"),
                                                 version_2_with_negative=self.version_2_with_negative,
                                                 strict=self.strict)
            d = self._data[split]
            print(f"squad: read {len(d.examples)} questions from {path}"
                  + (f" ({d.skipped} skipped, {len(d.problems)} problems)" if d.problems else ""), flush=True)
        return self._data[split]

    def has_split(self, split):
        path = self.files.get(split)
        return bool(path) and tf.io.gfile.exists(path)

    def examples(self, split):
        return self.data(split).examples

    @property
    def eval_splits(self):
        if self.has_split("predict") and squad.has_answers(self.examples("predict")):
            return {"predict": ""}
        return {}

    @property
    def test_splits(self):
        return {"predict": "predictions.json"}

    # ----------------------------------------------------------- model
    def build_model(self, encoder, preprocessor, dropout_rate=None, saved_config=None):
        """A built `BertQuestionAnswerer` (the encoder's own dropout applies; `dropout_rate` is unused)."""
        del dropout_rate
        model = BertQuestionAnswerer(encoder, preprocessor, version_2_with_negative=self.version_2_with_negative,
                                     **self.settings)
        model.build()
        if saved_config is not None:
            before = saved_config.get("version_2_with_negative")
            if before is not None and bool(before) != self.version_2_with_negative:
                raise ValueError(f"the model directory holds a model with version_2_with_negative={before}; "
                                 "use a fresh --model_dir")
        return model

    # ----------------------------------------------------------- steps
    @staticmethod
    def _columns(examples, with_answers):
        columns = {"question": np.array([e.question for e in examples], dtype=object),
                   "context": np.array([e.context for e in examples], dtype=object)}
        if with_answers:
            columns["answer_start"] = np.array([e.answer_start for e in examples], np.int32)
            columns["answer_end"] = np.array([e.answer_end for e in examples], np.int32)
        return columns

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None, shuffle_batches=True):
        if not examples:
            raise ValueError("no training questions")

        def featurize(batch):
            # Full-width windows: a window of questions yields a variable number of them, and batches cut
            # across two windows; bucketed_batches trims every batch to its longest window.
            w = model.featurize(batch["question"], batch["context"], batch["answer_start"], batch["answer_end"],
                                dynamic_padding=False)
            return ({k: w[k] for k in ("input_word_ids", "input_mask", "input_type_ids")},
                    (w["start_positions"], w["end_positions"]))

        return bucketed_batches(self._columns(examples, True), featurize, batch_size, seed=seed,
                                bucket_window=bucket_window, dynamic_padding=dynamic_padding,
                                input_context=input_context, shuffle_batches=shuffle_batches)

    def build_eval_dataset(self, model, examples, batch_size):
        """One pass of window batches (questions sorted by context length, `batch_size` questions a batch)."""
        columns = self._columns(examples, False)
        order = np.argsort([len(e.context) for e in examples], kind="stable")
        sliced = {k: v[order].tolist() for k, v in columns.items()}
        sliced["index"] = order.astype(np.int32)
        ds = tf.data.Dataset.from_tensor_slices(sliced).batch(batch_size)

        def featurize(batch):
            w = model.featurize(batch["question"], batch["context"], example_index=batch["index"])
            w.pop("context")
            return w

        return ds.map(featurize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)

    def logits_loss(self, model, logits, labels):
        start_positions, end_positions = labels
        losses = []
        hits = []
        for key, positions in (("start_logits", start_positions), ("end_logits", end_positions)):
            losses.append(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                positions, logits[key], from_logits=True)))
            hits.append(keras.ops.cast(keras.ops.equal(keras.ops.argmax(logits[key], -1),
                                                       keras.ops.cast(positions, "int64")), "float32"))
        return (losses[0] + losses[1]) / 2.0, {"span_accuracy": keras.ops.mean(hits[0] * hits[1])}

    def distillation_targets(self, model, features, labels, logits):
        # start and end over the window's real tokens
        return [DistillTarget(logits[key], "softmax", class_mask=features["input_mask"])
                for key in ("start_logits", "end_logits")]

    def _forward_fn(self, model):
        key = id(model)
        if key not in self._forward:
            spec = {k: tf.TensorSpec([None, None], tf.int32, name=k)
                    for k in ("input_word_ids", "input_mask", "input_type_ids")}
            self._forward = {key: tf.function(lambda f: model.window_logits(f), input_signature=[spec])}
        return self._forward[key]

    def window_outputs(self, model, examples, batch_size):
        """Logits and token maps of every window, padded to `seq_length`, as NumPy arrays."""
        forward = self._forward_fn(model)
        L = model.seq_length
        parts = {k: [] for k in ("start_logits", "end_logits", "example_index") + _WINDOW_KEYS}
        fill = {"start_logits": -1e9, "end_logits": -1e9, "token_char_start": -1, "token_char_end": -1,
                "token_is_max_context": False}
        for w in self.build_eval_dataset(model, examples, batch_size):
            logits = forward({k: w[k] for k in ("input_word_ids", "input_mask", "input_type_ids")})
            arrays = {"start_logits": logits["start_logits"].numpy(), "end_logits": logits["end_logits"].numpy()}
            arrays.update({k: w[k].numpy() for k in _WINDOW_KEYS})
            for k, v in arrays.items():
                parts[k].append(np.pad(v, [(0, 0), (0, L - v.shape[1])], constant_values=fill[k]))
            parts["example_index"].append(w["example_index"].numpy())
        return {k: np.concatenate(v) if v else np.zeros((0,) if k == "example_index" else (0, L), np.int32)
                for k, v in parts.items()}

    def predict(self, model, examples, batch_size, strategy=None):
        """`{"spans": Google's n-best per question, "windows": number of windows}` in example order.
        (Prediction runs on the default device; `strategy` is not used.)"""
        del strategy
        windows = self.window_outputs(model, examples, batch_size)
        spans = squad.best_spans(windows, len(examples), n_best_size=model.n_best_size,
                                 max_answer_length=model.max_answer_length,
                                 version_2_with_negative=model.version_2_with_negative,
                                 contexts=[e.context for e in examples])
        return {"spans": spans, "windows": int(len(windows["example_index"])),
                "null_score_diff_threshold": model.null_score_diff_threshold}

    def _answers(self, outputs):
        texts, starts, ends, odds = squad.final_answers(outputs["spans"], self.version_2_with_negative,
                                                        outputs["null_score_diff_threshold"])
        return texts, odds

    def metrics(self, examples, outputs):
        texts, odds = self._answers(outputs)
        predictions = {e.qas_id: t for e, t in zip(examples, texts)}
        null_odds = {e.qas_id: o for e, o in zip(examples, odds)} if odds is not None else None
        results = squad.evaluate(examples, predictions, self.version_2_with_negative, null_odds)
        results.pop("total", None)
        for k in [k for k in results if k.endswith("_total")]:
            results.pop(k)
        return results

    def degenerate_predictions(self, examples, outputs):
        texts, _ = self._answers(outputs)
        answerable = sum(bool(e.answers) for e in examples)
        if answerable and not any(texts):
            return "every question is answered with no answer (empty string)"
        if len(texts) > 1 and len(set(texts)) == 1:
            return f"every question gets the same answer {texts[0]!r}"
        return None

    def prediction_metrics(self, split, examples, outputs):
        """The official evaluation of the written predictions when the questions have answers (run_squad.py
        users run the evaluation script on predictions.json; `--do_predict` does it for them)."""
        if not squad.has_answers(examples):
            return {}
        texts, odds = self._answers(outputs)
        null_odds = {e.qas_id: o for e, o in zip(examples, odds)} if odds is not None else None
        results = squad.evaluate(examples, {e.qas_id: t for e, t in zip(examples, texts)},
                                 self.version_2_with_negative, null_odds)
        print("squad evaluation: " + json.dumps(results, sort_keys=True), flush=True)
        return {k: float(v) for k, v in results.items()}

    def write_predictions(self, split, examples, outputs, out_dir):
        """predictions.json, nbest_predictions.json (+ null_odds.json); returns the predictions.json path."""
        paths, _ = squad.write_prediction_files(
            out_dir, examples, outputs["spans"], self.version_2_with_negative, outputs["null_score_diff_threshold"])
        return paths["predictions.json"]
