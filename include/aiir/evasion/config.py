"""Evasion thresholds (``thresholds.toml`` + overrides) and the binomial test every signal uses."""

from __future__ import annotations

import copy
import math
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiir.errors import BadInput

DEFAULTS_FILE = Path(__file__).with_name("thresholds.toml")
SIGNALS = ("near_dup", "boundary", "flip", "ood")
MAX_GLOBAL_WINDOW = 1_000_000  # guard.global_window's bound: the guard keeps two generations of that many queries


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return tomllib.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))


def load_config(override: str | Path | dict[str, Any] | None = None) -> dict[str, Any]:
    """The default thresholds with ``override`` (a TOML file or a dict of the same tables) applied."""
    cfg = copy.deepcopy(_defaults())
    if override is None:
        return cfg
    where = "thresholds"
    if not isinstance(override, dict):
        where = str(override)
        p = Path(override)
        if not p.is_file():
            raise BadInput(where, "thresholds file not found")
        try:
            override = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(where, f"not valid TOML ({exc})") from None
    for table, values in override.items():
        if table not in cfg:
            raise BadInput(where, f"unknown table [{table}] (known: {', '.join(cfg)})")
        if not isinstance(values, dict):
            raise BadInput(where, f"[{table}] must be a table")
        for key, v in values.items():
            if key not in cfg[table]:
                raise BadInput(where, f"unknown key {table}.{key} (known: {', '.join(cfg[table])})")
            want = cfg[table][key]
            if isinstance(want, str):
                ok = isinstance(v, str)
            elif isinstance(want, bool):
                ok = isinstance(v, bool)
            else:
                ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            if not ok:
                raise BadInput(where, f"{table}.{key} must be {type(want).__name__} like {want!r}, got {v!r}")
            cfg[table][key] = type(want)(v) if not isinstance(want, str) else v
    if cfg["guard"]["action"] not in ("fallback", "block"):
        raise BadInput(where, f"guard.action must be 'fallback' or 'block', got {cfg['guard']['action']!r}")
    gw = cfg["guard"]["global_window"]
    if not 1 <= gw <= MAX_GLOBAL_WINDOW:
        raise BadInput(where, f"guard.global_window must be between 1 and {MAX_GLOBAL_WINDOW:,} queries (the guard "
                              f"keeps two generations of them in memory, a few hundred bytes each), got {gw}")
    if cfg["guard"]["window"] < 1:
        raise BadInput(where, f"guard.window must be at least 1 query, got {cfg['guard']['window']}")
    if not 0 < cfg["tests"]["alpha"] < 1:
        raise BadInput(where, "tests.alpha must be between 0 and 1")
    lab = cfg["labels"]
    if not 0 < lab["alpha"] < 1:
        raise BadInput(where, "labels.alpha must be between 0 and 1")
    if not 0.5 <= lab["baseline_quantile"] < 1:
        raise BadInput(where, "labels.baseline_quantile must be in [0.5, 1)")
    if lab["score_bands"] < 1:
        raise BadInput(where, "labels.score_bands must be at least 1")
    if 0 < lab["window"] < 2:
        raise BadInput(where, "labels.window must be 0 (off) or at least 2")
    for s in SIGNALS:
        if not 0 < cfg["clean_rates"][s] < 1:
            raise BadInput(where, f"clean_rates.{s} must be between 0 and 1")
    return cfg


def binom_sf(k: int, n: int, p: float) -> float:
    """P(K >= k) for K ~ Binomial(n, p), in log space (exact, no scipy)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n > 500:  # the batch scan's large clients: scipy's exact survival function
        from scipy.stats import binom

        return float(binom.sf(k - 1, n, p))
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def critical_counts(n_max: int, p: float, alpha: float, min_hits: int) -> list[int]:
    """``kmin[n]`` for n = 0..n_max: the fewest hits among n queries that make the test significant
    (P(K >= k) <= alpha and k >= min_hits); n_max + 1 where no k can (the streaming guard's lookup table)."""
    out = [n_max + 1] * (n_max + 1)
    for n in range(1, n_max + 1):
        lo = max(min_hits, 1)
        k = lo
        while k <= n and binom_sf(k, n, p) > alpha:
            k += 1
        out[n] = k if k <= n else n_max + 1
    return out


def test_signal(hits: int, n: int, p: float, alpha: float, min_hits: int) -> dict[str, Any]:
    """One binomial test, as it appears in ``findings.json``."""
    pv = binom_sf(hits, n, p) if n else 1.0
    return {"hits": int(hits), "n": int(n), "rate": round(hits / n, 4) if n else None, "clean_rate": p,
            "p_value": pv, "significant": bool(n and hits >= min_hits and pv <= alpha)}


def strength(p_value: float) -> float:
    """-log10 p, capped at 300: the score of a signal."""
    return round(min(300.0, -math.log10(max(p_value, 1e-300))), 2)
