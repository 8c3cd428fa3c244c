"""Who traced which decision, when: a hash-chained access log (``$AIIR_HOME/audit/access-log.jsonl``).

Every :func:`aiir.audit.trace.trace` call appends one entry before it writes anything else, so a trace
whose package was deleted still left its mark. Each line carries the SHA-256 of the previous one (the
same chain as the registry log), so an edited, removed or reordered line is named by :func:`verify`.
A copy of the log and its head go into every audit package.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from aiir import config

GENESIS = "0" * 64


def path() -> Path:
    return Path(os.environ["AIIR_AUDIT_ACCESS_LOG"]) if os.environ.get("AIIR_AUDIT_ACCESS_LOG") else \
        config.paths().home / "audit" / "access-log.jsonl"


def record(*, action: str, decision_ids: list[str], actor: str | None = None, purpose: str = "",
           decrypted: bool = False, **extra: Any) -> dict[str, Any]:
    from aiir.registry import _actor, _append_chained, now_iso

    p = path()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = {"at": now_iso(), "action": action, "actor": actor or _actor(), "host": socket.gethostname(),
             "pid": os.getpid(), "decision_ids": list(decision_ids), "purpose": purpose,
             "decrypted": bool(decrypted), **extra}
    return _append_chained(p, entry)


def read(p: Path | None = None) -> list[dict[str, Any]]:
    p = p or path()
    if not p.exists():
        return []
    out = []
    for n, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if ln.strip():
            try:
                out.append(json.loads(ln))
            except ValueError:
                out.append({"unreadable_line": n})
    return out


def verify(p: Path | None = None) -> dict[str, Any]:
    """``{ok, entries, head, problem}``; ``problem`` names the first entry that does not hold."""
    from aiir.hashing import sha256_bytes
    from aiir.registry import _canonical

    entries = read(p)
    prev = GENESIS
    for i, e in enumerate(entries):
        if "unreadable_line" in e:
            return {"ok": False, "entries": len(entries), "head": prev,
                    "problem": f"access log line {e['unreadable_line']} is not JSON"}
        body = {k: v for k, v in e.items() if k != "hash"}
        if e.get("prev") != prev or e.get("seq") != i:
            return {"ok": False, "entries": len(entries), "head": prev,
                    "problem": f"access log entry {i}: chain broken (an entry was removed, inserted or reordered)"}
        if sha256_bytes(_canonical(body)) != e.get("hash"):
            return {"ok": False, "entries": len(entries), "head": prev,
                    "problem": f"access log entry {i}: content changed after it was written"}
        prev = e["hash"]
    return {"ok": True, "entries": len(entries), "head": prev, "problem": None}
