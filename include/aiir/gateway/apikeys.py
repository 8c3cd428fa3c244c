"""Client identity at the gateway: API keys (hashed at rest) or, for the demo, the trusting header mode.

**Key mode** is on when ``aiir serve --require-api-key`` is given *or* the state folder holds a key file
(``api-keys.json``, written by ``aiir gateway keys issue``). Then a scoring request must present a key
(``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``); the client id is the one the key was issued
to, ``X-Client-Id`` is ignored, and blocks/rate limits apply to that identity (a block entry
``key:<key id>`` refuses a single key of a client). A missing, unknown or revoked key gets ``401``.

**Header mode** (no key file, no flag) takes the self-declared ``X-Client-Id`` header. It *trusts the
caller*: anyone can claim any id or spread queries over many ids. ``/ping`` and the admin state say so
(``identity: header``, ``identity_trusting: true``).

A key is ``aiirk_<key id>_<secret>``: a 12-hex-digit id (safe to log; it names the key in lists, blocks
and audits) and 32 random bytes (``secrets.token_urlsafe(32)``). Only the SHA-256 of the whole key is
stored (a 256-bit random secret needs no slow hash: there is nothing to brute-force); the key itself is
printed once, when issued. Lookups go by id and compare digests in constant time.

The gateway re-reads the key file when it changes (checked at most every :data:`RELOAD_EVERY_S`), so a
key issued or revoked with the CLI takes effect on a running gateway within half a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiir.errors import BadInput
from aiir.gateway.identity import RULE, InvalidClientId, client_id_from_header, normalise_client_id

KEYS_FILE = "api-keys.json"
KEY_PREFIX = "aiirk_"
RELOAD_EVERY_S = 0.5
_KEY_RE = re.compile(r"^aiirk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass
class KeyEntry:
    key_id: str
    client_id: str
    sha256: str
    created_at: str
    label: str = ""
    revoked_at: str | None = None

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the digest."""
        d = asdict(self)
        d.pop("sha256")
        d["active"] = self.revoked_at is None
        return d


class KeyFile:
    """``api-keys.json`` in a gateway state folder: issue, revoke, list (mode 0600, atomic, locked)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.path = self.dir / KEYS_FILE

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> list[KeyEntry]:
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [KeyEntry(**e) for e in doc["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(str(self.path), f"not a readable API key file ({type(exc).__name__}: {exc}); "
                                           "fix it or move it away") from None
        return entries

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.dir, 0o700)
        fd = os.open(self.dir / ".api-keys.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, entries: list[KeyEntry]) -> None:
        tmp = self.path.with_name(f".{KEYS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"schema": 1, "hash": "sha256", "keys": [asdict(e) for e in entries]}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def issue(self, client_id: str, *, label: str = "") -> dict[str, Any]:
        """A new key for ``client_id`` (normalised like every client id: :mod:`aiir.gateway.identity`);
        returns it once (with its id). Only its digest is stored."""
        try:
            client_id = normalise_client_id(client_id)
        except InvalidClientId as exc:
            raise BadInput("--client", f"{exc} (expected {RULE})") from None
        if not isinstance(label, str) or len(label) > 200 or not label.isprintable():
            raise BadInput("--label", "must be at most 200 printable characters")
        with self._locked():
            entries = self.read()
            used = {e.key_id for e in entries}
            kid = secrets.token_hex(6)
            while kid in used:
                kid = secrets.token_hex(6)
            key = f"{KEY_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
            entry = KeyEntry(key_id=kid, client_id=client_id, sha256=key_digest(key), created_at=utc_now(),
                             label=label)
            entries.append(entry)
            self._write(entries)
        return {"key": key, **entry.public(), "key_file": str(self.path)}

    def revoke(self, *, key_id: str | None = None, client_id: str | None = None) -> list[dict[str, Any]]:
        """Revoke one key (by id) or every key of a client; idempotent. Returns the revoked entries."""
        if (key_id is None) == (client_id is None):
            raise BadInput("--key-id", "give exactly one of --key-id or --client")
        if client_id is not None:
            try:
                client_id = normalise_client_id(client_id)
            except InvalidClientId as exc:
                raise BadInput("--client", f"{exc} (expected {RULE})") from None
        with self._locked():
            entries = self.read()
            hit = [e for e in entries if (e.key_id == key_id if key_id else e.client_id == client_id)]
            if not hit:
                what = f"key id '{key_id}'" if key_id else f"client '{client_id}'"
                raise BadInput("--key-id" if key_id else "--client", f"no API key for {what} in {self.path}")
            now = utc_now()
            changed = False
            for e in hit:
                if e.revoked_at is None:
                    e.revoked_at = now
                    changed = True
            if changed:
                self._write(entries)
        return [e.public() for e in hit]

    def list(self) -> list[dict[str, Any]]:
        return [e.public() for e in self.read()]


class IdentityRefused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Identity:
    """Who is calling: resolves a request's headers to ``(client_id, key_id)``; one per gateway."""

    def __init__(self, state_dir: str | Path | None, *, require_key: bool = False):
        self.keys = KeyFile(state_dir) if state_dir is not None else None
        self.require_key = require_key
        self._by_id: dict[str, tuple[bytes, str, bool]] = {}  # key id -> (digest, client, revoked)
        self._sig: tuple[int, int] | None = None
        self._seen_file = False  # once a key file was seen, key mode stays on (deleting it fails closed)
        self._checked = 0.0
        self._lock = threading.Lock()
        self.refused = 0
        self.reload(force=True)

    # ------------------------------------------------------------------ mode
    @property
    def key_mode(self) -> bool:
        return self.require_key or self._seen_file

    def describe(self) -> dict[str, Any]:
        active = sum(1 for _, _, rev in self._by_id.values() if not rev)
        return {"mode": "api_key" if self.key_mode else "header", "trusting": not self.key_mode,
                "require_api_key": self.require_key, "key_file": str(self.keys.path) if self.keys else None,
                "keys_active": active, "keys_revoked": len(self._by_id) - active, "refused": self.refused}

    def reload(self, *, force: bool = False) -> None:
        """Re-read the key file if it changed (at most every RELOAD_EVERY_S unless ``force``)."""
        if self.keys is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_EVERY_S:
            return
        with self._lock:
            self._checked = now
            try:
                st = os.stat(self.keys.path)
                sig = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                sig = None
            if sig == self._sig and not force:
                return
            if sig is None:
                self._by_id, self._sig = {}, None
                return
            self._seen_file = True
            try:
                entries = self.keys.read()
            except BadInput:
                # a half-edited or broken file: keep the keys we had (fail closed: key mode stays on)
                self._sig = sig
                return
            self._by_id = {e.key_id: (bytes.fromhex(e.sha256), e.client_id, e.revoked_at is not None)
                           for e in entries}
            self._sig = sig

    # ------------------------------------------------------------------ hot path
    def resolve(self, headers) -> tuple[str, str | None]:
        """``(client_id, key_id)`` of a request, or :class:`IdentityRefused`."""
        self.reload()
        if not self.key_mode:
            try:
                return client_id_from_header(headers.get("x-client-id")), None
            except InvalidClientId as exc:
                raise IdentityRefused(400, "bad_client_id", f"X-Client-Id: {exc} (expected {RULE})") from None
        key = headers.get("x-api-key")
        if key is None:
            auth = headers.get("authorization")
            if auth and auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        if not key:
            self.refused += 1
            raise IdentityRefused(401, "api_key_required", "this gateway requires an API key: send "
                                  "'X-Api-Key: <key>' (issued with `aiir gateway keys issue`)")
        m = _KEY_RE.match(key)
        entry = self._by_id.get(m.group(1)) if m else None
        if entry is None or not hmac.compare_digest(entry[0], hashlib.sha256(key.encode()).digest()):
            self.refused += 1
            raise IdentityRefused(401, "invalid_api_key", "unknown or malformed API key")
        if entry[2]:
            self.refused += 1
            raise IdentityRefused(401, "api_key_revoked", f"API key {m.group(1)} has been revoked")
        return entry[1], m.group(1)
