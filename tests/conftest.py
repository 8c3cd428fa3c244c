"""Shared fixtures. Every test runs with its own AIIR_HOME (nothing touches the repo's .aiir/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.k8skit import k8s  # noqa: F401  (the session's one Kubernetes control plane, started on first use)

pytest_plugins = ["tests.costkit"]  # CPU and wall seconds per module, printed at the end of every run

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_REGISTRY_URI", None)
os.environ.pop("AIRFLOW_HOME", None)
# Subprocesses (the aiir CLI, airflow, the gateway) import this checkout's code, whichever checkout the
# venv's editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "include"), str(REPO / "plugins")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True, scope="module")
def _no_mlflow_uri_leaks():
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` also export MLFLOW_*_URI into os.environ; a test
    module that calls them in-process would otherwise point every later module's subprocesses at its store
    (seen in CI: a registry URI left by the gateway tests sent a SageMaker test's models to another db)."""
    saved = {k: os.environ.get(k) for k in _MLFLOW_URI_VARS}
    yield
    restore_env(saved)


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as ``saved`` had them (``None``: the variable was not set)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def aiir_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty state folder for one test."""
    home = tmp_path / "aiir-home"
    monkeypatch.setenv("AIIR_HOME", str(home))
    for var in ("AIIR_EVIDENCE_DIR", "AIIR_DATA_DIR", "AIIR_GATEWAY_DIR", "AIIR_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    """A bootstrapped demo (data, MLflow store, v1 champion + last-known-good), one per test module."""
    home = tmp_path_factory.mktemp("demo") / "aiir-home"
    old = os.environ.get("AIIR_HOME")
    os.environ["AIIR_HOME"] = str(home)
    from aiir.bootstrap import bootstrap

    bootstrap()
    yield home
    if old is None:
        os.environ.pop("AIIR_HOME", None)
    else:
        os.environ["AIIR_HOME"] = old


@pytest.fixture(scope="module")
def poisoned_demo(tmp_path_factory) -> Path:
    """The demo after the compromise: bootstrapped, then v2 retrained on the poisoned batch and promoted
    to champion (last-known-good stays v1). One per test session, shared by the modules that only read
    it or whose changes the others tolerate (forensics, retrain)."""
    home = tmp_path_factory.getbasetemp() / "aiir-poisoned-demo"
    old = os.environ.get("AIIR_HOME")
    os.environ["AIIR_HOME"] = str(home)
    from aiir import bootstrap, registry
    from aiir.errors import BadInput

    bootstrap.bootstrap()
    try:
        registry.get_version("fraud-detector", "2")
    except BadInput:
        bootstrap.nightly_retrain([4, 5])
    yield home
    if old is None:
        os.environ.pop("AIIR_HOME", None)
    else:
        os.environ["AIIR_HOME"] = old


def run_aiir(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    import subprocess

    return subprocess.run([str(VENV_BIN / "aiir"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (tests/browserkit.py). Module scope, not session: while
    Playwright's sync API is running it owns the thread's event loop, so a session-wide browser would make
    every later asyncio.run() (the traffic replayer of the end-to-end tests) fail. Skips where Chromium/Playwright are
    missing, except under CI (CI=true), where .ci/run installs them and a missing browser is a failure."""
    from tests.browserkit import Browser, unavailable_reason

    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run: {reason}")
        pytest.skip(reason)
    with Browser() as b:
        yield b
