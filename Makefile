# Two entry points for a fresh machine with Python 3.10+ and make:
#   make render   set up .venv and render mandelbrot_advanced.png
#   make test     set up .venv with test tools and run the whole suite
# and the benchmarks (need gcc): make bench, or make bench-quick in seconds.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: render test test-fast lint bench bench-quick setup setup-test clean

$(BIN)/fraktal: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# The suite runs the benchmarks' quick mode, dask included.
$(VENV)/.test-deps: $(BIN)/fraktal
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

$(VENV)/.bench-deps: $(BIN)/fraktal
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

setup: $(BIN)/fraktal

setup-test: $(VENV)/.test-deps

render: setup
	$(BIN)/fraktal render $(ARGS)

test: setup-test
	$(BIN)/python -m pytest $(ARGS)

test-fast: setup-test
	$(BIN)/python -m pytest -m 'not slow' $(ARGS)

bench: $(VENV)/.bench-deps
	$(BIN)/python benchmarks/run.py $(ARGS)

bench-quick: $(VENV)/.bench-deps
	$(BIN)/python benchmarks/run.py --quick $(ARGS)

lint: setup-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info benchmarks/build
