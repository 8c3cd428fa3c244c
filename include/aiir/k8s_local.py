"""A real Kubernetes control plane on 127.0.0.1 for the tests and ``aiir demo run --target kubernetes``.

``scripts/k8s/build.sh`` builds kube-apiserver and kube-controller-manager from Debian's own Kubernetes 1.20
source (binaries cached in ``${AIIR_K8S_CACHE:-/var/cache/aiir/k8s}/bin``); ``scripts/k8s/cluster.sh`` starts
etcd + kube-apiserver (TLS, token auth, RBAC) + kube-controller-manager. This module drives those scripts on free
ports, stops the processes by their pid files, installs Istio's CRDs (VirtualService, AuthorizationPolicy: the API
objects only, there is no mesh), seeds a model's Deployments / Service / VirtualService, and stands in for the
kubelet: :class:`PodReadiness` marks the model's pods Running and Ready through the ``pods/status`` subresource,
so the real deployment and ReplicaSet controllers see replicas become available and rollouts complete.

What this cannot show: no scheduler, kubelet or container runtime runs, so no container starts and the pods do
not really serve; NetworkPolicies are stored and validated but not enforced; Services route nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiir.errors import TargetError

REPO = Path(__file__).resolve().parents[2]
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")


def cache_dir() -> Path:
    return Path(os.environ.get("AIIR_K8S_CACHE") or "/var/cache/aiir/k8s")


def bin_dir() -> Path:
    return cache_dir() / "bin"


def scripts_dir() -> Path:
    return Path(os.environ.get("AIIR_K8S_SCRIPTS") or REPO / "scripts" / "k8s")


def missing_binaries() -> list[str]:
    b = bin_dir()
    return [n for n in BINARIES if not os.access(b / n, os.X_OK)]


def build_impossible() -> str | None:
    """Why scripts/k8s/build.sh cannot run on this machine, or None (it can, or already did)."""
    if not missing_binaries():
        return None
    if not (scripts_dir() / "build.sh").exists():
        return f"{scripts_dir() / 'build.sh'} not found"
    if not Path("/etc/apt/sources.list.d/debian.sources").exists():
        return "not a Debian machine with deb822 apt sources (/etc/apt/sources.list.d/debian.sources)"
    for tool in ("apt-get", "dpkg-deb", "openssl", "curl", "flock"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def build(*, log: Callable[[str], None] | None = None, timeout: float = 3600) -> Path:
    """Run scripts/k8s/build.sh (a no-op once built); return the bin dir."""
    if not missing_binaries():
        return bin_dir()
    why = build_impossible()
    if why:
        raise TargetError(f"cannot build the local Kubernetes control plane: {why}")
    if log:
        log(f"building kube-apiserver + kube-controller-manager into {bin_dir()} (once per machine, ~7 min)")
    r = subprocess.run(["bash", str(scripts_dir() / "build.sh"), str(cache_dir())], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0 or missing_binaries():
        raise TargetError(f"scripts/k8s/build.sh failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
    return bin_dir()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager on free 127.0.0.1 ports, state in ``state_dir``."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.ports: dict[str, int] = {}
        self.started_s: float | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['KUBE_PORT']}"

    def pids(self) -> dict[str, int]:
        out = {}
        for n in BINARIES:
            p = self.state_dir / f"{n}.pid"
            if p.exists():
                out[n] = int(p.read_text().strip())
        return out

    def start(self, *, timeout: float = 120) -> LocalCluster:
        if missing_binaries():
            raise TargetError(f"kube binaries missing in {bin_dir()} ({', '.join(missing_binaries())}): run "
                              "scripts/k8s/build.sh")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {k: _free_port() for k in ("ETCD_PORT", "ETCD_PEER_PORT", "KUBE_PORT", "KCM_PORT")}
        t0 = time.monotonic()
        env = {**os.environ, **{k: str(v) for k, v in self.ports.items()}}
        r = subprocess.run(["bash", str(scripts_dir() / "cluster.sh"), "start", str(self.state_dir), str(bin_dir())],
                           capture_output=True, text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            self.stop()
            raise TargetError(f"scripts/k8s/cluster.sh start failed: {(r.stderr or r.stdout)[-2000:]}")
        try:
            self._wait_controllers(timeout=timeout)
        except Exception:
            self.stop()
            raise
        self.started_s = round(time.monotonic() - t0, 2)
        return self

    def _wait_controllers(self, *, timeout: float) -> None:
        """Ready when the deployment controller acts: the default namespace exists and a probe Deployment gets
        a ReplicaSet."""
        from kubernetes import client

        api = self.api_client()
        apps = client.AppsV1Api(api)
        deadline = time.monotonic() + timeout
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "aiir-probe"},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"aiir-probe": "1"}},
                         "template": {"metadata": {"labels": {"aiir-probe": "1"}},
                                      "spec": {"containers": [{"name": "p", "image": "probe"}]}}}}
        while True:
            try:
                apps.create_namespaced_deployment("kube-system", body)
                break
            except client.exceptions.ApiException as exc:
                if exc.status == 409:
                    break
                if time.monotonic() > deadline:
                    raise TargetError(f"local cluster: cannot create a probe Deployment ({exc.status})") from None
                time.sleep(0.2)
        while time.monotonic() < deadline:
            if apps.list_namespaced_replica_set("kube-system", label_selector="aiir-probe=1").items:
                apps.delete_namespaced_deployment("aiir-probe", "kube-system")
                api.close()
                return
            time.sleep(0.2)
        api.close()
        raise TargetError(f"local cluster: the deployment controller did not act within {timeout:g}s; see "
                          f"{self.state_dir / 'kube-controller-manager.log'}")

    def api_client(self, *, token: str | None = None):
        """An ApiClient as the admin (system:masters), or with ``token`` (a ServiceAccount's)."""
        from kubernetes import client, config

        if token is None:
            return config.new_client_from_config(str(self.kubeconfig))
        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.state_dir / "pki" / "serving" / "apiserver.crt")
        cfg.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(cfg)

    def stop(self) -> None:
        """Stop the three processes by their pid files (cluster.sh stop)."""
        subprocess.run(["bash", str(scripts_dir() / "cluster.sh"), "stop", str(self.state_dir)],
                       capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- the kubelet stand-in
class PodReadiness:
    """Marks pods Running and Ready through ``pods/status`` (what a kubelet reports), after ``delay`` seconds;
    ``pause()`` holds new pods Pending (to watch a rollout in progress)."""

    def __init__(self, api_client, namespaces: list[str] | None = None, *, delay: float = 0.0, poll: float = 0.2):
        self.api = api_client
        self.namespaces = list(namespaces) if namespaces else None  # None: every namespace but kube-system
        self.delay, self.poll = float(delay), float(poll)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self.marked = 0

    def start(self) -> PodReadiness:
        self._thread = threading.Thread(target=self._loop, name="aiir-k8s-pod-readiness", daemon=True)
        self._thread.start()
        return self

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        while not self._stop.is_set():
            if not self._paused.is_set():
                try:
                    self.mark(core, self.namespaces)
                except Exception:  # the cluster stopping under us; try again next round
                    pass
            self._stop.wait(self.poll)

    def mark(self, core, namespaces: list[str] | None = None) -> int:
        """One pass: every not-yet-Ready pod older than ``delay`` marked Running + Ready; returns how many."""
        from datetime import UTC, datetime

        n = 0
        now = datetime.now(UTC)
        if namespaces is None:
            pods = [p for p in core.list_pod_for_all_namespaces().items if p.metadata.namespace != "kube-system"]
        else:
            pods = [p for ns in namespaces for p in core.list_namespaced_pod(ns).items]
        for pod in pods:
            namespace = pod.metadata.namespace
            if pod.metadata.deletion_timestamp is not None:
                continue
            ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
            if ready:
                continue
            created = pod.metadata.creation_timestamp
            if created is not None and (now - created).total_seconds() < self.delay:
                continue
            stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            conds = [{"type": t, "status": "True", "lastTransitionTime": stamp}
                     for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
            statuses = [{"name": c.name, "ready": True, "restartCount": 0, "image": c.image, "imageID": "",
                         "started": True, "state": {"running": {"startedAt": stamp}}}
                        for c in pod.spec.containers]
            body = {"status": {"phase": "Running", "conditions": conds, "containerStatuses": statuses,
                               "podIP": "10.244.0.1", "startTime": stamp}}
            try:
                core.patch_namespaced_pod_status(pod.metadata.name, namespace, body)
                n += 1
            except client_errors() as exc:  # deleted or changed meanwhile
                if getattr(exc, "status", None) not in (404, 409):
                    raise
        self.marked += n
        return n


def client_errors():
    from kubernetes.client.exceptions import ApiException

    return ApiException


# --------------------------------------------------------------------------- Istio's CRDs (objects only)
def _crd(group: str, kind: str, plural: str, versions: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": v, "served": True, "storage": i == 0,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}
                              for i, v in enumerate(versions)]},
    }


ISTIO_CRDS = (
    ("networking.istio.io", "VirtualService", "virtualservices", ["v1beta1", "v1alpha3"]),
    ("security.istio.io", "AuthorizationPolicy", "authorizationpolicies", ["v1beta1"]),
)


def install_istio_crds(api_client, *, timeout: float = 30) -> list[str]:
    """Install Istio's VirtualService and AuthorizationPolicy CRDs; wait until the API serves them."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    names = []
    for group, kind, plural, versions in ISTIO_CRDS:
        try:
            ext.create_custom_resource_definition(_crd(group, kind, plural, versions))
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
        names.append(f"{plural}.{group}")
    deadline = time.monotonic() + timeout
    for group, _kind, plural, versions in ISTIO_CRDS:
        while True:
            try:
                res = custom.get_api_resources(group, versions[0])
                if any(r.name == plural for r in res.resources or []):
                    break
            except client.exceptions.ApiException:
                pass
            if time.monotonic() > deadline:
                raise TargetError(f"CRD {plural}.{group} not served after {timeout:g}s")
            time.sleep(0.2)
    return names


# --------------------------------------------------------------------------- a model on the cluster
def image_for(model: str, version: str, repo: str = "registry.example/aiir") -> str:
    """A deterministic image reference by digest for a model version (there is no registry: nothing pulls)."""
    digest = hashlib.sha256(f"{model}:{version}".encode()).hexdigest()
    return f"{repo}/{model}@sha256:{digest}"


def deployment_manifest(model: str, name: str, version: str, *, track: str, replicas: int = 2,
                        namespace: str = "default", configmap: str | None = None) -> dict[str, Any]:
    sel = {"app.kubernetes.io/name": model, "aiir.io/track": track}
    spec: dict[str, Any] = {"containers": [{"name": "model", "image": image_for(model, version),
                                             "ports": [{"containerPort": 8080}],
                                             "env": [{"name": "MODEL_VERSION", "value": version}]}]}
    if configmap:
        spec["volumes"] = [{"name": "config", "configMap": {"name": configmap}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "config", "mountPath": "/etc/model"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": model, "aiir.io/role": track},
                     "annotations": {"kubernetes.io/change-cause": f"deploy {model} v{version}"}},
        "spec": {"replicas": replicas, "revisionHistoryLimit": 10, "selector": {"matchLabels": sel},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {**sel, "aiir.io/version": version}}, "spec": spec}},
    }


def seed_model(api_client, model: str, *, namespace: str = "default", primary_version: str = "2",
               fallback_version: str = "1", replicas: int = 2, virtual_service: bool = False) -> dict[str, Any]:
    """Deployments ``<model>`` (primary) and ``<model>-fallback`` (last-known-good), a ConfigMap both mount, the
    Service ``<model>`` and, with ``virtual_service``, an Istio VirtualService routing 100 % to the primary's
    subset. With a VirtualService the Service selects every pod of the model (Istio subsets pick the version);
    without, it selects the primary Deployment's pods."""
    from kubernetes import client

    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    if namespace != "default":
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
    cm = f"{model}-config"
    # Not labelled with the model: the snapshot finds it because the pods mount it.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": cm}, "data": {"threshold": "0.5",
                                                                                     "model": model}})
    apps.create_namespaced_deployment(namespace, deployment_manifest(model, model, primary_version, track="primary",
                                                                     replicas=replicas, namespace=namespace,
                                                                     configmap=cm))
    apps.create_namespaced_deployment(namespace, deployment_manifest(model, f"{model}-fallback", fallback_version,
                                                                     track="fallback", replicas=replicas,
                                                                     namespace=namespace, configmap=cm))
    selector = {"app.kubernetes.io/name": model} if virtual_service else \
        {"app.kubernetes.io/name": model, "aiir.io/track": "primary"}
    core.create_namespaced_service(namespace, {
        "metadata": {"name": model, "labels": {"app.kubernetes.io/name": model}},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    if virtual_service:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "networking.istio.io", "v1beta1", namespace, "virtualservices", {
                "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": model, "labels": {"app.kubernetes.io/name": model}},
                "spec": {"hosts": [model],
                         "http": [{"name": "default", "timeout": "2s",
                                   "route": [{"destination": {"host": model, "subset": f"v{primary_version}"},
                                              "weight": 100}]}]}})
    return {"model": model, "namespace": namespace, "primary": model, "fallback": f"{model}-fallback",
            "service": model, "virtual_service": model if virtual_service else None}


def deploy_version(api_client, deployment: str, model: str, version: str, *, namespace: str = "default") -> None:
    """A normal deploy: a new pod template (version label, image, env) on the Deployment -> a new revision."""
    from kubernetes import client

    apps = client.AppsV1Api(api_client)
    d = apps.read_namespaced_deployment(deployment, namespace)
    tpl = d.spec.template
    tpl.metadata.labels["aiir.io/version"] = version
    c = tpl.spec.containers[0]
    c.image = image_for(model, version)
    c.env = [client.V1EnvVar(name="MODEL_VERSION", value=version)]
    ann = dict(d.metadata.annotations or {})
    ann["kubernetes.io/change-cause"] = f"deploy {model} v{version}"
    d.metadata.annotations = ann
    apps.replace_namespaced_deployment(deployment, namespace, d)


def wait_rollout(api_client, deployment: str, *, namespace: str = "default", timeout: float = 60) -> float:
    """Seconds until the Deployment's rollout completed (kubectl rollout status)."""
    from kubernetes import client

    from aiir.targets.k8s_builders import rollout_status

    apps = client.AppsV1Api(api_client)
    t0 = time.monotonic()
    while True:
        raw = apps.read_namespaced_deployment(deployment, namespace, _preload_content=False)
        import json

        done, why = rollout_status(json.loads(raw.data))
        if done:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TargetError(f"rollout of {deployment} not done after {timeout:g}s: {why}")
        time.sleep(0.1)
