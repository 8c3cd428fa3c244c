"""`incident_data_poisoning` end to end with ``target_kind=kubernetes``, through a real Airflow (scheduler,
api-server, dag-processor, triggerer) and a real kube-apiserver + kube-controller-manager (tests/k8skit.py).

The model is served on Kubernetes: Deployment ``fraud-detector`` (primary) runs the poisoned v2, the warm
``fraud-detector-fallback`` runs last-known-good v1, an Istio VirtualService routes 100 % to subset v2. The clean
candidate v3 that the retrain will register has been built and deployed by CD as ``fraud-detector-candidate`` (aiir
does not build images; it promotes what CD deployed). The batch check runs with ``target_kind=kubernetes``, opens
the incident and triggers the playbook, which reaches the cluster through the connection ``kubernetes_default``.

What the cluster cannot show (no kubelet, no mesh): the pods do not serve, so there are no decisions to count —
the blast radius comes from no decision log, and the test asserts exactly that instead of inventing one.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import VENV_BIN, restore_env

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
NS = "models-e2e"
MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def world(k8s, tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-k8s") / "aiir-home"
    keys = ("AIIR_HOME", "AIRFLOW_CONN_KUBERNETES_DEFAULT", "KUBECONFIG")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["AIIR_HOME"] = str(home)
    from kubernetes import client

    from aiir import bootstrap, demo, k8s_local, runtime
    from aiir.targets.kubernetes import KubernetesTarget

    bootstrap.bootstrap()
    v2 = bootstrap.nightly_retrain([4, 5])  # the compromise: poisoned v2 is champion, v1 last-known-good
    k8s_local.seed_model(k8s.api, MODEL, namespace=NS, primary_version=str(v2.version), fallback_version="1",
                         virtual_service=True)
    client.AppsV1Api(k8s.api).create_namespaced_deployment(NS, k8s_local.deployment_manifest(
        MODEL, f"{MODEL}-candidate", "3", track="candidate", replicas=1, namespace=NS))
    for d in (MODEL, f"{MODEL}-fallback", f"{MODEL}-candidate"):
        k8s_local.wait_rollout(k8s.api, d, namespace=NS, timeout=120)
    os.environ["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(k8s.local.kubeconfig), "namespace": NS}})
    os.environ["KUBECONFIG"] = str(k8s.local.kubeconfig)
    target = KubernetesTarget(MODEL, kubeconfig=str(k8s.local.kubeconfig), namespace=NS)
    services = []
    try:
        af = runtime.Airflow(integrity_schedule="none")
        af.start(timeout=600)  # a loaded 2-CPU machine can take minutes to bring the api-server up
        services.append(af.service)
        for d in ("data_integrity_check", "incident_data_poisoning", "retrain_from_clean_data"):
            af.wait_for_dag(d)
        yield {"home": home, "af": af, "target": target, "v2": str(v2.version), "k8s": k8s,
               "files": demo.DemoFiles(home / "data")}
    finally:
        target.close()
        for s in reversed(services):
            s.stop()
        restore_env(saved)


@pytest.fixture(scope="module")
def incident(world):
    af = world["af"]
    before = world["target"].describe()
    assert before.serving_versions == [world["v2"]] and before.fallback_version == "1"
    run = af.trigger("data_integrity_check", {"current": str(world["files"].fraud_batch(5)),
                                              "target_kind": "kubernetes", "target_name": MODEL})
    check = af.wait_for_run("data_integrity_check", run["dag_run_id"], timeout=900)
    assert check["state"] == "success", _logs(af, "data_integrity_check")
    summary = af.xcom("data_integrity_check", check["dag_run_id"], "check")
    assert summary["status"] == "incident", summary
    incident_id = summary["incident"]["incident_id"]
    played = af.wait_for_run("incident_data_poisoning", incident_id, timeout=1200)
    if played["state"] != "success":
        print(_logs(af, "incident_data_poisoning"))
    return {"incident_id": incident_id, "run": played, "workdir": world["home"] / "incidents" / incident_id}


def _logs(af, dag_id: str, tail: int = 4000) -> str:
    """The tails of a DAG's task logs (for a failure message)."""
    out = []
    for p in sorted((af.home / "logs").glob(f"dag_id={dag_id}/**/*.log")):
        out.append(f"--- {p.relative_to(af.home)}\n{p.read_text(errors='replace')[-tail:]}")
    return "\n".join(out) or f"no task logs under {af.home / 'logs'}"


def test_every_playbook_task_succeeded_on_kubernetes(world, incident):
    tis = {t["task_id"]: t["state"] for t in world["af"].task_instances("incident_data_poisoning",
                                                                         incident["incident_id"])}
    assert incident["run"]["state"] == "success", tis
    assert set(tis.values()) <= {"success", "skipped"}, tis
    record = json.loads((incident["workdir"] / "incident.json").read_text())
    assert record["target_kind"] == "kubernetes" and record["target_name"] == MODEL


def test_contained_on_the_virtualservice(world, incident):
    contain = json.loads((incident["workdir"] / "contain.json").read_text())
    assert contain["target"] == f"kubernetes:{MODEL}"
    assert contain["before"]["mode"] == "serving" and contain["before"]["routes"] == [
        {"version": world["v2"], "share": 1.0}]
    assert contain["after"]["mode"] == "isolated"
    assert contain["after"]["routes"] == [{"version": "1", "share": 1.0}]
    assert contain["after"]["extra"]["routing"] == "virtualservice"
    assert incident["incident_id"] in contain["after"]["reason"]


def test_evidence_holds_the_cluster_state_and_verifies(world, incident):
    import yaml

    ev = json.loads((incident["workdir"] / "evidence.json").read_text())
    assert "snapshot_error" not in ev, ev
    bundle = ev["bundle"]
    manifest = json.loads(open(os.path.join(bundle, "manifest.json")).read())
    names = {f["path"].split("/", 1)[-1] for f in manifest["files"]}
    for f in ("target/deployments.yaml", "target/replicasets.yaml", "target/rollout-history.yaml",
              "target/virtualservice.yaml", "target/service.yaml", "target/networkpolicies.yaml",
              "target/configmaps.yaml", "target/events.yaml", "target/pod-logs.yaml", "target/serving-state.json"):
        assert f in names, sorted(names)
    vs = yaml.safe_load(open(os.path.join(bundle, "files", "target", "virtualservice.yaml")).read())
    rec = json.loads(vs["metadata"]["annotations"]["aiir.io/containment"])  # sealed while contained
    assert rec["mode"] == "isolated" and incident["incident_id"] in rec["reason"]
    ok = subprocess.run([str(VENV_BIN / "aiir"), "verify", bundle], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # no decision log on Kubernetes: the evidence says so by an empty table, not invented rows
    rows = (incident["workdir"] / "decisions_recent.csv").read_text().strip().splitlines()
    assert len(rows) == 1 and "decision_id" in rows[0]


def test_recovered_on_the_clean_version_through_a_rollout(world, incident):
    recovery = json.loads((incident["workdir"] / "recovery.json").read_text())
    new = recovery["new_version"]
    assert new == "3"
    state = world["target"].wait_settled(timeout=120, poll=0.5)
    assert state.mode == "serving" and state.serving_versions == ["3"]
    assert state.extra["primary_version"] == "3" and state.extra["virtual_service"] == MODEL
    from kubernetes import client

    d = client.AppsV1Api(world["k8s"].api).read_namespaced_deployment(MODEL, NS)
    rb = json.loads(d.metadata.annotations["aiir.io/rollback"])
    assert rb["version"] == "3" and rb["from_version"] == world["v2"] and incident["incident_id"] in rb["reason"]
    assert d.spec.template.metadata.labels["aiir.io/track"] == "primary"  # the primary's identity kept
    from aiir import registry

    assert registry.resolve_alias(MODEL, "champion") == new


def test_report_written(incident):
    report = json.loads((incident["workdir"] / "report" / "report.json").read_text())
    assert "AML.T0020" in json.dumps(report)
