"""The scheduled evasion scan's "one incident per root cause" (aiir.evasion.job, aiir.lifecycle.client_coverage)
over real scans of clean traffic and real HopSkipJump queries (ART), read from a target's decisions.

Round 7's CI saw the case these tests pin: a cron scan caught an attack half-way and opened an incident; the
next scan saw the whole attack — one more finding kind — and opened a second incident for the same client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from aiir import config, lifecycle
from aiir.evasion import job
from tests.evasion import evkit

MODEL = "evasion-job-model"


class _Decisions:
    """A serving target seen through its decisions only (what the scan reads); ``rows`` is set per scan."""

    ref = "local:evasion-job-model"

    def __init__(self):
        self.rows: list[dict] = []

    def decisions(self, since=None, until=None, *, limit=None):
        return list(self.rows)

    def close(self):
        pass


@pytest.fixture(scope="module")
def w():
    X, _, model, prof = evkit.world()
    return {"clean": evkit.clean_traffic(model),
            "a1": evkit.attack_single(model, prof, X, client="attacker-1", rows=4),
            "a2": evkit.attack_single(model, prof, X, client="attacker-2", seed=2),
            "model": model, "prof": prof, "X": X}


@pytest.fixture
def target(monkeypatch, tmp_path):
    monkeypatch.setenv("AIIR_HOME", str(tmp_path / "home"))
    t = _Decisions()
    monkeypatch.setattr("aiir.targets.get_target", lambda kind, name, **kw: t)
    return t


def _scan(target, rows, run_id):
    target.rows = rows
    return job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id=run_id)


def test_an_attack_seen_half_way_then_whole_opens_one_incident(w, target):
    first = _scan(target, w["clean"] + w["a1"][:60], "scheduled__1")
    assert first["status"] == "incident" and first["suspect_clients"] == ["attacker-1"], first
    iid = first["incident"]["incident_id"]
    kinds_first = {f["kind"] for f in first["conf"]["findings"]}
    later = _scan(target, w["clean"] + w["a1"], "scheduled__2")
    # the whole attack shows more (model extraction by rate) than its first 60 queries did
    findings = config.paths().checks / "evasion__scheduled__2" / "findings.json"
    kinds_later = {f["kind"] for f in json.loads(findings.read_text())["findings"]}
    assert kinds_later > kinds_first, (kinds_first, kinds_later)
    assert later["status"] == "duplicate" and later["duplicate_of"] == iid, later
    assert later["covered"] == {"attacker-1": iid} and later["incident"] is None
    assert [r["incident_id"] for r in lifecycle.list_incidents(model=MODEL)] == [iid]


def test_a_new_client_while_one_is_open_gets_its_own_incident_naming_it_only(w, target):
    first = _scan(target, w["clean"] + w["a1"], "scheduled__1")
    iid = first["incident"]["incident_id"]
    later = _scan(target, w["clean"] + w["a1"] + w["a2"], "scheduled__2")
    assert later["status"] == "incident" and set(later["suspect_clients"]) == {"attacker-1", "attacker-2"}, later
    assert later["covered"] == {"attacker-1": iid}
    assert later["incident"]["incident_id"] != iid and later["conf"]["suspect_sources"] == ["attacker-2"]
    # and a third scan of the same traffic opens nothing: both clients are covered
    third = _scan(target, w["clean"] + w["a1"] + w["a2"], "scheduled__3")
    assert third["status"] == "duplicate", third
    assert third["covered"] == {"attacker-1": iid, "attacker-2": later["incident"]["incident_id"]}


def test_a_closed_incident_covers_its_evidence_but_not_the_client_probing_again(w, target):
    first = _scan(target, w["clean"] + w["a1"], "scheduled__1")
    iid = first["incident"]["incident_id"]
    lifecycle.close(iid, as_="resolved", reason="attacker's key revoked", actor="oncall")
    same = _scan(target, w["clean"] + w["a1"], "scheduled__2")
    assert same["status"] == "duplicate" and same["duplicate_of"] == iid, same
    # the same client probing after the closing is a new incident
    start = datetime.now(UTC) + timedelta(seconds=5)
    again = [{**r, "decision_id": f"again-{i}", "ts": evkit.iso(start + timedelta(seconds=i * 0.01))}
             for i, r in enumerate(w["a1"][:120])]
    new = _scan(target, w["clean"] + w["a1"] + again, "scheduled__3")
    assert new["status"] == "incident" and new["incident"]["incident_id"] != iid, new
    assert new["conf"]["suspect_sources"] == ["attacker-1"] and "covered" not in new


def test_a_rerun_of_the_opening_scan_keeps_its_incident(w, target):
    first = _scan(target, w["clean"] + w["a1"][:60], "scheduled__1")
    again = _scan(target, w["clean"] + w["a1"], "scheduled__1")  # the task retried, with more decisions by then
    assert again["status"] == "incident" and again["incident"]["incident_id"] == first["incident"]["incident_id"]
    assert len(lifecycle.list_incidents(model=MODEL)) == 1
