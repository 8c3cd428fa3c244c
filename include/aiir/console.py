"""The incident console's data: one summary per incident workspace, and the detail of one incident.

Read-only over ``$AIIR_HOME/incidents/<id>/`` (``incident.json``, ``timeline.jsonl``, ``contain.json``,
``triage.json``, ``forensics.json``, ``evidence.json``, ``eradicate.json``, ``recovery.json``, ``report/``)
and the sealed evidence store. The Airflow UI plugin (``plugins/aiir_airflow/ui``) renders these
dicts; nothing here imports Airflow, so the CLI or any other front end can show the same.

* **State** — :func:`incident_state` is the only place the lifecycle state is decided: an explicit
  ``state`` in the record (the incident lifecycle writes it) wins; otherwise it is derived from which
  step outputs exist, the way the report does it.
* **Evidence status** — verified *now* with :func:`aiir.evidence.verify_bundle` (signature, every file's
  SHA-256, custody chain), without writing a custody entry. The result is cached under a signature of
  every file's size, mtime and ctime in the bundle, so a listing re-hashes nothing unless a file changed
  (a changed byte changes the ctime, which cannot be set back by a user).
* **Deadlines** — the regulatory clocks of the record's regimes from its detection time
  (:mod:`aiir.knowledge.regulatory`), the next one and the overdue ones.

Every value returned is plain data (str, numbers, lists, dicts): escaping is the renderer's job.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput

STATES = ("open", "contained", "eradicated", "recovered", "closed", "false_positive")
ACTIVE_STATES = ("open", "contained", "eradicated", "recovered")  # until a person closes it
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
#: files of an integrity-check folder the console serves (and nothing else from it)
CHECK_FILES = ("findings.json", "drift_report.html", "gx_validation.json", "contract.json", "suspect_rows.csv")

_verify_cache: dict[str, tuple[tuple, dict[str, Any]]] = {}
_verify_lock = threading.Lock()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"_unreadable": f"{path.name}: {exc}"}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) and "_unreadable" not in value else {}


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else None


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def timeline(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "timeline.jsonl"
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            out.append(e)
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(out, key=lambda e: _parse(e.get("at")) or far)


# ----------------------------------------------------------------------------------------- state
def incident_state(workdir: Path, record: dict[str, Any] | None = None) -> str:
    """The incident's lifecycle state (one of :data:`STATES`).

    An explicit ``state`` (``status``) in the record wins — the incident lifecycle writes it, including
    ``closed`` and ``false_positive``. Otherwise it is derived from the step outputs present:
    ``recovery.json`` → recovered, ``eradicate.json`` → eradicated, ``contain.json`` (not a dry run) →
    contained, else open.
    """
    record = record if record is not None else _obj(_read_json(workdir / "incident.json"))
    life = _lifecycle_state(workdir)
    if life in STATES:
        return life
    for key in ("state", "status"):
        value = record.get(key)
        if isinstance(value, str) and value in STATES:
            return value
    closed = _obj(_read_json(workdir / "closed.json"))
    if closed.get("state") in STATES:
        return closed["state"]
    if (workdir / "recovery.json").exists() and not _obj(_read_json(workdir / "recovery.json")).get("dry_run"):
        return "recovered"
    if (workdir / "eradicate.json").exists():
        return "eradicated"
    contain = _obj(_read_json(workdir / "contain.json"))
    if contain and not contain.get("dry_run"):
        return "contained"
    return "open"


def _lifecycle_state(workdir: Path) -> str | None:
    """The state the incident lifecycle (``aiir.lifecycle``, ``state.json``) recorded, if any."""
    try:
        from aiir import lifecycle
    except ImportError:
        st = _obj(_read_json(workdir / "state.json"))
    else:
        st = _obj(lifecycle.read_state(workdir.name) if (workdir / lifecycle.STATE_FILE).exists() else None)
    value = st.get("state")
    return value if isinstance(value, str) else None


def can_close() -> bool:
    """Whether the core close function of the incident lifecycle is available."""
    try:
        from aiir import lifecycle
    except ImportError:
        return False
    return callable(getattr(lifecycle, "close", None))


def close(incident_id: str, *, as_: str, reason: str, actor: str, approve: bool) -> dict[str, Any]:
    """Close an incident through :func:`aiir.lifecycle.close` (``as_``: ``resolved`` or ``false_positive``)."""
    workdir_of(incident_id)
    if not can_close():
        raise BadInput("close", "this aiir has no incident lifecycle (aiir.lifecycle.close)")
    from aiir import lifecycle

    return lifecycle.close(incident_id, as_=as_, reason=reason, actor=actor, approve=approve)


# ----------------------------------------------------------------------------------------- evidence
def _bundle_signature(bundle: Path) -> tuple:
    sig = []
    for root, dirs, files in os.walk(bundle):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            sig.append((str(p.relative_to(bundle)), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode))
    return tuple(sig)


def evidence_status(workdir: Path) -> dict[str, Any]:
    """``{"status": "verified" | "failed" | "not yet", "bundle", "checked_at", "messages", ...}``."""
    ev = _obj(_read_json(workdir / "evidence.json"))
    if not ev.get("bundle"):
        return {"status": "not yet", "bundle": None, "messages": ["no evidence bundle sealed yet"]}
    bundle = Path(str(ev["bundle"]))
    if not bundle.is_dir():
        return {"status": "failed", "bundle": str(bundle), "messages": [f"bundle folder {bundle} is missing"]}
    key = str(bundle.resolve())
    sig = _bundle_signature(bundle)
    with _verify_lock:
        hit = _verify_cache.get(key)
        if hit is not None and hit[0] == sig:
            return dict(hit[1], cached=True)
    from aiir.evidence import verify_bundle

    try:
        res = verify_bundle(bundle, record=False)
        out = {"status": "verified" if res.ok else "failed", "bundle": str(bundle),
               "checked_at": _iso(datetime.now(UTC)), "messages": list(res.messages)[:20],
               "changed": res.changed[:20], "missing": res.missing[:20], "added": res.added[:20],
               "files_checked": res.files_checked, "sealed_at": res.sealed_at,
               "signature_ok": res.signature_ok, "custody_ok": res.custody_ok}
    except BadInput as exc:
        out = {"status": "failed", "bundle": str(bundle), "checked_at": _iso(datetime.now(UTC)),
               "messages": [str(exc)]}
    with _verify_lock:
        _verify_cache[key] = (sig, out)
    return dict(out, cached=False)


# ----------------------------------------------------------------------------------------- deadlines
def deadlines(record: dict[str, Any], now: datetime | None = None) -> list[dict[str, Any]]:
    """The record's regulatory clocks as the playbook's report computes them (``playbook.incident_deadlines``:
    not-applicable regimes marked, clocks waiting on a field), with the time left as of ``now``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    regimes = record.get("regimes")
    aware = record.get("aware_at") or record.get("detected_at")
    if not regimes or not aware:
        return []
    ds: list[dict[str, Any]] | None = None
    try:
        import dataclasses

        from aiir.incident import IncidentRecord
        from aiir.playbook import incident_deadlines

        names = {f.name for f in dataclasses.fields(IncidentRecord)}
        ds = incident_deadlines(IncidentRecord(**{k: v for k, v in record.items() if k in names}))
    except (ImportError, TypeError, BadInput):
        ds = None
    if ds is None:
        from aiir.knowledge import regulatory

        try:
            ds = [d.to_dict() for d in regulatory.deadlines(aware, regimes=regimes,
                                                            materiality_at=record.get("materiality_at") or None)]
        except BadInput:
            return []
    for d in ds:
        due = _parse(d.get("due"))
        if due is not None and d.get("status") != "not_applicable":
            d["seconds_left"] = int((due - now).total_seconds())
            d["status"] = "overdue" if d["seconds_left"] < 0 else "open"
    return ds


# ----------------------------------------------------------------------------------------- summaries
def _target(record: dict[str, Any]) -> str:
    kind, name = record.get("target_kind"), record.get("target_name")
    return f"{kind}:{name}" if kind and name else str(record.get("target") or "")


def summary(workdir: Path, *, now: datetime | None = None, verify: bool = True) -> dict[str, Any]:
    """One incident as the Incidents list shows it."""
    workdir = Path(workdir)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    raw = _read_json(workdir / "incident.json")
    record = _obj(raw)
    problems = [raw["_unreadable"]] if isinstance(raw, dict) and "_unreadable" in raw else []
    events = timeline(workdir)
    detected = _parse(record.get("detected_at"))
    opened = _parse(next((e.get("at") for e in events if e.get("event") == "detected"), None)) or detected
    contain = _obj(_read_json(workdir / "contain.json"))
    contained_at = _parse(contain.get("effective_at")) if contain and not contain.get("dry_run") else None
    ttc = (contained_at - detected).total_seconds() if contained_at and detected else None
    ds = deadlines(record, now)
    state = incident_state(workdir, record)
    pending = [d for d in ds if d.get("due") and d.get("status") == "open"]
    overdue = [d for d in ds if d.get("status") == "overdue"]
    report = workdir / "report" / "report.html"
    ev = evidence_status(workdir) if verify else {"status": "unchecked"}
    return {
        "incident_id": record.get("incident_id") or workdir.name,
        "state": state,
        "active": state in ACTIVE_STATES,
        "severity": str(record.get("severity") or "unknown"),
        "model": str(record.get("model_name") or record.get("model") or ""),
        "target": _target(record),
        "playbook": str(record.get("playbook") or record.get("kind") or ""),
        "opened_by": str(record.get("opened_by") or ""),
        "detected_at": _iso(detected),
        "opened_at": _iso(opened),
        "contained_at": _iso(contained_at),
        "time_to_contain_s": None if ttc is None else round(ttc, 3),
        "dry_run": bool(record.get("dry_run")),
        "deadlines": ds,
        "next_deadline": pending[0] if pending else None,
        "overdue": overdue,
        "evidence": ev,
        "report": str(report) if report.exists() else None,
        "check_dir": str(record.get("check_dir") or "") or None,
        "workdir": str(workdir),
        "problems": problems,
    }


def list_incidents(*, state: str | None = None, model: str | None = None, now: datetime | None = None,
                   verify: bool = True, root: Path | None = None) -> list[dict[str, Any]]:
    """Every incident under ``$AIIR_HOME/incidents``: active first, then by severity, newest first."""
    if state and state not in STATES:
        raise BadInput("state", f"expected one of {', '.join(STATES)}, got {state!r}")
    root = root or config.paths().incidents
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and (d / "incident.json").exists():
                s = summary(d, now=now, verify=verify)
                if (state and s["state"] != state) or (model and s["model"] != model):
                    continue
                out.append(s)
    out.sort(key=lambda s: s["opened_at"] or "", reverse=True)
    out.sort(key=lambda s: (not s["active"], SEVERITY_ORDER.get(s["severity"], 9)))
    return out


def models(root: Path | None = None) -> list[str]:
    root = root or config.paths().incidents
    names = set()
    if root.is_dir():
        for d in root.iterdir():
            rec = _obj(_read_json(d / "incident.json")) if d.is_dir() else {}
            if rec.get("model_name"):
                names.add(str(rec["model_name"]))
    return sorted(names)


def workdir_of(incident_id: str, root: Path | None = None) -> Path:
    """The workspace of ``incident_id``; BadInput when the id is malformed or unknown."""
    from aiir.incident import ID_RE

    if not isinstance(incident_id, str) or not ID_RE.match(incident_id):
        raise BadInput("incident_id", "expected 3-121 characters of letters, digits, '.', '_' or '-'")
    root = root or config.paths().incidents
    d = root / incident_id
    if not (d / "incident.json").exists():
        raise BadInput("incident_id", f"no incident '{incident_id}' under {root}")
    return d


# ----------------------------------------------------------------------------------------- detail
def detail(incident_id: str, *, now: datetime | None = None, root: Path | None = None) -> dict[str, Any]:
    """Everything the Incident view shows for one incident."""
    from aiir.report import containment_sentences

    w = workdir_of(incident_id, root)
    s = summary(w, now=now)
    record = _obj(_read_json(w / "incident.json"))
    contain = _obj(_read_json(w / "contain.json"))
    recovery = _obj(_read_json(w / "recovery.json")) or None
    fx = _obj(_read_json(w / "forensics.json"))
    triage = _obj(_read_json(w / "triage.json"))
    versions = _obj(_read_json(w / "versions.json"))
    radius = _obj(fx.get("blast_radius"))
    loc = _obj(fx.get("localisation"))
    findings = [f for f in record.get("findings") or [] if isinstance(f, dict)]
    findings.sort(key=lambda f: SEVERITY_ORDER.get(str(f.get("severity")), 9))
    by_client = radius.get("by_client") if isinstance(radius.get("by_client"), dict) else {}
    clients = [c for c in radius.get("clients") or [] if isinstance(c, dict)]
    if not clients and by_client:
        clients = [{"client_id": k, **(v if isinstance(v, dict) else {"decisions": v})} for k, v in by_client.items()]
    return {
        **s,
        "record": record,
        "timeline": timeline(w),
        "findings": findings,
        "containment": containment_sentences(contain, recovery),
        "containment_raw": contain,
        "versions": versions,
        "triage": {k: triage.get(k) for k in ("confirmed", "precision_drop", "recall_drop", "rows")} if triage else {},
        "triage_models": {role: _obj(triage.get(role)) for role in ("suspect", "good")} if triage else {},
        "blast_radius": {"total": radius.get("total"), "clients_affected": radius.get("clients_affected"),
                         "window": _obj(radius.get("window")), "likely_missed_positives":
                         radius.get("likely_missed_positives"),
                         "clients": sorted(clients, key=lambda c: -(c.get("decisions") or 0))[:50]} if radius else None,
        "localisation": {"suspect_sources": loc.get("suspect_sources") or [],
                         "suspect_batches": loc.get("suspect_batches") or [],
                         "trigger": _obj(loc.get("trigger_pattern")).get("description")} if loc else None,
        "recovery": recovery,
        "suspect_sources": record.get("suspect_sources") or [],
    }


def check_file(incident_id: str, name: str, root: Path | None = None) -> Path:
    """A file of the incident's integrity-check folder (only :data:`CHECK_FILES`)."""
    if name not in CHECK_FILES:
        raise BadInput("name", f"expected one of {', '.join(CHECK_FILES)}")
    record = _obj(_read_json(workdir_of(incident_id, root) / "incident.json"))
    d = record.get("check_dir")
    if not d or not (Path(d) / name).is_file():
        raise BadInput("check_dir", f"incident '{incident_id}' has no {name}")
    return Path(d) / name


# ----------------------------------------------------------------------------------------- runs
def check_dir_of_run(run_id: str) -> Path | None:
    """The integrity-check output folder written by the ``data_integrity_check`` run ``run_id``."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:100]
    root = config.paths().checks
    hits = sorted(root.glob(f"*__{safe}")) if root.is_dir() and safe else []
    return hits[-1] if hits else None


def incident_of_run(run_id: str, conf: dict[str, Any] | None = None, root: Path | None = None) -> str | None:
    """The incident an Airflow run belongs to: its conf's ``incident_id``, the run id itself (a playbook run
    opened by the check), the id derived from the run id (a manual trigger), a ``-retrain`` run's incident,
    or the incident an integrity-check run opened. ``None`` when the run has none."""
    from aiir.incident import id_from_run

    root = root or config.paths().incidents
    candidates = []
    if isinstance(conf, dict) and isinstance(conf.get("incident_id"), str) and conf["incident_id"]:
        candidates.append(conf["incident_id"])
    candidates += [run_id, id_from_run(run_id)]
    if run_id.endswith("-retrain"):
        candidates.append(run_id[: -len("-retrain")])
    for c in candidates:
        try:
            workdir_of(c, root)
            return c
        except BadInput:
            continue
    d = check_dir_of_run(run_id)
    if d is not None and (d / "incident_id").exists():
        iid = (d / "incident_id").read_text().strip()
        try:
            workdir_of(iid, root)
            return iid
        except BadInput:
            return None
    return None
