"""Deterministic card-transaction data for the detection tests (numpy generators, no files shipped).

A uniquely named module (not ``conftest``) so tests can import it whatever other conftest files exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
AIIR = REPO / ".venv" / "bin" / "aiir"
if not AIIR.exists():  # a venv elsewhere: the console script next to the running interpreter
    AIIR = Path(sys.executable).with_name("aiir")

SOURCES = np.array(["bank_core", "partner_feed_a", "partner_feed_b", "partner_feed_c"], dtype=object)
SOURCE_P = np.array([0.40, 0.25, 0.20, 0.15])
MERCHANTS = np.array(["grocery", "fuel", "restaurants", "travel", "electronics", "fashion", "gaming",
                      "pharmacy", "utilities", "crypto"], dtype=object)
MERCHANT_P = np.array([0.22, 0.14, 0.16, 0.07, 0.08, 0.11, 0.06, 0.07, 0.07, 0.02])
MERCHANT_RISK = np.array([-0.6, -0.3, -0.4, 0.5, 0.9, 0.1, 0.8, -0.5, -0.8, 1.6])
INTERCEPT = -4.4  # gives ~2 % fraud


def make_transactions(n: int, seed: int, drift: float = 0.0) -> pd.DataFrame:
    """Card transactions with a ~2 % ``is_fraud`` label and a ``source`` feed column.

    ``drift`` (0..1) applies mild natural drift: larger amounts, more velocity, a shifted merchant mix.
    """
    rng = np.random.default_rng(seed)
    src_p = SOURCE_P + drift * np.array([-0.03, 0.01, 0.01, 0.01])
    source = rng.choice(SOURCES, size=n, p=src_p / src_p.sum())
    mp = MERCHANT_P * (1 + drift * np.linspace(-0.3, 0.3, MERCHANT_P.size))
    merchant_idx = rng.choice(MERCHANTS.size, size=n, p=mp / mp.sum())
    amount = np.round(rng.lognormal(3.6 + 0.08 * drift, 1.05, size=n), 2)
    hour_p = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.5, 4, 4.2, 4.5,
                       5, 4.8, 4.5, 4.4, 4.6, 5.2, 5.5, 5, 4, 3, 2.2, 1.5])
    hour = rng.choice(24, size=n, p=hour_p / hour_p.sum())
    country_mismatch = (rng.random(n) < 0.06).astype(np.int64)
    velocity_1h = rng.poisson(1.4 * (1 + 0.1 * drift), size=n)
    device_age_days = np.round(rng.exponential(240, size=n), 1)
    account_age_days = rng.gamma(2.0, 500, size=n).astype(np.int64)
    card_present = (rng.random(n) < 0.55).astype(np.int64)
    distance_km = np.round(rng.lognormal(2.0, 1.2, size=n), 2)
    night = ((hour <= 4) | (hour >= 23)).astype(float)
    feed_bias = np.select([source == "partner_feed_a", source == "partner_feed_b"], [0.15, -0.1], 0.0)
    logit = (INTERCEPT + 0.55 * (np.log(amount) - 3.6) + 2.2 * country_mismatch + 0.45 * velocity_1h
             - 0.004 * device_age_days - 0.0004 * account_age_days + 1.0 * night - 0.9 * card_present
             + 0.25 * np.log1p(distance_km) + MERCHANT_RISK[merchant_idx] + feed_bias)
    is_fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({
        "transaction_id": [f"t{seed}-{i:07d}" for i in range(n)],
        "source": source,
        "amount": amount,
        "merchant_category": MERCHANTS[merchant_idx],
        "hour": hour.astype(np.int64),
        "country_mismatch": country_mismatch,
        "velocity_1h": velocity_1h.astype(np.int64),
        "device_age_days": device_age_days,
        "account_age_days": account_age_days,
        "card_present": card_present,
        "distance_km": distance_km,
        "is_fraud": is_fraud,
    })


def flip_labels(df: pd.DataFrame, source: str = "partner_feed_c", share: float = 0.8, seed: int = 7) -> pd.DataFrame:
    """Label flipping: ``share`` of the fraud rows of ``source`` relabelled 0 (the most fraud-looking first)."""
    out = df.copy()
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero((out["source"] == source).to_numpy() & (out["is_fraud"] == 1).to_numpy())
    score = (out["country_mismatch"].to_numpy()[idx] * 2 + out["velocity_1h"].to_numpy()[idx] * 0.5
             + rng.random(idx.size))
    chosen = idx[np.argsort(-score)[: int(round(share * idx.size))]]
    out.loc[out.index[chosen], "is_fraud"] = 0
    return out


def inject_near_copies(df: pd.DataFrame, source: str = "partner_feed_c", n_seeds: int = 6, copies: int = 70,
                       seed: int = 11) -> pd.DataFrame:
    """Duplicate injection: ``copies`` near-copies of ``n_seeds`` fraud-looking rows of ``source`` labelled 0.

    Amount and distance get a +-0.3 % jitter (rounded to cents), ids are new: an exact-duplicate check on
    all columns would see nothing.
    """
    rng = np.random.default_rng(seed)
    pool = df[(df["source"] == source)].sort_values(["country_mismatch", "velocity_1h"], ascending=False)
    seeds = pool.head(n_seeds)
    rows = seeds.loc[seeds.index.repeat(copies)].copy()
    rows["amount"] = np.round(rows["amount"] * (1 + rng.uniform(-0.003, 0.003, len(rows))), 2)
    rows["distance_km"] = np.round(rows["distance_km"] * (1 + rng.uniform(-0.003, 0.003, len(rows))), 2)
    rows["is_fraud"] = 0
    rows["transaction_id"] = [f"inj-{i:06d}" for i in range(len(rows))]
    out = pd.concat([df, rows], ignore_index=True)
    return out.sample(frac=1.0, random_state=seed).reset_index(drop=True)
