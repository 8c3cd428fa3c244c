"""Small shared pieces: canonical JSON, UTC timestamps, name checks."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from aiir.errors import BadInput

ZERO_HASH = "0" * 64
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def canonical_json(obj: Any) -> bytes:
    """The one byte form aiir signs and chains: sorted keys, no whitespace, UTF-8, no NaN.

    For the values aiir writes (strings, integers, booleans, null, lists, objects with ASCII keys)
    this equals RFC 8785 (JCS) output.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    """UTC ISO-8601 with microseconds and a ``Z`` suffix."""
    return iso_utc(datetime.now(UTC))


def iso_utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def loads_strict(data: bytes | str, where: str) -> Any:
    """``json.loads`` that refuses duplicate keys (two parsers must never read two meanings)."""

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    try:
        return json.loads(data, object_pairs_hook=no_dupes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(where, f"not valid JSON: {exc}") from None


def check_incident_id(incident_id: str) -> str:
    if not isinstance(incident_id, str) or not _ID_RE.match(incident_id):
        raise BadInput("incident_id", f"{incident_id!r} is not a safe folder name "
                       "(letters, digits, '.', '_', '-'; starts with a letter or digit; at most 128)")
    return incident_id


def check_category(category: str) -> str:
    if not isinstance(category, str) or not _CATEGORY_RE.match(category):
        raise BadInput("category", f"{category!r}: expected a short lower-case word such as "
                       "'model', 'training_data', 'decision_log', 'config', 'target_state', 'finding', 'report'")
    return category


def check_dest(name: str, where: str = "dest_name") -> str:
    """A relative POSIX path inside the bundle payload, normalised; refuses anything that could escape."""
    if not isinstance(name, str) or not name:
        raise BadInput(where, "expected a non-empty relative path")
    if len(name) > 4096 or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadInput(where, f"{name!r}: no backslashes or control characters, at most 4096 characters")
    if name.startswith("/"):
        raise BadInput(where, f"{name!r}: must be relative (it is placed under the bundle's files/)")
    parts = [p for p in name.split("/") if p != ""]
    if not parts or any(p in (".", "..") for p in parts):
        raise BadInput(where, f"{name!r}: '.' and '..' are not allowed")
    if any(len(p.encode()) > 255 for p in parts):
        raise BadInput(where, f"{name!r}: a path component is longer than 255 bytes")
    return "/".join(parts)
