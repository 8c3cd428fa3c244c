"""Thresholds: built-in defaults, override files, the AIIR_THRESHOLDS variable, and rejected overrides."""

from __future__ import annotations

import pytest

from aiir.detect.thresholds import load_thresholds, max_severity, severity_rank
from aiir.errors import BadInput


def test_defaults_are_evidently_defaults():
    t = load_thresholds()
    d = t["drift"]
    assert (d["small_sample_rows"], d["ks_pvalue"], d["chi2_pvalue"], d["wasserstein"], d["jensenshannon"]) == \
        (1000, 0.05, 0.05, 0.1, 0.1)
    assert t["incident"]["open_incident_at"] == "high"


def test_override_file_merges_and_env_is_used(tmp_path, monkeypatch):
    f = tmp_path / "t.toml"
    f.write_text('[incident]\nopen_incident_at = "critical"\n[drift]\nwasserstein = 0.2\n')
    t = load_thresholds(f)
    assert t["incident"]["open_incident_at"] == "critical" and t["drift"]["wasserstein"] == 0.2
    assert t["drift"]["jensenshannon"] == 0.1  # untouched keys keep their defaults
    monkeypatch.setenv("AIIR_THRESHOLDS", str(f))
    assert load_thresholds()["drift"]["wasserstein"] == 0.2
    assert load_thresholds({"drift": {"wasserstein": 0.3}})["drift"]["wasserstein"] == 0.3  # argument wins


@pytest.mark.parametrize("text,needle", [
    ("[drift]\nwaserstein = 0.2\n", "unknown key 'waserstein' in [drift]"),
    ("[nope]\nx = 1\n", "unknown thresholds table [nope]"),
    ('[drift]\nwasserstein = "high"\n', "[drift] wasserstein must be float"),
    ('[incident]\nopen_incident_at = "severe"\n', "open_incident_at must be one of"),
    ("[drift\n", "not valid TOML"),
    ("[label_shift]\nhigh_ratio = 9.0\n", "medium_ratio <= high_ratio <= critical_ratio"),
])
def test_bad_overrides_are_rejected_naming_the_file(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(BadInput) as err:
        load_thresholds(f)
    assert str(f) in str(err.value) and needle in str(err.value)


def test_severity_order():
    assert max_severity(["low", "critical", "medium"]) == "critical"
    assert max_severity([]) is None
    assert severity_rank("high") > severity_rank("medium") > severity_rank("low") > severity_rank(None)
