"""`make test` on a 2-core machine: the tests that start a real Airflow and the rest, as two pytest runs at once.

A real-Airflow module spends most of its wall time waiting (the scheduler's loop, a cron tick, a task process
starting, a canary window); the other tests are mostly one core of Python. Run one after the other they leave a
core idle for most of the suite, so this runs them side by side:

    python scripts/test_split.py [pytest options and paths...]

* part ``airflow``: ``-m "(<your -m>) and airflow"``; part ``rest``: ``-m "(<your -m>) and not airflow"``;
  every ``-m`` given is kept (ANDed). Each part gets its own ``--basetemp`` (``<--basetemp or
  $TMPDIR/aiir-tests>/<part>``), so neither removes the other's folders.
* ``rest`` prints as it runs; ``airflow`` writes to ``<basetemp>/airflow.log``, printed whole when it ends,
  with a line every five minutes meanwhile saying how far it is.
* exit code: 0 when both passed (a part that selects no test counts as passed), else the first failing part's.
* ``AIIR_TEST_SERIAL=1`` runs the two parts one after the other (same selection, same output).
* ``AIIR_TEST_REST_DONE=FILE``: the rest's exit code is written to FILE as soon as it ends (``.ci/run`` then
  starts ``make test-distributed`` beside the Airflow part's last, mostly waiting, modules).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_TESTS_COLLECTED = 5
HEARTBEAT_S = 300.0


def split_args(argv: list[str]) -> tuple[list[str], list[str], str | None]:
    """(-m expressions, the other arguments, --basetemp) from a pytest command line."""
    marks, rest, basetemp = [], [], None
    it = iter(argv)
    for a in it:
        if a == "-m":
            marks.append(next(it, ""))
        elif a.startswith("-m") and len(a) > 2 and not a.startswith("-m="):
            marks.append(a[2:])
        elif a == "--basetemp":
            basetemp = next(it, None)
        elif a.startswith("--basetemp="):
            basetemp = a.split("=", 1)[1]
        else:
            rest.append(a)
    return [m for m in marks if m.strip()], rest, basetemp


def part_command(part: str, marks: list[str], rest: list[str], basetemp: Path) -> list[str]:
    own = "airflow" if part == "airflow" else "not airflow"
    expr = " and ".join([f"({m})" for m in marks] + [own])
    return [sys.executable, "-m", "pytest", "-m", expr, f"--basetemp={basetemp / part}", *rest]


PROGRESS = re.compile(r"^(?:\S+\.py )?([.FEsxX]+)\s*(?:\[\s*\d+%\])?$")


def _progress(log: Path) -> str:
    """How many tests the part has reported, from pytest's progress lines (`path.py ..F.  [ 40%]`)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no output yet"
    done = sum(len(m.group(1)) for line in lines if (m := PROGRESS.match(line.strip())))
    return f"{done} tests reported so far"


def main(argv: list[str]) -> int:
    marks, rest, basetemp_arg = split_args(argv)
    root = Path(basetemp_arg) if basetemp_arg else Path(tempfile.gettempdir()) / "aiir-tests"
    root.mkdir(parents=True, exist_ok=True)
    serial = os.environ.get("AIIR_TEST_SERIAL", "") not in ("", "0")
    cmds = {p: part_command(p, marks, rest, root) for p in ("rest", "airflow")}
    for p, c in cmds.items():
        print(f"[test_split] {p}: pytest {shlex.join(c[3:])}", flush=True)
    t0 = time.monotonic()
    log = root / "airflow.log"
    codes: dict[str, int] = {}
    took: dict[str, float] = {}
    with open(log, "wb") as fh:
        af = None if serial else subprocess.Popen(cmds["airflow"], stdout=fh, stderr=subprocess.STDOUT)
        codes["rest"] = subprocess.call(cmds["rest"])
        took["rest"] = time.monotonic() - t0
        if os.environ.get("AIIR_TEST_REST_DONE"):  # .ci/run starts `make test-distributed` on this signal
            Path(os.environ["AIIR_TEST_REST_DONE"]).write_text(f"{codes['rest']}\n")
        if af is None:
            af = subprocess.Popen(cmds["airflow"], stdout=fh, stderr=subprocess.STDOUT)
        print(f"\n[test_split] rest ended (exit {codes['rest']}) after {took['rest']:.0f} s; "
              f"waiting for the airflow part ({log})", flush=True)
        next_beat = time.monotonic() + HEARTBEAT_S
        while af.poll() is None:
            time.sleep(1.0)
            if time.monotonic() >= next_beat:
                print(f"[test_split] airflow part still running at {time.monotonic() - t0:.0f} s: "
                      f"{_progress(log)}", flush=True)
                next_beat += HEARTBEAT_S
        codes["airflow"] = af.returncode
        took["airflow"] = time.monotonic() - t0
    sys.stdout.write(f"\n[test_split] ===== the airflow part's output ({log}) =====\n")
    sys.stdout.flush()
    with open(log, "rb") as fh:
        while chunk := fh.read(1 << 16):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    mode = "one after the other" if serial else "side by side"
    summary = ", ".join(f"{p} exit {codes[p]} at {took[p]:.0f} s" for p in ("rest", "airflow"))
    line = f"[test_split] {mode}: {summary}; wall {time.monotonic() - t0:.0f} s"
    print("\n" + line, flush=True)
    if os.environ.get("AIIR_COST_FILE"):  # beside the parts' cost tables (tests/costkit.py), for .ci/run's last lines
        with open(os.environ["AIIR_COST_FILE"], "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    for p in ("rest", "airflow"):
        if codes[p] not in (0, NO_TESTS_COLLECTED):
            return codes[p]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
