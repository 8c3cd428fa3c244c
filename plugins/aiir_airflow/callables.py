"""Small callables used by standard operators in aiir's DAGs (kept out of the DAG files)."""

from __future__ import annotations

from typing import Any


def incident_opened(check_summary: dict[str, Any] | None) -> bool:
    """ShortCircuit condition: continue only when the integrity check opened an incident."""
    return bool(check_summary and check_summary.get("status") == "incident" and check_summary.get("incident"))


def approval_required(conf: dict[str, Any]) -> str:
    """Branch: wait for a person before promotion, or promote straight away."""
    return "await_approval" if conf.get("require_approval") else "no_approval_needed"


def noop() -> None:
    """The latency probe's task: does nothing, so what is measured is the scheduler and worker start."""
