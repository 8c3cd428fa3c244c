"""The distributed setup, natively: PostgreSQL + Redis, Airflow on the CeleryExecutor with TWO workers,
MLflow on Postgres, the gateway — the services of docker-compose.yaml with the same settings (aiir.deploy).

The demo's poisoned batch lands: its Asset event runs ``data_integrity_check`` through the real scheduler;
it opens the incident and triggers ``incident_data_poisoning``, which contains, seals evidence, finds the
poison, retrains and reports. Tasks of one run land on both workers; the only state they share is
AIIR_HOME (the shared volume) and the servers. Faults: test_cluster_faults.py. Figures (startup, run
durations, recovery times) go to $AIIR_DIST_RESULTS (default bench/results/distributed.json).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.distributed.conftest import DAG, FIGURES, WORKERS, _custody, _nodes, _tis, _traffic, _verify

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def incident(world):
    from aiir import bootstrap, demo
    from aiir.runtime import wait_until

    af, target = world["af"], world["target"]
    _traffic(world, 2)
    v2 = bootstrap.nightly_retrain([4, 5])
    target.rollback(v2.version, reason="nightly deploy")
    served = _traffic(world, 3)
    assert served["by_version"].get(v2.version), served
    batch = demo.DemoFiles(world["home"] / "data").fraud_batch(5)
    asset = af.api("GET", "/assets?name_pattern=fraud_training_batches")["assets"][0]
    t0 = time.perf_counter()
    af.api("POST", "/assets/events", {"asset_id": asset["id"], "extra": {"path": str(batch)}})
    check = wait_until(lambda: next((r for r in af.runs("data_integrity_check")
                                     if r["run_type"] == "asset_triggered"), None),
                       timeout=180, what="an asset-triggered data_integrity_check run")
    check = af.wait_for_run("data_integrity_check", check["dag_run_id"], timeout=900)
    t_check = time.perf_counter() - t0
    summary = af.xcom("data_integrity_check", check["dag_run_id"], "check")
    incident_id = summary["incident"]["incident_id"] if summary.get("incident") else None
    run = af.wait_for_run(DAG, incident_id, timeout=1200) if incident_id else None
    FIGURES["story"] = {"asset_event_to_check_done_s": round(t_check, 1),
                        "asset_event_to_playbook_done_s": round(time.perf_counter() - t0, 1)}
    if run:
        retrain = af.api("GET", f"/dags/retrain_from_clean_data/dagRuns/{incident_id}-retrain")
        FIGURES["story"].update(_durations(af, DAG, incident_id, run, retrain))
    return {"check_run": check, "summary": summary, "incident_id": incident_id, "run": run,
            "workdir": world["home"] / "incidents" / str(incident_id), "v2": v2.version}


def _durations(af, dag_id, run_id, run, retrain) -> dict:
    from datetime import datetime

    def secs(r):
        a, b = r.get("start_date"), r.get("end_date")
        return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 1) if a and b else None

    return {"playbook_run_s": secs(run), "retrain_run_s": secs(retrain),
            "tasks_per_node": _count(_nodes(af, dag_id, run_id).values())}


def _count(values) -> dict:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def test_check_ran_on_a_celery_worker_and_opened_the_incident(world, incident):
    s = incident["summary"]
    assert incident["check_run"]["state"] == "success"
    assert s["status"] == "incident" and "partner_feed_c" in s["suspect_sources"]
    nodes = _nodes(world["af"], "data_integrity_check", incident["check_run"]["dag_run_id"])
    assert set(nodes.values()) <= WORKERS and nodes, nodes


def test_playbook_succeeded_with_tasks_on_both_workers(world, incident):
    af, iid = world["af"], incident["incident_id"]
    tis = _tis(af, DAG, iid)
    states = {t: ti["state"] for t, ti in tis.items()}
    assert incident["run"]["state"] == "success", states
    # the approval steps nobody needed are skipped by their branch (as in tests/e2e)
    skipped = {t for t, st in states.items() if st == "skipped"}
    assert skipped == {"confirm_quarantine", "confirm_incident"}, states
    assert {st for t, st in states.items() if t not in skipped} == {"success"}, states
    nodes = {**_nodes(af, DAG, iid), **{f"retrain.{k}": v for k, v in
                                        _nodes(af, "retrain_from_clean_data", f"{iid}-retrain").items()}}
    assert set(nodes.values()) == WORKERS, nodes  # one incident, handled by both machines


def test_state_written_on_one_worker_was_read_on_the_other(world, incident):
    """The workspace is the shared store: forensics read what other tasks wrote, wherever they ran."""
    w = incident["workdir"]
    contain = json.loads((w / "contain.json").read_text())
    assert contain["after"]["mode"] == "isolated" and contain["after"]["routes"][0]["version"] == "1"
    fx = json.loads((w / "forensics.json").read_text())
    assert fx["blast_radius"]["total"] > 0 and set(fx["blast_radius"]["by_client"]) == {"c-alpha", "c-beta"}
    q = json.loads((w / "forensics" / "quarantine.json").read_text())
    assert q["sources"] == ["partner_feed_c"]
    recovery = json.loads((w / "recovery.json").read_text())
    state = world["target"].describe()
    assert state.mode == "serving" and state.serving_versions == [recovery["new_version"]]
    report = json.loads((w / "report" / "report.json").read_text())
    assert "AML.T0020" in json.dumps(report)


def test_evidence_bundle_verifies(world, incident):
    ev = json.loads((incident["workdir"] / "evidence.json").read_text())
    out = _verify(world, ev["bundle"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["ok"] is True
    assert [e["action"] for e in _custody(ev["bundle"])].count("sealed") == 1


def test_mlflow_server_on_postgres_holds_the_registry(world, incident):
    """The workers reached the registry through the MLflow server; its store is the mlflow database."""
    cluster = world["cluster"]
    versions = cluster._psql("SELECT count(*) FROM model_versions WHERE name = 'fraud-detector'", db="mlflow")
    assert int(versions) >= 3  # v1 baseline, v2 poisoned, v3 clean retrain
    alias = cluster._psql("SELECT version FROM registered_model_aliases WHERE name = 'fraud-detector' "
                          "AND alias = 'champion'", db="mlflow")
    assert alias == json.loads((incident["workdir"] / "recovery.json").read_text())["new_version"]


