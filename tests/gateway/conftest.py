"""Fixtures for the gateway tests: a tiny MLflow registry of our own and real `aiir serve` processes.

The registry (``aiir.gateway.synthetic``: three logistic-regression versions of ``gw-test``, aliases
``last-known-good`` → 1 and ``champion`` → 2) is built once per session in a subprocess, so MLflow's
environment never leaks into this process. One gateway process is shared by the whole session
(``gateway``); ``gw`` hands it to a test after lifting any containment a previous test left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.gateway.gwkit import MODEL, Gateway


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("gw-mlflow")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run([sys.executable, "-m", "aiir.gateway.synthetic", str(root), MODEL], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    info["root"] = root
    return info


@pytest.fixture(scope="session")
def gw_env(mlflow_store, tmp_path_factory):
    home = tmp_path_factory.mktemp("gw-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIR_")}
    env.update({"MLFLOW_TRACKING_URI": mlflow_store["tracking_uri"], "AIIR_HOME": str(home),
                "AIIR_ARTIFACT_TRUSTED_KEYS": mlflow_store["trusted_key"],  # the store's signing key
                "AIIR_GATEWAY_DIR": str(home / "gateway"), "PYTHONWARNINGS": "ignore"})
    return env


@pytest.fixture(scope="session")
def gateway(gw_env, tmp_path_factory):
    g = Gateway(gw_env, None, tmp_path_factory.mktemp("gw-logs") / "serve.log").start()
    yield g
    g.stop()


@pytest.fixture
def gw(gateway):
    """The shared gateway with no containment and the alias-following primary (v2)."""
    gateway.ok("/admin/restore", {"follow_alias": True, "reason": "test reset"})
    gateway.ok("/admin/canary", {"version": None, "share": 0, "reason": "test reset"})
    return gateway
