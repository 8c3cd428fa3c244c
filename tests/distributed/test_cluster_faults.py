"""Faults on the native distributed setup (see test_cluster_airflow.py for the cluster).

A second incident (a new poisoned version goes live): kill -9 the worker running ``isolate_endpoint``
while its isolate call is in flight, then the worker running ``preserve_evidence`` while it snapshots
the target; each task is retried on the other worker, nothing is sealed twice. Then PostgreSQL is
restarted while the run is in its retrain phase; the run resumes and succeeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.distributed.conftest import DAG, FIGURES, WORKERS, FaultProxy, _custody, _tis, _traffic, _verify

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.distributed, pytest.mark.faults]


def _wait_held(proxy: FaultProxy, n: int, timeout: float) -> None:
    from aiir.runtime import wait_until

    wait_until(lambda: len(proxy.held) >= n, timeout=timeout, interval=0.05, what=f"held request #{n}")


def _sender(cluster, proxy: FaultProxy, i: int) -> str:
    """The worker whose task sent held request ``i`` (found by the connection's port, at once)."""
    name = cluster.service_of_port(proxy.held[i].client_port, proxy.port)
    assert name in WORKERS, (name, proxy.held[i])
    return name


def _wait_worker_ready(cluster, name: str) -> None:
    from aiir.runtime import wait_until

    wait_until(lambda: cluster._worker_ready(name), timeout=300, what=f"{name} to be ready again")


def _wait_task(af, run_id: str, task_id: str, states=("success",), timeout: float = 600) -> dict:
    """Wait until the task is in one of ``states``; fail at once when it ends in another (it cannot get
    there any more)."""
    from aiir.runtime import wait_until

    def done():
        ti = _tis(af, DAG, run_id)[task_id]
        if ti["state"] in states:
            return ti
        if ti["state"] in ("success", "failed", "upstream_failed", "skipped"):
            raise AssertionError(f"{task_id} ended {ti['state']} while waiting for {states}")
        return None

    return wait_until(done, timeout=timeout, interval=0.5, what=f"{task_id} to reach {states}")


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


@pytest.fixture(scope="module")
def faults(world):
    from aiir import bootstrap, registry

    af, proxy, cluster, target = world["af"], world["proxy"], world["cluster"], world["target"]
    good = registry.resolve_alias("fraud-detector", "last-known-good")
    bad = bootstrap.nightly_retrain([4, 5])  # the compromise, again: a poisoned version goes live
    target.rollback(bad.version, reason="nightly deploy")
    _traffic(world, 2)
    run_id = "INC-distributed-faults"
    obs: dict = {"good": good, "bad": bad.version, "run_id": run_id}

    # (a) kill -9 the worker running isolate_endpoint while its isolate call is in flight
    proxy.hold("POST /admin/isolate", max_hold=12.0)  # the connection's client waits 15 s
    t0 = time.time()
    af.api("POST", f"/dags/{DAG}/dagRuns", {"dag_run_id": run_id, "logical_date": None,
                                             "conf": {"incident_id": run_id, "severity": "high"}})
    try:
        _wait_held(proxy, 1, timeout=300)
    except Exception as exc:
        run = af.api("GET", f"/dags/{DAG}/dagRuns/{run_id}")
        raise AssertionError(f"{exc}; run {run['state']}, tasks "
                             f"{ {t: ti['state'] for t, ti in _tis(af, DAG, run_id).items()} }") from None
    victim = _sender(cluster, proxy, 0)
    killed_at = cluster.kill(victim)
    obs["isolate_killed"] = victim
    assert _tis(af, DAG, run_id)["isolate_endpoint"]["hostname"] == victim
    ti = _wait_task(af, run_id, "isolate_endpoint")
    obs["isolate"] = {"try_number": ti["try_number"], "node": ti["hostname"], "held": proxy.held[0].outcome,
                      "retry_started_s": round(_ts(ti["start_date"]) - killed_at, 1),
                      "recovered_s": round(_ts(ti["end_date"]) - killed_at, 1),
                      "trigger_to_contained_s": round(_ts(ti["end_date"]) - t0, 1)}
    # (b) kill -9 the worker running preserve_evidence while it snapshots the target (armed before the
    # first victim is back: preserve may start on the surviving worker while it restarts)
    proxy.hold("GET /admin/state", max_hold=4.0)  # preserve's snapshot client gives up after 5 s
    cluster.revive(victim)
    _wait_held(proxy, 2, timeout=600)
    victim = _sender(cluster, proxy, 1)
    bundle_dir = world["home"] / "evidence" / run_id
    obs["custody_before_kill"] = [e["action"] for e in _custody(str(bundle_dir))]
    killed_at = cluster.kill(victim)
    obs["preserve_killed"] = victim
    assert _tis(af, DAG, run_id)["preserve_evidence"]["hostname"] == victim
    ti = _wait_task(af, run_id, "preserve_evidence")
    obs["preserve"] = {"try_number": ti["try_number"], "node": ti["hostname"], "held": proxy.held[1].outcome,
                       "retry_started_s": round(_ts(ti["start_date"]) - killed_at, 1),
                       "recovered_s": round(_ts(ti["end_date"]) - killed_at, 1)}
    cluster.revive(victim)
    _wait_worker_ready(cluster, victim)
    obs["workers_alive_after"] = sorted(n for n in WORKERS if cluster.procs[n].alive())

    # (c) restart PostgreSQL while the run waits on its clean retrain: the task is deferred (the triggerer
    # watches the child run) and the child run exists
    _wait_task(af, run_id, "retrain_from_clean_data", states=("deferred",), timeout=600)
    child = af.api("GET", f"/dags/retrain_from_clean_data/dagRuns/{run_id}-retrain")
    pg = cluster.restart_postgres(down_seconds=5)
    obs["postgres"] = {"down_s": round(pg["ready_at"] - pg["stopped_at"], 1), "child_state_at_stop": child["state"],
                       "ready_at": pg["ready_at"]}
    run = af.wait_for_run(DAG, run_id, timeout=1200)
    obs["postgres"]["run_done_after_restart_s"] = round(time.time() - pg["ready_at"], 1)
    # work resumed: the first task (of the run or its child) that started after PostgreSQL was back
    starts = [_ts(t["start_date"]) for d, r in ((DAG, run_id), ("retrain_from_clean_data", f"{run_id}-retrain"))
              for t in af.task_instances(d, r) if t.get("start_date") and _ts(t["start_date"]) > pg["ready_at"]]
    obs["postgres"]["first_task_started_after_restart_s"] = round(min(starts) - pg["ready_at"], 1) if starts else None
    # the components that exited on losing the database and were restarted (compose's restart: always)
    obs["postgres"]["restarted_services"] = sorted({e["service"] for e in cluster.events
                                                     if e["event"] == "restarted" and e["at"] >= pg["stopped_at"]})
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
    states = {t: ti["state"] for t, ti in _tis(af, DAG, faults["run_id"]).items()}
    assert faults["run"]["state"] == "success", states
    assert {st for t, st in states.items() if not t.startswith("confirm_")} == {"success"}, states
    contain = json.loads((faults["workdir"] / "contain.json").read_text())
    assert [r["version"] for r in contain["before"]["routes"]] == [faults["bad"]], contain["before"]
    assert contain["after"]["mode"] == "isolated"
    assert contain["after"]["routes"][0]["version"] == faults["good"]


def test_nothing_sealed_twice_and_the_bundle_verifies(world, faults):
    ev = json.loads((faults["workdir"] / "evidence.json").read_text())
    assert Path(ev["bundle"]) == world["home"] / "evidence" / faults["run_id"]
    events = [e["action"] for e in _custody(ev["bundle"])]
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
    assert pg["child_state_at_stop"] in ("queued", "running"), pg  # the run was waiting on its retrain
    assert _ts(faults["run"]["end_date"]) > pg["ready_at"], pg  # ... and finished after PostgreSQL was back
