"""Operator extra links: buttons on a task instance that open the incident console's pages.

Airflow 3 computes a link on the worker when the task finishes (``get_link``) and stores it as an XCom;
the UI shows the stored URL. The URL names only the DAG, the run and what to show
(``/aiir/runs/<dag_id>/<run_id>/<what>``): the console resolves the incident of that run when the
button is pressed, so a link never goes stale and needs no lookup here. Light: no import beyond the SDK.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

CONSOLE_PREFIX = "/aiir"


def console_url(dag_id: str, run_id: str, what: str) -> str:
    """``<api base url>/aiir/runs/<dag_id>/<run_id>/<what>`` (path segments percent-encoded)."""
    base = os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/")
    return f"{base}{CONSOLE_PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/{quote(what, safe='')}"


class _ConsoleLink(BaseOperatorLink):
    what: ClassVar[str] = "incident"
    label: ClassVar[str] = "Incident"

    @property
    def name(self) -> str:
        return self.label

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return console_url(ti_key.dag_id, ti_key.run_id, self.what)


class IncidentLink(_ConsoleLink):
    what, label = "incident", "Incident console"


class FindingsLink(_ConsoleLink):
    what, label = "findings", "Check findings (findings.json)"


class DriftReportLink(_ConsoleLink):
    what, label = "drift_report", "Evidently drift report"


class EvidenceLink(_ConsoleLink):
    what, label = "evidence", "Evidence bundle"


class ReportLink(_ConsoleLink):
    what, label = "report", "Incident report"


LINK_CLASSES = (IncidentLink, FindingsLink, DriftReportLink, EvidenceLink, ReportLink)
