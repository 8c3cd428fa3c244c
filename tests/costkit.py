"""What each test module costs: wall seconds and CPU seconds, printed at the end of a run.

CI runs on 2 cores, so a module's CPU seconds (not its wall time) say how much it slows the modules beside it
(``make test`` runs the Airflow modules and the rest side by side). CPU counts this process and every child it
waited for (``RUSAGE_CHILDREN``: the gateway, Airflow's components, the CLI runs, once stopped); a process that
outlives its test or is reaped by init is not counted, so the figures are a lower bound.

With ``AIIR_COST_FILE`` set, the table's top rows are also appended to that file, after a line naming the run:
``.ci/run`` prints the file last, so the end of a CI log (all a CI report may keep) says where the time went.
"""

from __future__ import annotations

import os
import resource
import time
from collections import defaultdict

import pytest

_cost: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # module -> [wall, cpu self, cpu children]


def _cpu() -> tuple[float, float]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    w0, (s0, c0) = time.perf_counter(), _cpu()
    yield
    s1, c1 = _cpu()
    acc = _cost[item.nodeid.split("::", 1)[0]]
    acc[0] += time.perf_counter() - w0
    acc[1] += s1 - s0
    acc[2] += c1 - c0


def table(cost: dict[str, list[float]], top: int = 25) -> list[str]:
    rows = sorted(cost.items(), key=lambda kv: kv[1][1] + kv[1][2], reverse=True)
    total_cpu = sum(v[1] + v[2] for v in cost.values()) or 1.0
    lines = [f"{'cpu s':>8} {'share':>6} {'wall s':>8} {'cpu/wall':>8}  module (cpu = this process + waited-for children)"]
    for mod, (wall, cpu_self, cpu_children) in rows[:top]:
        cpu = cpu_self + cpu_children
        lines.append(f"{cpu:8.0f} {100 * cpu / total_cpu:5.1f}% {wall:8.0f} {cpu / wall if wall else 0:8.2f}  {mod}")
    lines.append(f"{total_cpu:8.0f} 100.0% {sum(v[0] for v in cost.values()):8.0f}           all {len(cost)} modules")
    return lines


def pytest_terminal_summary(terminalreporter, config):
    if _cost:
        terminalreporter.write_sep("=", "cost by module (slowest CPU first)")
        for line in table(_cost):
            terminalreporter.write_line(line)
        path = os.environ.get("AIIR_COST_FILE")
        if path:
            run = " ".join(config.invocation_params.args)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"-- pytest {run[:300]}\n" + "\n".join(table(_cost, top=12)) + "\n")
