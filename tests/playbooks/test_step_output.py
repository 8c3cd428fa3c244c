"""A step's output is the same on its first try and on a retry: ``aiir.playbook.once`` returns the JSON form
it wrote. Seen on the distributed cluster (issue #15): triage's first try returned CBPE's NaN precision (the
poisoned model predicted no positive), Airflow's API refused the XCom ("Out of range float values are not JSON
compliant") and the try failed; the retry read the file (null) and passed."""

from __future__ import annotations

import json
import math

import numpy as np

from aiir.playbook import once


def test_first_try_returns_what_a_retry_reads(tmp_path):
    out = tmp_path / "triage.json"
    built = {"precision": float("nan"), "recall": np.float64(0.5), "n": np.int64(3), "inf": math.inf,
             "nested": {"z": [float("-inf"), 1.0]}}
    first = once(out, lambda: built)
    assert first == {"precision": None, "recall": 0.5, "n": 3, "inf": None, "nested": {"z": [None, 1.0]}}
    json.dumps(first, allow_nan=False)  # what the XCom push does (strict JSON)
    assert type(first["recall"]) is float and type(first["n"]) is int

    def must_not_run():
        raise AssertionError("a retry rebuilt the output")

    assert once(out, must_not_run) == first == json.loads(out.read_text())
