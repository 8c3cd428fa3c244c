"""LocalGatewayTarget: the DeploymentTarget contract over the gateway's admin API (a real process)."""

from __future__ import annotations

import json
import time

import pytest

from aiir.errors import BadInput, TargetError
from aiir.targets import ServingState, get_target
from aiir.targets.local import LocalGatewayTarget
from tests.gateway.gwkit import MODEL, ROWS, free_port, split


@pytest.fixture
def target(gw, monkeypatch) -> LocalGatewayTarget:
    """Built the way the playbook builds it: get_target('local', name) with aiir's own defaults."""
    monkeypatch.setenv("AIIR_GATEWAY_URL", gw.url)
    monkeypatch.setenv("AIIR_GATEWAY_DIR", gw.env["AIIR_GATEWAY_DIR"])
    t = get_target("local", MODEL)
    assert isinstance(t, LocalGatewayTarget) and t.url == gw.url and t.ref == f"local:{MODEL}"
    return t


def test_describe(target):
    s = target.describe()
    assert isinstance(s, ServingState)
    assert s.target == f"local:{MODEL}" and s.model == MODEL and s.mode == "serving"
    assert s.serving_versions == ["2"] and s.fallback_version == "1"


def test_contract_operations_are_idempotent_and_take_effect(target, gw):
    s = target.isolate(reason="incident 42")
    assert s.mode == "isolated" and s.serving_versions == ["1"] and s.reason == "incident 42"
    assert target.isolate(reason="incident 42").to_dict() == s.to_dict()
    assert gw.score(split(ROWS[:1])).headers["X-Model-Version"] == "1"

    s = target.block_clients(["evil"], reason="abuse")
    assert s.blocked_clients == ["evil"] and target.block_clients(["evil"]).blocked_clients == ["evil"]
    assert gw.score(split(ROWS[:1]), client="evil").status_code == 403
    s = target.block_clients(["chatty"], rate_limit_per_s=50)
    assert s.rate_limits == {"chatty": 50.0}

    s = target.isolate(quarantine=True, reason="worse")
    assert s.mode == "quarantined" and s.serving_versions == []
    assert gw.score(split(ROWS[:1])).status_code == 503

    s = target.restore(reason="contained and fixed")
    assert s.mode == "serving" and s.blocked_clients == [] and s.rate_limits == {}
    assert target.restore(reason="contained and fixed").to_dict() == s.to_dict()

    s = target.rollback("1", reason="serve last good")
    assert s.serving_versions == ["1"] and s.extra["primary_pinned"] is True
    assert target.rollback("1", reason="serve last good").to_dict() == s.to_dict()

    s = target.canary("3", 0.2, reason="try")
    assert [(r.version, r.share) for r in s.routes] == [("1", 0.8), ("3", 0.2)]
    s = target.canary("3", 0.0)
    assert s.serving_versions == ["1"]
    assert target.restore(follow_alias=True).serving_versions == ["2"]


def test_user_errors_are_bad_input(target):
    with pytest.raises(BadInput, match="no version '77'"):
        target.rollback("77")
    with pytest.raises(BadInput, match="between 0 and 1"):
        target.canary("3", 3.0)
    with pytest.raises(TargetError, match="primary version being isolated"):
        target.isolate(fallback_version="2")  # 409: a conflict with the current state


def test_snapshot_writes_state_audit_and_recent_decisions(target, gw, tmp_path):
    gw.score(split(ROWS), client="snap")
    target.isolate(reason="snapshot test")
    files = target.snapshot(tmp_path / "snap")
    names = sorted(p.name for p in files)
    assert names == ["admin-audit.jsonl", "decision-log-head.json", "decisions-recent.jsonl", "state.json"]
    state = json.loads((tmp_path / "snap" / "state.json").read_text())
    assert state["mode"] == "isolated" and state["model"] == MODEL
    audit = [json.loads(x) for x in (tmp_path / "snap" / "admin-audit.jsonl").read_text().splitlines()]
    assert any(e["action"] == "isolate" and e["reason"] == "snapshot test" for e in audit)
    dec = [json.loads(x) for x in (tmp_path / "snap" / "decisions-recent.jsonl").read_text().splitlines()]
    assert [d["client_id"] for d in dec[-4:]] == ["snap"] * 4
    head = json.loads((tmp_path / "snap" / "decision-log-head.json").read_text())
    assert head["head_seq"] >= 4 and len(head["head_hash"]) == 64
    again = target.snapshot(tmp_path / "snap")  # idempotent: same files, overwritten
    assert sorted(p.name for p in again) == names


def test_unreachable_gateway_is_a_clear_fast_error():
    url = f"http://127.0.0.1:{free_port()}"
    t = LocalGatewayTarget(MODEL, url=url, token="t" * 43)
    t0 = time.monotonic()
    with pytest.raises(TargetError) as ei:
        t.describe()
    assert url in str(ei.value) and "unreachable" in str(ei.value)
    assert time.monotonic() - t0 < 5


def test_wrong_token_and_missing_token(gw, tmp_path):
    with pytest.raises(TargetError, match="refused the admin token"):
        LocalGatewayTarget(MODEL, url=gw.url, token="not-the-token-" + "x" * 30).isolate()
    with pytest.raises(TargetError, match="cannot read the gateway admin token"):
        LocalGatewayTarget(MODEL, url=gw.url, state_dir=tmp_path / "nowhere").describe()
    assert gw.ok("/admin/state")["mode"] == "serving"


def test_a_target_for_another_model_cannot_contain_this_gateway(gw):
    t = LocalGatewayTarget("other-model", url=gw.url, token=gw.token)
    with pytest.raises(TargetError, match="serves model 'gw-test'"):
        t.isolate(quarantine=True)
    assert gw.ok("/admin/state")["mode"] == "serving"
