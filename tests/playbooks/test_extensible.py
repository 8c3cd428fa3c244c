"""Playbooks and targets are extensible without editing aiir: a small package, defined only here, adds a
third playbook (two steps, no containment) and a target kind through entry points. The playbook runs
through the CLI and through a DAG built the same way as the real ones (a real Airflow run, `dag.test()`);
the target shows in `aiir targets list` and in the trigger form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, run_aiir

PKG = '''
from __future__ import annotations

import json
from pathlib import Path

from aiir.playbooks import Playbook, Step
from aiir.targets.base import DeploymentTarget, ServingState, TargetOption, TrafficRoute


def collect(record):
    from aiir.playbook import once

    return once(record.workdir / "collected.json", lambda: {"model": record.model_name, "n": 3})


def summarise(record):
    from aiir.jsonio import read_json, write_json

    got = read_json(record.workdir / "collected.json")
    out = {"summary": f"{got['model']}: {got['n']} items"}
    write_json(record.workdir / "summary.json", out)
    return out


PLAYBOOK = Playbook(
    kind="test_note", dag_id="incident_test_note", title="Test: a note, no containment",
    steps=(Step("collect", "aiir_test_ext:collect", "RS.AN", "Collect", output="collected.json"),
           Step("summarise", "aiir_test_ext:summarise", "RS.CO", "Summarise", output="summary.json",
                after=("collect",))),
)


class EchoTarget(DeploymentTarget):
    kind = "echo"
    title = "echo (test package)"
    options = (TargetOption("colour", description="any string"),)
    capabilities = frozenset({"isolate"})

    def __init__(self, name, colour="blue"):
        super().__init__(name)
        self.colour = colour

    def describe(self):
        return ServingState(target=self.ref, model=self.name, mode="serving", routes=[TrafficRoute("1", 1.0)])

    def isolate(self, **kw):
        return self.describe()

    block_clients = restore = rollback = canary = isolate

    def snapshot(self, dest):
        Path(dest).mkdir(parents=True, exist_ok=True)
        p = Path(dest) / "echo.json"
        p.write_text(json.dumps({"colour": self.colour}))
        return [p]
'''

DAG = '''
"""A playbook DAG built exactly as dags/incident_data_poisoning.py is."""
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from aiir_airflow.params import incident_params
from aiir_airflow.playbook_dag import playbook_tasks


@dag(dag_id="incident_test_note", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, default_args={"owner": "test", "retries": 0}, tags=["test"], doc_md=__doc__,
     params=incident_params(), render_template_as_native_obj=True)
def incident_test_note():
    playbook_tasks("test_note")


incident_test_note()
'''


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    (root / "aiir_test_ext").mkdir()
    (root / "aiir_test_ext" / "__init__.py").write_text(PKG)
    dist = root / "aiir_test_ext-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aiir-test-ext\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aiir.playbooks]\ntest_note = aiir_test_ext:PLAYBOOK\n\n"
                                           "[aiir.targets]\necho = aiir_test_ext:EchoTarget\n")
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO / "plugins"), str(root)])}
    return root, env


def test_entry_points_list_the_new_playbook_and_target(ext, aiir_home):
    _, env = ext
    r = run_aiir("playbooks", "list", env=env)
    assert r.returncode == 0, r.stderr
    pbs = {p["kind"]: p for p in json.loads(r.stdout)}
    assert pbs["test_note"]["steps"] == ["collect", "summarise"]
    assert "data_poisoning" in pbs and "retrain_from_clean_data" in pbs
    r = run_aiir("targets", "list", env=env)
    assert r.returncode == 0, r.stderr
    targets = {t["kind"]: t for t in json.loads(r.stdout)}
    assert targets["echo"]["available"] is True and targets["echo"]["options"][0]["name"] == "colour"
    assert targets["local"]["available"] is True


def test_third_playbook_runs_through_the_cli(ext, aiir_home):
    _, env = ext
    r = run_aiir("incident", "open", "--playbook", "test_note", "--model", "m1", "--target-kind", "echo",
                 env=env)
    assert r.returncode == 0, r.stderr
    inc = json.loads(r.stdout)["incident_id"]
    r = run_aiir("incident", "run", inc, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["playbook"] == "test_note" and out["steps"] == ["collect", "summarise"]
    work = aiir_home / "incidents" / inc
    assert json.loads((work / "summary.json").read_text()) == {"summary": "m1: 3 items"}
    r = run_aiir("incident", "step", inc, "nope", env=env)
    assert r.returncode == 2 and "has no step 'nope'" in r.stderr


LOADER = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["incident_test_note"]
form = dag.params.get_param("target_kind").schema["enum"]
run = dag.test(run_conf={"model_name": "m2", "target_kind": "echo", "target_name": "m2",
                         "incident_id": "INC-test-note-dag"})
print("RESULT" + json.dumps({"state": str(run.state), "form_target_kinds": form,
                             "tasks": sorted(t.task_id for t in dag.tasks)}))
"""


@pytest.mark.slow
def test_third_playbook_runs_as_a_dag_built_like_the_real_ones(ext, tmp_path):
    root, env = ext
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "incident_test_note.py").write_text(textwrap.dedent(DAG))
    home = tmp_path / "af"
    aiir_home = tmp_path / "aiir"
    full = {**os.environ, **env, "AIRFLOW_HOME": str(home), "AIIR_HOME": str(aiir_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    r = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=full, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", LOADER, str(dags)], env=full, capture_output=True, text=True,
                       timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, (r.stdout[-2000:], r.stderr[-4000:])
    res = json.loads(line[0][len("RESULT"):])
    assert res["tasks"] == ["collect", "summarise"]
    assert "echo" in res["form_target_kinds"] and "local" in res["form_target_kinds"]
    assert res["state"].endswith("success"), res
    work = Path(aiir_home) / "incidents" / "INC-test-note-dag"
    assert json.loads((work / "summary.json").read_text()) == {"summary": "m2: 3 items"}
