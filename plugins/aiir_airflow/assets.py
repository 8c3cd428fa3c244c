"""Every Asset aiir's DAGs produce or consume, in one place (imported by producers and consumers)."""

from __future__ import annotations

from airflow.sdk import Asset

#: New training-data batches landing for the fraud model. Producers: ingestion jobs, `aiir demo arrive`.
TRAINING_BATCHES = Asset(name="fraud_training_batches", uri="file:///aiir/data/fraud/batches", group="aiir")
#: Integrity-check results (findings.json) — produced by data_integrity_check.
INTEGRITY_FINDINGS = Asset(name="integrity_findings", uri="file:///aiir/checks", group="aiir")
#: Incident records opened by a check or a person.
INCIDENTS = Asset(name="incidents", uri="file:///aiir/incidents", group="aiir")
#: A model version promoted after a gated, clean retraining.
PROMOTED_MODELS = Asset(name="promoted_models", uri="file:///aiir/registry/promoted", group="aiir")


def by_name(name: str) -> Asset:
    """The Asset a playbook step names (``Step.asset``)."""
    for a in (TRAINING_BATCHES, INTEGRITY_FINDINGS, INCIDENTS, PROMOTED_MODELS):
        if a.name == name:
            return a
    raise ValueError(f"no aiir Asset named {name!r}")
