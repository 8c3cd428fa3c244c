"""Integrity proof and decision trace on a real demo: a real gateway, a real MLflow store, the real CLI.

Read-only tests first; every tamper test restores what it broke."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from aiir import registry
from aiir.audit import accesslog, integrity, signing
from aiir.audit.trace import trace
from tests.conftest import run_aiir

from .conftest import ENCRYPTED, EVIL_REASON, KEY, MODEL

pytestmark = pytest.mark.slow  # one demo bootstrap + retrain and a real gateway for the module


def _ids(res: dict) -> list[str]:
    return res["decision_ids"]


@pytest.fixture
def restore(tmp_path):
    """Back up files before tampering; put the original bytes back afterwards."""
    saved: list[tuple[Path, Path, int]] = []

    def keep(p: Path) -> Path:
        b = tmp_path / f"backup-{len(saved)}"
        shutil.copy2(p, b)
        saved.append((p, b, p.stat().st_mode))
        p.chmod(p.stat().st_mode | 0o200)
        return p

    yield keep
    for p, b, mode in reversed(saved):
        p.chmod(p.stat().st_mode | 0o200)
        shutil.copyfile(b, p)
        p.chmod(mode)


def _env(home: Path) -> dict[str, str]:
    return {"AIIR_HOME": str(home)}


# ------------------------------------------------------------------------------------ signing at registration

def test_every_registered_version_and_dataset_is_signed_and_verifies(served):
    home = served["home"]
    for name, version, n_data in ((MODEL, "1", 1), (MODEL, "2", 3), ("diagnosis-classifier", "1", 1)):
        mv = registry.get_version(name, version)
        sig = json.loads(mv.tags["aiir.signature"])
        assert Path(sig["signature"]).is_file() and Path(sig["manifest"]).is_file()
        assert Path(sig["signature"]).parent == mv.artifact_dir.parent  # beside the artifact
        ds = json.loads(mv.tags["aiir.train_signatures"])
        assert len(ds) == n_data and all(Path(d["signature"]).is_file() for d in ds)
        assert 0 < float(mv.tags["aiir.signing_seconds"]) < 60  # measured figures: docs/audit.md
        assert len(mv.tags["aiir.git_commit"]) == 40
    # the reference set is shared by v1 and v2: signed once
    v2 = json.loads(registry.get_version(MODEL, "2").tags["aiir.train_signatures"])
    assert v2[0]["reused"] is True and v2[0]["path"].endswith("train_reference.parquet")
    r = run_aiir("verify", f"model:{MODEL}/2", env=_env(home))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"INTACT: model:{MODEL}/2")
    assert "dataset batch_005.parquet: INTACT" in r.stdout
    rep = integrity.verify_registered()
    assert rep["ok"] and rep["versions"] == 3 and not rep["findings"]


def test_openlineage_events_carry_every_dataset_digest(served):
    lines = [json.loads(x) for x in (served["home"] / "lineage" / "openlineage.jsonl").read_text().splitlines()]
    complete = [e for e in lines if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"train.{MODEL}"]
    assert len(complete) == 2 and all(e["job"]["namespace"] == "aiir" for e in complete)
    v2 = registry.get_version(MODEL, "2")
    ev = next(e for e in complete if e["outputs"][0]["name"] == f"models:/{MODEL}/2")
    want = {d["path"]: d["sha256"] for d in json.loads(v2.tags["aiir.train_files"])}
    got = {i["name"]: i["facets"]["aiirIntegrity"]["sha256"] for i in ev["inputs"]}
    assert got == want
    out = ev["outputs"][0]["facets"]["aiirIntegrity"]
    assert out["sha256"] == v2.tags["aiir.artifact_sha256"] and out["signatureSha256"]
    assert ev["run"]["facets"]["aiirTraining"]["gitCommit"] == v2.tags["aiir.git_commit"]
    assert json.loads(v2.tags["aiir.lineage"])["run_id"] == ev["run"]["runId"]


# ------------------------------------------------------------------------------------ the trace

def test_trace_names_the_right_version_before_and_after_a_rollback(served):
    before, after = _ids(served["before"]), _ids(served["after"])
    assert served["before"]["model_version"] == "2" and served["after"]["model_version"] == "1"
    res = trace([before[0], after[0]], purpose="regulator request 42", seal=False)
    assert res["ok"], [e["problems"] for e in res["decisions"]]
    b, a = res["decisions"]
    assert (b["model"]["version"], a["model"]["version"]) == ("2", "1")
    # registry log: champion was v2 both times (a rollback on the target does not move the alias)
    assert b["serving_at_decision"]["registry_log"] == {"champion": "2", "last-known-good": "1"}
    assert a["serving_at_decision"]["registry_log"]["champion"] == "2"
    # the target's own state log says what served: v2 before, v1 after the rollback
    sb, sa = b["serving_at_decision"]["target_state_log"], a["serving_at_decision"]["target_state_log"]
    assert sb["serving"] == ["2"] and sa["serving"] == ["1"]
    assert sa["last_change"]["action"] == "rollback" and sa["last_change"]["reason"] == EVIL_REASON
    assert sa["chain"]["ok"] and a["serving_at_decision"]["decision_version_consistent_with_state_log"] is True
    v2 = b["version"]
    assert v2["signature"]["status"] == "verified"
    assert v2["artifact"]["registered_sha256"] == v2["artifact"]["sha256_now"] == b["model"]["served_artifact_digest"]
    assert v2["training_run"]["run_id"] == registry.get_version(MODEL, "2").run_id
    assert [Path(d["path"]).name for d in v2["datasets"]] == ["train_reference.parquet", "batch_004.parquet",
                                                              "batch_005.parquet"]
    assert all(d["signature_status"] == "verified" for d in v2["datasets"])
    promo = [p for p in v2["promotions"] if p["alias"] == "champion"]
    assert promo and promo[0]["actor"] == "nightly-pipeline" and "auto-promoted" in promo[0]["reason"]
    assert len(v2["code_version"]["commit"]) == 40
    assert b["log"]["ok"] and b["decision"]["client_id"] == "clinic-1"
    assert b["decision"]["prediction"] == served["before"]["predictions"][0]


def test_decisions_are_found_through_the_target_contract_too(served):
    hits = served["via_api"]
    ids = _ids(served["before"]) + _ids(served["after"])
    assert sorted(hits) == sorted(ids)
    assert [hits[i]["row"]["model_version"] for i in ids] == ["2", "2", "2", "1", "1"]
    assert all(h["target"] == f"local:{MODEL}" and h["log"]["ok"] is None for h in hits.values())


def test_encrypted_features_are_shown_only_with_the_key(served):
    did = _ids(served["before"])[1]
    sent = served["rows"][1]
    without = trace([did], seal=False)["decisions"][0]["decision"]
    assert without["encrypted_fields"] == sorted(ENCRYPTED)
    assert without["features"]["amount"] == "(encrypted)" and without["features"]["hour"] == sent["hour"]
    with_key = trace([did], keys=[KEY], purpose="patient access request", seal=False)["decisions"][0]["decision"]
    assert with_key["features"]["amount"] == sent["amount"]
    assert with_key["features"]["merchant_category"] == sent["merchant_category"]
    assert with_key["decrypted_fields"] == sorted(ENCRYPTED)
    log = accesslog.read()
    assert log[-1]["decision_ids"] == [did] and log[-1]["decrypted"] is True
    assert log[-1]["purpose"] == "patient access request" and log[-2]["decrypted"] is False
    assert accesslog.verify()["ok"]


def test_trace_cli_seals_a_verifiable_package_with_escaped_html(served, tmp_path):
    home = served["home"]
    did = _ids(served["evil"])[0]
    out = tmp_path / "audit-store"
    r = run_aiir("trace", did, _ids(served["after"])[1], "--format", "html,md", "--out", str(out),
                 "--purpose", "audit <b>42</b>", env=_env(home))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    bundle = Path(summary["bundle"])
    assert bundle.parent == out and summary["decisions"][0]["version"] == "2"
    names = sorted(p.relative_to(bundle / "files").as_posix() for p in (bundle / "files").rglob("*") if p.is_file())
    assert {"trace.json", "trace.html", "trace.md", "logs/access-log.jsonl", "logs/registry-log.jsonl",
            f"logs/local-{MODEL}-admin-audit.jsonl"} <= set(names)
    assert any(n.startswith("signatures/fraud-detector-v2/") for n in names)
    html = (bundle / "files" / "trace.html").read_text()
    # the reason is shown inside the state-change JSON: escaped there too (its quotes JSON-escaped first)
    assert EVIL_REASON not in html and "auditor asked &lt;img src=x onerror=\\&quot;alert(1)\\&quot;&gt;" in html
    assert "<b>42</b>" not in html and "&lt;b&gt;42&lt;/b&gt;" in html
    assert not any(tag in html for tag in ("<script", "<img", "<link", "<iframe"))  # self-contained, inert
    md = (bundle / "files" / "trace.md").read_text()
    assert "<img" not in md
    # the package itself verifies, and its access log copy holds this trace
    v = run_aiir("verify", str(bundle), env=_env(home))
    assert v.returncode == 0, v.stdout
    copy = [json.loads(x) for x in (bundle / "files" / "logs" / "access-log.jsonl").read_text().splitlines()]
    assert copy[-1]["audit_id"] == summary["audit_id"] and copy[-1]["purpose"] == "audit <b>42</b>"


def test_a_re_signed_package_is_refused_with_the_trusted_key(served, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from aiir.evidence import EvidenceStore, load_or_create_signing_key, public_key_pem

    home = served["home"]
    did = _ids(served["before"])[2]
    genuine = trace([did], out=tmp_path / "genuine", formats=("json",))
    # the forger rewrites the trace (the decision now "came from" v1) and seals it again with their own key
    doc = json.loads(Path(genuine["files"]["json"]).read_text())
    doc["decisions"][0]["model"]["version"] = "1"
    forged = EvidenceStore(tmp_path / "forged").open_bundle(genuine["audit_id"], actor="mallory")
    forged.add_json(doc, "trace.json", category="report", description="decision audit trace")
    forged.seal(Ed25519PrivateKey.generate())
    pub = tmp_path / "aiir-evidence.pub.pem"
    pub.write_bytes(public_key_pem(load_or_create_signing_key()))
    ok = run_aiir("verify", str(genuine["bundle"]), "--trusted-key", str(pub), env=_env(home))
    assert ok.returncode == 0, ok.stdout
    bad = run_aiir("verify", str(forged.path), "--trusted-key", str(pub), env=_env(home))
    assert bad.returncode == 3 and "UNTRUSTED KEY" in bad.stdout, bad.stdout


def test_unknown_decision_and_bad_input(served):
    res = trace(["01a00000-0000-7000-8000-000000000000"], seal=False)
    assert not res["ok"] and not res["decisions"][0]["found"]
    assert "not in the decision log" in res["decisions"][0]["problems"][0]
    r = run_aiir("trace", "--format", "pdf", "x", env=_env(served["home"]))
    assert r.returncode == 2 and "--format" in r.stderr and "Traceback" not in r.stderr
    r = run_aiir("verify", "model:fraud-detector", env=_env(served["home"]))
    assert r.returncode == 2 and "model:NAME/VERSION" in r.stderr
    r = run_aiir("verify", "model:fraud-detector/99", env=_env(served["home"]))
    assert r.returncode == 2 and "no version '99'" in r.stderr


def test_trace_job_selects_a_client_window(served):
    from aiir.audit import jobs

    after = _ids(served["after"])
    first = trace([after[0]], seal=False)["decisions"][0]["decision"]["ts"]
    res = jobs.decision_trace(since=first, client="clinic-2", purpose="window", formats=("json",))
    assert res["ok"] and res["decisions"] == res["found"] == 2, res
    assert json.loads(Path(res["files"]["json"]).read_text())["decisions"][1]["decision_id"] == after[1]
    with pytest.raises(Exception, match="no decision served"):
        jobs.decision_trace(since=first, client="nobody")
    with pytest.raises(Exception, match="time window"):
        jobs.decision_trace()


# ------------------------------------------------------------------------------------ tamper: registry log

def test_edited_or_deleted_registry_log_entries_are_named(served, restore):
    did = _ids(served["before"])[0]
    log = restore(served["home"] / "registry-log.jsonl")
    lines = log.read_text().splitlines()
    # edited: who promoted v2
    e = json.loads(lines[-1])
    e["actor"] = "alice"
    log.write_text("\n".join([*lines[:-1], json.dumps(e, sort_keys=True)]) + "\n")
    probs = trace([did], seal=False)["decisions"][0]["problems"]
    assert any(f"registry log entry {len(lines) - 1}: content changed" in p for p in probs), probs
    # deleted in the middle
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    probs = trace([did], seal=False)["decisions"][0]["problems"]
    assert any("registry log entry 1: chain broken" in p for p in probs), probs
    # deleted at the end (the chain alone cannot tell): MLflow's alias no longer matches the log
    log.write_text("\n".join(lines[:-1]) + "\n")
    probs = trace([did], seal=False)["decisions"][0]["problems"]
    assert any("MLflow alias 'champion' of fraud-detector points at 2" in p for p in probs), probs


# ------------------------------------------------------------------------------------ tamper: artifacts

def test_one_byte_of_the_model_file_fails_verify_and_trace(served, restore):
    mv = registry.get_version(MODEL, "2")
    pkl = restore(next(p for p in mv.artifact_dir.rglob("model.pkl")))
    b = bytearray(pkl.read_bytes())
    b[len(b) // 2] ^= 0x01
    pkl.write_bytes(b)
    r = run_aiir("verify", f"model:{MODEL}/2", env=_env(served["home"]))
    assert r.returncode == 3, r.stdout
    assert "CHANGED: model.pkl sha256" in r.stdout
    e = trace([_ids(served["before"])[0]], seal=False)["decisions"][0]
    assert e["version"]["signature"]["status"] == "FAILED"
    assert any("CHANGED: model.pkl" in p for p in e["problems"])
    assert any("artifact changed since registration" in p for p in e["problems"])
    # v1 (serving after the rollback) is untouched
    assert trace([_ids(served["after"])[0]], seal=False)["ok"]
    rep = integrity.verify_registered()
    f = [x for x in rep["findings"] if x["artifact_kind"] == "model"]
    assert len(f) == 1 and f[0]["version"] == "2" and f[0]["atlas"] == ["AML.T0010", "AML.T0018"]
    assert f[0]["owasp"] == ["ML06", "ML10"]
    # the scheduled job opens one incident through the incident record + timeline, once per run
    from aiir import incident as inc
    from aiir.audit import jobs

    s1 = jobs.artifact_integrity(run_id="scheduled__t1")
    assert s1["status"] == "incident" and len(s1["incidents"]) == 1 and s1["severity"] == "critical"
    iid = s1["incidents"][0]["incident_id"]
    rec = inc.load(iid)
    assert rec.kind == "artifact_integrity" and rec.opened_by == "artifact_integrity"
    assert rec.atlas == ["AML.T0010", "AML.T0018"] and rec.owasp == ["ML06", "ML10"]
    assert jobs.artifact_integrity(run_id="scheduled__t1")["incidents"][0]["incident_id"] == iid
    # the next day's scheduled run sees the same mismatches: no second incident, nothing to trigger
    s2 = jobs.artifact_integrity(run_id="scheduled__t2")
    assert s2["status"] == "duplicate" and s2["incidents"] == [] and s2["triggers"] == []
    assert [d["duplicate_of"] for d in s2["duplicates"]] == [iid]
    assert s1["triggers"] == [{"trigger_run_id": iid, "conf": s1["incidents"][0]["conf"]}]
    # the trace of a decision v2 served now names that incident
    e = trace([_ids(served["before"])[0]], seal=False)["decisions"][0]
    assert [i["incident_id"] for i in e["incidents"]] == [iid] and e["incidents"][0]["touches"] == ["version"]
    # the response: which versions still verify, and every decision the tampered one served
    from aiir.audit import response
    from aiir.targets.local import LocalGatewayTarget

    ver = response.verify_artifacts(rec)
    assert ver["tampered"] == ["2"] and ver["intact"] == ["1"] and ver["fallback_candidate"] == "1"
    aff = response.affected_decisions(rec, target=LocalGatewayTarget(MODEL, state_dir=served["state_dir"]))
    assert aff["versions"]["2"]["decisions"] == 4 and aff["versions"]["2"]["clients_affected"] == 2
    e = trace([_ids(served["evil"])[0]], seal=False)["decisions"][0]
    assert e["incidents"][0]["incident_id"] == iid and e["incidents"][0]["touches"] == ["decision", "version"]
    assert e["incidents"][0]["blast_radius"][0]["includes_this_decision"] is True


def test_one_row_of_a_training_dataset_is_named(served, restore):
    import pandas as pd

    path = served["home"] / "data" / "fraud" / "batches" / "batch_005.parquet"
    restore(path)
    df = pd.read_parquet(path)
    df.loc[0, "is_fraud"] = 1 - int(df.loc[0, "is_fraud"])
    df.to_parquet(path, index=False)
    r = run_aiir("verify", f"dataset:{path}", env=_env(served["home"]))
    assert r.returncode == 3 and "CHANGED: batch_005.parquet" in r.stdout, r.stdout
    res = integrity.verify_model_version(MODEL, "2")
    assert not res["ok"] and res["model_check"]["ok"]
    bad = [d for d in res["datasets"] if not d["ok"]]
    assert [Path(d["path"]).name for d in bad] == ["batch_005.parquet"]
    e = trace([_ids(served["before"])[0]], seal=False)["decisions"][0]
    ds = {Path(d["path"]).name: d["signature_status"] for d in e["version"]["datasets"]}
    assert ds == {"train_reference.parquet": "verified", "batch_004.parquet": "verified", "batch_005.parquet": "FAILED"}


def test_swapped_signature_of_another_version_is_named(served, restore):
    v1 = json.loads(registry.get_version(MODEL, "1").tags["aiir.signature"])
    v2 = json.loads(registry.get_version(MODEL, "2").tags["aiir.signature"])
    restore(Path(v2["signature"]))
    restore(Path(v2["manifest"]))
    shutil.copyfile(v1["signature"], v2["signature"])
    shutil.copyfile(v1["manifest"], v2["manifest"])
    res = integrity.verify_model_version(MODEL, "2", datasets=False)
    msgs = "\n".join(res["messages"])
    assert not res["ok"] and "SIGNATURE FILE REPLACED" in msgs and "CHANGED: model.pkl" in msgs


# ------------------------------------------------------------------------------------ tamper: decision log

def test_a_deleted_decision_log_row_is_named(served, restore):
    path = restore(served["state_dir"] / "decisions.db")
    for extra in ("-wal", "-shm"):
        p = Path(str(path) + extra)
        if p.exists():
            restore(p)
    after = _ids(served["after"])
    con = sqlite3.connect(path)
    seq = con.execute("SELECT seq FROM decisions WHERE decision_id = ?", (after[0],)).fetchone()[0]
    con.execute("DROP TRIGGER decisions_no_delete")  # what an attacker holding the file can do
    con.execute("DELETE FROM decisions WHERE seq = ?", (seq,))
    con.commit()
    con.close()
    res = trace(after, seal=False)
    gone, next_ = res["decisions"]
    assert not gone["found"] and not res["ok"]
    assert any(f"row seq {seq} (the one before) is missing" in p for p in next_["problems"]), next_["problems"]
    from aiir.gateway.decision_log import DecisionLog

    rep = DecisionLog(path).verify_chain()
    assert not rep.ok and rep.first_bad_seq == seq


def test_a_missing_signature_is_unsigned_not_intact(served, restore, tmp_path):
    ds = json.loads(registry.get_version(MODEL, "1").tags["aiir.train_signatures"])[0]
    sig = restore(Path(ds["signature"]))
    moved = tmp_path / "moved.sig"
    shutil.move(sig, moved)
    try:
        res = integrity.verify_model_version(MODEL, "1")
        assert not res["ok"] and any("UNSIGNED" in m for m in res["messages"])
    finally:
        shutil.move(moved, sig)
    assert signing.verify_artifact(Path(ds["path"]), Path(ds["signature"])).ok


def test_a_version_registered_before_signing_is_signed_with_aiir_sign(served, tmp_path, restore, monkeypatch):
    """What the distributed cluster met (issue #14): versions registered by code that did not sign yet, then
    checked by code that does. The daily check reports them as unsigned with the remedy and opens no
    tampering incident (it did: "registered model diagnosis-classifier v1 does not match its signature");
    their recorded digest is still checked; `aiir sign` closes the gap."""
    from aiir.audit import jobs

    name = "diagnosis-classifier"
    mv = registry.get_version(name, "1")
    sig = json.loads(mv.tags["aiir.signature"])
    c = registry.client()
    for tag in ("aiir.signature", "aiir.train_signatures"):  # as registered before #14
        c.delete_model_version_tag(name, "1", tag)
    for f in (sig["signature"], sig["manifest"]):
        Path(f).rename(tmp_path / Path(f).name)
    r = run_aiir("verify", f"model:{name}/1", env=_env(served["home"]))
    assert r.returncode == 3 and "UNSIGNED" in r.stdout, r.stdout
    before = set((served["home"] / "incidents").iterdir())
    monkeypatch.setenv("AIIR_ARTIFACT_REGISTRATION_GRACE_S", "0")
    s = jobs.artifact_integrity(model=name, run_id="scheduled__unsigned")
    assert s["status"] == "unsigned" and s["incidents"] == [] and s["triggers"] == [] and s["findings"] == 0, s
    assert sorted((u["what"], u["version"]) for u in s["unsigned"]) == [("dataset", "1"), ("model", "1")]
    assert {u["remedy"] for u in s["unsigned"]} == {f"aiir sign model:{name}/1"}
    assert set((served["home"] / "incidents").iterdir()) == before
    # a version created less than the grace period ago is being registered (signed, tags not yet all set)
    monkeypatch.setenv("AIIR_ARTIFACT_REGISTRATION_GRACE_S", "86400")
    s = jobs.artifact_integrity(model=name, run_id="scheduled__registering")
    assert s["status"] == "clean" and [r["version"] for r in s["registering"]] == ["1"] and not s["incidents"]
    # unsigned is no licence: its recorded digest still holds it, one changed byte is tampering
    monkeypatch.setenv("AIIR_ARTIFACT_REGISTRATION_GRACE_S", "0")
    pkl = restore(mv.artifact_dir / "model.pkl")
    orig = pkl.read_bytes()
    pkl.write_bytes(orig + b"\0")
    s = jobs.artifact_integrity(model=name, run_id="scheduled__unsigned_tampered")
    assert s["status"] == "incident" and len(s["incidents"]) == 1 and s["incidents"][0]["model"] == name, s
    assert any("CHANGED: artifact tree digest" in m for m in s["messages"]), s["messages"]
    r = run_aiir("sign", f"model:{name}/1", env=_env(served["home"]))  # what is signed must be what was registered
    assert r.returncode == 3 and "changed since registration" in r.stderr, r.stderr
    pkl.write_bytes(orig)
    r = run_aiir("sign", f"model:{name}/1", "--json", env=_env(served["home"]))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["datasets"][0]["reused"] is True  # its dataset signature was still there
    r = run_aiir("verify", f"model:{name}/1", env=_env(served["home"]))
    assert r.returncode == 0, r.stdout
    r = run_aiir("sign", f"model:{name}/1", env=_env(served["home"]))
    assert r.returncode == 2 and "never replaced" in r.stderr


# ------------------------------------------------------------------------------------ the DAGs in a real Airflow

@pytest.mark.airflow
@pytest.mark.slow
def test_audit_dags_run_in_airflow(served, restore, tmp_path):
    """`airflow dags test` on this checkout's DAG files: the tamper opens an incident; the trace seals."""
    import os
    import subprocess

    from aiir import config
    from aiir.runtime import VENV_BIN, airflow_env

    env = {**airflow_env(home=tmp_path / "airflow", integrity_schedule="none"),
           "AIIR_ARTIFACT_INTEGRITY_SCHEDULE": "none", "AIRFLOW__CORE__DAGS_FOLDER": str(config.REPO_ROOT / "dags")}
    af = str(VENV_BIN / "airflow")

    def run(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([af, *args], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        return r

    run("db", "migrate")
    pkl = restore(next(p for p in registry.get_version(MODEL, "1").artifact_dir.rglob("model.pkl")))
    pkl.write_bytes(pkl.read_bytes() + b"\0")
    before = set(os.listdir(served["home"] / "incidents"))
    run("dags", "test", "artifact_integrity")
    new = sorted(set(os.listdir(served["home"] / "incidents")) - before)
    assert len(new) == 1, new
    rec = json.loads((served["home"] / "incidents" / new[0] / "incident.json").read_text())
    assert rec["opened_by"] == "artifact_integrity" and rec["model_name"] == MODEL and rec["kind"] == "artifact_integrity"
    assert any(f["version"] == "1" for f in rec["findings"])

    did = _ids(served["after"])[0]
    run("dags", "test", "audit_decision_trace", "-c", json.dumps({"decision_ids": [did], "purpose": "airflow run"}))
    last = accesslog.read()[-1]
    assert last["decision_ids"] == [did] and last["actor"].endswith("via airflow:audit_decision_trace")
    assert last["context"]["dag_id"] == "audit_decision_trace"
    bundle = served["home"] / "evidence" / last["audit_id"]
    doc = json.loads((bundle / "files" / "trace.json").read_text())
    assert doc["decisions"][0]["model"]["version"] == "1"
    assert doc["decisions"][0]["version"]["signature"]["status"] == "FAILED"  # the tampered v1, named
    assert [i["incident_id"] for i in doc["decisions"][0]["incidents"]] == new
    assert run_aiir("verify", str(bundle), env=_env(served["home"])).returncode == 0
