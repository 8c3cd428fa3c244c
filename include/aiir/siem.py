"""SIEM events for every phase change of an incident: ECS 8.x JSON (Elastic) and Splunk HEC.

    ev = phase_event("INC-42", "contain", "traffic_to_last_known_good", "success",
                     model="fraud-detector", target="local:fraud-detector", atlas=["AML.T0020"])
    EventSink().emit(ev)   # appends $AIIR_HOME/siem/ecs.jsonl and hec.jsonl (+ HEC POST if configured)

``phase`` is one of :data:`aiir.knowledge.taxonomy.NIST_PHASES` (NIST SP 800-61r3 / CSF 2.0).
The event id is derived from (incident, phase, action, outcome, time), so a retried task that emits the
same event again is written once. ATLAS technique ids go to ``threat.technique.id`` (sub-technique ids
such as ``AML.T0010.002`` also to ``threat.technique.subtechnique.id``) with ``threat.framework:
"MITRE ATLAS"``. The HTTP forwarder is used only when configured: ``EventSink(hec_url=..., hec_token=...)``
or the environment variables ``AIIR_SIEM_HEC_URL`` / ``AIIR_SIEM_HEC_TOKEN`` (optional
``AIIR_SIEM_HEC_INDEX``; ``AIIR_SIEM_HEC_INSECURE=1`` skips TLS verification for lab setups).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiir
from aiir import config
from aiir.errors import AiirError, BadInput
from aiir.knowledge.taxonomy import ATLAS_TECHNIQUES, NIST_PHASES

log = logging.getLogger("aiir.siem")

ECS_VERSION = "8.17.0"
SOURCETYPE = "aiir:incident"
OUTCOMES = ("success", "failure", "unknown")
SEVERITY_SCORE = {"low": 21, "medium": 47, "high": 73, "critical": 99}
_NS = uuid.UUID("6f1c3a52-4f0e-4d0b-9a51-2c1b8e3e7a11")

# ECS categorisation per phase: (event.category, event.type), from the ECS allowed values.
_PHASE_ECS: dict[str, tuple[list[str], list[str]]] = {
    "detect": (["intrusion_detection"], ["info"]),
    "analyse": (["intrusion_detection"], ["info"]),
    "contain": (["configuration"], ["change"]),
    "preserve": (["file"], ["creation"]),
    "eradicate": (["configuration"], ["change"]),
    "recover": (["configuration"], ["change"]),
    "report": (["intrusion_detection"], ["info"]),
    "lessons": (["intrusion_detection"], ["info"]),
}


class SiemError(AiirError):
    """The SIEM (HEC endpoint) refused or could not be reached."""


def _iso(at: datetime | str | None) -> str:
    if at is None:
        dt = datetime.now(UTC)
    elif isinstance(at, str):
        try:
            dt = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadInput("at", f"expected an ISO-8601 time, got {at!r}") from None
    else:
        dt = at
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise BadInput("at", f"{dt.isoformat()} has no timezone")
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def phase_event(incident_id: str, phase: str, action: str, outcome: str, *, at: datetime | str | None = None,
                details: dict[str, Any] | None = None, model: str | None = None, target: str | None = None,
                severity: str | None = None, atlas: Iterable[str] | None = None, alert: bool | None = None,
                event_id: str | None = None) -> dict[str, Any]:
    """One incident phase change, in aiir's own (flat) form; render with :func:`to_ecs` / :func:`to_hec`.

    ``alert`` defaults to true for ``detect`` events and for events whose details ask to ``page``;
    ``severity`` (low/medium/high/critical) defaults to ``details["severity"]``, or critical when paging.
    """
    if not isinstance(incident_id, str) or not incident_id.strip():
        raise BadInput("incident_id", "expected a non-empty string")
    if phase not in NIST_PHASES:
        raise BadInput("phase", f"{phase!r}: expected one of {', '.join(NIST_PHASES)}")
    if not isinstance(action, str) or not action.strip():
        raise BadInput("action", "expected a non-empty string such as 'evidence_sealed'")
    if outcome not in OUTCOMES:
        raise BadInput("outcome", f"{outcome!r}: expected one of {', '.join(OUTCOMES)}")
    details = _jsonable(dict(details or {}))
    page = bool(details.get("page"))
    severity = severity or details.get("severity") or ("critical" if page else None)
    if severity is not None and severity not in SEVERITY_SCORE:
        raise BadInput("severity", f"{severity!r}: expected one of {', '.join(SEVERITY_SCORE)}")
    ids = list(dict.fromkeys([*(atlas or []), *(details.get("atlas") or [])]))
    ts = _iso(at)
    return {
        # Deterministic: the same phase change of the same incident (from the same DAG task) has the same
        # id whenever and however often it is emitted, so a re-run or a retried task emits no duplicate.
        "id": event_id or str(uuid.uuid5(_NS, f"{incident_id}|{phase}|{action}|{outcome}|"
                                              f"{details.get('dag_id') or ''}|{details.get('task_id') or ''}")),
        "incident_id": incident_id,
        "phase": phase,
        "nist": NIST_PHASES[phase],
        "action": action,
        "outcome": outcome,
        "at": ts,
        "alert": bool(alert) if alert is not None else (phase == "detect" or page),
        "severity": severity,
        "model": model,
        "target": target,
        "atlas": [str(i) for i in ids],
        "details": details,
    }


def _threat(ids: list[str]) -> dict[str, Any]:
    def ref(i: str) -> str:
        e = ATLAS_TECHNIQUES.get(i)
        return e.url if e else f"https://atlas.mitre.org/techniques/{i}"

    technique: dict[str, Any] = {"id": ids, "name": [ATLAS_TECHNIQUES[i].name if i in ATLAS_TECHNIQUES else i
                                                     for i in ids],
                                 "reference": [ref(i) for i in ids]}
    subs = [i for i in ids if i.count(".") >= 2]
    if subs:
        technique["subtechnique"] = {"id": subs, "name": [ATLAS_TECHNIQUES[i].name if i in ATLAS_TECHNIQUES else i
                                                          for i in subs],
                                     "reference": [ref(i) for i in subs]}
    return {"framework": "MITRE ATLAS", "technique": technique}


def to_ecs(event: dict[str, Any], *, host: str | None = None) -> dict[str, Any]:
    """The event as an ECS 8.x document (Elastic Common Schema)."""
    phase = event["phase"]
    category, etype = _PHASE_ECS.get(phase, (["intrusion_detection"], ["info"]))
    kind = "alert" if event.get("alert") else "event"
    labels = {"incident_id": event["incident_id"], "nist_phase": phase}
    for k in ("model", "target"):
        if event.get(k):
            labels[k] = str(event[k])
    ev: dict[str, Any] = {
        "kind": kind, "category": category, "type": etype, "action": event["action"],
        "outcome": event["outcome"], "id": event["id"], "module": "aiir", "dataset": "aiir.incident",
        "provider": "aiir",
    }
    if event.get("severity"):
        ev["severity"] = SEVERITY_SCORE[event["severity"]]
    doc: dict[str, Any] = {
        "@timestamp": event["at"],
        "ecs": {"version": ECS_VERSION},
        "message": f"aiir incident {event['incident_id']}: {phase} / {event['action']} — {event['outcome']}",
        "event": ev,
        "labels": labels,
        "tags": ["aiir", f"nist:{phase}"],
        "observer": {"product": "aiir", "vendor": "aiir", "type": "ai-incident-response",
                     "version": aiir.__version__, "hostname": host or socket.gethostname()},
        "aiir": {"incident_id": event["incident_id"], "phase": phase, "nist": event.get("nist"),
                 "model": event.get("model"), "target": event.get("target"), "details": event.get("details", {})},
    }
    if kind == "alert":
        doc["rule"] = {"id": f"aiir.{phase}.{event['action']}", "name": f"aiir {phase}: {event['action']}",
                       "ruleset": "aiir", "category": event.get("nist") or phase, "author": ["aiir"]}
    if event.get("atlas"):
        doc["threat"] = _threat(list(event["atlas"]))
    return doc


def _epoch(ts: str) -> float:
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp(), 3)


def to_hec(event: dict[str, Any], *, host: str | None = None, index: str | None = None) -> dict[str, Any]:
    """The event as a Splunk HTTP Event Collector payload (``/services/collector/event``)."""
    out: dict[str, Any] = {
        "time": _epoch(event["at"]),
        "host": host or socket.gethostname(),
        "source": "aiir",
        "sourcetype": SOURCETYPE,
        "event": event,
        "fields": {"incident_id": event["incident_id"], "phase": event["phase"], "outcome": event["outcome"]},
    }
    if index:
        out["index"] = index
    return out


def _hec_endpoint(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadInput("hec_url", f"expected an http(s) URL, got {url!r}")
    u = url.rstrip("/")
    return u if "/services/collector" in u else u + "/services/collector/event"


def post_hec(url: str, token: str, events: Iterable[dict[str, Any]], *, timeout: float = 10.0,
             verify: bool = True, index: str | None = None) -> dict[str, Any]:
    """POST events (aiir events, or ready HEC payloads) to a Splunk HEC endpoint in one batch.

    Raises :class:`SiemError` on a non-200 answer or a transport error; the token never appears in
    error messages.
    """
    import httpx

    if not token:
        raise BadInput("hec_token", "empty HEC token")
    endpoint = _hec_endpoint(url)
    payloads = [e if "sourcetype" in e and "event" in e else to_hec(e, index=index) for e in events]
    if not payloads:
        return {"sent": 0}
    body = "\n".join(json.dumps(p, separators=(",", ":"), default=str) for p in payloads)
    try:
        r = httpx.post(endpoint, content=body.encode(), timeout=timeout, verify=verify,
                       headers={"Authorization": f"Splunk {token}", "Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        raise SiemError(f"HEC {endpoint}: {type(exc).__name__}: {exc}") from None
    if r.status_code != 200:
        raise SiemError(f"HEC {endpoint} answered {r.status_code}: {r.text[:300]}")
    try:
        answer = r.json()
    except ValueError:
        answer = {"text": r.text[:300]}
    return {"sent": len(payloads), "answer": answer}


class EventSink:
    """Appends every event once to ``<dir>/ecs.jsonl`` and ``<dir>/hec.jsonl`` (default ``$AIIR_HOME/siem``).

    With a HEC URL and token (arguments, or ``AIIR_SIEM_HEC_URL``/``AIIR_SIEM_HEC_TOKEN``) each newly
    written event is also POSTed; a forwarding failure is logged and reported in the result, never
    raised, so a SIEM outage cannot fail an incident-response task (the JSON lines are the record).
    """

    def __init__(self, path: str | Path | None = None, *, hec_url: str | None = None, hec_token: str | None = None,
                 hec_index: str | None = None, verify_tls: bool | None = None, host: str | None = None):
        self.dir = Path(path) if path is not None else config.paths().home / "siem"
        self.hec_url = hec_url if hec_url is not None else os.environ.get("AIIR_SIEM_HEC_URL") or None
        self.hec_token = hec_token if hec_token is not None else os.environ.get("AIIR_SIEM_HEC_TOKEN") or None
        self.hec_index = hec_index if hec_index is not None else os.environ.get("AIIR_SIEM_HEC_INDEX") or None
        self.verify_tls = verify_tls if verify_tls is not None else os.environ.get("AIIR_SIEM_HEC_INSECURE") != "1"
        self.host = host or socket.gethostname()

    @property
    def ecs_path(self) -> Path:
        return self.dir / "ecs.jsonl"

    @property
    def hec_path(self) -> Path:
        return self.dir / "hec.jsonl"

    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write ``event`` (from :func:`phase_event`) unless its id is already written; forward if configured."""
        ecs = to_ecs(event, host=self.host)
        hec = to_hec(event, host=self.host, index=self.hec_index)
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            needle = f'"id":"{event["id"]}"'.encode()
            if self.ecs_path.exists() and needle in self.ecs_path.read_bytes():
                return {"written": False, "forwarded": False, "ecs": ecs, "hec": hec}
            for path, doc in ((self.ecs_path, ecs), (self.hec_path, hec)):
                with open(path, "ab") as fh:
                    fh.write(json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                                        default=str).encode() + b"\n")
        finally:
            os.close(fd)
        result: dict[str, Any] = {"written": True, "forwarded": False, "ecs": ecs, "hec": hec}
        if self.hec_url and self.hec_token:
            try:
                result["forward"] = post_hec(self.hec_url, self.hec_token, [hec], verify=self.verify_tls)
                result["forwarded"] = True
            except (SiemError, BadInput) as exc:
                log.warning("SIEM forwarding failed (events kept in %s): %s", self.dir, exc)
                result["forward_error"] = str(exc)
        return result

    def events(self) -> list[dict[str, Any]]:
        """The ECS documents written so far."""
        if not self.ecs_path.exists():
            return []
        return [json.loads(x) for x in self.ecs_path.read_text(encoding="utf-8").splitlines() if x.strip()]
