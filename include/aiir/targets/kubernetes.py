"""A model served on Kubernetes as a DeploymentTarget (the official ``kubernetes`` Python client).

What the target works on, in one namespace (names are options, defaults derived from the target name):

- the model's **Deployments**: every Deployment labelled ``app.kubernetes.io/name=<name>``; each pod template
  carries ``aiir.io/version=<model version>``. The **primary** is the Deployment named ``<name>`` (option
  ``deployment``); the **fallback** (last-known-good, kept warm) is the model's other Deployment (option
  ``fallback_deployment``, or the one labelled ``aiir.io/role=fallback`` when there are several).
- the **Service** ``<name>`` (option ``service``) the clients call;
- optionally an Istio **VirtualService** ``<name>`` (option ``virtual_service``) whose route destinations are
  the Service's subsets ``v<version>`` (option ``subset_prefix``; the DestinationRule defining them is yours).

Containment, in the moves incident responders reach for:

- **isolate**: with Istio (the ``virtualservices.networking.istio.io`` resource is served and the VirtualService
  exists) every HTTP rule's weights go to the fallback subset; without it the Service's selector is switched to
  the fallback Deployment's pod selector. **quarantine**: a deny-all NetworkPolicy on the model's pods, and with
  ``quarantine_scale_to_zero`` every model Deployment scaled to 0.
- **restore** reverses each of these exactly (the previous selector / HTTP rules and replica counts are kept in
  annotations); **rollback** writes a previous revision's pod template into the primary Deployment as
  ``kubectl rollout undo`` does (by model version, ``revision:N`` or image digest); **canary** by VirtualService
  weight, or without Istio by replica share between the primary and the canary Deployment behind one Service;
  **block_clients** with an Istio AuthorizationPolicy (DENY on the client-id header) where that CRD exists.

Every write is a patch carrying the resourceVersion it was built from; a 409 (someone else changed the object)
re-reads and rebuilds, at most ``max_conflict_retries`` times; a 422 becomes :class:`BadInput` naming the field.
All state is read back from the cluster: ``describe()`` reports the containment from the annotations and objects
aiir left, the routes from the VirtualService weights or from the ready replicas behind the Service, and
``settled=False`` with ``pending`` while a rollout is in progress.

The builders of every manifest and patch are pure functions in :mod:`aiir.targets.k8s_builders`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from aiir.errors import AiirError, BadInput, TargetError
from aiir.targets import k8s_builders as kb
from aiir.targets.base import DeploymentTarget, ServingState, TargetOption, TrafficRoute

ROLE_LABEL = "aiir.io/role"
_IN_CLUSTER_NS = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


@dataclass
class _View:
    """One consistent read of everything the target works on."""

    deployments: dict[str, dict[str, Any]]
    replicasets: list[dict[str, Any]]
    service: dict[str, Any]
    routing: str  # "virtualservice" | "service"
    vs: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None  # the quarantine NetworkPolicy
    block: dict[str, Any] | None = None  # the AuthorizationPolicy
    extra: dict[str, Any] = field(default_factory=dict)


class KubernetesTarget(DeploymentTarget):
    kind: ClassVar[str] = "kubernetes"
    title: ClassVar[str] = "Kubernetes Deployments + Service (Istio VirtualService when present)"
    requires: ClassVar[tuple[str, ...]] = ("kubernetes",)
    default_conn_id: ClassVar[str | None] = "kubernetes_default"
    # No "decisions": a model served on Kubernetes writes no aiir decision log this target can reach.
    # No "rate_limit": Kubernetes has no per-client rate limit (Istio needs an external rate-limit service).
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"isolate", "quarantine", "block_clients", "restore", "rollback", "canary", "snapshot"})
    options: ClassVar[tuple[TargetOption, ...]] = (
        TargetOption("kubeconfig", description="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"),
        TargetOption("kube_config", type="object", secret=True,
                     description="inline kubeconfig (JSON/YAML text or object), instead of a file"),
        TargetOption("context", description="kubeconfig context (default: its current context)"),
        TargetOption("in_cluster", type="boolean", default=False,
                     description="use the pod's service account (running inside the cluster)"),
        TargetOption("disable_verify_ssl", type="boolean", default=False,
                     description="do not verify the API server's certificate"),
        TargetOption("namespace", description="namespace of the model (default: the context's, else 'default')"),
        TargetOption("deployment", description="primary Deployment (default: the target name)"),
        TargetOption("fallback_deployment",
                     description="last-known-good Deployment (default: the model's other Deployment)"),
        TargetOption("service", description="Service the clients call (default: the target name)"),
        TargetOption("virtual_service", description="Istio VirtualService (default: the target name, if present)"),
        TargetOption("routing", default="auto",
                     description="auto (VirtualService when Istio serves it and it exists), virtualservice, service"),
        TargetOption("app_label", default="app.kubernetes.io/name",
                     description="label whose value (the target name) marks the model's Deployments and pods"),
        TargetOption("version_label", default="aiir.io/version",
                     description="pod-template label carrying the model version"),
        TargetOption("subset_prefix", default="v", description="VirtualService subset of version X: <prefix>X"),
        TargetOption("container", description="container whose image a digest rollback sets (default: first)"),
        TargetOption("quarantine_scale_to_zero", type="boolean", default=False,
                     description="quarantine also scales every model Deployment to 0 (restore scales back)"),
        TargetOption("quarantine_policy", description="NetworkPolicy name (default: aiir-quarantine-<name>)"),
        TargetOption("block_policy", description="AuthorizationPolicy name (default: aiir-block-<name>)"),
        TargetOption("client_header", default="x-client-id",
                     description="request header carrying the client id (block_clients)"),
        TargetOption("timeout", type="number", default=10.0, description="seconds per API call"),
        TargetOption("connect_timeout", type="number", default=3.0, description="seconds to connect"),
        TargetOption("max_conflict_retries", type="integer", default=5,
                     description="re-reads after a 409 conflict before giving up"),
    )

    # ------------------------------------------------------------------ configuration
    @classmethod
    def options_from_connection(cls, *, host=None, port=None, schema=None, login=None, password=None,
                                extra=None) -> dict[str, Any]:
        """The cncf-kubernetes provider's connection (``kubernetes_default``): extras ``kube_config_path``,
        ``kube_config`` (inline), ``namespace``, ``cluster_context``, ``in_cluster``, ``disable_verify_ssl``
        (also with the old ``extra__kubernetes__`` prefix); any other declared option from the extras too."""
        ex = {}
        for k, v in (extra or {}).items():
            ex[k.removeprefix("extra__kubernetes__")] = v
        opts = super().options_from_connection(extra=ex)
        mapping = {"kube_config_path": "kubeconfig", "cluster_context": "context"}
        for src, dst in mapping.items():
            if ex.get(src) not in (None, ""):
                opts[dst] = ex[src]
        for key in ("kube_config", "namespace"):
            if ex.get(key) not in (None, ""):
                opts[key] = ex[key]
        for key in ("in_cluster", "disable_verify_ssl", "quarantine_scale_to_zero"):
            if key in ex and ex[key] not in (None, ""):
                opts[key] = _truthy(ex[key])
        return {k: v for k, v in opts.items() if v not in (None, "")}

    def __init__(self, name: str, *, api_client: Any = None, kubeconfig: str | None = None,
                 kube_config: str | dict | None = None, context: str | None = None, in_cluster: bool = False,
                 disable_verify_ssl: bool = False, namespace: str | None = None, deployment: str | None = None,
                 fallback_deployment: str | None = None, service: str | None = None,
                 virtual_service: str | None = None, routing: str = "auto",
                 app_label: str = "app.kubernetes.io/name", version_label: str = "aiir.io/version",
                 subset_prefix: str = "v", container: str | None = None, quarantine_scale_to_zero: bool = False,
                 quarantine_policy: str | None = None, block_policy: str | None = None,
                 client_header: str = "x-client-id", timeout: float = 10.0, connect_timeout: float = 3.0,
                 max_conflict_retries: int = 5):
        super().__init__(name)
        if routing not in ("auto", "virtualservice", "service"):
            raise BadInput("routing", f"expected auto, virtualservice or service, got {routing!r}")
        if sum(1 for o in (kubeconfig, kube_config, _truthy(in_cluster) or None) if o) > 1:
            raise BadInput("kubeconfig", "kubeconfig, kube_config and in_cluster are mutually exclusive")
        self._api_client = api_client
        self._owns_client = api_client is None
        self.kubeconfig, self.kube_config, self.context = kubeconfig, kube_config, context
        self.in_cluster, self.disable_verify_ssl = _truthy(in_cluster), _truthy(disable_verify_ssl)
        self._namespace = namespace
        self.deployment = deployment or name
        self.fallback_deployment = fallback_deployment
        self.service = service or name
        self.virtual_service = virtual_service or name
        self.routing = routing
        self.app_label, self.version_label, self.subset_prefix = app_label, version_label, subset_prefix
        self.container = container
        self.quarantine_scale_to_zero = _truthy(quarantine_scale_to_zero)
        self.quarantine_policy = quarantine_policy or f"aiir-quarantine-{name}"
        self.block_policy = block_policy or f"aiir-block-{name}"
        self.client_header = client_header
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        self.max_conflict_retries = int(max_conflict_retries)
        self.conflicts_retried = 0  # 409s absorbed by re-reading (for tests and logs)
        self._crds: dict[str, str | None] | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._api()
            if self._namespace is None:
                self._namespace = "default"
        return self._namespace

    def _api(self):
        if self._api_client is not None:
            return self._api_client
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        try:
            if self.in_cluster:
                config.load_incluster_config(client_configuration=cfg)
                if self._namespace is None and Path(_IN_CLUSTER_NS).exists():
                    self._namespace = Path(_IN_CLUSTER_NS).read_text().strip()
            elif self.kube_config:
                d = self.kube_config
                if isinstance(d, str):
                    import yaml

                    try:
                        d = yaml.safe_load(d)
                    except yaml.YAMLError as exc:
                        raise BadInput("kube_config", f"not JSON/YAML: {exc}") from None
                if not isinstance(d, dict):
                    raise BadInput("kube_config", "expected a kubeconfig object")
                config.load_kube_config_from_dict(d, context=self.context, client_configuration=cfg)
                if self._namespace is None:
                    self._namespace = _context_namespace(d, self.context)
            else:
                import os

                path = self.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or \
                    str(Path.home() / ".kube" / "config")
                if not Path(path).is_file():
                    raise BadInput("kubeconfig", f"{path}: no such kubeconfig file")
                config.load_kube_config(config_file=path, context=self.context, client_configuration=cfg)
                if self._namespace is None:
                    import yaml

                    self._namespace = _context_namespace(yaml.safe_load(Path(path).read_text()) or {},
                                                         self.context)
        except ConfigException as exc:
            raise BadInput("kubeconfig" if not self.in_cluster else "in_cluster", str(exc)) from None
        if self.disable_verify_ssl:
            cfg.verify_ssl = False
        self._api_client = client.ApiClient(cfg)
        self._owns_client = True
        return self._api_client

    def close(self) -> None:
        if self._owns_client and self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:  # a pool already closed
                pass
            self._api_client = None

    def _apis(self, name: str):
        from kubernetes import client

        return getattr(client, name)(self._api())

    def _call(self, what: str, fn, *args, field_hint: str | None = None, **kwargs) -> Any:
        """One API call, its JSON body as a dict; API errors mapped to aiir errors (409 passes through)."""
        from kubernetes.client.exceptions import ApiException

        try:
            resp = fn(*args, _preload_content=False, _request_timeout=(self.connect_timeout, self.timeout), **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise self._error(what, exc, field_hint) from None
        except AiirError:
            raise
        except Exception as exc:  # urllib3 connection / timeout errors
            raise TargetError(f"{self.ref}: Kubernetes API unreachable during {what} "
                              f"({type(exc).__name__}: {str(exc)[:300]})") from None
        data = resp.data
        return json.loads(data) if data else {}

    def _error(self, what: str, exc, field_hint: str | None) -> AiirError:
        try:
            body = json.loads(exc.body or "{}")
        except (TypeError, ValueError):
            body = {}
        msg = str(body.get("message") or exc.reason or "")[:500]
        status = exc.status
        if status == 422:
            causes = (body.get("details") or {}).get("causes") or []
            fields = ", ".join(sorted({str(c.get("field")) for c in causes if c.get("field")})) or "request"
            where = f"{self.ref} {what}: {fields}" + (f" (option {field_hint})" if field_hint else "")
            return BadInput(where, msg)
        if status == 401:
            return TargetError(f"{self.ref}: the Kubernetes API refused the credentials during {what} (401: {msg})")
        if status == 403:
            return TargetError(f"{self.ref}: not allowed to {what} in namespace '{self.namespace}' (403: {msg}); "
                               "the Role in deploy/kubernetes/rbac.yaml grants exactly what this target needs")
        if status == 404:
            return TargetError(f"{self.ref}: {what}: not found (404: {msg})")
        return TargetError(f"{self.ref}: {what} failed (HTTP {status}: {msg})")

    def _get(self, what: str, fn, *args, missing_ok: bool = True, **kwargs) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(what, fn, *args, **kwargs)
        except TargetError as exc:
            if missing_ok and "(404:" in str(exc):
                return None
            raise
        except ApiException as exc:  # pragma: no cover - 409 on a read does not happen
            raise self._error(what, exc, None) from None

    def _update(self, what: str, read, build, write, *, field_hint: str | None = None) -> dict[str, Any] | None:
        """Read, build a patch from what was read, write it at that resourceVersion; on 409 re-read and rebuild
        (bounded). ``build`` returning None means nothing to change (idempotent)."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(self.max_conflict_retries + 1):
            obj = read()
            body = build(obj)
            if body is None:
                return obj
            try:
                return write(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise self._error(what, exc, field_hint) from None
                if attempt >= self.max_conflict_retries:
                    raise TargetError(f"{self.ref}: {what}: still conflicting after {attempt + 1} attempts "
                                      f"(409: the object keeps changing under us)") from None
                self.conflicts_retried += 1
                time.sleep(min(0.05 * (2 ** attempt), 1.0))
        return None  # unreachable

    def _write(self, what: str, fn, *args, field_hint: str | None = None, **kwargs) -> dict[str, Any]:
        """A write whose 409 is an error to report (creates, deletes)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(what, fn, *args, field_hint=field_hint, **kwargs)
        except ApiException as exc:
            raise self._error(what, exc, field_hint) from None

    # ------------------------------------------------------------------ Istio discovery
    def _crd_versions(self) -> dict[str, str | None]:
        """The served version of Istio's VirtualService and AuthorizationPolicy resources, or None each.
        Found through API discovery (allowed to every authenticated user: no cluster-wide RBAC needed)."""
        if self._crds is not None:
            return self._crds
        found: dict[str, str | None] = {"virtualservices": None, "authorizationpolicies": None}
        groups = self._call("discover API groups", self._apis("ApisApi").get_api_versions).get("groups") or []
        wanted = {kb.ISTIO_NETWORKING: "virtualservices", kb.ISTIO_SECURITY: "authorizationpolicies"}
        custom = self._apis("CustomObjectsApi")
        for g in groups:
            plural = wanted.get(g.get("name"))
            if not plural:
                continue
            versions = [v.get("version") for v in g.get("versions") or []]
            pref = (g.get("preferredVersion") or {}).get("version")
            for v in [pref] + [x for x in versions if x != pref]:
                res = self._get(f"discover {g['name']}/{v}", custom.get_api_resources, g["name"], v) or {}
                if any(r.get("name") == plural for r in res.get("resources") or []):
                    found[plural] = v
                    break
        self._crds = found
        return found

    # ------------------------------------------------------------------ reads
    def _vs_api_args(self) -> tuple[str, str, str, str]:
        v = self._crd_versions()["virtualservices"]
        return kb.ISTIO_NETWORKING, v or "v1beta1", self.namespace, "virtualservices"

    def _read_service(self) -> dict[str, Any]:
        svc = self._get(f"get Service {self.service}", self._apis("CoreV1Api").read_namespaced_service,
                        self.service, self.namespace)
        if svc is None:
            raise BadInput("service", f"Service '{self.service}' not found in namespace '{self.namespace}'")
        return svc

    def _read_vs(self) -> dict[str, Any] | None:
        if self.routing == "service" or not self._crd_versions()["virtualservices"]:
            if self.routing == "virtualservice":
                raise BadInput("routing", "virtualservice routing asked for, but the cluster serves no "
                                          "virtualservices.networking.istio.io resource (Istio not installed)")
            return None
        g, v, ns, plural = self._vs_api_args()
        vs = self._get(f"get VirtualService {self.virtual_service}",
                       self._apis("CustomObjectsApi").get_namespaced_custom_object, g, v, ns, plural,
                       self.virtual_service)
        if vs is None and self.routing == "virtualservice":
            raise BadInput("virtual_service", f"VirtualService '{self.virtual_service}' not found in namespace "
                                              f"'{self.namespace}'")
        return vs

    def _read_deployments(self) -> dict[str, dict[str, Any]]:
        apps = self._apis("AppsV1Api")
        items = self._call("list Deployments", apps.list_namespaced_deployment, self.namespace,
                           label_selector=f"{self.app_label}={self.name}").get("items") or []
        deps = {d["metadata"]["name"]: d for d in items}
        if self.deployment not in deps:
            d = self._get(f"get Deployment {self.deployment}", apps.read_namespaced_deployment, self.deployment,
                          self.namespace)
            if d is None:
                raise BadInput("deployment", f"Deployment '{self.deployment}' not found in namespace "
                                             f"'{self.namespace}'")
            deps[self.deployment] = d
        return deps

    def _read_replicasets(self) -> list[dict[str, Any]]:
        return self._call("list ReplicaSets", self._apis("AppsV1Api").list_namespaced_replica_set, self.namespace,
                          label_selector=f"{self.app_label}={self.name}").get("items") or []

    def _read_policy(self) -> dict[str, Any] | None:
        return self._get(f"get NetworkPolicy {self.quarantine_policy}",
                         self._apis("NetworkingV1Api").read_namespaced_network_policy, self.quarantine_policy,
                         self.namespace)

    def _read_block(self) -> dict[str, Any] | None:
        v = self._crd_versions()["authorizationpolicies"]
        if not v:
            return None
        return self._get(f"get AuthorizationPolicy {self.block_policy}",
                         self._apis("CustomObjectsApi").get_namespaced_custom_object, kb.ISTIO_SECURITY, v,
                         self.namespace, "authorizationpolicies", self.block_policy)

    def _view(self) -> _View:
        deps = self._read_deployments()
        svc = self._read_service()
        vs = self._read_vs()
        return _View(deployments=deps, replicasets=self._read_replicasets(), service=svc,
                     routing="virtualservice" if vs is not None else "service", vs=vs,
                     policy=self._read_policy(), block=self._read_block())

    # ------------------------------------------------------------------ interpretation
    def _version_of(self, workload: dict[str, Any]) -> str | None:
        return kb.template_labels(workload).get(self.version_label)

    def _subset(self, version: str) -> str:
        return f"{self.subset_prefix}{version}"

    def _subset_version(self, subset: str) -> str:
        p = self.subset_prefix
        return subset[len(p):] if p and subset.startswith(p) else subset

    def _primary(self, view: _View) -> dict[str, Any]:
        return view.deployments[self.deployment]

    def _routing_obj(self, view: _View) -> dict[str, Any]:
        return view.vs if view.routing == "virtualservice" else view.service

    def _fallback(self, view: _View, version: str | None = None) -> dict[str, Any] | None:
        others = {n: d for n, d in view.deployments.items() if n != self.deployment}
        if version is not None:
            version = str(version)
            hits = {n: d for n, d in others.items() if self._version_of(d) == version}
            if not hits:
                known = {n: self._version_of(d) for n, d in view.deployments.items()}
                raise BadInput("fallback_version", f"no Deployment of model '{self.name}' other than the primary "
                                                   f"'{self.deployment}' runs version {version} (Deployments: "
                                                   f"{json.dumps(known, sort_keys=True)})")
            if self.fallback_deployment in hits:
                return hits[self.fallback_deployment]
            return hits[sorted(hits)[0]]
        if self.fallback_deployment:
            if self.fallback_deployment not in view.deployments:
                raise BadInput("fallback_deployment", f"Deployment '{self.fallback_deployment}' not found in "
                                                      f"namespace '{self.namespace}' with label "
                                                      f"{self.app_label}={self.name}")
            return view.deployments[self.fallback_deployment]
        if len(others) == 1:
            return next(iter(others.values()))
        tagged = [d for d in others.values() if kb.labels(d).get(ROLE_LABEL) == "fallback"]
        return tagged[0] if len(tagged) == 1 else None

    def _routes(self, view: _View) -> tuple[list[TrafficRoute], list[str]]:
        """Where traffic goes now, and what about it is pending."""
        pending: list[str] = []
        if view.routing == "virtualservice":
            routes = [TrafficRoute(self._subset_version(s), round(w / 100.0, 6))
                      for s, w in kb.vs_routes(view.vs or {}) if w > 0]
            return routes, pending
        selector = (view.service.get("spec") or {}).get("selector") or {}
        by_version: dict[str, float] = {}
        desired: dict[str, float] = {}
        for rs in view.replicasets:
            if not kb.selects(selector, kb.template_labels(rs)):
                continue
            v = self._version_of(rs) or "?"
            st = rs.get("status") or {}
            by_version[v] = by_version.get(v, 0) + int(st.get("readyReplicas") or 0)
            desired[v] = desired.get(v, 0) + int((rs.get("spec") or {}).get("replicas") or 0)
        for v in sorted(set(by_version) | set(desired)):
            if by_version.get(v, 0) != desired.get(v, 0):  # a scale up or down the controller is still doing
                pending.append(f"Service {self.service}: version {v} has {by_version.get(v, 0)} ready of "
                               f"{desired.get(v, 0)} desired pods")
        total = sum(by_version.values())
        if total == 0:
            if sum(desired.values()) > 0:
                pending.append(f"Service {self.service}: no ready pods behind its selector yet")
            by_version, total = desired, sum(desired.values())
        routes = [TrafficRoute(v, round(n / total, 6)) for v, n in sorted(by_version.items()) if n > 0] \
            if total else []
        return routes, pending

    def _state(self, view: _View) -> ServingState:
        primary = self._primary(view)
        routing_obj = self._routing_obj(view)
        record = kb.annotation_json(routing_obj, kb.A_CONTAINMENT) or {}
        last = kb.annotation_json(routing_obj, "aiir.io/last-action") or {}
        routes, pending = self._routes(view)
        if view.policy is not None:
            mode = "quarantined"
            record = kb.annotation_json(view.policy, kb.A_CONTAINMENT) or record
            routes = []
        elif record.get("mode") == "isolated":
            mode = "isolated"
        else:
            mode = "serving"
        fb = None
        if mode != "serving" and record.get("fallback_version"):
            fb = str(record["fallback_version"])
        else:
            try:
                d = self._fallback(view)
            except BadInput:
                d = None
            fb = self._version_of(d) if d is not None else None
        for d in view.deployments.values():
            done, why = kb.rollout_status(d)
            if not done:
                pending.append(why)
        deployments = []
        for n, d in sorted(view.deployments.items()):
            st = d.get("status") or {}
            deployments.append({
                "name": n, "version": self._version_of(d), "images": kb.images(d),
                "replicas": (d.get("spec") or {}).get("replicas"), "ready": int(st.get("readyReplicas") or 0),
                "available": int(st.get("availableReplicas") or 0), "updated": int(st.get("updatedReplicas") or 0),
                "revision": kb.annotations(d).get(kb.K8S_REVISION), "generation": d["metadata"].get("generation"),
                "observed_generation": st.get("observedGeneration"),
                "role": "primary" if n == self.deployment else kb.labels(d).get(ROLE_LABEL, "other"),
            })
        history = sorted(((kb.revision(rs), self._version_of(rs), kb.images(rs)) for rs in view.replicasets
                          if any(o.get("name") == self.deployment for o in rs["metadata"].get("ownerReferences") or [])),
                         key=lambda t: t[0])
        extra = {
            "namespace": self.namespace, "routing": view.routing, "service": self.service,
            "service_selector": (view.service.get("spec") or {}).get("selector") or {},
            "virtual_service": self.virtual_service if view.vs is not None else None,
            "primary_deployment": self.deployment, "primary_version": self._version_of(primary),
            "deployments": deployments,
            "rollout_history": [{"revision": r, "version": v, "images": i} for r, v, i in history],
            "quarantine_policy": self.quarantine_policy if view.policy is not None else None,
            "block_policy": self.block_policy if view.block is not None else None,
            "canary": kb.annotation_json(routing_obj, kb.A_CANARY),
            "last_rollback": kb.annotation_json(primary, kb.A_ROLLBACK),
        }
        reason = record.get("reason") if mode != "serving" else (last.get("reason") or "")
        updated = record.get("at") if mode != "serving" else (last.get("at") or "")
        return ServingState(target=self.ref, model=self.name, mode=mode, routes=routes, fallback_version=fb,
                            blocked_clients=kb.blocked_clients(view.block), rate_limits={}, reason=reason or "",
                            updated_at=updated or "", extra=extra, settled=not pending, pending="; ".join(pending))

    # ------------------------------------------------------------------ writes
    def _patch_service(self, what: str, build) -> None:
        core = self._apis("CoreV1Api")
        self._update(what, self._read_service, build,
                     lambda body: self._call(what, core.patch_namespaced_service, self.service, self.namespace,
                                             body))

    def _patch_vs(self, what: str, build) -> None:
        g, v, ns, plural = self._vs_api_args()
        custom = self._apis("CustomObjectsApi")

        def read():
            vs = self._read_vs()
            if vs is None:
                raise TargetError(f"{self.ref}: VirtualService '{self.virtual_service}' disappeared during {what}")
            return vs

        self._update(what, read, build,
                     lambda body: self._call(what, custom.patch_namespaced_custom_object, g, v, ns, plural,
                                             self.virtual_service, body))

    def _patch_deployment(self, name: str, what: str, build, *, field_hint: str | None = None) -> None:
        apps = self._apis("AppsV1Api")

        def read():
            d = self._get(f"get Deployment {name}", apps.read_namespaced_deployment, name, self.namespace)
            if d is None:
                raise BadInput("deployment", f"Deployment '{name}' not found in namespace '{self.namespace}'")
            return d

        self._update(what, read, build,
                     lambda body: self._call(what, apps.patch_namespaced_deployment, name, self.namespace, body,
                                             field_hint=field_hint),
                     field_hint=field_hint)

    def _last_action(self, view: _View, action: str, reason: str) -> None:
        rec = json.dumps({"action": action, "reason": reason, "at": _now()}, sort_keys=True)
        def build(o):
            return kb.annotate_patch(o, {"aiir.io/last-action": rec})

        if view.routing == "virtualservice":
            self._patch_vs(f"record {action} on VirtualService {self.virtual_service}", build)
        else:
            self._patch_service(f"record {action} on Service {self.service}", build)

    # ------------------------------------------------------------------ contract
    def describe(self) -> ServingState:
        return self._state(self._view())

    def isolate(self, *, fallback_version: str | None = None, quarantine: bool = False,
                reason: str = "") -> ServingState:
        view = self._view()
        if quarantine:
            self._quarantine(view, reason)
            return self.describe()
        fb = self._fallback(view, fallback_version)
        if fb is None:
            raise BadInput("fallback_version", f"model '{self.name}' has no fallback Deployment to isolate to: "
                                               "name fallback_version, or set the fallback_deployment option "
                                               f"(Deployments: {sorted(view.deployments)})")
        fb_version = self._version_of(fb)
        if not fb_version:
            raise BadInput("fallback_deployment", f"Deployment '{fb['metadata']['name']}' has no "
                                                  f"{self.version_label} label on its pod template")
        at = _now()
        rec = kb.containment_record("isolated", reason=reason, at=at, fallback_version=fb_version,
                                    primary_version=self._version_of(self._primary(view)),
                                    fallback_deployment=fb["metadata"]["name"], routing=view.routing)
        if view.routing == "virtualservice":
            subset = self._subset(fb_version)

            def build(vs):
                cur = kb.annotation_json(vs, kb.A_CONTAINMENT) or {}
                if cur.get("mode") == "isolated" and kb.vs_routes(vs) == [(subset, 100)]:
                    return None
                return kb.isolate_vs_patch(vs, self.service, subset, rec)

            self._patch_vs(f"isolate VirtualService {self.virtual_service} to subset {subset}", build)
        else:
            selector = kb.match_labels(fb)

            def build(svc):
                cur = kb.annotation_json(svc, kb.A_CONTAINMENT) or {}
                if cur.get("mode") == "isolated" and (svc.get("spec") or {}).get("selector") == selector:
                    return None
                return kb.isolate_service_patch(svc, selector, rec)

            self._patch_service(f"isolate Service {self.service} to Deployment {fb['metadata']['name']}", build)
        return self.describe()

    def _quarantine(self, view: _View, reason: str) -> None:
        at = _now()
        net = self._apis("NetworkingV1Api")
        if view.policy is None:
            body = kb.quarantine_network_policy(self.quarantine_policy, self.namespace, {self.app_label: self.name},
                                                reason=reason, at=at, model=self.name)
            from kubernetes.client.exceptions import ApiException

            try:
                self._call(f"create NetworkPolicy {self.quarantine_policy}", net.create_namespaced_network_policy,
                           self.namespace, body, field_hint="quarantine_policy")
            except ApiException as exc:  # 409 AlreadyExists: a concurrent quarantine won the race
                if exc.status != 409:
                    raise self._error("create NetworkPolicy", exc, "quarantine_policy") from None
        if self.quarantine_scale_to_zero:
            for name in sorted(view.deployments):
                def build(dep):
                    replicas = (dep.get("spec") or {}).get("replicas")
                    ann = kb.annotations(dep)
                    if kb.A_REPLICAS_BEFORE in ann and replicas == 0:
                        return None
                    before = ann.get(kb.A_REPLICAS_BEFORE, str(replicas if replicas is not None else 1))
                    return kb.scale_patch(dep, 0, annotations_={kb.A_REPLICAS_BEFORE: before})

                self._patch_deployment(name, f"scale Deployment {name} to 0", build)

    def restore(self, *, reason: str = "") -> ServingState:
        view = self._view()
        if view.policy is not None:
            self._delete(f"delete NetworkPolicy {self.quarantine_policy}",
                         self._apis("NetworkingV1Api").delete_namespaced_network_policy, self.quarantine_policy)
        for name, d in sorted(view.deployments.items()):
            if kb.A_REPLICAS_BEFORE not in kb.annotations(d):
                continue

            def build(dep):
                ann = kb.annotations(dep)
                if kb.A_REPLICAS_BEFORE not in ann:
                    return None
                try:
                    n = int(ann[kb.A_REPLICAS_BEFORE])
                except ValueError:
                    n = 1
                return kb.scale_patch(dep, n, annotations_={kb.A_REPLICAS_BEFORE: None})

            self._patch_deployment(name, f"scale Deployment {name} back", build)
        if view.block is not None:
            v = self._crd_versions()["authorizationpolicies"]
            self._delete(f"delete AuthorizationPolicy {self.block_policy}",
                         self._apis("CustomObjectsApi").delete_namespaced_custom_object, kb.ISTIO_SECURITY, v,
                         self.namespace, "authorizationpolicies", self.block_policy, ns_first=True)
        primary_version = self._version_of(self._primary(view))
        if view.routing == "virtualservice":
            def build(vs):
                rec = kb.annotation_json(vs, kb.A_CONTAINMENT) or {}
                return kb.restore_vs_patch(vs, host=self.service, primary_subset=self._subset(primary_version),
                                           primary_changed=rec.get("primary_version") not in (None,
                                                                                                primary_version))

            self._patch_vs(f"restore VirtualService {self.virtual_service}", build)
        else:
            def build(svc):
                rec = kb.annotation_json(svc, kb.A_CONTAINMENT) or {}
                old = rec.get("primary_version")
                retarget = (self.version_label, old, primary_version) if old and old != primary_version else None
                return kb.restore_service_patch(svc, retarget=retarget)

            self._patch_service(f"restore Service {self.service}", build)
        self._last_action(view, "restore", reason)
        return self.describe()

    def _delete(self, what: str, fn, *args, ns_first: bool = False) -> None:
        args = args if ns_first else (*args, self.namespace)
        try:
            self._write(what, fn, *args)
        except TargetError as exc:
            if "(404:" not in str(exc):
                raise

    def rollback(self, version: str, *, reason: str = "") -> ServingState:
        """Roll the primary Deployment to ``version``: a model version (the newest revision whose pod template
        carries it, else the template of another model Deployment running it), ``revision:N``, or an image
        digest (``sha256:…`` or ``image@sha256:…``; a digest found in no revision sets the image)."""
        version = str(version).strip()
        if not version:
            raise BadInput("version", "empty version")
        view = self._view()
        primary = self._primary(view)
        old_version = self._version_of(primary)
        template, source = self._rollback_source(view, primary, version)
        new_version = kb.template_labels({"spec": {"template": template}}).get(self.version_label)
        rec = {"version": new_version, "from_version": old_version, "source": source, "reason": reason,
               "at": _now()}

        def build(dep):
            tpl = kb.rollback_template(template, dep)
            if kb.same_template(tpl, (dep.get("spec") or {}).get("template") or {}):
                return None
            return kb.rollback_patch(dep, tpl, rec)

        self._patch_deployment(self.deployment, f"roll back Deployment {self.deployment} to {version}", build,
                               field_hint="version")
        view = self._view()
        record = kb.annotation_json(self._routing_obj(view), kb.A_CONTAINMENT) or {}
        contained = record.get("mode") == "isolated" or view.policy is not None
        if not contained and new_version:
            if view.routing == "virtualservice":
                subset = self._subset(new_version)

                def build_vs(vs):
                    if kb.vs_routes(vs) == [(subset, 100)] and kb.A_CANARY not in kb.annotations(vs):
                        return None
                    return kb.route_vs_patch(vs, self.service, [(subset, 100)], annotations_={kb.A_CANARY: None})

                self._patch_vs(f"route VirtualService {self.virtual_service} to {subset}", build_vs)
            else:
                def build_svc(svc):
                    sel = (svc.get("spec") or {}).get("selector") or {}
                    if sel.get(self.version_label) not in (None, new_version):
                        return kb.service_selector_patch(svc, {**sel, self.version_label: new_version})
                    return None

                self._patch_service(f"point Service {self.service} at version {new_version}", build_svc)
        self._last_action(view, "rollback", reason)
        return self.describe()

    def _rollback_source(self, view: _View, primary: dict[str, Any], version: str
                         ) -> tuple[dict[str, Any], str]:
        owned = [rs for rs in view.replicasets
                 if any(o.get("kind") == "Deployment" and o.get("name") == self.deployment
                        for o in rs["metadata"].get("ownerReferences") or [])]
        owned.sort(key=kb.revision, reverse=True)
        others = [d for n, d in sorted(view.deployments.items()) if n != self.deployment]

        def tpl(obj):
            return (obj.get("spec") or {}).get("template") or {}

        if version.startswith(("revision:", "rev:")):
            try:
                n = int(version.split(":", 1)[1])
            except ValueError:
                raise BadInput("version", f"expected revision:<number>, got {version!r}") from None
            for rs in owned:
                if kb.revision(rs) == n:
                    return tpl(rs), f"revision {n} (ReplicaSet {rs['metadata']['name']})"
            raise BadInput("version", f"Deployment '{self.deployment}' has no revision {n} (revisions: "
                                      f"{sorted(kb.revision(r) for r in owned)})")
        if "sha256:" in version:
            digest = version[version.index("sha256:"):]
            if len(digest) != 71 or any(c not in "0123456789abcdef" for c in digest[7:]):
                raise BadInput("version", f"not an image digest (sha256: and 64 hex digits): {version!r}")
            for rs in owned:
                if any(img.endswith(digest) for img in kb.images(rs)):
                    return tpl(rs), f"revision {kb.revision(rs)} (image {digest})"
            for d in others:
                if any(img.endswith(digest) for img in kb.images(d)):
                    return tpl(d), f"Deployment {d['metadata']['name']} (image {digest})"
            if "@" not in version:
                raise BadInput("version", f"no revision of Deployment '{self.deployment}' runs image {digest}; "
                                          "give the full image reference (repo@sha256:…) to set it")
            try:
                return kb.set_image_template(primary, self.container, version), f"image {version}"
            except KeyError:
                raise BadInput("container", f"no container '{self.container}' in Deployment "
                                            f"'{self.deployment}'") from None
            except ValueError as exc:
                raise BadInput("deployment", str(exc)) from None
        current = tpl(primary)
        if kb.template_labels(primary).get(self.version_label) == version:
            return current, "current template"
        for rs in owned:
            if self._version_of(rs) == version:
                return tpl(rs), f"revision {kb.revision(rs)} (ReplicaSet {rs['metadata']['name']})"
        for d in others:
            if self._version_of(d) == version:
                return tpl(d), f"Deployment {d['metadata']['name']}"
        known = sorted({v for v in [self._version_of(r) for r in owned] + [self._version_of(d) for d in others]
                        if v})
        raise BadInput("version", f"no revision of Deployment '{self.deployment}' and no other Deployment of "
                                  f"model '{self.name}' runs version {version} (known versions: {known})")

    def canary(self, version: str, share: float, *, reason: str = "") -> ServingState:
        version = str(version)
        try:
            share = float(share)
        except (TypeError, ValueError):
            raise BadInput("share", f"expected a number in [0, 1), got {share!r}") from None
        if not 0.0 <= share < 1.0:
            raise BadInput("share", f"expected a number in [0, 1), got {share} (1.0 is a rollback)")
        view = self._view()
        if view.policy is not None or (kb.annotation_json(self._routing_obj(view), kb.A_CONTAINMENT) or {}
                                       ).get("mode") == "isolated":
            raise TargetError(f"{self.ref}: contained; restore before starting a canary")
        primary = self._primary(view)
        pv = self._version_of(primary)
        if version == pv:
            raise BadInput("version", f"version {version} is already the primary")
        hits = [d for n, d in sorted(view.deployments.items()) if n != self.deployment
                and self._version_of(d) == version]
        if not hits:
            raise BadInput("version", f"no Deployment of model '{self.name}' runs version {version} (Deployments: "
                                      f"{ {n: self._version_of(d) for n, d in sorted(view.deployments.items())} })")
        cdep = hits[0]
        cname = cdep["metadata"]["name"]
        at = _now()
        if view.routing == "virtualservice":
            wp, wc = kb.split_weights(share)
            weights = [(self._subset(pv), wp)] + ([(self._subset(version), wc)] if wc else [])
            ann = {kb.A_CANARY: json.dumps({"version": version, "share": wc / 100.0, "requested_share": share,
                                            "mode": "weight", "reason": reason, "at": at}, sort_keys=True)
                   if wc else None}
            self._patch_vs(f"canary VirtualService {self.virtual_service}",
                           lambda vs: kb.route_vs_patch(vs, self.service, weights, annotations_=ann))
            self._last_action(view, "canary", reason)
            return self.describe()
        # Without a mesh: one Service over both Deployments, traffic in proportion to ready replicas.
        svc = view.service
        cur = kb.annotation_json(svc, kb.A_CANARY) or {}
        p = int((primary.get("spec") or {}).get("replicas") or 0)
        if share == 0.0:
            prev_sel = cur.get("previous_selector")
            if prev_sel is not None:
                self._patch_service(f"end canary on Service {self.service}",
                                    lambda s: kb.service_selector_patch(s, prev_sel, annotations_={kb.A_CANARY: None}))
            self._scale_back_canary(cname)
            self._last_action(view, "canary", reason)
            return self.describe()
        if p <= 0:
            raise BadInput("deployment", f"primary Deployment '{self.deployment}' has 0 replicas: no share to split")
        c = max(1, round(p * share / (1.0 - share)))
        selector = kb.common_selector(kb.match_labels(primary), kb.match_labels(cdep))
        if not selector:
            raise BadInput("service", f"Deployments '{self.deployment}' and '{cname}' share no pod label a "
                                      "Service could select them both by")
        third = [n for n, d in view.deployments.items() if n not in (self.deployment, cname)
                 and kb.selects(selector, kb.template_labels(d)) and (d.get("spec") or {}).get("replicas")]
        if third:
            raise BadInput("service", f"a Service on {selector} would also reach Deployment(s) {third}")

        def build_scale(dep):
            ann = kb.annotations(dep)
            before = ann.get(kb.A_REPLICAS_BEFORE_CANARY, str((dep.get("spec") or {}).get("replicas") or 0))
            if (dep.get("spec") or {}).get("replicas") == c and kb.A_REPLICAS_BEFORE_CANARY in ann:
                return None
            return kb.scale_patch(dep, c, annotations_={kb.A_REPLICAS_BEFORE_CANARY: before})

        self._patch_deployment(cname, f"scale canary Deployment {cname} to {c}", build_scale)
        prev = cur.get("previous_selector", (svc.get("spec") or {}).get("selector") or {})
        rec = json.dumps({"version": version, "requested_share": share, "replicas": {self.deployment: p, cname: c},
                          "deployment": cname, "mode": "replicas", "previous_selector": prev, "reason": reason,
                          "at": at}, sort_keys=True)
        self._patch_service(f"canary Service {self.service}",
                            lambda s: kb.service_selector_patch(s, selector, annotations_={kb.A_CANARY: rec}))
        self._last_action(view, "canary", reason)
        return self.describe()

    def _scale_back_canary(self, name: str) -> None:
        def build(dep):
            ann = kb.annotations(dep)
            if kb.A_REPLICAS_BEFORE_CANARY not in ann:
                return None
            try:
                n = int(ann[kb.A_REPLICAS_BEFORE_CANARY])
            except ValueError:
                n = 0
            return kb.scale_patch(dep, n, annotations_={kb.A_REPLICAS_BEFORE_CANARY: None})

        self._patch_deployment(name, f"scale Deployment {name} back after the canary", build)

    def block_clients(self, clients: list[str], *, rate_limit_per_s: float | None = None,
                      reason: str = "") -> ServingState:
        if rate_limit_per_s is not None:
            raise TargetError(f"{self.ref}: per-client rate limits are not offered on Kubernetes (neither the "
                              "API nor Istio's AuthorizationPolicy has one; Istio needs an external rate-limit "
                              "service) — block the client, or limit it at your ingress")
        if not isinstance(clients, (list, tuple)) or not clients or not all(isinstance(c, str) and c.strip()
                                                                            for c in clients):
            raise BadInput("clients", "expected a non-empty list of client ids")
        v = self._crd_versions()["authorizationpolicies"]
        if not v:
            raise TargetError(f"{self.ref}: cannot block single clients here: the cluster serves no "
                              "authorizationpolicies.security.istio.io (Istio). Kubernetes itself cannot refuse "
                              "one client of a Service — a NetworkPolicy sees pods and IP ranges, not client "
                              "ids; isolate or quarantine instead, or block at your ingress")
        custom = self._apis("CustomObjectsApi")
        at = _now()

        def read():
            return self._read_block() or {}

        def build(existing):
            have = kb.blocked_clients(existing) if existing else []
            want = sorted(set(have) | {c.strip() for c in clients})
            if existing and want == have:
                return None
            body = kb.block_authorization_policy(self.block_policy, self.namespace, {self.app_label: self.name},
                                                 want, header=self.client_header, reason=reason, at=at,
                                                 model=self.name)
            if existing:
                body["metadata"]["resourceVersion"] = kb.resource_version(existing)
            return body

        def write(body):
            if body["metadata"].get("resourceVersion"):
                return self._call("update AuthorizationPolicy", custom.replace_namespaced_custom_object,
                                  kb.ISTIO_SECURITY, v, self.namespace, "authorizationpolicies", self.block_policy,
                                  body, field_hint="clients")
            return self._call("create AuthorizationPolicy", custom.create_namespaced_custom_object,
                              kb.ISTIO_SECURITY, v, self.namespace, "authorizationpolicies", body,
                              field_hint="clients")

        self._update(f"block clients with AuthorizationPolicy {self.block_policy}", read, build, write,
                     field_hint="clients")
        return self.describe()

    def decisions(self, since=None, until=None, *, limit: int | None = None) -> list[dict[str, Any]]:
        raise TargetError(f"{self.ref}: a model served on Kubernetes writes no aiir decision log this target can "
                          "reach (only the aiir gateway keeps one); export your serving logs to the incident")

    # ------------------------------------------------------------------ evidence
    def snapshot(self, dest: Path) -> list[Path]:
        """YAML files (one per kind, flat in ``dest``): Deployments, ReplicaSets (revision history), pods,
        Service, VirtualService, NetworkPolicies, AuthorizationPolicy, ConfigMaps (the model's and those its
        pods mount), events of these objects, pod logs where the API can serve them (``pod-logs.yaml`` says
        which could not be read and why), and the serving state read back. Secrets are never read."""
        import yaml

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        view = self._view()
        core, net = self._apis("CoreV1Api"), self._apis("NetworkingV1Api")
        written: list[Path] = []

        def dump(fname: str, docs: list[dict[str, Any]] | dict[str, Any]) -> None:
            p = dest / fname
            tmp = p.with_name(f".{p.name}.tmp")
            if isinstance(docs, list):  # as `kubectl get -o yaml` prints several objects
                docs = {"apiVersion": "v1", "kind": "List", "items": [kb.strip_for_snapshot(d) for d in docs]}
            text = yaml.safe_dump(kb.strip_for_snapshot(docs), sort_keys=True)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(p)
            written.append(p)

        sel = f"{self.app_label}={self.name}"
        dump("deployments.yaml", [view.deployments[n] for n in sorted(view.deployments)])
        dump("replicasets.yaml", sorted(view.replicasets, key=lambda r: (r["metadata"]["name"])))
        dump("rollout-history.yaml", {"deployment": self.deployment, "revisions": [
            {"revision": kb.revision(rs), "replicaset": rs["metadata"]["name"], "version": self._version_of(rs),
             "images": kb.images(rs), "change_cause": kb.annotations(rs).get(kb.K8S_CHANGE_CAUSE),
             "replicas": (rs.get("spec") or {}).get("replicas")}
            for rs in sorted(view.replicasets, key=kb.revision)
            if any(o.get("name") == self.deployment for o in rs["metadata"].get("ownerReferences") or [])]})
        pods = self._call("list pods", core.list_namespaced_pod, self.namespace, label_selector=sel).get("items") or []
        dump("pods.yaml", sorted(pods, key=lambda p: p["metadata"]["name"]))
        dump("service.yaml", view.service)
        if view.vs is not None:
            dump("virtualservice.yaml", view.vs)
        nps = self._call("list NetworkPolicies", net.list_namespaced_network_policy, self.namespace).get("items") or []
        dump("networkpolicies.yaml", sorted(nps, key=lambda n: n["metadata"]["name"]))
        if view.block is not None:
            dump("authorizationpolicy.yaml", view.block)
        cms = {c["metadata"]["name"]: c for c in self._call("list ConfigMaps", core.list_namespaced_config_map,
                                                             self.namespace, label_selector=sel).get("items") or []}
        for d in view.deployments.values():
            for name in _configmap_refs(d):
                if name not in cms:
                    cm = self._get(f"get ConfigMap {name}", core.read_namespaced_config_map, name, self.namespace)
                    if cm is not None:
                        cms[name] = cm
        dump("configmaps.yaml", [cms[n] for n in sorted(cms)])
        names = ({self.service, self.virtual_service, self.quarantine_policy} | set(view.deployments)
                 | {r["metadata"]["name"] for r in view.replicasets} | {p["metadata"]["name"] for p in pods})
        events = [e for e in self._call("list events", core.list_namespaced_event, self.namespace).get("items") or []
                  if (e.get("involvedObject") or {}).get("name") in names]
        events.sort(key=lambda e: (e.get("lastTimestamp") or e.get("eventTime") or "", e["metadata"]["name"]))
        dump("events.yaml", events)
        logs: dict[str, Any] = {}
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            pname = pod["metadata"]["name"]
            for c in (pod.get("spec") or {}).get("containers") or []:
                key = f"{pname}/{c['name']}"
                try:
                    resp = core.read_namespaced_pod_log(pname, self.namespace, container=c["name"], tail_lines=5000,
                                                        _preload_content=False,
                                                        _request_timeout=(self.connect_timeout, self.timeout))
                    data = resp.data or b""
                    if not data and not (pod.get("spec") or {}).get("nodeName"):
                        logs[key] = {"unavailable": "empty: the pod is bound to no node, so no kubelet ran it "
                                                    "and the API server has no log for it"}
                        continue
                    p = dest / f"pod-log-{pname}-{c['name']}.log"
                    p.write_bytes(data)
                    written.append(p)
                    logs[key] = {"file": p.name, "bytes": len(data)}
                except Exception as exc:  # no kubelet, no log, no permission: say which and why
                    status = getattr(exc, "status", None)
                    body = getattr(exc, "body", None) or str(exc)
                    try:
                        body = json.loads(body).get("message", body)
                    except (TypeError, ValueError):
                        pass
                    logs[key] = {"unavailable": f"HTTP {status}: {str(body)[:300]}" if status else str(body)[:300]}
        dump("pod-logs.yaml", {"pods": logs})
        p = dest / "serving-state.json"
        p.write_text(json.dumps(self._state(view).to_dict(), indent=2, sort_keys=True, default=str), encoding="utf-8")
        written.append(p)
        return written


def _context_namespace(kubeconfig: dict[str, Any], context: str | None) -> str | None:
    name = context or kubeconfig.get("current-context")
    for c in kubeconfig.get("contexts") or []:
        if c.get("name") == name:
            return (c.get("context") or {}).get("namespace")
    return None


def _configmap_refs(deployment: dict[str, Any]) -> set[str]:
    spec = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {})
    out = {(v.get("configMap") or {}).get("name") for v in spec.get("volumes") or []}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        out |= {(e.get("configMapRef") or {}).get("name") for e in c.get("envFrom") or []}
        out |= {((e.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name") for e in c.get("env") or []}
    return {n for n in out if n}
