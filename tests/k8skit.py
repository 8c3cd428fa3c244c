"""The one real Kubernetes control plane of a test session (etcd + kube-apiserver + kube-controller-manager on free
127.0.0.1 ports, from scripts/k8s/), Istio's CRDs installed, pods marked Ready by a kubelet stand-in. Shared by
tests/k8s and the Kubernetes end-to-end test through the root conftest; stopped by pid at the end."""

from __future__ import annotations

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
