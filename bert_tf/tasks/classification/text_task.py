"""`TextDataTask`: what the single-label (`SentencePredictionTask`) and multi-label (`MultiLabelTask`) text
classification tasks share — a `bert_tf.tasks.classification.data` reader's splits and examples, the tf.data
batches made with the model's own preprocessor, prediction of logits in example order, calibration texts.

A subclass supplies `_label_column(examples)` (the labels as one NumPy array, zeros where unlabelled) and the
model, loss, metrics and outputs of its kind.
"""

import numpy as np

from bert_tf.tasks.base import FinetuningTask, in_example_order, token_id_predictor
from bert_tf.text.batches import bucketed_batches, ordered_batches


class TextDataTask(FinetuningTask):
    """Base of the text classification tasks (see the module docstring).

    Args:
      data: a `bert_tf.tasks.classification.data.Task` reader.
      labels: the label set when the data cannot tell it (a tsv task without a training file).
    """

    def __init__(self, data, labels=None):
        self.data = data
        self.name = data.name
        self.main_metric = data.main_metric
        self._labels = labels
        self._predictors = {}

    # ------------------------------------------------------------ data
    @property
    def labels(self):
        if self.data.is_regression:
            return None
        try:
            return list(self.data.labels)
        except FileNotFoundError:  # tsv/csv labels detected from a train file that is absent
            if self._labels is None:
                raise
            return list(self._labels)

    @property
    def eval_splits(self):
        return self.data.eval_splits

    @property
    def test_splits(self):
        return self.data.test_splits

    @property
    def final_eval_splits(self):
        """Dev splits, plus a labelled test file of a custom (tsv/csv) task as `test_*` metrics."""
        splits = dict(self.eval_splits)
        if self.name in ("tsv", "csv") and self.has_split("test") and self.data.split_has_labels("test"):
            splits["test"] = "test_"
        return splits

    def has_split(self, split):
        return self.data.has_split(split)

    def examples(self, split):
        return self.data.get_examples(split)

    def split_has_labels(self, split):
        return self.data.split_has_labels(split)

    def _label_column(self, examples):
        raise NotImplementedError

    def _columns(self, examples):
        """Examples -> NumPy columns `text_a` (+ `text_b`) and `label` (0 where unlabelled)."""
        columns = {"text_a": np.array([e.text_a for e in examples], dtype=object)}
        if self.data.is_pair:
            columns["text_b"] = np.array([e.text_b or "" for e in examples], dtype=object)
        columns["label"] = self._label_column(examples)
        return columns, bool(examples) and examples[0].label is not None

    # ----------------------------------------------------------- steps
    def _featurizer(self, preprocessor):
        def featurize(batch):
            texts = [batch["text_a"], batch["text_b"]] if "text_b" in batch else batch["text_a"]
            return preprocessor(texts), batch["label"]

        return featurize

    def build_train_dataset(self, model, examples, batch_size, seed=0, bucket_window=1, dynamic_padding=True,
                            input_context=None, shuffle_batches=True):
        columns, labelled = self._columns(examples)
        if not labelled:
            raise ValueError("training examples have no labels")
        preprocessor = model.preprocessor.with_padding(dynamic_padding=dynamic_padding)
        return bucketed_batches(columns, self._featurizer(preprocessor), batch_size, seed=seed,
                                bucket_window=bucket_window, dynamic_padding=dynamic_padding,
                                input_context=input_context, shuffle_batches=shuffle_batches,
                                per_token_labels=False)

    def build_eval_dataset(self, model, examples, batch_size):
        columns, _ = self._columns(examples)
        lengths = [len(e.text_a) + len(e.text_b or "") for e in examples]
        preprocessor = model.preprocessor.with_padding(dynamic_padding=True)
        return ordered_batches(columns, self._featurizer(preprocessor), batch_size, lengths=lengths)

    def predict_logits(self, model, examples, batch_size, strategy=None):
        """`{"logits", "labels"}` NumPy arrays in example order (one traced predictor per model)."""
        key = (id(model), id(strategy))
        if key not in self._predictors:
            self._predictors = {key: token_id_predictor(model, strategy, rank=self._feature_rank(model))}
        outputs = self._predictors[key](self.build_eval_dataset(model, examples, batch_size))
        return in_example_order(outputs, len(examples))

    def _feature_rank(self, model):
        """Rank of the token-id features the model is fed (2: [B, T]; a subclass may feed [B, W, T])."""
        del model
        return 2

    def representative_texts(self, n, seed=0, split="train"):
        """`n` texts of `split` (pairs for pair tasks) in file order, a fixed random sample: int8 calibration."""
        if not self.has_split(split):
            raise FileNotFoundError(f"{self.name}: no {split} split to draw representative texts from (int8 "
                                    "calibration); use another precision or give training data")
        examples = self.examples(split)
        keep = sorted(np.random.default_rng(seed).permutation(len(examples))[:int(n)].tolist())
        if self.data.is_pair:
            return [(examples[i].text_a, examples[i].text_b or "") for i in keep]
        return [examples[i].text_a for i in keep]
