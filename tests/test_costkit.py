"""The per-module cost table printed at the end of a run (tests/costkit.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO
from tests.costkit import table


def test_table_orders_by_cpu_and_sums():
    lines = table({"a.py": [10.0, 1.0, 0.0], "b.py": [5.0, 2.0, 6.0]})
    assert lines[1].split()[-1] == "b.py" and lines[2].split()[-1] == "a.py"
    assert lines[1].split()[0] == "8" and lines[-1].split()[0] == "9"


def test_a_run_prints_the_cost_of_a_module_that_burns_cpu_in_a_child(tmp_path):
    cost_file = tmp_path / "cost.txt"
    (tmp_path / "test_burn.py").write_text(textwrap.dedent("""
        import subprocess, sys
        def test_child_burns():
            subprocess.run([sys.executable, "-c", "import time\\nt=time.process_time()\\nwhile time.process_time()-t<1.0: pass"], check=True)
        def test_idle():
            pass
    """))
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.costkit"]\n')
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "AIIR_COST_FILE": str(cost_file)})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.split("cost by module")[1]
    row = next(line for line in out.splitlines() if line.endswith("test_burn.py"))
    assert float(row.split()[0]) >= 1.0  # the child's second of CPU is counted
    # the same table (top rows) appended to AIIR_COST_FILE, after a line naming the run: what .ci/run prints last
    saved = cost_file.read_text().splitlines()
    assert saved[0].startswith("-- pytest -q -p no:cacheprovider") and saved[-1].endswith("all 1 modules")
    assert any(line.endswith("test_burn.py") for line in saved)
