"""Detection thresholds: the built-in ``thresholds.toml`` merged with an optional override file.

Precedence: ``thresholds=`` argument / ``--thresholds FILE`` > ``AIIR_THRESHOLDS`` > built-in defaults.
An override may hold any subset of the built-in tables and keys; anything else is a :class:`BadInput`.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

from aiir.errors import BadInput

DEFAULTS_FILE = Path(__file__).with_name("thresholds.toml")
SEVERITIES = ("low", "medium", "high", "critical")
_RANK = {s: i + 1 for i, s in enumerate(SEVERITIES)}


def severity_rank(severity: str | None) -> int:
    """0 for no severity, 1 (low) … 4 (critical)."""
    return _RANK.get(severity or "", 0)


def max_severity(severities) -> str | None:
    best = None
    for s in severities:
        if severity_rank(s) > severity_rank(best):
            best = s
    return best


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise BadInput(str(path), "thresholds file not found")
    if not path.is_file():
        raise BadInput(str(path), "thresholds must be a file, got a directory")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(str(path), f"thresholds file is not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise BadInput(str(path), "thresholds file is not valid TOML (not UTF-8 text)") from None


def _merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for table, values in override.items():
        if table not in base:
            raise BadInput(where, f"unknown thresholds table [{table}] (known: {', '.join(base)})")
        if not isinstance(values, dict):
            raise BadInput(where, f"[{table}] must be a table")
        for key, value in values.items():
            if key not in base[table]:
                raise BadInput(where, f"unknown key '{key}' in [{table}] (known: {', '.join(base[table])})")
            default = base[table][key]
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, (int, float)):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise BadInput(where, f"[{table}] {key} must be {type(default).__name__}, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
                    and not value.is_integer():
                raise BadInput(where, f"[{table}] {key} must be a whole number, got {value!r}")
            out[table][key] = type(default)(value) if not isinstance(default, str) else value
    return out


def _validate(t: dict[str, Any], where: str) -> None:
    for table, key in (("incident", "open_incident_at"), ("contract", "extra_columns_severity")):
        if t[table][key] not in SEVERITIES:
            raise BadInput(where, f"[{table}] {key} must be one of {', '.join(SEVERITIES)}, got {t[table][key]!r}")
    for table, values in t.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise BadInput(where, f"[{table}] {key} must not be negative, got {value!r}")
    for table in ("label_shift", "label_consistency"):
        r = t[table]
        if not (1 <= r["medium_ratio"] <= r["high_ratio"] <= r["critical_ratio"]):
            raise BadInput(where, f"[{table}] needs 1 <= medium_ratio <= high_ratio <= critical_ratio")
    d = t["decision"]
    if not 0 < d["alpha"] < 1:
        raise BadInput(where, f"[decision] alpha must be between 0 and 1, got {d['alpha']!r}")
    if d["label_ratio_tolerance"] < 1:
        raise BadInput(where, "[decision] label_ratio_tolerance must be >= 1")
    if not 20 <= d["max_text_chars"] <= 1000:
        raise BadInput(where, "[decision] max_text_chars must be between 20 and 1000")
    for table in ("duplicates", "outliers"):
        r = t[table]
        if not (r["low_excess"] <= r["medium_excess"] <= r["high_excess"] <= r["critical_excess"]):
            raise BadInput(where, f"[{table}] needs low_excess <= medium_excess <= high_excess <= critical_excess")


def load_thresholds(source: str | Path | dict[str, Any] | None = None) -> dict[str, Any]:
    """The thresholds in force: defaults, then ``AIIR_THRESHOLDS`` or ``source`` (a file or a dict)."""
    with open(DEFAULTS_FILE, "rb") as fh:
        base = tomllib.load(fh)
    where = "thresholds"
    if source is None and os.environ.get("AIIR_THRESHOLDS"):
        source = os.environ["AIIR_THRESHOLDS"]
        where = f"{source} (AIIR_THRESHOLDS)"
    if source is None:
        return base
    if isinstance(source, dict):
        override = source
    else:
        path = Path(source).expanduser()
        where = str(path) if where == "thresholds" else where
        override = _read(path)
    merged = _merge(base, override, where)
    _validate(merged, where)
    return merged
