"""Streaming SHA-256: memory stays flat whatever the file size."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Files a tool rewrites on read, which are not part of the artifact: MLflow writes
# ``registered_model_meta`` into a model folder whenever ``models:/NAME/V`` is loaded or downloaded.
VOLATILE_NAMES = frozenset({"registered_model_meta"})


def sha256_tree(root: str | Path, *, exclude: frozenset[str] = VOLATILE_NAMES) -> dict[str, str]:
    """Digest of every file below ``root`` keyed by POSIX relative path (sorted), minus ``exclude`` names."""
    root = Path(root)
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in exclude}


def tree_digest(root: str | Path) -> str:
    """One digest for a whole folder: SHA-256 over its sorted ``path  digest`` lines."""
    lines = "".join(f"{k}  {v}\n" for k, v in sha256_tree(root).items())
    return sha256_bytes(lines.encode())
