"""The human-readable drift report: Evidently 0.7 ``DataDriftPreset`` rendered to HTML on a sample.

Evidently is far too slow and memory-hungry for the decision on large data (see docs/benchmarks.md), so the
decision comes from :mod:`aiir.detect.drift`; this report is for people, on at most ``max_rows`` rows of
each side (deterministic sample), with the column types aiir inferred.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from aiir.detect.signals import SEED

if TYPE_CHECKING:
    import pandas as pd


def drift_report_html(ref: pd.DataFrame, cur: pd.DataFrame, types: dict[str, str], out: Path,
                      *, max_rows: int = 5000) -> dict:
    """Write the report; returns {"path", "sampled", "reference_rows", "current_rows"}."""
    num = [c for c, t in types.items() if t == "numerical" and c in cur.columns]
    cat = [c for c, t in types.items() if t == "categorical" and c in cur.columns]
    cols = num + cat
    r = ref[cols].sample(n=max_rows, random_state=SEED) if len(ref) > max_rows else ref[cols]
    c = cur[cols].sample(n=max_rows, random_state=SEED) if len(cur) > max_rows else cur[cols]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
        snapshot = Report([DataDriftPreset(columns=cols)]).run(
            current_data=Dataset.from_pandas(c.reset_index(drop=True), data_definition=dd),
            reference_data=Dataset.from_pandas(r.reset_index(drop=True), data_definition=dd))
        snapshot.save_html(str(out))
    return {"path": str(out), "sampled": len(ref) > max_rows or len(cur) > max_rows,
            "reference_rows": len(r), "current_rows": len(c)}
