"""Shared by the fuzz tests: fixed Hypothesis settings (derandomized, no deadline) and per-area counts.

Every area must answer at least ``MIN_PER_AREA`` generated malformed inputs per run. Counts are kept in
``COUNTS`` and, when ``AIIR_FUZZ_COUNTS`` names a file, written there as JSON (bench/bench_robustness.py
turns them into the "Robustness" section of docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings

MIN_PER_AREA = 200
COUNTS: Counter = Counter()
SECONDS: Counter = Counter()


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def count(area: str, outcome: str) -> None:
    COUNTS[(area, outcome)] += 1


def total(area: str) -> int:
    """Inputs the system under test answered (inputs that never reached it do not count)."""
    return sum(n for (a, o), n in COUNTS.items() if a == area and not o.startswith("not sent"))


class timed:
    def __init__(self, area: str):
        self.area = area

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        SECONDS[self.area] += time.perf_counter() - self.t0
        dump()


def dump() -> None:
    path = os.environ.get("AIIR_FUZZ_COUNTS")
    if not path:
        return
    out: dict = {}
    for (area, outcome), n in sorted(COUNTS.items()):
        out.setdefault(area, {"inputs": 0, "outcomes": {}, "seconds": round(SECONDS[area], 1)})
        out[area]["inputs"] += n
        out[area]["outcomes"][outcome] = n
    Path(path).write_text(json.dumps(out, indent=2, sort_keys=True))
