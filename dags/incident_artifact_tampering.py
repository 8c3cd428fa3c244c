"""
### Incident: tampered model or training data

Triggered by `artifact_integrity` when a registered model version or training dataset no longer matches
the model-signing signature recorded at registration (MITRE ATLAS AML.T0010 AI Supply Chain Compromise,
AML.T0018 Manipulate AI Model; OWASP ML06, ML10). The steps come from the playbook definition
`aiir.playbooks.artifact_integrity`:

| phase | task | does |
|---|---|---|
| RS.MI | `isolate_endpoint` | all traffic to last-known-good (or quarantine) |
| RS.MA | `open_incident` | save the record, pin the versions |
| RS.AN | `preserve_evidence` | sealed, signed evidence bundle |
| RS.AN | `verify_artifacts` | every version re-verified: which are tampered, which still verify |
| RS.AN | `affected_decisions` | every decision a tampered version served, per client (blast radius) |
| RS.CO | `report` | HTML/JSON/Markdown report, ATLAS/OWASP, regulatory deadlines |

Each decision can then be traced (`audit_decision_trace`, `aiir trace`); the trace names this incident.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from aiir_airflow.params import incident_params
from aiir_airflow.playbook_dag import playbook_tasks


@dag(
    dag_id="incident_artifact_tampering",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,
    default_args={"owner": "incident-response", "retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    tags=["aiir", "incident", "tampering", "AML.T0010", "AML.T0018", "OWASP-ML06", "OWASP-ML10"],
    doc_md=__doc__,
    params=incident_params(),
    render_template_as_native_obj=True,
)
def incident_artifact_tampering():
    playbook_tasks("artifact_integrity")


incident_artifact_tampering()
