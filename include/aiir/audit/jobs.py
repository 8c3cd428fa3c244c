"""The two scheduled/triggered audit jobs, one implementation for the Airflow DAGs and the CLI.

* :func:`decision_trace` — the ``audit_decision_trace`` DAG: trace one or many decision ids, or every
  decision of one client in a time window, into one sealed audit package.
* :func:`artifact_integrity` — the ``artifact_integrity`` DAG: re-verify every registered model version and
  training dataset against its signature; on a mismatch open an incident (playbook ``artifact_integrity``,
  ATLAS AML.T0010 / AML.T0018, OWASP ML06 / ML10) through the incident record and timeline.

Both return small JSON-able summaries (XCom).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput

MAX_WINDOW_DECISIONS = 10_000
PLAYBOOK_KIND = "artifact_integrity"  # aiir.playbooks: the response to a tampered artifact


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:100] or "run"


def select_decisions(*, target_kind: str = "local", target_name: str | None = None, since: str | None = None,
                     until: str | None = None, client: str | None = None, limit: int = MAX_WINDOW_DECISIONS,
                     target: Any = None) -> list[str]:
    """Decision ids served in [since, until) (to ``client`` if given), oldest first, through the target."""
    if not since and not until:
        raise BadInput("since", "give decision ids, or a time window (since and/or until)")
    if target is None and target_kind == "local":
        from aiir.gateway import DECISIONS_FILE
        from aiir.gateway.decision_log import DecisionLog

        from .trace import _local_logs

        ids: list[str] = []
        for _name, sdir in _local_logs(target_name, None):
            p = sdir / DECISIONS_FILE
            if p.exists():
                ids += [r["decision_id"] for r in DecisionLog(p, create=False).iter_rows(
                    since=since, until=until, client=client, limit=limit)]
        return ids[:limit]
    if target is None:
        from aiir.targets.registry import get_target

        if not target_name:
            raise BadInput("target_name", f"which {target_kind} target served the decisions?")
        target = get_target(target_kind, target_name)
    rows = target.decisions(since, until, limit=limit)
    return [str(r["decision_id"]) for r in rows if client is None or str(r.get("client_id")) == str(client)][:limit]


def decision_trace(*, decision_ids: list[str] | None = None, since: str | None = None, until: str | None = None,
                   client: str | None = None, target_kind: str = "local", target_name: str | None = None,
                   purpose: str = "", actor: str | None = None, keys: list[bytes] | None = None,
                   formats: tuple[str, ...] = ("json", "html", "md"), out: str | Path | None = None,
                   context: dict[str, Any] | None = None, signing_key: Any = None) -> dict[str, Any]:
    from .trace import trace

    ids = [str(i).strip() for i in (decision_ids or []) if str(i).strip()]
    if not ids:
        ids = select_decisions(target_kind=target_kind, target_name=target_name or None, since=since or None,
                               until=until or None, client=client or None)
        if not ids:
            raise BadInput("since", f"no decision served in [{since}, {until})"
                                    + (f" to client '{client}'" if client else ""))
    res = trace(ids, target_kind=target_kind, target_name=target_name or None, formats=formats, out=out, keys=keys,
                actor=actor, purpose=purpose, context=context, signing_key=signing_key)
    return {"audit_id": res["audit_id"], "ok": res["ok"], "bundle": res.get("bundle"), "files": res.get("files"),
            "decisions": len(ids), "found": sum(1 for e in res["decisions"] if e["found"]),
            "problems": {e["decision_id"]: e["problems"] for e in res["decisions"] if e["problems"]}}


def artifact_integrity(*, model: str | None = None, run_id: str = "manual", target_kind: str = "local",
                       regimes: list[str] | None = None) -> dict[str, Any]:
    """Re-verify everything registered; write ``checks/artifact-integrity__<run>/findings.json``; open one
    incident per affected model (idempotent per run: a retry reuses the incidents it opened)."""
    from aiir import incident as inc

    from .integrity import verify_registered

    rep = verify_registered(model)
    out = config.paths().checks / f"artifact-integrity__{_safe(run_id)}"
    out.mkdir(parents=True, exist_ok=True)
    sev_rank = {"low": 0, "medium": 1, "high": 2, "critical": 3}
    severity = max((f["severity"] for f in rep["findings"]), key=lambda s: sev_rank.get(s, 0), default=None)
    # unsigned versions/datasets (nothing recorded to check: registered before signing existed) are a gap
    # to close with `aiir sign`, reported as such; they open no tampering incident. Versions still being
    # registered are checked on the next run.
    status = "incident" if rep["findings"] else ("unsigned" if rep["unsigned"] else "clean")
    report = {"status": status, "severity": severity,
              "checked_at": rep["checked_at"], "versions": rep["versions"], "findings": rep["findings"],
              "unsigned": rep["unsigned"], "registering": rep["registering"], "results": rep["results"]}
    (out / "findings.json").write_text(json.dumps(report, indent=2, default=str))
    from aiir import lifecycle

    incidents, duplicates = [], []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for f in rep["findings"]:
        by_model.setdefault(f["model"], []).append(f)
    for name, fs in sorted(by_model.items()):
        marker = out / f"incident_id.{name}"
        # one root cause, one incident: the same mismatches (the daily run sees them again until someone
        # restores the artifact) are reported as a duplicate of the incident that has them, open or closed
        fp = _tampering_fingerprint(name, fs)
        dup = None if marker.exists() else lifecycle.find_by_fingerprint(fp)
        if dup is not None:
            duplicates.append({"model": name, "duplicate_of": dup["incident_id"], "state": dup["state"],
                               "findings": len(fs), "fingerprint": fp})
            continue
        if marker.exists():
            record = inc.load(marker.read_text().strip())
        else:
            record = inc.validate_conf({
                "model_name": name, "target_kind": target_kind, "target_name": name,
                "detected_at": rep["checked_at"],
                "severity": max((f["severity"] for f in fs), key=lambda s: sev_rank.get(s, 0)),
                "check_dir": str(out), "findings": fs, "suspect_sources": [],
                "opened_by": "artifact_integrity", **({"regimes": regimes} if regimes is not None else {})},
                kind=PLAYBOOK_KIND)
            inc.save(record)
            lifecycle.init_state(record, fingerprint_value=fp)
            marker.write_text(record.incident_id)
        d = record.to_dict()
        incidents.append({"incident_id": record.incident_id, "model": name, "severity": d.get("severity"),
                          "findings": len(fs), "kind": record.kind,
                          "conf": {k: v for k, v in d.items() if k != "kind"}})
    status = report["status"]
    if status == "incident" and not incidents:
        status = "duplicate"  # every mismatch belongs to an incident already opened for it
    summary = {"status": status, "severity": severity, "check_dir": str(out), "versions": rep["versions"],
               "findings": len(rep["findings"]), "incidents": incidents, "duplicates": duplicates,
               "unsigned": rep["unsigned"], "registering": rep["registering"],
               # what the DAG's trigger task is mapped over: one playbook run per new incident, none when clean
               "triggers": [{"trigger_run_id": i["incident_id"], "conf": i["conf"]} for i in incidents],
               "checked_at": rep["checked_at"],
               "messages": [m for r in rep["results"] for m in r["messages"] if not m.split(": ", 1)[-1].startswith(
                   ("INTACT", "NOTE"))][:50]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _tampering_fingerprint(model: str, findings: list[dict[str, Any]]) -> str:
    """The mismatches themselves (which artifact of which version, and what differs), not when they were seen."""
    from aiir import lifecycle

    what = sorted(f"{f.get('artifact_kind')}|{f.get('version')}|{f.get('title')}|{f.get('detail')}" for f in findings)
    digest = hashlib.sha256("\n".join(what).encode()).hexdigest()
    return lifecycle.fingerprint(model=model, batch_sha256=digest, finding_kinds=["artifact_tampering"],
                                 sources=sorted({str(f.get("version")) for f in findings}))
