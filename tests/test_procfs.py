"""aiir.procfs: the one reader of /proc for the runtime and the tests that watch processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from aiir import procfs

TREE = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # " + "aiir-procfs-" + "grandchild"])
print(kid.pid, flush=True)
time.sleep(60)
"""


def _wait(cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_a_tree_its_command_lines_and_its_death():
    p = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        grandchild = int(p.stdout.readline())
        assert procfs.alive(p.pid) and procfs.alive(grandchild)
        assert procfs.stat(grandchild)[1] == str(p.pid).encode()  # ppid
        assert grandchild in procfs.descendants(p.pid) and p.pid not in procfs.descendants(p.pid)
        assert set(procfs.tree(p.pid)) == {p.pid, grandchild}
        assert procfs.with_text("aiir-procfs-grandchild") == [grandchild]
        assert "aiir-procfs-grandchild" in procfs.command(grandchild)
        assert set(procfs.session_members(p.pid)) == {p.pid, grandchild}
        os.kill(grandchild, signal.SIGKILL)
        # killed but not reaped by its parent yet: a zombie, which is not alive
        assert _wait(lambda: not procfs.alive(grandchild))
        assert procfs.tree(p.pid) == [p.pid]
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert procfs.stat(p.pid) is None and not procfs.alive(p.pid) and procfs.command(p.pid) == ""


def test_an_empty_text_matches_nothing_and_a_comm_with_parentheses_parses():
    assert procfs.with_text("") == []
    # comm may hold ") " itself: the fields are read after its last ")"
    p = subprocess.Popen(["bash", "-c", "exec -a 'x) (y' sleep 30"])
    try:
        assert _wait(lambda: procfs.state(p.pid) in (b"S", b"R") and "x) (y" in procfs.command(p.pid))
        assert procfs.stat(p.pid)[1] == str(os.getpid()).encode()
    finally:
        p.kill()
        p.wait()
