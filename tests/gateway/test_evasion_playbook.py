"""The evasion playbook's steps on a real gateway: a guard trip's finding → contain (rate limit at the
target) → triage (re-scan of the served decisions) → preserve (sealed bundle) → harden (ART) → canary
redeploy with automatic rollback → report."""

from __future__ import annotations

import json
import threading
import time
import warnings

import numpy as np
import pytest

from aiir.gateway.synthetic import FEATURES, synthetic_frame
from tests.gateway.gwkit import MODEL, split


@pytest.fixture
def incident_env(gw, gw_env, mlflow_store, monkeypatch, tmp_path):
    monkeypatch.setenv("AIIR_HOME", gw_env["AIIR_HOME"])
    monkeypatch.setenv("AIIR_GATEWAY_DIR", gw_env["AIIR_GATEWAY_DIR"])
    monkeypatch.setenv("AIIR_GATEWAY_URL", gw.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["tracking_uri"])
    monkeypatch.setenv("AIIR_EVIDENCE_DIR", str(tmp_path / "evidence"))
    return gw


def _probe(gw, client: str, n: int = 40) -> None:
    X, _ = synthetic_frame()
    base = X.to_numpy()[3]
    rng = np.random.default_rng(1)
    for _ in range(n):
        x = base + rng.normal(0, 2e-3, size=base.shape) * X.to_numpy().std(axis=0)
        assert gw.score(split([x.round(6).tolist()], FEATURES), client=client).status_code == 200


def test_playbook_steps_end_to_end(incident_env):
    gw = incident_env
    from aiir.evasion import playbook as ep
    from aiir.incident import validate_conf

    X, y = synthetic_frame()
    for i in range(30):  # clean clients
        assert gw.score(split([X.to_numpy()[10 + i].tolist()], FEATURES), client=f"shop-{i % 10}").status_code == 200
    _probe(gw, "prober-7")
    gw.flush()
    record = validate_conf({"model_name": MODEL, "target_name": MODEL, "severity": "high", "opened_by": "test",
                            "findings": [{"kind": "evasion", "severity": "high", "title": "guard trip",
                                          "sources": ["prober-7"], "atlas": ["AML.T0015"], "owasp": ["ML01"]}]})
    c = ep.contain(record)
    assert c["clients"] == ["prober-7"] and c["action"].startswith("rate_limit")
    assert gw.ok("/admin/state")["rate_limits"] == {"prober-7": 1.0}
    assert ep.contain(record) == c  # idempotent
    from aiir import playbook as pb

    pb.open_incident(record)
    t = ep.triage(record)
    assert t["confirmed"] and t["suspects_found"] == ["prober-7"]
    a = t["attack"]["prober-7"]
    assert a["queries"] == 40 and a["perturbation_rms"]["median"] < 0.01
    ev = ep.preserve(record)
    assert ev["files"] >= 5
    from aiir.evidence.verify import verify_bundle

    assert verify_bundle(ev["bundle"]).ok
    lines = [json.loads(x) for x in (record.workdir / "suspect_decisions.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and {r["client_id"] for r in lines} == {"prober-7"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ep.harden(record, training=(X.to_numpy(), np.asarray(y), FEATURES), min_gain=0.0, max_clean_drop=0.2)
    assert h["held_out_rows"]["hsj"] > 0 and h["before"]["robust_accuracy_hsj"] == 0.0
    assert h["after"]["robust_accuracy_hsj"] >= h["before"]["robust_accuracy_hsj"]
    assert h["gate"]["passed"] == (h["hardened_version"] is not None)
    stop = threading.Event()

    def traffic():
        i = 0
        while not stop.is_set():
            gw.score(split([X.to_numpy()[i % 400].tolist()], FEATURES), client=f"shop-{i % 10}")
            i += 1
            time.sleep(0.02)

    th = threading.Thread(target=traffic, daemon=True)
    th.start()
    try:
        r = ep.redeploy(record, share=0.5, observe_s=2.0)
    finally:
        stop.set()
        th.join(10)
    if h["hardened_version"]:
        assert r["outcome"] in ("promoted", "rolled_back")
        state = gw.ok("/admin/state")
        if r["outcome"] == "promoted":
            assert state["routes"][0]["version"] == h["hardened_version"]
        else:
            assert state["extra"]["canary"] is None and r["problem"]
    else:
        assert r["outcome"] == "skipped"
    rep = ep.report(record)
    html = open(rep["html"], encoding="utf-8").read()
    assert "prober-7" in html and "AML.T0015" in html
    doc = json.loads(open(rep["json"], encoding="utf-8").read())
    assert doc["kind"] == "adversarial_evasion" and "ML01" in {o["id"] for o in doc["owasp"]}


def test_contain_with_no_named_client_changes_nothing(incident_env):
    from aiir.evasion import playbook as ep
    from aiir.incident import validate_conf

    record = validate_conf({"model_name": MODEL, "target_name": MODEL, "findings": [{"kind": "evasion"}]})
    c = ep.contain(record)
    assert c["action"] == "none" and "nothing to block" in c["note"]
    assert incident_env.ok("/admin/state")["blocked_clients"] == []


def test_scheduled_scan_opens_one_incident_per_attack(incident_env):
    from aiir.evasion import job

    gw = incident_env
    _probe(gw, "prober-9")
    gw.flush()
    s1 = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="scheduled__1")
    assert s1["status"] == "incident" and "prober-9" in s1["suspect_clients"]
    assert s1["playbook_dag_id"] == "incident_adversarial_evasion" and s1["playbook"] == "adversarial_evasion"
    assert s1["conf"]["opened_by"] == "scan_evasion" and "prober-9" in s1["conf"]["suspect_sources"]
    assert {f["kind"] for f in s1["conf"]["findings"]} >= {"evasion"}
    again = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="scheduled__1")
    assert again["incident"]["incident_id"] == s1["incident"]["incident_id"]  # a re-run reuses its incident
    s2 = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="scheduled__2")
    assert s2["status"] == "duplicate" and s2["duplicate_of"] == s1["incident"]["incident_id"]
