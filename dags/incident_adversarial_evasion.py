"""
### Incident: adversarial evasion

Opened by the gateway's **inline guard** (it triggers this DAG through the REST API when a client trips),
by the scheduled **`scan_evasion`** DAG, or by a person (**Trigger DAG w/ config**: model, target, severity,
containment `fallback` = rate-limit / `quarantine` = block, the clients under *findings* or *suspect sources*).
The tasks are the steps of the playbook definition `aiir.playbooks.evasion` (the same list
`aiir incident run` follows), each idempotent:

| phase | task | effect |
|---|---|---|
| RS.MI contain | `contain_clients` | first task: block or rate-limit the attacking clients (API-key identities) at the target |
| RS.MA | `open_incident` | save the record, pin the attacked and last-known-good versions |
| RS.AN | `triage` | re-scan the served decisions (`aiir scan-evasion`): attackers, queries, perturbation sizes |
| RS.AN | `preserve_evidence` | sealed bundle: attack queries, suspects' decisions, model, target state, guard events |
| RS.MI eradicate | `harden` | adversarial retraining with ART; robust accuracy on held-out attacks; gate |
| RC.RP | `canary_redeploy` | canary of the hardened model, promoted or rolled back automatically |
| RS.CO | `report` | HTML/JSON/Markdown report with the attack's queries, perturbation sizes, clients; ATLAS/OWASP |

MITRE ATLAS AML.T0040 → AML.T0043 → AML.T0015 (AML.T0024 for extraction); OWASP ML01 / ML05.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from aiir_airflow.params import incident_params
from aiir_airflow.playbook_dag import playbook_tasks


@dag(
    dag_id="incident_adversarial_evasion",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,
    default_args={"owner": "incident-response", "retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    tags=["aiir", "incident", "evasion", "AML.T0015", "OWASP-ML01"],
    doc_md=__doc__,
    params=incident_params(),
    render_template_as_native_obj=True,
)
def incident_adversarial_evasion():
    playbook_tasks("adversarial_evasion")


incident_adversarial_evasion()
