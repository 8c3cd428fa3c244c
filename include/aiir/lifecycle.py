"""The incident lifecycle: open → contained → eradicated → recovered → closed, or false_positive.

Each incident's state lives in its workspace (``state.json``, rewritten atomically) with every change also
on the timeline; the incident index (:func:`list_incidents`) reads the workspaces, so it can never
disagree with them. Playbook steps advance the state (containment → contained, eradication → eradicated,
promotion → recovered); a person closes an incident (:func:`close`) as resolved or as a false positive —
the latter restores the target, after approval.

An incident also carries a *fingerprint* (:func:`fingerprint`): the model, the checked batch's content
digest, and the finding kinds and sources. The scheduled check opens nothing for a fingerprint that an
incident — open or closed — already has (:func:`find_by_fingerprint`), so one root cause opens one incident.
The evasion scan, which reads a time window rather than a batch, decides by client instead
(:func:`client_coverage`): an attack seen half-way by one scan and whole by the next is one incident.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput

STATES = ("open", "contained", "eradicated", "recovered", "closed", "false_positive")
TERMINAL = ("closed", "false_positive")
ACTIVE = ("open", "contained", "eradicated", "recovered")
_ORDER = {s: i for i, s in enumerate(STATES)}
STATE_FILE = "state.json"


def fingerprint(*, model: str, batch_sha256: str | None, finding_kinds: list[str], sources: list[str]) -> str:
    body = json.dumps({"model": model, "batch": batch_sha256 or "", "kinds": sorted(set(finding_kinds)),
                       "sources": sorted(set(map(str, sources)))}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def read_state(incident_id: str) -> dict[str, Any] | None:
    from aiir.jsonio import read_json

    return read_json(config.paths().incidents / incident_id / STATE_FILE)


def set_state(record, state: str, *, actor: str = "aiir", reason: str = "", force: bool = False,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Move the incident to ``state``. Moves only forward (a re-run never moves it back), except ``force``
    (a person closing it); a closed incident stays closed."""
    from aiir.incident import add_event, now_iso
    from aiir.jsonio import write_json

    if state not in STATES:
        raise BadInput("state", f"expected one of {', '.join(STATES)}, got {state!r}")
    cur = read_state(record.incident_id) or {}
    old = cur.get("state")
    if old == state:
        return cur
    if old in TERMINAL and not force:
        return cur
    if old is not None and not force and _ORDER[state] < _ORDER[old]:
        return cur
    new = {**cur, "incident_id": record.incident_id, "state": state, "since": now_iso(), "by": actor,
           "reason": reason, "history": [*cur.get("history", []),
                                         {"state": state, "at": now_iso(), "by": actor, "reason": reason}]}
    if extra:
        new.update(extra)
    write_json(record.workdir / STATE_FILE, new)
    add_event(record, f"state:{state}", actor=actor, details={"from": old, "reason": reason})
    return new


def init_state(record, *, fingerprint_value: str | None = None, batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state of a newly opened incident (idempotent)."""
    from aiir.jsonio import write_json

    extra: dict[str, Any] = {"model": record.model_name, "playbook": record.kind}
    if fingerprint_value:
        extra["fingerprint"] = fingerprint_value
    if batch:
        extra["batch"] = batch
    cur = read_state(record.incident_id)
    if cur is None:
        return set_state(record, "open", actor=record.opened_by, reason="incident opened", extra=extra)
    missing = {k: v for k, v in extra.items() if k not in cur}
    if missing:  # containment ran first and already moved the state: add what only the opening knows
        cur.update(missing)
        write_json(record.workdir / STATE_FILE, cur)
    return cur


def list_incidents(*, state: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """Every incident (newest first): id, state, model, playbook, target, severity, opened at, fingerprint."""
    from aiir.jsonio import read_json

    root = config.paths().incidents
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        rec = read_json(d / "incident.json") if d.is_dir() else None
        if not isinstance(rec, dict):
            continue
        st = read_json(d / STATE_FILE) or {}
        row = {"incident_id": rec.get("incident_id", d.name), "state": st.get("state", "open"),
               "model": rec.get("model_name"), "playbook": rec.get("kind"),
               "target": f"{rec.get('target_kind')}:{rec.get('target_name')}", "severity": rec.get("severity"),
               "detected_at": rec.get("detected_at"), "opened_by": rec.get("opened_by"),
               "dry_run": rec.get("dry_run"), "fingerprint": st.get("fingerprint"), "since": st.get("since"),
               "batch": st.get("batch"), "suspect_sources": list(rec.get("suspect_sources") or [])}
        if state and row["state"] != state:
            continue
        if model and row["model"] != model:
            continue
        out.append(row)
    return sorted(out, key=lambda r: r.get("detected_at") or "", reverse=True)


def find_by_fingerprint(fp: str) -> dict[str, Any] | None:
    for row in list_incidents():
        if row.get("fingerprint") == fp:
            return row
    return None


def _when(ts: Any) -> str | None:
    """``ts`` as the decision log's canonical UTC text (comparable as strings); ``None`` when unreadable."""
    from aiir.gateway.decision_log import parse_when

    try:
        return parse_when(ts, where="ts")
    except BadInput:
        return None


def client_coverage(*, model: str, playbook: str, suspects: list[dict[str, Any]]) -> dict[str, str]:
    """Which suspect clients an incident of ``playbook`` on ``model`` already covers: client id -> incident id.

    A scan of a time window sees an attack while it is still going on, and the next scan sees more of it —
    other signals, other finding kinds — so clients, not fingerprints, decide. An active incident (open,
    contained, eradicated, recovered) covers every client it names. A closed one (resolved or false
    positive) covers a client whose last suspect decision (``last_suspect_ts``) came before the closing:
    the same evidence never reopens what a person closed, but the client probing again afterwards does."""
    # each incident once, newest first: its id, the clients it names, active or not, when it was closed
    incidents = [(r["incident_id"], set(map(str, r.get("suspect_sources") or [])), r["state"] in ACTIVE,
                  None if r["state"] in ACTIVE else _when(r.get("since")))
                 for r in list_incidents(model=model) if r.get("playbook") == playbook]
    out: dict[str, str] = {}
    for s in suspects:
        c = str(s.get("client_id"))
        last = _when(s.get("last_suspect_ts") or s.get("last_ts"))
        for incident_id, clients, active, closed_at in incidents:
            if c in clients and (active or (last is not None and closed_at is not None and last <= closed_at)):
                out[c] = incident_id
                break
    return out


def quarantined_batches() -> dict[str, dict[str, Any]]:
    """Every batch file some incident quarantined (whole or in part): SHA-256 -> {path, incident, sources}."""
    from aiir.jsonio import read_json

    out: dict[str, dict[str, Any]] = {}
    root = config.paths().incidents
    if not root.is_dir():
        return out
    for q in sorted(root.glob("*/forensics/quarantine.json")):
        try:
            data = read_json(q) or {}
        except BadInput:
            continue
        for sl in data.get("slices", []) if isinstance(data.get("slices"), list) else []:
            if isinstance(sl, dict) and sl.get("sha256"):
                e = out.setdefault(sl["sha256"], {"path": sl.get("file"), "incident_id": q.parent.parent.name,
                                                  "sources": []})
                if sl.get("source") and sl["source"] not in e["sources"]:
                    e["sources"].append(sl["source"])
    return out


def is_quarantined(path: str | Path, sha256: str | None = None) -> dict[str, Any] | None:
    from aiir.hashing import sha256_file

    digest = sha256 or sha256_file(path)
    return quarantined_batches().get(digest)


def close(incident_id: str, *, as_: str, reason: str, actor: str, approve: bool | None = None,
          target=None) -> dict[str, Any]:
    """Close an incident as ``resolved`` or ``false-positive``. A false positive restores the target — a
    change to production, so it needs approval (``approve=True``, asked on a terminal otherwise)."""
    import sys

    from aiir.incident import load

    if as_ not in ("resolved", "false-positive", "false_positive"):
        raise BadInput("--as", f"expected resolved or false-positive, got {as_!r}")
    if not reason.strip():
        raise BadInput("--reason", "say why the incident is closed")
    record = load(incident_id)
    cur = read_state(incident_id) or {"state": "open"}
    if cur.get("state") in TERMINAL:
        return cur
    result: dict[str, Any] = {}
    if as_ != "resolved":
        if approve is None and sys.stdin is not None and sys.stdin.isatty():
            approve = input(f"Restore {record.target_kind}:{record.target_name} to normal serving (lift every "
                            "containment)? [y/N] ").strip().lower() in ("y", "yes")
        if not approve:
            raise BadInput("approve", "closing as a false positive restores the target: confirm with --approve")
        if not record.dry_run:
            from aiir.playbook import target_for

            t = target_for(record, target)
            state = t.restore(reason=f"incident {incident_id} closed as a false positive by {actor}: {reason}")
            result["target_state"] = state.to_dict()
        st = set_state(record, "false_positive", actor=actor, reason=reason, force=True, extra=result)
    else:
        st = set_state(record, "closed", actor=actor, reason=reason, force=True)
    return st
