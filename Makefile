# aiir — two commands on a fresh machine: `make demo` and `make test`.
# Both first create .venv and install requirements.txt (skipped when already done for these files).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# setup.py and the guard kernel's C source too: `make venv` rebuilds the kernel when they change
KERNEL_SRC := setup.py include/aiir/evasion/_guardk.c
REQ_HASH := $(shell cat requirements.txt pyproject.toml $(KERNEL_SRC) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv test test-unproven test-fast test-distributed test-distributed-faults distributed-deps demo lint bench clean distclean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml $(KERNEL_SRC)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) scripts/check_kernel.py
	@rm -f $(VENV)/.installed-*
	@touch $@

## make test: the suite (unit, DAG integrity, real gateway, real Airflow end to end); the distributed
## setup's native proof is `make test-distributed` (CI runs both). The tests that start a real Airflow and
## the rest run side by side (scripts/test_split.py: Airflow modules mostly wait); AIIR_TEST_SERIAL=1 runs
## them one after the other.
test: venv
	GX_ANALYTICS_ENABLED=false $(PY) scripts/test_split.py -m "not distributed and not unproven" --durations=30 $(PYTEST_ARGS)

## make test-unproven: tests written this round that have not yet been seen passing (listed in the notes).
test-unproven: venv
	GX_ANALYTICS_ENABLED=false $(PY) -m pytest -m unproven $(PYTEST_ARGS)

## make test-distributed: docker-compose.yaml checks, then the same services natively — PostgreSQL and
## Redis (Debian packages, installed when absent), Airflow on Celery with two workers, MLflow, gateway —
## and, on that one cluster, the poisoning story, then the faults: kill -9 a Celery worker mid-isolate and
## mid-preserve, restart PostgreSQL mid-run (CI runs this target).
test-distributed: venv distributed-deps
	GX_ANALYTICS_ENABLED=false $(PY) -m pytest tests/distributed -m "not unproven" --durations=10 $(PYTEST_ARGS)

## make test-distributed-faults: only the fault tests (worker kills, PostgreSQL restart) on a cluster of
## their own — to re-run them without the story.
test-distributed-faults: venv distributed-deps
	GX_ANALYTICS_ENABLED=false $(PY) -m pytest tests/distributed -m faults $(PYTEST_ARGS)

## PostgreSQL and Redis from Debian's packages, only when absent (one apt-get update).
distributed-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null; then \
		echo "postgresql and redis-server present"; \
	else \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			postgresql redis-server >/dev/null && echo "installed postgresql and redis-server"; \
	fi

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
