# unlearnkit — the two commands of the README's quick start, plus helpers.
#   make demo   installs into .venv and runs the default experiment (digits, random 10 % forgetting)
#   make test   installs into .venv (with test extras) and runs the default test selection
#   make test-vision  the torchvision tests in a second venv (.venv-vision; torch 2.14.1 + torchvision 0.29.1)
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; pip takes it first so that no multi-GB CUDA build is pulled in by the package install.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test test-vision test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# the test suite also exercises the optional extras (LLM, graph, service, Ray)
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet "setuptools>=68"  # the packaging test builds the wheel without network
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/unlearnkit run

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# torchvision's registry wheels need a CUDA-build torch (0.28 fails to load its operators with the CPU torch 2.13.0):
# the tests marked `torchvision` run in a second venv with torch 2.14.1 + torchvision 0.29.1 (about 5.5 GB; works on
# CPU). CI runs this after `make test`; elsewhere those tests skip with that reason.
VISION_VENV ?= .venv-vision
VISION_SPEC ?= torch==2.14.1 torchvision==0.29.1
$(VISION_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/python -m pip install --quiet $(VISION_SPEC)
	$(VISION_VENV)/bin/python -m pip install --quiet -e ".[vision,dev]"
	touch $@

test-vision: $(VISION_VENV)/.installed
	$(VISION_VENV)/bin/python -m pytest -m torchvision tests/unit/test_models.py tests/unit/test_torchvision_paths.py $(PYTEST_ARGS)

# static checks CI runs before the tests: ruff, and the import-layer contract (docs/ARCHITECTURE.md)
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) $(VISION_VENV) .ci-reports runs build dist src/*.egg-info
