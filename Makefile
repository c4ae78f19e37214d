# dualstream: `make demo` (set-up + the main job on the bundled sample), `make test` (set-up + the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= outputs/demo

.PHONY: install demo test test-fast report clean

install: $(STAMP)

# torch is pinned to 2.13.0 in pyproject.toml: a looser range pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,viewer]"
	touch $(STAMP)

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/dualstream experiment=demo sweep=demo hydra.sweep.dir=$(DEMO_DIR)
	@echo "report:" && $(BIN)/dualstream-report $(DEMO_DIR)

test: install
	$(BIN)/python -m pytest -q

# The suite without the end-to-end console-script runs marked slow (a quick check while editing).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf outputs .cache/dualstream .pytest_cache
