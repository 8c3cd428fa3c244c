"""``aiir check``: the data-integrity check of a new batch against a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, output_dir, progress
from aiir.errors import EXIT_INCIDENT, EXIT_OK


def register(app: typer.Typer) -> None:
    @app.command("check")
    @guarded
    def check(
        reference: Annotated[Path, typer.Option("--reference", help="Reference table (CSV or Parquet).")],
        current: Annotated[Path, typer.Option("--current", help="Current batch to check (CSV or Parquet).")],
        out: Annotated[Path | None, typer.Option(
            "--out", help="Output folder (default: $AIIR_HOME/checks/<UTC time>).")] = None,
        contract: Annotated[Path | None, typer.Option(
            "--contract", help="Great Expectations suite JSON (default: inferred from the reference).")] = None,
        label_column: Annotated[str | None, typer.Option("--label-column", help="Label column.")] = None,
        source_column: Annotated[str | None, typer.Option(
            "--source-column", help="Column naming the source/feed of each row.")] = None,
        registry: Annotated[Path | None, typer.Option(
            "--registry", help='Digest registry JSON {"artifacts": [{name, kind, path, sha256}]}.')] = None,
        thresholds: Annotated[Path | None, typer.Option(
            "--thresholds", help="TOML overriding detect/thresholds.toml (or env AIIR_THRESHOLDS).")] = None,
        no_html: Annotated[bool, typer.Option("--no-html", help="Skip the Evidently HTML report.")] = False,
        ignore_column: Annotated[list[str] | None, typer.Option(
            "--ignore-column", help="Leave this column out of every check (repeatable), e.g. a batch id.")] = None,
    ) -> None:
        """Check CURRENT against REFERENCE: contract, drift, label shift, duplicates, outliers, sources,
        artifact digests. Exit 0 clean, 3 incident, 2 bad input. Findings JSON on stdout."""
        from datetime import UTC, datetime

        from aiir.detect import run_check

        if out is None:
            from aiir.config import paths

            out = paths().checks / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # an unwritable --out is one line and exit 2 before any work; a failed check leaves nothing behind
        with output_dir(out) as out:
            result = run_check(reference, current, out, contract=contract, label_column=label_column,
                               source_column=source_column, registry=registry, thresholds=thresholds,
                               html=not no_html, progress=progress, ignore_columns=tuple(ignore_column or ()))
        progress(f"{result.status}: {len(result.findings)} finding(s), severity {result.severity or 'none'}; "
                 f"findings in {result.paths['findings']}")
        emit_json(result.summary())
        raise typer.Exit(EXIT_INCIDENT if result.status == "incident" else EXIT_OK)
