"""The delayed-label signal of ``aiir scan-evasion --labels FILE``: how a fraud team sees evasion that left no
trace in the inputs.

A transfer attacker (rows crafted offline on a surrogate, sent once each) looks like clean traffic to every
input signal. What gives it away comes later: the transactions it got through are fraud, and chargebacks or
analyst labels say so days afterwards. Given those labels (a CSV or Parquet file with ``decision_id`` and
``label``), two tests per client, each over the client's whole window and over every ``labels.window``
consecutive decisions (stepped by half; the p-value times the number of segments, Bonferroni):

* ``label_miss`` — of its decisions labelled positive (the attacked class), the share the model let through
  (served negative), against the miss rate on labelled positives of all *other* clients (binomial);
* ``label_surprise`` — of its let-through decisions, how many were labelled positive, against the positive
  share the other clients' let-through decisions show *at the same score* (bands of the score below the
  decision threshold; Poisson-binomial). A model that misses half of all fraud makes ``label_miss`` weak (a
  client whose misses are 75 % is barely unusual), while crafted rows are fraud at scores where fraud is rare.

The other clients' rates enter as an upper quantile of their Beta posterior (``labels.baseline_quantile``), so
a thin baseline weakens the tests instead of raising alarms. Only labelled decisions count; ids of the file not
among the scanned decisions are ignored and counted (a label feed covers more than one scan's window), but a file
of which *no* id matches is refused: it belongs to another log, or the window is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiir.errors import BadInput

MAX_IDS = 200
_TRUE = {"1", "true", "yes", "fraud", "positive"}
_FALSE = {"0", "false", "no", "legit", "negative"}


def load_labels(source: str | Path | dict[str, Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """``{decision_id: 0/1}`` from a CSV/Parquet file (columns ``decision_id``, ``label``) or a dict.

    Labels: 0/1, true/false (also yes/no, fraud/legit, positive/negative). Raises :class:`BadInput` naming the
    file and the field on anything else (missing column, empty or conflicting label, duplicate ids that
    disagree, empty id)."""
    if isinstance(source, dict):
        where, items = "labels", list(source.items())
    else:
        from aiir.tabular import read_table

        where = str(source)
        df = read_table(source, what="labels")
        for col in ("decision_id", "label"):
            if col not in df.columns:
                raise BadInput(where, f"no column '{col}' (labels need decision_id and label; columns: "
                                      f"{', '.join(map(str, df.columns[:20]))})")
        items = list(zip(df["decision_id"].tolist(), df["label"].tolist(), strict=True))
    out: dict[str, int] = {}
    for i, (d, v) in enumerate(items):
        row = f"row {i + 1}" if not isinstance(source, dict) else f"id {str(d)[:80]!r}"
        if d is None or (isinstance(d, float) and math.isnan(d)) or not str(d).strip():
            raise BadInput(where, f"decision_id: empty at {row}")
        did = str(d).strip()
        lab = _label(v)
        if lab is None:
            raise BadInput(where, f"label: {str(v)[:40]!r} at {row} is not 0/1 or true/false")
        if out.get(did, lab) != lab:
            raise BadInput(where, f"label: decision {did[:80]!r} is labelled both 0 and 1")
        out[did] = lab
    if not out:
        raise BadInput(where, "label: no labelled decision")
    return out, {"file": None if isinstance(source, dict) else str(Path(source).resolve()), "rows": len(items),
                 "labelled_decisions": len(out)}


def _label(v: Any) -> int | None:
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v) if v in (0, 1) else None
    if isinstance(v, float | np.floating):
        return int(v) if v in (0.0, 1.0) else None
    if isinstance(v, str):
        t = v.strip().lower()
        return 1 if t in _TRUE else 0 if t in _FALSE else None
    return None


def is_positive(pred: Any, positive: int) -> bool:
    """Whether a served prediction is the positive (attacked) class: 1, True, "1", 1.0, [1]."""
    if isinstance(pred, list | tuple) and len(pred) == 1:
        pred = pred[0]
    if isinstance(pred, bool):
        return int(pred) == positive
    if isinstance(pred, int | float):
        return pred == positive
    if isinstance(pred, str):
        try:
            return float(pred.strip()) == positive
        except ValueError:
            return pred.strip().lower() in _TRUE and positive == 1
    return False


def poisson_binomial_sf(k: int, p: np.ndarray) -> float:
    """P(K >= k) for K the number of successes of independent Bernoulli(p_i). Exact (dynamic programme capped
    at k) when small enough, else the Chernoff bound (an upper bound: conservative)."""
    p = np.clip(np.asarray(p, float), 0.0, 1.0)
    n = p.size
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n * k <= 5_000_000:
        dp = np.zeros(k + 1)  # dp[j] = P(j successes so far), dp[k] = P(>= k)
        dp[0] = 1.0
        for q in p:
            top = dp[k] + dp[k - 1] * q
            dp[1:k] = dp[1:k] * (1 - q) + dp[:k - 1] * q
            dp[0] *= 1 - q
            dp[k] = top
        return float(min(1.0, dp[k]))
    mu = p.sum()
    if k <= mu:
        return 1.0
    lo, hi = 0.0, 50.0  # minimise exp(-t k) prod(1 - p + p e^t) over t > 0

    def f(t: float) -> float:
        return -t * k + float(np.log1p(p * np.expm1(t)).sum())

    for _ in range(100):
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (lo, b) if f(a) < f(b) else (a, hi)
    return float(min(1.0, math.exp(f((lo + hi) / 2))))


def _upper(hits: float, n: float, q: float) -> float:
    from scipy.stats import beta

    return float(beta.ppf(q, hits + 1, max(n - hits, 0) + 1))


@dataclass
class LabelData:
    y: np.ndarray           # -1 unlabelled, else 0/1
    through: np.ndarray     # served negative (let through)
    guard: np.ndarray       # answered by the gateway guard's fallback, not by the model
    band: np.ndarray        # score band of let-through decisions with a score, else -1
    info: dict[str, Any]

    @property
    def labelled(self) -> np.ndarray:
        return self.y >= 0


def prepare(labels, decisions: list[dict[str, Any]], scores: np.ndarray, cfg: dict[str, Any]) -> LabelData:
    """Match the labels to the scanned decisions (sorted as the scan sorts them). ``labels``: a file or a dict
    as :func:`load_labels` takes, or what it returned (a file already read is not read again)."""
    lab, info = labels if isinstance(labels, tuple) else load_labels(labels)
    info = dict(info)
    where = info["file"] or "labels"
    c = cfg["labels"]
    pos, bands, thr = int(c["positive_label"]), int(c["score_bands"]), cfg["signals"]["decision_threshold"]
    n = len(decisions)
    y = np.full(n, -1)
    ids = [str(d.get("decision_id")) if d.get("decision_id") is not None else None for d in decisions]
    for i, did in enumerate(ids):
        if did is not None and did in lab:
            y[i] = lab[did]
    matched = int((y >= 0).sum())
    if matched == 0:
        raise BadInput(where, f"decision_id: none of the {len(lab):,} labelled decisions is among the {n:,} scanned "
                              "decisions (a label file of another decision log, or a window that excludes them: "
                              "widen --since)")
    through = np.array([not is_positive(d.get("prediction"), pos) for d in decisions], dtype=bool)
    band = np.full(n, -1)
    ok = through & np.isfinite(scores)
    band[ok] = np.clip((scores[ok] / thr * bands).astype(int) if thr > 0 else 0, 0, bands - 1)
    info.update({"matched": matched, "unmatched": len(lab) - matched,
                 "labelled_positive": int((y == 1).sum()),
                 "let_through_positive": int(((y == 1) & through).sum()),
                 "positive_label": pos,
                 "note": "labels arrive after the decisions (chargebacks, analyst review): this signal is as late "
                         "as the label feed, not the scan"})
    guard = np.array([d.get("source") == "gateway-guard" for d in decisions], dtype=bool)
    info["guard_answered_labelled"] = int((guard & (y >= 0)).sum())
    y = np.where(guard, -1, y)  # the guard's fallback answered these: they say nothing about the model's misses
    return LabelData(y=y, through=through, guard=guard, band=band, info=info)


def _segments(m: int, window: int) -> list[tuple[int, int]]:
    segs = [(0, m)]
    if window and m > window:
        step = max(1, window // 2)
        segs += [(s, min(s + window, m)) for s in range(0, m - window + step, step)]
    return segs


class Baseline:
    """Totals over every labelled decision, so each client's (or cluster's) baseline leaves its own out."""

    def __init__(self, lab: LabelData, cfg: dict[str, Any], keep: np.ndarray | None = None):
        c = cfg["labels"]
        self.q, self.bands = c["baseline_quantile"], int(c["score_bands"])
        self.keep = lab.labelled if keep is None else (np.asarray(keep, bool) & lab.labelled)
        pos = (lab.y == 1) & self.keep
        self.pos, self.miss = int(pos.sum()), int((pos & lab.through).sum())
        b = lab.band
        inb = (b >= 0) & self.keep
        self.band_n = np.bincount(b[inb], minlength=self.bands)
        self.band_pos = np.bincount(b[inb & pos], minlength=self.bands)
        self.lab = lab

    def rates(self, ii: np.ndarray) -> tuple[float, np.ndarray, dict[str, Any]]:
        """(miss rate, positive share per band) of everything but the decisions ``ii``."""
        lab = self.lab
        k = self.keep[ii]  # only what the baseline holds is left out
        y, through, b = lab.y[ii], lab.through[ii], lab.band[ii]
        pos = (y == 1) & k
        p_o, m_o = self.pos - int(pos.sum()), self.miss - int((pos & through).sum())
        inb = (b >= 0) & k
        bn = self.band_n - np.bincount(b[inb], minlength=self.bands)
        bp = self.band_pos - np.bincount(b[inb & pos], minlength=self.bands)
        miss = _upper(m_o, p_o, self.q)
        band = np.array([_upper(bp[k], bn[k], self.q) for k in range(self.bands)])
        return miss, band, {"others_positives": p_o, "others_missed": m_o,
                            "others_miss_rate": round(m_o / p_o, 4) if p_o else None,
                            "baseline_miss_rate": round(miss, 4),
                            "baseline_band_positive_share": [round(float(v), 4) for v in band],
                            "others_band_labelled": bn.tolist()}


def tests_for(ii: np.ndarray, base: Baseline, cfg: dict[str, Any], *, windows: bool = True) -> dict[str, Any]:
    """``label_miss`` and ``label_surprise`` for the decisions ``ii`` (in time order), as in findings.json."""
    c = cfg["labels"]
    alpha, min_misses = c["alpha"], int(c["min_misses"])
    lab = base.lab
    miss_rate, band_rate, baseline = base.rates(ii)
    segs = _segments(len(ii), int(c["window"]) if windows else 0)
    best = {"label_miss": None, "label_surprise": None}
    for s0, s1 in segs:
        jj = ii[s0:s1]
        y, through, b = lab.y[jj], lab.through[jj], lab.band[jj]
        pos = y == 1
        n, k = int(pos.sum()), int((pos & through).sum())
        if n:
            pv = _binom(k, n, miss_rate)
            cand = {"hits": k, "n": n, "p": pv, "segment": (s0, s1)}
            if best["label_miss"] is None or pv < best["label_miss"]["p"]:
                best["label_miss"] = cand
        sel = (b >= 0) & (y >= 0)
        if sel.any():
            k2 = int((pos & sel).sum())
            probs = band_rate[b[sel]]
            pv = poisson_binomial_sf(k2, probs)
            cand = {"hits": k2, "n": int(sel.sum()), "p": pv, "expected": float(probs.sum()), "segment": (s0, s1)}
            if best["label_surprise"] is None or pv < best["label_surprise"]["p"]:
                best["label_surprise"] = cand
    out: dict[str, Any] = {}
    for name, bst in best.items():
        if bst is None:
            continue
        pv = min(1.0, bst["p"] * len(segs))
        out[name] = {"hits": bst["hits"], "n": bst["n"], "rate": round(bst["hits"] / bst["n"], 4) if bst["n"] else None,
                     "clean_rate": baseline["baseline_miss_rate"] if name == "label_miss" else None,
                     "expected": round(bst["expected"], 3) if "expected" in bst else round(bst["n"] * miss_rate, 3),
                     "p_value": pv, "segments_tested": len(segs),
                     "segment": {"first": int(bst["segment"][0]), "decisions": int(bst["segment"][1] - bst["segment"][0])},
                     "significant": bool(bst["hits"] >= min_misses and pv <= alpha)}
    if out:
        out["baseline"] = baseline
    return out


def _binom(k: int, n: int, p: float) -> float:
    from aiir.evasion.config import binom_sf

    return binom_sf(k, n, min(max(p, 1e-12), 1 - 1e-12))

