"""Pure builders for every Kubernetes manifest and patch the Kubernetes target writes.

In the style of the cncf-kubernetes provider's ``build_pod_request_obj``: plain functions from the objects read
(dicts, as the API returns them) to the dict to send. No client, no I/O — the tests assert on them without a
cluster, and the target (:mod:`aiir.targets.kubernetes`) only reads, calls one of these, and writes.

Every patch carries ``metadata.resourceVersion`` of the object it was built from, so the API server applies it only
to that exact version (optimistic concurrency: a concurrent edit makes the write fail with 409, and the target
re-reads and rebuilds). Patches are JSON merge patches (RFC 7386; maps merge, lists are replaced whole, ``None``
deletes a key) unless said otherwise.

Everything aiir changes is recorded in annotations on the object it changed (``aiir.io/...``), so the containment
can be read back from the cluster by anyone (``kubectl get svc -o yaml``) and reversed exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# --------------------------------------------------------------------------- names
A_CONTAINMENT = "aiir.io/containment"  # JSON {"mode","fallback_version","primary_version","reason","at","by"}
A_PREVIOUS_SELECTOR = "aiir.io/previous-selector"  # Service: JSON selector before aiir changed it
A_PREVIOUS_HTTP = "aiir.io/previous-http"  # VirtualService: JSON spec.http before aiir changed it
A_CANARY = "aiir.io/canary"  # Service / VirtualService: JSON {"version","share","deployment",...}
A_REPLICAS_BEFORE = "aiir.io/replicas-before-quarantine"  # Deployment: replicas before a scale to zero
A_REPLICAS_BEFORE_CANARY = "aiir.io/replicas-before-canary"  # canary Deployment: replicas before the canary
A_ROLLBACK = "aiir.io/rollback"  # Deployment: JSON {"to_revision","version","from_version","reason","at"}
A_REASON = "aiir.io/reason"
A_AT = "aiir.io/at"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "aiir"
K8S_REVISION = "deployment.kubernetes.io/revision"
K8S_CHANGE_CAUSE = "kubernetes.io/change-cause"
POD_TEMPLATE_HASH = "pod-template-hash"

ISTIO_NETWORKING = "networking.istio.io"
ISTIO_SECURITY = "security.istio.io"


def _js(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def annotation_json(obj: Mapping[str, Any] | None, key: str) -> Any:
    """The JSON value of annotation ``key`` on ``obj``, or None (absent or not JSON)."""
    raw = ((obj or {}).get("metadata") or {}).get("annotations", {}) or {}
    raw = raw.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def label_selector(match: Mapping[str, str]) -> str:
    """``{"a": "1", "b": "2"}`` -> ``"a=1,b=2"`` (sorted, for list calls)."""
    return ",".join(f"{k}={v}" for k, v in sorted(match.items()))


def selects(selector: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
    """Whether a Service-style equality selector matches these labels (an empty selector matches nothing)."""
    return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())


def template_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    """Pod template labels of a Deployment or ReplicaSet."""
    return dict((((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def match_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    return dict(((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def images(workload: Mapping[str, Any]) -> list[str]:
    spec = (((workload.get("spec") or {}).get("template") or {}).get("spec") or {})
    return [c.get("image", "") for c in spec.get("containers") or []]


def revision(rs: Mapping[str, Any]) -> int:
    try:
        return int(annotations(rs).get(K8S_REVISION, "0"))
    except ValueError:
        return 0


def _map_replace(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge-patch fragment turning map ``current`` into exactly ``desired`` (keys to drop set to None)."""
    out: dict[str, Any] = {k: None for k in (current or {}) if k not in desired}
    out.update(desired)
    return out


def _meta(obj: Mapping[str, Any], annotations_: Mapping[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": resource_version(obj)}
    if annotations_:
        meta["annotations"] = dict(annotations_)
    return meta


def containment_record(mode: str, *, reason: str, at: str, fallback_version: str | None = None,
                       primary_version: str | None = None, **more: Any) -> dict[str, Any]:
    rec = {"mode": mode, "reason": reason, "at": at, "by": "aiir", "fallback_version": fallback_version,
           "primary_version": primary_version}
    rec.update(more)
    return rec


# --------------------------------------------------------------------------- Service
def service_selector_patch(service: Mapping[str, Any], selector: Mapping[str, str], *,
                           annotations_: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge patch setting the Service's selector to exactly ``selector`` (plus annotations)."""
    current = (service.get("spec") or {}).get("selector") or {}
    return {"metadata": _meta(service, annotations_), "spec": {"selector": _map_replace(current, selector)}}


def isolate_service_patch(service: Mapping[str, Any], fallback_selector: Mapping[str, str],
                          record: Mapping[str, Any]) -> dict[str, Any]:
    """Point the Service at the fallback Deployment's pods; remember the selector it had (once: isolating
    twice keeps the original), and record the containment."""
    prev = annotations(service).get(A_PREVIOUS_SELECTOR)
    if prev is None:
        prev = _js((service.get("spec") or {}).get("selector") or {})
    return service_selector_patch(service, fallback_selector,
                                  annotations_={A_PREVIOUS_SELECTOR: prev, A_CONTAINMENT: _js(dict(record))})


def restore_service_patch(service: Mapping[str, Any], *, retarget: tuple[str, str, str] | None = None
                          ) -> dict[str, Any] | None:
    """Undo :func:`isolate_service_patch`: the selector it had, annotations removed. ``retarget`` =
    (version label, old, new) rewrites a version in that selector (a rollback happened meanwhile).
    None when there is nothing to undo."""
    ann = annotations(service)
    if A_PREVIOUS_SELECTOR not in ann and A_CONTAINMENT not in ann:
        return None
    prev = annotation_json(service, A_PREVIOUS_SELECTOR)
    drop = {A_PREVIOUS_SELECTOR: None, A_CONTAINMENT: None}
    if not isinstance(prev, dict):
        return {"metadata": _meta(service, drop)}
    if retarget and prev.get(retarget[0]) == retarget[1]:
        prev = {**prev, retarget[0]: retarget[2]}
    return service_selector_patch(service, prev, annotations_=drop)


def common_selector(*selectors: Mapping[str, str]) -> dict[str, str]:
    """The labels (key and value) every selector shares: a Service on it reaches all those Deployments."""
    if not selectors:
        return {}
    common = dict(selectors[0])
    for s in selectors[1:]:
        common = {k: v for k, v in common.items() if s.get(k) == v}
    return common


# --------------------------------------------------------------------------- VirtualService
def vs_routes(vs: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(subset, weight) of the first HTTP route of a VirtualService (the default route); a single destination
    without weight has 100."""
    http = (vs.get("spec") or {}).get("http") or []
    if not http:
        return []
    route = http[0].get("route") or []
    out = []
    for r in route:
        dest = r.get("destination") or {}
        w = r.get("weight")
        out.append((str(dest.get("subset") or ""), int(w) if w is not None else (100 if len(route) == 1 else 0)))
    return out


def weighted_route(host: str, weights: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"destination": {"host": host, "subset": subset}, "weight": int(w)} for subset, w in weights]


def split_weights(share: float) -> tuple[int, int]:
    """(primary, canary) integer weights summing to 100 for a canary ``share`` in [0, 1]."""
    c = int(round(max(0.0, min(1.0, float(share))) * 100))
    return 100 - c, c


def vs_http_with_route(vs: Mapping[str, Any], route: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every HTTP rule of the VirtualService with its destinations replaced by ``route`` (matches, retries,
    timeouts of each rule kept). A VirtualService without HTTP rules gets one."""
    http = [dict(h) for h in (vs.get("spec") or {}).get("http") or []] or [{}]
    for h in http:
        h["route"] = [dict(r) for r in route]
    return http


def isolate_vs_patch(vs: Mapping[str, Any], host: str, fallback_subset: str,
                     record: Mapping[str, Any]) -> dict[str, Any]:
    """All traffic of every HTTP rule to the fallback subset; the previous rules remembered (once)."""
    prev = annotations(vs).get(A_PREVIOUS_HTTP)
    if prev is None:
        prev = _js((vs.get("spec") or {}).get("http") or [])
    http = vs_http_with_route(vs, weighted_route(host, [(fallback_subset, 100)]))
    return {"metadata": _meta(vs, {A_PREVIOUS_HTTP: prev, A_CONTAINMENT: _js(dict(record))}),
            "spec": {"http": http}}


def restore_vs_patch(vs: Mapping[str, Any], *, host: str, primary_subset: str,
                     primary_changed: bool = False) -> dict[str, Any] | None:
    """Undo :func:`isolate_vs_patch`: the HTTP rules it had — unless the primary moved to another version in
    the meantime (a rollback), then every rule routes to the primary's subset. None when nothing to undo."""
    ann = annotations(vs)
    if A_PREVIOUS_HTTP not in ann and A_CONTAINMENT not in ann:
        return None
    prev = annotation_json(vs, A_PREVIOUS_HTTP)
    drop = {A_PREVIOUS_HTTP: None, A_CONTAINMENT: None}
    if primary_changed or not isinstance(prev, list) or not prev:
        http = vs_http_with_route({"spec": {"http": prev if isinstance(prev, list) else []}},
                                  weighted_route(host, [(primary_subset, 100)]))
    else:
        http = prev
    return {"metadata": _meta(vs, drop), "spec": {"http": http}}


def route_vs_patch(vs: Mapping[str, Any], host: str, weights: list[tuple[str, int]], *,
                   annotations_: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Set the weights of every HTTP rule (canary, rollback)."""
    return {"metadata": _meta(vs, annotations_), "spec": {"http": vs_http_with_route(vs, weighted_route(host, weights))}}


# --------------------------------------------------------------------------- quarantine
def quarantine_network_policy(name: str, namespace: str, pod_labels: Mapping[str, str], *, reason: str,
                              at: str, model: str) -> dict[str, Any]:
    """A deny-all NetworkPolicy (no ingress, no egress rule) on the model's pods."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {L_MANAGED_BY: MANAGED_BY, "aiir.io/model": model},
            "annotations": {A_CONTAINMENT: _js(containment_record("quarantined", reason=reason, at=at)),
                            A_REASON: reason, A_AT: at},
        },
        "spec": {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [], "egress": []},
    }


def scale_patch(deployment: Mapping[str, Any], replicas: int, *,
                annotations_: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge patch of a Deployment's replicas (and annotations) at the version read."""
    return {"metadata": _meta(deployment, annotations_), "spec": {"replicas": int(replicas)}}


def annotate_patch(obj: Mapping[str, Any], annotations_: Mapping[str, Any]) -> dict[str, Any]:
    return {"metadata": _meta(obj, annotations_)}


# --------------------------------------------------------------------------- block clients (Istio)
def block_authorization_policy(name: str, namespace: str, pod_labels: Mapping[str, str], clients: list[str], *,
                               header: str, reason: str, at: str, model: str) -> dict[str, Any]:
    """An Istio AuthorizationPolicy DENYing requests whose client-id header is one of ``clients``."""
    return {
        "apiVersion": f"{ISTIO_SECURITY}/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {L_MANAGED_BY: MANAGED_BY, "aiir.io/model": model},
            "annotations": {A_REASON: reason, A_AT: at, "aiir.io/blocked-clients": _js(sorted(clients))},
        },
        "spec": {"selector": {"matchLabels": dict(pod_labels)}, "action": "DENY",
                 "rules": [{"when": [{"key": f"request.headers[{header}]", "values": sorted(clients)}]}]},
    }


def blocked_clients(policy: Mapping[str, Any] | None) -> list[str]:
    if not policy:
        return []
    out: set[str] = set()
    for rule in (policy.get("spec") or {}).get("rules") or []:
        for cond in rule.get("when") or []:
            out.update(cond.get("values") or [])
    return sorted(out)


# --------------------------------------------------------------------------- rollback
def rollback_template(source_template: Mapping[str, Any], deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The pod template a rollback writes: the source's (a ReplicaSet's template, as ``kubectl rollout undo``
    takes it) without ``pod-template-hash``, and always carrying the Deployment's own selector labels (a
    template taken from another Deployment keeps this Deployment's identity)."""
    tpl = json.loads(json.dumps(source_template))
    meta = tpl.setdefault("metadata", {})
    lab = dict(meta.get("labels") or {})
    lab.pop(POD_TEMPLATE_HASH, None)
    lab.update(match_labels(deployment))
    meta["labels"] = lab
    meta.pop("creationTimestamp", None)
    return tpl


def rollback_patch(deployment: Mapping[str, Any], template: Mapping[str, Any],
                   record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON patch (RFC 6902) replacing the Deployment's pod template whole, as ``kubectl rollout undo`` does,
    with the resourceVersion read (a stale one is refused with 409) and the rollback recorded."""
    ann = annotations(deployment)
    ann[A_ROLLBACK] = _js(dict(record))
    if record.get("reason"):
        ann[K8S_CHANGE_CAUSE] = f"aiir: {record['reason']}"[:1000]
    return [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version(deployment)},
        {"op": "replace", "path": "/spec/template", "value": dict(template)},
        {"op": "add", "path": "/metadata/annotations", "value": ann},
    ]


def set_image_template(deployment: Mapping[str, Any], container: str | None, image: str,
                       version_label: str | None = None, version: str | None = None) -> dict[str, Any]:
    """The Deployment's current template with ``container``'s (default: the first) image set to ``image``."""
    tpl = json.loads(json.dumps((deployment.get("spec") or {}).get("template") or {}))
    containers = (tpl.get("spec") or {}).get("containers") or []
    if not containers:
        raise ValueError("the Deployment's pod template has no containers")
    target = next((c for c in containers if c.get("name") == container), None) if container else containers[0]
    if target is None:
        raise KeyError(container)
    target["image"] = image
    if version_label and version:
        tpl.setdefault("metadata", {}).setdefault("labels", {})[version_label] = version
    return tpl


def same_template(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two pod templates are the same for a rollout (labels without pod-template-hash, and spec)."""
    def norm(t: Mapping[str, Any]) -> str:
        t = json.loads(json.dumps(t))
        lab = (t.get("metadata") or {}).get("labels") or {}
        lab.pop(POD_TEMPLATE_HASH, None)
        return _js({"labels": lab, "spec": t.get("spec") or {}})

    return norm(a) == norm(b)


# --------------------------------------------------------------------------- rollout status
def rollout_status(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """(done, what is pending) for a Deployment, as ``kubectl rollout status`` judges it."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    name = meta.get("name", "?")
    want = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
    gen, observed = int(meta.get("generation") or 0), int(st.get("observedGeneration") or 0)
    if observed < gen:
        return False, f"deployment {name}: spec change not yet observed by the controller"
    for c in st.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return False, f"deployment {name}: rollout exceeded its progress deadline"
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    if updated < want:
        return False, f"deployment {name}: {updated} of {want} updated replicas"
    if total > updated:
        return False, f"deployment {name}: {total - updated} old replicas pending termination"
    if total > want:  # scaling down (to zero when quarantined): pods the controller has not removed yet
        return False, f"deployment {name}: {total - want} replicas still to scale down"
    if available < updated:
        return False, f"deployment {name}: {available} of {updated} updated replicas available"
    return True, ""


def strip_for_snapshot(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as evidence: everything but ``metadata.managedFields`` (server bookkeeping)."""
    out = json.loads(json.dumps(obj, default=str))
    (out.get("metadata") or {}).pop("managedFields", None)
    return out
