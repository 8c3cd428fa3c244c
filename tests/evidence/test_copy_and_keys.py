"""One-pass copy+hash (every code path) and signing-key handling."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aiir.errors import BadInput
from aiir.evidence import copy as cp
from aiir.evidence.keys import (
    default_key_path,
    fingerprint,
    load_or_create_signing_key,
    load_private_key_pem,
    load_public_key,
    private_key_pem,
    public_key_pem,
)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    p = tmp_path_factory.mktemp("big") / "big.bin"
    data = os.urandom(cp.PIPELINE_MIN + 3 * cp.CHUNK + 12345)  # several chunks and a ragged tail
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest(), len(data)


@pytest.mark.parametrize("method", ["auto", "cfr", "threaded", "simple"])
def test_every_copy_path_hashes_what_it_writes(tmp_path, big, method):
    src, digest, size = big
    dst = tmp_path / "out.bin"
    assert cp.copy_and_hash(src, dst, method=method) == (digest, size)
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest


def test_small_and_empty_files(tmp_path):
    for data in (b"", b"x", os.urandom(100_000)):
        src, dst = tmp_path / "s", tmp_path / "d"
        src.write_bytes(data)
        assert cp.copy_and_hash(src, dst) == (hashlib.sha256(data).hexdigest(), len(data))
        dst.unlink()


def test_falls_back_when_copy_file_range_is_unsupported(tmp_path, big, monkeypatch):
    src, digest, size = big

    def refuse(*a, **k):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    assert cp.copy_and_hash(src, tmp_path / "o", method="auto") == (digest, size)


def test_copy_error_mid_way_is_raised_not_swallowed(tmp_path, big, monkeypatch):
    src, _, _ = big
    real = os.copy_file_range
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EIO, "disk on fire")
        return real(*a, **k)

    monkeypatch.setattr(os, "copy_file_range", flaky)
    with pytest.raises(OSError, match="disk on fire"):
        cp.copy_and_hash(src, tmp_path / "o", method="auto")


def test_destination_must_not_exist(tmp_path, big):
    (tmp_path / "o").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        cp.copy_and_hash(big[0], tmp_path / "o")


def test_missing_and_non_regular_sources(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        cp.hash_file(tmp_path / "missing")
    with pytest.raises(BadInput, match="folder"):
        cp.hash_file(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInput, match="not a regular file"):
        cp.copy_and_hash(tmp_path / "fifo", tmp_path / "o")  # must not block on open


# ---------------------------------------------------------------------------------------- keys
def test_key_created_once_0600_then_reused(aiir_home):
    k1 = load_or_create_signing_key()
    path = default_key_path()
    assert path == aiir_home / "keys" / "evidence_ed25519.pem" and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert fingerprint(load_or_create_signing_key()) == fingerprint(k1)


def test_group_readable_key_is_refused(tmp_path):
    p = tmp_path / "k.pem"
    load_or_create_signing_key(p)
    os.chmod(p, 0o644)
    with pytest.raises(BadInput, match="chmod 600"):
        load_or_create_signing_key(p)


def test_pem_from_an_airflow_connection(tmp_path):
    k = Ed25519PrivateKey.generate()
    pem = private_key_pem(k).decode()
    one_line = pem.replace("\n", "\\n")
    for form in (pem, pem.encode(), one_line, one_line.encode(), "  " + pem + "\n\n"):
        assert fingerprint(load_private_key_pem(form)) == fingerprint(k)
    enc = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.BestAvailableEncryption(b"s3cret"))
    assert fingerprint(load_private_key_pem(enc, password="s3cret")) == fingerprint(k)


def test_wrong_kind_of_key_is_bad_input(tmp_path):
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(BadInput, match="Ed25519"):
        load_private_key_pem(ec_pem)
    with pytest.raises(BadInput, match="PEM"):
        load_private_key_pem("not a key")
    with pytest.raises(BadInput):
        load_public_key(tmp_path / "missing.pem")


def test_public_key_sources_agree(tmp_path):
    k = Ed25519PrivateKey.generate()
    (tmp_path / "pub.pem").write_bytes(public_key_pem(k))
    for src in (k, k.public_key(), public_key_pem(k), public_key_pem(k).decode(), tmp_path / "pub.pem",
                str(tmp_path / "pub.pem")):
        assert fingerprint(load_public_key(src)) == fingerprint(k)


def test_hash_falls_back_to_pread_when_mmap_fails(tmp_path, big, monkeypatch):
    src, digest, size = big

    def no_mmap(*a, **k):
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(cp.mmap, "mmap", no_mmap)
    assert cp.copy_and_hash(src, tmp_path / "o", method="cfr") == (digest, size)
