"""Spreadsheet-safe CSV: the one writer for every CSV aiir produces.

Responders open exports (recent decisions, affected decisions, suspect rows) in a spreadsheet, and a cell
that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read there as a formula
(``=HYPERLINK(...)``, ``+cmd|' /C calc'!A0``, DDE). :func:`neutralise` prefixes such a *text* cell with a
single quote (OWASP's "CSV injection" advice), which spreadsheets show as the literal text; numbers stay
numbers (``-3.5`` as a float is not touched, ``"-3.5"`` as text is). Column names are treated the same.

:func:`write_csv` writes a DataFrame (or rows) neutralised, atomically (temp file + rename) and, by
default, with mode 0600: CSVs of decisions are copies of the decision log, which lives in a 0700 folder.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PRIVATE = 0o600


def neutralise(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names are neutralised (numbers untouched)."""
    out = df.copy()
    out.columns = [neutralise(str(c)) if isinstance(c, str) else c for c in out.columns]
    for col in out.columns:
        s = out[col]
        if s.dtype == object or str(s.dtype) in ("string", "category") or str(s.dtype).startswith("string"):
            out[col] = s.astype(object).map(neutralise)
    return out


def _missing(v: Any) -> bool:
    try:
        return v is None or (v != v)  # None, NaN, NaT
    except (TypeError, ValueError):
        return False


def csv_text(data: pd.DataFrame | Iterable[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """Neutralised CSV text (RFC 4180: CRLF line ends, minimal quoting) of a DataFrame (no index, missing
    values empty) or of rows (with an optional header)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        df = safe_frame(data)
        header = [str(c) for c in df.columns]
        data = (["" if _missing(v) else v for v in row] for row in df.itertuples(index=False, name=None))
    buf = io.StringIO()
    # RFC 4180 line ends: with them a CR inside a cell is quoted (with "\n" alone neither pandas nor the
    # csv module quotes a lone CR, and a reader would split the row there)
    w = csv.writer(buf, lineterminator="\r\n")
    if header is not None:
        w.writerow([neutralise(h) for h in header])
    for row in data:
        w.writerow([neutralise(v) for v in row])
    return buf.getvalue()


def write_csv(data: pd.DataFrame | Iterable[Sequence[Any]], path: str | os.PathLike, *,
              header: Sequence[str] | None = None, mode: int = PRIVATE) -> Path:
    """Write neutralised CSV to ``path`` atomically with ``mode`` (default 0600); returns the path."""
    path = Path(path)
    text = csv_text(data, header)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
