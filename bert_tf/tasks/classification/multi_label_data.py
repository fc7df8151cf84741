"""Multi-label TSV/CSV data (`--task=tsv --multi_label`): each text carries a set of labels, possibly empty.

Two layouts of ``<data_dir>/{train,dev,test}.tsv`` (or ``.csv``), both with a header row:

* one label column (``label_column``, default ``label``) holding the labels separated by ``label_separator``
  (default ``,``), e.g. ``LOC,PER``; an empty field is the empty set;
* one column per label (``label_columns=["toxic", "insult", ...]``), each ``0`` or ``1``; the column names are the
  label set, in that order.

Rules, beyond the single-label reader's (`bert_tf.tasks.classification.data.TextTask`: field counts, empty or
whitespace-only text, bad quoting, bad UTF-8 — each a malformed row reported by file:line and skipped, or an error
with ``strict=True``): a label outside the label set, a label named twice in one row, and a per-label column value
other than 0/1 are malformed rows too. A label set is detected from the training file (every label seen, sorted)
unless given; it needs at least two labels. A row with no label is valid (the empty set) and counted: every file
read prints how many of its examples carry none. ``Example.label`` is a tuple of label strings in label-set order.

>>> import os, tempfile
>>> from bert_tf.tasks.classification.multi_label_data import MultiLabelTextTask
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "train.tsv"), "w").write("sentence\\tlabel\\nPeter went to Paris\\tPER,LOC\\n"
...                                                   "It rained\\t\\nIBM hired Ann\\tPER,ORG\\n")
>>> task = MultiLabelTextTask(d)
>>> [e.label for e in task.get_examples("train")]  # doctest: +ELLIPSIS
tsv: read 3 examples from ...
[('LOC', 'PER'), (), ('ORG', 'PER')]
>>> task.labels
['LOC', 'ORG', 'PER']
"""

import os

from bert_tf.tasks.classification.data import TextTask, _sort_labels


class MultiLabelTextTask(TextTask):
    """`TextTask` whose label is a set (see the module docstring).

    Args (beyond `TextTask`'s, minus ``regression``):
      label_separator: separates the labels inside ``label_column``.
      label_columns: one 0/1 column per label instead of ``label_column`` (their names are the labels).
    """

    is_multi_label = True
    main_metric = "micro_f1"

    def __init__(self, data_dir, fmt="tsv", text_column="sentence", text_b_column=None, label_column="label",
                 labels=None, label_separator=",", label_columns=None, index_column=None, strict=False):
        if label_columns and labels is not None and list(labels) != list(label_columns):
            raise ValueError(f"labels {list(labels)} differ from label_columns {list(label_columns)}: with one "
                             "column per label the column names are the label set")
        labels = list(label_columns) if label_columns else labels
        super().__init__(data_dir, fmt=fmt, text_column=text_column, text_b_column=text_b_column,
                         label_column=label_column, labels=labels, index_column=index_column, strict=strict)
        self.main_metric = "micro_f1"
        if not label_separator or not label_separator.strip():
            raise ValueError(f"label_separator must be a visible string, got {label_separator!r}")
        self.label_separator = label_separator
        self.label_columns = list(label_columns) if label_columns else None
        if self._labels is not None:
            self._check_label_set(self._labels, "the given label set")

    def _check_label_set(self, labels, where):
        if len(labels) < 2:
            raise ValueError(f"{where}: {len(labels)} label(s) {list(labels)}; multi-label classification needs at "
                             "least 2 (one label is binary classification: use the single-label task)")
        joined = [x for x in labels if self.label_separator in x or not x.strip()]
        if joined and not self.label_columns:
            raise ValueError(f"{where}: labels {joined} are empty or contain the separator "
                             f"{self.label_separator!r}")

    def _split_labels(self, raw):
        return [x.strip() for x in raw.split(self.label_separator) if x.strip()]

    def _detect_labels(self):
        path = self.split_path("train")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cannot detect the label set: no training file {path!r}; give labels=")
        rows = self._rows(path)
        header = self._header(path, rows)
        if not self._has_label(path, header):
            raise ValueError(f"{path}:1: no label column {self.label_column!r} in the header {header}")
        il = header.index(self.label_column)
        found = set()
        for _, fields in rows:
            if not isinstance(fields, Exception) and len(fields) == len(header):
                found.update(self._split_labels(fields[il]))
        labels = _sort_labels(found)
        self._check_label_set(labels, f"{path}: column {self.label_column!r}")
        return labels

    def _has_label(self, path, header):
        if not self.label_columns:
            return self.label_column in header
        missing = [c for c in self.label_columns if c not in header]
        if len(missing) == len(self.label_columns) and os.path.basename(path).startswith("test."):
            return False  # an unlabelled test file
        if missing:
            raise ValueError(f"{path}:1: no label column(s) {missing} (label_columns) in the header {header}")
        return True

    def _row_label(self, fields, header, stats, lineno, labels):
        """The row's labels as a tuple in label-set order, or ``None`` after reporting the row as malformed."""
        if self.label_columns:
            present = []
            for label in self.label_columns:
                value = fields[header.index(label)].strip()
                if value not in ("0", "1"):
                    self._malformed(stats, lineno, f"column {label!r} holds {value!r}, not 0 or 1")
                    return None
                if value == "1":
                    present.append(label)
            return tuple(present)
        names = self._split_labels(fields[header.index(self.label_column)])
        for name in names:
            if name not in labels:
                self._malformed(stats, lineno, f"label {name!r} is not one of {list(labels)}")
                return None
        repeated = sorted({x for x in names if names.count(x) > 1})
        if repeated:
            self._malformed(stats, lineno, f"label(s) {repeated} named twice")
            return None
        return tuple(x for x in labels if x in names)

    def get_examples(self, split):
        examples = super().get_examples(split)
        if examples and examples[0].label is not None:
            none = sum(1 for e in examples if not e.label)
            print(f"{self.name}: {none} of the {len(examples)} examples of {split} carry no label (the empty set)")
        return examples
