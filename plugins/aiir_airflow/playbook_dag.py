"""Build a playbook's tasks from its definition (aiir.playbooks), inside a ``@dag`` function.

The DAG file keeps its docstring, ``@dag`` arguments and Params; the task list and order come from the
definition, so the DAG, the CLI (``aiir incident run``) and the report can never disagree on the steps.
Roles map to operators: ``contain`` → IsolateEndpointOperator (first task, pages on failure), ``open`` →
OpenIncidentOperator, ``step``/``report`` → PlaybookStepOperator (``report`` runs ALL_DONE), ``preserve`` →
PreserveEvidenceOperator, ``child`` → TriggerPlaybookOperator (waits, deferred, for the child DAG's run),
``approval`` → a branch on ``require_approval`` to an Airflow HITL ApprovalOperator or straight on.
Retrain playbooks (conf "retrain") get RecoveryStepOperator for their steps.
"""

from __future__ import annotations

from typing import Any

import pendulum


def _siem(step):
    from aiir_airflow.notifiers import SiemNotifier

    return SiemNotifier(step.siem_phase, step.event) if step.siem_phase and step.event else None


def playbook_tasks(kind: str) -> dict[str, Any]:
    """Create every task of playbook ``kind`` in the current DAG and wire its order; returns them by step."""
    from airflow.sdk import TriggerRule

    from aiir.playbooks import get_playbook
    from aiir_airflow.notifiers import page_on_failure
    from aiir_airflow.operators import (
        IsolateEndpointOperator,
        OpenIncidentOperator,
        PlaybookStepOperator,
        PreserveEvidenceOperator,
        RecoveryStepOperator,
        TriggerPlaybookOperator,
    )

    pb = get_playbook(kind)
    opener = next((s.name for s in pb.steps if s.role == "open"), None)
    record_xcom = f"{{{{ ti.xcom_pull(task_ids='{opener}') }}}}" if opener else None
    tasks: dict[str, Any] = {}
    entry: dict[str, Any] = {}  # the task a step's upstream edges attach to (approval: its branch)
    for s in pb.steps:
        kw: dict[str, Any] = {"task_id": s.name, "doc_md": f"**{s.phase}** — {s.title}"}
        if s.retries is not None:
            kw["retries"] = s.retries
        if s.asset:
            from aiir_airflow import assets

            kw["outlets"] = [assets.by_name(s.asset)]
        cb = _siem(s)
        if cb is not None:
            kw["on_success_callback"] = cb
        if s.role == "contain":
            t = IsolateEndpointOperator(playbook=kind, step=s.name, priority_weight=100,
                                        retry_delay=pendulum.duration(seconds=2),
                                        on_failure_callback=page_on_failure, **kw)
        elif s.role == "open":
            t = OpenIncidentOperator(playbook=kind, step=s.name, **kw)
        elif s.role == "preserve":
            t = PreserveEvidenceOperator(playbook=kind, step=s.name, incident=record_xcom, **kw)
        elif s.role in ("step", "report") and pb.conf == "retrain":
            t = RecoveryStepOperator(playbook=kind, step=s.name, **kw)
        elif s.role in ("step", "report"):
            if s.role == "report":
                kw["trigger_rule"] = TriggerRule.ALL_DONE
            t = PlaybookStepOperator(playbook=kind, step=s.name, incident=record_xcom, **kw)
        elif s.role == "child":
            child = get_playbook(s.child)
            src, _, key = s.conf_from.partition(".")
            run_id = (f"{{{{ ti.xcom_pull(task_ids='{opener}')['incident_id'] }}}}" if opener else "{{ run_id }}")
            t = TriggerPlaybookOperator(trigger_dag_id=child.dag_id,
                                        trigger_run_id=f"{run_id}-{child.extra.get('run_suffix', child.kind)}",
                                        conf=f"{{{{ ti.xcom_pull(task_ids='{src}')['{key}'] }}}}",
                                        wait_for_completion=True, poke_interval=3, **kw)
        elif s.role == "approval":
            from datetime import timedelta

            from airflow.providers.standard.operators.empty import EmptyOperator
            from airflow.providers.standard.operators.python import BranchPythonOperator

            from aiir_airflow import callables
            from aiir_airflow.operators import PlaybookApprovalOperator

            ask_id, skip_id = s.branch_ids
            subject = record_xcom if pb.conf == "incident" else "{{ params }}"
            needed = BranchPythonOperator(task_id=ask_id, python_callable=callables.approval_branch,
                                          op_args=[kind, s.name, subject])
            t = PlaybookApprovalOperator(
                task_id=s.name, playbook=kind, step=s.name, subject=f"{pb.title}: {s.title}",
                body="{{ params.incident_id }}: " + s.title + ". Approve to go on; reject (with a reason) "
                     "to stop here.", response_timeout=timedelta(hours=12), doc_md=kw["doc_md"],
                incident=record_xcom if pb.conf == "incident" else None)
            not_needed = EmptyOperator(task_id=skip_id)
            needed >> [t, not_needed]
            entry[s.name] = needed
            tasks[s.name] = t
            tasks[skip_id] = not_needed
            continue
        else:  # pragma: no cover - Step validates roles
            raise ValueError(f"unknown role {s.role}")
        tasks[s.name] = entry[s.name] = t
    for s in pb.steps:
        for up in s.after:
            ups = [tasks[up]]
            if pb.step(up).role == "approval":
                ups.append(tasks[pb.step(up).branch_ids[1]])
                tasks[s.name].trigger_rule = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
            for u in ups:
                u >> entry[s.name]
    return tasks
