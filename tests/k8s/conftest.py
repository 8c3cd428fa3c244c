"""One real Kubernetes control plane per test session (etcd + kube-apiserver + kube-controller-manager on free
127.0.0.1 ports, from scripts/k8s/), Istio's CRDs installed, pods marked Ready by a kubelet stand-in. Each test
gets its own namespace with two seeded models:

- ``fraud`` (Istio): Deployments ``fraud`` (primary, v2) and ``fraud-fallback`` (v1), a Service over both, a
  VirtualService routing 100 % to subset v2;
- ``churn`` (no mesh): the same Deployments and a Service whose selector picks the primary's pods.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import pytest

from aiir import k8s_local


@dataclass
class Cluster:
    local: k8s_local.LocalCluster
    api: Any
    readiness: k8s_local.PodReadiness
    start_s: float
    build_s: float


@pytest.fixture(scope="session")
def k8s():
    why = k8s_local.build_impossible()
    if why:
        pytest.skip(f"no local Kubernetes control plane can be built here: {why}")
    import tempfile

    t0 = time.monotonic()
    k8s_local.build(log=print)  # a no-op when cached (CI runs scripts/k8s/build.sh first)
    build_s = time.monotonic() - t0
    state = tempfile.mkdtemp(prefix="aiir-k8s-")
    local = k8s_local.LocalCluster(state).start()
    api = local.api_client()
    try:
        k8s_local.install_istio_crds(api)
        readiness = k8s_local.PodReadiness(api).start()
    except Exception:
        api.close()
        local.stop()
        raise
    try:
        yield Cluster(local, api, readiness, local.started_s or 0.0, build_s)
    finally:
        readiness.stop()
        api.close()
        local.stop()
        import shutil

        shutil.rmtree(state, ignore_errors=True)


_ns = itertools.count(1)


@pytest.fixture
def ns(k8s) -> str:
    """A fresh namespace with the two seeded models, their rollouts complete."""
    name = f"t{next(_ns)}-{int(time.time() * 1000) % 100000}"
    k8s_local.seed_model(k8s.api, "fraud", namespace=name, virtual_service=True)
    k8s_local.seed_model(k8s.api, "churn", namespace=name, virtual_service=False)
    for d in ("fraud", "fraud-fallback", "churn", "churn-fallback"):
        k8s_local.wait_rollout(k8s.api, d, namespace=name, timeout=60)
    return name


@pytest.fixture
def target(k8s, ns):
    """A factory of targets on the admin client (the fixture closes them)."""
    from aiir.targets.kubernetes import KubernetesTarget

    made = []

    def make(name: str = "fraud", **opts) -> KubernetesTarget:
        t = KubernetesTarget(name, kubeconfig=str(k8s.local.kubeconfig), namespace=ns, **opts)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
