"""The native cluster shared by the distributed test modules (one per test session: it takes minutes to
start on a loaded machine), and helpers. See test_cluster_airflow.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN
from tests.distributed.faultproxy import FaultProxy

WORKERS = {"airflow-worker-1", "airflow-worker-2"}
DAG = "incident_data_poisoning"
FIGURES: dict[str, object] = {}


def _write_figures() -> None:
    out = Path(os.environ.get("AIIR_DIST_RESULTS", REPO / "bench" / "results" / "distributed.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=2, default=str))


@pytest.fixture(scope="package")
def world(tmp_path_factory):
    from aiir import deploy, runtime
    from aiir.cluster import NativeCluster
    from aiir.targets.local import LocalGatewayTarget

    root = tmp_path_factory.mktemp("cluster")
    gw_port = runtime.free_port()
    proxy = FaultProxy(gw_port, max_hold=12.0)  # the workers reach the gateway through it (a load balancer's place)
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
        keep = os.environ.get("AIIR_DIST_KEEP_LOGS")
        if keep:  # the logs of every service, for a post-mortem (the tmp folder is removed)
            import shutil

            shutil.copytree(root / "logs", Path(keep) / "logs", dirs_exist_ok=True)
        cluster.stop()
        proxy.close()
        FIGURES["stop_s"] = cluster.stop_timings
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


