"""
### Latency probe

One no-op task that runs in a worker, like any playbook task. Triggered by `bench/bench_mttc.py` (and usable as a health check) to measure the
scheduler's own trigger-to-task time, the baseline the playbook's time-to-contain is compared with.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from aiir_airflow.operators import LatencyProbeOperator


@dag(
    dag_id="aiir_latency_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"owner": "ml-platform", "retries": 0},
    tags=["aiir", "probe"],
    doc_md=__doc__,
)
def aiir_latency_probe():
    LatencyProbeOperator(task_id="probe")


aiir_latency_probe()
