"""plugins/aiir_airflow/kubernetes.py on the real cluster: the provider's KubernetesHook and connection
``kubernetes_default`` (an env-var connection with kube_config_path and namespace), the fast containment path,
and the deferrable wait through TargetSettledTrigger (run here as the triggerer runs it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def conn(k8s, ns, monkeypatch):
    extra = {"kube_config_path": str(k8s.local.kubeconfig), "namespace": ns}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": extra}))
    return extra


def _first_event(trigger):
    async def go():
        async for ev in trigger.run():
            return ev

    return asyncio.run(go())


def test_operators_build_nothing_in_init_and_template_their_fields():
    from aiir_airflow.kubernetes import KubernetesIsolateOperator, KubernetesRollbackOperator

    op = KubernetesRollbackOperator(task_id="rb", target_name="{{ params.target_name }}", version="{{ params.v }}")
    assert "hook" not in op.__dict__ and "target" not in op.__dict__
    assert {"target_name", "kubernetes_conn_id", "namespace", "target_options", "reason", "version"} <= \
        set(op.template_fields)
    assert op.kubernetes_conn_id == "kubernetes_default" and op.wait_for_settled and op.deferrable
    iso = KubernetesIsolateOperator(task_id="iso", target_name="m")
    assert {"fallback_version", "quarantine"} <= set(iso.template_fields) and iso.fast_path


def test_isolate_operator_contains_without_importing_the_kubernetes_hook(k8s, ns, conn):
    """Containment in a fresh process: the plain client from the connection, no provider hook import."""
    code = (
        "import sys, time, json\n"
        "t0 = time.perf_counter()\n"
        "from aiir_airflow.kubernetes import KubernetesIsolateOperator\n"
        "op = KubernetesIsolateOperator(task_id='isolate', target_name='churn', reason='incident 8')\n"
        "res = op.execute({})\n"
        "print(json.dumps({'mode': res['state']['mode'], 'routes': res['state']['routes'],\n"
        "                  'act_s': res['seconds'], 'total_s': time.perf_counter() - t0,\n"
        "                  'hook_imported': 'airflow.providers.cncf.kubernetes.hooks.kubernetes' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["mode"] == "isolated" and res["routes"] == [{"version": "1", "share": 1.0}]
    assert res["hook_imported"] is False
    print(f"\nisolate operator in a fresh process: {res['total_s']:.2f}s total, {res['act_s']:.3f}s acting")


def test_rollback_operator_defers_until_the_rollout_completes(k8s, ns, conn):
    from airflow.sdk.exceptions import TaskDeferred

    from aiir_airflow.kubernetes import KubernetesRollbackOperator
    from aiir_airflow.triggers import TargetSettledTrigger

    op = KubernetesRollbackOperator(task_id="rollback", target_name="churn", version="1", reason="to lkg",
                                    poll_interval=0.2)
    k8s.readiness.pause()  # the new pods stay Pending until the trigger is running
    try:
        with pytest.raises(TaskDeferred) as d:
            op.execute({})
    finally:
        k8s.readiness.resume()
    trig = d.value.trigger
    assert isinstance(trig, TargetSettledTrigger) and d.value.method_name == "execute_complete"
    path, kwargs = trig.serialize()  # the triggerer rebuilds it from this
    assert path == "aiir_airflow.triggers.TargetSettledTrigger"
    assert kwargs["target_conn_id"] == "kubernetes_default" and kwargs["target_kind"] == "kubernetes"
    event = _first_event(TargetSettledTrigger(**kwargs))
    assert event.payload["status"] == "settled", event.payload
    out = op.execute_complete({}, event.payload)
    assert out["state"]["extra"]["primary_version"] == "1" and out["state"]["settled"] is True
    assert [r["version"] for r in out["state"]["routes"]] == ["1"]


def test_hook_operators_canary_restore_snapshot(k8s, ns, conn, tmp_path):
    from aiir_airflow.kubernetes import (
        KubernetesCanaryOperator,
        KubernetesIsolateOperator,
        KubernetesRestoreOperator,
        KubernetesSnapshotOperator,
    )

    can = KubernetesCanaryOperator(task_id="canary", target_name="fraud", version="1", share="0.1")
    res = can.execute({})
    assert {r["version"]: r["share"] for r in res["state"]["routes"]} == {"2": 0.9, "1": 0.1}
    assert can.target._api_client is can.hook.api_client  # built on the provider hook's client
    KubernetesIsolateOperator(task_id="q", target_name="fraud", quarantine="true").execute({})
    snap = KubernetesSnapshotOperator(task_id="snap", target_name="fraud", dest=str(tmp_path / "s")).execute({})
    assert any(f.endswith("networkpolicies.yaml") for f in snap["files"])
    res = KubernetesRestoreOperator(task_id="restore", target_name="fraud").execute({})
    assert res["state"]["mode"] == "serving"


def test_bad_options_fail_the_task_at_once(k8s, ns, conn):
    from airflow.sdk.exceptions import AirflowFailException

    from aiir_airflow.kubernetes import KubernetesRollbackOperator

    op = KubernetesRollbackOperator(task_id="rb", target_name="churn", version="42")
    with pytest.raises(AirflowFailException, match="version"):
        op.execute({})


def test_generic_hook_maps_the_kubernetes_connection(k8s, ns, conn):
    from aiir_airflow.hooks import DeploymentTargetHook

    hook = DeploymentTargetHook("kubernetes", "churn")
    assert hook.target_conn_id == "kubernetes_default"  # the target class's default connection
    t = hook.target
    assert t.namespace == ns and t.kubeconfig == conn["kube_config_path"]
    assert t.describe().mode == "serving"
    t.close()
