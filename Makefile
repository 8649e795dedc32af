# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: venv demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/rotator demo

test: venv
	$(PY) -m pytest

test-fast: venv  ## the pure core and the adapters' unit tests only (seconds)
	$(PY) -m pytest tests/unit -q

lint: venv  ## ruff, mypy --strict and the import contracts (pyproject.toml)
	$(VENV)/bin/ruff check rotator tests bench
	$(VENV)/bin/mypy --strict rotator
	$(VENV)/bin/lint-imports

bench: venv
	$(PY) bench/rotation_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
