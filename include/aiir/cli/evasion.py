"""``aiir scan-evasion`` (adversarial evasion / model extraction over served decisions) and
``aiir evasion profile`` (the reference profile the gateway's inline guard loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress
from aiir.errors import EXIT_INCIDENT, EXIT_OK

evasion_app = typer.Typer(help="Adversarial evasion: reference profiles for the inline guard.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("scan-evasion")(scan_evasion)
    app.add_typer(evasion_app, name="evasion")


@guarded
def scan_evasion(
    out: Annotated[Path, typer.Option("--out", help="Output folder (findings.json, suspect_decisions.csv).")],
    decision_log: Annotated[Path | None, typer.Option(
        "--decision-log", help="A gateway decision log (decisions.db).")] = None,
    target_kind: Annotated[str | None, typer.Option(
        "--target-kind", help="Instead of a log file: scan this target's served decisions (local, sagemaker, …).")] = None,
    target_name: Annotated[str | None, typer.Option("--target-name", help="The target's name (default: --model).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only decisions of this model.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time, epoch, or an age like 15m/2h/7d.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Exclusive end (same forms).")] = None,
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="Training/reference table (CSV/Parquet) or a saved profile (.json): enables the "
                            "out-of-distribution signal and scales features like the training data.")] = None,
    thresholds: Annotated[Path | None, typer.Option(
        "--thresholds", help="TOML overriding aiir/evasion/thresholds.toml.")] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Delayed labels of served decisions (CSV/Parquet with decision_id and label, e.g. "
                         "chargebacks): flags clients whose let-through decisions were later labelled positive "
                         "far more often than other clients' at the same scores (docs/evasion.md).")] = None,
) -> None:
    """Look for query-based evasion and model extraction in served decisions: near-duplicate probing,
    scores at the decision boundary, decision flips, out-of-distribution inputs, unusual rates — per
    client, per input cluster and across clients. Exit 0 clean, 3 incident, 2 bad input."""
    from aiir.errors import BadInput
    from aiir.evasion import scan

    if (decision_log is None) == (target_kind is None):
        raise BadInput("--decision-log", "give exactly one of --decision-log PATH or --target-kind KIND")
    if decision_log is not None:
        res = scan.scan_decision_log(decision_log, out, since=since, until=until, reference=reference,
                                     thresholds=thresholds, model=model, labels=labels, progress=progress)
    else:
        from aiir.targets import get_target

        name = target_name or model
        if not name:
            raise BadInput("--target-name", "give --target-name (or --model) with --target-kind")
        target = get_target(target_kind, name)
        try:
            res = scan.scan_target(target, out, since=since, until=until, reference=reference,
                                   thresholds=thresholds, labels=labels, progress=progress)
        finally:
            target.close()
    progress(f"{res.status}: {len(res.report['suspect_clients'])} suspect client(s), "
             f"{len(res.report['suspect_clusters'])} suspect cluster(s); findings in {res.paths['findings']}")
    emit_json(res.summary())
    raise typer.Exit(EXIT_INCIDENT if res.incident else EXIT_OK)


@evasion_app.command("profile")
@guarded
def make_profile(
    reference: Annotated[Path, typer.Option("--reference", help="Training/reference table (CSV or Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Profile JSON to write.")],
    columns: Annotated[str | None, typer.Option("--columns", help="Comma-separated features (default: every "
                                                                   "numeric column but --exclude).")] = None,
    exclude: Annotated[str, typer.Option("--exclude", help="Comma-separated columns to leave out (the label).")] = "",
) -> None:
    """Fit the reference profile (scaling + outlier model) for `aiir serve --guard-reference`."""
    from aiir.evasion.config import load_config
    from aiir.evasion.profile import profile_from_table

    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    prof = profile_from_table(reference, columns=cols, exclude=tuple(c.strip() for c in exclude.split(",") if c.strip()),
                              ood_quantile=load_config()["signals"]["ood_quantile"])
    prof.save(out)
    emit_json({"profile": str(out), "columns": prof.columns, "ood_threshold": prof.ood_threshold,
               "source": prof.source})
