"""Deterministic, idempotent writers of forensics outputs (JSON through aiir.jsonio, Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiir.hashing import sha256_file

if TYPE_CHECKING:
    import pandas as pd

def write_json(path: Path, obj: Any) -> bool:
    """Write ``obj`` as indented JSON unless the file already holds exactly that; True when written."""
    from aiir.jsonio import write_json as _write

    return _write(path, obj)


def write_text(path: Path, text: str) -> bool:
    """Atomic, and only when the content changes (aiir.jsonio.write_text); True when written."""
    from aiir.jsonio import write_text as _write

    return _write(path, text)


def write_parquet(df: pd.DataFrame, path: Path) -> str:
    """Deterministic Parquet (no pandas metadata), written atomically and only when the bytes change.

    Returns the SHA-256 of the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False).replace_schema_metadata(None)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    new = sha256_file(tmp)
    if path.exists() and sha256_file(path) == new:
        tmp.unlink()
    else:
        tmp.replace(path)
    return new


