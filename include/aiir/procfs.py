"""Local processes as Linux's /proc shows them: state, parent, session, command line, process trees.

One reader for the runtime (stopping services, finding a task's process) and for the tests that watch
processes start and die. Off Linux (no /proc) every query answers "no such process".
"""

from __future__ import annotations

import os

_DEAD = (b"Z", b"X")  # zombie (exited, not yet reaped) and dead: neither runs any more


def stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after ``comm)``: state, ppid, pgrp, session, ... (None once it is gone).

    ``comm`` may hold spaces and parentheses, so the fields are split after its *last* ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie is not alive)."""
    st = stat(pid)
    return st is not None and st[0] not in _DEAD


def state(pid: int) -> bytes | None:
    """The one-letter state (R, S, D, T, t, Z, X, ...), None once the process is gone."""
    st = stat(pid)
    return st[0] if st else None


def pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def children() -> dict[int, list[int]]:
    """Parent pid -> its children's pids, over every process now."""
    kids: dict[int, list[int]] = {}
    for pid in pids():
        if (st := stat(pid)) is not None and len(st) > 1:
            kids.setdefault(int(st[1]), []).append(pid)
    return kids


def descendants(root: int, kids: dict[int, list[int]] | None = None) -> set[int]:
    """Every process below ``root`` (children, their children, ...), live or zombie; ``root`` excluded."""
    kids = children() if kids is None else kids
    out: set[int] = set()
    todo = [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def tree(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    """``root`` and its descendants that are still alive."""
    kids = children() if kids is None else kids
    return [p for p in [root, *descendants(root, kids)] if alive(p)]


def cmdline(pid: int) -> bytes:
    """The raw command line (arguments separated by NUL); b"" once the process is gone or for a kernel thread."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def command(pid: int) -> str:
    """The command line as one string, arguments separated by spaces."""
    return cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()


def with_text(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (none for an empty text)."""
    if not text:
        return []
    needle = text.encode()
    return [pid for pid in pids() if needle in cmdline(pid)]


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid``."""
    out = []
    for pid in pids():
        st = stat(pid)
        if st is not None and len(st) > 3 and st[0] not in _DEAD and int(st[3]) == sid:
            out.append(pid)
    return out
