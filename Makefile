PYTHON ?= python3

.PHONY: install test test-fast lint demo params bench

## install: torch 2.13.0 first (the CPU build where one is on disk), then the project, editable, with dev extras
install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

## test: the whole suite, slow real-data checks included
test:
	$(PYTHON) -m pytest -q

## test-fast: unit tests only
test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check idspam tests experiments

## demo: the default run (ID-SPAM, packaged MiniLM, packaged demo data)
demo:
	$(PYTHON) -m idspam.run

## params: trainable parameters per method (roberta_base, roberta_large) beside the paper's Table 12
params:
	$(PYTHON) -m idspam.params $(ARGS)

## bench: training speed and memory of every method against PEFT (roberta_base shapes, CPU); ARGS="device=cuda ..."
bench:
	$(PYTHON) -m idspam.bench $(ARGS)
