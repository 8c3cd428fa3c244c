"""Parse time of each DAG file against an empty DAG file, in the same run (goal: ≤ 1.5×).

Each measurement is a fresh interpreter that has already imported what every DAG file needs
(``airflow.sdk``) and then times Airflow's own ``DagBag`` parsing one file — so module caches of
aiir's adapters are cold, as in the dag-processor. Median of N runs per file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, save_json, write_section  # noqa: E402

EMPTY = '''
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["bench"])
def empty():
    @task
    def noop():
        return None
    noop()

empty()
'''

PROBE = r"""
import sys, time, json
import airflow.sdk  # what every DAG file needs; Airflow's dag-processor has it loaded already
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
dt = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": dt, "dags": len(bag.dags)}))
"""


def measure(path: Path, env: dict, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True,
                           check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1])["seconds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiir-parse-"))
    empty = tmp / "empty_dag.py"
    empty.write_text(EMPTY)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp / "af"), "AIIR_HOME": str(tmp / "aiir"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp}/af.db",
           "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}"}
    files = sorted((REPO / "dags").glob("*.py"))
    results = {"empty": measure(empty, env, args.runs)}
    for f in files:  # interleave nothing: each file's runs back to back, empty re-measured at the end
        results[f.name] = measure(f, env, args.runs)
    results["empty (again)"] = measure(empty, env, args.runs)
    base = statistics.median(results["empty"] + results["empty (again)"])
    rows, summary = [], {}
    for name, xs in results.items():
        med = statistics.median(xs)
        summary[name] = {"median_s": med, "runs": xs, "ratio": med / base}
        rows.append(f"| `{name}` | {med * 1000:.1f} ms | {med / base:.2f}× |")
    worst = max(v["ratio"] for k, v in summary.items() if not k.startswith("empty"))
    save_json("dag_parse", {"baseline_s": base, "files": summary, "worst_ratio": worst})
    body = (f"Each DAG file parsed by Airflow's `DagBag` in a fresh interpreter (airflow.sdk already imported, "
            f"as in the dag-processor), median of {args.runs} runs, against an empty one-task DAG file measured "
            f"before and after in the same run.\n\n| file | parse | vs empty |\n|---|---|---|\n"
            + "\n".join(rows) + f"\n\nWorst ratio **{worst:.2f}×** (goal ≤ 1.5×).")
    write_section("DAG parse time (bench/bench_dag_parse.py)", body)
    print(json.dumps({k: round(v["ratio"], 2) for k, v in summary.items()}, indent=2))


if __name__ == "__main__":
    main()
