"""`aiir demo run --target kubernetes`: containment, evidence and rollback on its own real cluster, in the form
users run it; the embedded default stays `local`."""

from __future__ import annotations

import inspect
import json

import pytest

from tests.conftest import run_aiir


def test_the_demo_default_target_is_local():
    from aiir.cli.core import demo_run

    assert inspect.signature(demo_run).parameters["target"].default == "local"


def test_an_unknown_demo_target_is_bad_input():
    out = run_aiir("demo", "run", "--target", "mainframe")
    assert out.returncode == 2 and "--target: no demo story for target kind 'mainframe'" in out.stderr


@pytest.mark.slow
def test_demo_plays_containment_evidence_and_rollback_on_kubernetes(k8s, tmp_path):
    # `k8s` only to skip where no control plane can be built: the demo starts (and stops) its own cluster
    out = run_aiir("demo", "run", "--target", "kubernetes", env={"AIIR_HOME": str(tmp_path / "home")}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    body = out.stdout[out.stdout.index("\n{") + 1:out.stdout.index("\n}") + 2]
    res = json.loads(body)
    assert res["contained_mode"] == "isolated" and res["evidence_verified"] is True
    assert res["serving_now"] == {"mode": "serving", "routes": [{"version": "1", "share": 1.0}],
                                  "primary_version": "1"}
    assert "do not really serve" in out.stdout  # the demo says what it cannot show
    pids = list((tmp_path / "home" / "k8s").glob("*.pid"))
    assert pids == []  # stopped by pid at the end
