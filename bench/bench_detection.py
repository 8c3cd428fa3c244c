"""Detection benchmark: recall, false-positive rate and source attribution of ``aiir check`` on data it was
never tuned to.

    .venv/bin/python bench/bench_detection.py                      # development seeds + held-out seeds, doc
    .venv/bin/python bench/bench_detection.py --seeds 0 --no-doc   # one quick pass
    .venv/bin/python bench/bench_detection.py --datasets synth --kinds backdoor

Datasets (no downloads; every one gets a ``source`` column with four feeds and a categorical ``channel``):

* ``fraud``    — the demo's card-transaction generator (``aiir.demo.fraud_frame``), ~3 % fraud;
* ``cancer``   — scikit-learn's breast-cancer set (569 real rows), resampled with 3 % jitter to the batch size;
* ``diabetes`` — scikit-learn's diabetes set (442 real rows), label = target in its top 20 %, resampled alike;
* ``synth``    — ``make_classification`` (14 features, 4 % positives), feeds with a natural offset of their own.

Scenarios per dataset and seed: clean controls with natural variation (a new sample; mild drift of every
numerical feature; one feed's volume x2.5; the channel mix moving; a small batch; a large batch) and every
poisoning kind at three strengths: label flips in one feed, label noise spread over all feeds, a feature
shift in one feed, a backdoor trigger (two features set to fixed values, label forced), near-duplicate
injection, flooding one feed with fresh rows of the positive class. The feed attacked is drawn per
scenario. A scenario is *detected* when ``status == "incident"``; the source is *named* when the attacked
feed is the first of ``suspect_sources`` (and, for spread noise, not applicable).

Development seeds (0, 1) were used while building the detector; held-out seeds (1000+) were not.
Results: ``bench/results/detection-<UTC>.json`` and the section "## Detection (bench/bench_detection.py)"
of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, replace_section, save_json  # noqa: E402

HEADING = "## Detection (bench/bench_detection.py)"
SOURCES = np.array(["feed_a", "feed_b", "feed_c", "feed_d"], dtype=object)
SOURCE_P = np.array([0.4, 0.3, 0.2, 0.1])
CHANNELS = np.array(["web", "app", "pos", "phone", "partner"], dtype=object)
CHANNEL_P = np.array([0.35, 0.3, 0.2, 0.1, 0.05])
CLEAN = ("plain", "mild_drift", "volume", "category_mix", "small_batch", "large_batch")
POISON = {  # kind -> three strengths
    "flip_source": (0.3, 0.5, 0.8),       # share of the feed's positives relabelled negative
    "flip_spread": (0.03, 0.06, 0.12),    # share of all labels flipped at random
    "shift_source": (1.0, 2.0, 3.0),      # one feature of the feed moved by this many reference std
    "backdoor": (0.01, 0.03, 0.05),       # share of the batch carrying the trigger (in one feed)
    "near_dup": (0.01, 0.03, 0.06),       # share of the batch injected as near-copies of 5 rows (one feed)
    "flood": (0.05, 0.10, 0.20),          # share of the batch added to one feed: fresh positive rows
}
SPREAD = {"flip_spread"}
SIZES = {"fraud": (20_000, 6_000), "cancer": (4_000, 2_000), "diabetes": (4_000, 2_000), "synth": (20_000, 6_000)}


# ------------------------------------------------------------------------------------------ data

class Dataset:
    """A generator of rows: features, ``label`` (0/1, positive = rarer), ``source``, ``channel``."""

    name = "?"
    numeric: list[str] = []

    def rows(self, n: int, rng: np.random.Generator, *, drift: float = 0.0, only_label: int | None = None
             ) -> pd.DataFrame:
        raise NotImplementedError

    def frame(self, n: int, rng: np.random.Generator, *, drift: float = 0.0, source_p=SOURCE_P,
              channel_p=CHANNEL_P, only_label: int | None = None) -> pd.DataFrame:
        df = self.rows(n, rng, drift=drift, only_label=only_label)
        df["source"] = rng.choice(SOURCES, size=n, p=np.asarray(source_p) / np.sum(source_p))
        df["channel"] = rng.choice(CHANNELS, size=n, p=np.asarray(channel_p) / np.sum(channel_p))
        return df


class Fraud(Dataset):
    name = "fraud"

    def __init__(self):
        self.numeric = ["amount", "device_age_days", "distance_from_home_km", "account_age_days", "velocity_1h"]

    def rows(self, n, rng, *, drift=0.0, only_label=None):
        from aiir.demo import fraud_frame

        seed = int(rng.integers(0, 2 ** 31))
        if only_label is None:
            df = fraud_frame(n, seed, drift=drift)
        else:
            parts, got = [], 0
            while got < n:
                d = fraud_frame(max(4 * n, 20_000), seed + got + 1, drift=drift)
                d = d[d["is_fraud"] == only_label]
                parts.append(d)
                got += len(d)
            df = pd.concat(parts, ignore_index=True).head(n)
        df = df.drop(columns=["source", "batch"]).rename(columns={"is_fraud": "label"})
        return df.reset_index(drop=True)


class Resampled(Dataset):
    """Real rows resampled with a small jitter (3 % of each feature's std) to any size."""

    def __init__(self, name: str, base: pd.DataFrame):
        self.name = name
        self.base = base.reset_index(drop=True)
        self.numeric = [c for c in base.columns if c != "label"]
        self.std = base[self.numeric].std().to_numpy()

    def rows(self, n, rng, *, drift=0.0, only_label=None):
        pool = self.base if only_label is None else self.base[self.base["label"] == only_label]
        idx = rng.integers(0, len(pool), size=n)
        df = pool.iloc[idx].reset_index(drop=True).copy()
        x = df[self.numeric].to_numpy(dtype=float)
        x = x + rng.normal(0, 0.03, size=x.shape) * self.std + drift * self.std * 0.1
        df[self.numeric] = np.round(x, 4)
        return df


class Synth(Dataset):
    name = "synth"

    def __init__(self):
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=60_000, n_features=14, n_informative=6, n_redundant=2,
                                   weights=[0.96], class_sep=1.2, flip_y=0.0, random_state=7)
        self.x, self.y = x, y
        self.numeric = [f"x{i:02d}" for i in range(14)]

    def rows(self, n, rng, *, drift=0.0, only_label=None):
        pool = np.flatnonzero(self.y == only_label) if only_label is not None else np.arange(len(self.y))
        idx = rng.choice(pool, size=n, replace=True)
        x = self.x[idx] + rng.normal(0, 0.05, size=(n, self.x.shape[1])) + drift * 0.1
        df = pd.DataFrame(np.round(x, 5), columns=self.numeric)
        df["label"] = self.y[idx]
        return df

    def frame(self, n, rng, **kw):
        df = super().frame(n, rng, **kw)
        # feeds differ naturally (a feed-specific offset of x00), the same in every batch
        df["x00"] = df["x00"] + df["source"].map({"feed_a": 0.0, "feed_b": 0.3, "feed_c": -0.2, "feed_d": 0.5})
        return df


def datasets() -> dict[str, Dataset]:
    from sklearn.datasets import load_breast_cancer, load_diabetes

    bc = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    bc["label"] = 1 - bc["label"]  # malignant (37 %) as the positive class
    bc.columns = [c.replace(" ", "_") for c in bc.columns]
    db = load_diabetes(as_frame=True).frame
    db["label"] = (db["target"] >= db["target"].quantile(0.8)).astype(int)
    db = db.drop(columns=["target"])
    return {"fraud": Fraud(), "cancer": Resampled("cancer", bc), "diabetes": Resampled("diabetes", db),
            "synth": Synth()}


# ------------------------------------------------------------------------------------- scenarios

def scenario(ds: Dataset, kind: str, strength: float | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """(reference, current, attacked feed or None)."""
    rng = np.random.default_rng([seed, zlib.crc32(f'{ds.name}/{kind}/{strength}'.encode())])
    n_ref, n_cur = SIZES[ds.name]
    ref = ds.frame(n_ref, rng)
    target = str(rng.choice(SOURCES[:3]))  # the three larger feeds
    if kind == "plain":
        return ref, ds.frame(n_cur, rng), None
    if kind == "mild_drift":
        return ref, ds.frame(n_cur, rng, drift=0.5), None
    if kind == "volume":
        p = SOURCE_P.copy()
        p[list(SOURCES).index(target)] *= 2.5
        return ref, ds.frame(n_cur, rng, source_p=p), None
    if kind == "category_mix":
        return ref, ds.frame(n_cur, rng, channel_p=CHANNEL_P[::-1]), None
    if kind == "small_batch":
        return ref, ds.frame(400, rng), None
    if kind == "large_batch":
        return ref, ds.frame(4 * n_cur, rng), None
    cur = ds.frame(n_cur, rng)
    in_src = (cur["source"] == target).to_numpy()
    if kind == "flip_source":
        idx = np.flatnonzero(in_src & (cur["label"] == 1).to_numpy())
        chosen = rng.choice(idx, size=int(round(strength * idx.size)), replace=False)
        cur.loc[chosen, "label"] = 0
        return ref, cur, target
    if kind == "flip_spread":
        chosen = rng.choice(len(cur), size=int(round(strength * len(cur))), replace=False)
        cur.loc[chosen, "label"] = 1 - cur.loc[chosen, "label"]
        return ref, cur, None
    if kind == "shift_source":
        feat = str(rng.choice(ds.numeric))
        sd = float(ref[feat].std())
        cur[feat] = cur[feat].astype(float)
        cur.loc[in_src, feat] = cur.loc[in_src, feat] + strength * sd
        return ref, cur, target
    if kind == "backdoor":
        a, b = rng.choice(ds.numeric, size=2, replace=False)
        k = int(round(strength * len(cur)))
        idx = rng.choice(np.flatnonzero(in_src), size=min(k, int(in_src.sum())), replace=False)
        cur[a], cur[b] = cur[a].astype(float), cur[b].astype(float)
        va = float(np.round(ref[a].quantile(rng.uniform(0.2, 0.8)), 3))
        vb = float(np.round(ref[b].quantile(rng.uniform(0.2, 0.8)), 3))
        cur.loc[idx, a] = va
        cur.loc[idx, b] = vb
        cur.loc[idx, "label"] = int(rng.integers(0, 2))  # the attacker's class
        return ref, cur, target
    if kind == "near_dup":
        k = int(round(strength * len(cur)))
        templates = cur[in_src].sample(5, random_state=int(rng.integers(0, 2 ** 31)))
        rows = templates.iloc[rng.integers(0, 5, size=k)].reset_index(drop=True).copy()
        for c in ds.numeric[:2]:
            rows[c] = rows[c] * (1 + rng.uniform(-0.005, 0.005, size=k))
        rows["label"] = 0
        rows["source"] = target
        out = pd.concat([cur, rows], ignore_index=True)
        return ref, out.sample(frac=1.0, random_state=int(rng.integers(0, 2 ** 31))).reset_index(drop=True), target
    if kind == "flood":
        k = int(round(strength * len(cur)))
        rows = ds.frame(k, rng, only_label=1)
        rows["source"] = target
        out = pd.concat([cur, rows], ignore_index=True)
        return ref, out.sample(frac=1.0, random_state=int(rng.integers(0, 2 ** 31))).reset_index(drop=True), target
    raise ValueError(kind)


def run_one(ds: Dataset, kind: str, strength: float | None, seed: int, work: Path) -> dict:
    from aiir.detect import run_check

    ref, cur, target = scenario(ds, kind, strength, seed)
    t0 = time.perf_counter()
    r = run_check(ref, cur, work / f"{ds.name}-{kind}-{strength}-{seed}", label_column="label",
                  source_column="source", html=False)
    took = time.perf_counter() - t0
    return {"dataset": ds.name, "kind": kind, "strength": strength, "seed": seed, "poisoned": kind in POISON,
            "target": target, "status": r.status, "suspects": r.suspect_sources[:5],
            "named": bool(target and r.suspect_sources and r.suspect_sources[0] == target),
            "rejected": r.report["decision"]["rejected"][:8], "rows_ref": len(ref), "rows_cur": len(cur),
            # the smallest Holm-adjusted p-value: the batch is an incident at any alpha >= it (rules aside)
            "min_p_adjusted": min((x["p_adjusted"] for x in r.report["decision"]["tests"]), default=1.0),
            "first_source_test": next((x["source"] for x in r.report["decision"]["tests"] if x["source"]), None),
            "seconds": round(took, 2)}


# ------------------------------------------------------------------------------------------ report

def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for group in ("dev", "heldout"):
        rs = [r for r in rows if r["group"] == group]
        if not rs:
            continue
        per_kind = {}
        for kind in list(POISON):
            k = [r for r in rs if r["kind"] == kind]
            if not k:
                continue
            det = [r for r in k if r["status"] == "incident"]
            named_applicable = kind not in SPREAD
            per_kind[kind] = {"scenarios": len(k), "recall": len(det) / len(k),
                              "named": (sum(r["named"] for r in det) / len(det)) if det and named_applicable else None,
                              "named_of_all": (sum(r["named"] for r in k) / len(k)) if named_applicable else None,
                              "by_strength": {str(s): sum(r["status"] == "incident" for r in k if r["strength"] == s)
                                              / max(1, sum(1 for r in k if r["strength"] == s))
                                              for s in POISON[kind]},
                              "missed": [f"{r['dataset']}@{r['strength']}#{r['seed']}" for r in k
                                         if r["status"] != "incident"][:12]}
        clean = [r for r in rs if not r["poisoned"]]
        fp = [r for r in clean if r["status"] == "incident"]
        poisoned = [r for r in rs if r["poisoned"]]
        det = [r for r in poisoned if r["status"] == "incident"]
        nameable = [r for r in det if r["kind"] not in SPREAD]
        out[group] = {
            "per_kind": per_kind,
            "clean": {"scenarios": len(clean), "false_positive_rate": len(fp) / max(1, len(clean)),
                      "false_positives": [f"{r['dataset']}:{r['kind']}#{r['seed']} {r['rejected']}" for r in fp],
                      "by_kind": {k: sum(r["status"] == "incident" for r in clean if r["kind"] == k)
                                  / max(1, sum(1 for r in clean if r["kind"] == k)) for k in CLEAN}},
            "overall": {"recall": len(det) / max(1, len(poisoned)),
                        "named": sum(r["named"] for r in nameable) / max(1, len(nameable)),
                        "false_positive_rate": len(fp) / max(1, len(clean))},
            "seconds_per_check": float(np.median([r["seconds"] for r in rs])),
            "at_alpha": {str(a): {"recall": sum(r["min_p_adjusted"] <= a for r in poisoned) / max(1, len(poisoned)),
                                  "false_positive_rate": sum(r["min_p_adjusted"] <= a for r in clean)
                                  / max(1, len(clean))}
                         for a in (0.0001, 0.001, 0.01, 0.05) if all("min_p_adjusted" in r for r in rs)},
        }
    return out


def doc_section(summary: dict, meta: dict) -> str:
    lines = [HEADING, "",
             f"Run: {meta['at']} — machine: {meta['machine']}", "",
             f"`aiir check` (label and source columns given, no HTML) on generated scenarios over four datasets "
             f"(fraud: the demo generator; cancer and diabetes: scikit-learn's real rows resampled with 3 % jitter; "
             f"synth: `make_classification` with feeds that differ naturally). Per dataset and seed: "
             f"{len(CLEAN)} clean controls ({', '.join(CLEAN)}) and {len(POISON)} poisoning kinds at three "
             f"strengths each. Development seeds {meta['dev_seeds']} were used while building the detector; "
             f"held-out seeds {meta['heldout_seeds']} were not. Detected = status `incident`; named = the attacked "
             f"feed is first in `suspect_sources` (share of the detected cases; spread noise has no feed). "
             f"Decision: Holm at family-wise alpha {meta['alpha']} per batch. Wall time {meta['wall_s']:.0f} s "
             f"({meta['checks']} checks).", ""]
    for group, title in (("dev", "development seeds"), ("heldout", "held-out seeds")):
        s = summary.get(group)
        if not s:
            continue
        o = s["overall"]
        lines += [f"**{title}** — recall **{o['recall']:.1%}** (goal ≥ 95 %), false positives "
                  f"**{o['false_positive_rate']:.1%}** of {s['clean']['scenarios']} clean batches (goal ≤ 2 %), "
                  f"source named **{o['named']:.1%}** (goal ≥ 90 %); median {s['seconds_per_check']:.1f} s per check.", "",
                  "| kind | scenarios | recall | by strength | source named (of detected) | missed (dataset@strength#seed) |",
                  "|---|---|---|---|---|---|"]
        for kind, v in s["per_kind"].items():
            bs = " / ".join(f"{k}: {x:.0%}" for k, x in v["by_strength"].items())
            named = "n/a" if v["named"] is None else f"{v['named']:.0%}"
            lines.append(f"| {kind} | {v['scenarios']} | {v['recall']:.0%} | {bs} | {named} | "
                         f"{', '.join(v['missed'][:6]) or '—'} |")
        if s.get("at_alpha"):
            lines += ["", "Other family-wise levels, same runs (a batch is an incident at every alpha above its "
                      "smallest Holm-adjusted p-value):", "", "| alpha | recall | false positives |", "|---|---|---|"]
            lines += [f"| {a} | {v['recall']:.1%} | {v['false_positive_rate']:.1%} |" for a, v in s["at_alpha"].items()]
        c = s["clean"]
        lines += ["", "| clean control | false-positive rate |", "|---|---|"]
        lines += [f"| {k} | {v:.0%} |" for k, v in c["by_kind"].items()]
        if c["false_positives"]:
            lines += ["", "False positives: " + "; ".join(c["false_positives"][:10])]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="development seeds (default 0 1)")
    ap.add_argument("--heldout", type=int, nargs="*", default=None, help="held-out seeds (default 1000 1001)")
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--kinds", nargs="*", default=None)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    dev = [0, 1] if args.seeds is None else args.seeds
    held = [1000, 1001] if args.heldout is None else args.heldout
    all_ds = datasets()
    names = args.datasets or list(all_ds)
    kinds = args.kinds or (list(CLEAN) + list(POISON))
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aiir-bench-detect-") as tmp:
        work = Path(tmp)
        for group, seeds in (("dev", dev), ("heldout", held)):
            for seed in seeds:
                for name in names:
                    ds = all_ds[name]
                    for kind in kinds:
                        for strength in (POISON[kind] if kind in POISON else (None,)):
                            r = run_one(ds, kind, strength, seed, work)
                            r["group"] = group
                            rows.append(r)
                            flag = "ok" if (r["status"] == "incident") == r["poisoned"] else "XX"
                            print(f"{flag} {group:7s} {name:8s} {kind:13s} {strength!s:5s} #{seed}: {r['status']:9s} "
                                  f"suspects={r['suspects'][:3]} target={r['target']} rejected={r['rejected'][:4]} "
                                  f"{r['seconds']:.1f}s", flush=True)
    from aiir.detect.thresholds import load_thresholds

    summary = summarise(rows)
    meta = {"at": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}", "machine": machine(), "dev_seeds": dev,
            "heldout_seeds": held, "alpha": load_thresholds()["decision"]["alpha"],
            "wall_s": time.perf_counter() - t0, "checks": len(rows)}
    path = save_json(f"detection-{datetime.now(UTC):%Y%m%dT%H%M%SZ}", {"meta": meta, "summary": summary, "rows": rows})
    print(json.dumps({g: s["overall"] for g, s in summary.items()}, indent=2))
    print(f"results: {path}")
    if not args.no_doc and args.datasets is None and args.kinds is None:
        replace_section(doc_section(summary, meta))
        print("docs/benchmarks.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
