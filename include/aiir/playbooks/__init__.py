"""Playbooks as definitions (:mod:`.base`), found through a registry (:mod:`.registry`), run by the
Airflow DAG builder (``aiir_airflow.playbook_dag``) and by the CLI (:mod:`.runner`)."""

from __future__ import annotations

from aiir.playbooks.base import PHASES, ROLES, Playbook, Step
from aiir.playbooks.registry import by_dag_id, for_findings, kinds, register
from aiir.playbooks.registry import get as get_playbook

__all__ = ["PHASES", "ROLES", "Playbook", "Step", "by_dag_id", "for_findings", "get_playbook", "kinds",
           "register"]
