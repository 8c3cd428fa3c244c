"""The decision log: every model decision the gateway served, append-only and hash-chained.

Storage is one SQLite file in WAL mode (readers never block the writer). Each row carries
``prev_hash`` (the previous row's ``row_hash``) and ``row_hash`` = SHA-256 over the previous hash and
every stored field, so changing, removing or reordering any row breaks the chain and
:meth:`DecisionLog.verify_chain` names the first row that no longer fits. Triggers refuse UPDATE and
DELETE; there is no code path that changes a row. (Triggers can be dropped by anyone holding the file —
the chain is what makes such tampering detectable; anchor :meth:`DecisionLog.head` in evidence.)

Writes from the gateway go through :class:`DecisionWriter`: one thread drains a deque and inserts in
batches, one transaction per batch. Several processes may append to the same file (the gateway and
``aiir decisions import-capture``): each batch reads the chain tail inside its own ``BEGIN IMMEDIATE``
transaction, so the chain stays linear.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiir.errors import BadInput

GENESIS = "0" * 64
NUL = "\x00"
SCHEMA_VERSION = "1"

# Stored fields, in the order they enter the row hash (after prev_hash).
FIELDS = ("seq", "decision_id", "ts", "client_id", "request_id", "model", "model_version",
          "artifact_digest", "features", "prediction", "score", "latency_ms", "source")

_DDL = """
CREATE TABLE IF NOT EXISTS decisions (
    seq             INTEGER PRIMARY KEY,
    decision_id     TEXT NOT NULL,
    ts              TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    model           TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    artifact_digest TEXT,
    features        TEXT NOT NULL,
    prediction      TEXT NOT NULL,
    score           REAL,
    latency_ms      REAL,
    source          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    row_hash        TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_decision_id ON decisions(decision_id);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions(ts);
CREATE INDEX IF NOT EXISTS decisions_client_ts ON decisions(client_id, ts);
CREATE TRIGGER IF NOT EXISTS decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decision log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decision log is append-only: DELETE refused'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_SELECT = "SELECT " + ", ".join(FIELDS) + ", prev_hash, row_hash FROM decisions"
_INSERT_HEAD = "INSERT INTO decisions (" + ", ".join(FIELDS) + ", prev_hash, row_hash) VALUES "
_ROW_PARAMS = "(" + ", ".join("?" * (len(FIELDS) + 2)) + ")"
# Rows per INSERT statement: one sqlite3_step (one GIL release) per chunk instead of per row, which
# matters when the writer thread shares the GIL with a busy event loop. 15 params × 400 < 32766.
_CHUNK = 400
_INSERT_SQL: dict[int, str] = {}


def _insert_sql(n: int) -> str:
    sql = _INSERT_SQL.get(n)
    if sql is None:
        sql = _INSERT_SQL[n] = _INSERT_HEAD + ",".join([_ROW_PARAMS] * n)
    return sql


# --------------------------------------------------------------------------------------------- time

def to_iso(t: float) -> str:
    """Epoch seconds → ``2024-05-01T12:00:00.123456Z`` (fixed width, so text order = time order)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str | float | datetime | None, *, where: str = "since") -> str | None:
    """A point in time as the log's ISO text. Accepts datetime, epoch seconds, ISO-8601 (``Z`` or offset;
    a date alone means midnight UTC) or a relative age like ``15m``, ``2h``, ``7d`` (that long ago)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, int | float):
        return to_iso(float(value))
    text = str(value).strip()
    if m := _RELATIVE.match(text):
        return to_iso(time.time() - float(m.group(1)) * _UNITS[m.group(2)])
    try:
        return to_iso(float(text))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadInput(where, f"cannot read '{text}' as a time (expected ISO-8601 like "
                              "2024-05-01T12:00:00Z, epoch seconds, or an age like 15m, 2h, 7d)") from None
    return parse_when(dt, where=where)


# --------------------------------------------------------------------------------------------- hashing

def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _hfield(v: Any) -> str:
    if v is None:
        return "\x00"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def row_hash(prev_hash: str, values: tuple) -> str:
    """SHA-256 over the previous hash and the stored fields (in ``FIELDS`` order), joined by the ASCII
    unit separator. No stored field can contain it (ids and client ids are printable, features and
    prediction are JSON, which escapes control characters); ``None`` is encoded as NUL."""
    return hashlib.sha256("\x1f".join([prev_hash, *map(_hfield, values)]).encode()).hexdigest()


@dataclass
class ChainReport:
    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _jdump(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays, datetimes
    if hasattr(o, "item") and callable(o.item):
        try:
            return o.item()
        except (ValueError, TypeError):
            pass
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


# --------------------------------------------------------------------------------------------- the log

class DecisionLog:
    """One decision log file. Safe to use from several threads and processes.

    ``append``/``append_many`` write synchronously (one transaction); the gateway uses
    :class:`DecisionWriter` to batch in the background instead.
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise BadInput(str(self.path), "decision log not found")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._wconn: sqlite3.Connection | None = None
        conn = None
        try:
            conn = self._connect()
            ready = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='decisions'").fetchone()
            if ready:  # an existing log: readers take no write lock
                return
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_DDL)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (to_iso(time.time()),))
        except sqlite3.DatabaseError as exc:
            raise BadInput(str(self.path), f"not a usable decision log ({exc})") from None
        finally:
            if conn is not None:
                conn.close()

    # -- connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            self._wconn = self._connect()
            # checkpoint the WAL every ~40 MB instead of ~4 MB: fewer fsyncs, ~15 % cheaper inserts
            self._wconn.execute("PRAGMA wal_autocheckpoint=10000")
        return self._wconn

    def close(self) -> None:
        with self._lock:
            if self._wconn is not None:
                self._wconn.close()
                self._wconn = None
            if getattr(self, "_rconn", None) is not None:
                self._rconn.close()
                self._rconn = None

    # -- writing
    @staticmethod
    def make_row(*, client_id: str, features: Any, prediction: Any, model: str, model_version: str,
                 score: float | None = None, artifact_digest: str | None = None,
                 latency_ms: float | None = None, request_id: str | None = None,
                 decision_id: str | None = None, ts: str | float | datetime | None = None,
                 source: str = "gateway") -> dict[str, Any]:
        """Normalise one decision into the stored shape (features and prediction as JSON text)."""
        if ts is None:
            ts_text = to_iso(time.time())
        elif isinstance(ts, str) and len(ts) == 27 and ts.endswith("Z"):
            ts_text = ts
        else:
            ts_text = parse_when(ts, where="ts")
        return {
            "decision_id": str(decision_id or new_decision_ids(1)[0]),
            "ts": ts_text,
            "client_id": str(client_id),
            "request_id": str(request_id or uuid.uuid4().hex),
            "model": str(model),
            "model_version": str(model_version),
            "artifact_digest": None if artifact_digest is None else str(artifact_digest),
            "features": features if isinstance(features, str) else _jdump(features),
            "prediction": _jdump(prediction),
            "score": _num(score),
            "latency_ms": _num(latency_ms),
            "source": str(source),
        }

    def append(self, **fields: Any) -> str:
        """Append one decision now; returns its decision id. See :meth:`make_row` for the fields."""
        row = self.make_row(**fields)
        self.write_rows([row])
        return row["decision_id"]

    def append_many(self, records: Iterable[dict[str, Any]]) -> list[str]:
        rows = [self.make_row(**r) for r in records]
        self.write_rows(rows)
        return [r["decision_id"] for r in rows]

    def write_rows(self, rows: list[dict[str, Any]]) -> int:
        """Insert already-normalised rows (:meth:`make_row` dicts) in one transaction, extending the chain."""
        return self.write_values([(r["decision_id"], r["ts"], r["client_id"], r["request_id"], r["model"],
                                   r["model_version"], r["artifact_digest"], r["features"], r["prediction"],
                                   r["score"], r["latency_ms"], r["source"]) for r in rows])

    def write_values(self, vals: list[tuple]) -> int:
        """:meth:`write_rows` for tuples in ``FIELDS[1:]`` order (the writers' fast path)."""
        if not vals:
            return 0
        with self._lock:
            conn = self._writer_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                tail = conn.execute("SELECT seq, row_hash FROM decisions ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = tail if tail else (0, GENESIS)
                params: list[Any] = []
                sha = hashlib.sha256
                for did, ts, cl, rid, mo, ve, dg, fe, pr, sc, lt, so in vals:
                    seq += 1
                    # inlined row_hash(prev, values) — same bytes, a fraction of the cost
                    h = sha((f"{prev}\x1f{seq}\x1f{did}\x1f{ts}\x1f{cl}\x1f{rid}\x1f{mo}\x1f{ve}"
                             f"\x1f{NUL if dg is None else dg}\x1f{fe}\x1f{pr}\x1f{NUL if sc is None else repr(sc)}"
                             f"\x1f{NUL if lt is None else repr(lt)}\x1f{so}").encode()).hexdigest()
                    params += (seq, did, ts, cl, rid, mo, ve, dg, fe, pr, sc, lt, so, prev, h)
                    prev = h
                width = len(FIELDS) + 2
                step = _CHUNK * width
                for i in range(0, len(params), step):
                    chunk = params[i:i + step]
                    conn.execute(_insert_sql(len(chunk) // width), chunk)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(vals)

    # -- reading
    @staticmethod
    def _where(since=None, until=None, version=None, client=None, model=None) -> tuple[str, list]:
        clauses, args = [], []
        if (s := parse_when(since, where="since")) is not None:
            clauses.append("ts >= ?")
            args.append(s)
        if (u := parse_when(until, where="until")) is not None:
            clauses.append("ts < ?")
            args.append(u)
        if version is not None:
            clauses.append("model_version = ?")
            args.append(str(version))
        if client is not None:
            clauses.append("client_id = ?")
            args.append(str(client))
        if model is not None:
            clauses.append("model = ?")
            args.append(str(model))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    @staticmethod
    def _to_dict(row: tuple) -> dict[str, Any]:
        d = dict(zip((*FIELDS, "prev_hash", "row_hash"), row, strict=True))
        d["features"] = json.loads(d["features"])
        d["prediction"] = json.loads(d["prediction"])
        return d

    def iter_rows(self, *, since=None, until=None, version=None, client=None, model=None,
                  limit: int | None = None, newest_first: bool = False) -> Iterator[dict[str, Any]]:
        """Stream decisions (oldest first unless ``newest_first``) without loading them all."""
        where, args = self._where(since, until, version, client, model)
        sql = f"{_SELECT}{where} ORDER BY seq {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            if int(limit) < 0:
                raise BadInput("limit", f"must be ≥ 0, got {limit}")
            sql += " LIMIT ?"
            args.append(int(limit))
        conn = self._connect()
        try:
            for row in conn.execute(sql, args):
                yield self._to_dict(row)
        finally:
            conn.close()

    def query(self, since=None, until=None, version=None, client=None, limit: int | None = None, *,
              model=None, newest_first: bool = False) -> list[dict[str, Any]]:
        """Decisions matching every given filter (``since`` inclusive, ``until`` exclusive)."""
        return list(self.iter_rows(since=since, until=until, version=version, client=client, model=model,
                                   limit=limit, newest_first=newest_first))

    def count(self, since=None, until=None, version=None, client=None) -> int:
        where, args = self._where(since, until, version, client)
        conn = self._connect()
        try:
            return conn.execute(f"SELECT COUNT(*) FROM decisions{where}", args).fetchone()[0]
        finally:
            conn.close()

    def count_by_client(self, version=None, since=None, until=None) -> dict[str, int]:
        """Number of decisions per client id (largest first)."""
        where, args = self._where(since, until, version)
        conn = self._connect()
        try:
            rows = conn.execute(f"SELECT client_id, COUNT(*) AS n FROM decisions{where} "
                                "GROUP BY client_id ORDER BY n DESC, client_id", args).fetchall()
        finally:
            conn.close()
        return dict(rows)

    def count_by_version(self, since=None, until=None, client=None) -> dict[str, int]:
        where, args = self._where(since, until, None, client)
        conn = self._connect()
        try:
            rows = conn.execute(f"SELECT model_version, COUNT(*) FROM decisions{where} "
                                "GROUP BY model_version ORDER BY model_version", args).fetchall()
        finally:
            conn.close()
        return dict(rows)

    def head(self) -> dict[str, Any]:
        """The chain tip: row count, last seq and last hash (anchor these in evidence)."""
        conn = self._connect()
        try:
            n = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
            tail = conn.execute("SELECT seq, row_hash, ts FROM decisions ORDER BY seq DESC LIMIT 1").fetchone()
        finally:
            conn.close()
        seq, h, ts = tail if tail else (0, GENESIS, None)
        return {"rows": n, "head_seq": seq, "head_hash": h, "last_ts": ts, "path": str(self.path)}

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        found: set[str] = set()
        conn = self._connect()
        try:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                q = f"SELECT decision_id FROM decisions WHERE decision_id IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in conn.execute(q, chunk))
        finally:
            conn.close()
        return found

    def get_many(self, decision_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Decisions by id, each with ``seq``, ``prev_hash`` and ``row_hash`` (one lookup in the unique
        index per id, whatever the log's size). Ids not in the log are absent from the result."""
        ids = [str(i) for i in decision_ids]
        out: dict[str, dict[str, Any]] = {}
        conn = self._connect()
        try:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                q = f"{_SELECT} WHERE decision_id IN ({','.join('?' * len(chunk))})"
                for row in conn.execute(q, chunk):
                    d = self._to_dict(row)
                    out[d["decision_id"]] = d
        finally:
            conn.close()
        return out

    def lookup(self, decision_ids: Iterable[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """``{id: (decision, proof)}``: :meth:`get_many` and :meth:`check_row` over one read connection
        kept by this object (what ``aiir trace`` uses: a few index lookups, whatever the log's size)."""
        with self._lock:
            if getattr(self, "_rconn", None) is None:
                self._rconn = self._connect()
            conn = self._rconn
            ids = [str(i) for i in decision_ids]
            out = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for row in conn.execute(f"{_SELECT} WHERE decision_id IN ({','.join('?' * len(chunk))})", chunk):
                    d = self._to_dict(row)
                    out[d["decision_id"]] = (d, self.check_row(d["seq"], conn=conn))
            return out

    def check_row(self, seq: int, *, conn: sqlite3.Connection | None = None) -> dict[str, Any]:
        """Local proof for one row: its hash matches its content, it links to the row before, and the row
        after links to it. Names what does not hold (``ok`` False), without walking the whole chain."""
        own = conn is None
        conn = conn or self._connect()
        try:
            rows = {r[0]: r for r in conn.execute(_SELECT + " WHERE seq BETWEEN ? AND ? ORDER BY seq",
                                                   (seq - 1, seq + 1))}
            last = conn.execute("SELECT MAX(seq) FROM decisions").fetchone()[0] or 0
        finally:
            if own:
                conn.close()
        problems: list[str] = []
        me = rows.get(seq)
        if me is None:
            return {"ok": False, "seq": seq, "problems": [f"row seq {seq} is not in the log"]}
        values = (*me[:10], _num(me[10]), _num(me[11]), me[12])
        if row_hash(me[-2], values) != me[-1]:
            problems.append(f"row seq {seq} (decision {me[1]}) was modified: its hash does not match its content")
        before = rows.get(seq - 1)
        if seq == 1:
            if me[-2] != GENESIS:
                problems.append("row seq 1 does not start the chain")
        elif before is None:
            problems.append(f"row seq {seq - 1} (the one before) is missing: a row was deleted")
        elif before[-1] != me[-2]:
            problems.append(f"row seq {seq}: prev_hash does not match row seq {seq - 1}'s hash")
        after = rows.get(seq + 1)
        if after is None and seq < last:
            problems.append(f"row seq {seq + 1} (the one after) is missing: a row was deleted")
        elif after is not None and after[-2] != me[-1]:
            problems.append(f"row seq {seq + 1} does not link to row seq {seq}")
        return {"ok": not problems, "seq": seq, "row_hash": me[-1], "prev_hash": me[-2], "last_seq": last,
                "problems": problems}

    def verify_chain(self, *, expected_head: str | None = None) -> ChainReport:
        """Recompute every row hash in order. ``ok`` is False at the first row that was changed,
        removed (a gap in ``seq``), reordered or inserted out of chain; with ``expected_head`` also when
        rows were cut from the end since that head was recorded."""
        prev, seq_expected, n, last_seq = GENESIS, 1, 0, 0
        conn = self._connect()
        try:
            for row in conn.execute(_SELECT + " ORDER BY seq ASC"):
                values, stored_prev, stored_hash = tuple(row[:len(FIELDS)]), row[-2], row[-1]
                seq = values[0]
                if seq != seq_expected:
                    return ChainReport(False, n, last_seq, prev, seq_expected,
                                       f"row seq {seq_expected} is missing (next row is seq {seq})")
                if stored_prev != prev:
                    return ChainReport(False, n, last_seq, prev, seq,
                                       f"row seq {seq}: prev_hash does not match the previous row's hash")
                # REAL columns come back as float; TEXT as str — the same values that were hashed.
                values = (*values[:10], _num(values[10]), _num(values[11]), values[12])
                h = row_hash(prev, values)
                if h != stored_hash:
                    return ChainReport(False, n, last_seq, prev, seq,
                                       f"row seq {seq} (decision {values[1]}) was modified: its hash does "
                                       "not match its content")
                prev, last_seq, seq_expected, n = h, seq, seq + 1, n + 1
        finally:
            conn.close()
        if expected_head is not None and expected_head != prev:
            return ChainReport(False, n, last_seq, prev, None,
                               f"chain head {prev[:12]}… differs from the expected head {expected_head[:12]}… "
                               "(rows were removed from the end or the log was replaced)")
        return ChainReport(True, n, last_seq, prev)

    # -- exports / imports (implemented in aiir.gateway.exports)
    def export_ecs(self, out_path: str | Path, *, since=None, until=None, version=None, client=None,
                   limit: int | None = None) -> int:
        """Write ECS JSON lines (one event per decision) for Elastic; returns the number written."""
        from aiir.gateway.exports import ecs_event, write_jsonl

        return write_jsonl(out_path, (ecs_event(r) for r in self.iter_rows(
            since=since, until=until, version=version, client=client, limit=limit)))

    def export_hec(self, out_path: str | Path, *, since=None, until=None, version=None, client=None,
                   limit: int | None = None, host: str | None = None, index: str | None = None) -> int:
        """Write Splunk HTTP Event Collector events (one JSON object per line); returns the count."""
        from aiir.gateway.exports import hec_event, write_jsonl

        return write_jsonl(out_path, (hec_event(r, host=host, index=index) for r in self.iter_rows(
            since=since, until=until, version=version, client=client, limit=limit)))

    def import_sagemaker_capture(self, jsonl_path: str | Path, model: str, version: str, *,
                                 columns: list[str] | None = None, client_id: str = "sagemaker",
                                 artifact_digest: str | None = None) -> dict[str, Any]:
        """Append the decisions in a SageMaker Data Capture JSONL file. Idempotent: rows whose decision id
        (``eventId`` or ``eventId:row``) is already in the log are skipped. Returns a summary."""
        from aiir.gateway.exports import read_sagemaker_capture

        rows = read_sagemaker_capture(jsonl_path, model=model, version=version, columns=columns,
                                      client_id=client_id, artifact_digest=artifact_digest)
        seen = self.existing_ids(r["decision_id"] for r in rows)
        fresh, dup = [], 0
        for r in rows:
            if r["decision_id"] in seen:
                dup += 1
            else:
                seen.add(r["decision_id"])
                fresh.append(self.make_row(**r))
        self.write_rows(fresh)
        return {"file": str(jsonl_path), "imported": len(fresh), "skipped_duplicates": dup,
                "model": model, "version": str(version), "log": str(self.path)}


# --------------------------------------------------------------------------------------------- writer

_TEMPLATES: dict[tuple, str] = {}


def _features_template(columns) -> str:
    key = tuple(columns)
    t = _TEMPLATES.get(key)
    if t is None:
        t = "{" + ",".join(json.dumps(str(c), ensure_ascii=False).replace("%", "%%") + ":%r"
                           for c in columns) + "}"
        if len(_TEMPLATES) < 64:
            _TEMPLATES[key] = t
    return t


class LogBacklogFull(Exception):
    """The writer is too far behind (or failing): refuse new decisions rather than lose them."""


class DecisionWriter:
    """Background writer. ``submit`` is a deque append (atomic, no lock, no wake-up under load); one
    thread wakes every ``linger`` seconds while there is work, drains the deque and inserts everything in
    one transaction. Waking per batch rather than per request keeps the writer from fighting the event
    loop for the GIL. A failing batch is retried (the file may be briefly locked by another writer);
    after ``max_retries`` it goes to ``<log>.rejects.jsonl`` so no decision is silently lost."""

    def __init__(self, log: DecisionLog, *, linger: float = 0.025, max_batch: int = 20_000,
                 max_backlog: int = 100_000, max_retries: int = 20, encryptor: Any | None = None):
        self.log = log
        # optional aiir.audit.fieldcrypt.FieldEncryptor: named features are stored encrypted
        self.encryptor = encryptor
        self.linger = linger
        self.max_batch = max_batch
        self.max_backlog = max_backlog
        self.max_retries = max_retries
        self._dq: collections.deque = collections.deque()
        # Two single-writer counters (submitter thread / writer thread), so no lock is needed.
        self._submitted = 0
        self._done = 0
        self.written = 0
        self.rejected = 0
        self.batches = 0
        self.last_error: str | None = None
        self._idle = False
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="aiir-decision-writer", daemon=True)
        self._thread.start()

    # A request's decisions travel as one item:
    # (t_epoch, client_id, request_id, model, version, digest, columns, rows, decision_ids,
    #  predictions, scores, latency_ms, source)
    def submit(self, item: tuple) -> int:
        n = len(item[8])
        if self._submitted - self._done + n > self.max_backlog:
            raise LogBacklogFull(f"decision log backlog is full ({self.pending} rows pending"
                                 + (f"; last error: {self.last_error}" if self.last_error else "") + ")")
        if self._stopping:
            raise LogBacklogFull("decision log writer is shutting down")
        self._submitted += n
        self._dq.append(item)
        if self._idle:
            self._idle = False
            self._wake.set()
        return self._submitted

    @property
    def pending(self) -> int:
        """Rows submitted but not yet committed (or rejected)."""
        return self._submitted - self._done

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted before this call is committed. False on timeout."""
        target = self._submitted
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return self._done >= target
            time.sleep(0.002)
        return True

    async def aflush(self, timeout: float = 10.0) -> bool:
        """:meth:`flush` for the event loop (polls without blocking it)."""
        import asyncio

        target = self._submitted
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return self._done >= target
            await asyncio.sleep(0.002)
        return True

    def close(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        dq = self._dq
        while True:
            if not dq:
                if self._stopping:
                    return
                self._idle = True
                if not dq:  # re-check after announcing idleness (submit may have raced)
                    self._wake.wait(1.0)
                self._wake.clear()
                self._idle = False
                if not dq:
                    continue
                if not self._stopping:
                    time.sleep(self.linger)  # let a batch accumulate
            items, n_rows = [], 0
            while dq and n_rows < self.max_batch:
                it = dq.popleft()
                items.append(it)
                n_rows += len(it[8])
            self._write(items, n_rows)
            if dq and not self._stopping and n_rows < self.max_batch:
                time.sleep(self.linger)

    @staticmethod
    def _expand_values(item: tuple, encryptor: Any | None = None) -> list[tuple]:
        """One request's item → row tuples in ``FIELDS[1:]`` order (features and prediction as JSON);
        with ``encryptor`` (:class:`aiir.audit.fieldcrypt.FieldEncryptor`) its fields are stored encrypted."""
        (t, client_id, request_id, model, version, digest, columns, rows, ids, preds, scores,
         latency_ms, source) = item
        ts = to_iso(t)
        lat = None if latency_ms is None else float(latency_ms)
        tmpl = _features_template(columns)
        isfinite = math.isfinite
        out = []
        for i, did in enumerate(ids):
            row = rows[i]
            # fast path: every value a finite float/int → %r is exact JSON; else the json module
            if encryptor is not None:
                feats = encryptor.encrypt_features(did, dict(zip(columns, row, strict=False)))
            elif all((type(v) is float and isfinite(v)) or type(v) is int for v in row):
                feats = tmpl % tuple(row)
            else:
                feats = _jdump(dict(zip(columns, row, strict=False)))
            p = preds[i]
            tp = type(p)
            pred = str(p) if tp is int else repr(p) if tp is float and isfinite(p) else _jdump(p)
            sc = scores[i] if scores is not None else None
            out.append((did, ts, client_id, request_id, model, version, digest, feats, pred,
                        None if sc is None else float(sc), lat, source))
        return out

    @staticmethod
    def _expand(item: tuple, encryptor: Any | None = None) -> list[dict[str, Any]]:
        return [dict(zip(FIELDS[1:], v, strict=True)) for v in DecisionWriter._expand_values(item, encryptor)]

    def _write(self, items: list[tuple], n_rows: int) -> None:
        try:
            rows = [v for it in items for v in self._expand_values(it, self.encryptor)]
        except Exception as exc:  # a value json cannot encode: keep the rest, reject the batch to a file
            self.last_error = f"cannot encode decisions: {exc}"
            self._reject_raw(items, n_rows)
            return
        for attempt in range(self.max_retries):
            try:
                self.log.write_values(rows)
                self.written += len(rows)
                self.batches += 1
                self._done += n_rows
                self.last_error = None
                return
            except Exception as exc:  # locked, disk full, …: retry with backoff
                self.last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
        self._reject_rows(rows)
        self._done += n_rows

    def _reject_rows(self, rows: list[tuple]) -> None:
        path = Path(str(self.log.path) + ".rejects.jsonl")
        with open(path, "a", encoding="utf-8") as fh:
            for v in rows:
                fh.write(json.dumps({"error": self.last_error, **dict(zip(FIELDS[1:], v, strict=True))}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rejected += len(rows)

    def _reject_raw(self, items: list[tuple], n_rows: int) -> None:
        path = Path(str(self.log.path) + ".rejects.jsonl")
        with open(path, "a", encoding="utf-8") as fh:
            for it in items:  # never the plaintext of fields that are to be encrypted
                raw = "(withheld: field encryption is on)" if self.encryptor is not None else repr(it)[:10000]
                fh.write(json.dumps({"error": self.last_error, "item": raw}) + "\n")
        self.rejected += n_rows
        self._done += n_rows

    def stats(self) -> dict[str, Any]:
        return {"mode": "thread", "pending": self.pending, "written": self.written, "batches": self.batches,
                "rejected": self.rejected, "last_error": self.last_error,
                "alive": self._thread.is_alive()}


def new_decision_ids(n: int) -> list[str]:
    """``n`` time-ordered UUIDs (version 7 layout: 48-bit Unix ms, then random bits). Sorting by id sorts
    by time, and the unique index on decision_id grows at its right edge instead of randomly."""
    ms = time.time_ns() // 1_000_000
    rnd = int.from_bytes(os.urandom(10 * n), "big")
    out = []
    head = (ms << 80) | (0x7 << 76)
    for _ in range(n):
        r = rnd & 0xFFFFFFFFFFFFFFFFFFFF
        rnd >>= 80
        v = head | ((r >> 62) & 0xFFF) << 64 | (0b10 << 62) | (r & 0x3FFFFFFFFFFFFFFF)
        h = f"{v:032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def default_export_name(fmt: str) -> str:
    return f"decisions-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.{fmt}.jsonl"


__all__ = ["DecisionLog", "DecisionWriter", "ChainReport", "LogBacklogFull", "parse_when", "to_iso",
           "row_hash", "GENESIS", "FIELDS", "new_decision_ids"]
