"""Row canonicalisation and row digests (see docs/forensics.md, "Row digests")."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:

    import pandas as pd

# ------------------------------------------------------------------------------------- row digests

def _canon_cell_series(s: pd.Series) -> pd.Series:
    """Canonical text of every cell of one column (see docs/forensics.md, "Row digests")."""
    import pandas as pd
    from pandas.api import types as pt

    isna = s.isna().to_numpy()
    if pt.is_bool_dtype(s.dtype):
        out = pd.Series(np.where(s.to_numpy(dtype=bool, na_value=False), "true", "false"), index=s.index,
                        dtype=object)
    elif pt.is_integer_dtype(s.dtype):
        out = s.astype("Int64").astype(str).astype(object)
    elif pt.is_float_dtype(s.dtype):
        out = s.map(_canon_float).astype(object)
    else:
        out = s.map(_canon_obj).astype(object)
    out[isna] = ""
    return out


def _canon_float(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    if math.isnan(f):
        return ""
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f.is_integer():
        return str(int(f))
    return repr(f)


def _canon_obj(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _canon_float(v)
    if hasattr(v, "isoformat"):
        v = v.isoformat()
    text = str(v)
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def canonical_lines(df: pd.DataFrame) -> list[str]:
    """One canonical CSV line per row over every column, columns in sorted name order, no newline."""
    cols = sorted(df.columns, key=str)
    if not cols:
        return [""] * len(df)
    parts = [_canon_cell_series(df[c]) for c in cols]
    joined = parts[0]
    for p in parts[1:]:
        joined = joined.str.cat(p, sep=",")
    return joined.tolist()


def row_digests(df: pd.DataFrame) -> list[str]:
    """SHA-256 of each row's canonical CSV line plus ``\\n`` (see docs/forensics.md)."""
    return [hashlib.sha256((line + "\n").encode("utf-8")).hexdigest() for line in canonical_lines(df)]


