"""Readers for the GLUE tasks (in the layout GLUE distributes) and for users' own TSV/CSV data.

GLUE layout: ``<data_dir>/<TASK>/train.tsv``, ``dev.tsv``, ``test.tsv`` with
the task directories ``CoLA``, ``SST-2``, ``MRPC``, ``STS-B``, ``QQP``,
``MNLI`` (``dev_matched``, ``dev_mismatched``, ``test_matched``,
``test_mismatched``), ``QNLI``, ``RTE``, ``WNLI`` and the diagnostic set
``AX/AX.tsv`` (or ``diagnostic/diagnostic.tsv`` as ``download_glue_data.py``
names it). ``data_dir`` may also be the task directory itself.

Files are read the way GLUE writes them: UTF-8, one record per line, fields
split on TAB, no quoting (a ``"`` is an ordinary character). Columns are found
by their header names, which must be GLUE's:

============  =========================================================  ====================
task          train/dev columns used (header)                            test file
============  =========================================================  ====================
cola          no header, 4 fields: source, **label**, author mark,       ``index sentence``
              **sentence**
sst2          ``sentence label``                                         ``index sentence``
mrpc          ``Quality #1 ID #2 ID #1 String #2 String``                ``index #1 ID ...``
stsb          ``index genre ... sentence1 sentence2 score`` (0-5)        no ``score``
qqp           ``id qid1 qid2 question1 question2 is_duplicate``          ``id question1 question2``
mnli          ``index ... sentence1 sentence2 label1 [.. label5] gold_label``  no label columns
qnli          ``index question sentence label``                          no ``label``
rte, wnli     ``index sentence1 sentence2 label``                        no ``label``
ax            (test only) ``index sentence1 sentence2``, MNLI labels
============  =========================================================  ====================

A row whose field count differs from the header's (QQP's rows broken by a
newline inside a question, for example), whose text is empty or whose label is
not one of the task's labels is *malformed*: it is reported with file and line
number and skipped, and each file's counts are printed. With ``strict=True``
the first malformed row raises :class:`MalformedRowError` instead.

Custom data (``task="tsv"`` or ``"csv"``): ``<data_dir>/train.tsv``,
``dev.tsv``, ``test.tsv`` (or ``.csv``), each with a header row naming the
columns; ``text_column`` (default ``sentence``), optional ``text_b_column``,
``label_column`` (default ``label``). The label set is detected from the
training file unless ``labels`` is given; ``regression=True`` reads a numeric
label. ``.tsv`` files use GLUE's no-quoting rule; ``.csv`` files use standard
CSV quoting (RFC 4180), and a badly quoted row is malformed. A test file may
omit the label column; if it has one, it can be scored like ``dev``.

Example (GLUE's MRPC layout, written here; ``print``ed counts shown):

>>> import os, tempfile
>>> from bert_tf import glue
>>> root = tempfile.mkdtemp(); os.makedirs(os.path.join(root, "MRPC"))
>>> _ = open(os.path.join(root, "MRPC", "train.tsv"), "w").write(
...     "Quality\\t#1 ID\\t#2 ID\\t#1 String\\t#2 String\\n"
...     "1\\t702876\\t702977\\tHe said hi .\\tHe greeted us .\\n"
...     "0\\t1\\t2\\ttoo few fields\\n")
>>> task = glue.get_task("mrpc", root)
>>> train = task.get_examples("train")  # doctest: +ELLIPSIS
mrpc: read 1 examples from .../MRPC/train.tsv, skipped 1 malformed rows
>>> train[0].text_a, train[0].text_b, train[0].label
('He said hi .', 'He greeted us .', '1')
>>> task.labels, task.main_metric, task.eval_splits, task.test_splits
(['0', '1'], 'f1', {'dev': ''}, {'test': 'MRPC.tsv'})
"""

import csv
import dataclasses
import logging
import math
import os
import re
import sys
from typing import Optional, Union
from bert_tf import atomic

logger = logging.getLogger(__name__)

_MAX_REPORTED = 20  # malformed rows reported one by one per file; the rest are counted


class MalformedRowError(ValueError):
    """A malformed row in strict mode; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One example: ``text_a`` (and ``text_b`` for pairs), ``label`` (str, float for
    regression, ``None`` in unlabelled test files) and ``index`` (the id used in
    submission files). ``guid`` is ``"<file>:<line>"``."""

    guid: str
    text_a: str
    text_b: Optional[str] = None
    label: Union[str, float, None] = None
    index: Optional[str] = None


@dataclasses.dataclass
class ReadStats:
    """Counts of one file read: ``read`` examples kept, ``skipped`` malformed rows."""

    path: str
    read: int = 0
    skipped: int = 0


def _clean_header(fields):
    if fields:
        fields = [fields[0].lstrip("\ufeff")] + fields[1:]
    return [f.strip() for f in fields]


class _RowError(Exception):
    """A row that could not even be split into fields (bad quoting, bad UTF-8)."""


def _iter_tsv(path):
    """Yields ``(line_number, fields)`` of a TSV file written without quoting.

    Lines end at LF only (a stray CR inside a field stays there); a line that
    is not valid UTF-8 comes back as ``(line_number, _RowError)``.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, _RowError(f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            line = line.rstrip("\n")
            if line.endswith("\r"):
                line = line[:-1]
            if not line.strip():
                continue
            yield lineno, line.split("\t")


def _iter_csv(path):
    """Yields ``(line_number, fields)``, or ``(line_number, _RowError)`` for a badly quoted row."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not valid UTF-8 near line {start} ({e.reason})") from None
            except csv.Error as e:
                yield start, _RowError(f"bad CSV quoting ({e})")
                continue
            if not row or not any(x.strip() for x in row):
                continue
            yield start, row


@dataclasses.dataclass
class _FileSpec:
    """How to read one GLUE file: header names (None: header-less) and the columns used."""

    header: Optional[tuple]  # expected header names; None = no header row
    num_fields: Optional[int] = None  # header-less files only
    text_a: Union[str, int] = None
    text_b: Union[str, int, None] = None
    label: Union[str, int, None] = None
    index: Union[str, int, None] = None


class Task:
    """A text classification/regression task and its data files.

    Attributes: ``name``; ``labels`` (list of label strings, ``None`` for
    regression); ``is_regression``; ``is_pair``; ``num_classes`` (1 for
    regression); ``main_metric`` (the metric that picks the best checkpoint);
    ``eval_splits`` ({split: metric-name prefix}, e.g. MNLI's
    ``{"dev_matched": "", "dev_mismatched": "mismatched_"}``); ``test_splits``
    ({split: submission file name}); ``stats`` (the :class:`ReadStats` of every
    file read). ``get_examples(split)`` reads a split.
    """

    name = None
    labels = None
    is_regression = False
    is_pair = False
    main_metric = "accuracy"

    def __init__(self, data_dir, strict=False):
        self.data_dir = data_dir
        self.strict = strict
        self.stats = []

    @property
    def num_classes(self):
        return 1 if self.is_regression else len(self.labels)

    @property
    def eval_splits(self):
        return {"dev": ""}

    @property
    def test_splits(self):
        return {"test": f"{self.name}.tsv"}

    def split_path(self, split):
        raise NotImplementedError

    def has_split(self, split):
        try:
            return os.path.isfile(self.split_path(split))
        except FileNotFoundError:
            return False

    def get_examples(self, split):
        raise NotImplementedError

    def split_has_labels(self, split):
        """Whether the examples of ``split`` carry labels (GLUE test files do not)."""
        return not split.startswith("test") and split != "ax"

    # ---- shared row handling

    def _malformed(self, stats, lineno, reason):
        message = f"{stats.path}:{lineno}: malformed row ({reason})"
        if self.strict:
            raise MalformedRowError(message + "; strict mode")
        stats.skipped += 1
        if stats.skipped <= _MAX_REPORTED:
            logger.debug("%s; skipped", message)
            print(f"WARNING: {message}; skipped", file=sys.stderr, flush=True)

    def _finish(self, stats):
        self.stats.append(stats)
        more = ""
        if stats.skipped > _MAX_REPORTED:
            more = f" (only the first {_MAX_REPORTED} were reported)"
        print(f"{self.name}: read {stats.read} examples from {stats.path}, "
              f"skipped {stats.skipped} malformed rows{more}")

    def _parse_label(self, raw, stats, lineno, labels=None):
        """The label of a row, or ``None`` after reporting it as malformed."""
        raw = raw.strip()
        if self.is_regression:
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not math.isfinite(value):
                self._malformed(stats, lineno, f"label {raw!r} is not a finite number")
                return None
            return value
        labels = self.labels if labels is None else labels
        if raw not in labels:
            self._malformed(stats, lineno, f"label {raw!r} is not one of {list(labels)}")
            return None
        return raw


# --------------------------------------------------------------------------- GLUE


class GlueTask(Task):
    """A GLUE task read from GLUE's distributed layout (see the module docstring)."""

    directory_names = ()  # names of the task's directory under data_dir
    split_files = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    specs = {}  # split -> _FileSpec
    submission = None

    @property
    def test_splits(self):
        return {"test": self.submission}

    def task_dir(self):
        """``<data_dir>/<TASK>`` (matched case- and dash-insensitively), else ``data_dir`` itself."""
        wanted = {re.sub(r"[^a-z0-9]", "", n.lower()) for n in self.directory_names}
        if os.path.isdir(self.data_dir):
            for entry in sorted(os.listdir(self.data_dir)):
                full = os.path.join(self.data_dir, entry)
                if os.path.isdir(full) and re.sub(r"[^a-z0-9]", "", entry.lower()) in wanted:
                    return full
        return self.data_dir

    def split_path(self, split):
        if split not in self.split_files:
            raise KeyError(f"task {self.name!r} has no split {split!r}; it has {sorted(self.split_files)}")
        return os.path.join(self.task_dir(), self.split_files[split])

    def get_examples(self, split):
        path = self.split_path(split)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{self.name}: no {split} file {path!r} (expected GLUE's layout <data_dir>/"
                f"{self.directory_names[0]}/{self.split_files[split]})")
        spec = self.specs[split]
        return self._read(path, spec, split)

    def _read(self, path, spec, split):
        stats = ReadStats(path)
        rows = _iter_tsv(path)
        if spec.header is not None:
            try:
                _, header = next(rows)
            except StopIteration:
                raise ValueError(f"{path}: empty file; expected the header {list(spec.header)}") from None
            if isinstance(header, Exception):
                raise ValueError(f"{path}:1: unreadable header ({header})")
            header = _clean_header(header)
            missing = [c for c in spec.header if c not in header]
            if missing:
                raise ValueError(f"{path}:1: header {header} lacks the column(s) {missing} of "
                                 f"GLUE's {self.name} {split} file {list(spec.header)}")
            num_fields = len(header)

            def col(name):
                return None if name is None else header.index(name)
        else:
            num_fields = spec.num_fields

            def col(i):
                return i
        ia, ib, il, ii = col(spec.text_a), col(spec.text_b), col(spec.label), col(spec.index)
        labelled = il is not None
        examples = []
        for lineno, fields in rows:
            if isinstance(fields, Exception):
                self._malformed(stats, lineno, str(fields))
                continue
            if len(fields) != num_fields:
                self._malformed(stats, lineno, f"{len(fields)} fields, expected {num_fields}")
                continue
            text_a = fields[ia].strip()
            text_b = fields[ib].strip() if ib is not None else None
            if labelled and (not text_a or (ib is not None and not text_b)):
                self._malformed(stats, lineno, "empty text")
                continue
            label = None
            if labelled:
                label = self._parse_label(fields[il], stats, lineno)
                if label is None:
                    continue
            index = fields[ii].strip() if ii is not None else str(len(examples))
            examples.append(Example(f"{path}:{lineno}", text_a, text_b, label, index))
            stats.read += 1
        self._finish(stats)
        return examples


def _pair_specs(a, b, label, index, train_header, test_header, test_index=None):
    test_index = index if test_index is None else test_index
    return {
        "train": _FileSpec(train_header, text_a=a, text_b=b, label=label, index=index),
        "dev": _FileSpec(train_header, text_a=a, text_b=b, label=label, index=index),
        "test": _FileSpec(test_header, text_a=a, text_b=b, index=test_index),
    }


class ColaTask(GlueTask):
    name, labels, main_metric = "cola", ["0", "1"], "mcc"
    directory_names = ("CoLA",)
    submission = "CoLA.tsv"
    # train/dev: header-less, 4 fields (source code, label, original author mark, sentence).
    specs = {
        "train": _FileSpec(None, num_fields=4, text_a=3, label=1),
        "dev": _FileSpec(None, num_fields=4, text_a=3, label=1),
        "test": _FileSpec(("index", "sentence"), text_a="sentence", index="index"),
    }


class Sst2Task(GlueTask):
    name, labels = "sst2", ["0", "1"]
    directory_names = ("SST-2", "SST2", "SST")
    submission = "SST-2.tsv"
    specs = {
        "train": _FileSpec(("sentence", "label"), text_a="sentence", label="label"),
        "dev": _FileSpec(("sentence", "label"), text_a="sentence", label="label"),
        "test": _FileSpec(("index", "sentence"), text_a="sentence", index="index"),
    }


class MrpcTask(GlueTask):
    name, labels, is_pair, main_metric = "mrpc", ["0", "1"], True, "f1"
    directory_names = ("MRPC",)
    submission = "MRPC.tsv"
    _cols = ("#1 ID", "#2 ID", "#1 String", "#2 String")
    specs = _pair_specs("#1 String", "#2 String", "Quality", None,
                        ("Quality",) + _cols, ("index",) + _cols, test_index="index")


class StsbTask(GlueTask):
    name, is_regression, is_pair, main_metric = "stsb", True, True, "pearson"
    directory_names = ("STS-B", "STSB", "STS")
    submission = "STS-B.tsv"
    _cols = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
    specs = _pair_specs("sentence1", "sentence2", "score", "index", _cols + ("score",), _cols)

    def _parse_label(self, raw, stats, lineno, labels=None):
        value = super()._parse_label(raw, stats, lineno)
        if value is not None and not 0.0 <= value <= 5.0:
            self._malformed(stats, lineno, f"score {value} is outside [0, 5]")
            return None
        return value


class QqpTask(GlueTask):
    name, labels, is_pair, main_metric = "qqp", ["0", "1"], True, "f1"
    directory_names = ("QQP",)
    submission = "QQP.tsv"
    specs = _pair_specs("question1", "question2", "is_duplicate", "id",
                        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                        ("id", "question1", "question2"))


MNLI_LABELS = ["contradiction", "entailment", "neutral"]


class MnliTask(GlueTask):
    name, labels, is_pair = "mnli", list(MNLI_LABELS), True
    directory_names = ("MNLI",)
    split_files = {
        "train": "train.tsv",
        "dev_matched": "dev_matched.tsv",
        "dev_mismatched": "dev_mismatched.tsv",
        "test_matched": "test_matched.tsv",
        "test_mismatched": "test_mismatched.tsv",
    }
    _cols = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
    _labelled = _FileSpec(_cols + ("gold_label",), text_a="sentence1", text_b="sentence2",
                          label="gold_label", index="index")
    _test = _FileSpec(_cols, text_a="sentence1", text_b="sentence2", index="index")
    specs = {"train": _labelled, "dev_matched": _labelled, "dev_mismatched": _labelled,
             "test_matched": _test, "test_mismatched": _test}

    @property
    def eval_splits(self):
        return {"dev_matched": "", "dev_mismatched": "mismatched_"}

    @property
    def test_splits(self):
        splits = {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}
        if ax_path(self.data_dir) is not None:
            splits["ax"] = "AX.tsv"  # the diagnostic set is predicted with the MNLI model
        return splits

    def split_path(self, split):
        if split == "ax":
            path = ax_path(self.data_dir)
            if path is None:
                raise FileNotFoundError(f"no GLUE diagnostic file (AX/AX.tsv) under {self.data_dir!r}")
            return path
        return super().split_path(split)

    def get_examples(self, split):
        if split == "ax":
            return self._read(self.split_path("ax"), AxTask.specs["test"], "ax")
        return super().get_examples(split)


def ax_path(data_dir):
    """Path of GLUE's diagnostic set under ``data_dir`` (or its parent), or ``None``."""
    candidates = []
    for base in (data_dir, os.path.dirname(os.path.abspath(data_dir))):
        candidates += [os.path.join(base, "AX", "AX.tsv"), os.path.join(base, "diagnostic", "diagnostic.tsv"),
                       os.path.join(base, "AX.tsv"), os.path.join(base, "diagnostic.tsv")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


class AxTask(GlueTask):
    """GLUE's diagnostic set: unlabelled MNLI-style pairs, predicted with an MNLI model."""

    name, labels, is_pair = "ax", list(MNLI_LABELS), True
    directory_names = ("AX", "diagnostic")
    split_files = {"test": "AX.tsv"}
    submission = "AX.tsv"
    specs = {"test": _FileSpec(("index", "sentence1", "sentence2"), text_a="sentence1", text_b="sentence2",
                               index="index")}

    @property
    def eval_splits(self):
        return {}

    def split_path(self, split):
        if split != "test":
            raise KeyError("task 'ax' has only the split 'test' (GLUE's diagnostic set)")
        path = ax_path(self.data_dir)
        if path is None:
            raise FileNotFoundError(f"no GLUE diagnostic file (AX/AX.tsv or diagnostic/diagnostic.tsv) "
                                    f"under {self.data_dir!r}")
        return path


class _NliTask(GlueTask):
    labels, is_pair = ["entailment", "not_entailment"], True


class QnliTask(_NliTask):
    name = "qnli"
    directory_names = ("QNLI", "QNLIv2")
    submission = "QNLI.tsv"
    specs = _pair_specs("question", "sentence", "label", "index", ("index", "question", "sentence", "label"),
                        ("index", "question", "sentence"))


class RteTask(_NliTask):
    name = "rte"
    directory_names = ("RTE",)
    submission = "RTE.tsv"
    specs = _pair_specs("sentence1", "sentence2", "label", "index", ("index", "sentence1", "sentence2", "label"),
                        ("index", "sentence1", "sentence2"))


class WnliTask(GlueTask):
    name, labels, is_pair = "wnli", ["0", "1"], True
    directory_names = ("WNLI",)
    submission = "WNLI.tsv"
    specs = _pair_specs("sentence1", "sentence2", "label", "index", ("index", "sentence1", "sentence2", "label"),
                        ("index", "sentence1", "sentence2"))


# --------------------------------------------------------------------------- custom TSV/CSV


def _sort_labels(labels):
    """Label strings in numeric order if they are all integers, else alphabetical."""
    labels = sorted(set(labels))
    try:
        return sorted(labels, key=int)
    except ValueError:
        return labels


class TextTask(Task):
    """Users' own data: ``<data_dir>/{train,dev,test}.tsv`` (or ``.csv``) with a header row.

    Args:
      data_dir: directory of the files.
      fmt: ``"tsv"`` (TAB-separated, no quoting) or ``"csv"`` (standard CSV quoting).
      text_column / text_b_column / label_column: header names of the columns.
      labels: the label set, in id order; detected from ``train`` when ``None``.
      regression: numeric label, one output.
      index_column: column holding the ids written to the prediction file;
        default ``"index"`` if the header has it, else the row number from 0.
      strict: raise on the first malformed row instead of skipping it.
    """

    main_metric = "accuracy"

    def __init__(self, data_dir, fmt="tsv", text_column="sentence", text_b_column=None, label_column="label",
                 labels=None, regression=False, index_column=None, strict=False):
        super().__init__(data_dir, strict)
        if fmt not in ("tsv", "csv"):
            raise ValueError(f"fmt must be 'tsv' or 'csv', got {fmt!r}")
        self.name = fmt
        self.fmt = fmt
        self.text_column = text_column
        self.text_b_column = text_b_column or None
        self.label_column = label_column
        self.is_regression = bool(regression)
        self.is_pair = self.text_b_column is not None
        self.index_column = index_column
        self.main_metric = "pearson" if self.is_regression else "accuracy"
        if labels is not None and self.is_regression:
            raise ValueError("labels cannot be given for a regression task")
        self._labels = [str(x) for x in labels] if labels is not None else None
        if self._labels is not None and len(set(self._labels)) != len(self._labels):
            raise ValueError(f"duplicate labels in {self._labels}")
        self._labelled = {}

    @property
    def test_splits(self):
        return {"test": "predictions.tsv"}

    @property
    def labels(self):
        if self.is_regression:
            return None
        if self._labels is None:
            self._labels = self._detect_labels()
        return self._labels

    def split_path(self, split):
        if split not in ("train", "dev", "test"):
            raise KeyError(f"task {self.name!r} has the splits train, dev, test; not {split!r}")
        return os.path.join(self.data_dir, f"{split}.{self.fmt}")

    def _rows(self, path):
        return _iter_tsv(path) if self.fmt == "tsv" else _iter_csv(path)

    def _header(self, path, rows):
        first = next(rows, None)
        if first is None or isinstance(first[1], Exception):
            raise ValueError(f"{path}: no header row (expected column names such as {self.text_column!r})")
        header = _clean_header(first[1])
        for what, column in (("text_column", self.text_column), ("text_b_column", self.text_b_column)):
            if column is not None and column not in header:
                raise ValueError(f"{path}:1: no column {column!r} ({what}) in the header {header}")
        return header

    def _detect_labels(self):
        path = self.split_path("train")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cannot detect the label set: no training file {path!r}; give labels=")
        rows = self._rows(path)
        header = self._header(path, rows)
        if self.label_column not in header:
            raise ValueError(f"{path}:1: no label column {self.label_column!r} in the header {header}")
        il = header.index(self.label_column)
        found = []
        for _, fields in rows:
            if not isinstance(fields, Exception) and len(fields) == len(header) and fields[il].strip():
                found.append(fields[il].strip())
        if len(set(found)) < 2:
            raise ValueError(f"{path}: found {len(set(found))} distinct label(s) {sorted(set(found))} in column "
                             f"{self.label_column!r}; a classification task needs at least 2 (or use regression)")
        return _sort_labels(found)

    def split_has_labels(self, split):
        if split != "test":
            return True
        if split not in self._labelled:
            path = self.split_path(split)
            if not os.path.isfile(path):
                return False
            self._labelled[split] = self._has_label(path, self._header(path, self._rows(path)))
        return self._labelled[split]

    def _has_label(self, path, header):
        """Whether a file with this header carries labels (test files may omit them)."""
        del path
        return self.label_column in header

    def _row_label(self, fields, header, stats, lineno, labels):
        """The label of a row, or ``None`` after reporting it as malformed."""
        return self._parse_label(fields[header.index(self.label_column)], stats, lineno, labels)

    def get_examples(self, split):
        path = self.split_path(split)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name}: no {split} file {path!r}")
        labels = None if self.is_regression else self.labels
        stats = ReadStats(path)
        rows = self._rows(path)
        header = self._header(path, rows)
        labelled = self._has_label(path, header)
        if not labelled and split != "test":
            raise ValueError(f"{path}:1: no label column {self.label_column!r} in the header {header}")
        self._labelled[split] = labelled
        ia = header.index(self.text_column)
        ib = header.index(self.text_b_column) if self.text_b_column else None
        index_column = self.index_column or ("index" if "index" in header else None)
        if index_column is not None and index_column not in header:
            raise ValueError(f"{path}:1: no index column {index_column!r} in the header {header}")
        ii = header.index(index_column) if index_column else None
        examples = []
        row_number = 0
        for lineno, fields in rows:
            if isinstance(fields, Exception):
                self._malformed(stats, lineno, str(fields))
                row_number += 1
                continue
            row_number += 1
            if len(fields) != len(header):
                self._malformed(stats, lineno, f"{len(fields)} fields, expected {len(header)}")
                continue
            text_a = fields[ia].strip()
            text_b = fields[ib].strip() if ib is not None else None
            if not text_a or (ib is not None and not text_b):
                self._malformed(stats, lineno, "empty text")
                continue
            label = None
            if labelled:
                label = self._row_label(fields, header, stats, lineno, labels)
                if label is None:
                    continue
            index = fields[ii].strip() if ii is not None else str(row_number - 1)
            examples.append(Example(f"{path}:{lineno}", text_a, text_b, label, index))
            stats.read += 1
        self._finish(stats)
        return examples


# --------------------------------------------------------------------------- registry

GLUE_TASKS = {
    "cola": ColaTask,
    "sst2": Sst2Task,
    "mrpc": MrpcTask,
    "stsb": StsbTask,
    "qqp": QqpTask,
    "mnli": MnliTask,
    "qnli": QnliTask,
    "rte": RteTask,
    "wnli": WnliTask,
    "ax": AxTask,
}
TASK_NAMES = tuple(GLUE_TASKS) + ("tsv", "csv")


def canonical_task_name(name):
    """``"SST-2"`` -> ``"sst2"``, ``"STS-B"`` -> ``"stsb"``, ``"MNLI"`` -> ``"mnli"`` ..."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    aliases = {"sst": "sst2", "sts": "stsb", "diagnostic": "ax", "qnliv2": "qnli"}
    key = aliases.get(key, key)
    if key not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return key


def get_task(name, data_dir, strict=False, **kwargs):
    """The :class:`Task` ``name`` (a GLUE task, ``"tsv"`` or ``"csv"``) reading from ``data_dir``.

    ``kwargs`` go to :class:`TextTask` for ``tsv``/``csv`` (``text_column``,
    ``text_b_column``, ``label_column``, ``labels``, ``regression``,
    ``index_column``); GLUE tasks take none.
    """
    key = canonical_task_name(name)
    if key in ("tsv", "csv"):
        return TextTask(data_dir, fmt=key, strict=strict, **kwargs)
    if kwargs:
        raise TypeError(f"GLUE task {key!r} takes no options; got {sorted(kwargs)}")
    return GLUE_TASKS[key](data_dir, strict=strict)


def write_submission(path, examples, predictions, task):
    """Write a GLUE submission file: header ``index  prediction``, one row per example.

    ``predictions`` are class ids (classification; written as label strings)
    or numbers (regression; written with 3 decimals, clipped to STS-B's [0, 5]
    for ``stsb``).
    """
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions for {path}")
    lines = ["index\tprediction"]
    for ex, pred in zip(examples, predictions):
        if task.is_regression:
            value = float(pred)
            if task.name == "stsb":
                value = min(5.0, max(0.0, value))
            lines.append(f"{ex.index}\t{value:.3f}")
        else:
            lines.append(f"{ex.index}\t{task.labels[int(pred)]}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic.write_file(path, "\n".join(lines) + "\n")
