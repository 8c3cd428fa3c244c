"""Per-model lock: one holder at a time per model, other models unaffected, a clear error on timeout."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from aiir.errors import TargetError
from aiir.locks import model_lock

HOLD = """
import sys, time
from aiir.locks import model_lock
with model_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_same_model_waits_other_model_does_not(aiir_home):
    p = subprocess.Popen([sys.executable, "-c", HOLD, "m1", "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with model_lock("m2", timeout=5) as waited:
            assert waited < 0.5  # another model is not serialised behind m1
        with model_lock("m1", timeout=10) as waited:
            assert waited >= 0.8, waited  # m1 waited for the other process to let go
        assert time.monotonic() - t0 < 10
    finally:
        p.kill()
        p.wait()


def test_timeout_names_the_model(aiir_home):
    p = subprocess.Popen([sys.executable, "-c", HOLD, "m3", "5"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(TargetError, match="model 'm3'"), model_lock("m3", timeout=0.3):
            pass
    finally:
        p.kill()
        p.wait()
