"""scripts/test_split.py (what `make test` runs): the airflow part and the rest side by side, each with its own
basetemp, every -m kept, exit code of the first failing part — run for real on a small suite of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test_split.py"
sys.path.insert(0, str(SCRIPT.parent))
import test_split  # noqa: E402


def test_every_m_is_kept_and_each_part_has_its_own_basetemp(tmp_path):
    marks, rest, base = test_split.split_args(["-m", "not distributed", "-q", "--basetemp", "/x", "-mnot slow",
                                               "tests/a.py"])
    assert marks == ["not distributed", "not slow"] and rest == ["-q", "tests/a.py"] and base == "/x"
    cmd = test_split.part_command("airflow", marks, rest, Path("/x"))
    assert cmd[1:3] == ["-m", "pytest"] and cmd[3] == "-m"
    assert cmd[4] == "(not distributed) and (not slow) and airflow"
    assert "--basetemp=/x/airflow" in cmd
    cmd = test_split.part_command("rest", [], rest, Path("/x"))
    assert cmd[4] == "not airflow" and "--basetemp=/x/rest" in cmd


def _suite(tmp_path: Path, *, rest_fails: bool) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider --strict-markers\n"
                                      "markers =\n  airflow: starts Airflow\n  unproven: not yet seen passing\n")
    # the airflow test waits for a file the other part writes: it passes only if both parts run at once
    (suite / "test_both.py").write_text(textwrap.dedent(f"""
        import os, time, pytest
        FLAG = {str(tmp_path / "rest-ran")!r}

        @pytest.mark.airflow
        def test_airflow_part(tmp_path):
            assert "airflow" in str(tmp_path)
            deadline = time.time() + 60
            while not os.path.exists(FLAG) and time.time() < deadline:
                time.sleep(0.1)
            assert os.path.exists(FLAG)

        def test_rest_part(tmp_path):
            assert "rest" in str(tmp_path)
            open(FLAG, "w").close()
            assert {not rest_fails!r}

        @pytest.mark.unproven
        def test_deselected():
            raise AssertionError("deselected by -m")
    """))
    return suite


def _env(**extra: str) -> dict[str, str]:
    """The environment for a nested run, without the outer run's CI signals: AIIR_COST_FILE (CI's summary of its
    own runs) and AIIR_TEST_REST_DONE (a nested run writing it once started `make test-distributed` early)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIIR_COST_FILE", "AIIR_TEST_REST_DONE")}
    return {**env, **extra}


def test_both_parts_run_at_once_and_the_exit_code_is_the_failing_parts(tmp_path):
    suite = _suite(tmp_path, rest_fails=True)
    r = subprocess.run([sys.executable, str(SCRIPT), "-m", "not unproven", "-q", f"--basetemp={tmp_path / 'bt'}"],
                       cwd=suite, capture_output=True, text=True, timeout=300,
                       env=_env(AIIR_TEST_REST_DONE=str(tmp_path / "rest-done")))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # .ci/run's signal to start make test-distributed: the rest's exit code, written when the rest ended
    assert (tmp_path / "rest-done").read_text() == "1\n"
    assert "side by side: rest exit 1" in out and "airflow exit 0" in out, out  # it saw the rest's flag
    assert "the airflow part's output" in out and "1 passed, 2 deselected" in out, out
    assert (tmp_path / "bt" / "airflow.log").exists()


def test_a_part_with_no_tests_counts_as_passed(tmp_path):
    suite = _suite(tmp_path, rest_fails=False)
    (suite / "test_both.py").unlink()
    (suite / "test_plain.py").write_text("def test_plain():\n    pass\n")
    r = subprocess.run([sys.executable, str(SCRIPT), "-q", f"--basetemp={tmp_path / 'bt'}"], cwd=suite,
                       capture_output=True, text=True, timeout=300, env=_env(AIIR_TEST_SERIAL="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "one after the other: rest exit 0" in r.stdout and "airflow exit 5" in r.stdout, r.stdout


def test_the_heartbeat_counts_tests_from_pytest_progress_lines(tmp_path):
    log = tmp_path / "airflow.log"
    log.write_text("platform linux -- Python 3.11.7, pytest-8\nrootdir: /x.y\ncollected 9 items\n\n"
                   "tests/e2e/test_a.py ..F.                                    [ 40%]\n"
                   "..s                                                         [ 70%]\n"
                   "tests/test_b.py E.x\n")
    assert test_split._progress(log) == "10 tests reported so far"
    assert test_split._progress(tmp_path / "none.log") == "no output yet"
