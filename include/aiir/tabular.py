"""Reading user-supplied tables (CSV or Parquet) with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiir.errors import BadInput

if TYPE_CHECKING:
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


def read_table(path: str | Path, *, what: str = "table") -> pd.DataFrame:
    """Load a CSV or Parquet file. Raises :class:`BadInput` naming ``path`` on any problem."""
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
            df = pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise BadInput(str(p), f"{what} file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadInput(str(p), f"cannot parse {what} as CSV ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # pyarrow raises many types for corrupt parquet
        raise BadInput(str(p), f"cannot read {what} as {kind} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from None
    if df.shape[1] == 0:
        raise BadInput(str(p), f"{what} has no columns")
    if df.shape[0] == 0:
        raise BadInput(str(p), f"{what} has a header but no rows")
    return df


def require_columns(df: pd.DataFrame, columns: dict[str, str | None], *, where: str) -> None:
    """Check that each named column exists. ``columns`` maps option name (e.g. ``--label-column``) to value."""
    for option, col in columns.items():
        if col is not None and col not in df.columns:
            shown = ", ".join(map(str, list(df.columns)[:12])) + (" …" if df.shape[1] > 12 else "")
            raise BadInput(where, f"{option} '{col}' is not a column (columns: {shown})")
