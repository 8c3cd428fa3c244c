"""Request bodies → validated rows, in the MLflow scoring formats (so MLflow and SageMaker clients work
unchanged), with errors that name the problem.

JSON (``application/json``), exactly one of:

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``columns`` optional → signature order)
* ``{"dataframe_records": [{"col": value, ...}, ...]}``
* ``{"inputs": ...}`` / ``{"instances": ...}`` — records, a ``{"col": [values]}`` column mapping, a
  ``{"col": value}`` single row, or positional rows (lists in signature order)

plus an optional, empty ``params``. CSV (``text/csv``): a header row naming the columns, or — SageMaker
style — no header and the values in signature order.

Validation against the model signature: every required column present, no unknown column, no
duplicate, values of the column's type (numbers for double/float/long/integer — integers must be
integral — booleans, strings), no NaN/Infinity. Nothing here imports pandas until a frame is built.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DATA_KEYS = ("dataframe_split", "dataframe_records", "inputs", "instances")
NUMERIC = {"double", "float", "long", "integer"}


class InputError(Exception):
    """A request the gateway refuses; carries the HTTP status and a machine-readable code."""

    def __init__(self, message: str, *, code: str = "bad_request", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass
class Parsed:
    columns: list[str] | None  # None: positional rows, names come from the signature
    rows: list[list[Any]]
    text: bool = False  # values are CSV text still to be converted


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str = "any"  # double, float, long, integer, boolean, string, binary, datetime, any
    required: bool = True


def _reject_constant(name: str) -> Any:
    raise InputError(f"{name} is not allowed in the JSON body (numbers must be finite)", code="bad_json")


def _loads(body: bytes) -> Any:
    if not body or not body.strip():
        raise InputError("empty request body (expected a JSON object with one of: "
                         + ", ".join(DATA_KEYS) + ")", code="empty_body")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                         code="bad_json") from None
    except UnicodeDecodeError:
        raise InputError("body is not valid UTF-8 text", code="bad_json") from None
    except RecursionError:
        raise InputError("JSON body is nested too deeply", code="bad_json") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise InputError(f"body is not usable JSON: {str(exc)[:200]}", code="bad_json") from None


def _records(recs: Any, where: str) -> Parsed:
    if not isinstance(recs, list) or not recs:
        raise InputError(f"'{where}' must be a non-empty list of objects", code="bad_format")
    first = recs[0]
    if not isinstance(first, dict):
        raise InputError(f"'{where}' item 0 must be an object mapping column to value", code="bad_format")
    cols = list(first)
    rows = []
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise InputError(f"'{where}' item {i} must be an object mapping column to value",
                             code="bad_format")
        if len(r) != len(cols) or (i and r.keys() != first.keys()):
            extra = sorted(set(r) - set(cols))
            missing = sorted(set(cols) - set(r))
            raise InputError(f"'{where}' item {i} has different columns from item 0"
                             + (f"; missing: {', '.join(missing)}" if missing else "")
                             + (f"; extra: {', '.join(map(str, extra))}" if extra else ""),
                             code="missing_columns" if missing else "unexpected_columns")
        rows.append([r[c] for c in cols])
    return Parsed(cols, rows)


def _positional(data: Any, where: str) -> list[list[Any]]:
    if not isinstance(data, list) or not data:
        raise InputError(f"'{where}' must be a non-empty list of rows", code="bad_format")
    if all(not isinstance(v, list | dict) for v in data):  # one positional row
        return [data]
    for i, r in enumerate(data):
        if not isinstance(r, list):
            raise InputError(f"'{where}' row {i} must be a list of values", code="bad_format")
    return data


def parse_json_payload(body: bytes, columns: list[str] | None = None) -> Parsed:
    """Structural parse of an MLflow JSON scoring body (types are checked by :class:`InputSchema`)."""
    obj = _loads(body)
    if not isinstance(obj, dict):
        raise InputError("JSON body must be an object with one of: " + ", ".join(DATA_KEYS),
                         code="bad_format")
    keys = [k for k in DATA_KEYS if k in obj]
    other = [k for k in obj if k not in DATA_KEYS and k != "params"]
    if len(keys) != 1 or other:
        found = ", ".join(map(str, obj)) or "none"
        raise InputError(f"JSON body must have exactly one of {', '.join(DATA_KEYS)} (found keys: {found})",
                         code="bad_format")
    if obj.get("params"):
        raise InputError("'params' are not supported by this gateway", code="bad_format")
    key = keys[0]
    data = obj[key]
    if key == "dataframe_split":
        if not isinstance(data, dict) or "data" not in data:
            raise InputError("'dataframe_split' must be an object with 'data' (and usually 'columns')",
                             code="bad_format")
        bad = [k for k in data if k not in ("columns", "data", "index")]
        if bad:
            raise InputError(f"'dataframe_split' has unknown key(s): {', '.join(map(str, bad))} "
                             "(expected columns, data, index)", code="bad_format")
        rows = _positional(data["data"], "dataframe_split.data")
        cols = data.get("columns")
        if cols is not None and (not isinstance(cols, list) or not all(isinstance(c, str) for c in cols)):
            raise InputError("'dataframe_split.columns' must be a list of column names", code="bad_format")
        return Parsed(cols, rows)
    if key == "dataframe_records":
        return _records(data, key)
    # inputs / instances
    if isinstance(data, dict):
        if not data:
            raise InputError(f"'{key}' is an empty object", code="bad_format")
        vals = list(data.values())
        if all(isinstance(v, list) for v in vals):
            n = len(vals[0])
            if n == 0 or any(len(v) != n for v in vals):
                raise InputError(f"'{key}' columns must be non-empty lists of the same length",
                                 code="bad_format")
            return Parsed(list(data), [list(r) for r in zip(*vals, strict=True)])
        if any(isinstance(v, list | dict) for v in vals):
            raise InputError(f"'{key}' must map every column to a list of values, or every column to "
                             "one value", code="bad_format")
        return Parsed(list(data), [vals])
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return _records(data, key)
    return Parsed(None, _positional(data, key))


def parse_csv_payload(body: bytes, columns: list[str] | None = None) -> Parsed:
    """CSV with a header naming the columns, or header-less rows in signature order."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("CSV body is not valid UTF-8 text", code="bad_csv") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
    except csv.Error as exc:
        raise InputError(f"cannot parse CSV body ({exc})", code="bad_csv") from None
    if not rows:
        raise InputError("empty CSV body", code="empty_body")
    first = [c.strip() for c in rows[0]]
    # A header names the columns: always when there is no signature; otherwise when a cell is a known
    # column name or when no cell is a number (all-string signatures should send a header).
    is_header = (columns is None or bool(set(first) & set(columns))
                 or all(c and _not_number(c) for c in first))
    if is_header:
        if len(rows) < 2:
            raise InputError("CSV body has a header but no rows", code="empty_body")
        return Parsed(first, [[c.strip() for c in r] for r in rows[1:]], text=True)
    return Parsed(None, [[c.strip() for c in r] for r in rows], text=True)


def _not_number(s: str) -> bool:
    try:
        float(s)
        return False
    except ValueError:
        return True


# --------------------------------------------------------------------------------------------- schema

def _describe(v: Any) -> str:
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


class InputSchema:
    """The model's input columns; validates parsed rows and builds the frame the model gets."""

    def __init__(self, specs: list[ColumnSpec] | None, *, max_rows: int = 10_000):
        self.specs = specs
        self.max_rows = max_rows
        if specs:
            self.columns = [s.name for s in specs]
            self._by_name = {s.name: s for s in specs}
            self._all_double = all(s.dtype in ("double", "float") and s.required for s in specs)
        else:
            self.columns = None
            self._by_name = {}
            self._all_double = False

    def describe(self) -> list[dict[str, Any]] | None:
        return None if not self.specs else [{"name": s.name, "type": s.dtype, "required": s.required}
                                            for s in self.specs]

    def _expected(self) -> str:
        return ", ".join(f"{s.name} ({s.dtype})" for s in self.specs or [])

    def validate(self, parsed: Parsed) -> tuple[list[str], list[list[Any]]]:
        """Columns in signature order and rows of checked, converted Python values."""
        rows = parsed.rows
        if not rows:
            raise InputError("no rows to score", code="empty_body")
        if len(rows) > self.max_rows:
            raise InputError(f"{len(rows)} rows in one request; the limit is {self.max_rows}",
                             code="too_many_rows", status=413)
        cols = parsed.columns
        if self.specs is None:  # no signature: take names as given
            if cols is None:
                raise InputError("column names are required (the model has no input signature)",
                                 code="missing_columns")
            self._check_width(cols, rows)
            return list(cols), [list(r) for r in rows]
        if cols is None:
            cols = self.columns
            self._check_width(cols, rows, positional=True)
        else:
            self._check_columns(cols)
            self._check_width(cols, rows)
        specs = [self._by_name[c] for c in cols]
        conv = self._convert_text if parsed.text else self._convert_json
        out_rows = []
        for i, r in enumerate(rows):
            out_rows.append([conv(v, s, i) for v, s in zip(r, specs, strict=True)])
        if cols != self.columns:  # reorder into signature order; optional columns absent → None
            idx = {c: k for k, c in enumerate(cols)}
            out_rows = [[r[idx[c]] if c in idx else None for c in self.columns] for r in out_rows]
        return list(self.columns), out_rows

    def _check_columns(self, cols: list[str]) -> None:
        seen, dups = set(), []
        for c in cols:
            if c in seen:
                dups.append(c)
            seen.add(c)
        if dups:
            raise InputError(f"duplicate column(s): {', '.join(map(str, dups))}", code="duplicate_columns")
        unknown = [c for c in cols if c not in self._by_name]
        if unknown:
            raise InputError(f"unexpected column(s): {', '.join(map(str, unknown))} "
                             f"(expected: {self._expected()})", code="unexpected_columns")
        missing = [s.name for s in self.specs if s.required and s.name not in seen]
        if missing:
            raise InputError(f"missing column(s): {', '.join(missing)} (expected: {self._expected()})",
                             code="missing_columns")

    def _check_width(self, cols: list[str], rows: list[list], positional: bool = False) -> None:
        n = len(cols)
        for i, r in enumerate(rows):
            if len(r) != n:
                hint = f" in signature order: {', '.join(cols)}" if positional else ""
                raise InputError(f"row {i} has {len(r)} values, expected {n}{hint}",
                                 code="missing_columns" if len(r) < n else "unexpected_columns")

    @staticmethod
    def _bad(spec: ColumnSpec, i: int, want: str, v: Any) -> InputError:
        return InputError(f"column '{spec.name}' ({spec.dtype}), row {i}: expected {want}, got {_describe(v)}",
                          code="bad_type")

    def _missing(self, spec: ColumnSpec, i: int, v: Any) -> Any:
        if spec.required:
            raise self._bad(spec, i, "a value (the column is required)", v)
        return None

    def _convert_json(self, v: Any, spec: ColumnSpec, i: int) -> Any:
        t = spec.dtype
        tv = type(v)
        if t in ("double", "float"):
            if tv is float:
                if v - v == 0.0:  # finite (inf - inf and nan - nan are nan)
                    return v
                raise self._bad(spec, i, "a finite number", v)
            if tv is int:
                if -1e308 < v < 1e308:
                    return float(v)
                raise self._bad(spec, i, "a number in double range", v)
            if v is None:
                return self._missing(spec, i, v)
            raise self._bad(spec, i, "a number", v)
        if t in ("long", "integer"):
            if tv is int:
                return v
            if tv is float and v - v == 0.0 and v.is_integer():
                return int(v)
            if v is None:
                return self._missing(spec, i, v)
            raise self._bad(spec, i, "an integer", v)
        if t == "boolean":
            if tv is bool:
                return v
            if v is None:
                return self._missing(spec, i, v)
            raise self._bad(spec, i, "true or false", v)
        if t in ("string", "binary", "datetime"):
            if tv is str:
                return v
            if v is None:
                return self._missing(spec, i, v)
            raise self._bad(spec, i, "a string", v)
        if v is None:
            return self._missing(spec, i, v)
        if isinstance(v, list | dict):
            raise self._bad(spec, i, "a scalar value", v)
        return v

    def _convert_text(self, v: str, spec: ColumnSpec, i: int) -> Any:
        t = spec.dtype
        if v == "":
            return self._missing(spec, i, v)
        if t in ("double", "float"):
            try:
                f = float(v)
            except ValueError:
                raise self._bad(spec, i, "a number", v) from None
            if not math.isfinite(f):
                raise self._bad(spec, i, "a finite number", v)
            return f
        if t in ("long", "integer"):
            try:
                return int(v)
            except ValueError:
                try:
                    f = float(v)
                except ValueError:
                    raise self._bad(spec, i, "an integer", v) from None
                if not f.is_integer():
                    raise self._bad(spec, i, "an integer", v) from None
                return int(f)
        if t == "boolean":
            low = v.lower()
            if low in ("true", "1"):
                return True
            if low in ("false", "0"):
                return False
            raise self._bad(spec, i, "true or false", v)
        if t in ("string", "binary", "datetime", "any"):
            if t == "any":
                try:
                    f = float(v)
                    return int(f) if f.is_integer() and "." not in v else f
                except ValueError:
                    return v
            return v
        return v

    # -- frame
    _NP = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool"}

    def to_frame(self, columns: list[str], rows: list[list[Any]]) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        if self._all_double:
            arr = np.array(rows, dtype=np.float64)
            df = pd.DataFrame(arr, columns=columns, copy=False)
            if any(s.dtype == "float" for s in self.specs):
                df = df.astype({s.name: "float32" for s in self.specs if s.dtype == "float"})
            return df
        df = pd.DataFrame(rows, columns=columns)
        if self.specs:
            casts = {}
            for s in self.specs:
                np_t = self._NP.get(s.dtype)
                if np_t and not df[s.name].isna().any():
                    casts[s.name] = np_t
                elif s.dtype in ("double", "float"):
                    casts[s.name] = "float64" if s.dtype == "double" else "float32"
            if casts:
                df = df.astype(casts)
        return df


def parse_body(body: bytes, content_type: str | None, schema: InputSchema) -> tuple[list[str], list[list]]:
    """Dispatch on content type, parse and validate. Raises :class:`InputError`."""
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    if ct in ("application/json", "application/json-numpy-split", "") or ct.endswith("+json"):
        parsed = parse_json_payload(body, schema.columns)
    elif ct in ("text/csv", "application/csv"):
        parsed = parse_csv_payload(body, schema.columns)
    else:
        raise InputError(f"unsupported content type '{content_type}' (use application/json or text/csv)",
                         code="unsupported_media_type", status=415)
    return schema.validate(parsed)
