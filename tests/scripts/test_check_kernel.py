"""scripts/check_kernel.py, the last step of `make venv`: a guard kernel that did not build where a compiler is (or
a stale build of another ABI) fails the install with one line saying what to do; no compiler is not an error."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_kernel.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_kernel", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def compiler(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")


def test_this_install_passes_as_make_venv_runs_it():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_kernel_that_did_not_build_fails_with_what_to_do(monkeypatch, compiler, capsys):
    from aiir.evasion import guard

    monkeypatch.setattr(guard, "_guardk", None)
    assert _load().main() == 1
    err = capsys.readouterr().err
    assert "_guardk.c did not build" in err and "pip install --no-deps -e . -v" in err and "\n" == err[-1]


def test_a_stale_build_fails_with_its_abi(monkeypatch, compiler, capsys):
    from aiir.evasion import guard

    monkeypatch.setattr(guard, "_guardk", object())
    monkeypatch.setattr(guard, "_KERNEL", None)
    assert _load().main() == 1
    assert f"this code {guard.KERNEL_ABI}" in capsys.readouterr().err


def test_no_compiler_is_not_an_error(monkeypatch, capsys):
    import shutil

    from aiir.evasion import guard

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(guard, "_guardk", None)
    assert _load().main() == 0
    assert "pure-Python path" in capsys.readouterr().out
