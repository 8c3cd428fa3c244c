"""Ed25519 signing keys for evidence bundles.

The default key lives at ``$AIIR_HOME/keys/evidence_ed25519.pem`` (PKCS#8 PEM, unencrypted, mode 0600,
folder 0700) and is created on first use. In Airflow the key is held in a connection instead and the
adapter passes its PEM text to :func:`load_private_key_pem`.

A key file readable by group or others is refused, as ssh does: whoever can read it can re-sign a
tampered bundle.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aiir import config
from aiir.errors import BadInput

from ._util import sha256_hex

KEY_FILENAME = "evidence_ed25519.pem"


def default_key_path() -> Path:
    return config.paths().home / "keys" / KEY_FILENAME


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
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)
    try:
        st = path.stat()
    except OSError as exc:
        raise BadInput(str(path), f"cannot read signing key: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(str(path), "signing key is not a regular file")
    if st.st_mode & 0o077:
        raise BadInput(str(path), f"signing key is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
                       " run: chmod 600 " + str(path))
    return load_private_key_pem(path.read_bytes())


