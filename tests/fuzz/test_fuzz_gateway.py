"""Fuzzing the gateway over real HTTP (a real `aiir serve` process): malformed scoring requests and admin
calls are each answered by a 4xx with a JSON error naming the problem — never a 5xx, never a dropped
connection — and nothing is lost: every decision the gateway answered is in the decision log, whose
chain and the admin audit chain still verify, and the server keeps serving."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from aiir.gateway.decision_log import DecisionLog
from aiir.gateway.state import verify_audit
from tests.fuzz._budget import MIN_PER_AREA, count, fuzz_settings, timed, total
from tests.gateway.gwkit import FEATURES, ROWS, split

REQ = "gateway request parsing"
ADMIN = "admin API"

scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                      st.dictionaries(st.text(max_size=10), c, max_size=4)),
                          max_leaves=12)
row = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5),
                         st.none()), min_size=0, max_size=8)
valid_rows = st.lists(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=6, max_size=6),
                      min_size=1, max_size=4)
bodies = st.one_of(
    valid_rows.map(lambda rows: json.dumps(split(rows)).encode()),  # well-formed: must be answered and logged
    valid_rows.map(lambda rows: json.dumps({"instances": rows}).encode()),
    st.binary(max_size=300),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda cols, data: json.dumps({"dataframe_split": {"columns": cols, "data": data}}).encode(),
              st.one_of(st.just(FEATURES), st.lists(st.text(max_size=8), max_size=7)), st.lists(row, max_size=3)),
    st.builds(lambda recs: json.dumps({"dataframe_records": recs}).encode(),
              st.lists(st.dictionaries(st.sampled_from(FEATURES + ["x"]), scalar, max_size=7), max_size=3)),
    st.builds(lambda inst: json.dumps({"instances": inst}).encode(), st.lists(row, max_size=3)),
    st.builds(lambda inp: json.dumps({"inputs": inp}).encode(), json_value),
    st.sampled_from([b'{"inputs": [[1,2,3,4,5,6]], "inputs": []}', b"[" * 5000, b'{"inputs": NaN}',
                     b"amount,merchant_risk\n1,2\n", b"\xef\xbb\xbf" + json.dumps(split(ROWS[:1])).encode(),
                     ",".join(FEATURES).encode() + b"\n1,2,3,4,5,x\n", b"1e999999"]),
)
ctype = st.sampled_from(["application/json", "application/json", "application/json", "text/csv", "application/json; charset=utf-8", "text/plain",
                         "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
header_text = st.one_of(st.none(), st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s),
                        st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b and b"\0" not in b))


def _hdr(v):
    if v is None:
        return None
    return v if isinstance(v, bytes) else v.encode("utf-8")


def test_scoring_requests(gateway):
    gateway.ok("/admin/restore", {"follow_alias": True, "reason": "fuzz start"})
    log = DecisionLog(gateway.log_path)
    before = gateway.flush()["head"]["rows"]
    answered: list[str] = []

    @fuzz_settings(300)
    @given(body=bodies, ct=ctype, client=header_text, rid=header_text)
    def one(body, ct, client, rid):
        headers = {"Content-Type": ct}
        for name, v in (("X-Client-Id", _hdr(client)), ("X-Request-Id", _hdr(rid))):
            if v is not None:
                headers[name] = v
        try:
            r = gateway.http.post("/invocations", content=body, headers=headers)
        except Exception as exc:  # httpx refuses some header bytes client-side: not a server answer
            if type(exc).__name__ in ("LocalProtocolError", "UnicodeEncodeError"):
                count(REQ, "not sent (the HTTP client refused the header)")
                return
            raise
        assert r.status_code < 500, (r.status_code, r.text[:300], body[:200], headers)
        if r.status_code == 400 and r.headers.get("content-type", "").startswith("text/plain"):
            # refused by the HTTP server itself before the app (e.g. a control character in a header)
            assert "Invalid HTTP request" in r.text, r.text
            count(REQ, "400 (HTTP layer)")
            return
        doc = r.json()
        if r.status_code == 200:
            assert len(doc["decision_ids"]) == len(doc["predictions"]) >= 1
            assert all(s is None or (isinstance(s, float) and math.isfinite(s)) for s in doc["scores"])
            answered.extend(doc["decision_ids"])
            count(REQ, "200")
        else:
            assert doc["error"] and doc["message"] and doc["request_id"], doc
            assert "Traceback" not in doc["message"] and "/" not in doc["message"].split("requests/s")[0][:1]
            count(REQ, str(r.status_code))

    with timed(REQ):
        one()
    head = gateway.flush()["head"]
    assert head["rows"] == before + len(answered)  # every answered decision logged, nothing else
    logged = {d["decision_id"] for d in log.query(limit=len(answered) + 10, newest_first=True)}
    assert set(answered) <= logged
    assert log.verify_chain().ok
    assert gateway.score(split(ROWS[:1]), client="after-fuzz").status_code == 200
    stats = gateway.ok("/admin/state")["extra"]["stats"]
    assert stats.get("internal_errors", 0) == 0


OPS = ["/admin/isolate", "/admin/block", "/admin/restore", "/admin/rollback", "/admin/canary", "/admin/flush"]
admin_body = st.one_of(
    st.dictionaries(st.sampled_from(["clients", "rate_limit_per_s", "reason", "version", "share", "quarantine",
                                     "fallback_version", "follow_alias", "extra"]),
                    st.one_of(json_value, st.lists(st.text(max_size=20), max_size=4),
                              st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1", "2", "3", "99"])),
                    max_size=4).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=100), json_value.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"{", b'{"reason": "x" }' * 2, b'{"clients": ["a"], "clients": ["b"]}', b"[]", b"null"]),
)


def test_admin_api(gateway):
    token = gateway.token

    @fuzz_settings(220)
    @given(path=st.sampled_from(OPS + ["/admin/state", "/admin/decisions", "/admin/audit"]), body=admin_body,
           auth=st.sampled_from(["good", "good", "good", "good", "none", "wrong", "basic"]),
           query=st.sampled_from(["", "?limit=5", "?limit=-1", "?limit=x", "?limit=99999999999", "?client=%00",
                                  "?client=Mallory", "?since=yesterday", "?since=2026-01-01T00:00:00Z&limit=3"]),
           model_header=st.sampled_from([None, "gw-test", "other"]))
    def one(path, body, auth, query, model_header):
        headers = {"Content-Type": "application/json"}
        if auth == "good":
            headers["Authorization"] = f"Bearer {token}"
        elif auth == "wrong":
            headers["Authorization"] = "Bearer " + "x" * 43
        elif auth == "basic":
            headers["Authorization"] = f"Basic {token}"
        if model_header:
            headers["X-Aiir-Model"] = model_header
        method = "GET" if path in ("/admin/state", "/admin/decisions", "/admin/audit") else "POST"
        r = gateway.http.request(method, path + (query if method == "GET" else ""),
                                 content=body if method == "POST" else None, headers=headers)
        assert r.status_code < 500, (path, body[:200], r.status_code, r.text[:300])
        doc = r.json()
        if r.status_code >= 400:
            assert doc["error"] and doc["message"], doc
            if r.status_code == 401:
                assert auth != "good"
        count(ADMIN, str(r.status_code))

    with timed(ADMIN):
        one()
    # whatever the fuzzer did, the gateway is consistent, audited, and can be restored
    s = gateway.ok("/admin/restore", {"follow_alias": True, "reason": "fuzz end"})
    gateway.ok("/admin/canary", {"version": None, "share": 0, "reason": "fuzz end"})
    assert s["mode"] == "serving" and s["blocked_clients"] == []
    assert gateway.score(split(ROWS[:1]), client="after-admin-fuzz").status_code == 200
    assert verify_audit(gateway.state_dir / "admin-audit.jsonl")["ok"]


def test_gateway_area_budgets():
    assert total(REQ) >= MIN_PER_AREA and total(ADMIN) >= MIN_PER_AREA, (total(REQ), total(ADMIN))
