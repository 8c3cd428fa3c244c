"""The gateway as a real process over HTTP: scoring formats, decision log, containment, auth, bad input."""

from __future__ import annotations

import json
import uuid

import pytest

from aiir.gateway.decision_log import DecisionLog
from tests.gateway.gwkit import FEATURES, MODEL, ROWS, split


def test_ping(gw):
    r = gw.http.get("/ping")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": MODEL, "mode": "serving", "serving_version": "2",
                        "identity": "header", "identity_trusting": True}


def test_native_thread_pools_are_one_thread(gw):
    """The served model's native pools (OpenMP, BLAS) run one thread: a HistGradientBoosting pipeline starting
    its OpenMP team per request answered single rows ~6x slower on 2 busy cores (docs/gateway.md)."""
    pools = gw.ok("/admin/state")["extra"]["native_threads"]
    assert pools and set(pools.values()) == {1}, pools


def test_the_startup_heap_is_out_of_the_collectors_generations(gw):
    """`aiir serve` freezes what it loaded before serving (libraries, the model: gc.freeze), so the full
    collections that serving triggers do not traverse it; what requests create is still collected."""
    before = gw.ok("/admin/state")["extra"]["gc"]
    assert before["frozen_at_start"] > 50_000, before  # sklearn, pandas, mlflow's client and the model
    for _ in range(30):
        assert gw.http.post("/invocations", json=split(ROWS)).status_code == 200
    after = gw.ok("/admin/state")["extra"]["gc"]
    # frozen once, at start: never more (frozen objects still go when their last reference does)
    assert 50_000 < after["frozen_at_start"] <= before["frozen_at_start"], (before, after)
    # the collector still runs (when it runs depends on what requests leave allocated: not asserted here)
    assert after["enabled"] is True and len(after["collections"]) == 3, after
    assert all(a >= b for a, b in zip(after["collections"], before["collections"], strict=True)), (before, after)


@pytest.mark.parametrize("fmt", ["split", "split_no_columns", "records", "inputs_records", "inputs_columns",
                                 "instances", "csv_header", "csv_sagemaker"])
def test_scoring_formats(gw, fmt):
    recs = [dict(zip(FEATURES, r, strict=True)) for r in ROWS]
    body, ctype = {
        "split": (split(ROWS), "application/json"),
        "split_no_columns": ({"dataframe_split": {"data": ROWS}}, "application/json"),
        "records": ({"dataframe_records": recs}, "application/json"),
        "inputs_records": ({"inputs": recs}, "application/json"),
        "inputs_columns": ({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(FEATURES)}},
                           "application/json"),
        "instances": ({"instances": ROWS}, "application/json"),
        "csv_header": (",".join(FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS), "text/csv"),
        "csv_sagemaker": ("\n".join(",".join(map(str, r)) for r in ROWS), "text/csv"),
    }[fmt]
    r = gw.score(body, ctype=ctype, client=f"fmt-{fmt}")
    assert r.status_code == 200, r.text
    d = r.json()
    assert set(d) == {"predictions", "scores", "decision_ids", "model", "model_version"}
    assert d["model"] == MODEL and d["model_version"] == "2" and r.headers["X-Model-Version"] == "2"
    assert len(d["predictions"]) == len(d["scores"]) == len(d["decision_ids"]) == 4
    assert all(p in (0, 1) for p in d["predictions"]) and all(0 <= s <= 1 for s in d["scores"])
    assert all((s >= 0.5) == (p == 1) for p, s in zip(d["predictions"], d["scores"], strict=True))
    assert len(set(d["decision_ids"])) == 4 and all(uuid.UUID(x) for x in d["decision_ids"])
    # every format scores the same rows the same way
    ref = gw.score(split(ROWS)).json()
    assert d["predictions"] == ref["predictions"] and d["scores"] == pytest.approx(ref["scores"])


def test_scores_are_the_models_predict_proba(gw, mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["tracking_uri"])
    import mlflow

    mlflow.set_tracking_uri(mlflow_store["tracking_uri"])  # an earlier test may have set other ones
    mlflow.set_registry_uri(mlflow_store["tracking_uri"])
    import pandas as pd

    m = mlflow.sklearn.load_model(f"models:/{MODEL}/2")
    want = m.predict_proba(pd.DataFrame(ROWS, columns=FEATURES))[:, 1]
    got = gw.score(split(ROWS)).json()
    assert got["scores"] == pytest.approx(list(want), abs=1e-12)
    assert got["predictions"] == m.predict(pd.DataFrame(ROWS, columns=FEATURES)).tolist()


def test_every_decision_is_logged_with_digest_and_request_id(gw, mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store["tracking_uri"])
    import mlflow

    mlflow.set_tracking_uri(mlflow_store["tracking_uri"])  # an earlier test may have set other ones
    mlflow.set_registry_uri(mlflow_store["tracking_uri"])

    from aiir.hashing import tree_digest

    client = f"log-{uuid.uuid4().hex[:8]}"
    sent = {}
    for i, row in enumerate(ROWS):
        rid = f"req-{client}-{i}"
        r = gw.score(split([row]), client=client, headers={"X-Request-Id": rid})
        assert r.status_code == 200 and r.headers["X-Request-Id"] == rid
        sent[r.json()["decision_ids"][0]] = (rid, row, r.json())
    head = gw.flush()["head"]
    log = DecisionLog(gw.log_path)
    rows = log.query(client=client)
    assert len(rows) == len(ROWS)
    digest = tree_digest(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/2"))
    for row in rows:
        rid, feats, resp = sent[row["decision_id"]]
        assert row["request_id"] == rid
        assert row["features"] == dict(zip(FEATURES, feats, strict=True))
        assert row["prediction"] == resp["predictions"][0] and row["score"] == resp["scores"][0]
        assert row["model"] == MODEL and row["model_version"] == "2"
        assert row["artifact_digest"] == digest
        assert row["latency_ms"] > 0 and row["source"] == "gateway"
        assert row["ts"].endswith("Z") and len(row["ts"]) == 27
    assert log.count_by_client(version="2")[client] == len(ROWS)
    rep = log.verify_chain(expected_head=log.head()["head_hash"])
    assert rep.ok and rep.rows >= head["rows"]


def test_isolate_routes_to_fallback_and_restore_returns(gw):
    s = gw.ok("/admin/isolate", {"reason": "suspected poisoning"})
    assert s["mode"] == "isolated" and s["routes"] == [{"version": "1", "share": 1.0}]
    r = gw.score(split(ROWS[:1]), client="iso")
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "1" and r.json()["model_version"] == "1"
    assert gw.ok("/admin/isolate", {"reason": "suspected poisoning"}) == s  # idempotent
    s = gw.ok("/admin/isolate", {"fallback_version": "3", "reason": "v1 also suspect"})
    assert gw.score(split(ROWS[:1])).headers["X-Model-Version"] == "3"
    s = gw.ok("/admin/restore", {"reason": "cleared"})
    assert s["mode"] == "serving" and gw.score(split(ROWS[:1])).headers["X-Model-Version"] == "2"
    gw.flush()
    versions = {r["model_version"] for r in DecisionLog(gw.log_path).query(client="iso")}
    assert versions == {"1"}


def test_quarantine_refuses_everything_with_503(gw):
    s = gw.ok("/admin/isolate", {"quarantine": True, "reason": "stop the bleeding"})
    assert s["mode"] == "quarantined" and s["routes"] == []
    for c in ("a", "b", None):
        r = gw.score(split(ROWS[:1]), client=c)
        assert r.status_code == 503
        assert r.json()["error"] == "model_quarantined" and r.json()["reason"] == "stop the bleeding"
        assert "quarantined" in r.json()["message"]
    assert gw.http.get("/ping").json()["mode"] == "quarantined"
    gw.ok("/admin/restore", {})
    assert gw.score(split(ROWS[:1])).status_code == 200


def test_block_and_rate_limit_clients(gw):
    gw.ok("/admin/block", {"clients": ["evil"], "reason": "scraping"})
    r = gw.score(split(ROWS[:1]), client="evil")
    assert r.status_code == 403 and r.json()["error"] == "client_blocked" and "evil" in r.json()["message"]
    assert gw.score(split(ROWS[:1]), client="good").status_code == 200
    s = gw.ok("/admin/block", {"clients": ["noisy"], "rate_limit_per_s": 2})
    assert s["rate_limits"] == {"noisy": 2.0} and s["blocked_clients"] == ["evil"]
    codes = [gw.score(split(ROWS[:1]), client="noisy").status_code for _ in range(8)]
    assert codes[:2] == [200, 200] and 429 in codes
    r = gw.score(split(ROWS[:1]), client="noisy")
    if r.status_code == 429:
        assert r.json()["error"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert gw.score(split(ROWS[:1]), client="good").status_code == 200
    gw.ok("/admin/restore", {})
    assert gw.score(split(ROWS[:1]), client="evil").status_code == 200


def test_rollback_and_canary(gw):
    s = gw.ok("/admin/rollback", {"version": "3", "reason": "roll back"})
    assert s["routes"] == [{"version": "3", "share": 1.0}] and s["extra"]["primary_pinned"] is True
    assert {gw.score(split(ROWS[:1])).headers["X-Model-Version"] for _ in range(5)} == {"3"}
    gw.ok("/admin/restore", {"follow_alias": True})
    s = gw.ok("/admin/canary", {"version": "1", "share": 0.3, "reason": "canary v1"})
    assert s["routes"] == [{"version": "2", "share": 0.7}, {"version": "1", "share": 0.3}]
    vs = [gw.score(split(ROWS[:1])).headers["X-Model-Version"] for _ in range(100)]
    assert 25 <= vs.count("1") <= 35 and vs.count("1") + vs.count("2") == 100
    gw.ok("/admin/canary", {"version": "1", "share": 0})
    assert {gw.score(split(ROWS[:1])).headers["X-Model-Version"] for _ in range(5)} == {"2"}


@pytest.mark.parametrize("path", ["/admin/state", "/admin/isolate", "/admin/decisions", "/admin/audit"])
def test_admin_requires_the_token(gw, path):
    method = "GET" if path in ("/admin/state", "/admin/decisions", "/admin/audit") else "POST"
    r = gw.http.request(method, path, json={} if method == "POST" else None)
    assert r.status_code == 401 and "missing admin token" in r.json()["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = gw.admin(path, {} if method == "POST" else None, token="wrong-token-" + "x" * 30, method=method)
    assert r.status_code == 401 and r.json()["message"] == "invalid admin token"
    r = gw.http.request(method, path, json={} if method == "POST" else None,
                        headers={"Authorization": f"Basic {gw.token}"})
    assert r.status_code == 401
    assert gw.ok("/admin/state")["mode"] == "serving"  # nothing happened
    audit = gw.ok("/admin/audit")["entries"]
    assert any(e["action"] == "auth_refused" and e["params"]["path"] == path for e in audit)


def test_admin_refuses_a_call_meant_for_another_model(gw):
    r = gw.http.post("/admin/isolate", json={}, headers={"Authorization": f"Bearer {gw.token}",
                                                          "X-Aiir-Model": "other-model"})
    assert r.status_code == 409 and "serves model 'gw-test'" in r.json()["message"]
    assert gw.ok("/admin/state")["mode"] == "serving"


@pytest.mark.parametrize("path,body,status,words", [
    ("/admin/isolate", {"fallback_version": "99"}, 404, "no version '99'"),
    ("/admin/isolate", {"fallback_version": "2"}, 409, "primary version being isolated"),
    ("/admin/isolate", {"quarantine": "yes"}, 400, "true or false"),
    ("/admin/isolate", {"fallback": "1"}, 400, "unknown field(s): fallback"),
    ("/admin/block", {"clients": []}, 400, "non-empty list"),
    ("/admin/block", {"clients": ["x"], "rate_limit_per_s": 0}, 400, "must be > 0"),
    ("/admin/rollback", {}, 400, "'version' is required"),
    ("/admin/canary", {"version": "3", "share": 1.5}, 400, "between 0 and 1"),
    ("/admin/canary", {"version": "3"}, 400, "'share' is required"),
    ("/admin/restore", {"reason": 7}, 400, "'reason' must be a string"),
])
def test_admin_validation(gw, path, body, status, words):
    r = gw.admin(path, body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    assert gw.ok("/admin/state")["mode"] == "serving"


def test_admin_body_not_json(gw):
    r = gw.http.post("/admin/isolate", content=b"{nope", headers={"Authorization": f"Bearer {gw.token}"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]


BAD = [
    (b"{not json", "application/json", 400, "bad_json"),
    (b"", "application/json", 400, "empty_body"),
    (json.dumps({"dataframe_split": {"columns": FEATURES[:-1], "data": [ROWS[0][:-1]]}}), "application/json",
     400, "missing_columns"),
    (json.dumps(split([ROWS[0] + [1.0]], FEATURES + ["is_fraud"])), "application/json", 400,
     "unexpected_columns"),
    (json.dumps(split([["12"] + ROWS[0][1:]])), "application/json", 400, "bad_type"),
    (json.dumps({"dataframe_records": [{"amount": None}]}), "application/json", 400, "missing_columns"),
    (json.dumps({"foo": 1}), "application/json", 400, "bad_format"),
    (b"a,b\n1,2", "text/csv", 400, "unexpected_columns"),
    (b"<xml/>", "application/xml", 415, "unsupported_media_type"),
    (json.dumps({"inputs": ROWS * 3000}), "application/json", 413, "too_many_rows"),
    (b'{"inputs": [[' + b"9" * 5000 + b", 1, 2, 3, 4, 5]]}", "application/json", 400, "bad_json"),
    (b'{"inputs": [[1e400, 1, 2, 3, 4, 5]]}', "application/json", 400, "bad_type"),
    (b'{"inputs": [[' + b"[" * 50_000 + b"]" * 50_000 + b"]]}", "application/json", 400, "bad_json"),
    (b"\xff\xfe\x00garbage", "text/csv", 400, "bad_csv"),
]


def test_bad_requests_get_4xx_and_change_nothing(gw):
    log = DecisionLog(gw.log_path)
    before = gw.flush()["head"]["rows"]
    for body, ctype, status, code in BAD:
        r = gw.score(body, ctype=ctype, client="fuzzer")
        assert r.status_code == status, (code, r.text)
        assert r.json()["error"] == code and r.json()["message"] and r.json()["request_id"]
    r = gw.score(split(ROWS[:1]), client="x" * 200)
    assert r.status_code == 400 and r.json()["error"] == "bad_client_id"
    # oversized: refused from Content-Length, and when streamed without one
    big = b'{"inputs": [' + b"1," * (5 * 1024 * 1024) + b"1]}"
    r = gw.score(big, client="fuzzer")
    assert r.status_code == 413 and "limit" in r.json()["message"]

    def chunks():
        for _ in range(40):
            yield b" " * (256 * 1024)
    r = gw.http.post("/invocations", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    # still alive, still scoring, nothing logged for refused requests, chain intact
    assert gw.http.get("/ping").status_code == 200
    assert gw.score(split(ROWS[:1]), client="after-fuzz").status_code == 200
    assert gw.flush()["head"]["rows"] == before + 1
    assert log.count(client="fuzzer") == 0
    assert log.verify_chain().ok
    stats = gw.ok("/admin/state")["extra"]["stats"]
    assert stats["bad_requests"] >= len(BAD) and stats.get("internal_errors", 0) == 0


def test_unknown_routes_and_methods_are_json(gw):
    r = gw.http.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = gw.http.get("/invocations")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_admin_decisions_and_audit(gw):
    gw.score(split(ROWS[:2]), client="recent")
    d = gw.ok("/admin/decisions?limit=2&client=recent")
    assert len(d["decisions"]) == 2 and d["decisions"][0]["seq"] < d["decisions"][1]["seq"]
    assert d["head"]["rows"] >= 2
    assert gw.admin("/admin/decisions?limit=abc").status_code == 400
    assert gw.admin("/admin/decisions?since=whenever").status_code == 400
    gw.ok("/admin/isolate", {"reason": "audit me"})
    e = gw.ok("/admin/audit?limit=3")["entries"]
    last = [x for x in e if x["action"] == "isolate"][-1]
    assert last["reason"] == "audit me" and last["changed"] is True
    assert last["actor"]["token"].startswith("sha256:") and last["actor"]["remote"] == "127.0.0.1"
    assert gw.token not in json.dumps(e)
    assert len(last["hash"]) == 64 and len(last["prev_hash"]) == 64
