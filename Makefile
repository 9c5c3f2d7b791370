# unlearnkit — the two commands of the README's quick start, plus helpers.
#   make demo   installs into .venv and runs the default experiment (digits, random 10 % forgetting)
#   make test   installs into .venv (with test extras) and runs the default test selection
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; pip takes it first so that no multi-GB CUDA build is pulled in by the package install.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# the test suite also exercises the optional extras (LLM, graph, service, Ray)
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/unlearnkit run

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# static checks CI runs before the tests: ruff, and the import-layer contract (docs/ARCHITECTURE.md)
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
