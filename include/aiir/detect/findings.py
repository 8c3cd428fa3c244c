"""One finding of ``aiir check``: what was seen, how bad, and the ATLAS/OWASP ids it suggests."""

from __future__ import annotations

import math
from typing import Any

from aiir.detect.thresholds import SEVERITIES
from aiir.knowledge.taxonomy import FINDING_KIND_MAP, suggest


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


MAX_TEXT = 1000  # hard bound of titles and echoed names; run_check cuts to [decision] max_text_chars
MAX_LIST = 50  # columns / sources listed in one finding; the rest is counted
MAX_DETAIL = 2000


def clip(text: Any, limit: int = MAX_TEXT) -> str:
    """``text`` as a string of at most ``limit`` characters (cut with an ellipsis)."""
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def finding(kind: str, severity: str, title: str, *, statistic: tuple[str, float | None],
            threshold: Any = None, columns: list[str] | None = None, sources: list[str] | None = None,
            detail: str = "", evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a finding dict with the schema documented in docs/detection.md."""
    if kind not in FINDING_KIND_MAP:
        raise ValueError(f"unknown finding kind {kind!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    ids = suggest(kind)
    columns, sources = list(columns or []), list(sources or [])
    out = {
        "kind": kind,
        "severity": severity,
        "title": clip(title),
        "columns": [clip(c) for c in columns[:MAX_LIST]],
        "sources": [clip(s) for s in sources[:MAX_LIST]],
        "statistic": {"name": statistic[0], "value": statistic[1]},
        "threshold": threshold,
        "detail": clip(detail, MAX_DETAIL),
        "atlas": ids["atlas"],
        "owasp": ids["owasp"],
        "mitigations": ids["mitigations"],
    }
    if len(columns) > MAX_LIST:
        out["columns_omitted"] = len(columns) - MAX_LIST
    if len(sources) > MAX_LIST:
        out["sources_omitted"] = len(sources) - MAX_LIST
    if evidence:
        out["evidence"] = evidence
    return _clean(out)


def ladder(value: float, steps: list[tuple[str, float]]) -> str | None:
    """The highest severity whose lower bound ``value`` reaches; ``steps`` ascending, e.g. [("low", .1), …]."""
    level = None
    for name, bound in steps:
        if value is not None and math.isfinite(value) and value >= bound:
            level = name
    return level
