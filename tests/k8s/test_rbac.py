"""deploy/kubernetes/rbac.yaml: the target works under exactly that Role (a ServiceAccount token, RBAC on), the
API server's audit log of its calls equals the Role's rules, and without the binding it fails clearly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from aiir.errors import TargetError
from aiir.targets.kubernetes import KubernetesTarget

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "rbac.yaml"
SA = "aiir-responder"


def _apply_rbac(api, ns: str, *, bind: bool = True) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    for doc in yaml.safe_load_all(RBAC.read_text()):
        doc["metadata"]["namespace"] = ns
        for s in doc.get("subjects") or []:
            s["namespace"] = ns
        if doc["kind"] == "ServiceAccount":
            core.create_namespaced_service_account(ns, doc)
        elif doc["kind"] == "Role":
            rbac.create_namespaced_role(ns, doc)
        elif doc["kind"] == "RoleBinding" and bind:
            rbac.create_namespaced_role_binding(ns, doc)


def _token(api, ns: str) -> str:
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(
        SA, ns, {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}})
    return tr.status.token


def _role_rules() -> set[tuple[str, str, str]]:
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "Role")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _audited(audit_log: Path, user: str, since: float) -> tuple[set[tuple[str, str, str]], list[dict]]:
    used, denied = set(), []
    for line in audit_log.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("user", {}).get("username") != user or "objectRef" not in ev:
            continue
        ref = ev["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        code = (ev.get("responseStatus") or {}).get("code", 200)
        if code == 403:
            denied.append(ev)
        used.add((ref.get("apiGroup", ""), resource, ev["verb"]))
    return used, denied


def _wait_audit(path: Path, user: str, n_before: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the audit backend writes asynchronously
        if path.exists() and path.read_text().count(user) > n_before:
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_every_operation_works_under_exactly_the_role(k8s, ns, tmp_path):
    _apply_rbac(k8s.api, ns)
    user = f"system:serviceaccount:{ns}:{SA}"
    api = k8s.local.api_client(token=_token(k8s.api, ns))
    try:
        for name in ("fraud", "churn"):  # with Istio (VirtualService, AuthorizationPolicy) and without
            t = KubernetesTarget(name, api_client=api, namespace=ns, quarantine_scale_to_zero=True)
            assert t.describe().mode == "serving"
            assert t.isolate(reason="rbac").mode == "isolated"
            assert t.snapshot(tmp_path / name)  # while pods exist (their logs are asked for)
            assert t.isolate(quarantine=True, reason="rbac").mode == "quarantined"
            assert t.restore().mode == "serving"
            t.wait_settled(timeout=60, poll=0.2)
            t.canary("1", 0.5)
            t.canary("1", 0.0)
            t.rollback("1", reason="rbac")
            t.wait_settled(timeout=60, poll=0.2)
            if name == "fraud":
                t.block_clients(["merchant-17"])
                t.block_clients(["acquirer-eu"])  # an update of the existing policy
                t.restore()
    finally:
        api.close()
    audit = k8s.local.state_dir / "audit.log"
    _wait_audit(audit, user, 0)
    time.sleep(1.0)
    used, denied = _audited(audit, user, 0)
    assert not denied, [(d["verb"], d["objectRef"]) for d in denied]
    # the Role grants exactly what the target used: nothing missing, nothing spare
    assert used == _role_rules(), {"used but not granted": sorted(used - _role_rules()),
                                   "granted but never used": sorted(_role_rules() - used)}


def test_without_the_role_binding_the_target_fails_clearly(k8s, ns):
    _apply_rbac(k8s.api, ns, bind=False)
    api = k8s.local.api_client(token=_token(k8s.api, ns))
    try:
        t = KubernetesTarget("churn", api_client=api, namespace=ns)
        with pytest.raises(TargetError) as e:
            t.isolate(reason="no rights")
        msg = str(e.value)
        assert "not allowed to list Deployments" in msg and f"namespace '{ns}'" in msg
        assert "deploy/kubernetes/rbac.yaml" in msg and "403" in msg
    finally:
        api.close()
    # nothing was changed
    svc = client.CoreV1Api(k8s.api).read_namespaced_service("churn", ns)
    assert svc.spec.selector["aiir.io/track"] == "primary"
