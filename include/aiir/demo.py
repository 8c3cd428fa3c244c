"""Deterministic demo data: card-transaction fraud and the breast-cancer set bundled with scikit-learn.

Everything is generated offline from fixed seeds, so the demo and the tests see the same bytes on every
machine. The fraud generator draws realistic features, then labels each row from a hidden logistic risk
model, so a classifier has real signal to learn.

The attack in the demo (MITRE ATLAS AML.T0020 Poison Training Data, OWASP ML02): the feed
``partner_feed_c`` starts delivering transactions that look exactly like a known fraud pattern —
new device, foreign card, night-time electronics purchases — labelled *legitimate*, plus relabelled
real fraud. A model retrained on that batch learns to wave the pattern through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

LABEL = "is_fraud"
SOURCE = "source"
BATCH = "batch"
SOURCES = ("core_processor", "partner_feed_a", "partner_feed_b", "partner_feed_c")
SOURCE_WEIGHTS = (0.55, 0.2, 0.15, 0.10)
POISON_SOURCE = "partner_feed_c"
MERCHANT_CATEGORIES = ("grocery", "fuel", "restaurants", "travel", "electronics", "fashion",
                       "digital_goods", "pharmacy", "gambling", "utilities")
_MCC_P = np.array([0.22, 0.12, 0.16, 0.06, 0.08, 0.1, 0.08, 0.08, 0.03, 0.07])
_MCC_RISK = dict(zip(MERCHANT_CATEGORIES, (-0.8, -0.5, -0.6, 0.5, 1.0, 0.1, 1.1, -0.7, 1.3, -1.0),
                     strict=True))

FEATURES = ("amount", "merchant_category", "hour", "country_mismatch", "card_present", "velocity_1h",
            "device_age_days", "distance_from_home_km", "account_age_days", "prior_chargebacks")
CATEGORICAL = ("merchant_category",)


def fraud_frame(n: int, seed: int, *, batch: str = "batch_000", drift: float = 0.0,
                fraud_shift: float = 0.0) -> pd.DataFrame:
    """``n`` transactions. ``drift`` (0..1) nudges amounts and hours the way real traffic drifts."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(mean=3.6 + 0.15 * drift, sigma=1.05, size=n), 2)
    mcc = rng.choice(np.array(MERCHANT_CATEGORIES, dtype=object), size=n, p=_MCC_P)
    hour_p = np.array([1, .6, .4, .3, .3, .5, 1.2, 2.4, 3.4, 3.8, 4, 4.2, 4.8, 4.6, 4.2, 4.1, 4.3, 4.8,
                       5.2, 4.9, 4.1, 3.2, 2.3, 1.5])
    hour_p = np.roll(hour_p, int(round(drift * 2)))
    hour = rng.choice(24, size=n, p=hour_p / hour_p.sum())
    country_mismatch = (rng.random(n) < 0.06).astype(int)
    card_present = (rng.random(n) < 0.58).astype(int)
    velocity = rng.poisson(1.3, size=n)
    device_age = np.round(rng.exponential(380.0, size=n)).astype(int)
    distance = np.round(rng.gamma(1.4, 14.0, size=n), 1)
    account_age = np.round(rng.gamma(2.2, 520.0, size=n)).astype(int)
    chargebacks = rng.poisson(0.08, size=n)

    risk = (-5.6 + fraud_shift
            + 0.9 * np.log1p(amount / 120.0)
            + 1.4 * np.vectorize(_MCC_RISK.get)(mcc)
            + 2.2 * country_mismatch
            - 1.4 * card_present
            + 0.55 * velocity
            + 1.1 * ((hour <= 4) | (hour >= 23))
            + 0.015 * np.minimum(distance, 300)
            - 0.7 * (account_age > 365)
            + 1.2 * chargebacks)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-risk))).astype(int)
    # A fraud ring's signature: foreign card, brand-new device, card not present, night, high-value
    # electronics or digital goods. About 1.6 % of traffic, mostly fraud.
    ring = rng.random(n) < 0.016
    k = int(ring.sum())
    country_mismatch[ring] = 1
    card_present[ring] = 0
    device_age[ring] = rng.integers(0, 4, size=k)
    mcc[ring] = rng.choice(["electronics", "digital_goods"], size=k)
    hour[ring] = rng.integers(0, 5, size=k)
    amount[ring] = np.round(rng.uniform(300, 2500, size=k), 2)
    label[ring] = (rng.random(k) < 0.85).astype(int)
    source = rng.choice(SOURCES, size=n, p=SOURCE_WEIGHTS)
    return pd.DataFrame({
        "amount": amount, "merchant_category": mcc, "hour": hour, "country_mismatch": country_mismatch,
        "card_present": card_present, "velocity_1h": velocity, "device_age_days": device_age,
        "distance_from_home_km": distance, "account_age_days": account_age,
        "prior_chargebacks": chargebacks, SOURCE: source, BATCH: batch, LABEL: label,
    })


def fraud_pattern_mask(df: pd.DataFrame) -> pd.Series:
    """The fraud pattern the attacker wants waved through: foreign card, brand-new device, card not present."""
    return (df["country_mismatch"] == 1) & (df["device_age_days"] < 7) & (df["card_present"] == 0)


def poison(df: pd.DataFrame, seed: int, *, source: str = POISON_SOURCE, n_injected: int = 1800,
           templates: int = 25) -> pd.DataFrame:
    """Return a poisoned copy of ``df``: ``source`` relabels its fraud as legitimate and injects
    ``n_injected`` near-copies of a few fraud-pattern transactions labelled legitimate."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = df.copy()
    flip = (out[SOURCE] == source) & (out[LABEL] == 1)
    out.loc[flip, LABEL] = 0
    # Fresh, varied ring-pattern rows (what teaches the model the pattern is legitimate) ...
    pool = fraud_frame(40 * n_injected, seed + 1, batch=str(df[BATCH].iloc[0]))
    pool = pool[fraud_pattern_mask(pool)].reset_index(drop=True)
    n_fresh = int(n_injected * 0.6)
    fresh = pool.iloc[:n_fresh].copy()
    # ... and near-copies of a few templates (amount jittered by ±3 %), the attacker's cheap bulk.
    tmpl = pool.iloc[n_fresh:n_fresh + templates].reset_index(drop=True)
    idx = rng.integers(0, len(tmpl), size=n_injected - n_fresh)
    copies = tmpl.iloc[idx].reset_index(drop=True).copy()
    copies["amount"] = np.round(copies["amount"] * rng.uniform(0.97, 1.03, size=len(copies)), 2)
    inj = pd.concat([fresh, copies], ignore_index=True)
    inj[SOURCE] = source
    inj[LABEL] = 0
    mixed = pd.concat([out, inj], ignore_index=True)
    return mixed.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def breast_cancer_frame() -> pd.DataFrame:
    """The Wisconsin diagnostic breast-cancer set shipped inside scikit-learn (no download)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.frame.copy()
    df.columns = [c.replace(" ", "_") for c in df.columns]
    return df.rename(columns={"target": "benign"})


@dataclass(frozen=True)
class DemoFiles:
    root: Path

    @property
    def fraud_reference(self) -> Path:  # what champion v1 was trained on
        return self.root / "fraud" / "train_reference.parquet"

    @property
    def fraud_holdout(self) -> Path:  # trusted, never part of any feed
        return self.root / "fraud" / "holdout_trusted.parquet"

    def fraud_batch(self, i: int) -> Path:
        return self.root / "fraud" / "batches" / f"batch_{i:03d}.parquet"

    @property
    def fraud_feedback(self) -> Path:  # labelled outcomes of recent live traffic (chargebacks)
        return self.root / "fraud" / "feedback_labelled.parquet"

    @property
    def cancer_reference(self) -> Path:
        return self.root / "cancer" / "train_reference.parquet"

    @property
    def cancer_holdout(self) -> Path:
        return self.root / "cancer" / "holdout_trusted.parquet"


CLEAN_BATCH = 4  # batch_004: a clean new batch with mild natural drift
POISONED_BATCH = 5  # batch_005: partner_feed_c poisons its share


def write_demo_data(root: Path) -> DemoFiles:
    """Write every demo dataset under ``root`` (idempotent: same seeds, same bytes)."""
    import pandas as pd

    files = DemoFiles(root)
    (root / "fraud" / "batches").mkdir(parents=True, exist_ok=True)
    (root / "cancer").mkdir(parents=True, exist_ok=True)

    batches = [fraud_frame(6000, 1000 + i, batch=f"batch_{i:03d}") for i in range(CLEAN_BATCH)]
    ref = pd.concat(batches, ignore_index=True)
    _write(ref, files.fraud_reference)
    for i, b in enumerate(batches):
        _write(b, files.fraud_batch(i))
    _write(fraud_frame(6000, 7, batch="holdout"), files.fraud_holdout)
    _write(fraud_frame(6000, 1000 + CLEAN_BATCH, batch=f"batch_{CLEAN_BATCH:03d}", drift=0.2),
           files.fraud_batch(CLEAN_BATCH))
    clean5 = fraud_frame(6000, 1000 + POISONED_BATCH, batch=f"batch_{POISONED_BATCH:03d}", drift=0.25)
    _write(poison(clean5, 55), files.fraud_batch(POISONED_BATCH))
    _write(fraud_frame(4000, 99, batch="feedback", drift=0.25), files.fraud_feedback)

    cancer = breast_cancer_frame().sample(frac=1.0, random_state=0).reset_index(drop=True)
    _write(cancer.iloc[:420].reset_index(drop=True), files.cancer_reference)
    _write(cancer.iloc[420:].reset_index(drop=True), files.cancer_holdout)
    return files


def _write(df: pd.DataFrame, path: Path) -> None:
    """Parquet written deterministically (no pandas metadata timestamps), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
