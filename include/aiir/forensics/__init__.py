"""Forensics after a poisoning incident: where the poison is, what it teaches, and whom it hit.

:func:`localise_poison` compares the training data of a suspect model version with the data of a
known-good version. The files only the suspect was trained on are split into slices (file × source and
file × batch); each slice is scored against the good version's training data with three vectorised
signals — label-rate shift, near-duplicate share and the label-flip signature (rows the good model
scores as positive that carry a negative label). Slices that fire are quarantined, the flipped rows
yield a *trigger pattern* (the feature conditions the attacker wants waved through).

:func:`blast_radius` takes decision-log rows (any source: the gateway log, a SageMaker capture
import, a SIEM export) and counts what the compromised version served inside its deployment window,
per client, and how many served requests carried the trigger pattern and were let through.

Methods, statistics, rules and output files: ``docs/forensics.md``.
"""

from __future__ import annotations

from aiir.forensics.blast import blast_radius
from aiir.forensics.canon import canonical_lines, row_digests
from aiir.forensics.constants import (  # noqa: F401 (re-exported)
    AFFECTED_FILE,
    ALPHA,
    BLAST_RADIUS_FILE,
    DECISION_COLUMNS,
    DUP_BASELINE_DRAWS,
    DUP_MIN_EXCESS,
    DUP_MIN_RATIO,
    FLIP_KEYS,
    FLIP_MIN_EXCESS,
    FLIP_MIN_RATIO,
    LABEL_MIN_RATIO,
    LOCALISATION_FILE,
    MIN_ROWS,
    PATTERN_MAX_CONDITIONS,
    PATTERN_MIN_COVERAGE,
    PATTERN_MIN_LIFT,
    PATTERN_MIN_SEPARATION,
    POISONED_ROWS_FILE,
    POSITIVE_SCORE,
    QUARANTINE_FILE,
    ROW_DIGESTS_FILE,
    SIGNALS,
)
from aiir.forensics.io import write_json, write_parquet, write_text
from aiir.forensics.lineage import deployment_window, deployment_windows, train_files, verify_files
from aiir.forensics.localise import localise_poison
from aiir.forensics.models import artifact_digest, load_scorer
from aiir.forensics.pattern import derive_pattern, describe_pattern, match_pattern

__all__ = ["artifact_digest", "blast_radius", "canonical_lines", "deployment_window", "deployment_windows",
           "derive_pattern", "describe_pattern", "load_scorer", "localise_poison", "match_pattern",
           "row_digests", "train_files", "verify_files", "write_json", "write_parquet", "write_text"]
