"""Decision-log exports for SIEMs and the SageMaker Data Capture import.

* :func:`ecs_event` — one Elastic Common Schema event per decision. ECS fields where ECS has one
  (``@timestamp``, ``event.*``, ``client.user.id``, ``http.request.id``, ``service.*``, ``host.name``);
  everything ML-specific under the custom ``aiir`` namespace (ECS leaves custom fields to their own
  top-level name).
* :func:`hec_event` — one Splunk HTTP Event Collector event (``time``, ``host``, ``source``,
  ``sourcetype``, ``event``, indexed ``fields``); lines can be POSTed to ``/services/collector/event``
  as they are (HEC accepts several concatenated event objects in one body).
* :func:`read_sagemaker_capture` — SageMaker Model Monitor Data Capture JSON lines
  (``captureData.endpointInput/endpointOutput`` with ``encoding`` CSV, JSON or BASE64,
  ``eventMetadata.eventId/inferenceTime/inferenceId``) → rows for :class:`DecisionLog`.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiir.errors import BadInput

ECS_VERSION = "8.11.0"
EVENT_ACTION = "model-decision"
SOURCETYPE = "aiir:decision"


def write_jsonl(out_path: str | Path, events: Iterable[dict[str, Any]]) -> int:
    """Write events as JSON lines atomically (temp file + rename), mode 0600 (an export is a copy of the
    decision log, whose folder is 0700); returns the count."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for ev in events:
                fh.write(json.dumps(ev, separators=(",", ":"), ensure_ascii=False, default=str))
                fh.write("\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def ecs_event(row: dict[str, Any]) -> dict[str, Any]:
    """One decision-log row → one ECS event."""
    ev: dict[str, Any] = {
        "@timestamp": row["ts"],
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "category": ["web"],
            "type": ["access", "info"],
            "action": EVENT_ACTION,
            "outcome": "success",
            "id": row["decision_id"],
            "dataset": "aiir.decisions",
            "module": "aiir",
            "provider": "aiir-gateway" if row["source"] == "gateway" else row["source"],
        },
        "client": {"user": {"id": row["client_id"]}},
        "http": {"request": {"id": row["request_id"]}},
        "service": {"name": "aiir-gateway", "type": "ml-model"},
        "labels": {"model": row["model"], "model_version": row["model_version"]},
        "aiir": {
            "model": {"name": row["model"], "version": row["model_version"],
                      "artifact_digest": row["artifact_digest"]},
            "decision": {"id": row["decision_id"], "prediction": row["prediction"], "score": row["score"],
                         "features": row["features"], "client_id": row["client_id"],
                         "request_id": row["request_id"], "source": row["source"]},
            "log": {"seq": row["seq"], "row_hash": row["row_hash"], "prev_hash": row["prev_hash"]},
        },
    }
    if row.get("latency_ms") is not None:
        ev["event"]["duration"] = int(round(row["latency_ms"] * 1e6))  # ECS: nanoseconds
    return ev


def hec_event(row: dict[str, Any], *, host: str | None = None, index: str | None = None) -> dict[str, Any]:
    """One decision-log row → one Splunk HEC event."""
    ev: dict[str, Any] = {
        "time": round(_epoch(row["ts"]), 6),
        "host": host or socket.gethostname(),
        "source": f"aiir:gateway:{row['model']}",
        "sourcetype": SOURCETYPE,
        "event": {
            "decision_id": row["decision_id"], "timestamp": row["ts"], "client_id": row["client_id"],
            "request_id": row["request_id"], "model": row["model"], "model_version": row["model_version"],
            "artifact_digest": row["artifact_digest"], "prediction": row["prediction"],
            "score": row["score"], "latency_ms": row["latency_ms"], "features": row["features"],
            "source": row["source"], "seq": row["seq"], "row_hash": row["row_hash"],
            "prev_hash": row["prev_hash"],
        },
        "fields": {"model": row["model"], "model_version": row["model_version"],
                   "client_id": row["client_id"]},
    }
    if index:
        ev["index"] = index
    return ev


# --------------------------------------------------------------------------------------------- SageMaker

def _decode(part: dict[str, Any], *, where: str) -> tuple[str, str]:
    """captureData.endpointInput/Output → (content type, text)."""
    if not isinstance(part, dict) or "data" not in part:
        raise BadInput(where, "missing 'data'")
    enc = str(part.get("encoding", "")).upper()
    data = part["data"]
    ctype = str(part.get("observedContentType") or "")
    if enc == "BASE64":
        try:
            data = base64.b64decode(data, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(where, f"cannot decode BASE64 data ({exc})") from None
    elif enc not in ("CSV", "JSON"):
        raise BadInput(where, f"unknown encoding '{part.get('encoding')}' (expected CSV, JSON or BASE64)")
    if not isinstance(data, str):
        raise BadInput(where, "'data' must be a string")
    return ctype.lower(), data


def _is_csv(ctype: str, enc_hint: str) -> bool:
    return "csv" in ctype or (not ctype and enc_hint == "CSV")


def _csv_value(text: str) -> Any:
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        return t
    return int(v) if v.is_integer() and "." not in t and "e" not in t.lower() else v


def _parse_input(part: dict, columns: list[str] | None, *, where: str) -> tuple[list[str], list[list]]:
    from aiir.gateway.scoring import InputError, parse_json_payload

    ctype, text = _decode(part, where=where)
    if _is_csv(ctype, str(part.get("encoding", "")).upper()):
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        if not rows:
            raise BadInput(where, "empty CSV input")
        if columns and [c.strip() for c in rows[0]] == list(columns):
            rows = rows[1:]
        width = len(rows[0])
        cols = list(columns) if columns else [f"f{i}" for i in range(width)]
        for i, r in enumerate(rows):
            if len(r) != len(cols):
                raise BadInput(where, f"CSV row {i + 1} has {len(r)} fields, expected {len(cols)} "
                                      f"({', '.join(cols)})")
        return cols, [[_csv_value(c) for c in r] for r in rows]
    try:
        parsed = parse_json_payload(text.encode(), columns=columns)
    except InputError as exc:
        raise BadInput(where, exc.message) from None
    return parsed.columns, parsed.rows


def _parse_output(part: dict | None, n: int, *, where: str) -> tuple[list[Any], list[float | None]]:
    """Predictions and scores from the endpoint output (``n`` rows expected)."""
    if part is None:
        return [None] * n, [None] * n
    ctype, text = _decode(part, where=where)
    if "json" in ctype or (not _is_csv(ctype, str(part.get("encoding", "")).upper())
                           and text.lstrip()[:1] in "[{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(where, f"output is not valid JSON ({exc.msg} at char {exc.pos})") from None
        scores: list[Any] | None = None
        if isinstance(obj, dict):
            scores = obj.get("scores") or obj.get("probabilities")
            preds = obj.get("predictions", obj.get("outputs"))
        else:
            preds = obj
        if not isinstance(preds, list):
            preds = [preds]
        out_p, out_s = [], []
        for i, p in enumerate(preds):
            s = scores[i] if isinstance(scores, list) and i < len(scores) else None
            if isinstance(p, dict):  # SageMaker built-ins: {"score": 0.9, "predicted_label": 1}
                s = p.get("score", s)
                p = p.get("predicted_label", p.get("label", p))
            if isinstance(s, list):  # per-class probabilities → the positive / top class
                s = s[1] if len(s) == 2 else max(s) if s else None
            out_p.append(p)
            out_s.append(_as_score(s))
    else:
        lines = [ln for ln in text.replace("\r", "").split("\n") if ln.strip()]
        if len(lines) == 1 and n > 1 and lines[0].count(",") == n - 1:
            lines = lines[0].split(",")
        out_p, out_s = [], []
        for ln in lines:
            fields = [f.strip() for f in ln.split(",")]
            if len(fields) >= 2:  # "label,score"
                out_p.append(_csv_value(fields[0]))
                out_s.append(_as_score(_csv_value(fields[1])))
            else:
                v = _csv_value(fields[0])
                out_p.append(v)
                out_s.append(float(v) if isinstance(v, float) and 0.0 <= v <= 1.0 else None)
    if len(out_p) != n:
        raise BadInput(where, f"{len(out_p)} predictions for {n} input rows")
    return out_p, out_s


def _as_score(s: Any) -> float | None:
    if isinstance(s, bool) or s is None:
        return None
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def read_sagemaker_capture(path: str | Path, *, model: str, version: str, columns: list[str] | None = None,
                           client_id: str = "sagemaker", artifact_digest: str | None = None
                           ) -> list[dict[str, Any]]:
    """Parse a Data Capture JSONL file into decision rows (``DecisionLog.make_row`` keyword dicts).

    CSV inputs carry no header: ``columns`` names them (the model signature's inputs), otherwise
    ``f0, f1, …``. A multi-row request gives one decision per row with id ``<eventId>:<row>``.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInput(str(p), "SageMaker capture file not found")
    rows: list[dict[str, Any]] = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(where, f"not a JSON line ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise BadInput(where, "not a Data Capture record (expected a JSON object)")
            cap = rec.get("captureData")
            meta = rec.get("eventMetadata") or {}
            if not isinstance(cap, dict) or "endpointInput" not in cap or not isinstance(meta, dict):
                raise BadInput(where, "not a Data Capture record (missing captureData.endpointInput)")
            event_id = meta.get("eventId") or meta.get("inferenceId")
            when = meta.get("inferenceTime")
            if not event_id or not when:
                raise BadInput(where, "eventMetadata.eventId and eventMetadata.inferenceTime are required")
            cols, feats = _parse_input(cap["endpointInput"], columns, where=f"{where} endpointInput")
            preds, scores = _parse_output(cap.get("endpointOutput"), len(feats),
                                          where=f"{where} endpointOutput")
            from aiir.gateway.decision_log import parse_when

            ts = parse_when(when, where=f"{where} eventMetadata.inferenceTime")
            for i, vals in enumerate(feats):
                rows.append({
                    "decision_id": event_id if len(feats) == 1 else f"{event_id}:{i}",
                    "ts": ts, "client_id": client_id,
                    "request_id": str(meta.get("inferenceId") or event_id),
                    "model": model, "model_version": str(version), "artifact_digest": artifact_digest,
                    "features": dict(zip(cols, vals, strict=True)), "prediction": preds[i],
                    "score": scores[i], "latency_ms": None, "source": "sagemaker-capture",
                })
    return rows


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
