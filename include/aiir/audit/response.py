"""Steps of the artifact-tampering response (an incident the ``artifact_integrity`` check opened).

* :func:`verify_artifacts` — every version of the incident's model re-verified: which are tampered,
  which still verify, and the newest intact one to fall back to → ``verification.json``;
* :func:`affected_decisions` — every decision a tampered version served since it was registered, per
  client (the blast radius, ``forensics/blast_radius.json`` + ``affected_decisions.csv``), through the
  serving target, so ``aiir trace`` links those decisions to the incident.

Each writes its output once in the incident workspace and returns it (a re-run returns the same file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiir.incident import IncidentRecord

VERIFICATION_FILE = "verification.json"
AFFECTED_FILE = "affected.json"


def _read(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write(p: Path, obj: dict[str, Any]) -> dict[str, Any]:
    import os

    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, p)
    return obj


def verify_artifacts(record: IncidentRecord) -> dict[str, Any]:
    """Re-verify every registered version of the incident's model (artifact + datasets)."""
    from aiir import incident as inc
    from aiir.registry import now_iso

    from .integrity import registered_versions, verify_model_version

    out = record.workdir / VERIFICATION_FILE
    if (prev := _read(out)) is not None:
        return prev
    rows = []
    for name, version in registered_versions(record.model_name):
        r = verify_model_version(name, version)
        rows.append({"version": version, "ok": r["ok"], "status": r["status"],
                     "model_ok": bool(r.get("model_check") and r["model_check"]["ok"]),
                     "datasets_failed": [d["path"] for d in r["datasets"] if not d["ok"]],
                     "messages": [m for m in r["messages"] if "INTACT" not in m and "NOTE" not in m][:20]})
    tampered = [r["version"] for r in rows if r["status"] == "tampered"]
    intact = [r["version"] for r in rows if r["ok"]]
    # unsigned (nothing recorded) or still registering: neither proven intact nor evidence of tampering
    unverified = [r["version"] for r in rows if not r["ok"] and r["status"] != "tampered"]
    res = {"incident_id": record.incident_id, "model": record.model_name, "checked_at": now_iso(),
           "versions": rows, "tampered": tampered, "intact": intact, "unverified": unverified,
           "fallback_candidate": max(intact, key=int) if intact else None}
    _write(out, res)
    inc.add_event(record, "artifacts_verified", actor="aiir-audit",
                  details={"tampered": tampered, "intact": intact})
    return res


def affected_decisions(record: IncidentRecord, *, target=None) -> dict[str, Any]:
    """The blast radius of every tampered version: decisions it served since its registration."""
    import pandas as pd

    from aiir import forensics as fx
    from aiir import registry
    from aiir.targets.base import DECISION_FIELDS

    out = record.workdir / AFFECTED_FILE
    if (prev := _read(out)) is not None:
        return prev
    ver = _read(record.workdir / VERIFICATION_FILE) or verify_artifacts(record)
    if target is None:
        from aiir.targets.registry import get_target

        target = get_target(record.target_kind, record.target_name)
    per_version = {}
    for v in ver["tampered"]:
        since = None
        for e in registry.read_alias_log():
            if e.get("model") == record.model_name and str(e.get("to_version")) == str(v):
                since = e["at"]
                break
        rows = [r for r in target.decisions(since, None) if str(r.get("model_version")) == str(v)]
        df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(DECISION_FIELDS))
        d = record.workdir / "forensics" / f"v{v}"
        br = fx.blast_radius(df, model=record.model_name, version=str(v), since=since, until=None, out_dir=d)
        per_version[str(v)] = {"since": since, "decisions": br["decisions"], "clients_affected": br["clients_affected"],
                               "blast_radius": str(d / fx.BLAST_RADIUS_FILE)}
    res = {"incident_id": record.incident_id, "model": record.model_name, "target": target.ref,
           "versions": per_version, "decisions": sum(x["decisions"] for x in per_version.values())}
    return _write(out, res)
