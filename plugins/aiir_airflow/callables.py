"""Small callables used by standard operators in aiir's DAGs (kept out of the DAG files)."""

from __future__ import annotations

from typing import Any


def approval_branch(playbook: str, step: str, subject: Any) -> str:
    """Branch of an approval step: ask a person (the step's task) or go straight on (its not-needed task),
    by the step's own condition (``Step.when``) over the incident record or the retrain conf."""
    from aiir.incident import IncidentRecord
    from aiir.playbooks import get_playbook

    pb = get_playbook(playbook)
    s = pb.step(step)
    if pb.conf == "incident":
        subject = IncidentRecord(**subject)
    else:
        from aiir import recovery

        subject = recovery.validate_conf(dict(subject))
    return s.name if s.condition()(subject) else s.branch_ids[1]

