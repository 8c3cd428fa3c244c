"""DecisionLog: append/query, hash chain and tamper detection, writers, exports, SageMaker capture import."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from aiir.errors import BadInput
from aiir.gateway.decision_log import (
    GENESIS,
    DecisionLog,
    DecisionWriter,
    LogBacklogFull,
    new_decision_ids,
    parse_when,
    row_hash,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sagemaker_capture.jsonl"
COLS = ["amount", "merchant_risk", "hour", "distance_km", "card_age_days", "n_tx_24h"]


def _fill(log: DecisionLog, n: int = 6) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(log.append(client_id=f"c{i % 3}", features={"amount": float(i), "hour": 3.0},
                              prediction=i % 2, score=i / 10, model="m", model_version=str(1 + i % 2),
                              artifact_digest="d" * 64, latency_ms=1.5, request_id=f"r{i}",
                              ts=f"2024-05-01T12:00:0{i}Z"))
    return ids


def _tamper(path: Path, sql: str, args=()) -> None:
    """What an attacker with the file can do: drop the guard triggers, then edit."""
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER decisions_no_update")
    con.execute("DROP TRIGGER decisions_no_delete")
    con.execute(sql, args)
    con.commit()
    con.close()


def test_append_query_filters_and_counts(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    ids = _fill(log)
    rows = log.query()
    assert [r["decision_id"] for r in rows] == ids
    r0 = rows[0]
    assert set(r0) >= {"seq", "decision_id", "ts", "client_id", "request_id", "model", "model_version",
                       "artifact_digest", "features", "prediction", "score", "latency_ms", "source",
                       "prev_hash", "row_hash"}
    assert r0["features"] == {"amount": 0.0, "hour": 3.0} and r0["prediction"] == 0
    assert r0["ts"] == "2024-05-01T12:00:00.000000Z" and r0["prev_hash"] == GENESIS
    assert [r["seq"] for r in rows] == list(range(1, 7))
    assert len(log.query(version="1")) == 3
    assert [r["client_id"] for r in log.query(client="c1")] == ["c1", "c1"]
    # since inclusive, until exclusive
    assert [r["request_id"] for r in log.query(since="2024-05-01T12:00:02Z", until="2024-05-01T12:00:04Z")] \
        == ["r2", "r3"]
    assert [r["request_id"] for r in log.query(limit=2, newest_first=True)] == ["r5", "r4"]
    assert log.count_by_client() == {"c0": 2, "c1": 2, "c2": 2}
    assert log.count_by_client(version="2") == {"c0": 1, "c1": 1, "c2": 1}  # rows 1, 3, 5
    assert log.count_by_client(since="2024-05-01T12:00:03Z") == {"c0": 1, "c1": 1, "c2": 1}
    assert log.count_by_version() == {"1": 3, "2": 3}
    assert log.head()["rows"] == 6 and log.head()["head_seq"] == 6


def test_time_parsing():
    assert parse_when("2024-05-01") == "2024-05-01T00:00:00.000000Z"
    assert parse_when("2024-05-01T14:00:00+02:00") == "2024-05-01T12:00:00.000000Z"
    assert parse_when(0) == "1970-01-01T00:00:00.000000Z"
    ago = parse_when("2h")
    assert abs(time.time() - 7200 - _epoch(ago)) < 5
    with pytest.raises(BadInput, match="since"):
        parse_when("yesterday-ish")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_decision_ids_are_unique_and_time_ordered():
    a = new_decision_ids(500)
    time.sleep(0.003)
    b = new_decision_ids(3)
    assert len(set(a + b)) == 503
    assert all(x[14] == "7" for x in a)  # UUID version 7
    assert max(a) < min(b)


def test_chain_verifies_and_rows_hash_their_content(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log)
    rep = log.verify_chain()
    assert rep.ok and rep.rows == 6 and rep.head_seq == 6
    assert rep.head_hash == log.head()["head_hash"]
    assert log.verify_chain(expected_head=rep.head_hash).ok
    # the stored hash is what row_hash() says (the writer's inlined version agrees with it)
    r = log.query(limit=1)[0]
    values = tuple(json.dumps(r[k], separators=(",", ":")) if k in ("features", "prediction") else r[k]
                   for k in ("seq", "decision_id", "ts", "client_id", "request_id", "model", "model_version",
                             "artifact_digest", "features", "prediction", "score", "latency_ms", "source"))
    assert row_hash(GENESIS, values) == r["row_hash"]


def test_append_only_triggers_refuse_update_and_delete(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log, 2)
    con = sqlite3.connect(log.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE decisions SET score = 0.99 WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM decisions WHERE seq = 1")
    con.close()
    assert log.verify_chain().ok


@pytest.mark.parametrize("sql,args,bad_seq,words", [
    ("UPDATE decisions SET score = 0.99 WHERE seq = 3", (), 3, "modified"),
    ("UPDATE decisions SET features = ? WHERE seq = 4", ('{"amount":1e6,"hour":3.0}',), 4, "modified"),
    ("UPDATE decisions SET client_id = 'someone-else' WHERE seq = 2", (), 2, "modified"),
    ("DELETE FROM decisions WHERE seq = 3", (), 3, "missing"),
])
def test_verify_chain_detects_tampering(tmp_path, sql, args, bad_seq, words):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log)
    _tamper(log.path, sql, args)
    rep = log.verify_chain()
    assert not rep.ok
    assert rep.first_bad_seq == bad_seq
    assert words in rep.problem


def test_verify_chain_detects_a_recomputed_row_whose_successor_no_longer_links(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log)
    # attacker rewrites row 3 AND its own row_hash consistently: row 4's prev_hash no longer matches
    r3 = log.query()[2]
    vals = (3, r3["decision_id"], r3["ts"], r3["client_id"], r3["request_id"], r3["model"], r3["model_version"],
            r3["artifact_digest"], json.dumps(r3["features"], separators=(",", ":")), "1", 0.99,
            r3["latency_ms"], r3["source"])
    h = row_hash(r3["prev_hash"], vals)
    _tamper(log.path, "UPDATE decisions SET prediction='1', score=0.99, row_hash=? WHERE seq=3", (h,))
    rep = log.verify_chain()
    assert not rep.ok and rep.first_bad_seq == 4 and "prev_hash" in rep.problem


def test_truncation_detected_against_a_recorded_head(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log)
    head = log.head()["head_hash"]
    _tamper(log.path, "DELETE FROM decisions WHERE seq >= 5")
    assert log.verify_chain().ok  # a shorter chain is still a chain …
    rep = log.verify_chain(expected_head=head)  # … but not the one recorded
    assert not rep.ok and "expected head" in rep.problem


def test_two_log_handles_appending_concurrently_keep_one_chain(tmp_path):
    a, b = DecisionLog(tmp_path / "d.db"), DecisionLog(tmp_path / "d.db")

    def work(log, tag):
        for i in range(40):
            log.append_many([{"client_id": tag, "features": {"i": i}, "prediction": 0, "model": "m",
                              "model_version": "1"} for _ in range(3)])

    ts = [threading.Thread(target=work, args=(a, "a")), threading.Thread(target=work, args=(b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rep = a.verify_chain()
    assert rep.ok and rep.rows == 240


def _item(n: int, client: str = "c1", version: str = "2", value: float = 1.5):
    return (time.time(), client, "req-1", "m", version, "d" * 64, COLS, [[value] * 6 for _ in range(n)],
            new_decision_ids(n), [1] * n, [0.75] * n, 2.0, "gateway")


def test_thread_writer_batches_flushes_and_closes(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    w = DecisionWriter(log, linger=0.01)
    for _ in range(50):
        w.submit(_item(3))
    assert w.flush(10)
    assert log.count() == 150 and w.pending == 0
    w.submit(_item(2))
    w.close()
    assert log.count() == 152
    row = log.query(limit=1)[0]
    assert row["features"] == dict.fromkeys(COLS, 1.5) and row["prediction"] == 1 and row["score"] == 0.75
    assert log.verify_chain().ok


def test_thread_writer_refuses_when_backlog_is_full(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    w = DecisionWriter(log, max_backlog=5, linger=0.5)
    w.submit(_item(5))
    with pytest.raises(LogBacklogFull):
        w.submit(_item(1))
    w.close()
    assert log.count() == 5


def test_writer_falls_back_to_json_for_non_numeric_features(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    w = DecisionWriter(log, linger=0.01)
    it = list(_item(1))
    it[6] = ["amount", "country", 'we"ird%col']
    it[7] = [[2, "FR", True]]
    it[9] = ["yes"]
    w.submit(tuple(it))
    w.close()
    r = log.query()[0]
    assert r["features"] == {"amount": 2, "country": "FR", 'we"ird%col': True} and r["prediction"] == "yes"
    assert log.verify_chain().ok


def test_process_writer_commits_everything_and_fails_closed_when_the_child_dies(tmp_path):
    from aiir.gateway.log_writer import ProcessDecisionWriter

    path = tmp_path / "d.db"
    DecisionLog(path)

    async def run():
        w = ProcessDecisionWriter(path, linger=0.01)
        for _ in range(40):
            w.submit(_item(5))
        assert await w.aflush(20)
        assert w.pending == 0 and w.written == 200
        w.submit(_item(1))
        w.close()  # (normally after the loop) hands over the rest and waits
        return w

    w = asyncio.run(run())
    assert DecisionLog(path).count() == 201 and w.stats()["rejected"] == 0

    async def killed():
        w2 = ProcessDecisionWriter(path, linger=0.01)
        w2.submit(_item(1))
        assert await w2.aflush(20)
        w2.proc.kill()
        for _ in range(500):
            if w2.dead:
                break
            await asyncio.sleep(0.01)
        assert w2.dead
        with pytest.raises(LogBacklogFull, match="down"):
            w2.submit(_item(1))
        w2.close()

    asyncio.run(killed())
    assert DecisionLog(path).verify_chain().ok


# ------------------------------------------------------------------------------------------ exports

def test_ecs_export_shape(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log)
    n = log.export_ecs(tmp_path / "ecs.jsonl", version="2")
    lines = [json.loads(x) for x in (tmp_path / "ecs.jsonl").read_text().splitlines()]
    assert n == len(lines) == 3
    e = lines[0]
    assert e["@timestamp"].endswith("Z") and e["ecs"]["version"].startswith("8.")
    assert e["event"]["kind"] == "event" and e["event"]["category"] == ["web"]
    assert e["event"]["action"] == "model-decision" and e["event"]["outcome"] == "success"
    assert e["event"]["id"] == e["aiir"]["decision"]["id"] and e["event"]["duration"] == 1_500_000
    assert e["client"]["user"]["id"] == "c1"
    assert e["aiir"]["model"] == {"name": "m", "version": "2", "artifact_digest": "d" * 64}
    assert e["aiir"]["decision"]["features"] == {"amount": 1.0, "hour": 3.0}
    assert e["aiir"]["log"]["seq"] == 2 and len(e["aiir"]["log"]["row_hash"]) == 64


def test_hec_export_shape(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    _fill(log)
    n = log.export_hec(tmp_path / "hec.jsonl", since="2024-05-01T12:00:04Z", host="gw-1", index="ml")
    lines = [json.loads(x) for x in (tmp_path / "hec.jsonl").read_text().splitlines()]
    assert n == 2
    h = lines[0]
    assert set(h) == {"time", "host", "source", "sourcetype", "event", "fields", "index"}
    assert h["time"] == pytest.approx(_epoch("2024-05-01T12:00:04Z"))
    assert h["host"] == "gw-1" and h["source"] == "aiir:gateway:m" and h["sourcetype"] == "aiir:decision"
    assert h["event"]["client_id"] == "c1" and h["event"]["model_version"] == "1"
    assert h["fields"] == {"model": "m", "model_version": "1", "client_id": "c1"}


# ------------------------------------------------------------------------------------------ SageMaker

def test_import_sagemaker_capture(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    res = log.import_sagemaker_capture(FIXTURE, "fraud", "7", columns=COLS, client_id="sm-endpoint")
    assert res["imported"] == 6 and res["skipped_duplicates"] == 0  # 5 events, one with two CSV rows
    rows = {r["decision_id"]: r for r in log.query()}
    one = rows["6f1a3c2e-9b7d-4e0a-8c51-2d3e4f5a6b7c"]
    assert one["features"] == {"amount": 42.5, "merchant_risk": 0.12, "hour": 14, "distance_km": 3.2,
                               "card_age_days": 812, "n_tx_24h": 2}
    assert one["score"] == 0.0718 and one["ts"] == "2024-05-01T12:00:01.000000Z"
    assert one["model"] == "fraud" and one["model_version"] == "7" and one["source"] == "sagemaker-capture"
    assert one["client_id"] == "sm-endpoint"
    # multi-row CSV request → one decision per row
    a, b = rows["0b9e2d41-5c3a-4f6e-9a2b-7c8d9e0f1a2b:0"], rows["0b9e2d41-5c3a-4f6e-9a2b-7c8d9e0f1a2b:1"]
    assert a["score"] == 0.9632 and b["score"] == 0.0105 and b["features"]["card_age_days"] == 2400
    assert a["ts"] == "2024-05-01T12:00:02.250000Z"
    # JSON in (MLflow dataframe_split) / JSON out {"predictions": [...]}, inferenceId as request id
    j = rows["d2c4e6f8-1a3b-4c5d-8e7f-9a0b1c2d3e4f"]
    assert j["prediction"] == 1 and j["score"] is None and j["request_id"] == "req-7781"
    assert j["features"]["amount"] == 120.0
    # SageMaker built-in style {"score", "predicted_label"}
    k = rows["a7b8c9d0-e1f2-4a3b-9c4d-5e6f7a8b9c0d"]
    assert k["prediction"] == 1 and k["score"] == 0.8311 and k["features"]["merchant_risk"] == 0.83
    # BASE64-encoded capture
    c = rows["f0e1d2c3-b4a5-4968-8776-655443322110"]
    assert c["features"]["amount"] == 23.0 and c["score"] == 0.4201
    assert log.verify_chain().ok
    # idempotent
    again = log.import_sagemaker_capture(FIXTURE, "fraud", "7", columns=COLS)
    assert again["imported"] == 0 and again["skipped_duplicates"] == 6 and log.count() == 6


def test_import_without_columns_names_them_positionally(tmp_path):
    log = DecisionLog(tmp_path / "d.db")
    log.import_sagemaker_capture(FIXTURE, "fraud", "7")
    first = log.query(limit=1)[0]
    assert list(first["features"]) == [f"f{i}" for i in range(6)]


@pytest.mark.parametrize("line,words", [
    ("not json", "not a JSON line"),
    ('{"eventMetadata": {"eventId": "x", "inferenceTime": "2024-01-01T00:00:00Z"}}', "endpointInput"),
    ('{"captureData": {"endpointInput": {"data": "1,2", "encoding": "CSV", "observedContentType": "text/csv"}},'
     ' "eventMetadata": {}}', "eventId"),
    ('{"captureData": {"endpointInput": {"data": "1,2", "encoding": "ROT13"}}, '
     '"eventMetadata": {"eventId": "x", "inferenceTime": "2024-01-01T00:00:00Z"}}', "unknown encoding"),
    ('{"captureData": {"endpointInput": {"data": "1,2\\n3,4", "encoding": "CSV", "observedContentType": '
     '"text/csv"}, "endpointOutput": {"data": "0.1", "encoding": "CSV", "observedContentType": "text/csv"}}, '
     '"eventMetadata": {"eventId": "x", "inferenceTime": "2024-01-01T00:00:00Z"}}', "1 predictions for 2"),
])
def test_import_rejects_bad_capture_lines_naming_the_line(tmp_path, line, words):
    f = tmp_path / "cap.jsonl"
    f.write_text(FIXTURE.read_text().splitlines()[0] + "\n" + line + "\n")
    log = DecisionLog(tmp_path / "d.db")
    with pytest.raises(BadInput, match=words) as ei:
        log.import_sagemaker_capture(f, "fraud", "7")
    assert f"{f}:2" in str(ei.value)
    assert log.count() == 0  # all or nothing


def test_opening_a_non_log_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BadInput, match="not a usable decision log"):
        DecisionLog(bad)
    with pytest.raises(BadInput, match="not found"):
        DecisionLog(tmp_path / "missing.db", create=False)
