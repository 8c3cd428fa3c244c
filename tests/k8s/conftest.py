"""tests/k8s: the session's real control plane (fixture ``k8s``, tests/k8skit.py). Each test gets its own
namespace with two seeded models:

- ``fraud`` (Istio): Deployments ``fraud`` (primary, v2) and ``fraud-fallback`` (v1), a Service over both, a
  VirtualService routing 100 % to subset v2;
- ``churn`` (no mesh): the same Deployments and a Service whose selector picks the primary's pods.
"""

from __future__ import annotations

import itertools
import time

import pytest

from aiir import k8s_local

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
