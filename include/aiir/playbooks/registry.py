"""Playbooks are found, not wired: kind -> :class:`~aiir.playbooks.base.Playbook`.

The built-in playbooks are listed here; a separate package adds its own through the ``aiir.playbooks``
entry-point group (an entry point naming a Playbook object or a function returning one), and tests or
notebooks call :func:`register`. :func:`for_findings` picks the playbook an integrity check's findings
call for, so no check hard-codes a DAG.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from aiir.errors import BadInput
from aiir.playbooks.base import Playbook

ENTRY_POINT_GROUP = "aiir.playbooks"
BUILTIN: dict[str, str] = {
    "data_poisoning": "aiir.playbooks.poisoning:PLAYBOOK",
    "retrain_from_clean_data": "aiir.playbooks.retrain:PLAYBOOK",
    "adversarial_evasion": "aiir.playbooks.evasion:PLAYBOOK",
    "artifact_integrity": "aiir.playbooks.artifact_integrity:PLAYBOOK",
}
_REGISTERED: dict[str, Playbook] = {}


def register(playbook: Playbook) -> Playbook:
    _REGISTERED[playbook.kind] = playbook
    _load_all.cache_clear()
    return playbook


def refresh() -> None:
    _load_all.cache_clear()


def _resolve(spec: str) -> Playbook:
    mod, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(mod), attr)
    obj = obj() if callable(obj) and not isinstance(obj, Playbook) else obj
    if not isinstance(obj, Playbook):
        raise TypeError(f"{spec} is not a Playbook")
    return obj


@lru_cache(maxsize=1)
def _load_all() -> dict[str, Playbook]:
    from importlib.metadata import entry_points

    found: dict[str, Playbook] = {}
    for kind, spec in BUILTIN.items():
        found[kind] = _resolve(spec)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue
        try:
            found[ep.name] = _resolve(ep.value)
        except Exception as exc:  # a broken plugin must not take the built-in playbooks down
            import sys

            print(f"aiir: playbook entry point {ep.name}={ep.value} not loaded: {exc}", file=sys.stderr)
    found.update(_REGISTERED)
    return found


def kinds() -> list[str]:
    return sorted(_load_all())


def get(kind: str) -> Playbook:
    pbs = _load_all()
    if kind not in pbs:
        raise BadInput("playbook", f"unknown playbook '{kind}' (installed: {', '.join(sorted(pbs))})")
    return pbs[kind]


def by_dag_id(dag_id: str) -> Playbook:
    for pb in _load_all().values():
        if pb.dag_id == dag_id:
            return pb
    raise BadInput("dag_id", f"no playbook runs as DAG '{dag_id}'")


def incident_playbooks() -> list[Playbook]:
    return [pb for pb in _load_all().values() if pb.conf == "incident"]


def for_findings(findings: list[dict[str, Any]], default: str = "data_poisoning") -> Playbook:
    """The incident playbook whose ``finding_kinds`` best match the findings (most matches wins; ties go
    to the default, then to the kind's name)."""
    kinds_seen = [f.get("kind") for f in findings if isinstance(f, dict)]
    best, best_n = None, 0
    for pb in sorted(incident_playbooks(), key=lambda p: (p.kind != default, p.kind)):
        n = sum(1 for k in kinds_seen if k in pb.finding_kinds)
        if n > best_n:
            best, best_n = pb, n
    return best or get(default)
