# aiir — two commands on a fresh machine: `make demo` and `make test`.
# Both first create .venv and install requirements.txt (skipped when already done for these files).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
PYTEST_ARGS ?=

.PHONY: venv test test-fast demo lint bench clean distclean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

## make test: the whole suite (unit, DAG integrity, real gateway, real Airflow end to end).
test: venv
	GX_ANALYTICS_ENABLED=false $(PY) -m pytest $(PYTEST_ARGS)

## make test-fast: everything but the tests that start Airflow.
test-fast: venv
	GX_ANALYTICS_ENABLED=false $(PY) -m pytest -m "not airflow" $(PYTEST_ARGS)

## make demo: the whole story on embedded defaults (state in .aiir/, Airflow UI printed at the start).
demo: venv
	GX_ANALYTICS_ENABLED=false $(VENV)/bin/aiir demo run

lint: venv
	$(VENV)/bin/ruff check include plugins dags tests bench

## make bench: every benchmark; results in bench/results/ and docs/benchmarks.md.
bench: venv
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf .aiir .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
