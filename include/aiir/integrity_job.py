"""The scheduled data-integrity job: pick the batch, run the check, open the incident when it fails.

One implementation for the Airflow DAG (``DataIntegrityCheckOperator``) and the CLI
(``aiir check-batch``). Which batch: the ``current`` argument, else the path in the triggering Asset
event's ``extra``, else the newest batch file in the model's batch folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput
from aiir.incident import from_check, now_iso, save


def newest_batch(folder: str | Path) -> Path:
    """The newest batch file in ``folder`` that no incident has quarantined (a quarantined batch is never
    "the newest batch": re-checking it would only re-open what was handled)."""
    from aiir.hashing import sha256_file
    from aiir.lifecycle import quarantined_batches

    folder = Path(folder)
    files = sorted([*folder.glob("*.parquet"), *folder.glob("*.csv")], key=lambda p: (p.stat().st_mtime, p.name))
    if not files:
        raise BadInput(str(folder), "no .parquet or .csv batch files to check")
    quarantined = quarantined_batches()
    for f in reversed(files):
        if sha256_file(f) not in quarantined:
            return f
    return files[-1]  # every batch is quarantined: run() reports that instead of checking it


def run(*, model_name: str, reference: str | None = None, current: str | None = None,
        label_column: str | None = None, source_column: str | None = None, target_kind: str = "local",
        target_name: str | None = None, regimes: list[str] | None = None,
        asset_events: list[dict[str, Any]] | None = None, run_id: str = "manual") -> dict[str, Any]:
    from aiir.bootstrap import digests_path
    from aiir.detect import run_check
    from aiir.playbook import model_profiles

    prof = model_profiles().get(model_name, {})
    reference = reference or prof.get("reference")
    if not reference:
        raise BadInput("reference", f"no reference dataset given and no profile for model '{model_name}'")
    if not current:
        paths = [e.get("path") for e in (asset_events or []) if isinstance(e, dict) and e.get("path")]
        if paths:
            current = paths[-1]
        elif prof.get("batches"):
            current = str(newest_batch(prof["batches"]))
        else:
            raise BadInput("current", "no batch given, no Asset event with a path, and no batch folder")
    from aiir import lifecycle
    from aiir.hashing import sha256_file

    batch_sha = sha256_file(current) if Path(current).is_file() else None
    q = lifecycle.quarantined_batches().get(batch_sha) if batch_sha else None
    if q is not None:
        return {"status": "already_quarantined", "current": str(current), "batch_sha256": batch_sha,
                "incident": None, "conf": None, "quarantined_by": q["incident_id"],
                "reason": f"batch {Path(current).name} was quarantined by incident {q['incident_id']} "
                          f"(sources {', '.join(q['sources']) or 'all'}); nothing new to check",
                "checked_at": now_iso()}
    label_column = label_column or prof.get("label")
    source_column = source_column or prof.get("source_column")
    safe_run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:100]
    out = config.paths().checks / f"{Path(current).stem}__{safe_run}"
    registry = digests_path() if digests_path().exists() else None
    result = run_check(reference, current, out, label_column=label_column, source_column=source_column,
                       registry=registry, ignore_columns=tuple(prof.get("ignore_columns", ()))).to_dict()
    summary: dict[str, Any] = {
        "status": result["status"], "severity": result.get("severity"), "check_dir": str(out),
        "current": str(current), "reference": str(reference), "findings": len(result.get("findings", [])),
        "suspect_sources": result.get("suspect_sources", []), "checked_at": result.get("checked_at", now_iso()),
        "incident": None, "conf": None,
    }
    summary["batch_sha256"] = batch_sha
    if result["status"] == "incident":
        fp = lifecycle.fingerprint(model=model_name, batch_sha256=batch_sha,
                                   finding_kinds=[f.get("kind") for f in result.get("findings", [])],
                                   sources=result.get("suspect_sources", []))
        summary["fingerprint"] = fp
        # One incident per check output: a re-run of the same check reuses the record it opened.
        marker = out / "incident_id"
        dup = None if marker.exists() else lifecycle.find_by_fingerprint(fp)
        if dup is not None:
            # One incident per root cause: the same batch, findings and sources were already handled.
            summary.update(status="duplicate", duplicate_of=dup["incident_id"],
                           reason=f"incident {dup['incident_id']} ({dup['state']}) already covers this batch's "
                                  "findings; nothing new opened")
            write_json_summary(out, summary)
            return summary
        record = from_check(result, model_name=model_name, target_kind=target_kind,
                            target_name=target_name or model_name, check_dir=out, regimes=regimes,
                            fingerprint=fp)
        if marker.exists():
            from aiir.incident import load

            record = load(marker.read_text().strip())
        else:
            save(record)
            lifecycle.init_state(record, fingerprint_value=fp,
                                 batch={"path": str(current), "sha256": batch_sha})
            marker.write_text(record.incident_id)
        summary["incident"] = record.to_dict()
        conf = record.to_dict()
        conf.pop("kind", None)
        summary["conf"] = conf
        summary["playbook"] = record.kind
        summary["playbook_dag_id"] = record.playbook.dag_id
    write_json_summary(out, summary)
    return summary


def write_json_summary(out: Path, summary: dict[str, Any]) -> None:
    from aiir.jsonio import write_json

    write_json(out / "summary.json", summary)
