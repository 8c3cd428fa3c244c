"""The CLI: `aiir gateway …`, `aiir traffic`, `aiir decisions …` as subprocesses against a real gateway."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from aiir.gateway.decision_log import DecisionLog
from tests.gateway.gwkit import AIIR, FEATURES, MODEL, ROWS, free_port

FIXTURE = Path(__file__).parent / "fixtures" / "sagemaker_capture.jsonl"


def aiir(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(AIIR), *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"{args}: {r.stderr[-2000:]}"
    return r


@pytest.fixture
def env(gw) -> dict:
    return {**gw.env, "AIIR_GATEWAY_URL": gw.url}


def test_gateway_commands(env, gw):
    s = json.loads(aiir(env, "gateway", "state", "--name", MODEL).stdout)
    assert s["mode"] == "serving" and s["routes"] == [{"version": "2", "share": 1.0}]
    s = json.loads(aiir(env, "gateway", "isolate", "--name", MODEL, "--reason", "cli test").stdout)
    assert s["mode"] == "isolated" and s["routes"][0]["version"] == "1" and s["reason"] == "cli test"
    s = json.loads(aiir(env, "gateway", "block", "--name", MODEL, "--clients", "a, b").stdout)
    assert s["blocked_clients"] == ["a", "b"]
    s = json.loads(aiir(env, "gateway", "block", "--name", MODEL, "--clients", "c", "--rate-limit", "3").stdout)
    assert s["rate_limits"] == {"c": 3.0}
    s = json.loads(aiir(env, "gateway", "restore", "--name", MODEL).stdout)
    assert s["mode"] == "serving" and s["blocked_clients"] == []
    s = json.loads(aiir(env, "gateway", "rollback", "--name", MODEL, "--version", "3").stdout)
    assert s["routes"] == [{"version": "3", "share": 1.0}]
    s = json.loads(aiir(env, "gateway", "canary", "--name", MODEL, "--version", "1", "--share", "0.5").stdout)
    assert {r["version"] for r in s["routes"]} == {"1", "3"}
    assert gw.ok("/admin/state")["routes"] == s["routes"]


def test_gateway_command_errors(env, gw, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    r = aiir(env, "gateway", "state", "--name", MODEL, "--url", url, ok=False)
    assert r.returncode == 1 and "unreachable" in r.stderr and url in r.stderr and "Traceback" not in r.stderr
    r = aiir(env, "gateway", "rollback", "--name", MODEL, "--version", "99", ok=False)
    assert r.returncode == 2 and "no version '99'" in r.stderr
    r = aiir(env, "gateway", "state", "--name", MODEL, "--token-file", str(tmp_path / "none"), ok=False)
    assert r.returncode == 2 and "token file not found" in r.stderr


def test_traffic_replays_rows_with_several_clients(env, gw, tmp_path):
    import pandas as pd

    df = pd.DataFrame(ROWS * 5, columns=FEATURES)
    df["is_fraud"] = 0
    data = tmp_path / "traffic.csv"
    df.to_csv(data, index=False)
    gw.ok("/admin/block", {"clients": ["c3"]})
    r = aiir(env, "traffic", "--url", gw.url, "--data", str(data), "--rate", "60", "--duration", "1",
             "--clients", "c1,c2,c3", "--label-column", "is_fraud")
    s = json.loads(r.stdout)
    assert s["sent"] == 60 and s["ok"] == 40 and s["errors"] == 20
    assert s["by_client"]["c1"]["ok"] == 20 and s["by_client"]["c3"]["403"] == 20
    assert s["by_version"] == {"2": 40} and s["by_status"] == {"200": 40, "403": 20}
    assert s["error_kinds"] == {"client_blocked": 20}
    assert 0.8 < s["duration_s"] < 5
    gw.flush()
    assert DecisionLog(gw.log_path).count_by_client(version="2").get("c1", 0) >= 20
    # without dropping the label the gateway refuses the unknown column, and says so
    r = aiir(env, "traffic", "--url", gw.url, "--data", str(data), "--rate", "10", "--duration", "0.3",
             "--clients", "c1")
    assert json.loads(r.stdout)["error_kinds"] == {"unexpected_columns": 3}
    r = aiir(env, "traffic", "--url", gw.url, "--data", str(data), "--label-column", "nope", ok=False)
    assert r.returncode == 2 and "--label-column 'nope'" in r.stderr


def test_decisions_export_import_verify(env, gw, tmp_path):
    gw.score({"dataframe_split": {"columns": FEATURES, "data": ROWS}}, client="exp")
    gw.flush()
    out = tmp_path / "ecs.jsonl"
    s = json.loads(aiir(env, "decisions", "export", "--format", "ecs", "--out", str(out), "--model", MODEL,
                        "--since", "1h").stdout)
    assert s["events"] >= 4 and len(out.read_text().splitlines()) == s["events"]
    assert json.loads(out.read_text().splitlines()[-1])["event"]["action"] == "model-decision"
    out2 = tmp_path / "hec.jsonl"
    s = json.loads(aiir(env, "decisions", "export", "-f", "hec", "-o", str(out2), "--model", MODEL,
                        "--client", "exp").stdout)
    assert s["events"] == 4
    assert {json.loads(x)["sourcetype"] for x in out2.read_text().splitlines()} == {"aiir:decision"}
    r = aiir(env, "decisions", "export", "--format", "xml", "--out", str(out2), "--model", MODEL, ok=False)
    assert r.returncode == 2 and "expected ecs or hec" in r.stderr

    # SageMaker capture into a separate log, columns from the registered model's signature
    log = tmp_path / "sm.db"
    s = json.loads(aiir(env, "decisions", "import-capture", str(FIXTURE), "--model", MODEL, "--version", "1",
                        "--log", str(log)).stdout)
    assert s["imported"] == 6
    first = DecisionLog(log).query(limit=1)[0]
    assert list(first["features"]) == FEATURES and first["artifact_digest"]
    s = json.loads(aiir(env, "decisions", "import-capture", str(FIXTURE), "--model", MODEL, "--version", "1",
                        "--log", str(log), "--columns", ",".join(FEATURES)).stdout)
    assert s["imported"] == 0 and s["skipped_duplicates"] == 6

    v = json.loads(aiir(env, "decisions", "verify", "--log", str(log)).stdout)
    assert v["ok"] and v["rows"] == 6
    c = json.loads(aiir(env, "decisions", "count", "--log", str(log)).stdout)
    assert c["by_client"] == {"sagemaker": 6} and c["by_version"] == {"1": 6}
    con = sqlite3.connect(log)
    con.execute("DROP TRIGGER decisions_no_update")
    con.execute("UPDATE decisions SET prediction = '0' WHERE seq = 2")
    con.commit()
    con.close()
    r = aiir(env, "decisions", "verify", "--log", str(log), ok=False)
    assert r.returncode == 3 and json.loads(r.stdout)["first_bad_seq"] == 2
    r = aiir(env, "decisions", "verify", "--log", str(tmp_path / "missing.db"), ok=False)
    assert r.returncode == 2 and "not found" in r.stderr
