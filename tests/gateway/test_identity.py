"""Client identity: one normalisation for headers, blocks, rate limits and queries (issue #10 item 4)."""

from __future__ import annotations

import unicodedata

import pytest

from aiir.gateway.identity import (
    ANONYMOUS,
    InvalidClientId,
    client_id_from_header,
    normalise_client_id,
    rate_limit_key,
)
from tests.gateway.gwkit import ROWS, split


@pytest.mark.parametrize("raw, want", [
    ("mallory", "mallory"), ("Mallory", "mallory"), ("  MALLORY\t", "mallory"), ("c-alpha", "c-alpha"),
    ("bank.b:eu/1+x@corp", "bank.b:eu/1+x@corp"), ("zo\u00eb", "zo\u00eb"), ("zoe\u0308", "zo\u00eb"),
    ("ZOË", "zo\u00eb"), ("Straße", "strasse"), ("客户1", "客户1"), (None, ANONYMOUS),
])
def test_normalised_forms(raw, want):
    assert normalise_client_id(raw) == want
    assert unicodedata.is_normalized("NFC", normalise_client_id(raw))


@pytest.mark.parametrize("raw", [
    "", "   ", "=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "a b", "a\u200bb",
    "a\x00", "a\u202eb", "x" * 129, "é" * 300, b"\xff\xfe", "a,b", "a;b", "<script>", "a'b", 'a"b', 7,
])
def test_invalid_ids_are_refused_with_a_reason(raw):
    with pytest.raises(InvalidClientId) as exc:
        normalise_client_id(raw)
    assert str(exc.value)


def test_header_is_decoded_as_utf8_not_latin1():
    sent = "zoë".encode()  # what the client puts on the wire
    as_asgi = sent.decode("latin-1")  # what Starlette hands over
    assert client_id_from_header(as_asgi) == "zoë"
    assert client_id_from_header(None) == client_id_from_header("  ") == ANONYMOUS
    with pytest.raises(InvalidClientId, match="UTF-8"):
        client_id_from_header(b"\xe9t\xe9".decode("latin-1"))  # latin-1 bytes are not UTF-8


def test_rate_limit_policy_anonymous_is_the_shared_bucket():
    limits = {"anonymous": 1.0, "partner": 50.0}
    assert rate_limit_key("partner", limits) == ("partner", 50.0)
    assert rate_limit_key("anonymous", limits) == ("anonymous", 1.0)
    assert rate_limit_key("random-9f3a", limits) == ("anonymous", 1.0)
    assert rate_limit_key("random-9f3a", {"partner": 50.0}) is None


def test_block_matches_every_spelling_and_utf8_ids_over_http(gw):
    s = gw.ok("/admin/block", {"clients": ["Mallory ", "zoë"], "reason": "abuse"})
    assert s["blocked_clients"] == ["mallory", "zoë"]
    # (HTTP itself strips spaces and tabs around a header value; a no-break space is ours to strip)
    for spelling in (b"mallory", b"Mallory", b"MALLORY", "mallory\u00a0".encode()):
        r = gw.http.post("/invocations", json=split(ROWS[:1]), headers={"X-Client-Id": spelling})
        assert r.status_code == 403 and r.json()["error"] == "client_blocked", (spelling, r.text)
    # UTF-8 on the wire, composed or decomposed: both are the blocked client
    for raw in ("zoë".encode(), "zoe\u0308".encode(), "ZOË".encode()):
        r = gw.http.post("/invocations", json=split(ROWS[:1]), headers={"X-Client-Id": raw})
        assert r.status_code == 403, (raw, r.text)
    r = gw.http.post("/invocations", json=split(ROWS[:1]), headers={"X-Client-Id": b"\xe9t\xe9"})
    assert r.status_code == 400 and "UTF-8" in r.json()["message"]
    for bad in ("=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "@SUM(A1)", "-1+1"):
        r = gw.score(split(ROWS[:1]), client=bad)
        assert r.status_code == 400 and r.json()["error"] == "bad_client_id", r.text
    r = gw.score(split(ROWS[:1]), headers={"X-Request-Id": "=HYPERLINK(1)"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request_id"
    # the admin API normalises too: the decision query for 'Good' finds 'good'
    assert gw.score(split(ROWS[:1]), client="Good").status_code == 200
    gw.flush()
    got = gw.ok("/admin/decisions?client=GOOD&limit=5")["decisions"]
    assert got and {d["client_id"] for d in got} == {"good"}
    r = gw.admin("/admin/block", {"clients": ["=evil()"]})
    assert r.status_code == 400 and r.json()["error"] == "bad_clients" and "'='" in r.json()["message"]


def test_rate_limit_on_anonymous_is_not_passed_by_random_ids(gw):
    gw.ok("/admin/block", {"clients": ["anonymous"], "rate_limit_per_s": 1, "reason": "flood"})
    gw.ok("/admin/block", {"clients": ["partner"], "rate_limit_per_s": 1000})
    codes = [gw.score(split(ROWS[:1]), client=f"rnd-{i}").status_code for i in range(6)]
    assert codes.count(200) <= 2 and codes.count(429) >= 4, codes
    r = gw.score(split(ROWS[:1]), client="rnd-new")
    assert r.status_code == 429 and "shared by every client id" in r.json()["message"]
    assert gw.score(split(ROWS[:1])).status_code == 429  # no header: the same bucket
    assert all(gw.score(split(ROWS[:1]), client="partner").status_code == 200 for _ in range(3))
