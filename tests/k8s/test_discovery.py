"""`aiir targets`: the kubernetes kind is found (built-in and entry point), declares its options and connection,
and a target is described through the CLI against the real cluster."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from aiir.targets import registry
from aiir.targets.kubernetes import KubernetesTarget
from tests.conftest import run_aiir

REPO = Path(__file__).resolve().parents[2]


def test_the_kind_is_registered_and_available():
    assert registry.target_class("kubernetes") is KubernetesTarget
    assert "kubernetes" in registry.available_kinds()
    row = next(r for r in registry.list_targets() if r["kind"] == "kubernetes")
    assert row["available"] is True and row["default_conn_id"] == "kubernetes_default"
    assert row["requires"] == ["kubernetes"]
    # honest capabilities: no decision log, no per-client rate limit on Kubernetes
    assert set(row["capabilities"]) == {"isolate", "quarantine", "block_clients", "restore", "rollback", "canary",
                                        "snapshot"}
    names = {o["name"] for o in row["options"]}
    assert {"kubeconfig", "kube_config", "context", "in_cluster", "namespace", "deployment", "fallback_deployment",
            "service", "virtual_service", "routing", "quarantine_scale_to_zero"} <= names
    assert next(o for o in row["options"] if o["name"] == "kube_config")["secret"] is True


def test_pyproject_declares_the_entry_point():
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["aiir.targets"]
    assert eps["kubernetes"] == "aiir.targets.kubernetes:KubernetesTarget"


def test_options_from_the_cncf_kubernetes_connection():
    m = KubernetesTarget.options_from_connection(extra={
        "kube_config_path": "/k/config", "namespace": "models", "cluster_context": "prod", "in_cluster": "false",
        "disable_verify_ssl": False, "deployment": "fraud-v", "xcom_sidecar_container_image": "ignored"})
    assert m == {"kubeconfig": "/k/config", "namespace": "models", "context": "prod", "in_cluster": False,
                 "disable_verify_ssl": False, "deployment": "fraud-v"}
    # the provider's old prefixed extras and an inline kubeconfig
    m = KubernetesTarget.options_from_connection(extra={"extra__kubernetes__in_cluster": True,
                                                        "extra__kubernetes__namespace": "ns"})
    assert m == {"in_cluster": True, "namespace": "ns"}
    m = KubernetesTarget.options_from_connection(extra={"kube_config": '{"apiVersion": "v1"}'})
    assert m == {"kube_config": '{"apiVersion": "v1"}'}
    assert KubernetesTarget.options_from_connection() == {}


def test_get_target_rejects_options_the_kind_does_not_take():
    import pytest

    from aiir.errors import BadInput

    with pytest.raises(BadInput, match="not \\['region'\\]"):
        registry.get_target("kubernetes", "m", region="eu-west-1")


def test_cli_lists_and_describes_a_kubernetes_target(k8s, ns):
    out = run_aiir("targets", "list")
    assert out.returncode == 0, out.stderr
    assert any(r["kind"] == "kubernetes" and r["available"] for r in json.loads(out.stdout))
    out = run_aiir("targets", "describe", "kubernetes", "fraud", "-o", f"kubeconfig={k8s.local.kubeconfig}",
                   "-o", f"namespace={ns}")
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["target"] == "kubernetes:fraud" and state["mode"] == "serving" and state["settled"] is True
    out = run_aiir("targets", "describe", "kubernetes", "nosuch", "-o", f"kubeconfig={k8s.local.kubeconfig}",
                   "-o", f"namespace={ns}")
    assert out.returncode == 2 and "deployment: Deployment 'nosuch' not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_contains_and_rolls_back_by_hand(k8s, ns, tmp_path):
    """Responders act when Airflow is down: the same verbs for any kind."""
    o = ["-o", f"kubeconfig={k8s.local.kubeconfig}", "-o", f"namespace={ns}"]
    out = run_aiir("targets", "isolate", "kubernetes", "churn", *o, "--reason", "by hand")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["mode"] == "isolated"
    out = run_aiir("targets", "snapshot", "kubernetes", "churn", str(tmp_path / "snap"), *o)
    assert out.returncode == 0 and any(f.endswith("service.yaml") for f in json.loads(out.stdout))
    out = run_aiir("targets", "rollback", "kubernetes", "churn", "1", *o)
    assert out.returncode == 0, out.stderr
    out = run_aiir("targets", "wait", "kubernetes", "churn", *o, "--poll", "0.2", "--timeout", "60")
    assert out.returncode == 0 and json.loads(out.stdout)["settled"] is True
    out = run_aiir("targets", "restore", "kubernetes", "churn", *o)
    state = json.loads(out.stdout)
    assert state["mode"] == "serving" and state["routes"] == [{"version": "1", "share": 1.0}]
    out = run_aiir("targets", "block", "kubernetes", "churn", "a,b", *o)
    assert out.returncode == 0 and json.loads(out.stdout)["blocked_clients"] == ["a", "b"]
    out = run_aiir("targets", "rollback", "kubernetes", "churn", "9", *o)
    assert out.returncode == 2 and out.stderr.startswith("aiir: error: version:")
