"""Poison localisation: which slices of the suspect version's training data carry the poison."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiir import registry
from aiir.errors import BadInput
from aiir.hashing import sha256_bytes
from aiir.jsonio import jsonable as _jsonable

if TYPE_CHECKING:

    import pandas as pd

from aiir.detect.stats import two_proportions
from aiir.detect.thresholds import load_thresholds
from aiir.forensics.canon import row_digests  # noqa: F401
from aiir.forensics.constants import (
    ALPHA,
    DUP_BASELINE_DRAWS,
    DUP_MIN_EXCESS,
    DUP_MIN_RATIO,
    FLIP_KEYS,
    FLIP_MIN_EXCESS,
    FLIP_MIN_RATIO,
    LABEL_MIN_RATIO,
    LOCALISATION_FILE,
    MIN_ROWS,
    POISONED_ROWS_FILE,
    POSITIVE_SCORE,
    QUARANTINE_FILE,
    ROW_DIGESTS_FILE,
    SIGNALS,
)
from aiir.forensics.io import write_json, write_parquet, write_text  # noqa: F401
from aiir.forensics.lineage import train_files, verify_files  # noqa: F401
from aiir.forensics.models import load_scorer  # noqa: F401
from aiir.forensics.pattern import derive_pattern, match_pattern  # noqa: F401

# ============================================================================== localise_poison

def _read_files(verified: list[dict[str, Any]], what: str) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    from aiir.tabular import read_table

    out = []
    for v in verified:
        if v["status"] == "missing":
            continue
        out.append((v, read_table(v["path"], what=what)))
    return out


def _near_keys(ref_X: pd.DataFrame, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate row keys of the reference and of ``X``, consistent across the two: the integrity check's
    own keys (:func:`aiir.detect.stats.near_duplicate_keys`, with its ``[duplicates]`` thresholds: numeric
    features in reference-quantile bins, exact when the reference has few distinct values), so the check and
    the forensics step call the same rows near-duplicates."""
    from pandas.api import types as pt

    from aiir.detect.stats import near_duplicate_keys
    dt = load_thresholds()["duplicates"]
    numerical = [c for c in X.columns if pt.is_numeric_dtype(ref_X[c].dtype) and not pt.is_bool_dtype(ref_X[c].dtype)
                 and pt.is_numeric_dtype(X[c].dtype)]
    return near_duplicate_keys(ref_X, X, list(X.columns), numerical, near=True, bins=int(dt["near_bins"]),
                               exact_max_distinct=int(dt["near_exact_max_distinct"]))


def _excess_dups(keys: np.ndarray) -> int:
    return int(len(keys) - len(np.unique(keys)))


class _Scorer:
    """Slice statistics against the reference, vectorised over the candidate rows."""

    def __init__(self, *, y: np.ndarray, flips: dict[str, np.ndarray], near: np.ndarray, ref_y: np.ndarray,
                 ref_flips: dict[str, np.ndarray], ref_near: np.ndarray):
        self.y, self.flips, self.near = y, flips, near
        self.n_ref = len(ref_y)
        self.ref_pos = int(ref_y.sum())
        floor = 1.0 / max(self.n_ref, 1)
        self.ref_flip_share = {d: max(float(f.mean()) if len(f) else 0.0, floor) for d, f in ref_flips.items()}
        self.ref_near = ref_near
        self._dup_base: dict[int, float] = {}

    def dup_baseline(self, n: int) -> float:
        """Near-duplicate share of ``n`` rows drawn from the reference (same size, same statistic)."""
        if n not in self._dup_base:
            if n >= self.n_ref:
                share = _excess_dups(self.ref_near) / max(self.n_ref, 1)
            else:
                rng = np.random.default_rng(n)  # deterministic per slice size
                share = float(np.mean([_excess_dups(self.ref_near[rng.choice(self.n_ref, n, replace=False)]) / n
                                       for _ in range(DUP_BASELINE_DRAWS)]))
            self._dup_base[n] = max(share, 1.0 / max(self.n_ref, 1))
        return self._dup_base[n]

    def stats(self, mask: np.ndarray) -> dict[str, Any]:
        from scipy.stats import binom

        n = int(mask.sum())
        pos = int(self.y[mask].sum())
        dups = _excess_dups(self.near[mask]) if n else 0
        p_ref = self.ref_pos / max(self.n_ref, 1)
        p = pos / n if n else float("nan")
        z, pz = two_proportions(self.ref_pos, self.n_ref, pos, n)  # shared with detect/ (one primitive)
        ratio = ((pos + 0.5) / (n + 1)) / ((self.ref_pos + 0.5) / (self.n_ref + 1))
        dup_base = self.dup_baseline(n) if n else float("nan")
        out = {
            "rows": n,
            "label_shift": {
                "positive_rate": p, "reference_rate": p_ref, "z": float(z), "p_value": float(pz),
                "ratio": float(max(ratio, 1 / ratio)), "direction": "down" if ratio < 1 else "up",
            },
            "duplicates": {
                "near_duplicate_rows": dups, "share": dups / n if n else float("nan"),
                "baseline_share": dup_base,
                "p_value": float(binom.sf(dups - 1, n, min(dup_base, 1.0))) if n else 1.0,
            },
        }
        for direction, key in FLIP_KEYS.items():
            flips = int(self.flips[direction][mask].sum())
            base = self.ref_flip_share[direction]
            out[key] = {
                "direction": direction, "flipped_rows": flips, "share": flips / n if n else float("nan"),
                "baseline_share": base, "excess_rows": flips - n * base,
                "p_value": float(binom.sf(flips - 1, n, min(base, 1.0))) if n else 1.0,
            }
        return out


def _fire(st: dict[str, Any], alpha: float) -> list[str]:
    """Which signals fire: significant after Bonferroni (``alpha``) AND above the effect floor."""
    if st["rows"] < MIN_ROWS:
        return []
    out = []
    ls = st["label_shift"]
    if ls["p_value"] < alpha and ls["ratio"] >= LABEL_MIN_RATIO:
        out.append("label_shift")
    d = st["duplicates"]
    if d["p_value"] < alpha and d["share"] >= max(DUP_MIN_RATIO * d["baseline_share"],
                                                  d["baseline_share"] + DUP_MIN_EXCESS):
        out.append("duplicates")
    if _flip_directions(st, alpha):
        out.append("label_flip")
    return out


def _flip_directions(st: dict[str, Any], alpha: float) -> list[str]:
    """The label-flip directions whose statistic is significant and above the effect floor."""
    if st["rows"] < MIN_ROWS:
        return []
    out = []
    for direction, key in FLIP_KEYS.items():
        f = st[key]
        if f["p_value"] < alpha and f["share"] >= max(FLIP_MIN_RATIO * f["baseline_share"],
                                                      f["baseline_share"] + FLIP_MIN_EXCESS):
            out.append(direction)
    return out


def _is_suspect(fired: list[str]) -> bool:
    """The rule: the label-flip signature alone, or any two of the three signals."""
    return "label_flip" in fired or len(fired) >= 2


def localise_poison(model: str, suspect_version: str, good_version: str, out_dir: Path, *,
                    label: str | None = None, source_column: str | None = "source",
                    batch_column: str | None = "batch", alpha: float = ALPHA) -> dict[str, Any]:
    """Find the slices of training data the suspect version saw and the good version did not that carry
    the poison; write ``poison_localisation.json``, ``quarantine.json``, ``quarantined_rows.txt`` and
    ``poisoned_rows.parquet`` into ``out_dir``. Returns the localisation (also the JSON's content)."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suspect = registry.get_version(model, suspect_version)
    good = registry.get_version(model, good_version)
    s_files, g_files = train_files(suspect), train_files(good)
    label = label or suspect.tags.get("aiir.label") or good.tags.get("aiir.label")
    if not label:
        raise BadInput("label", f"no label given and neither v{suspect.version} nor v{good.version} has an "
                                "'aiir.label' tag")

    # 1. integrity of every file either version was trained on
    verified_s = verify_files(s_files)
    verified_g = verify_files(g_files)
    findings = []
    for who, ver in (("suspect", verified_s), ("good", verified_g)):
        for v in ver:
            if v["status"] != "ok":
                findings.append({"kind": "integrity", "version_role": who, "path": v["path"],
                                 "status": v["status"], "expected_sha256": v["expected_sha256"],
                                 "actual_sha256": v["actual_sha256"],
                                 "detail": ("file is missing" if v["status"] == "missing" else
                                            "file changed since the version was registered")})
    good_set = {(f["path"], f["sha256"]) for f in g_files}
    good_paths = {f["path"] for f in g_files}
    cand_ver = [v for f, v in zip(s_files, verified_s, strict=True) if (f["path"], f["sha256"]) not in good_set]
    for v in cand_ver:
        if v["path"] in good_paths:
            findings.append({"kind": "integrity", "version_role": "suspect", "path": v["path"],
                             "status": "changed_between_versions",
                             "detail": "same path registered with a different SHA-256 for the good version"})
    if not cand_ver:
        raise BadInput(f"{model} v{suspect.version}", f"was trained on no file that v{good.version} was not "
                                                      "trained on: nothing to localise")

    # 2. data
    ref_parts = _read_files(verified_g, "reference training file")
    if not ref_parts:
        raise BadInput(f"{model} v{good.version}", "none of its training files can be read")
    ref = pd.concat([df for _, df in ref_parts], ignore_index=True)
    cand_parts = _read_files(cand_ver, "candidate training file")
    if not cand_parts:
        raise BadInput(f"{model} v{suspect.version}", "none of the candidate training files can be read")
    cand = pd.concat([df for _, df in cand_parts], ignore_index=True)
    file_idx = np.concatenate([np.full(len(df), i) for i, (_, df) in enumerate(cand_parts)])
    cand_files = [v for v, _ in cand_parts]
    for where, df in (("reference data", ref), ("candidate data", cand)):
        if label not in df.columns:
            raise BadInput(where, f"label column '{label}' missing")
    src_col = source_column if source_column and source_column in cand.columns else None
    bat_col = batch_column if batch_column and batch_column in cand.columns else None

    score, names, positive = load_scorer(model, good.version)
    drop = {label, source_column, batch_column}
    features = names or [c for c in ref.columns if c not in drop]
    for where, df in (("reference data", ref), ("candidate data", cand)):
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise BadInput(where, f"feature columns the good model needs are missing: {', '.join(missing)}")
    ref_y = (ref[label] == positive).to_numpy()
    y = (cand[label] == positive).to_numpy()
    ref_s = score(ref[features])
    s = score(cand[features])
    ref_flips = {"to_negative": (ref_s >= POSITIVE_SCORE) & ~ref_y, "to_positive": (ref_s < POSITIVE_SCORE) & ref_y}
    flips = {"to_negative": (s >= POSITIVE_SCORE) & ~y, "to_positive": (s < POSITIVE_SCORE) & y}
    ref_near, near = _near_keys(ref[features], cand[features])
    sc = _Scorer(y=y, flips=flips, near=near, ref_y=ref_y, ref_flips=ref_flips, ref_near=ref_near)

    # 3. slices
    slices: list[dict[str, Any]] = []
    masks: list[np.ndarray] = []
    src_vals = cand[src_col].astype(str).to_numpy() if src_col else None
    bat_vals = cand[bat_col].astype(str).to_numpy() if bat_col else None
    for i, fv in enumerate(cand_files):
        in_file = file_idx == i
        views = []
        if src_col:
            views += [("source", src_col, src_vals)]
        if bat_col:
            views += [("batch", bat_col, bat_vals)]
        if not views:
            views = [("file", None, None)]
        for view, _col, vals in views:
            keys = sorted(set(vals[in_file])) if vals is not None else [None]
            for k in keys:
                m = in_file & (vals == k) if vals is not None else in_file
                slices.append({"id": f"{Path(fv['path']).name}|{view}={k}" if k is not None
                               else Path(fv["path"]).name,
                               "view": view, "file": fv["path"], "file_sha256": fv["actual_sha256"],
                               "digest_verified": fv["status"] == "ok",
                               "source": k if view == "source" else None,
                               "batch": k if view == "batch" else None})
                masks.append(m)
    tested = sum(1 for m in masks if m.sum() >= MIN_ROWS)
    n_tests = tested * (len(SIGNALS) + len(FLIP_KEYS) - 1)
    alpha_adj = alpha / max(1, n_tests)
    for sl, m in zip(slices, masks, strict=True):
        sl.update(sc.stats(m))
        sl["signals"] = _fire(sl, alpha_adj)
        sl["label_flip_directions"] = _flip_directions(sl, alpha_adj)
        sl["suspect"] = _is_suspect(sl["signals"])

    # 4. quarantine: suspect source slices; a suspect batch/file slice only when its rows outside the
    #    quarantined source slices still fire on their own (residual test)
    quarantine_view = "source" if src_col else ("batch" if bat_col else "file")
    q_mask = np.zeros(len(cand), bool)
    quarantined: list[int] = []
    for j, sl in enumerate(slices):
        if sl["view"] == quarantine_view and sl["suspect"]:
            quarantined.append(j)
            q_mask |= masks[j]
    for j, sl in enumerate(slices):
        if sl["view"] != quarantine_view and sl["suspect"]:
            resid = masks[j] & ~q_mask
            rst = sc.stats(resid)
            fired = _fire(rst, alpha_adj)
            sl["residual"] = {"rows": rst["rows"], "signals": fired,
                              "label_flip_share": rst["label_flip"]["share"],
                              "label_flip_to_positive_share": rst["label_flip_to_positive"]["share"],
                              "explained_by_quarantined_sources": not _is_suspect(fired)}
            if _is_suspect(fired):
                quarantined.append(j)
                q_mask |= resid
    for j, sl in enumerate(slices):
        sl["quarantined"] = j in quarantined

    order = sorted(range(len(slices)), key=lambda j: (not slices[j]["quarantined"], not slices[j]["suspect"],
                                                     -len(slices[j]["signals"]),
                                                     -max(slices[j][k]["excess_rows"] for k in FLIP_KEYS.values()),
                                                     slices[j]["id"]))
    for rank, j in enumerate(order, 1):
        slices[j]["rank"] = rank
    ranked = [slices[j] for j in order]

    # 5. trigger pattern from the flipped rows (in the directions that fired) of the quarantined slices
    poison_mask = np.zeros(len(cand), bool)
    for j in quarantined:
        for direction in slices[j]["label_flip_directions"]:
            poison_mask |= masks[j] & q_mask & flips[direction]
    flipped_rows = cand[poison_mask]
    pattern = None
    if len(flipped_rows):
        pattern = derive_pattern(flipped_rows[features], ref[features], ref_y=ref_y)
        if pattern is not None:
            in_q = match_pattern(cand[q_mask], pattern)
            pattern["match"]["quarantined_rows"] = int(in_q.sum())
            pattern["match"]["quarantined_rows_labelled_positive"] = int(y[q_mask][in_q].sum())
            pattern["match"]["quarantined_rows_labelled_negative"] = int((~y[q_mask][in_q]).sum())

    # 6. outputs
    q_rows = cand[q_mask]
    digests = row_digests(q_rows)
    rows_text = "".join(d + "\n" for d in digests)
    write_text(out_dir / ROW_DIGESTS_FILE, rows_text)
    poisoned_sha = write_parquet(flipped_rows.reset_index(drop=True), out_dir / POISONED_ROWS_FILE)
    q_slices = []
    for j in quarantined:
        sl = slices[j]
        m = masks[j]
        dg = row_digests(cand[m])
        q_slices.append({"file": sl["file"], "source": sl["source"], "batch": sl["batch"], "view": sl["view"],
                         "rows": int(m.sum()), "sha256": sl["file_sha256"],
                         "rows_sha256": sha256_bytes("".join(d + "\n" for d in dg).encode())})
    suspects = [sl for sl in ranked if sl["suspect"]]
    sources = sorted({sl["source"] for sl in suspects if sl["view"] == "source"})
    batches = sorted({sl["batch"] for sl in suspects if sl["view"] == "batch"})
    if src_col and bat_col and q_mask.any():  # where the quarantined rows arrived
        batches = sorted(set(batches) | set(cand.loc[q_mask, bat_col].astype(str)))
    quarantine = {
        "model": model, "suspect_version": suspect.version, "good_version": good.version,
        "label": label, "source_column": src_col, "batch_column": bat_col,
        "sources": sources,
        "files": sorted({s["file"] for s in q_slices}),
        "slices": q_slices,
        "rows": int(q_mask.sum()),
        "row_digests_file": ROW_DIGESTS_FILE,
        "row_digests_path": str((out_dir / ROW_DIGESTS_FILE).resolve()),
        "row_digests_sha256": sha256_bytes(rows_text.encode()),
        "poisoned_rows_file": POISONED_ROWS_FILE,
        "poisoned_rows_path": str((out_dir / POISONED_ROWS_FILE).resolve()),
        "poisoned_rows": int(len(flipped_rows)),
        "poisoned_rows_sha256": poisoned_sha,
        "pattern": pattern,
    }
    result = {
        "model": model, "suspect_version": suspect.version, "good_version": good.version, "label": label,
        "positive_class": positive, "features": features,
        "method": {"alpha": alpha, "bonferroni_tests": n_tests, "alpha_per_test": alpha_adj,
                   "positive_score": POSITIVE_SCORE, "min_rows": MIN_ROWS,
                   "label_min_ratio": LABEL_MIN_RATIO, "dup_min_ratio": DUP_MIN_RATIO,
                   "dup_min_excess": DUP_MIN_EXCESS, "flip_min_ratio": FLIP_MIN_RATIO,
                   "flip_min_excess": FLIP_MIN_EXCESS, "near_bins": int(load_thresholds()["duplicates"]["near_bins"]),
                   "rule": "suspect = label_flip fires (either direction), or at least two of label_shift/"
                           "duplicates/label_flip fire; a signal fires when p < alpha_per_test and the effect "
                           "floor holds"},
        "reference": {"rows": int(len(ref)), "positive_rate": float(ref_y.mean()),
                      "label_flip_share": float(ref_flips["to_negative"].mean()),
                      "label_flip_to_positive_share": float(ref_flips["to_positive"].mean()),
                      "near_duplicate_share": _excess_dups(ref_near) / max(len(ref), 1),
                      "files": [v["path"] for v, _ in ref_parts]},
        "files_verified": {"suspect": verified_s, "good": verified_g},
        "integrity_findings": findings,
        "candidate_files": [v["path"] for v in cand_files],
        "candidate_rows": int(len(cand)),
        "slices": ranked,
        "suspects": [{"id": sl["id"], "view": sl["view"], "file": sl["file"], "source": sl["source"],
                      "batch": sl["batch"], "rows": sl["rows"], "signals": sl["signals"],
                      "label_flip_share": sl["label_flip"]["share"],
                      "label_flip_to_positive_share": sl["label_flip_to_positive"]["share"],
                      "label_flip_directions": sl["label_flip_directions"], "quarantined": sl["quarantined"]}
                     for sl in suspects],
        "suspect_sources": sources,
        "suspect_batches": batches,
        "trigger_pattern": pattern,
        "quarantine_file": QUARANTINE_FILE,
        "poisoned_rows_file": POISONED_ROWS_FILE,
    }
    write_json(out_dir / QUARANTINE_FILE, quarantine)
    write_json(out_dir / LOCALISATION_FILE, result)
    return _jsonable(result)


