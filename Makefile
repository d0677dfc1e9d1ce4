# make demo: set up .venv, run the default sweep on bundled data, print a summary, write results/demo/report.html (figures inlined) and print its path.
# make test: set up .venv with the test extras, run the whole suite.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e .
	$(BIN)/python -m rankbias.native
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/rankbias run examples/demo.yaml --results results/demo --progress
	$(BIN)/rankbias report results/demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/end_to_end.py

clean:
	rm -rf $(VENV) results/demo
