"""The recovery canary on live traffic (aiir.recovery.canary) against a real gateway: a candidate that
behaves like last-known-good is kept for promotion; one whose live scores differ (v3 of the synthetic model
is trained on inverted labels) is rolled back by itself, with the reason recorded."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from aiir.errors import BadInput
from tests.gateway.gwkit import FEATURES, MODEL, split


def _traffic(gw, stop: threading.Event):
    rng = np.random.default_rng(7)
    while not stop.is_set():
        rows = rng.normal(size=(20, len(FEATURES))).round(3).tolist()
        gw.score(split(rows), client="c-live")


def _conf(gw_env, tmp_path, candidate: str, incident: str) -> dict:
    import os

    from aiir import recovery

    os.environ["AIIR_HOME"] = gw_env["AIIR_HOME"]
    q = tmp_path / "quarantine.json"
    q.write_text("{}")
    conf = recovery.validate_conf({"model_name": MODEL, "incident_id": incident, "replaced_version": "2",
                                   "baseline_version": "1", "quarantine_file": str(q), "target_name": MODEL,
                                   "canary_share": 0.5, "canary_window_s": 60, "canary_min_decisions": 150})
    (recovery.workdir(conf) / "candidate.json").write_text(json.dumps({"version": candidate}))
    return conf


@pytest.fixture
def live(gw):
    gw.ok("/admin/rollback", {"version": "1", "reason": "canary test: v1 serves"})
    stop = threading.Event()
    t = threading.Thread(target=_traffic, args=(gw, stop), daemon=True)
    t.start()
    yield gw
    stop.set()
    t.join(10)


def _target(gw):
    from aiir.targets.local import LocalGatewayTarget

    return LocalGatewayTarget(MODEL, url=gw.url, state_dir=gw.state_dir)


def test_similar_candidate_is_kept(live, gw_env, tmp_path):
    from aiir import recovery

    conf = _conf(gw_env, tmp_path, "2", "INC-canary-ok")
    res = recovery.canary(conf, target=_target(live))
    assert res["decision"] == "promote", res
    assert res["candidate_decisions"] >= 150 and res["baseline_decisions"] >= 150
    assert recovery.canary(conf, target=_target(live)) == res  # idempotent: judged once


def test_diverging_candidate_is_rolled_back_with_the_reason(live, gw_env, tmp_path):
    from aiir import recovery

    conf = _conf(gw_env, tmp_path, "3", "INC-canary-bad")
    with pytest.raises(BadInput, match="differs"):
        recovery.canary(conf, target=_target(live))
    rec = json.loads((recovery.workdir(conf) / "canary.json").read_text())
    assert rec["decision"] == "rollback" and rec["ks_statistic"] > recovery.CANARY_MAX_KS
    st = _target(live).describe()
    assert st.serving_versions == ["1"] and not any(r.version == "3" and r.share > 0 for r in st.routes)
