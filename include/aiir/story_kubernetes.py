"""``aiir demo run --target kubernetes``: containment, evidence and rollback on a real Kubernetes API server.

1. builds (once per machine, ~7 min, cached in ``${AIIR_K8S_CACHE:-/var/cache/aiir/k8s}``) and starts etcd +
   kube-apiserver + kube-controller-manager on 127.0.0.1 (scripts/k8s/), installs Istio's VirtualService and
   AuthorizationPolicy CRDs;
2. deploys ``fraud-detector``: v1 (revision 1), then the nightly deploy of the poisoned v2 (revision 2) on the
   primary Deployment, a warm last-known-good Deployment on v1, a Service and a VirtualService routing 100 % to v2;
3. contains: the VirtualService weights go to the v1 subset (annotated on the object, read back);
4. preserves: the target's snapshot (Deployments, ReplicaSets with revision history, Service, VirtualService,
   NetworkPolicies, ConfigMaps, events, pods, the serving state) sealed into a signed evidence bundle, verified;
5. blocks the abusive client with an AuthorizationPolicy, quarantines (deny-all NetworkPolicy), restores;
6. rolls the primary back to revision 1's pod template (``kubectl rollout undo``), waits for the rollout, lifts
   the containment: v1 serves as the primary.

What this cannot show: there is no kubelet, container runtime or mesh here. The pods are marked Running/Ready
through the API (so the real controllers complete rollouts), but no container starts and nothing is served; the
NetworkPolicy and AuthorizationPolicy are stored and validated, not enforced; the VirtualService routes nothing.
What it proves is what the API server accepts and reports back: every change, annotation and revision is real.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiir import config

MODEL = "fraud-detector"
NAMESPACE = "models"

LIMITS = ("no kubelet, container runtime or mesh runs here: pods are marked Ready through the API (the real "
          "controllers then complete rollouts) but no container starts and the pods do not really serve; the "
          "NetworkPolicy and AuthorizationPolicy are stored and validated by the API server, not enforced; the "
          "VirtualService routes nothing")


def _say(msg: str) -> None:
    print(f"\n\033[1m▶ {msg}\033[0m", flush=True)


def _item(msg: str) -> None:
    print(f"  · {msg}", flush=True)


def run(*, keep_running: bool = False, log: Callable[[str], None] = _say, **_ignored: Any) -> dict[str, Any]:
    from aiir import k8s_local
    from aiir.errors import TargetError
    from aiir.evidence import EvidenceStore, verify_bundle
    from aiir.evidence.keys import load_or_create_signing_key
    from aiir.targets.kubernetes import KubernetesTarget

    p = config.paths().ensure()
    why = k8s_local.build_impossible()
    if why:
        raise TargetError(f"the Kubernetes demo needs a local control plane, which cannot be built here: {why}")
    t_build = time.monotonic()
    k8s_local.build(log=log)
    build_s = time.monotonic() - t_build
    state_dir = p.home / "k8s"
    log(f"starting etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 (state in {state_dir})")
    cluster = k8s_local.LocalCluster(state_dir).start()
    _item(f"API server {cluster.server} ready in {cluster.started_s:.1f} s; kubeconfig {cluster.kubeconfig}")
    api = cluster.api_client()
    readiness = None
    target = None
    try:
        k8s_local.install_istio_crds(api)
        readiness = k8s_local.PodReadiness(api, [NAMESPACE]).start()
        _item("Istio CRDs installed (API objects only: no mesh); a kubelet stand-in marks pods Ready via pods/status")

        log(f"deploying {MODEL}: v1, then the nightly deploy of the poisoned v2")
        k8s_local.seed_model(api, MODEL, namespace=NAMESPACE, primary_version="1", fallback_version="1",
                             virtual_service=True)
        k8s_local.wait_rollout(api, MODEL, namespace=NAMESPACE)
        k8s_local.deploy_version(api, MODEL, MODEL, "2", namespace=NAMESPACE)
        _route_to(api, "v2")
        k8s_local.wait_rollout(api, MODEL, namespace=NAMESPACE)
        k8s_local.wait_rollout(api, f"{MODEL}-fallback", namespace=NAMESPACE)
        target = KubernetesTarget(MODEL, kubeconfig=str(cluster.kubeconfig), namespace=NAMESPACE)
        before = target.describe()
        _item(f"serving {_routes(before)}; fallback (last-known-good Deployment) v{before.fallback_version}; "
              f"revisions {[(h['revision'], 'v' + str(h['version'])) for h in before.extra['rollout_history']]}")

        incident = f"k8s-demo-{time.strftime('%Y%m%dT%H%M%S')}"
        log(f"incident {incident}: contain — VirtualService weights to the last-known-good subset")
        t0 = time.perf_counter()
        contained = target.isolate(reason=f"incident {incident}: suspected data poisoning in v2")
        contained = target.wait_settled(timeout=60, poll=0.1)
        contain_s = time.perf_counter() - t0
        _item(f"{contained.mode}: {_routes(contained)} in {contain_s * 1000:.0f} ms (isolate call → settled); "
              f"annotation aiir.io/containment on VirtualService {MODEL}")

        log("preserve — the target's own state, sealed into a signed evidence bundle")
        snap = p.incidents / incident / "target_snapshot"
        files = target.snapshot(snap)
        store = EvidenceStore(p.evidence)
        bundle = store.open_bundle(incident, actor="aiir-demo", host=socket.gethostname(),
                                   context={"target": target.ref})
        for f in files:
            bundle.add_file(f, f"target/{f.name}", category="target_state", description="Kubernetes target state")
        manifest = bundle.seal(load_or_create_signing_key())
        verified = verify_bundle(bundle.path)
        _item(f"{len(manifest['files'])} files sealed in {bundle.path}; verified: {verified.ok}")
        import yaml

        logs = yaml.safe_load((snap / "pod-logs.yaml").read_text())
        unavailable = sum(1 for v in logs["pods"].values() if "unavailable" in v)
        _item(f"pod logs: {unavailable} of {len(logs['pods'])} unavailable (no kubelet ran the pods) — said so in "
              "pod-logs.yaml, not left out silently")

        log("block the abusive client (AuthorizationPolicy), quarantine (deny-all NetworkPolicy), restore")
        blocked = target.block_clients(["merchant-17"], reason=f"incident {incident}")
        _item(f"blocked {blocked.blocked_clients} by header {target.client_header}")
        q = target.isolate(quarantine=True, reason=f"incident {incident}: quarantine")
        _item(f"{q.mode}: NetworkPolicy {q.extra['quarantine_policy']} denies all ingress and egress")
        target.restore(reason="quarantine lifted, isolation lifted")
        target.isolate(reason=f"incident {incident}: keep v1 serving until the rollback")

        log("roll back the primary Deployment to revision 1 (as `kubectl rollout undo` does) and wait for it")
        t0 = time.perf_counter()
        rb = target.rollback("1", reason=f"incident {incident}: back to last-known-good v1")
        _item(f"rollout started: settled={rb.settled} ({rb.pending})")
        rb = target.wait_settled(timeout=120, poll=0.2)
        rollback_s = time.perf_counter() - t0
        final = target.restore(reason=f"incident {incident}: recovered on v1")
        _item(f"rollout complete in {rollback_s:.1f} s; revisions now "
              f"{[(h['revision'], 'v' + str(h['version'])) for h in rb.extra['rollout_history']]}")
        _item(f"{final.mode}: {_routes(final)}; primary v{final.extra['primary_version']}")

        out = {
            "incident_id": incident, "cluster": {"server": cluster.server, "kubeconfig": str(cluster.kubeconfig),
                                                 "start_s": cluster.started_s, "build_or_cache_s": round(build_s, 1)},
            "contained_mode": contained.mode, "contain_to_settled_ms": round(contain_s * 1000, 1),
            "evidence_bundle": str(bundle.path), "evidence_files": len(manifest["files"]),
            "evidence_verified": verified.ok, "rollback_to_settled_s": round(rollback_s, 2),
            "serving_now": {"mode": final.mode, "routes": [r.__dict__ for r in final.routes],
                            "primary_version": final.extra["primary_version"]},
            "cannot_show": LIMITS,
        }
        log("done")
        print(json.dumps(out, indent=2, default=str), flush=True)
        print(f"\nWhat this demo cannot show: {LIMITS}.", flush=True)
        if keep_running:
            from aiir import runtime

            runtime.hold_until_interrupted(f"\nThe cluster keeps running: KUBECONFIG={cluster.kubeconfig} kubectl "
                                           f"-n {NAMESPACE} get deploy,rs,svc,virtualservices,networkpolicies\n"
                                           "Ctrl-C stops it.")
        return out
    finally:
        if target is not None:
            target.close()
        if readiness is not None:
            readiness.stop()
        api.close()
        cluster.stop()


def _routes(state) -> str:
    return ", ".join(f"v{r.version} {r.share:.0%}" for r in state.routes) or "no traffic"


def _route_to(api, subset: str) -> None:
    """The nightly deploy also moves the VirtualService to the new version (as a CD pipeline would)."""
    from kubernetes import client

    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "networking.istio.io", "v1beta1", NAMESPACE, "virtualservices", MODEL,
        {"spec": {"http": [{"name": "default", "timeout": "2s",
                            "route": [{"destination": {"host": MODEL, "subset": subset}, "weight": 100}]}]}})


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("AIIR_HOME", str(Path.cwd() / ".aiir"))
    run()
