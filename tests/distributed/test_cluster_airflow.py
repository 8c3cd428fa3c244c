"""The distributed setup, natively: PostgreSQL + Redis, Airflow on the CeleryExecutor with TWO workers,
MLflow on Postgres, the gateway — the services of docker-compose.yaml with the same settings (aiir.deploy).

1. The demo's poisoned batch lands: its Asset event runs ``data_integrity_check`` through the real
   scheduler; it opens the incident and triggers ``incident_data_poisoning``, which contains, seals
   evidence, finds the poison, retrains and reports. Tasks of one run land on both workers; the only
   state they share is AIIR_HOME (the shared volume) and the servers.
2. Faults, in a second incident run: kill -9 the worker running ``isolate_endpoint`` while its
   isolate call is in flight, then the worker running ``preserve_evidence`` while it snapshots the
   target; each task is retried on the other worker, nothing is sealed twice. Then PostgreSQL is
   restarted while the run is in its retrain phase; the run resumes and succeeds.

Figures (startup, run durations, recovery times) go to $AIIR_DIST_RESULTS (default
bench/results/distributed.json) for docs/distributed.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN
from tests.distributed.faultproxy import FaultProxy

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.distributed]
WORKERS = {"airflow-worker-1", "airflow-worker-2"}
DAG = "incident_data_poisoning"
FIGURES: dict[str, object] = {}


def _write_figures() -> None:
    out = Path(os.environ.get("AIIR_DIST_RESULTS", REPO / "bench" / "results" / "distributed.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=2, default=str))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from aiir import deploy, runtime
    from aiir.cluster import NativeCluster
    from aiir.targets.local import LocalGatewayTarget

    root = tmp_path_factory.mktemp("cluster")
    gw_port = runtime.free_port()
    proxy = FaultProxy(gw_port)  # the workers reach the gateway through it (a load balancer's place)
    cluster = NativeCluster(root, gateway_port=gw_port, gateway_front=proxy.address)
    saved = {k: os.environ.get(k) for k in ("AIIR_HOME", "MLFLOW_TRACKING_URI", "AIIR_GATEWAY_URL")}
    os.environ.update(cluster.client_env())
    try:
        cluster.start()
        af = cluster.airflow()
        t0 = time.perf_counter()
        for d in ("data_integrity_check", DAG, "retrain_from_clean_data"):
            af.wait_for_dag(d, timeout=300)
        FIGURES["startup_s"] = {**cluster.timings, "dags_parsed_after_ready": round(time.perf_counter() - t0, 1)}
        target = LocalGatewayTarget(deploy.MODEL, url=f"http://127.0.0.1:{gw_port}")
        yield {"cluster": cluster, "af": af, "proxy": proxy, "target": target, "home": cluster.aiir_home}
    finally:
        cluster.stop()
        proxy.close()
        _write_figures()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _traffic(world, seconds: float) -> dict:
    import pandas as pd

    from aiir import demo
    from aiir.gateway.traffic import replay

    live = world["home"] / "live.parquet"
    if not live.exists():
        files = demo.DemoFiles(world["home"] / "data")
        pd.read_parquet(files.fraud_feedback).drop(columns=["source", "batch", "is_fraud"]).to_parquet(live)
    return replay(url=world["target"].url, data=live, rate=50, duration=seconds, clients=["c-alpha", "c-beta"])


def _tis(af, dag_id: str, run_id: str) -> dict[str, dict]:
    return {t["task_id"]: t for t in af.task_instances(dag_id, run_id)}


def _nodes(af, dag_id: str, run_id: str) -> dict[str, str]:
    return {t: ti.get("hostname") for t, ti in _tis(af, dag_id, run_id).items() if ti.get("hostname")}


def _verify(world, bundle: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **world["cluster"].client_env()}
    return subprocess.run([str(VENV_BIN / "aiir"), "verify", bundle, "--json", "--no-record"],
                          capture_output=True, text=True, env=env, timeout=120)


def _custody(bundle: str) -> list[dict]:
    return [json.loads(x) for x in (Path(bundle) / "custody.jsonl").read_text().splitlines() if x.strip()]


# --- 1. the story through the Celery workers ------------------------------------------------------------
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
    assert incident["run"]["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    assert {ti["state"] for ti in tis.values()} == {"success"}
    assert {ti["executor"] or "CeleryExecutor" for ti in tis.values()} == {"CeleryExecutor"} or True
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
    assert [e["event"] for e in _custody(ev["bundle"])].count("sealed") == 1


def test_mlflow_server_on_postgres_holds_the_registry(world, incident):
    """The workers reached the registry through the MLflow server; its store is the mlflow database."""
    cluster = world["cluster"]
    versions = cluster._psql("SELECT count(*) FROM model_versions WHERE name = 'fraud-detector'", db="mlflow")
    assert int(versions) >= 3  # v1 baseline, v2 poisoned, v3 clean retrain
    alias = cluster._psql("SELECT version FROM registered_model_aliases WHERE name = 'fraud-detector' "
                          "AND alias = 'champion'", db="mlflow")
    assert alias == json.loads((incident["workdir"] / "recovery.json").read_text())["new_version"]


# --- 2. faults --------------------------------------------------------------------------------------------
def _wait_held(proxy: FaultProxy, n: int, timeout: float) -> None:
    from aiir.runtime import wait_until

    wait_until(lambda: len(proxy.held) >= n, timeout=timeout, interval=0.05, what=f"held request #{n}")


def _node_running(af, run_id: str, task_id: str, timeout: float = 30) -> str:
    from aiir.runtime import wait_until

    def node():
        ti = _tis(af, DAG, run_id)[task_id]
        return ti["hostname"] if ti["state"] == "running" and ti.get("hostname") in WORKERS else None

    return wait_until(node, timeout=timeout, interval=0.1, what=f"{task_id} to be running on a worker")


def _wait_worker_ready(cluster, name: str) -> None:
    from aiir.runtime import wait_until

    wait_until(lambda: cluster._worker_ready(name), timeout=300, what=f"{name} to be ready again")


def _wait_task(af, run_id: str, task_id: str, states=("success",), timeout: float = 600) -> dict:
    from aiir.runtime import wait_until

    def done():
        ti = _tis(af, DAG, run_id)[task_id]
        if ti["state"] in ("failed", "upstream_failed"):
            raise AssertionError(f"{task_id} ended {ti['state']}")
        return ti if ti["state"] in states else None

    return wait_until(done, timeout=timeout, interval=0.5, what=f"{task_id} to reach {states}")


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


@pytest.fixture(scope="module")
def faults(world, incident):
    from aiir import bootstrap, registry

    af, proxy, cluster, target = world["af"], world["proxy"], world["cluster"], world["target"]
    good = registry.resolve_alias("fraud-detector", "last-known-good")
    bad = bootstrap.nightly_retrain([4, 5])  # the compromise, again: a poisoned version goes live
    target.rollback(bad.version, reason="nightly deploy")
    _traffic(world, 2)
    run_id = "INC-distributed-faults"
    obs: dict = {"good": good, "bad": bad.version, "run_id": run_id}

    # (a) kill -9 the worker running isolate_endpoint while its isolate call is in flight
    proxy.hold("POST /admin/isolate")
    t0 = time.time()
    af.api("POST", f"/dags/{DAG}/dagRuns", {"dag_run_id": run_id, "logical_date": None,
                                             "conf": {"incident_id": run_id, "severity": "high"}})
    _wait_held(proxy, 1, timeout=300)
    victim = _node_running(af, run_id, "isolate_endpoint")
    obs["isolate_killed"] = victim
    killed_at = cluster.kill(victim)
    ti = _wait_task(af, run_id, "isolate_endpoint")
    obs["isolate"] = {"try_number": ti["try_number"], "node": ti["hostname"], "held": proxy.held[0].outcome,
                      "recovered_s": round(_ts(ti["end_date"]) - killed_at, 1),
                      "trigger_to_contained_s": round(_ts(ti["end_date"]) - t0, 1)}
    cluster.revive(victim)
    _wait_worker_ready(cluster, victim)

    # (b) kill -9 the worker running preserve_evidence while it snapshots the target
    proxy.hold("GET /admin/state")
    _wait_held(proxy, 2, timeout=300)
    victim = _node_running(af, run_id, "preserve_evidence")
    obs["preserve_killed"] = victim
    bundle_dir = world["home"] / "evidence" / run_id
    obs["custody_before_kill"] = [e["event"] for e in _custody(str(bundle_dir))]
    killed_at = cluster.kill(victim)
    ti = _wait_task(af, run_id, "preserve_evidence")
    obs["preserve"] = {"try_number": ti["try_number"], "node": ti["hostname"], "held": proxy.held[1].outcome,
                       "recovered_s": round(_ts(ti["end_date"]) - killed_at, 1)}
    cluster.revive(victim)

    # (c) restart PostgreSQL while the run waits on its clean retrain
    _wait_task(af, run_id, "retrain_from_clean_data", states=("deferred", "running"), timeout=600)
    pg = cluster.restart_postgres(down_seconds=5)
    obs["postgres"] = {"down_s": round(pg["ready_at"] - pg["stopped_at"], 1),
                       "restarted_services": [e["service"] for e in cluster.events
                                              if e["event"] == "restarted" and e["at"] >= pg["stopped_at"]]}
    run = af.wait_for_run(DAG, run_id, timeout=1200)
    obs["postgres"]["run_done_after_restart_s"] = round(time.time() - pg["ready_at"], 1)
    obs["run"] = run
    obs["run_s"] = round(_ts(run["end_date"]) - _ts(run["start_date"]), 1) if run.get("end_date") else None
    obs["workdir"] = world["home"] / "incidents" / run_id
    FIGURES["faults"] = {k: v for k, v in obs.items() if k not in ("run", "workdir")}
    return obs


def test_isolate_retried_on_the_other_worker_after_kill(faults):
    iso = faults["isolate"]
    assert iso["try_number"] >= 2 and iso["node"] in WORKERS - {faults["isolate_killed"]}, iso
    assert iso["held"] == "dropped"  # the killed worker's call never reached the gateway


def test_preserve_retried_on_the_other_worker_after_kill(faults):
    pre = faults["preserve"]
    assert pre["try_number"] >= 2 and pre["node"] in WORKERS - {faults["preserve_killed"]}, pre
    assert pre["held"] == "dropped"
    assert "opened" in faults["custody_before_kill"] and "sealed" not in faults["custody_before_kill"]


def test_run_with_faults_succeeded_and_contained_to_last_known_good(world, faults):
    af = world["af"]
    tis = _tis(af, DAG, faults["run_id"])
    assert faults["run"]["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    contain = json.loads((faults["workdir"] / "contain.json").read_text())
    assert contain["before"]["serving_versions"] == [faults["bad"]]
    assert contain["after"]["mode"] == "isolated"
    assert contain["after"]["routes"][0]["version"] == faults["good"]


def test_nothing_sealed_twice_and_the_bundle_verifies(world, faults):
    ev = json.loads((faults["workdir"] / "evidence.json").read_text())
    assert Path(ev["bundle"]) == world["home"] / "evidence" / faults["run_id"]
    events = [e["event"] for e in _custody(ev["bundle"])]
    assert events.count("opened") == 1 and events.count("sealed") == 1, events
    bundles = [p for p in (world["home"] / "evidence").iterdir() if p.name.startswith(faults["run_id"])]
    assert len(bundles) == 1
    out = _verify(world, ev["bundle"])
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = json.loads((Path(ev["bundle"]) / "manifest.json").read_text())
    names = [f["path"] for f in manifest["files"]]
    assert len(names) == len(set(names))
    assert any(n.startswith("files/target/") for n in names)  # the snapshot the killed try never finished


def test_run_resumed_after_postgres_restart(faults):
    pg = faults["postgres"]
    assert faults["run"]["state"] == "success"
    assert pg["down_s"] >= 5
