# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: venv demo test test-fast lint lock mutate bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/rotator demo

TEST_JOBS ?= 4

test: venv  ## the whole suite, in TEST_JOBS worker processes (TEST_JOBS=0: in this one)
	$(PY) -m pytest -n $(TEST_JOBS)

test-fast: venv  ## the pure core and the adapters' unit tests only (seconds)
	$(PY) -m pytest tests/unit -q

lint: venv  ## ruff, mypy --strict and the import contracts (pyproject.toml)
	$(VENV)/bin/ruff check rotator tests bench
	$(VENV)/bin/mypy --strict rotator
	$(VENV)/bin/lint-imports

# requirements.lock: the runtime dependencies of pyproject.toml (not the dev extra), pinned,
# with the sha256 of every file PyPI has for each pin; the Dockerfile installs exactly these
# (`pip install --require-hashes`). Resolved for the image's Python (3.12) on Linux. It
# keeps the pins already in the file where pyproject.toml still allows them: `make lock
# LOCK_FLAGS=--upgrade` moves every pin to the newest allowed release. tests/unit/test_lock.py fails when the lock
# misses a dependency of pyproject.toml or pins one outside its range.
LOCK_FLAGS ?=
lock: venv  ## requirements.lock from pyproject.toml's runtime dependencies, with hashes
	$(VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes \
	    --python-version 3.12 --python-platform linux --index-url https://pypi.org/simple \
	    --custom-compile-command "make lock" $(LOCK_FLAGS) -o requirements.lock

# Mutation testing of rotator/core and rotator/engine ([tool.mutmut] in pyproject.toml,
# docs/mutation.md). Not part of `make test`, `make lint` or CI: it takes tens of minutes.
# It starts from an empty mutants/ each time: mutmut copies the rest of rotator/ there only
# once, and would otherwise test the mutants against stale copies of it.
MUTATE_JOBS ?= 2
mutate: venv  ## mutmut on core/ and engine/, niced, MUTATE_JOBS workers; then the survivors and a summary
	rm -rf mutants
	nice -n 10 $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS)
	@$(VENV)/bin/mutmut results
	@$(VENV)/bin/mutmut export-cicd-stats >/dev/null
	@$(PY) -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
	print("mutants {total}: killed {killed}, survived {survived}, timeout {timeout}, " \
	      "suspicious {suspicious}, no tests {no_tests}, skipped {skipped}".format(**s)); \
	score = 100 * (s["killed"] + s["timeout"]) / max(s["total"] - s["skipped"], 1); \
	print("score, (killed + timeout) / (total - skipped): {:.1f}%".format(score))'

bench: venv
	$(PY) bench/rotation_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info mutants
