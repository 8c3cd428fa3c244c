"""KubernetesTarget against a real kube-apiserver + kube-controller-manager (see conftest.py)."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client

from aiir import k8s_local
from aiir.errors import BadInput, TargetError
from aiir.targets import k8s_builders as kb

MEASURED: dict[str, float] = {}


def _vs(k8s, ns, name="fraud"):
    return client.CustomObjectsApi(k8s.api).get_namespaced_custom_object("networking.istio.io", "v1beta1", ns,
                                                                          "virtualservices", name)


def _svc(k8s, ns, name):
    return client.ApiClient().sanitize_for_serialization(client.CoreV1Api(k8s.api).read_namespaced_service(name, ns))


def _dep(k8s, ns, name):
    return client.AppsV1Api(k8s.api).read_namespaced_deployment(name, ns)


def test_describe_reads_both_models_back_from_the_cluster(target, k8s):
    fraud = target("fraud").describe()
    assert (fraud.mode, fraud.serving_versions, fraud.fallback_version, fraud.settled) == ("serving", ["2"], "1", True)
    assert fraud.extra["routing"] == "virtualservice" and fraud.extra["primary_version"] == "2"
    assert fraud.target == "kubernetes:fraud"
    churn = target("churn").describe()
    assert (churn.mode, churn.serving_versions, churn.fallback_version) == ("serving", ["2"], "1")
    assert churn.extra["routing"] == "service"
    assert {d["name"]: d["ready"] for d in churn.extra["deployments"]} == {"churn": 2, "churn-fallback": 2}
    # forcing Service routing on the Istio model reads the Service (which selects both Deployments' pods)
    both = target("fraud", routing="service").describe()
    assert both.extra["routing"] == "service" and sorted(both.serving_versions) == ["1", "2"]


def test_isolate_via_virtualservice_and_restore_exactly(target, k8s, ns):
    t = target("fraud")
    before = _vs(k8s, ns)
    svc_before = _svc(k8s, ns, "fraud")
    t0 = time.perf_counter()
    state = t.isolate(reason="incident 1: <poisoned> & 'quoted'")
    settled = t.wait_settled(timeout=30, poll=0.05)
    MEASURED["isolate_vs_to_settled_s"] = time.perf_counter() - t0
    assert state.mode == "isolated" and state.serving_versions == ["1"] and state.fallback_version == "1"
    assert state.reason == "incident 1: <poisoned> & 'quoted'" and settled.settled
    vs = _vs(k8s, ns)
    assert kb.vs_routes(vs) == [("v1", 100)]
    assert vs["spec"]["http"][0]["timeout"] == "2s"  # the rule kept everything but its destination
    rec = json.loads(vs["metadata"]["annotations"][kb.A_CONTAINMENT])
    assert rec["mode"] == "isolated" and rec["fallback_version"] == "1" and rec["routing"] == "virtualservice"
    assert _svc(k8s, ns, "fraud")["spec"]["selector"] == svc_before["spec"]["selector"]
    # a second target (another process) reads the same containment from the cluster
    assert target("fraud").describe().mode == "isolated"
    # idempotent: isolating again writes nothing
    rv = vs["metadata"]["resourceVersion"]
    assert t.isolate(reason="again").mode == "isolated"
    assert _vs(k8s, ns)["metadata"]["resourceVersion"] == rv
    restored = t.restore(reason="incident 1 closed")
    assert restored.mode == "serving" and restored.serving_versions == ["2"]
    after = _vs(k8s, ns)
    assert after["spec"] == before["spec"]
    assert kb.A_CONTAINMENT not in after["metadata"]["annotations"]
    assert restored.reason == "incident 1 closed"


def test_isolate_via_service_selector_and_restore_exactly(target, k8s, ns):
    t = target("churn")
    before = _svc(k8s, ns, "churn")["spec"]["selector"]
    t0 = time.perf_counter()
    state = t.isolate(fallback_version="1", reason="incident 2")
    t.wait_settled(timeout=30, poll=0.05)
    MEASURED["isolate_service_to_settled_s"] = time.perf_counter() - t0
    assert state.mode == "isolated" and state.serving_versions == ["1"]
    svc = _svc(k8s, ns, "churn")
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "churn", "aiir.io/track": "fallback"}
    assert json.loads(svc["metadata"]["annotations"][kb.A_PREVIOUS_SELECTOR]) == before
    restored = t.restore(reason="done")
    assert restored.mode == "serving" and restored.serving_versions == ["2"]
    svc = _svc(k8s, ns, "churn")
    assert svc["spec"]["selector"] == before
    assert kb.A_PREVIOUS_SELECTOR not in (svc["metadata"]["annotations"] or {})


def test_isolate_to_a_version_no_deployment_runs_names_the_field(target):
    with pytest.raises(BadInput) as e:
        target("churn").isolate(fallback_version="7")
    assert e.value.where == "fallback_version" and "runs version 7" in e.value.problem


def test_quarantine_denies_all_scales_to_zero_and_restore_reverses_it(target, k8s, ns):
    t = target("churn", quarantine_scale_to_zero=True)
    state = t.isolate(quarantine=True, reason="incident 3")
    assert state.mode == "quarantined" and state.routes == []
    np_ = client.NetworkingV1Api(k8s.api).read_namespaced_network_policy("aiir-quarantine-churn", ns)
    assert np_.spec.pod_selector.match_labels == {"app.kubernetes.io/name": "churn"}
    assert np_.spec.policy_types == ["Ingress", "Egress"] and not np_.spec.ingress and not np_.spec.egress
    assert _dep(k8s, ns, "churn").spec.replicas == 0 and _dep(k8s, ns, "churn-fallback").spec.replicas == 0
    t0 = time.perf_counter()
    settled = t.wait_settled(timeout=60, poll=0.1)
    MEASURED["quarantine_scale_to_zero_settled_s"] = time.perf_counter() - t0
    assert settled.mode == "quarantined"
    assert not client.CoreV1Api(k8s.api).list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=churn").items
    assert t.isolate(quarantine=True).mode == "quarantined"  # idempotent
    assert _dep(k8s, ns, "churn").metadata.annotations[kb.A_REPLICAS_BEFORE] == "2"
    restored = t.restore(reason="lifted")
    assert restored.mode == "serving"
    assert _dep(k8s, ns, "churn").spec.replicas == 2 and _dep(k8s, ns, "churn-fallback").spec.replicas == 2
    assert kb.A_REPLICAS_BEFORE not in (_dep(k8s, ns, "churn").metadata.annotations or {})
    with pytest.raises(client.exceptions.ApiException):
        client.NetworkingV1Api(k8s.api).read_namespaced_network_policy("aiir-quarantine-churn", ns)
    assert t.wait_settled(timeout=60, poll=0.1).serving_versions == ["2"]


def test_quarantine_after_isolation_then_one_restore_lifts_both(target, k8s, ns):
    t = target("fraud")
    t.isolate(reason="first isolate")
    assert t.isolate(quarantine=True, reason="then quarantine").mode == "quarantined"
    s = t.restore()
    assert s.mode == "serving" and s.serving_versions == ["2"]


def test_rollback_across_three_revisions(target, k8s, ns):
    api = k8s.api
    k8s_local.deploy_version(api, "fraud", "fraud", "3", namespace=ns)
    k8s_local.wait_rollout(api, "fraud", namespace=ns)
    k8s_local.deploy_version(api, "fraud", "fraud", "4", namespace=ns)
    k8s_local.wait_rollout(api, "fraud", namespace=ns)
    t = target("fraud")
    hist = t.describe().extra["rollout_history"]
    assert [(h["revision"], h["version"]) for h in hist] == [(1, "2"), (2, "3"), (3, "4")]
    # by model version: the template of revision 2 (v3) comes back as revision 4, as `kubectl rollout undo` does
    t0 = time.perf_counter()
    s = t.rollback("3", reason="incident 4: v4 poisoned")
    s = t.wait_settled(timeout=60, poll=0.1)
    MEASURED["rollback_to_settled_s"] = time.perf_counter() - t0
    assert s.extra["primary_version"] == "3" and s.serving_versions == ["3"]
    hist = {h["revision"]: h["version"] for h in s.extra["rollout_history"]}
    assert hist[4] == "3" and 2 not in hist  # the same ReplicaSet, now the newest revision
    d = _dep(k8s, ns, "fraud")
    assert d.spec.template.spec.containers[0].image == k8s_local.image_for("fraud", "3")
    assert d.spec.template.spec.containers[0].env[0].value == "3"  # the whole template, not just the image
    assert d.metadata.annotations[kb.K8S_CHANGE_CAUSE] == "aiir: incident 4: v4 poisoned"
    assert json.loads(d.metadata.annotations[kb.A_ROLLBACK])["from_version"] == "4"
    # by revision number
    s = t.rollback("revision:1")
    assert t.wait_settled(timeout=60, poll=0.1).extra["primary_version"] == "2"
    # by image digest (the last-known-good digest)
    digest = k8s_local.image_for("fraud", "4").split("@", 1)[1]
    t.rollback(digest)
    s = t.wait_settled(timeout=60, poll=0.1)
    assert s.extra["primary_version"] == "4" and s.serving_versions == ["4"]
    rv = _dep(k8s, ns, "fraud").metadata.resource_version
    assert t.rollback("4").extra["primary_version"] == "4"  # idempotent: no new revision
    assert _dep(k8s, ns, "fraud").metadata.resource_version == rv
    with pytest.raises(BadInput) as e:
        t.rollback("9")
    assert e.value.where == "version" and "known versions" in e.value.problem
    with pytest.raises(BadInput, match="no revision 77"):
        t.rollback("revision:77")
    with pytest.raises(BadInput, match="not an image digest"):
        t.rollback("sha256:xyz")


def test_rollback_to_the_fallback_version_takes_its_template_and_keeps_the_primary_identity(target, k8s, ns):
    t = target("churn")
    t.rollback("1", reason="to last-known-good")
    s = t.wait_settled(timeout=60, poll=0.1)
    assert s.extra["primary_version"] == "1" and s.serving_versions == ["1"]
    d = _dep(k8s, ns, "churn")
    assert d.spec.template.metadata.labels["aiir.io/track"] == "primary"
    assert d.spec.template.spec.containers[0].image == k8s_local.image_for("churn", "1")


def test_describe_is_pending_while_a_rollout_is_in_progress(target, k8s, ns):
    t = target("churn")
    k8s.readiness.pause()
    try:
        state = t.rollback("1")
        assert state.settled is False and "deployment churn" in state.pending
        time.sleep(0.5)
        mid = t.describe()
        assert mid.settled is False and "updated replicas" in mid.pending
        assert mid.serving_versions == ["2"]  # the old pods still serve until new ones are ready
    finally:
        k8s.readiness.resume()
    t0 = time.perf_counter()
    done = t.wait_settled(timeout=60, poll=0.1)
    MEASURED["rollout_resume_to_settled_s"] = time.perf_counter() - t0
    assert done.settled and done.pending == "" and done.serving_versions == ["1"]


def test_canary_by_virtualservice_weight(target, k8s, ns):
    t = target("fraud")
    s = t.canary("1", 0.25, reason="try v1")
    assert {r.version: r.share for r in s.routes} == {"2": 0.75, "1": 0.25}
    assert kb.vs_routes(_vs(k8s, ns)) == [("v2", 75), ("v1", 25)]
    with pytest.raises(TargetError, match="restore before"):
        t.isolate()
        t.canary("1", 0.5)
    t.restore()
    s = t.canary("1", 0.0)
    assert s.serving_versions == ["2"]
    with pytest.raises(BadInput, match="already the primary"):
        t.canary("2", 0.1)
    with pytest.raises(BadInput) as e:
        t.canary("1", 1.5)
    assert e.value.where == "share"


def test_canary_by_replica_share_without_a_mesh(target, k8s, ns):
    t = target("churn")
    t.canary("1", 0.5, reason="half")
    s = t.wait_settled(timeout=60, poll=0.1)
    assert {r.version: r.share for r in s.routes} == {"1": 0.5, "2": 0.5}
    assert _svc(k8s, ns, "churn")["spec"]["selector"] == {"app.kubernetes.io/name": "churn"}
    t.canary("1", 0.2)
    s = t.wait_settled(timeout=60, poll=0.1)
    assert _dep(k8s, ns, "churn-fallback").spec.replicas == 1  # max(1, round(2 * .2 / .8))
    assert {r.version: r.share for r in s.routes} == {"1": round(1 / 3, 6), "2": round(2 / 3, 6)}
    s = t.canary("1", 0.0)
    s = t.wait_settled(timeout=60, poll=0.1)
    assert s.serving_versions == ["2"] and _dep(k8s, ns, "churn-fallback").spec.replicas == 2
    assert _svc(k8s, ns, "churn")["spec"]["selector"]["aiir.io/track"] == "primary"


def test_block_clients_with_an_authorization_policy(target, k8s, ns):
    t = target("fraud")
    s = t.block_clients(["merchant-17"], reason="abuse")
    assert s.blocked_clients == ["merchant-17"]
    s = t.block_clients(["acquirer-eu", "merchant-17"])
    assert s.blocked_clients == ["acquirer-eu", "merchant-17"]
    ap = client.CustomObjectsApi(k8s.api).get_namespaced_custom_object("security.istio.io", "v1beta1", ns,
                                                                        "authorizationpolicies", "aiir-block-fraud")
    assert ap["spec"]["action"] == "DENY"
    assert ap["spec"]["rules"][0]["when"][0]["key"] == "request.headers[x-client-id]"  # the default header
    with pytest.raises(TargetError, match="rate limits are not offered"):
        t.block_clients(["x"], rate_limit_per_s=1.0)
    with pytest.raises(BadInput):
        t.block_clients([])
    assert t.restore().blocked_clients == []


def test_without_istio_blocking_is_refused_and_routing_falls_back_to_the_service(target):
    t = target("fraud")
    t._crds = {"virtualservices": None, "authorizationpolicies": None}  # a cluster without Istio's CRDs
    assert t.describe().extra["routing"] == "service"
    with pytest.raises(TargetError, match="cannot block single clients here.*NetworkPolicy sees pods"):
        t.block_clients(["merchant-17"])


def test_decisions_are_not_claimed(target):
    with pytest.raises(TargetError, match="no aiir decision log"):
        target("fraud").decisions()


def test_snapshot_writes_the_evidence_as_yaml(target, k8s, ns, tmp_path):
    import yaml

    t = target("fraud")
    t.isolate(reason="before the snapshot")
    files = t.snapshot(tmp_path / "snap")
    names = {p.name for p in files}
    assert {"deployments.yaml", "replicasets.yaml", "rollout-history.yaml", "pods.yaml", "service.yaml",
            "virtualservice.yaml", "networkpolicies.yaml", "configmaps.yaml", "events.yaml", "pod-logs.yaml",
            "serving-state.json"} <= names
    assert all(p.parent == tmp_path / "snap" and p.stat().st_size > 0 for p in files)
    def items(fname):
        doc = yaml.safe_load((tmp_path / "snap" / fname).read_text())
        assert doc["kind"] == "List"
        return doc["items"]

    deps = items("deployments.yaml")
    assert [d["metadata"]["name"] for d in deps] == ["fraud", "fraud-fallback"]
    assert all("managedFields" not in d["metadata"] for d in deps)
    vs = yaml.safe_load((tmp_path / "snap" / "virtualservice.yaml").read_text())
    assert kb.A_CONTAINMENT in vs["metadata"]["annotations"]
    assert items("networkpolicies.yaml") == []
    assert {r["metadata"]["labels"]["aiir.io/version"] for r in items("replicasets.yaml")} == {"1", "2"}
    cms = items("configmaps.yaml")
    assert [c["metadata"]["name"] for c in cms] == ["fraud-config"]  # found through the pods' volume
    events = items("events.yaml")
    assert any(e["reason"] == "ScalingReplicaSet" for e in events)
    logs = yaml.safe_load((tmp_path / "snap" / "pod-logs.yaml").read_text())["pods"]
    assert len(logs) == 4 and all(("file" in v) or ("unavailable" in v) for v in logs.values())
    # no kubelet here: the API has no log to give, and the snapshot says so instead of writing empty files
    assert all("no kubelet" in v["unavailable"] for v in logs.values())
    state = json.loads((tmp_path / "snap" / "serving-state.json").read_text())
    assert state["mode"] == "isolated"
    assert "Secret" not in (tmp_path / "snap" / "deployments.yaml").read_text()


def test_a_concurrent_edit_409_is_re_read_and_retried(k8s, ns):
    from aiir.targets.kubernetes import KubernetesTarget

    edits, reads = [], []

    class Racing(KubernetesTarget):
        def _read_service(self):
            svc = super()._read_service()
            reads.append(svc["metadata"]["resourceVersion"])
            if len(reads) == 2:  # the read the isolating patch is built from: someone else edits the Service now
                edits.append(client.CoreV1Api(k8s.api).patch_namespaced_service(
                    "churn", ns, {"metadata": {"labels": {"edited-by": "someone-else"}}}))
            return svc

    t = Racing("churn", kubeconfig=str(k8s.local.kubeconfig), namespace=ns)
    s = t.isolate(reason="race")
    assert s.mode == "isolated" and t.conflicts_retried == 1 and len(reads) >= 3
    assert reads[2] != reads[1]  # re-read after the 409: the patch was rebuilt on the new version
    svc = _svc(k8s, ns, "churn")
    assert svc["metadata"]["labels"]["edited-by"] == "someone-else"  # their change kept, ours applied
    assert svc["spec"]["selector"]["aiir.io/track"] == "fallback"
    t.close()

    class AlwaysRacing(KubernetesTarget):
        def _read_service(self):
            svc = super()._read_service()
            client.CoreV1Api(k8s.api).patch_namespaced_service(
                "churn", ns, {"metadata": {"annotations": {"tick": str(time.monotonic())}}})
            return svc

    t = AlwaysRacing("churn", kubeconfig=str(k8s.local.kubeconfig), namespace=ns, max_conflict_retries=2)
    with pytest.raises(TargetError, match="still conflicting after 3 attempts"):
        t.restore()
    t.close()


def test_a_422_from_the_api_server_is_bad_input_naming_the_field(target):
    t = target("churn", quarantine_policy="Not_A_Valid_Name")
    with pytest.raises(BadInput) as e:
        t.isolate(quarantine=True)
    assert "metadata.name" in e.value.where and "quarantine_policy" in e.value.where
    assert "RFC 1123" in e.value.problem


def test_configuration_errors_are_clear(k8s, ns, tmp_path):
    from aiir.targets.kubernetes import KubernetesTarget

    with pytest.raises(BadInput) as e:
        KubernetesTarget("nosuch", kubeconfig=str(k8s.local.kubeconfig), namespace=ns).describe()
    assert e.value.where == "deployment"
    with pytest.raises(BadInput) as e:
        KubernetesTarget("churn", kubeconfig=str(tmp_path / "none.yaml")).describe()
    assert e.value.where == "kubeconfig" and "no such kubeconfig" in e.value.problem
    with pytest.raises(BadInput, match="routing"):
        KubernetesTarget("churn", routing="mesh")
    dead = k8s.local.kubeconfig.read_text().replace(k8s.local.server, "https://127.0.0.1:1")
    t = KubernetesTarget("churn", kube_config=dead, namespace=ns, connect_timeout=1, timeout=2)
    with pytest.raises(TargetError, match="unreachable"):
        t.describe()
    with pytest.raises(BadInput, match="virtual_service"):
        KubernetesTarget("churn", kubeconfig=str(k8s.local.kubeconfig), namespace=ns,
                         routing="virtualservice").describe()


def test_namespace_comes_from_the_kubeconfig_context(k8s):
    from aiir.targets.kubernetes import KubernetesTarget

    t = KubernetesTarget("x", kubeconfig=str(k8s.local.kubeconfig))
    assert t.namespace == "default"
    t.close()


def test_report_measurements(k8s):
    """Not an assertion of speed: prints what was measured here for docs/targets.md."""
    print(f"\nk8s build/cache check {k8s.build_s:.2f}s, cluster start {k8s.start_s:.2f}s, " +
          ", ".join(f"{k} {v:.3f}s" for k, v in sorted(MEASURED.items())))
