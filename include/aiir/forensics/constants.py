"""Documented rules of the forensics step (see docs/forensics.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:

    pass

# ----------------------------------------------------------------------------------- documented rules
ALPHA = 1e-3  # family-wise significance; Bonferroni over (tested slices x 3 signals)
POSITIVE_SCORE = 0.5  # the good model "thinks positive" at or above this score
MIN_ROWS = 30  # slices with fewer rows are reported but not tested
LABEL_MIN_RATIO = 1.5  # label shift effect floor: max(p/p_ref, p_ref/p)
DUP_MIN_RATIO = 2.0  # near-duplicate share must be >= this x the reference baseline ...
DUP_MIN_EXCESS = 0.01  # ... and exceed it by at least this share of the slice's rows
FLIP_MIN_RATIO = 3.0  # label-flip share must be >= this x the reference baseline ...
FLIP_MIN_EXCESS = 0.01  # ... and exceed it by at least this share of the slice's rows
# Near-duplicate keys: the integrity check's own (aiir.detect.stats.near_duplicate_keys, [duplicates] thresholds)
DUP_BASELINE_DRAWS = 5  # reference subsamples averaged for the duplicate baseline of one slice size
# Trigger pattern
PATTERN_MIN_SEPARATION = 0.3  # flipped share - reference share of a condition
PATTERN_MIN_LIFT = 1.5  # flipped share / reference share
PATTERN_MAX_CONDITIONS = 6
PATTERN_MIN_COVERAGE = 0.5  # the conjunction must still cover this share of the flipped rows

SIGNALS = ("label_shift", "duplicates", "label_flip")
# label_flip is tested in both directions (each against its own reference baseline):
# to_negative: the good model scores the row positive (>= POSITIVE_SCORE), the label says negative;
# to_positive: the good model scores the row negative, the label says positive.
FLIP_KEYS = {"to_negative": "label_flip", "to_positive": "label_flip_to_positive"}

LOCALISATION_FILE = "poison_localisation.json"
QUARANTINE_FILE = "quarantine.json"
ROW_DIGESTS_FILE = "quarantined_rows.txt"
POISONED_ROWS_FILE = "poisoned_rows.parquet"
BLAST_RADIUS_FILE = "blast_radius.json"
AFFECTED_FILE = "affected_decisions.csv"

DECISION_COLUMNS = ("decision_id", "ts", "client_id", "model", "model_version", "prediction", "score",
                    "features")


