"""The chain-of-custody log: ``custody.jsonl``, one canonical-JSON entry per line, hash-chained.

Every entry carries ``prev`` = SHA-256 (hex) of the previous entry's canonical JSON (the first entry's
``prev`` is 64 zeros) and ``seq`` = its 0-based line number, so an edited, inserted, removed or
reordered entry breaks the chain at that point. The manifest records the chain head at seal time and
is signed, so the entries up to sealing cannot be rewritten without breaking the signature. Every entry
appended after that head (``sealed`` itself, ``verified``, ``exported``, ...) is signed on its own
(``signer``, ``signer_key``, ``sig``: Ed25519 over the entry's canonical JSON without ``sig``), and the
signature covers ``prev``, so editing, inserting or dropping one of them (other than the newest ones: a
log cut short after the ``sealed`` entry is still a consistent log) breaks a signature or a link.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._util import ZERO_HASH, canonical_json, sha256_hex

CUSTODY_FILENAME = "custody.jsonl"


def entry_hash(entry: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(entry))


@dataclass
class ChainState:
    """What a forward read of the log established (incrementally, from ``offset``)."""

    offset: int = 0
    seq: int = -1
    head: str = ZERO_HASH
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_chain(path: Path, state: ChainState | None = None, *, keep: bool = True) -> ChainState:
    """Read (the rest of) the custody log and check every link; problems are collected, not raised."""
    state = state or ChainState()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if state.offset:
            state.problems.append(f"{CUSTODY_FILENAME} disappeared")
        return state
    except OSError as exc:
        state.problems.append(f"{CUSTODY_FILENAME} cannot be opened ({exc.strerror}; a symbolic link?)")
        return state
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder or a FIFO in its place: before fdopen refuses it
        os.close(fd)
        state.problems.append(f"{CUSTODY_FILENAME} is not a regular file")
        return state
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size < state.offset:
            state.problems.append(f"{CUSTODY_FILENAME} shrank from {state.offset} to {st.st_size} bytes")
            return state
        fh.seek(state.offset)
        data = fh.read()
    if not data:
        return state
    *lines, tail = data.split(b"\n")
    for raw in lines:
        lineno = state.seq + 2
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            state.problems.append(f"{CUSTODY_FILENAME} line {lineno}: not a JSON object ({exc})")
            entry = None
        if entry is not None:
            if entry.get("seq") != state.seq + 1:
                state.problems.append(f"{CUSTODY_FILENAME} line {lineno}: seq {entry.get('seq')!r}, expected {state.seq + 1}"
                                      " (an entry was inserted, removed or reordered)")
            if entry.get("prev") != state.head:
                state.problems.append(f"{CUSTODY_FILENAME} line {lineno}: prev does not match the previous entry's digest"
                                      " (an entry before it was edited, inserted or removed)")
            if canonical_json(entry) != raw:
                state.problems.append(f"{CUSTODY_FILENAME} line {lineno}: not in canonical form (re-written by hand?)")
            state.head = entry_hash(entry)
            if keep:
                state.entries.append(entry)
        else:
            state.head = sha256_hex(raw)
            if keep:
                state.entries.append({"seq": state.seq + 1, "action": "<unreadable>"})
        state.seq += 1
    state.offset += sum(len(raw) + 1 for raw in lines)
    if tail:
        state.problems.append(f"{CUSTODY_FILENAME} line {state.seq + 2}: incomplete last line (no newline)")
    return state


SIGNED_FIELDS = ("signer", "signer_key", "sig")


def signer(private_key) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function that adds ``signer``/``signer_key``/``sig`` to an entry with ``private_key`` (Ed25519)."""
    from cryptography.hazmat.primitives import serialization

    from .keys import fingerprint

    pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fp, pub_b64 = fingerprint(private_key), base64.b64encode(pub).decode()

    def sign(entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if k not in SIGNED_FIELDS}
        out["signer"], out["signer_key"] = fp, pub_b64
        out["sig"] = base64.b64encode(private_key.sign(canonical_json(out))).decode()
        return out

    return sign


def check_entry_signature(entry: dict[str, Any]) -> tuple[str | None, str | None]:
    """(signer fingerprint, problem). The signature is checked under ``signer_key``, which must hash to
    ``signer``; whether that signer is trusted is the caller's decision."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig, fp, key_b64 = entry.get("sig"), entry.get("signer"), entry.get("signer_key")
    if not (isinstance(sig, str) and isinstance(fp, str) and isinstance(key_b64, str)):
        return None, "not signed"
    try:
        raw = base64.b64decode(key_b64, validate=True)
        pub = Ed25519PublicKey.from_public_bytes(raw)
        signature = base64.b64decode(sig, validate=True)
    except (ValueError, TypeError):
        return fp, "unreadable signature or signer key"
    if sha256_hex(raw) != fp:
        return fp, "signer_key does not match signer"
    body = {k: v for k, v in entry.items() if k != "sig"}
    try:
        pub.verify(signature, canonical_json(body))
    except InvalidSignature:
        return fp, "signature does not verify (the entry was changed)"
    return fp, None


def append_entry(path: Path, state: ChainState, fields: dict[str, Any], *, fsync: bool,
                 sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Append one entry after ``state`` (the caller holds the bundle lock and has read to the end);
    ``sign`` (see :func:`signer`) signs it."""
    entry = dict(fields)
    entry["seq"] = state.seq + 1
    entry["prev"] = state.head
    if sign is not None:
        entry = sign(entry)
    line = canonical_json(entry) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        n = os.write(fd, line)
        if n != len(line):
            raise OSError(f"short write to {path} ({n} of {len(line)} bytes)")
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    state.offset += len(line)
    state.seq += 1
    state.head = entry_hash(entry)
    state.entries.append(entry)
    return entry
