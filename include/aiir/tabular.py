"""Reading user-supplied tables (CSV or Parquet) with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiir.errors import BadInput

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_kind(path: str | Path) -> str:
    """What is at ``path``, in words ("a directory", "a FIFO (named pipe)", ...), for error messages."""
    import stat

    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        return f"nothing readable ({exc.strerror})"
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"


def table_columns(path: str | Path) -> list[str] | None:
    """The column names of a Parquet file from its schema (no data read); None for CSV or unreadable."""
    if SUFFIXES.get(Path(path).suffix.lower()) != "parquet":
        return None
    try:
        import pyarrow.parquet as pq

        return [str(c) for c in pq.ParquetFile(path).schema_arrow.names if not str(c).startswith("__index_level_")]
    except Exception:  # read_table reports the problem with the file
        return None


def _release_arrow_memory() -> None:
    """Give the Arrow allocator's cached pages back: after a large Parquet read they double the process's RSS."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # best effort
        pass


def read_table(path: str | Path, *, what: str = "table", exclude: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Load a CSV or Parquet file. Raises :class:`BadInput` naming ``path`` on any problem.

    ``exclude``: Parquet columns not to read at all (a CSV is read whole and the columns dropped).
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise BadInput(str(p), f"{what} file not found")
    if not p.is_file():
        raise BadInput(str(p), f"{what} must be a regular file, got {file_kind(p)}")
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise BadInput(str(p), f"{what} must be .csv or .parquet, got '{p.suffix or '(no suffix)'}'")
    try:
        if kind == "csv":
            df = pd.read_csv(p, low_memory=False)
        else:
            names = table_columns(p) if exclude else None
            keep = [c for c in names if c not in set(exclude)] if names else None
            df = pd.read_parquet(p, columns=keep if keep else None)
            _release_arrow_memory()
    except pd.errors.EmptyDataError:
        raise BadInput(str(p), f"{what} file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadInput(str(p), f"cannot parse {what} as CSV ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # pyarrow raises many types for corrupt parquet
        raise BadInput(str(p), f"cannot read {what} as {kind} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from None
    if df.shape[1] == 0:
        raise BadInput(str(p), f"{what} has no columns")
    if exclude:
        df = df.drop(columns=[c for c in exclude if c in df.columns])
    if df.shape[0] == 0:
        raise BadInput(str(p), f"{what} has a header but no rows")
    return df


def read_table_sample(path: str | Path, *, what: str = "table", max_rows: int, seed: int,
                      exclude: tuple[str, ...] | list[str] = (), batch_rows: int = 262_144
                      ) -> tuple[pd.DataFrame, np.ndarray | None, int]:
    """At most ``max_rows`` rows of a table in bounded memory: ``(frame, row numbers, total rows)``.

    A Parquet file with more rows is read batch by batch (Arrow ``iter_batches``, ``batch_rows`` rows at a
    time) keeping a seeded uniform sample without replacement of exactly ``max_rows`` rows, in file order;
    ``row numbers`` are their 0-based positions in the file. Otherwise (small file, CSV) the table is read
    whole with :func:`read_table` and ``row numbers`` is None. Errors as :func:`read_table`.
    """

    p = Path(path)
    total = parquet_rows(p) if max_rows else None
    if total is None or total <= max_rows:
        df = read_table(p, what=what, exclude=exclude)
        return df, None, len(df)
    try:
        df, pick = _sample_parquet(p, total, max_rows, seed, exclude, batch_rows)
    except Exception as exc:  # pyarrow raises many types for corrupt parquet
        raise BadInput(str(p), f"cannot read {what} as parquet ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from None
    finally:
        _release_arrow_memory()
    if df.shape[1] == 0:
        raise BadInput(str(p), f"{what} has no columns")
    return df, pick, total


def _sample_parquet(p: Path, total: int, max_rows: int, seed: int, exclude: tuple[str, ...] | list[str],
                    batch_rows: int):
    """The sampling pass of :func:`read_table_sample`; its Arrow objects (file, batches, table) are all gone
    when it returns, so the allocator can give their memory back."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(p)
    names = [c for c in pf.schema_arrow.names if c not in set(exclude) and not c.startswith("__index_level_")]
    pick = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
    columns = {}
    for name in names:  # one column at a time: only one decoded column chunk is in memory at once
        parts, start = [], 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=[name]):
            end = start + batch.num_rows
            lo, hi = np.searchsorted(pick, [start, end])
            if hi > lo:
                parts.append(batch.column(0).take(pa.array(pick[lo:hi] - start)))
            start = end
        columns[name] = pa.chunked_array(parts, type=pf.schema_arrow.field(name).type)
        del parts
    pf.close()
    table = pa.table(columns)
    del columns
    return table.to_pandas(self_destruct=True), pick


def iter_table(path: str | Path, *, columns: list[str] | None = None, batch_rows: int = 262_144):
    """Every row of a Parquet file as pandas frames of at most ``batch_rows`` rows (bounded memory)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch.to_pandas()
    finally:
        _release_arrow_memory()


def parquet_rows(path: str | Path) -> int | None:
    """Row count of a Parquet file from its footer; None for other files or unreadable ones."""
    if SUFFIXES.get(Path(path).suffix.lower()) != "parquet" or not Path(path).is_file():
        return None
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # read_table reports the problem with the file
        return None


def require_columns(df: pd.DataFrame, columns: dict[str, str | None], *, where: str) -> None:
    """Check that each named column exists. ``columns`` maps option name (e.g. ``--label-column``) to value."""
    for option, col in columns.items():
        if col is not None and col not in df.columns:
            shown = ", ".join(map(str, list(df.columns)[:12])) + (" …" if df.shape[1] > 12 else "")
            raise BadInput(where, f"{option} '{col}' is not a column (columns: {shown})")
