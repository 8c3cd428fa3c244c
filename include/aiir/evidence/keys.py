"""Ed25519 signing keys for evidence bundles.

The default key lives at ``$AIIR_HOME/keys/evidence_ed25519.pem`` (PKCS#8 PEM, unencrypted, mode 0600,
folder 0700) and is created on first use. In Airflow the key is held in a connection instead and the
adapter passes its PEM text to :func:`load_private_key_pem`.

A key file readable by group or others is refused, as ssh does: whoever can read it can re-sign a
tampered bundle.

The **trust store** (``$AIIR_HOME/keys/trusted_keys``, or ``$AIIR_TRUSTED_KEYS``) lists the key
fingerprints ``aiir verify`` accepts by default: every key this module creates is added to it, and the
operator adds others (``aiir evidence trust PEM|FINGERPRINT``). One fingerprint (64 hex digits, the
SHA-256 of the raw public key) per line, optionally followed by a comment; ``#`` starts a comment line.
The default signing key, when present, is trusted even if the file is missing.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aiir import config
from aiir.errors import BadInput

from ._util import sha256_hex

KEY_FILENAME = "evidence_ed25519.pem"
TRUST_FILENAME = "trusted_keys"
_FP_RE = re.compile(r"^[0-9a-f]{64}$")


def default_key_path() -> Path:
    return config.paths().home / "keys" / KEY_FILENAME


def trust_store_path() -> Path:
    """``$AIIR_TRUSTED_KEYS``, else ``$AIIR_HOME/keys/trusted_keys``."""
    env = os.environ.get("AIIR_TRUSTED_KEYS")
    return Path(env).expanduser() if env else config.paths().home / "keys" / TRUST_FILENAME


def _as_pem_bytes(data: bytes | str) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("ascii")  # PEM is ASCII; anything else is passed through as is
        except UnicodeDecodeError:
            return bytes(data)
    if isinstance(data, str):
        text = data.strip()
        # Airflow connection fields often hold the PEM on one line with literal "\n".
        if "\n" not in text and "\\n" in text:
            text = text.replace("\\n", "\n")
        data = text.encode()
    return data.strip() + b"\n"


def load_private_key_pem(data: bytes | str, password: bytes | str | None = None) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM text (PKCS#8; optionally encrypted with ``password``)."""
    if isinstance(password, str):
        password = password.encode()
    try:
        key = serialization.load_pem_private_key(_as_pem_bytes(data), password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadInput("signing key", f"not a readable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput("signing key", f"expected an Ed25519 key, got {type(key).__name__}")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: how manifests and custody entries name a key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return sha256_hex(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def load_public_key(source: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | Path) -> Ed25519PublicKey:
    """A public key from a key object, PEM bytes/text, or the path of a PEM file."""
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    if isinstance(source, Ed25519PublicKey):
        return source
    where = "public key"
    if isinstance(source, Path) or (isinstance(source, str) and "-----BEGIN" not in source):
        where = str(source)
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise BadInput(where, f"cannot read public key: {exc.strerror}") from None
    pem = _as_pem_bytes(source)
    try:
        if b"PRIVATE KEY" in pem:
            return load_private_key_pem(pem).public_key()
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadInput(where, f"not a readable PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(where, f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def load_or_create_signing_key(path: str | Path | None = None) -> Ed25519PrivateKey:
    """Load the signing key at ``path`` (default :func:`default_key_path`), creating it on first use.

    Creation is atomic and race-free: the key is written to a temporary file and hard-linked into
    place, so two processes starting at once end up with the same key.
    """
    path = Path(path) if path else default_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".new-key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, private_key_pem(key))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                created = False  # another process won the race: use its key
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)
        if created:  # a key aiir issued: `aiir verify` trusts it by default
            trust_key(key, f"issued by aiir at {path}")
    return load_private_key_pem(read_private_key_file(path))


def read_private_key_file(path: Path) -> bytes:
    """A private key file's bytes, refused (BadInput) unless it is a regular file only its owner can read."""
    try:
        st = path.stat()
    except OSError as exc:
        raise BadInput(str(path), f"cannot read signing key: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(str(path), "signing key is not a regular file")
    if st.st_mode & 0o077:
        raise BadInput(str(path), f"signing key is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
                       " run: chmod 600 " + str(path))
    return path.read_bytes()




# ---------------------------------------------------------------------------------------- trust store

def as_fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | Path) -> str:
    """A fingerprint from a key object, a PEM (text, bytes or file path) or a 64-hex-digit fingerprint."""
    if isinstance(key, str) and _FP_RE.match(key.strip().lower()):
        return key.strip().lower()
    return fingerprint(load_public_key(key))


def read_trust_store(path: str | Path | None = None) -> dict[str, str]:
    """{fingerprint: comment} from the trust store file (empty if there is none). A malformed line is
    a BadInput naming the file and line: a trust store that does not say what it means is not used."""
    p = Path(path) if path is not None else trust_store_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(str(p), f"cannot read the trust store: {getattr(exc, 'strerror', None) or exc}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fp, _, comment = line.partition(" ")
        if not _FP_RE.match(fp.lower()):
            raise BadInput(f"{p}:{n}", "expected a key fingerprint (64 hex digits) optionally followed by a comment")
        out[fp.lower()] = comment.strip()
    return out


def trust_key(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | Path, comment: str = "",
              path: str | Path | None = None) -> str:
    """Add a key (or fingerprint) to the trust store; returns its fingerprint. Idempotent."""
    fp = as_fingerprint(key)
    p = Path(path) if path is not None else trust_store_path()
    if fp in read_trust_store(p):
        return fp
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    comment = " ".join(str(comment).split())[:200]
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(fd, f"{fp} {comment}".rstrip().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return fp


def default_key_fingerprint() -> str | None:
    """The fingerprint of the default signing key if it exists and is usable (never creates one)."""
    p = default_key_path()
    try:
        if not p.is_file() or p.stat().st_mode & 0o077:
            return None
        return fingerprint(load_private_key_pem(p.read_bytes()))
    except (OSError, BadInput):
        return None


def load_signing_key_if_present(path: str | Path | None = None) -> Ed25519PrivateKey | None:
    """The signing key at ``path`` (default key) if it exists and is usable; never creates one."""
    p = Path(path) if path else default_key_path()
    try:
        if not p.is_file() or p.stat().st_mode & 0o077:
            return None
        return load_private_key_pem(p.read_bytes())
    except (OSError, BadInput):
        return None


def trusted_fingerprints(extra: Iterable[Ed25519PublicKey | bytes | str | Path] = (), *,
                         trust_store: str | Path | None = None) -> dict[str, str]:
    """{fingerprint: where it comes from}: the trust store, the default signing key, and ``extra``."""
    out = {fp: f"trust store {trust_store or trust_store_path()}" + (f" ({c})" if c else "")
           for fp, c in read_trust_store(trust_store).items()}
    own = default_key_fingerprint()
    if own and own not in out:
        out[own] = f"this machine's signing key {default_key_path()}"
    for k in extra:
        out.setdefault(as_fingerprint(k), "--trusted-key")
    return out
