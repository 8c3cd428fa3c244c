"""Forensics after a poisoning incident: where the poison is, what it teaches, and whom it hit.

:func:`localise_poison` compares the training data of a suspect model version with the data of a
known-good version. The files only the suspect was trained on are split into slices (file × source and
file × batch); each slice is scored against the good version's training data with three vectorised
signals — label-rate shift, near-duplicate share and the label-flip signature (rows the good model
scores as positive that carry a negative label). Slices that fire are quarantined, the flipped rows
yield a *trigger pattern* (the feature conditions the attacker wants waved through).

:func:`blast_radius` takes decision-log rows (any source: the gateway log, a SageMaker capture
import, a SIEM export) and counts what the compromised version served inside its deployment window,
per client, and how many served requests carried the trigger pattern and were let through.

Methods, statistics, rules and output files: ``docs/forensics.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiir import registry
from aiir.errors import BadInput, IntegrityError
from aiir.hashing import sha256_bytes, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

# ----------------------------------------------------------------------------------- documented rules
ALPHA = 1e-3  # family-wise significance; Bonferroni over (tested slices x 3 signals)
POSITIVE_SCORE = 0.5  # the good model "thinks positive" at or above this score
MIN_ROWS = 30  # slices with fewer rows are reported but not tested
LABEL_MIN_RATIO = 1.5  # label shift effect floor: max(p/p_ref, p_ref/p)
DUP_MIN_RATIO = 2.0  # near-duplicate share must be >= this x the reference baseline ...
DUP_MIN_EXCESS = 0.01  # ... and exceed it by at least this share of the slice's rows
FLIP_MIN_RATIO = 3.0  # label-flip share must be >= this x the reference baseline ...
FLIP_MIN_EXCESS = 0.01  # ... and exceed it by at least this share of the slice's rows
NEAR_BINS = 100  # numeric features are quantised into this many reference-quantile bins
NEAR_EXACT_MAX_DISTINCT = 50  # numeric features with <= this many distinct reference values stay exact
DUP_BASELINE_DRAWS = 5  # reference subsamples averaged for the duplicate baseline of one slice size
# Trigger pattern
PATTERN_MIN_SEPARATION = 0.3  # flipped share - reference share of a condition
PATTERN_MIN_LIFT = 1.5  # flipped share / reference share
PATTERN_MAX_CONDITIONS = 6
PATTERN_MIN_COVERAGE = 0.5  # the conjunction must still cover this share of the flipped rows

SIGNALS = ("label_shift", "duplicates", "label_flip")
# label_flip is tested in both directions (each against its own reference baseline):
# to_negative: the good model scores the row positive (>= POSITIVE_SCORE), the label says negative;
# to_positive: the good model scores the row negative, the label says positive.
FLIP_KEYS = {"to_negative": "label_flip", "to_positive": "label_flip_to_positive"}

LOCALISATION_FILE = "poison_localisation.json"
QUARANTINE_FILE = "quarantine.json"
ROW_DIGESTS_FILE = "quarantined_rows.txt"
POISONED_ROWS_FILE = "poisoned_rows.parquet"
BLAST_RADIUS_FILE = "blast_radius.json"
AFFECTED_FILE = "affected_decisions.csv"

DECISION_COLUMNS = ("decision_id", "ts", "client_id", "model", "model_version", "prediction", "score",
                    "features")


# =========================================================================================== helpers

def _jsonable(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, tuples/sets to lists, paths to str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: Any) -> bool:
    """Write ``obj`` as indented JSON unless the file already holds exactly that; True when written."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    return write_text(path, text)


def write_text(path: Path, text: str) -> bool:
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def write_parquet(df: pd.DataFrame, path: Path) -> str:
    """Deterministic Parquet (no pandas metadata), written atomically and only when the bytes change.

    Returns the SHA-256 of the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False).replace_schema_metadata(None)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    new = sha256_file(tmp)
    if path.exists() and sha256_file(path) == new:
        tmp.unlink()
    else:
        tmp.replace(path)
    return new


def train_files(mv: registry.ModelVersion) -> list[dict[str, str]]:
    """The ``aiir.train_files`` tag of a version: ``[{"path", "sha256"}, ...]``."""
    raw = mv.tags.get("aiir.train_files")
    if not raw:
        raise BadInput(f"{mv.name} v{mv.version}", "version has no 'aiir.train_files' tag (registered "
                                                   "outside aiir.registry.log_and_register?)")
    try:
        files = json.loads(raw)
        return [{"path": str(f["path"]), "sha256": str(f["sha256"])} for f in files]
    except (ValueError, TypeError, KeyError):
        raise BadInput(f"{mv.name} v{mv.version}", "tag 'aiir.train_files' is not a JSON list of "
                                                   "{path, sha256}") from None


def verify_files(entries: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Recompute each file's SHA-256: status ``ok``, ``mismatch`` or ``missing``."""
    out = []
    for e in entries:
        p = Path(e["path"])
        if not p.is_file():
            out.append({"path": e["path"], "expected_sha256": e["sha256"], "actual_sha256": None,
                        "status": "missing"})
            continue
        actual = sha256_file(p)
        out.append({"path": e["path"], "expected_sha256": e["sha256"], "actual_sha256": actual,
                    "status": "ok" if actual == e["sha256"] else "mismatch"})
    return out


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


# ------------------------------------------------------------------------------------------- models

_SCORER_CACHE: dict[tuple[str, str, str, str], tuple[Any, list[str] | None, Any]] = {}
# MLflow writes this file into a local artifact folder the first time anyone loads ``models:/NAME/V``, i.e.
# after ``aiir.artifact_sha256`` was recorded; it names the model and version and is never executed.
MLFLOW_LOAD_METADATA = ("registered_model_meta",)


def artifact_digest(root: Path) -> str:
    """:func:`aiir.hashing.tree_digest` of a model folder, ignoring the metadata MLflow adds on load."""
    from aiir.hashing import sha256_tree

    tree = {k: v for k, v in sha256_tree(root).items() if k not in MLFLOW_LOAD_METADATA}
    return sha256_bytes("".join(f"{k}  {v}\n" for k, v in tree.items()).encode())


def load_scorer(model: str, version: str) -> tuple[Callable[[pd.DataFrame], np.ndarray], list[str] | None, Any]:
    """``(score(df) -> P(positive), feature names or None, positive class)`` of a registered version.

    Before anything is unpickled, the artifact folder's digest is checked against the version's
    ``aiir.artifact_sha256`` tag (:class:`IntegrityError` on mismatch). Loads ``models:/NAME/VERSION``
    with the sklearn flavour (falls back to pyfunc and its raw model); the model needs ``predict_proba``.
    Loaded models are cached per tracking store, version and artifact digest."""
    import mlflow

    registry.client()
    mv = registry.get_version(model, version)
    digest = ""
    local = mv.artifact_dir is not None and mv.artifact_dir.is_dir()
    if local:
        digest = artifact_digest(mv.artifact_dir)
        want = mv.tags.get("aiir.artifact_sha256")
        if want and want != digest:
            raise IntegrityError(f"{mv.artifact_dir}: model artifact of {model} v{mv.version} changed since "
                                 f"registration (SHA-256 {digest[:12]}…, registered {want[:12]}…); not loading it")
    key = (mlflow.get_tracking_uri(), model, mv.version, digest)
    if digest and key in _SCORER_CACHE:
        est, names, positive = _SCORER_CACHE[key]
    else:
        # load the very folder just verified (a models:/ URI would also write into it)
        uri = mv.artifact_dir.as_uri() if local else f"models:/{model}/{mv.version}"
        try:
            est = mlflow.sklearn.load_model(uri)
        except Exception:
            try:
                est = mlflow.pyfunc.load_model(uri).get_raw_model()
            except Exception as exc:
                raise BadInput(f"{model} v{version}", f"cannot load the model ({type(exc).__name__}: "
                                                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not hasattr(est, "predict_proba"):
            raise BadInput(f"{model} v{version}", "the model has no predict_proba (a probabilistic classifier "
                                                  "is needed)")
        names = getattr(est, "feature_names_in_", None)
        names = [str(n) for n in names] if names is not None else None
        if names is None:
            try:
                sig = mlflow.models.get_model_info(uri).signature
                names = list(sig.inputs.input_names()) if sig is not None else None
            except Exception:
                names = None
        classes = getattr(est, "classes_", None)
        positive = classes[-1] if classes is not None else 1
        positive = positive.item() if hasattr(positive, "item") else positive
        if digest:
            _SCORER_CACHE[key] = (est, names, positive)

    def score(df: pd.DataFrame) -> np.ndarray:
        X = df[names] if names is not None else df
        proba = np.asarray(est.predict_proba(X))
        return proba[:, -1].astype(float) if proba.ndim == 2 else proba.astype(float)

    return score, names, positive


# ============================================================================== localise_poison

def _read_files(verified: list[dict[str, Any]], what: str) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    from aiir.tabular import read_table

    out = []
    for v in verified:
        if v["status"] == "missing":
            continue
        out.append((v, read_table(v["path"], what=what)))
    return out


def _near_keys(ref_X: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
    """Rounded-feature hash of each row of ``X``: numeric features quantised into reference-quantile bins
    (kept exact when the reference has few distinct values), categorical features as text."""
    import pandas as pd
    from pandas.api import types as pt

    codes = {}
    for c in X.columns:
        r, x = ref_X[c], X[c]
        if pt.is_numeric_dtype(r.dtype) and not pt.is_bool_dtype(r.dtype) and pt.is_numeric_dtype(x.dtype):
            rv = r.to_numpy(dtype=float, na_value=np.nan)
            xv = x.to_numpy(dtype=float, na_value=np.nan)
            finite = rv[np.isfinite(rv)]
            if len(np.unique(finite)) <= NEAR_EXACT_MAX_DISTINCT or len(finite) == 0:
                codes[c] = np.where(np.isnan(xv), -1.5, xv)
            else:
                edges = np.unique(np.quantile(finite, np.linspace(0, 1, NEAR_BINS + 1)[1:-1]))
                codes[c] = np.where(np.isnan(xv), -1, np.searchsorted(edges, xv, side="right"))
        else:
            codes[c] = x.astype(str).to_numpy()
    return pd.util.hash_pandas_object(pd.DataFrame(codes), index=False).to_numpy()


def _excess_dups(keys: np.ndarray) -> int:
    return int(len(keys) - len(np.unique(keys)))


def _z_two_prop(x1: np.ndarray, n1: np.ndarray, x2: float, n2: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import norm

    p1 = x1 / np.maximum(n1, 1)
    p2 = x2 / max(n2, 1)
    pool = (x1 + x2) / (n1 + n2)
    se = np.sqrt(np.maximum(pool * (1 - pool), 1e-300) * (1 / np.maximum(n1, 1) + 1 / max(n2, 1)))
    z = np.where(pool * (1 - pool) > 0, (p1 - p2) / se, 0.0)
    return z, 2 * norm.sf(np.abs(z))


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
        z, pz = _z_two_prop(np.array([pos], float), np.array([n], float), self.ref_pos, self.n_ref)
        ratio = ((pos + 0.5) / (n + 1)) / ((self.ref_pos + 0.5) / (self.n_ref + 1))
        dup_base = self.dup_baseline(n) if n else float("nan")
        out = {
            "rows": n,
            "label_shift": {
                "positive_rate": p, "reference_rate": p_ref, "z": float(z[0]), "p_value": float(pz[0]),
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
    ref_near = _near_keys(ref[features], ref[features])
    near = _near_keys(ref[features], cand[features])
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
                   "flip_min_excess": FLIP_MIN_EXCESS, "near_bins": NEAR_BINS,
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


# ================================================================================ trigger pattern

def _cond(feature: str, op: str, value: Any, f_share: float, r_share: float) -> dict[str, Any]:
    return {"feature": feature, "op": op, "value": value, "flipped_share": float(f_share),
            "reference_share": float(r_share), "separation": float(f_share - r_share),
            "lift": float(f_share / r_share) if r_share > 0 else None}


def _feature_condition(col: str, f: pd.Series, r: pd.Series) -> dict[str, Any] | None:
    """The single condition on ``col`` that best separates the flipped rows ``f`` from the reference ``r``."""
    from pandas.api import types as pt

    floor = 1.0 / max(len(r), 1)
    numeric = pt.is_numeric_dtype(r.dtype) and not pt.is_bool_dtype(r.dtype) and pt.is_numeric_dtype(f.dtype)
    if numeric and r.nunique(dropna=True) > 2:
        rv = np.sort(r.to_numpy(dtype=float, na_value=np.nan))
        fv = np.sort(f.to_numpy(dtype=float, na_value=np.nan))
        rv, fv = rv[np.isfinite(rv)], fv[np.isfinite(fv)]
        if not len(rv) or not len(fv):
            return None
        cuts = np.unique(np.concatenate([np.quantile(rv, np.linspace(0, 1, 101)),
                                         np.quantile(fv, np.linspace(0, 1, 201)), np.unique(fv)[:500]]))
        fl = np.searchsorted(fv, cuts, side="right") / len(fv)
        rl = np.searchsorted(rv, cuts, side="right") / len(rv)
        d = fl - rl
        k = int(np.argmax(np.abs(d)))
        t = cuts[k]
        if pt.is_integer_dtype(r.dtype) and float(t).is_integer():
            t = int(t)
        else:
            t = float(t)
        if d[k] >= 0:
            return _cond(col, "<=", t, fl[k], max(rl[k], floor))
        return _cond(col, ">", t, 1 - fl[k], max(1 - rl[k], floor))
    # categorical (or binary numeric): the over-represented values
    fs = f.value_counts(normalize=True, dropna=False)
    rs = r.value_counts(normalize=True, dropna=False)
    lifts = {v: fs[v] / max(rs.get(v, 0.0), floor) for v in fs.index}
    over = sorted([v for v, lift in lifts.items() if lift >= PATTERN_MIN_LIFT], key=lambda v: -lifts[v])
    if not over:
        return None
    value = over[0].item() if hasattr(over[0], "item") else over[0]
    if len(over) == 1:
        return _cond(col, "==", value, fs[over[0]], max(rs.get(over[0], 0.0), floor))
    vals = [v.item() if hasattr(v, "item") else v for v in over]
    return _cond(col, "in", sorted(vals, key=str), float(fs[over].sum()),
                 max(float(sum(rs.get(v, 0.0) for v in over)), floor))


def derive_pattern(flipped: pd.DataFrame, reference: pd.DataFrame, *, ref_y: np.ndarray | None = None
                   ) -> dict[str, Any] | None:
    """The feature conditions over-represented in ``flipped`` rows vs. ``reference`` (see docs)."""
    cands = []
    for col in flipped.columns:
        c = _feature_condition(col, flipped[col], reference[col])
        if c is not None:
            cands.append(c)
    cands.sort(key=lambda c: -c["separation"])
    strong = [c for c in cands if c["separation"] >= PATTERN_MIN_SEPARATION
              and (c["lift"] is None or c["lift"] >= PATTERN_MIN_LIFT)][:PATTERN_MAX_CONDITIONS]
    if not strong:
        return None
    chosen: list[dict[str, Any]] = []
    f_mask = np.ones(len(flipped), bool)
    for c in strong:
        m = f_mask & _cond_mask(flipped, c)
        if m.mean() >= PATTERN_MIN_COVERAGE:
            chosen.append(c)
            f_mask = m
    pattern = {"conditions": chosen, "candidates": cands}
    r_mask = match_pattern(reference, pattern)
    pattern["match"] = {
        "flipped_rows": int(len(flipped)), "flipped_share": float(f_mask.mean()),
        "reference_rows": int(r_mask.sum()), "reference_share": float(r_mask.mean()),
        "reference_positive_rate": (float(ref_y[r_mask].mean()) if ref_y is not None and r_mask.any()
                                    else None),
    }
    pattern["description"] = describe_pattern(pattern)
    return pattern


def describe_pattern(pattern: dict[str, Any] | None) -> str:
    if not pattern or not pattern.get("conditions"):
        return ""
    parts = []
    for c in pattern["conditions"]:
        if c["op"] == "in":
            parts.append(f"{c['feature']} in {{{', '.join(map(str, c['value']))}}}")
        else:
            parts.append(f"{c['feature']} {c['op']} {c['value']}")
    return " AND ".join(parts)


def _cond_mask(df: pd.DataFrame, c: dict[str, Any]) -> np.ndarray:
    import pandas as pd

    if c["feature"] not in df.columns:
        return np.zeros(len(df), bool)
    s = df[c["feature"]]
    op, v = c["op"], c["value"]
    if op in ("<=", ">", "<", ">="):
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            m = {"<=": x <= v, ">": x > v, "<": x < v, ">=": x >= v}[op]
        return np.asarray(m, bool)
    vals = v if op == "in" else [v]
    m = s.isin(vals).to_numpy()
    if not m.all():  # numbers that arrived as text (JSON) or as floats
        num = [x for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if num:
            x = pd.to_numeric(s, errors="coerce")
            m = m | x.isin(num).to_numpy()
        txt = [str(x) for x in vals]
        m = m | s.astype(str).isin(txt).to_numpy()
    return m


def match_pattern(df: pd.DataFrame, pattern: dict[str, Any] | None) -> np.ndarray:
    """Boolean mask of the rows of ``df`` meeting every condition of ``pattern`` (missing feature: False)."""
    if not pattern or not pattern.get("conditions"):
        return np.zeros(len(df), bool)
    m = np.ones(len(df), bool)
    for c in pattern["conditions"]:
        m &= _cond_mask(df, c)
    return m


# =================================================================================== blast radius

def _parse_ts(values: Any, where: str) -> pd.Series:
    import pandas as pd

    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise BadInput(where, f"cannot read times as ISO-8601 ({str(exc).splitlines()[0]})") from None


def _iso(ts: Any) -> str | None:
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _prediction_values(pred: pd.Series, score: pd.Series, threshold: float) -> np.ndarray:
    """0/1 per decision: the served prediction when numeric (lists: first element), else score >= threshold."""
    import pandas as pd

    def first(v: Any) -> Any:
        if isinstance(v, str):
            t = v.strip()
            if t.startswith("["):
                try:
                    v = json.loads(t)
                except ValueError:
                    return v
            else:
                return t
        if isinstance(v, (list, tuple)):
            return v[0] if v else None
        if isinstance(v, dict):
            for k in ("prediction", "label", "predicted_label"):
                if k in v:
                    return v[k]
            return None
        return v

    raw = pred.map(first)
    low = raw.astype(str).str.lower()
    num = pd.to_numeric(raw.where(~low.isin(["true", "false"])), errors="coerce")
    num = num.mask(low == "true", 1.0).mask(low == "false", 0.0)
    sc = pd.to_numeric(score, errors="coerce")
    fallback = (sc >= threshold).astype(float).where(sc.notna())
    out = num.fillna(fallback)
    return (out.fillna(0).to_numpy(dtype=float) >= 0.5).astype(int)


def _features_frame(col: pd.Series) -> pd.DataFrame:
    import pandas as pd

    def load(v: Any) -> dict[str, Any]:
        if isinstance(v, dict):
            return v
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], dict):
            return v[0]
        if isinstance(v, str) and v.strip():
            try:
                d = json.loads(v)
            except ValueError:
                return {}
            return load(d) if not isinstance(d, str) else {}
        return {}

    return pd.DataFrame.from_records([load(v) for v in col.tolist()], index=col.index)


def blast_radius(decisions: pd.DataFrame, *, model: str, version: str, since: str | None, until: str | None,
                 out_dir: Path, pattern: dict[str, Any] | None = None,
                 threshold: float = POSITIVE_SCORE) -> dict[str, Any]:
    """Every decision ``model`` ``version`` served in [``since``, ``until``), per client; with ``pattern``
    also the decisions that carried the trigger pattern and were let through (prediction 0).

    Writes ``blast_radius.json`` and ``affected_decisions.csv`` into ``out_dir``."""
    import pandas as pd

    out_dir = Path(out_dir)
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise BadInput("decisions", f"missing columns: {', '.join(missing)} (expected at least "
                                    f"{', '.join(DECISION_COLUMNS)})")
    lo = _parse_ts(pd.Series([since]), "since")[0] if since else None
    hi = _parse_ts(pd.Series([until]), "until")[0] if until else None
    if lo is not None and hi is not None and hi < lo:
        raise BadInput("until", f"containment time {until} is before the deployment time {since}")
    df = decisions
    ts = _parse_ts(df["ts"].astype(str), "decisions.ts")
    is_version = (df["model"].astype(str) == str(model)).to_numpy() & \
        (df["model_version"].astype(str) == str(version)).to_numpy()
    in_window = np.ones(len(df), bool)
    if lo is not None:
        in_window &= (ts >= lo).to_numpy()
    if hi is not None:
        in_window &= (ts < hi).to_numpy()
    sel = is_version & in_window
    served = df[sel].copy()
    served["_ts"] = ts[sel].to_numpy()
    served["_pred"] = _prediction_values(served["prediction"], served["score"], threshold)
    if pattern is not None and len(served):
        feats = _features_frame(served["features"])
        served["_match"] = match_pattern(feats, pattern)
        missing_feats = sorted({c["feature"] for c in pattern.get("conditions", []) if c["feature"] not in feats})
    else:
        served["_match"] = False
        missing_feats = []
    served["_let"] = served["_match"] & (served["_pred"] == 0)
    served = served.sort_values(["_ts", "decision_id"], kind="stable")

    clients = []
    if len(served):
        g = served.groupby(served["client_id"].astype(str), sort=True)
        agg = pd.DataFrame({
            "decisions": g.size(), "predicted_positive": g["_pred"].sum(),
            "first_ts": g["_ts"].min(), "last_ts": g["_ts"].max(),
            "pattern_matched": g["_match"].sum(), "pattern_let_through": g["_let"].sum(),
        })
        agg["predicted_negative"] = agg["decisions"] - agg["predicted_positive"]
        agg = agg.sort_values(["decisions"], ascending=False, kind="stable")
        for cid, r in agg.iterrows():
            row = {"client_id": cid, "decisions": int(r["decisions"]),
                   "predicted_positive": int(r["predicted_positive"]),
                   "predicted_negative": int(r["predicted_negative"]),
                   "first_ts": _iso(r["first_ts"]), "last_ts": _iso(r["last_ts"])}
            if pattern is not None:
                row["pattern_matched"] = int(r["pattern_matched"])
                row["pattern_let_through"] = int(r["pattern_let_through"])
            clients.append(row)

    affected = pd.DataFrame({
        "decision_id": served["decision_id"].astype(str).to_numpy(),
        "client_id": served["client_id"].astype(str).to_numpy(),
        "ts": [_iso(t) for t in served["_ts"]],
        "score": pd.to_numeric(served["score"], errors="coerce").to_numpy(),
        "prediction": served["_pred"].to_numpy(),
        "matches_pattern": served["_match"].astype(bool).to_numpy(),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / AFFECTED_FILE, affected.to_csv(index=False, lineterminator="\n"))
    result = {
        "model": model, "version": str(version),
        "window": {"since": _iso(lo), "until": _iso(hi), "since_inclusive": True, "until_exclusive": True},
        "decisions_in_log": int(len(df)),
        "decisions_by_version_outside_window": int((is_version & ~in_window).sum()),
        "decisions": int(len(served)),
        "total": int(len(served)),
        "predicted_positive": int(served["_pred"].sum()),
        "predicted_negative": int(len(served) - served["_pred"].sum()),
        "clients_affected": len(clients),
        "clients": clients,
        "by_client": {c["client_id"]: {k: v for k, v in c.items() if k != "client_id"} for c in clients},
        "pattern": (None if pattern is None else {
            "description": pattern.get("description") or describe_pattern(pattern),
            "conditions": pattern.get("conditions", []),
            "features_missing_from_log": missing_feats,
            "matched": int(served["_match"].sum()),
            "let_through": int(served["_let"].sum()),
            "caught": int((served["_match"] & (served["_pred"] == 1)).sum()),
        }),
        "likely_missed_positives": None if pattern is None else int(served["_let"].sum()),
        "affected_decisions_file": AFFECTED_FILE,
        "affected_decisions_sha256": sha256_file(out_dir / AFFECTED_FILE),
    }
    write_json(out_dir / BLAST_RADIUS_FILE, result)
    return _jsonable(result)


def deployment_windows(model: str, version: str, alias: str = registry.CHAMPION) -> list[dict[str, Any]]:
    """Every interval in which ``alias`` pointed at ``version``, from the hash-chained registry log."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for e in sorted(registry.alias_history(model, alias), key=lambda e: e.get("seq", 0)):
        if str(e.get("to_version")) == str(version) and cur is None:
            cur = {"since": e["at"], "until": None, "moved_in_by": e.get("actor"), "reason_in": e.get("reason")}
        elif cur is not None and str(e.get("to_version")) != str(version):
            cur.update(until=e["at"], moved_out_by=e.get("actor"), reason_out=e.get("reason"),
                       replaced_by=e.get("to_version"))
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def deployment_window(model: str, version: str) -> tuple[str, str | None]:
    """``(since, until or None)``: when ``champion`` first moved to ``version`` and when it last moved away
    (None while it is still champion). Decisions are also filtered by version, so gaps between several
    deployments never count other versions' decisions."""
    wins = deployment_windows(model, str(version))
    if not wins:
        raise BadInput("version", f"{model} v{version} was never '{registry.CHAMPION}' according to the "
                                  "registry log")
    return wins[0]["since"], wins[-1]["until"]
