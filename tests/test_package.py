"""The lazy `bert_tf` namespace: every advertised name resolves."""

import importlib
import re

import pytest

import bert_tf


def test_every_public_name_resolves():
    for name in bert_tf.__all__:
        assert getattr(bert_tf, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        bert_tf.no_such_thing  # noqa: B018


def test_library_does_not_import_programs():
    # bert_tf/ is the library; trainers/ and serving/ are programs over it, fixtures/ is test and demo data.
    import pathlib

    root = pathlib.Path(bert_tf.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+(trainers|serving|fixtures)\b", re.M)
    for path in root.glob("*.py"):
        match = pattern.search(path.read_text())
        assert match is None, f"{path}: {match and match.group(0)}"
    assert importlib.import_module("bert_tf") is bert_tf
