"""Fixtures for the detection tests: the generated fraud data, in memory and as files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tests.detect.detect_data import flip_labels, make_transactions


@pytest.fixture(scope="session")
def reference() -> pd.DataFrame:
    return make_transactions(40_000, seed=1)


@pytest.fixture(scope="session")
def clean_batch() -> pd.DataFrame:
    return make_transactions(15_000, seed=2, drift=0.3)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, reference, clean_batch) -> Path:
    """The fraud fixtures written once as files for the CLI tests."""
    d = tmp_path_factory.mktemp("fraud")
    reference.to_parquet(d / "reference.parquet", index=False)
    clean_batch.to_csv(d / "clean.csv", index=False)
    reference.head(8_000).to_csv(d / "small_reference.csv", index=False)
    clean_batch.head(3_000).to_parquet(d / "small_clean.parquet", index=False)
    flip_labels(clean_batch).to_parquet(d / "flipped.parquet", index=False)
    return d


@pytest.fixture(autouse=True)
def _no_env_thresholds(monkeypatch):
    monkeypatch.delenv("AIIR_THRESHOLDS", raising=False)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
