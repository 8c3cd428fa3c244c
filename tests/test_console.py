"""The console's data layer: state, time to contain, deadlines, evidence verified now (cached), run mapping."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aiir import config, console
from aiir.errors import BadInput

NOW = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


def workspace(home: Path, iid: str = "INC-20261124-150000-fraud-detector-1a2b", *, model: str = "fraud-detector",
              steps: tuple[str, ...] = (), **record) -> Path:
    w = home / "incidents" / iid
    w.mkdir(parents=True)
    rec = {"incident_id": iid, "model_name": model, "target_kind": "local", "target_name": model,
           "detected_at": "2026-11-24T15:00:00.000Z", "severity": "high", "regimes": ["gdpr", "nis2"],
           "kind": "data_poisoning", "opened_by": "data_integrity_check", "findings": [], **record}
    (w / "incident.json").write_text(json.dumps(rec))
    events = [{"event": "detected", "at": rec["detected_at"], "actor": "data_integrity_check", "details": {}}]
    if "contain" in steps:
        (w / "contain.json").write_text(json.dumps({
            "dry_run": False, "effective_at": "2026-11-24T15:00:02.500Z", "seconds": 0.02, "target": f"local:{model}",
            "before": {"mode": "serving", "routes": [{"version": "2", "share": 1.0}], "blocked_clients": []},
            "after": {"mode": "isolated", "routes": [{"version": "1", "share": 1.0}], "fallback_version": "1",
                      "blocked_clients": ["client-x"]}}))
        events.append({"event": "contained", "at": "2026-11-24T15:00:02.500Z", "actor": "aiir-playbook", "details": {}})
    if "eradicate" in steps:
        (w / "eradicate.json").write_text("{}")
    if "recover" in steps:
        (w / "recovery.json").write_text(json.dumps({"new_version": "3", "replaced_version": "2",
                                                     "promoted_at": "2026-11-24T15:20:00Z"}))
    (w / "timeline.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return w


def test_state_is_derived_from_the_step_outputs(aiir_home):
    assert console.incident_state(workspace(aiir_home, "INC-a")) == "open"
    assert console.incident_state(workspace(aiir_home, "INC-b", steps=("contain",))) == "contained"
    assert console.incident_state(workspace(aiir_home, "INC-c", steps=("contain", "eradicate"))) == "eradicated"
    assert console.incident_state(workspace(aiir_home, "INC-d", steps=("contain", "eradicate", "recover"))) == "recovered"


def test_an_explicit_state_in_the_record_wins(aiir_home):
    w = workspace(aiir_home, "INC-fp", steps=("contain",), state="false_positive")
    assert console.incident_state(w) == "false_positive"
    w2 = workspace(aiir_home, "INC-odd", steps=("contain",), state="not-a-state")
    assert console.incident_state(w2) == "contained"


def test_a_dry_run_containment_is_not_containment(aiir_home):
    w = workspace(aiir_home, "INC-dry", dry_run=True)
    (w / "contain.json").write_text(json.dumps({"dry_run": True, "effective_at": "2026-11-24T15:00:01Z"}))
    s = console.summary(w, now=NOW)
    assert s["state"] == "open" and s["time_to_contain_s"] is None and s["dry_run"]


def test_summary_fields(aiir_home):
    w = workspace(aiir_home, steps=("contain",))
    s = console.summary(w, now=NOW)
    assert s["incident_id"] == w.name and s["model"] == "fraud-detector" and s["target"] == "local:fraud-detector"
    assert s["playbook"] == "data_poisoning" and s["severity"] == "high"
    assert s["opened_at"] == "2026-11-24T15:00:00Z"
    assert s["time_to_contain_s"] == 2.5
    # NIS2 early warning: 24 h after awareness, 23 h left at 16:00
    assert s["next_deadline"]["regime"] == "nis2" and s["next_deadline"]["due"] == "2026-11-25T15:00:00Z"
    assert s["next_deadline"]["seconds_left"] == 23 * 3600
    assert s["evidence"]["status"] == "not yet"
    later = console.summary(w, now=datetime(2026, 11, 26, 0, 0, tzinfo=UTC))
    assert [d["regime"] for d in later["overdue"]] == ["nis2"]


def test_list_filters_and_order(aiir_home):
    workspace(aiir_home, "INC-old-done", steps=("contain", "eradicate", "recover"), severity="critical",
              state="closed")
    workspace(aiir_home, "INC-low", steps=("contain", "eradicate", "recover"), severity="low")
    workspace(aiir_home, "INC-crit", severity="critical", model="other-model")
    ids = [s["incident_id"] for s in console.list_incidents(now=NOW, verify=False)]
    assert ids == ["INC-crit", "INC-low", "INC-old-done"]  # active (recovered too) first, by severity; closed last
    assert [s["incident_id"] for s in console.list_incidents(state="recovered", now=NOW)] == ["INC-low"]
    assert [s["incident_id"] for s in console.list_incidents(model="other-model", now=NOW)] == ["INC-crit"]
    assert console.models() == ["fraud-detector", "other-model"]
    with pytest.raises(BadInput, match="state"):
        console.list_incidents(state="burning")


def test_empty_home_lists_nothing_and_unknown_ids_are_bad_input(aiir_home):
    assert console.list_incidents() == []
    with pytest.raises(BadInput, match="no incident"):
        console.detail("INC-missing")
    with pytest.raises(BadInput, match="letters"):
        console.workdir_of("../../etc")


def test_unreadable_record_is_reported_not_raised(aiir_home):
    w = workspace(aiir_home, "INC-broken")
    (w / "contain.json").write_text("{not json")
    s = console.summary(w, now=NOW)
    assert s["state"] == "open"


def _seal(home: Path, iid: str) -> Path:
    from aiir.evidence import EvidenceStore
    from aiir.evidence.keys import load_or_create_signing_key

    store = EvidenceStore(config.paths().evidence)
    b = store.open_bundle(iid, actor="test", host="test")
    b.add_bytes(b"model bytes", "model/model.pkl", category="model")
    b.add_bytes(b"a,b\n1,2\n", "training_data/batch.csv", category="training_data")
    b.seal(load_or_create_signing_key())
    return b.path


def test_evidence_is_verified_now_cached_and_tampering_detected(aiir_home):
    w = workspace(aiir_home, steps=("contain",))
    bundle = _seal(aiir_home, w.name)
    (w / "evidence.json").write_text(json.dumps({"bundle": str(bundle)}))
    first = console.evidence_status(w)
    assert first["status"] == "verified" and first["cached"] is False and first["files_checked"] == 2
    custody = (bundle / "custody.jsonl").read_bytes()
    again = console.evidence_status(w)
    assert again["status"] == "verified" and again["cached"] is True
    assert (bundle / "custody.jsonl").read_bytes() == custody  # a look does not write custody entries
    victim = bundle / "files" / "training_data" / "batch.csv"
    os.chmod(victim, 0o644)
    os.chmod(victim.parent, 0o755)
    victim.write_bytes(b"a,b\n1,3\n")
    bad = console.evidence_status(w)
    assert bad["status"] == "failed" and bad["cached"] is False
    assert "files/training_data/batch.csv" in bad["changed"]


def test_missing_bundle_fails(aiir_home):
    w = workspace(aiir_home)
    (w / "evidence.json").write_text(json.dumps({"bundle": str(aiir_home / "nowhere")}))
    assert console.evidence_status(w)["status"] == "failed"


def test_incident_of_run(aiir_home):
    w = workspace(aiir_home, "INC-20261124-150000-fraud-detector-1a2b")
    assert console.incident_of_run(w.name) == w.name                     # opened by the check: run id = id
    assert console.incident_of_run(f"{w.name}-retrain") == w.name        # its retrain
    assert console.incident_of_run("manual__x", {"incident_id": w.name}) == w.name
    manual = workspace(aiir_home, "manual__2026-11-24T15-00-00-00-00")
    assert console.incident_of_run("manual__2026-11-24T15:00:00+00:00") == manual.name
    check = config.paths().checks / "batch_005__asset_triggered__2026"
    check.mkdir(parents=True)
    (check / "incident_id").write_text(w.name)
    assert console.incident_of_run("asset_triggered__2026") == w.name
    assert console.check_dir_of_run("asset_triggered__2026") == check
    assert console.incident_of_run("scheduled__nothing") is None


def test_detail_has_containment_in_words(aiir_home):
    w = workspace(aiir_home, steps=("contain",))
    d = console.detail(w.name, now=NOW)
    text = " ".join(d["containment"])
    assert "v2 (100 % of traffic)" in text and "last-known-good" in text and "client-x" in text
    assert [e["event"] for e in d["timeline"]] == ["detected", "contained"]


def test_check_file_allow_list(aiir_home, tmp_path):
    check = tmp_path / "check"
    check.mkdir()
    (check / "findings.json").write_text("{}")
    (check / "secret.txt").write_text("no")
    w = workspace(aiir_home, check_dir=str(check))
    assert console.check_file(w.name, "findings.json") == check / "findings.json"
    with pytest.raises(BadInput):
        console.check_file(w.name, "secret.txt")
    with pytest.raises(BadInput):
        console.check_file(w.name, "drift_report.html")


def test_the_lifecycle_state_file_wins(aiir_home):
    w = workspace(aiir_home, "INC-life", steps=("contain", "eradicate", "recover"))
    (w / "state.json").write_text(json.dumps({"incident_id": w.name, "state": "closed", "by": "alice"}))
    assert console.incident_state(w) == "closed"
    assert console.summary(w, now=NOW)["active"] is False
    assert [s["incident_id"] for s in console.list_incidents(state="closed", verify=False)] == ["INC-life"]
