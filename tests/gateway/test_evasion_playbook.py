"""The evasion playbook's steps on a real gateway: a guard trip's finding → contain (rate limit at the
target) → triage (re-scan of the served decisions) → preserve (sealed bundle) → harden (ART) → canary
redeploy with automatic rollback → report.

The module has its own gateway process, state folder (decision log) and AIIR_HOME: triage re-scans every
decision the target served, so traffic other modules send to the session's shared gateway (e.g. the canary
tests' fast random-row client) must not be in it. The registry is the session's (only this module registers
a version in it)."""

from __future__ import annotations

import json
import threading
import time
import warnings

import numpy as np
import pytest

from aiir.gateway.synthetic import FEATURES, synthetic_frame
from tests.gateway.gwkit import MODEL, Gateway, split


@pytest.fixture(scope="module")
def egw_env(gw_env, tmp_path_factory):
    home = tmp_path_factory.mktemp("evasion-home")
    return {**gw_env, "AIIR_HOME": str(home), "AIIR_GATEWAY_DIR": str(home / "gateway")}


@pytest.fixture(scope="module")
def egw(egw_env, tmp_path_factory):
    from pathlib import Path

    g = Gateway(egw_env, Path(egw_env["AIIR_GATEWAY_DIR"]) / MODEL,
                tmp_path_factory.mktemp("evasion-logs") / "serve.log").start()
    yield g
    g.stop()


@pytest.fixture
def incident_env(egw, egw_env, mlflow_store, monkeypatch, tmp_path):
    egw.ok("/admin/restore", {"follow_alias": True, "reason": "test reset"})
    egw.ok("/admin/canary", {"version": None, "share": 0, "reason": "test reset"})
    for k in ("AIIR_HOME", "AIIR_GATEWAY_DIR", "AIIR_ARTIFACT_TRUSTED_KEYS"):  # trusted: the store's signing key
        monkeypatch.setenv(k, egw_env[k])
    monkeypatch.setenv("AIIR_GATEWAY_URL", egw.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["tracking_uri"])
    monkeypatch.setenv("AIIR_EVIDENCE_DIR", str(tmp_path / "evidence"))
    return egw


def _probe(gw, client: str, n: int = 40) -> None:
    X, _ = synthetic_frame()
    base = X.to_numpy()[3]
    rng = np.random.default_rng(1)
    for _ in range(n):
        x = base + rng.normal(0, 2e-3, size=base.shape) * X.to_numpy().std(axis=0)
        assert gw.score(split([x.round(6).tolist()], FEATURES), client=client).status_code == 200


def test_playbook_steps_end_to_end(incident_env, mlflow_store):
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
    # the seeded scenario (synthetic data; ART's HopSkipJump seeded, its starting points too): 20 of the 21
    # held-out HopSkipJump rows that evade the attacked v2 are caught by the hardened model, which loses 7.5
    # points of clean accuracy (the permissive gate above lets it through to the canary)
    assert h["held_out_rows"] == {"hsj": 21}, h
    assert h["before"]["robust_accuracy_hsj"] == 0.0 and h["after"]["robust_accuracy_hsj"] == 20 / 21, h
    assert h["gate"]["passed"] and h["gate"]["gain"] == 0.9524 and h["gate"]["clean_drop"] == 0.075, h
    hardened = h["hardened_version"]
    assert hardened == str(len(mlflow_store["versions"]) + 1)  # the next version of the session's registry
    # canary on clean traffic. The traffic starts once the canary is in force and sends every row twice in a
    # row: at share 0.5 the gateway alternates primary / canary request by request, so both versions answer
    # the same rows and their positive rates differ only where the models disagree. On these rows the hardened
    # model's positive rate is 0.13-0.23 above v2's over every prefix of >= 20 rows (even with the two versions
    # one request apart; 0.39 vs 0.18 over all 400): past the 0.1 shift allowed here, however fast the machine
    # sends, so the canary must roll it back.
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(ep.redeploy(record, share=0.5, observe_s=2.0,
                                                                max_positive_shift=0.1)), daemon=True)
    th.start()
    deadline = time.time() + 60
    while (gw.ok("/admin/state")["extra"]["canary"] or {}).get("version") != hardened:
        assert th.is_alive() and time.time() < deadline, out
        time.sleep(0.05)
    rows = X.to_numpy()[:400]
    i = 0
    while th.is_alive():
        body = split([rows[i % len(rows)].tolist()], FEATURES)
        assert gw.score(body, client=f"shop-{i % 10}").status_code == 200
        assert gw.score(body, client=f"shop-{i % 10}").status_code == 200
        i += 1
    th.join()
    r = out
    assert r["outcome"] == "rolled_back", r
    assert r["problem"].startswith("canary positive rate") and r["stats"]["canary_decisions"] >= 20
    assert r["stats"]["canary_positive_rate"] - r["stats"]["primary_positive_rate"] > 0.1
    state = gw.ok("/admin/state")
    assert state["extra"]["canary"] is None and [rt["version"] for rt in state["routes"]] == ["2"]
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
    # the DAG's default labels Param ("") is no label signal
    again = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="scheduled__1", labels="")
    assert again["labels"] is None
    assert again["incident"]["incident_id"] == s1["incident"]["incident_id"]  # a re-run reuses its incident
    s2 = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="scheduled__2")
    assert s2["status"] == "duplicate" and s2["duplicate_of"] == s1["incident"]["incident_id"]


def test_delayed_labels_find_a_transfer_attacker_and_the_playbook_shows_them(incident_env, tmp_path):
    """A transfer attacker over real HTTP (labels 300 rows through the API, fits a surrogate, sends 40 PGD rows
    crafted on it, one per request) is invisible to the input signals; once the labels of the decisions arrive
    (true labels; the crafted rows are fraud), the scheduled scan with ``labels`` opens an incident naming it,
    triage re-scans with the same labels and the report shows them (the labels path escaped)."""
    import pandas as pd

    from aiir.evasion import attacks, job
    from aiir.evasion import playbook as ep
    from aiir.evasion.profile import fit_profile
    from aiir.incident import validate_conf
    from aiir.targets.local import LocalGatewayTarget

    gw = incident_env
    Xtr, ytr = synthetic_frame()
    prof = fit_profile(Xtr.to_numpy(), FEATURES)
    bounds = attacks.clip_bounds(prof.standardise(Xtr.to_numpy()))
    truth: dict[tuple, int] = {}
    Xc, yc = synthetic_frame(1200, seed=31)  # clean clients: 20 shops x 60 rows, 10 rows a request
    Xc = Xc.to_numpy().round(6)
    for k in range(0, len(Xc), 10):
        assert gw.score(split(Xc[k:k + 10].tolist(), FEATURES), client=f"till-{(k // 10) % 20}").status_code == 200
    truth.update({tuple(x): int(t) for x, t in zip(Xc.tolist(), yc, strict=True)})
    oracle = attacks.HttpModel(gw.url, FEATURES, mean=prof.mean, std=prof.std, clients=["surrogate-3"],
                               rows_per_request=20)
    Xr, yr = synthetic_frame(300, seed=32)
    Xr = Xr.to_numpy().round(6)
    got = oracle.labels_raw(Xr)
    truth.update({tuple(x): int(t) for x, t in zip(Xr.tolist(), yr, strict=True)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sur = attacks.fit_surrogate(prof.standardise(Xr), got)
        tgt = Xr[got == 1][:40]
        Xt = prof.mean + attacks.transfer_attack(sur, prof.standardise(tgt), eps=1.5, bounds=bounds) * prof.std
    Xt = Xt.round(6)
    oracle.rows_per_request = 1
    evaded = int((oracle.labels_raw(Xt) == 0).sum())
    oracle.close()
    assert evaded >= 20, evaded
    truth.update({tuple(x): 1 for x in Xt.tolist()})
    gw.flush()
    target = LocalGatewayTarget(MODEL, url=gw.url)
    mine = [d for d in target.decisions(None, None) if d["client_id"] == "surrogate-3" or d["client_id"].startswith("till-")]
    target.close()
    assert len(mine) == 1200 + 300 + 40
    rows = [(d["decision_id"], truth[tuple(round(float(d["features"][c]), 6) for c in FEATURES)]) for d in mine]
    ldir = tmp_path / "<b>labels&co"
    ldir.mkdir()
    lfile = ldir / "chargebacks.csv"
    pd.DataFrame(rows, columns=["decision_id", "label"]).to_csv(lfile, index=False)
    plain = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="labels__0")
    assert "surrogate-3" not in plain["suspect_clients"]  # the inputs alone do not show it
    s = job.run(model_name=MODEL, target_name=MODEL, since="1h", run_id="labels__1", labels=str(lfile))
    assert s["status"] == "incident" and "surrogate-3" in s["suspect_clients"], s
    assert not [c for c in s["suspect_clients"] if c.startswith("till-")]
    assert s["labels"]["matched"] == len(rows) and s["labels"]["unmatched"] == 0
    lf = [f for f in s["conf"]["findings"] if f["kind"] == "label_evasion"]
    assert lf and lf[0]["sources"] == ["surrogate-3"] and lf[0]["evidence"]["labels_file"] == str(lfile.resolve())
    record = validate_conf(s["conf"])
    t = ep.triage(record)
    assert "surrogate-3" in t["suspects_found"] and t["labels"]["matched"] == len(rows)
    lab = t["attack"]["surrogate-3"]["labels"]
    assert lab["let_through_positive"] >= evaded and "label_surprise" in lab["signals"]
    rep = ep.report(record)
    html = open(rep["html"], encoding="utf-8").read()
    assert "delayed labels" in html and "label_surprise" in html
    assert "&lt;b&gt;labels&amp;co" in html and "<b>labels" not in html
    md = open(rep["md"], encoding="utf-8").read()
    assert "delayed labels" in md and "<b>labels" not in md
    # harden after a label_evasion finding: surrogate PGD examples (ensemble adversarial training) + half of the
    # confirmed evasions trained on, the other half held out; the gate's rule unchanged, judged on those rows
    from aiir import playbook as pb

    pb.open_incident(record)
    ep.preserve(record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ep.harden(record, training=(Xtr.to_numpy(), np.asarray(ytr), FEATURES))
    tr = h["transfer"]
    assert tr["confirmed_evasions"] >= evaded and tr["trained_on"] + tr["held_out"] == tr["confirmed_evasions"]
    assert tr["surrogate_examples"]["rows"] > 0 and h["held_out_rows"]["transfer"] == tr["held_out"]
    assert h["before"]["robust_accuracy_transfer"] == 0.0  # every confirmed row was let through by this version
    g = h["gate"]
    assert g["on"] == "transfer" and g["criteria"]["max_clean_drop"] == 0.05
    assert g["passed"] == (g["clean_drop"] <= 0.05 and g["gain"] >= 0.2 and h["after"]["robust_accuracy_transfer"] >= 0.5)
    assert (h["hardened_version"] is not None) == g["passed"]
