"""The data contract: a Great Expectations 1.x ExpectationSuite, inferred from the reference or supplied.

The suite is stored as GX's own JSON (``ExpectationSuite.to_json_dict()``) so it can be versioned, edited
by hand and passed back with ``--contract``. Validation runs in-process on an ephemeral GX context with a
pandas datasource; analytics and progress bars are off. GX is imported inside the functions (~3-5 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiir.detect.findings import finding
from aiir.errors import BadInput

if TYPE_CHECKING:
    import pandas as pd

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
                 "float16", "float32", "float64", "Float32", "Float64"]
BOOL_TYPES = ["bool", "boolean"]
STRING_TYPES = ["str", "string", "object"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]", "Timestamp"]
STRUCTURAL = {"expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list",
              "expect_column_to_exist", "expect_column_values_to_be_in_type_list",
              "expect_column_values_to_be_of_type"}


def _quiet_gx():
    from aiir.detect.gx_process import quiet_gx

    return quiet_gx()


def _gx():
    from aiir.detect.gx_process import import_gx

    return import_gx()


def _py(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    return v


def _type_list(s: pd.Series) -> list[str] | None:
    import pandas as pd

    dt = s.dtype
    if pd.api.types.is_bool_dtype(dt):
        return BOOL_TYPES
    if pd.api.types.is_numeric_dtype(dt):
        return NUMERIC_TYPES
    if pd.api.types.is_datetime64_any_dtype(dt):
        return DATETIME_TYPES
    non_null = s.dropna()
    if (pd.api.types.is_string_dtype(dt) or pd.api.types.is_object_dtype(dt)) and not non_null.empty \
            and isinstance(non_null.iloc[0], str):
        return STRING_TYPES
    return None


def infer_spec(ref: pd.DataFrame, thresholds: dict[str, Any], types: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """The expectations :func:`infer_contract` builds, as (GX expectation class name, keyword arguments) pairs:
    computed without importing GX (so a second process can build the suite while this one computes)."""
    import numpy as np
    import pandas as pd

    c = thresholds["contract"]
    exps: list[tuple[str, dict[str, Any]]] = [
        ("ExpectTableColumnsToMatchSet", {"column_set": [str(x) for x in ref.columns], "exact_match": True})]
    for col in ref.columns:
        s = ref[col]
        ctype = types.get(col, "unknown")
        tl = _type_list(s)
        if tl:
            exps.append(("ExpectColumnValuesToBeInTypeList", {"column": col, "type_list": tl}))
        null_share = float(s.isna().mean())
        allowed = 0.0 if null_share == 0 else min(1.0, null_share * 1.5 + c["null_slack"])
        if allowed < 1.0:
            exps.append(("ExpectColumnValuesToNotBeNull", {"column": col, "mostly": round(1.0 - allowed, 6)}))
        non_null = s.dropna()
        if non_null.empty:
            continue
        if ctype == "numerical":
            vals = pd.to_numeric(non_null, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                continue
            lo, hi = float(vals.min()), float(vals.max())
            pad = (hi - lo) * c["range_margin"]
            new_lo = lo - pad
            if lo >= 0 > new_lo:
                new_lo = 0.0
            # a new value falls outside the range of n reference values with probability ~2/(n+1):
            # small references get proportionally more room
            allowed_out = max(1.0 - c["range_mostly"], 6.0 / (vals.size + 1))
            exps.append(("ExpectColumnValuesToBeBetween", {"column": col, "min_value": new_lo, "max_value": hi + pad,
                                                           "mostly": round(max(0.0, 1.0 - allowed_out), 6)}))
        elif ctype == "categorical" and not pd.api.types.is_bool_dtype(s.dtype):
            counts = non_null.value_counts()
            domain = counts.index.to_numpy()
            # Good-Turing: the chance that a new value is unseen is ~ (values seen once) / n
            allowed_new = max(1.0 - c["domain_mostly"], min(1.0, 3.0 * float((counts == 1).sum()) / len(non_null)))
            if len(domain) <= c["max_domain_size"] and allowed_new < 1.0:
                try:
                    value_set = sorted(_py(v) for v in domain)
                except TypeError:
                    value_set = sorted((_py(v) for v in domain), key=str)
                exps.append(("ExpectColumnValuesToBeInSet", {"column": col, "value_set": value_set,
                                                             "mostly": round(1.0 - allowed_new, 6)}))
    return exps


def infer_contract(ref: pd.DataFrame, thresholds: dict[str, Any], types: dict[str, str], *,
                   name: str = "aiir-contract", meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ExpectationSuite (as GX JSON) describing the reference: columns, types, ranges, nulls, domains."""
    from aiir.detect.gx_process import suite_from_spec

    return suite_from_spec(infer_spec(ref, thresholds, types), name=name, meta=meta)


def load_contract(path: str | Path) -> dict[str, Any]:
    """Read a contract file and check its shape (cheap, before GX is imported). BadInput names the file."""
    p = Path(path)
    if not p.exists():
        raise BadInput(str(p), "contract file not found")
    if not p.is_file():
        raise BadInput(str(p), "contract must be a file, got a directory")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(str(p), f"contract is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise BadInput(str(p), "contract must be a Great Expectations suite: a JSON object with an "
                               "'expectations' list")
    for i, e in enumerate(data["expectations"]):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(e.get("kwargs", {}), dict):
            raise BadInput(str(p), f"contract expectation #{i + 1} must be an object with a 'type' string "
                                   "and a 'kwargs' object")
    return data


def build_suite(data: dict[str, Any], where: str):
    """A GX ExpectationSuite from its JSON; any GX rejection becomes BadInput naming ``where``."""
    gx = _gx()
    allowed = {"name", "expectations", "suite_parameters", "meta", "notes", "id"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadInput(where, f"contract has unknown top-level key(s) {', '.join(unknown)} "
                              f"(a Great Expectations suite has {', '.join(sorted(allowed))})")
    kwargs = {k: v for k, v in data.items() if k in allowed and k != "id"}
    kwargs.setdefault("name", "aiir-contract")
    try:
        with _quiet_gx():
            suite = gx.ExpectationSuite(**kwargs)
    except Exception as exc:  # GX raises InvalidExpectationConfigurationError, pydantic errors, TypeError
        msg = " ".join(str(exc).split())
        raise BadInput(where, f"contract is not a valid Great Expectations suite ({type(exc).__name__}: "
                              f"{msg[:300]})") from None
    # GX 1.x only *logs* an unknown expectation type and drops it: a contract must not shrink silently
    wanted = [e.get("type") for e in kwargs.get("expectations") or [] if isinstance(e, dict)]
    if len(suite.expectations) != len(wanted):
        from great_expectations.expectations.registry import get_expectation_impl

        unknown = []
        for name in wanted:
            try:
                get_expectation_impl(name)
            except Exception:
                unknown.append(str(name))
        raise BadInput(where, "contract is not a valid Great Expectations suite (unknown expectation type(s): "
                              f"{', '.join(unknown) or '?'}; {len(wanted) - len(suite.expectations)} dropped)")
    return suite


EXACT_TYPES = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
               "expect_column_values_to_be_in_set")


def _exact_unexpected(cur: pd.DataFrame, etype: str, kw: dict[str, Any]) -> tuple[int, int, int] | None:
    """(unexpected, element count, missing) over every row of ``cur`` for the value expectations GX counts
    row by row; None when the expectation or its column is not one aiir counts itself."""
    import numpy as np
    import pandas as pd

    col = kw.get("column")
    if col not in cur.columns or kw.get("row_condition") or kw.get("condition_parser"):
        return None
    s = cur[col]
    n = len(s)
    missing = int(s.isna().sum())
    if etype == "expect_column_values_to_not_be_null":
        return missing, n, 0
    values = s.dropna()
    if etype == "expect_column_values_to_be_between":
        if kw.get("strict_min") or kw.get("strict_max") or kw.get("parse_strings_as_datetimes"):
            return None
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if np.isnan(x).any():  # non-numeric values: GX's own semantics (an error) apply
            return None
        bad = np.zeros(x.size, dtype=bool)
        if kw.get("min_value") is not None:
            bad |= x < float(kw["min_value"])
        if kw.get("max_value") is not None:
            bad |= x > float(kw["max_value"])
        return int(bad.sum()), n, missing
    if etype == "expect_column_values_to_be_in_set":
        return int((~values.isin(list(kw.get("value_set") or []))).sum()), n, missing
    return None


def _streamed_counts(result: dict[str, Any], batches: Any) -> dict[int, tuple[int, int, int] | None]:
    """:func:`_exact_unexpected` of every exact-countable result, summed over ``batches(columns)`` frames."""
    todo = {i: r for i, r in enumerate(result.get("results", []))
            if (r.get("expectation_config") or {}).get("type") in EXACT_TYPES and not _raised(r)}
    cols = sorted({str((r["expectation_config"].get("kwargs") or {}).get("column")) for r in todo.values()})
    sums: dict[int, tuple[int, int, int] | None] = {i: (0, 0, 0) for i in todo}
    if not todo:
        return sums
    for col in cols:  # one column at a time: memory stays at one decoded column chunk
        mine = {i: r for i, r in todo.items() if str((r["expectation_config"].get("kwargs") or {}).get("column")) == col}
        for frame in batches([col]):
            for i, r in mine.items():
                if sums[i] is None:
                    continue
                cfg = r["expectation_config"]
                part = _exact_unexpected(frame, cfg.get("type"), cfg.get("kwargs") or {})
                sums[i] = None if part is None else tuple(a + b for a, b in zip(sums[i], part, strict=True))
    return sums


def _patch_exact(result: dict[str, Any], cur: pd.DataFrame, sampled_rows: int, *, rows: int | None = None,
                 batches: Any = None) -> None:
    """Replace GX's counts on the sample by exact counts over every row (same expectations, same ``mostly``).

    ``batches`` (a callable ``columns -> iterable of frames`` over every row of the input, used when ``cur`` is
    itself a sample of a larger file) streams the counts instead of reading ``cur``; ``rows`` is then the
    input's row count."""
    patched = 0
    streamed = _streamed_counts(result, batches) if batches is not None else None
    for i, r in enumerate(result.get("results", [])):
        cfg = r.get("expectation_config") or {}
        etype, kw = cfg.get("type"), cfg.get("kwargs") or {}
        if etype not in EXACT_TYPES or _raised(r):
            continue
        exact = streamed.get(i) if streamed is not None else _exact_unexpected(cur, etype, kw)
        if exact is None:
            continue
        unexpected, n, missing = exact
        denom = n - missing if etype != "expect_column_values_to_not_be_null" else n
        share = unexpected / denom if denom else 0.0
        res = r.setdefault("result", {})
        if etype != "expect_column_values_to_not_be_null":
            res.update(missing_count=missing, missing_percent=100.0 * missing / n if n else None)
        res.update(element_count=n, unexpected_count=unexpected, unexpected_percent=100.0 * share,
                   unexpected_percent_total=100.0 * unexpected / n if n else None,
                   unexpected_percent_nonmissing=100.0 * unexpected / (n - missing) if n - missing else None,
                   aiir_exact_over_rows=n)
        mostly = float(kw.get("mostly", 1.0))
        r["success"] = bool(1.0 - share >= mostly - 1e-12)
        patched += 1
    ok = [bool(r.get("success")) for r in result.get("results", [])]
    result["success"] = all(ok)
    st = result.setdefault("statistics", {})
    st.update(evaluated_expectations=len(ok), successful_expectations=sum(ok),
              unsuccessful_expectations=len(ok) - sum(ok),
              success_percent=100.0 * sum(ok) / len(ok) if ok else None)
    result.setdefault("meta", {})["aiir"] = {
        "gx_validated_rows": sampled_rows, "rows": rows if rows is not None else len(cur), "exact_counts": patched,
        "note": "GX validated a deterministic sample; the value expectations' counts are aiir's exact counts "
                "over every row" + (" (streamed batch by batch from the file)" if batches is not None else "")}


def validate(cur: pd.DataFrame, suite_data: dict[str, Any], *, where: str = "contract",
             max_rows: int | None = None, rows: int | None = None, batches: Any = None,
             sample_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``cur`` against the suite; returns GX's validation result JSON.

    With ``max_rows`` and a larger ``cur``, GX validates a deterministic sample of ``max_rows`` rows
    (its per-row cost dominates the check on large batches) and the null / range / domain expectations get
    exact counts over every row (:func:`_patch_exact`), so no rare violation is lost to sampling. When ``cur``
    is a sample of a larger file, ``batches`` streams the file for those counts and ``rows`` is its size.
    ``sample_result`` is GX's result on those rows (:func:`aiir.detect.gx_process.gx_sample`) when a
    :class:`aiir.detect.gx_process.ContractProcess` already validated them.
    """
    if batches is not None or (max_rows is not None and len(cur) > max_rows):
        from aiir.detect.gx_process import gx_sample

        n = min(len(cur), max_rows) if max_rows else len(cur)
        result = sample_result if sample_result is not None else \
            validate(gx_sample(cur, max_rows), suite_data, where=where)
        _patch_exact(result, cur, n, rows=rows, batches=batches)
        return result
    if sample_result is not None:
        return sample_result
    from aiir.detect.gx_process import gx_validate

    return gx_validate(cur, build_suite(suite_data, where))


def _raised(r: dict[str, Any]) -> str | None:
    info = r.get("exception_info") or {}
    if info.get("raised_exception"):
        return info.get("exception_message") or "exception"
    for v in info.values():  # GX 1.x nests metric errors under their metric id
        if isinstance(v, dict) and v.get("raised_exception"):
            return v.get("exception_message") or "exception"
    return None


def findings_from_validation(result: dict[str, Any], cur_columns: list[str],
                             thresholds: dict[str, Any]) -> list[dict[str, Any]]:
    """Schema findings (kind ``schema``) from a GX validation result."""
    c = thresholds["contract"]
    out: list[dict[str, Any]] = []
    missing_reported: set[str] = set()
    cur_set = set(map(str, cur_columns))
    for r in result.get("results", []):
        if r.get("success"):
            continue
        cfg = r.get("expectation_config", {})
        etype = cfg.get("type", "?")
        kw = cfg.get("kwargs", {})
        col = kw.get("column")
        res = r.get("result") or {}
        error = _raised(r)
        if etype in ("expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list"):
            expected = [str(x) for x in kw.get("column_set") or kw.get("column_list") or []]
            missing = [x for x in expected if x not in cur_set]
            extra = [x for x in cur_columns if str(x) not in set(expected)]
            if missing:
                missing_reported.update(missing)
                out.append(finding("schema", "high", f"{len(missing)} contract column(s) missing from current: "
                                   + ", ".join(missing[:10]), columns=missing,
                                   statistic=("missing_columns", len(missing)), threshold=0,
                                   detail=f"{etype} failed; expected {len(expected)} columns."))
            if extra:
                out.append(finding("schema", c["extra_columns_severity"],
                                   f"{len(extra)} column(s) not in the contract: " + ", ".join(map(str, extra[:10])),
                                   columns=[str(x) for x in extra], statistic=("unexpected_columns", len(extra)),
                                   threshold=0, detail=f"{etype} failed (exact match)."))
            if not missing and not extra:
                out.append(finding("schema", "medium", "column order differs from the contract",
                                   statistic=("column_order_mismatch", 1), threshold=0, detail=f"{etype} failed."))
            continue
        if col is not None and str(col) not in cur_set:
            if str(col) not in missing_reported:
                missing_reported.add(str(col))
                out.append(finding("schema", "high", f"contract column '{col}' missing from current",
                                   columns=[col], statistic=("missing_columns", 1), threshold=0,
                                   detail=f"{etype} could not run: {error or 'column does not exist'}"))
            continue
        if error:
            out.append(finding("schema", "high", f"{etype} could not be evaluated" + (f" on '{col}'" if col else ""),
                               columns=[col] if col else [], statistic=("evaluation_error", 1), threshold=0,
                               detail=error[:500]))
            continue
        if etype in STRUCTURAL:
            observed = res.get("observed_value")
            if observed is None and res.get("partial_unexpected_list") is not None:
                observed = sorted({type(v).__name__ for v in res.get("partial_unexpected_list", [])})
            out.append(finding("schema", "high", f"'{col}' has type {observed}, contract expects one of "
                               f"{', '.join(kw.get('type_list') or [str(kw.get('type_'))])[:120]}",
                               columns=[col] if col else [], statistic=("type_mismatch", 1), threshold=0,
                               detail=f"{etype} failed; observed {observed}."))
            continue
        pct = res.get("unexpected_percent")
        if pct is not None:
            share = float(pct) / 100.0
            mostly = kw.get("mostly", 1.0)
            sev = "high" if share >= c["high_unexpected_share"] else "medium"
            examples = res.get("partial_unexpected_list") or []
            what = {
                "expect_column_values_to_be_between": f"outside [{kw.get('min_value')}, {kw.get('max_value')}]",
                "expect_column_values_to_be_in_set": "not in the reference domain",
                "expect_column_values_to_not_be_null": "null",
            }.get(etype, f"failing {etype}")
            out.append(finding("schema", sev, f"'{col}': {share:.2%} of values {what}",
                               columns=[col] if col else [], statistic=("unexpected_share", share),
                               threshold=round(1.0 - float(mostly), 6),
                               detail=f"{etype}: {res.get('unexpected_count')} of {res.get('element_count')} rows "
                                      f"unexpected; examples: {examples[:5]}"))
        else:
            out.append(finding("schema", "medium", f"{etype} failed" + (f" on '{col}'" if col else ""),
                               columns=[col] if col else [], statistic=("failed_expectation", 1), threshold=None,
                               detail=f"observed: {str(res.get('observed_value'))[:300]}"))
    return out
