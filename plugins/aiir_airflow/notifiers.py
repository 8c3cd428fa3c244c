"""SIEM notifier and the containment pager.

Every playbook task reports its phase change through :class:`SiemNotifier` (ECS JSON for Elastic and
Splunk HEC events, written by ``aiir.siem``). A failed containment task pages through
:func:`page_on_failure` — an ECS alert with severity critical plus, when ``AIIR_PAGER_WEBHOOK`` is set,
an HTTP POST to that webhook.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseNotifier


def _incident_id(context: Any) -> str:
    # a detect DAG's playbook trigger: the incident it opened is the run it triggers (rendered, per map index)
    rid = getattr(context.get("task"), "trigger_run_id", None)
    if isinstance(rid, str) and rid.startswith("INC-"):
        return rid
    ti = context.get("ti")
    rec = None
    try:
        rec = ti.xcom_pull(task_ids="open_incident") if ti else None
    except Exception:
        rec = None
    if isinstance(rec, dict) and rec.get("incident_id"):
        return rec["incident_id"]
    params = context.get("params") or {}
    return str(params.get("incident_id") or context.get("run_id") or "unknown")


class SiemNotifier(BaseNotifier):
    """Emit one phase-change event (ECS + HEC) for the task this notifier is attached to."""

    template_fields = ("phase", "action")

    def __init__(self, phase: str, action: str, outcome: str = "success") -> None:
        super().__init__()
        self.phase = phase
        self.action = action
        self.outcome = outcome

    def notify(self, context: Any) -> None:
        from aiir import siem

        ti = context.get("ti")
        event = siem.phase_event(
            _incident_id(context), self.phase, self.action, self.outcome,
            details={"dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
                     "run_id": context.get("run_id"), "try_number": getattr(ti, "try_number", None)},
        )
        siem.EventSink().emit(event)


def page_on_failure(context: Any) -> None:
    """on_failure_callback of containment tasks: a critical alert to the SIEM, and the pager webhook."""
    from aiir import siem

    ti = context.get("ti")
    exc = context.get("exception")
    event = siem.phase_event(
        _incident_id(context), "contain", "containment_failed", "failure",
        details={"dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
                 "run_id": context.get("run_id"), "error": str(exc)[:2000], "page": True},
    )
    siem.EventSink().emit(event)
    url = os.environ.get("AIIR_PAGER_WEBHOOK")
    if url:
        import httpx

        try:
            httpx.post(url, json=siem.to_ecs(event), timeout=5.0)
        except httpx.HTTPError as err:  # paging must never mask the original failure
            print(f"aiir: pager webhook {url} failed: {err}")
