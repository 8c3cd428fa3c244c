"""The scheduled evasion scan as an Airflow operator (thin: :func:`aiir.evasion.job.run` decides)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from aiir_airflow.operators import _fail_on_aiir_error

if TYPE_CHECKING:
    from airflow.sdk import Context


class EvasionScanOperator(BaseOperator):
    """Scan a target's served decisions of the last ``since`` for evasion / extraction; open the incident
    ``incident_adversarial_evasion`` runs when it finds one (pushed as XCom like the integrity check)."""

    template_fields: Sequence[str] = ("model_name", "target_kind", "target_name", "since", "reference", "labels")
    ui_color = "#f6b26b"

    def __init__(self, *, model_name: str, target_kind: str = "local", target_name: str = "", since: str = "1h",
                 reference: str = "", labels: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.target_kind = target_kind
        self.target_name = target_name
        self.since = since
        self.reference = reference
        self.labels = labels  # delayed labels file (decision_id, label); empty: the label signal is off

    @_fail_on_aiir_error
    def execute(self, context: Context) -> dict[str, Any]:
        from aiir.evasion import job

        out = job.run(model_name=self.model_name, target_kind=self.target_kind,
                      target_name=self.target_name or self.model_name, since=self.since or "1h",
                      reference=self.reference or None, labels=self.labels or None, run_id=context["run_id"])
        self.log.info("evasion scan of %s: %s, %d decisions, suspects %s", self.target_name or self.model_name,
                      out["status"], out["decisions"], out["suspect_clients"][:10])
        return out
