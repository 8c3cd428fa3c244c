"""The scheduled evasion scan (the ``scan_evasion`` DAG, ``aiir scan-evasion --open-incident``): scan a
target's recent decisions and, on a finding, open the incident ``incident_adversarial_evasion`` runs.

One incident per root cause: a scan whose every suspect client an incident already covers
(:func:`aiir.lifecycle.client_coverage`) is reported as ``duplicate`` instead of opening another; a scan that
also names new clients opens an incident for those. Finding kinds do not decide: a scan that sees an attack
half-way finds fewer kinds than the next one, which sees all of it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiir import config
from aiir.incident import now_iso


def run(*, model_name: str, target_kind: str = "local", target_name: str | None = None, since: str = "1h",
        reference: str | None = None, thresholds: str | None = None, run_id: str = "manual",
        regimes: list[str] | None = None, labels: str | None = None) -> dict[str, Any]:
    """``labels``: a delayed-labels file (CSV/Parquet, ``decision_id`` + ``label``) for the label signal; ``None``
    or empty: off."""
    from aiir import lifecycle
    from aiir.evasion.scan import scan_target
    from aiir.incident import from_check, save
    from aiir.jsonio import write_json
    from aiir.playbook import model_profiles
    from aiir.targets import get_target

    prof = model_profiles().get(model_name, {})
    reference = reference or prof.get("reference") or None
    target_name = target_name or model_name
    safe_run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:100]
    out = config.paths().checks / f"evasion__{safe_run}"
    target = get_target(target_kind, target_name)
    try:
        res = scan_target(target, out, since=since, reference=reference, thresholds=thresholds,
                          labels=labels or None)
    finally:
        target.close()
    rep = res.report
    suspects = [s["client_id"] for s in rep["suspect_clients"]]
    summary: dict[str, Any] = {"status": res.status, "severity": rep["severity"], "check_dir": str(out),
                               "decisions": rep["decisions"], "clients": rep["clients"], "suspect_clients": suspects,
                               "suspect_clusters": [c["cluster_id"] for c in rep["suspect_clusters"]],
                               "checked_at": rep["scanned_at"], "incident": None, "conf": None,
                               "labels": ({k: rep["labels"].get(k) for k in ("file", "matched", "unmatched")}
                                          if rep.get("labels") else None)}
    if res.incident:
        from aiir.locks import model_lock
        from aiir.playbooks import for_findings

        kind = for_findings(rep["findings"]).kind
        marker = out / "incident_id"
        # one scan at a time decides and opens (the DAG's max_active_runs=1 does not cover the CLI)
        with model_lock(f"{model_name}.evasion-open", timeout=120):
            covered = {} if marker.exists() else lifecycle.client_coverage(
                model=model_name, playbook=kind, suspects=rep["suspect_clients"])
            new = [c for c in suspects if c not in covered]
            if covered:
                summary["covered"] = covered
            if suspects and not new:  # (a finding naming no client at all is never a duplicate)
                first = covered[suspects[0]]
                summary.update(status="duplicate", duplicate_of=first,
                               reason="incident " + ", ".join(sorted(set(covered.values())))
                                      + " already covers these clients; nothing new opened")
                write_json(out / "summary.json", summary)
                return summary
            fp = lifecycle.fingerprint(model=model_name, batch_sha256=None,
                                       finding_kinds=[f["kind"] for f in rep["findings"]], sources=new)
            summary["fingerprint"] = fp
            # the incident names the clients no incident covers yet (the findings keep the whole picture)
            record = from_check({"checked_at": rep["scanned_at"] or now_iso(), "severity": rep["severity"],
                                 "findings": rep["findings"], "suspect_sources": new},
                                model_name=model_name, target_kind=target_kind, target_name=target_name,
                                check_dir=out, regimes=regimes, fingerprint=fp)
            if marker.exists():
                from aiir.incident import load

                record = load(marker.read_text().strip())
            else:
                record.opened_by = "scan_evasion"
                save(record)
                lifecycle.init_state(record, fingerprint_value=fp, batch=None)
                marker.write_text(record.incident_id)
        summary["incident"] = record.to_dict()
        conf = record.to_dict()
        conf.pop("kind", None)
        summary["conf"] = conf
        summary["playbook"] = record.kind
        summary["playbook_dag_id"] = record.playbook.dag_id
    write_json(Path(out) / "summary.json", summary)
    return summary
