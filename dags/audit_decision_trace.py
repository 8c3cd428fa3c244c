"""
### Decision audit trace

Answers an auditor's question about served decisions — **which model made it, trained on what, was
anything tampered with, who promoted it, what was serving at that moment, which incident touched it** —
and seals the answer as an evidence bundle (`AUDIT-…` in the evidence store: `trace.json`,
`trace.html`, `trace.md`, the logs it relied on, the signatures it checked).

Trigger with **decision ids** (one or many), or with a **time window and a client** (every decision
served to that client in [since, until)). With *decrypt* on, encrypted input features are decrypted
with the key in the connection `aiir_decision_log_key`; every trace is recorded in the hash-chained
access log either way. Same code as `aiir trace`; see `docs/audit.md`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag

from aiir_airflow.audit import DecisionTraceOperator


@dag(
    dag_id="audit_decision_trace",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"owner": "ml-security", "retries": 1, "retry_delay": pendulum.duration(seconds=30)},
    tags=["aiir", "audit", "trace"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    params={
        "decision_ids": Param([], type="array", items={"type": "string"}, title="Decision ids",
                              description="One or many; leave empty to select by time window and client."),
        "since": Param("", type="string", title="Window start (ISO-8601 or an age such as 24h)"),
        "until": Param("", type="string", title="Window end (empty: now)"),
        "client": Param("", type="string", title="Client id (with a window)"),
        "target_kind": Param("local", type="string", enum=["local", "sagemaker", "kubernetes"]),
        "target_name": Param("", type="string", title="Serving target (empty: every local gateway)"),
        "purpose": Param("", type="string", title="Why (recorded in the access log)"),
        "decrypt": Param(False, type="boolean", title="Decrypt encrypted input features"),
    },
)
def audit_decision_trace():
    DecisionTraceOperator(
        task_id="trace",
        decision_ids="{{ params.decision_ids }}",
        since="{{ params.since }}",
        until="{{ params.until }}",
        client="{{ params.client }}",
        target_kind="{{ params.target_kind }}",
        target_name="{{ params.target_name }}",
        purpose="{{ params.purpose }}",
        decrypt="{{ params.decrypt }}",
    )


audit_decision_trace()
