"""The gateway's durable state: containment/routing (``state.json``), the admin token
(``admin.token``, 0600) and the admin audit log (``admin-audit.jsonl``, hash-chained).

``state.json`` is replaced atomically (write a temp file, fsync, rename), so a crash leaves the old or the
new state, never half of one; a restarted gateway picks up containment where it was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiir.errors import BadInput
from aiir.gateway import AUDIT_FILE, STATE_FILE, TOKEN_FILE

STATE_SCHEMA = 1


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass
class GatewayState:
    """What the gateway serves and which containment is active. ``primary_pinned`` means a rollback chose
    the primary; otherwise the primary follows the alias (re-resolved at start and on restore)."""

    model: str
    alias: str = "champion"
    fallback_alias: str | None = "last-known-good"
    mode: str = "serving"  # serving | isolated | quarantined
    primary_version: str | None = None
    primary_pinned: bool = False
    fallback_version: str | None = None  # the version serving while isolated
    canary_version: str | None = None
    canary_share: float = 0.0
    blocked_clients: list[str] = field(default_factory=list)
    rate_limits: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    updated_at: str = ""
    schema: int = STATE_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GatewayState:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def essence(self) -> dict[str, Any]:
        """Everything but the timestamp: two states with the same essence are the same state."""
        d = self.to_dict()
        d.pop("updated_at")
        d.pop("reason")
        d["blocked_clients"] = sorted(d["blocked_clients"])
        return d


def read_token(path: str | Path) -> str:
    """Read an admin token file; refuses one that other users can read (like ssh does)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(str(p), "no admin token (start `aiir serve` once to create it)")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise BadInput(str(p), f"admin token file is readable by others (mode {mode:o}); "
                               "run `chmod 600` on it, or delete it to have a new token made")
    tok = p.read_text().strip()
    if len(tok) < 16:
        raise BadInput(str(p), "admin token file is empty or too short; delete it to have a new one made")
    return tok


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token (safe to log)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


class StateStore:
    """Files in one state directory (created 0700)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.dir, 0o700)
        except OSError:
            pass
        self.state_path = self.dir / STATE_FILE
        self.token_path = self.dir / TOKEN_FILE
        self.audit_path = self.dir / AUDIT_FILE
        self._audit_lock = threading.Lock()
        self._audit_tail: tuple[int, str] | None = None

    # -- state
    def load(self) -> GatewayState | None:
        if not self.state_path.exists():
            return None
        try:
            d = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(str(self.state_path), f"cannot read gateway state ({exc}); fix or move the file "
                                                 "away to start without containment") from None
        if not isinstance(d, dict) or "model" not in d:
            raise BadInput(str(self.state_path), "not a gateway state file (no 'model')")
        return GatewayState.from_dict(d)

    def save(self, state: GatewayState) -> None:
        atomic_write_json(self.state_path, state.to_dict())

    # -- token
    def token(self, *, create: bool = True) -> str:
        """The admin token, created at first use with ``secrets.token_urlsafe(32)`` and mode 0600.
        Refuses a token file other users can read."""
        p = self.token_path
        if not p.exists():
            if not create:
                raise BadInput(str(p), "no admin token (start `aiir serve` once to create it)")
            tok = secrets.token_urlsafe(32)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race
                return self.token(create=False)
            with os.fdopen(fd, "w") as fh:
                fh.write(tok + "\n")
            return tok
        return read_token(p)

    @staticmethod
    def check_token(expected: str, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())

    # -- audit
    def _audit_tip(self) -> tuple[int, str]:
        if self._audit_tail is None:
            seq, h = 0, "0" * 64
            if self.audit_path.exists():
                with open(self.audit_path, "rb") as fh:
                    last = None
                    for line in fh:
                        if line.strip():
                            last = line
                if last:
                    try:
                        rec = json.loads(last)
                        seq, h = int(rec["seq"]), str(rec["hash"])
                    except (ValueError, KeyError, TypeError):
                        seq, h = -1, hashlib.sha256(last).hexdigest()
            self._audit_tail = (seq, h)
        return self._audit_tail

    def audit(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append one admin event; each line carries the previous line's hash."""
        with self._audit_lock:
            seq, prev = self._audit_tip()
            rec = {"seq": seq + 1, "time": utc_now(), **entry, "prev_hash": prev}
            body = json.dumps(rec, sort_keys=True, separators=(",", ":"), default=str)
            rec["hash"] = hashlib.sha256(body.encode()).hexdigest()
            with open(self.audit_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.chmod(self.audit_path, 0o600)
            except OSError:
                pass
            self._audit_tail = (rec["seq"], rec["hash"])
            return rec

    def read_audit(self, limit: int | None = None) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        out = []
        with open(self.audit_path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        out.append({"unreadable_line": line.rstrip("\n")})
        return out[-limit:] if limit else out


def verify_audit(path: str | Path) -> dict[str, Any]:
    """Recompute the admin audit chain; ``ok`` False at the first changed, removed or reordered line."""
    prev, n = "0" * 64, 0
    p = Path(path)
    if not p.exists():
        return {"ok": True, "entries": 0}
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                stored = rec.pop("hash")
            except (json.JSONDecodeError, KeyError, AttributeError):
                return {"ok": False, "entries": n, "line": lineno, "problem": "unreadable line"}
            if rec.get("prev_hash") != prev or rec.get("seq") != n + 1:
                return {"ok": False, "entries": n, "line": lineno, "problem": "chain broken (line removed, "
                        "inserted or reordered)"}
            body = json.dumps(rec, sort_keys=True, separators=(",", ":"), default=str)
            if hashlib.sha256(body.encode()).hexdigest() != stored:
                return {"ok": False, "entries": n, "line": lineno, "problem": "line was modified"}
            prev, n = stored, n + 1
    return {"ok": True, "entries": n, "head_hash": prev}


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Durable atomic JSON (sorted keys): :func:`aiir.jsonio.write_text` with fsync of file and folder."""
    from aiir.jsonio import write_text

    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", durable=True)
