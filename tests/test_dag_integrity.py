"""DAG integrity: every DAG file imports, has an owner, tags and retries, and parses fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ("evidently", "mlflow", "great_expectations", "sklearn", "boto3", "botocore", "kubernetes", "scipy")
# Provider *hooks* are the expensive part of the providers (SageMakerHook ~3 s, KubernetesHook ~4 s);
# their provider-info modules are loaded by Airflow itself and cost nothing.

LOADER = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: v[-400:] for k, v in bag.import_errors.items()}, "seconds": time.perf_counter() - t,
       "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r or m.startswith(("airflow.providers.amazon.aws.hooks", "airflow.providers.cncf.kubernetes.hooks"))),
       "dags": {d.dag_id: {"owners": sorted({t.owner for t in d.tasks}), "tags": sorted(d.tags),
                           "retries": [t.retries for t in d.tasks], "doc": bool(d.doc_md),
                           "tasks": [t.task_id for t in d.tasks],
                           "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks},
                           "max_active_runs": d.max_active_runs,
                           "params": {k: v for k, v in d.params.dump().items() if isinstance(v, str | int | float)},
                           "labels_templates": {t.task_id: t.labels for t in d.tasks if isinstance(getattr(t, "labels", None), str)},
                           "alerts": {t.task_id: [t.task_type, [getattr(c, "action", None) for c in (
                               t.on_success_callback if isinstance(t.on_success_callback, list)
                               else [t.on_success_callback] if t.on_success_callback else [])]]
                               for t in d.tasks}} for d in bag.dags.values()}}
print("RESULT" + json.dumps(out))
""" % (HEAVY,)  # noqa: UP031 (the code contains braces)


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    home = tmp_path_factory.mktemp("af")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIIR_HOME": str(home / "aiir"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW_CONN_AIIR_TARGET_LOCAL": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9}),
           "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}"}
    out = subprocess.run([sys.executable, "-c", LOADER, str(REPO / "dags")], capture_output=True, text=True,
                         env=env, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, out.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])


def test_no_import_errors(dagbag):
    assert dagbag["errors"] == {}


def test_expected_dags_present(dagbag):
    assert {"data_integrity_check", "incident_data_poisoning", "retrain_from_clean_data",
            "aiir_latency_probe"} <= set(dagbag["dags"])


def test_every_dag_has_owner_tags_retries_and_docs(dagbag):
    for dag_id, d in dagbag["dags"].items():
        assert d["owners"] and "airflow" not in d["owners"], f"{dag_id} has no owner"
        assert "aiir" in d["tags"], f"{dag_id} lacks tags"
        assert d["doc"], f"{dag_id} has no doc_md"
        if dag_id != "aiir_latency_probe":
            assert max(d["retries"]) >= 1, f"{dag_id} never retries"


def test_parsing_imports_no_heavy_library(dagbag):
    assert dagbag["heavy"] == [], f"parsing the DAG folder imported {dagbag['heavy'][:10]}"


def test_incident_opened_alerts_only_where_an_incident_opened(dagbag):
    """Round 2's bug, three times over: an `incident_opened` SIEM alert on a ShortCircuitOperator fires on every
    clean run (a short circuit *succeeds* when it skips). The alert belongs on the task that triggers the
    playbook, which runs only when an incident opened."""
    seen = 0
    for dag_id, d in dagbag["dags"].items():
        for task_id, (task_type, actions) in d["alerts"].items():
            if "incident_opened" in actions:
                seen += 1
                assert task_type in ("TriggerPlaybookOperator", "OpenIncidentOperator"), \
                    f"{dag_id}.{task_id} ({task_type}) alerts on success"
    assert seen >= 3  # data_integrity_check, scan_evasion, artifact_integrity


def test_playbook_order_contains_before_evidence_and_forensics(dagbag):
    d = dagbag["dags"]["incident_data_poisoning"]
    tasks, up = d["tasks"], d["upstream"]
    assert up["isolate_endpoint"] == [], "containment must not wait for any task"
    assert [t for t, u in up.items() if not u] == ["isolate_endpoint"], "containment must start alone"
    assert "open_incident" in up["preserve_evidence"] and up["open_incident"] == ["isolate_endpoint"]
    assert "preserve_evidence" in up["forensics"] and "confirm_incident" in up["forensics"]
    assert up["confirm_incident_needed"] == ["triage"], "triage decides whether a person must confirm"
    assert {"preserve_evidence", "triage", "forensics", "eradicate", "retrain_from_clean_data", "report"} <= set(tasks)


def test_incidents_run_at_once_and_mutating_steps_take_the_model_lock(dagbag):
    """No max_active_runs=1 around hours of waiting: incidents run concurrently, and on one model the steps
    that change the target or the registry are serialised by the model's lock (aiir.locks)."""
    from aiir.playbooks import get_playbook

    assert dagbag["dags"]["incident_data_poisoning"]["max_active_runs"] > 1
    assert dagbag["dags"]["retrain_from_clean_data"]["max_active_runs"] > 1
    pb = get_playbook("data_poisoning")
    assert {s.name for s in pb.steps if s.mutates} == {"isolate_endpoint", "confirm_quarantine"}
    assert {s.name for s in get_playbook("retrain_from_clean_data").steps if s.mutates} == {"canary", "promote"}


def test_every_playbook_dag_matches_its_definition(dagbag):
    """The DAG's tasks and order are the playbook definition's: every step is a task, every step's
    ``after`` is an upstream edge (approval steps through their branch), and nothing else runs."""
    from aiir.playbooks import get_playbook, kinds

    checked = 0
    for kind in kinds():
        pb = get_playbook(kind)
        if pb.dag_id not in dagbag["dags"]:
            continue
        dag = dagbag["dags"][pb.dag_id]
        extra = {i for s in pb.steps if s.role == "approval" for i in s.branch_ids}
        assert set(dag["tasks"]) == set(pb.step_names) | extra, pb.kind
        for s in pb.steps:
            ups = set(dag["upstream"][s.name])
            want = set()
            for a in s.after:
                up = pb.step(a)
                want |= {a, up.branch_ids[1]} if up.role == "approval" else {a}
            if s.role == "approval":
                want = {s.branch_ids[0]}
            assert ups == want, (pb.kind, s.name, ups, want)
            if s.role == "approval":
                assert set(dag["upstream"][s.branch_ids[0]]) == set(s.after)
        first = [t for t, u in dag["upstream"].items() if not u]
        if pb.steps[0].role == "contain":
            assert first == [pb.steps[0].name], "containment must be the run's only first task"
        checked += 1
    assert checked >= 2


def test_scan_evasion_labels_param_is_off_by_default(dagbag):
    """The delayed-label signal is opt-in: the DAG's `labels` Param defaults to empty, which the scan task passes
    on as it is (job.run treats "" as no labels: tests/gateway/test_evasion_playbook.py)."""
    d = dagbag["dags"]["scan_evasion"]
    assert d["params"]["labels"] == ""
    assert d["labels_templates"] == {"scan": "{{ params.labels }}"}
