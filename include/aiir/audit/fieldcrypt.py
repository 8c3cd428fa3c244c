"""Field-level encryption of logged input features (AES-256-GCM), for personal data in decision logs.

When the gateway runs with ``--encrypt-fields amount,age`` (or ``*`` for every feature), each named
feature's value is stored in the decision log as::

    {"$aiir_enc": "A256GCM", "kid": "<key id>", "iv": "<base64 96-bit nonce>", "ct": "<base64 ciphertext+tag>"}

The associated data binds the ciphertext to its decision and field (``aiir-field/1|<decision id>|<field>``),
so a value moved to another row or field does not decrypt. The hash chain covers the stored (encrypted)
text, so integrity verification needs no key. Only :mod:`aiir.audit.trace` decrypts, and only when given
the key.

The key (32 bytes, base64 or hex) never lives in the repository. It comes from, in this order:
``AIIR_DECISION_LOG_KEY`` (the value), ``AIIR_DECISION_LOG_KEY_FILE`` (a 0600 file), or in Airflow the
password of the connection ``aiir_decision_log_key`` (any secrets backend), passed in by the adapter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiir.errors import BadInput

MARK = "$aiir_enc"
ALG = "A256GCM"
KEY_ENV = "AIIR_DECISION_LOG_KEY"
KEY_FILE_ENV = "AIIR_DECISION_LOG_KEY_FILE"
FIELDS_ENV = "AIIR_DECISION_LOG_ENCRYPT_FIELDS"
CONN_ID = "aiir_decision_log_key"


def parse_key(text: str | bytes, where: str = KEY_ENV) -> bytes:
    """32 raw bytes from base64 (standard or URL-safe) or 64 hex characters."""
    if isinstance(text, bytes):
        if len(text) == 32:
            return text
        text = text.decode("ascii", "replace")
    t = text.strip()
    if len(t) == 64:
        try:
            return bytes.fromhex(t)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(t + "=" * (-len(t) % 4), altchars=b"-_" if ("-" in t or "_" in t) else None,
                               validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise BadInput(where, "expected a 256-bit key: 32 bytes as base64 or 64 hex characters "
                              "(make one with: python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')")
    return raw


def load_key(required: bool = False) -> bytes | None:
    """The key from ``AIIR_DECISION_LOG_KEY`` or ``AIIR_DECISION_LOG_KEY_FILE``; None when neither is set."""
    if os.environ.get(KEY_ENV):
        return parse_key(os.environ[KEY_ENV])
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as exc:
            raise BadInput(path, f"cannot read the decision-log key: {exc.strerror}") from None
        if st.st_mode & 0o077:
            raise BadInput(path, f"decision-log key file is readable by group or others (mode "
                                 f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
        return parse_key(p.read_text(encoding="ascii", errors="replace"), where=path)
    if required:
        raise BadInput(KEY_ENV, f"field encryption needs a key: set {KEY_ENV} or {KEY_FILE_ENV} "
                                "(in Airflow: the connection aiir_decision_log_key)")
    return None


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"aiir-decision-log-key/1" + key).hexdigest()[:16]


def _aad(decision_id: str, name: str) -> bytes:
    return f"aiir-field/1|{decision_id}|{name}".encode()


def _json(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False, default=str)


class FieldEncryptor:
    """Encrypts the configured features of each logged row. ``fields`` is a list of names or ``["*"]``."""

    def __init__(self, key: bytes, fields: Iterable[str]):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise BadInput("decision-log key", "must be 32 bytes")
        self.fields = [str(f).strip() for f in fields if str(f).strip()]
        if not self.fields:
            raise BadInput("--encrypt-fields", "name at least one feature, or '*' for all")
        self.all = "*" in self.fields
        self._set = frozenset(self.fields)
        self._aes = AESGCM(key)
        self.kid = key_id(key)

    @classmethod
    def from_env(cls) -> FieldEncryptor | None:
        fields = os.environ.get(FIELDS_ENV, "")
        if not fields.strip():
            return None
        return cls(load_key(required=True), fields.split(","))

    def env(self, key: bytes) -> dict[str, str]:
        """What a child writer process needs to build the same encryptor (never on its command line)."""
        return {KEY_ENV: base64.b64encode(key).decode(), FIELDS_ENV: ",".join(self.fields)}

    def seal(self, decision_id: str, name: str, value: Any) -> dict[str, str]:
        iv = os.urandom(12)
        ct = self._aes.encrypt(iv, _json(value).encode(), _aad(decision_id, name))
        return {MARK: ALG, "kid": self.kid, "iv": base64.b64encode(iv).decode(), "ct": base64.b64encode(ct).decode()}

    def encrypt_features(self, decision_id: str, features: dict[str, Any]) -> str:
        """The features as the JSON text to store, with the configured fields encrypted."""
        out = {k: (self.seal(decision_id, k, v) if (self.all or k in self._set) else v)
               for k, v in features.items()}
        return _json(out)


def is_sealed(v: Any) -> bool:
    return isinstance(v, dict) and v.get(MARK) == ALG and "ct" in v and "iv" in v


def encrypted_fields(features: Any) -> list[str]:
    if not isinstance(features, dict):
        return []
    return sorted(k for k, v in features.items() if is_sealed(v))


def decrypt_features(decision_id: str, features: dict[str, Any], keys: list[bytes]
                     ) -> tuple[dict[str, Any], list[str], list[str]]:
    """``(features with what could be decrypted, decrypted field names, problems)``."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    by_kid = {key_id(k): AESGCM(k) for k in keys}
    out, done, problems = dict(features), [], []
    for name, v in features.items():
        if not is_sealed(v):
            continue
        aes = by_kid.get(v.get("kid"))
        if aes is None:
            problems.append(f"{name}: encrypted under key {v.get('kid')}, which was not given")
            continue
        try:
            plain = aes.decrypt(base64.b64decode(v["iv"]), base64.b64decode(v["ct"]), _aad(decision_id, name))
            out[name] = json.loads(plain)
            done.append(name)
        except (InvalidTag, ValueError, binascii.Error):
            problems.append(f"{name}: does not decrypt for decision {decision_id} (moved from another row or "
                            "field, or altered)")
    return out, done, problems
