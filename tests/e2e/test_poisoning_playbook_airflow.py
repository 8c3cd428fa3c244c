"""End to end through a real Airflow (scheduler, api-server, dag-processor, triggerer) and a real gateway.

The story of issue #4 on embedded defaults: v1 serves; a nightly retrain on a poisoned batch promotes v2;
the batch's Asset event runs `data_integrity_check`, which opens an incident and triggers
`incident_data_poisoning`; the playbook contains, seals evidence, finds the poison and the blast radius,
retrains from clean data, promotes, reports. Each phase's real effect is asserted.

The incident console's browser tests (tests/ui/console_story.py) run in this module too, on the same world and
incident, after the story's tests: one run of the story (minutes through the scheduler) serves both.

The same run is also issue #10's scheduler fault test (sharing this module's Airflow keeps CI cheap): while
`preserve_evidence` is writing the bundle, the scheduler and every process it spawned (LocalExecutor workers,
task supervisors, the task processes, its log server) are killed with SIGKILL, then a new scheduler is started,
as systemd would. The run must still complete, the bundle verify, and nothing be sealed or added twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, restore_env

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "aiir-home"
    saved = {k: os.environ.get(k) for k in ("AIIR_HOME", "AIIR_GATEWAY_URL")}
    os.environ["AIIR_HOME"] = str(home)
    from aiir import bootstrap, demo, runtime
    from aiir.targets.local import LocalGatewayTarget

    bootstrap.bootstrap()
    services = []
    try:
        gw = runtime.start_gateway(bootstrap.FRAUD_MODEL)
        services.append(gw)
        os.environ["AIIR_GATEWAY_URL"] = gw.url
        af = runtime.Airflow(integrity_schedule="none")
        af.start()
        services.append(af.service)
        for d in ("data_integrity_check", "incident_data_poisoning", "retrain_from_clean_data"):
            af.wait_for_dag(d)
        yield {"home": home, "gw": gw, "af": af, "target": LocalGatewayTarget(bootstrap.FRAUD_MODEL, url=gw.url),
               "files": demo.DemoFiles(home / "data"), "services": services}
    finally:
        for s in reversed(services):
            s.stop()
        restore_env(saved)


def _traffic(world, seconds: float) -> dict:
    import pandas as pd

    from aiir.gateway.traffic import replay

    live = world["home"] / "live.parquet"
    if not live.exists():
        pd.read_parquet(world["files"].fraud_feedback).drop(columns=["source", "batch", "is_fraud"]).to_parquet(live)
    return replay(url=world["gw"].url, data=live, rate=50, duration=seconds, clients=["c-alpha", "c-beta"])


@pytest.fixture(scope="module")
def incident(world):
    from aiir import bootstrap

    af, target = world["af"], world["target"]
    _traffic(world, 2)
    v2 = bootstrap.nightly_retrain([4, 5])
    target.rollback(v2.version, reason="nightly deploy")
    served = _traffic(world, 3)
    assert served["by_version"].get(v2.version), served
    # the poisoned batch lands: Asset event → data_integrity_check
    batch = world["files"].fraud_batch(5)
    asset = af.api("GET", "/assets?name_pattern=fraud_training_batches")["assets"][0]
    af.api("POST", "/assets/events", {"asset_id": asset["id"], "extra": {"path": str(batch)}})
    from aiir.runtime import wait_until

    check = wait_until(lambda: next((r for r in af.runs("data_integrity_check")
                                     if r["run_type"] == "asset_triggered"), None),
                       timeout=120, what="an asset-triggered data_integrity_check run", service=af.service)
    check = af.wait_for_run("data_integrity_check", check["dag_run_id"], timeout=600)
    summary = af.xcom("data_integrity_check", check["dag_run_id"], "check")
    incident_id = summary["incident"]["incident_id"] if summary.get("incident") else None
    fault = _kill_scheduler_while_preserving(world, incident_id) if incident_id else None
    run = af.wait_for_run("incident_data_poisoning", incident_id, timeout=900) if incident_id else None
    return {"check_run": check, "summary": summary, "incident_id": incident_id, "run": run, "v2": v2.version,
            "workdir": world["home"] / "incidents" / str(incident_id), "fault": fault}


# --- the scheduler fault (issue #10) ---------------------------------------------------------------------
def _proc_stat(pid: int) -> list[bytes] | None:
    """Fields after "comm)" of /proc/PID/stat: state, ppid, ... (None once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def _gone(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is None or st[0] in (b"Z", b"X")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _proc_stat(int(entry))) is not None:
            kids.setdefault(int(st[1]), []).append(int(entry))
    return kids


def _tree(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    """``root`` and all its live descendants."""
    kids, out, todo = kids if kids is not None else _children(), [], [root]
    while todo:
        pid = todo.pop()
        if not _gone(pid):
            out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _scheduler_of(standalone_pid: int) -> int:
    """The `airflow scheduler` that `airflow standalone` runs (its siblings: dag-processor, api-server, triggerer)."""
    for pid in _children().get(standalone_pid, []):
        if "scheduler" in _cmdline(pid).split():
            return pid
    raise AssertionError(f"no scheduler process under airflow standalone (pid {standalone_pid})")


def _custody(bundle: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in (bundle / "custody.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def _stop(pids) -> None:
    """SIGSTOP ``pids`` and wait until each is really stopped (the signal is asynchronous)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for pid in pids:
        deadline = time.monotonic() + 10
        while (st := _proc_stat(pid)) is not None and st[0] not in (b"T", b"t", b"Z", b"X"):
            if time.monotonic() > deadline:
                raise AssertionError(f"process {pid} did not stop")
            time.sleep(0.001)


def _kill_scheduler_while_preserving(world, incident_id: str) -> dict:
    """SIGKILL the scheduler and everything it spawned once ``preserve_evidence`` has added a file to the
    bundle, then start a new scheduler. No hook in the product: the test finds the processes running that
    task instance (LocalExecutor titles them with its id), lets them run in 10 ms slices (SIGSTOP, read the
    bundle's custody log, SIGCONT) until the first ``added`` entry — so the fault lands mid-preserve however
    loaded the machine — then SIGSTOPs the whole scheduler tree (nothing can fork or write after the moment
    recorded as the fault) and SIGKILLs it."""
    from aiir import config
    from aiir.runtime import _spawn, wait_until

    af = world["af"]
    bundle = config.paths().evidence / incident_id
    scheduler = _scheduler_of(af.service.pid)

    def preserve_ti():
        tis = af.task_instances("incident_data_poisoning", incident_id)
        return next((t["id"] for t in tis if t["task_id"] == "preserve_evidence"), None)

    ti_id = wait_until(preserve_ti, timeout=900, interval=1, what="the preserve_evidence task instance",
                       service=af.service)

    def running_it() -> set[int]:
        kids = _children()
        holders = [p for p in _tree(scheduler, kids) if ti_id in _cmdline(p)]
        return set().union(*(_tree(p, kids) for p in holders)) if holders else set()

    wait_until(running_it, timeout=900, interval=0.05, what="a process running preserve_evidence",
               service=af.service)
    deadline = time.monotonic() + 600
    while True:
        group = running_it()
        _stop(group)
        acts = [e["action"] for e in _custody(bundle)]
        if "added" in acts or "sealed" in acts:
            break
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert time.monotonic() < deadline and group, f"preserve_evidence added nothing (custody {acts})"
        time.sleep(0.01)
    assert "sealed" not in acts, f"preserve_evidence sealed before the fault could be injected: {acts}"
    stopped: set[int] = set(group)
    while (new := set(_tree(scheduler)) - stopped):
        _stop(new)
        stopped |= new
    at_kill = _custody(bundle)  # nothing of the tree can write any more: this is the bundle at the fault
    for pid in stopped:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(_gone(p) for p in stopped), timeout=30, what="the killed processes to die")
    t_kill = time.monotonic()
    # a new scheduler, as systemd/supervisord would start; it resets the tasks the dead one had running
    # (queued_by a SchedulerJob whose heartbeat is older than scheduler_health_check_threshold, 30 s) at
    # its next orphan check: every 5 s here instead of the 300 s default
    env = {**af.env, "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5"}
    sched = _spawn("scheduler (restarted)", [str(VENV_BIN / "airflow"), "scheduler"], env,
                   af.home / "scheduler-restarted.log", "")
    world["services"].append(sched)
    return {"killed": sorted(stopped), "scheduler": scheduler, "custody_at_kill": at_kill, "t_kill": t_kill,
            "restarted": sched, "bundle": bundle}


def test_check_opened_incident_and_triggered_playbook_with_conf(world, incident):
    s = incident["summary"]
    assert incident["check_run"]["state"] == "success"
    assert s["status"] == "incident" and "partner_feed_c" in s["suspect_sources"]
    record = json.loads((incident["workdir"] / "incident.json").read_text())
    assert record["opened_by"] == "data_integrity_check" and record["findings"]
    run = world["af"].api("GET", f"/dags/incident_data_poisoning/dagRuns/{incident['incident_id']}")
    assert run["conf"]["incident_id"] == incident["incident_id"]
    assert run["conf"]["suspect_sources"] == s["suspect_sources"]


def test_every_playbook_task_succeeded(world, incident):
    """Every step ran; the approval steps nobody needed were skipped by their branch (v1 was there to fall
    back to, triage confirmed the drop, require_approval is off)."""
    tis = {t["task_id"]: t["state"] for t in world["af"].task_instances("incident_data_poisoning",
                                                                         incident["incident_id"])}
    assert incident["run"]["state"] == "success", tis
    skipped = {"confirm_quarantine", "confirm_incident"}
    assert {t for t, st in tis.items() if st == "skipped"} == skipped, tis
    assert {st for t, st in tis.items() if t not in skipped} == {"success"}, tis
    retrain = {t["task_id"]: t["state"] for t in world["af"].task_instances(
        "retrain_from_clean_data", f"{incident['incident_id']}-retrain")}
    assert retrain["await_approval"] == "skipped" and retrain["promote"] == "success", retrain


def test_lifecycle_ends_recovered_and_the_index_lists_it(incident):
    from aiir import lifecycle

    st = lifecycle.read_state(incident["incident_id"])
    assert st["state"] == "recovered", st
    assert [h["state"] for h in st["history"]] == ["contained", "eradicated", "recovered"] or \
        [h["state"] for h in st["history"]][-3:] == ["contained", "eradicated", "recovered"], st["history"]
    assert st["fingerprint"] and st["batch"]["sha256"]
    rows = lifecycle.list_incidents(model="fraud-detector")
    assert [r["incident_id"] for r in rows if r["state"] == "recovered"] == [incident["incident_id"]]


def test_contained_then_recovered_on_a_clean_version(world, incident):
    w = incident["workdir"]
    contain = json.loads((w / "contain.json").read_text())
    assert contain["before"]["mode"] == "serving" and contain["after"]["mode"] == "isolated"
    assert contain["after"]["routes"][0]["version"] == "1"  # last-known-good took all traffic
    recovery = json.loads((w / "recovery.json").read_text())
    new = recovery["new_version"]
    assert new not in ("1", incident["v2"])
    state = world["target"].describe()
    assert state.mode == "serving" and state.serving_versions == [new]
    served = _traffic(world, 1)
    assert set(served["by_version"]) == {new}
    from aiir import registry

    assert registry.resolve_alias("fraud-detector", "champion") == new
    assert registry.resolve_alias("fraud-detector", "last-known-good") == new
    registry.verify_alias_log()


def test_evidence_bundle_verifies_and_a_tampered_copy_does_not(world, incident, tmp_path):
    ev = json.loads((incident["workdir"] / "evidence.json").read_text())
    ok = subprocess.run([str(VENV_BIN / "aiir"), "verify", ev["bundle"]], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    copy = tmp_path / "copy"
    shutil.copytree(ev["bundle"], copy)
    for p in copy.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    victim = next(p for p in sorted(copy.rglob("*.parquet")))
    victim.write_bytes(victim.read_bytes() + b"x")
    bad = subprocess.run([str(VENV_BIN / "aiir"), "verify", str(copy)], capture_output=True, text=True)
    assert bad.returncode == 3 and victim.name in bad.stdout + bad.stderr


def test_forensics_found_the_poison_and_the_blast_radius(incident):
    fx = json.loads((incident["workdir"] / "forensics.json").read_text())
    q = json.loads((incident["workdir"] / "forensics" / "quarantine.json").read_text())
    assert q["sources"] == ["partner_feed_c"]
    assert all("batch_005" in f for f in q["files"])
    radius = fx["blast_radius"]
    assert radius["total"] > 0 and set(radius["by_client"]) == {"c-alpha", "c-beta"}


def test_triage_estimated_the_drop_without_labels(incident):
    """CBPE on the decisions v2 really served (its scores, calibrated on the trusted holdout) sees the
    precision drop that the labelled feedback confirms — before any production label arrives."""
    t = json.loads((incident["workdir"] / "triage.json").read_text())
    lf = t["label_free"]
    assert lf.get("served_decisions", 0) >= 50, lf
    est, base = lf["estimate"], lf["baseline"]
    assert est["recall"] < base["recall"] and est["f1"] < base["f1"], lf
    assert t["confirmed"] is True


def test_report_has_deadlines_and_atlas(incident):
    report = json.loads((incident["workdir"] / "report" / "report.json").read_text())
    text = json.dumps(report)
    assert "AML.T0020" in text and "ML02" in text
    html = (incident["workdir"] / "report" / "report.html").read_text()
    assert "GDPR" in html and "72" in html


def test_scheduler_killed_mid_preserve_the_run_completes_and_nothing_is_sealed_twice(world, incident):
    """Issue #10: kill -9 of the scheduler and its executor children while preserve_evidence was writing."""
    fault = incident["fault"]
    assert fault, "no incident, so no fault was injected"
    at_kill = Counter(e["action"] for e in fault["custody_at_kill"])
    assert at_kill["opened"] == 1 and at_kill["added"] >= 1 and at_kill["sealed"] == 0, at_kill
    assert len(fault["killed"]) > 1, fault["killed"]  # the scheduler and at least its worker/task processes
    assert all(_gone(p) for p in fault["killed"])
    assert fault["restarted"].alive(), fault["restarted"].tail()
    af = world["af"]
    tis = {t["task_id"]: t for t in af.task_instances("incident_data_poisoning", incident["incident_id"])}
    assert incident["run"]["state"] == "success", {k: (t["state"], t["try_number"]) for k, t in tis.items()}
    killed_try = fault["custody_at_kill"][-1]["context"]["try_number"]
    assert tis["preserve_evidence"]["state"] == "success"
    assert tis["preserve_evidence"]["try_number"] > killed_try, tis["preserve_evidence"]

    # the bundle verifies, and it was opened and sealed exactly once, every file added once
    ev = json.loads((incident["workdir"] / "evidence.json").read_text())
    assert Path(ev["bundle"]) == fault["bundle"]
    r = subprocess.run([str(VENV_BIN / "aiir"), "verify", ev["bundle"]], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    entries = _custody(fault["bundle"])
    assert entries[:len(fault["custody_at_kill"])] == fault["custody_at_kill"]  # the log only grew
    actions = Counter(e["action"] for e in entries)
    assert actions["opened"] == 1 and actions["sealed"] == 1 and actions["refused"] == 0, actions
    sealed = next(e for e in entries if e["action"] == "sealed")
    assert sealed["context"]["try_number"] > killed_try, sealed  # sealed by the try after the fault
    added = Counter(e["file"] for e in entries if e["action"] == "added")
    assert max(added.values()) == 1, [f for f, n in added.items() if n > 1]
    manifest = json.loads((fault["bundle"] / "manifest.json").read_bytes())
    assert manifest["file_count"] == len(added) == ev["files"]
    assert sorted(f["path"] for f in manifest["files"]) == sorted(added)
    on_disk = sorted(p.relative_to(fault["bundle"]).as_posix()
                     for p in (fault["bundle"] / "files").rglob("*") if p.is_file())
    assert on_disk == sorted(added)  # no stray copy, no staging left behind
    assert not (fault["bundle"] / ".staging").exists()
    from aiir.hashing import sha256_file

    assert ev["manifest_sha256"] == sha256_file(fault["bundle"] / "manifest.json")
    print(f"fault: killed {len(fault['killed'])} processes after {at_kill['added']} files added (try "
          f"{killed_try}); sealed by try {sealed['context']['try_number']} with {len(added)} files")


def test_rerunning_a_task_changes_nothing(world, incident):
    af, iid = world["af"], incident["incident_id"]
    w = incident["workdir"]
    before = {n: (w / n).read_bytes() for n in ("contain.json", "evidence.json", "forensics.json")}
    state_before = world["target"].describe().to_dict()
    cleared = ["isolate_endpoint", "preserve_evidence", "forensics"]
    tries = {t["task_id"]: t["try_number"] for t in af.task_instances("incident_data_poisoning", iid)}
    af.api("POST", "/dags/incident_data_poisoning/clearTaskInstances",
           {"dag_run_id": iid, "dry_run": False, "task_ids": cleared, "only_failed": False,
            "reset_dag_runs": True})
    from aiir.runtime import wait_until

    def rerun_done():
        tis = {t["task_id"]: t for t in af.task_instances("incident_data_poisoning", iid)}
        return all(tis[t]["state"] == "success" and tis[t]["try_number"] > tries[t] for t in cleared)

    wait_until(rerun_done, timeout=300, interval=1, what="cleared tasks to run again", service=af.service)
    assert {n: (w / n).read_bytes() for n in before} == before
    after = world["target"].describe().to_dict()
    assert after["mode"] == state_before["mode"] and after["routes"] == state_before["routes"]


def test_malformed_conf_is_refused_before_any_task(world):
    from urllib.error import HTTPError

    with pytest.raises(HTTPError) as exc:
        world["af"].trigger("incident_data_poisoning", {"target_kind": "azure"})
    assert exc.value.code in (400, 422)


def test_clean_batch_opens_no_incident(world, incident):
    """The same DAG on the clean batch 004 (mild natural drift): clean, and nothing is triggered."""
    af = world["af"]
    run = af.trigger("data_integrity_check", {"current": str(world["files"].fraud_batch(4))})
    run = af.wait_for_run("data_integrity_check", run["dag_run_id"], timeout=300)
    summary = af.xcom("data_integrity_check", run["dag_run_id"], "check")
    assert summary["status"] == "clean" and summary["incident"] is None, summary
    tis = {t["task_id"]: t["state"] for t in af.task_instances("data_integrity_check", run["dag_run_id"])}
    assert tis["trigger_incident_playbook"] == "skipped"


# --- the incident console in a real browser, on this world and incident: after the story's tests (they rely on its
# end state), before the tampering ones below. The console's browser is started and stopped per test
# (tests/ui/console_story.py), so the asyncio traffic replays of the tests after it still run.
from tests.ui.conftest import artifacts, page_factory  # noqa: E402,F401
from tests.ui.console_story import *  # noqa: E402,F401,F403

# ------------------------------------------------------------------------------------ artifact tampering (#14)
# After the poisoning story, on the same Airflow and gateway: the next nightly deploy (v4, clean batch 004)
# serves; one byte of its registered model file is flipped in the artifact store. The shipped
# `artifact_integrity` DAG, run with its defaults as its daily schedule runs it, detects it, opens the
# incident and triggers `incident_artifact_tampering`, which isolates the endpoint to last-known-good,
# seals evidence, re-verifies every version, measures what v4 served, reports.

@pytest.fixture(scope="module")
def tampering(world, incident):
    from aiir import bootstrap, registry

    af, target = world["af"], world["target"]
    v4 = bootstrap.nightly_retrain([4])
    lkg = registry.resolve_alias("fraud-detector", "last-known-good")
    target.rollback(v4.version, reason="nightly deploy")
    served = _traffic(world, 2)
    assert served["by_version"].get(v4.version), served
    pkl = v4.artifact_dir / "model.pkl"
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0x01
    pkl.write_bytes(bytes(data))
    run = af.trigger("artifact_integrity")  # no conf: the DAG's own defaults, as its schedule runs it
    run = af.wait_for_run("artifact_integrity", run["dag_run_id"], timeout=600)
    summary = af.xcom("artifact_integrity", run["dag_run_id"], "verify_registered_artifacts", key="summary")
    iid = summary["incidents"][0]["incident_id"] if summary and summary.get("incidents") else None
    pb = af.wait_for_run("incident_artifact_tampering", iid, timeout=900) if iid else None
    return {"run": run, "summary": summary, "incident_id": iid, "playbook_run": pb, "v4": v4.version, "lkg": lkg,
            "served": served["by_version"][v4.version], "workdir": world["home"] / "incidents" / str(iid)}


def test_tampering_detected_by_the_shipped_dag_and_the_playbook_triggered(world, tampering):
    s = tampering["summary"]
    assert tampering["run"]["state"] == "success", tampering["run"]
    assert s["status"] == "incident" and [i["model"] for i in s["incidents"]] == ["fraud-detector"], s
    assert [t["trigger_run_id"] for t in s["triggers"]] == [tampering["incident_id"]]
    rec = json.loads((tampering["workdir"] / "incident.json").read_text())
    assert rec["kind"] == "artifact_integrity" and rec["opened_by"] == "artifact_integrity"
    assert [f["version"] for f in rec["findings"] if f["artifact_kind"] == "model"] == [tampering["v4"]]
    assert "CHANGED: model.pkl" in rec["findings"][0]["detail"]
    tis = {t["task_id"]: t["state"] for t in world["af"].task_instances("artifact_integrity",
                                                                         tampering["run"]["dag_run_id"])}
    assert tis == {"verify_registered_artifacts": "success", "trigger_incident_playbook": "success"}, tis


def test_tampering_playbook_contained_sealed_verified_and_reported(world, tampering):
    from aiir import lifecycle

    pb, w, v4, lkg = tampering["playbook_run"], tampering["workdir"], tampering["v4"], tampering["lkg"]
    tis = {t["task_id"]: t["state"] for t in world["af"].task_instances("incident_artifact_tampering",
                                                                         tampering["incident_id"])}
    assert pb and pb["state"] == "success", tis
    assert set(tis.values()) == {"success"} and len(tis) == 6, tis
    # containment as the playbook defines it: every request to last-known-good, the tampered v4 out
    contain = json.loads((w / "contain.json").read_text())
    assert contain["before"]["mode"] == "serving" and contain["after"]["mode"] == "isolated", contain
    state = world["target"].describe()
    assert state.mode == "isolated" and state.serving_versions == [lkg] and lkg != v4
    assert set(_traffic(world, 1)["by_version"]) == {lkg}
    # evidence sealed, verifiable
    ev = json.loads((w / "evidence.json").read_text())
    ok = subprocess.run([str(VENV_BIN / "aiir"), "verify", ev["bundle"]], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # every version re-verified: v4 tampered, the others intact; the decisions v4 served, per client
    ver = json.loads((w / "verification.json").read_text())
    assert ver["tampered"] == [v4] and lkg in ver["intact"], ver
    aff = json.loads((w / "affected.json").read_text())
    assert aff["versions"][v4]["decisions"] >= tampering["served"] > 0, aff
    # the report names the model, the version and the changed file
    html = (w / "report" / "report.html").read_text()
    assert f"fraud-detector v{v4} does not match its signature" in html and "model.pkl" in html
    assert "AML.T0010" in json.dumps(json.loads((w / "report" / "report.json").read_text()))
    st = lifecycle.read_state(tampering["incident_id"])
    assert st["state"] == "contained", st
