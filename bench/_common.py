"""Shared by the benchmarks: machine facts and writing a section of docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"


def cpu_model(default: str = "unknown CPU") -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def machine() -> str:
    cpu = cpu_model()
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    return f"{os.cpu_count()} CPUs ({cpu}), {total} RAM, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"


def module_at_revision(rev: str, path: str, name: str):
    """The module at ``path`` (relative to the repository) as it was at git revision ``rev``, imported under
    ``name`` from a temporary copy: a benchmark's baseline is an earlier revision's code, run beside this one."""
    import importlib.util
    import tempfile

    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True,
                         check=True).stdout
    copy = Path(tempfile.mkdtemp(prefix=f"aiir-{name}-")) / f"{name}.py"
    copy.write_text(src)
    spec = importlib.util.spec_from_file_location(name, copy)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def save_json(name: str, obj: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(obj, indent=2, default=str))
    return path


def replace_section(section: str) -> None:
    """Put ``section`` (starting with its ``## heading`` line) into docs/benchmarks.md, replacing the
    section of the same heading or appending it."""
    heading = section.splitlines()[0]
    text = DOC.read_text() if DOC.exists() else (
        "# Benchmarks\n\nMeasured on the project machine; each section is written by its benchmark script.\n\n")
    pattern = re.compile(re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    section = section.rstrip("\n") + "\n\n"
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text.rstrip("\n") + "\n")


def write_section(heading: str, body: str) -> None:
    """Write ``## heading`` with a run stamp and ``body`` into docs/benchmarks.md."""
    stamp = f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M UTC} — machine: {machine()}\n\n"
    replace_section(f"## {heading}\n\n{stamp}{body.strip()}\n")
