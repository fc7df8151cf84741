"""Readers of multiple-choice data (SWAG, HellaSwag, ARC-style): a context, an optional question, N options.

A split is ``<data_dir>/<split>.jsonl`` (one JSON object a line) or ``<data_dir>/<split>.csv`` (a header row, RFC
4180 quoting). Columns are found by name, the first present of:

==========  ===============================================================================================
field       column names
==========  ===============================================================================================
context     ``context``, ``sent1`` (SWAG), ``ctx_a`` (HellaSwag), ``startphrase`` (SWAG, when no ``sent1``)
question    ``question``, ``sent2`` (SWAG), ``ctx_b`` (HellaSwag); optional
options     ``options``, ``endings``, ``choices`` (a JSON list; in a CSV cell a JSON-encoded list; ARC's
            ``{"text": [...], "label": [...]}`` too), else ``ending0``..``ending<N-1>`` or
            ``option0``..``option<N-1>``
label       ``label``, ``answer``, ``answerKey``: an index from 0, or a letter A, B, ... (or an option label
            of ARC's ``choices``); optional in a test file
id          ``id``, ``ind``, else ``<file>:<line>``
==========  ===============================================================================================

Every example of a data set has the same number of options, N: ``num_choices`` when given, else the first
well-formed row's. A row is *malformed* when its option count differs from N, when it has fewer than 2 options,
when an option is empty or only whitespace, when both context and question are empty or only whitespace, when
its label is not an option, or when the line is not a JSON object / the CSV row is badly quoted. A malformed row
is reported by ``file:line`` and skipped (each file prints its counts); with ``strict=True`` the first one raises
`MalformedRowError`.

>>> import os, tempfile
>>> from bert_tf.tasks.multiple_choice import data
>>> path = os.path.join(tempfile.mkdtemp(), "dev.jsonl")
>>> _ = open(path, "w").write('{"context": "He opens the fridge.", "question": "He", "endings": ["takes milk.", '
...     '"flies away.", "sings."], "label": 0}\\n{"context": "x", "endings": ["a", "b"], "label": 1}\\n')
>>> d = data.read_choices(path)  # doctest: +ELLIPSIS
multiple_choice: ...dev.jsonl:2: 2 options, expected 3 (as every example of this data set)
multiple_choice: read 1 examples from ...dev.jsonl, skipped 1 malformed rows
>>> d.examples[0].options, d.examples[0].label, d.num_choices
(('takes milk.', 'flies away.', 'sings.'), 0, 3)
"""

import csv
import dataclasses
import json
import os
import re
import string

CONTEXT_COLUMNS = ("context", "sent1", "ctx_a", "startphrase")
QUESTION_COLUMNS = ("question", "sent2", "ctx_b")
OPTIONS_COLUMNS = ("options", "endings", "choices")
NUMBERED_OPTION_PREFIXES = ("ending", "option")
LABEL_COLUMNS = ("label", "answer", "answerKey")
ID_COLUMNS = ("id", "ind")
SPLIT_FORMATS = (".jsonl", ".csv")

_MAX_REPORTED = 20  # malformed rows reported one by one per file; the rest are counted


class MalformedRowError(ValueError):
    """A malformed row in strict mode; the message names the file and line."""


class _RowError(Exception):
    """Why one row is malformed (caught per row: reported and skipped, or raised in strict mode)."""


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
    """One multiple-choice item: `label` is the gold option's index (None when the file has no label)."""

    example_id: str
    context: str
    question: str
    options: tuple
    label: int | None


@dataclasses.dataclass
class ChoiceData:
    """The examples of one file, with the rows skipped and why (`problems`: "file:line: reason")."""

    path: str
    examples: list
    num_choices: int | None
    skipped: int = 0
    problems: list = dataclasses.field(default_factory=list)

    @property
    def has_labels(self):
        return bool(self.examples) and all(e.label is not None for e in self.examples)


def split_path(data_dir, split):
    """`<data_dir>/<split>.jsonl` or `.csv` (the first present), or None."""
    for ext in SPLIT_FORMATS:
        path = os.path.join(data_dir, split + ext)
        if os.path.exists(path):
            return path
    return None


def _first(row, names):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


def _text(value, what):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _RowError(f"{what} is a {type(value).__name__}, not a string")
    return value


def _numbered_options(row):
    for prefix in NUMBERED_OPTION_PREFIXES:
        numbered = {int(k[len(prefix):]): v for k, v in row.items()
                    if k.startswith(prefix) and k[len(prefix):].isdigit()}
        if numbered:
            if sorted(numbered) != list(range(len(numbered))):
                raise _RowError(f"columns {prefix}<i> are not numbered 0..{len(numbered) - 1}")
            return [numbered[i] for i in range(len(numbered))], None
    return None, None


def _options(row, from_csv):
    """(option texts, option labels or None) of a row."""
    value = _first(row, OPTIONS_COLUMNS)
    if value is None:
        options, labels = _numbered_options(row)
        if options is None:
            raise _RowError(f"no options: none of the columns {', '.join(OPTIONS_COLUMNS)} or ending0.. / option0..")
        return options, labels
    if from_csv and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _RowError("the options cell is not a JSON list") from None
    labels = None
    if isinstance(value, dict):  # ARC: {"text": [...], "label": ["A", "B", ...]}
        labels, value = value.get("label"), value.get("text")
    if not isinstance(value, list):
        raise _RowError(f"options are a {type(value).__name__}, not a list")
    return value, labels


def _label_index(raw, num_options, option_labels):
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise _RowError(f"label {raw!r} is not an option index")
    text = str(raw).strip()
    if option_labels is not None and text in [str(x) for x in option_labels]:
        return [str(x) for x in option_labels].index(text)
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
    elif len(text) == 1 and text.upper() in string.ascii_uppercase:
        index = string.ascii_uppercase.index(text.upper())
    else:
        raise _RowError(f"label {raw!r} is neither an option index nor a letter")
    if not 0 <= index < num_options:
        raise _RowError(f"label {raw!r} is not one of the {num_options} options")
    return index


def parse_row(row, num_choices, from_csv=False):
    """(context, question, options tuple, label index or None) of one row; `_RowError` says why not."""
    if not isinstance(row, dict):
        raise _RowError(f"a {type(row).__name__}, not a JSON object")
    context = _text(_first(row, CONTEXT_COLUMNS), "context")
    question = _text(_first(row, QUESTION_COLUMNS), "question")
    options, option_labels = _options(row, from_csv)
    if len(options) < 2:
        raise _RowError(f"{len(options)} options: a multiple-choice item needs at least 2")
    if num_choices is not None and len(options) != num_choices:
        raise _RowError(f"{len(options)} options, expected {num_choices} (as every example of this data set)")
    options = tuple(_text(o, f"option {i}") for i, o in enumerate(options))
    blank = [i for i, o in enumerate(options) if not o.strip()]
    if blank:
        raise _RowError(f"option {blank[0]} is empty or only whitespace")
    if not context.strip() and not question.strip():
        raise _RowError("both context and question are empty or only whitespace")
    label = _label_index(_first(row, LABEL_COLUMNS), len(options), option_labels)
    return context, question, options, label


def _rows(path):
    """(line number, row dict or the text that failed to parse) of a .jsonl or .csv file."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith(".csv"):
            reader = csv.DictReader(f, strict=True)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    yield reader.line_num, _RowError(f"bad CSV quoting ({e})")
                    continue
                yield reader.line_num, row
        else:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, _RowError(f"not JSON ({e.msg})")


def read_choices(path, num_choices=None, strict=False, log=True):
    """The `ChoiceData` of a .jsonl / .csv file (see the module docstring for the layout and the rules)."""
    data = ChoiceData(path, [], num_choices)
    name = os.path.basename(path)
    for lineno, row in _rows(path):
        try:
            if isinstance(row, _RowError):
                raise row
            context, question, options, label = parse_row(row, data.num_choices, from_csv=path.endswith(".csv"))
        except _RowError as e:
            where = f"{path}:{lineno}: {e}"
            if strict:
                raise MalformedRowError(where + " (a malformed row; without --strict it is skipped)") from None
            data.skipped += 1
            data.problems.append(where)
            if log and data.skipped <= _MAX_REPORTED:
                print(f"multiple_choice: {where}", flush=True)
            continue
        data.num_choices = len(options)
        example_id = _first(row, ID_COLUMNS)
        example_id = f"{name}:{lineno}" if example_id is None else str(example_id)
        data.examples.append(ChoiceExample(example_id, context, question, options, label))
    if log:
        print(f"multiple_choice: read {len(data.examples)} examples from {path}"
              + (f", skipped {data.skipped} malformed rows" if data.skipped else ""), flush=True)
    return data
