"""The decision-log writer as a child process — the gateway's default.

Why a process: building each row (features JSON, hash chain) and inserting it is Python work; in a
thread it competes with the event loop for the GIL, so on a busy gateway every logged row delays the
next request. In a child process it runs on another core.

Protocol (private pipes, parent ↔ child):

* parent → child (child's stdin): frames of ``8-byte big-endian length`` + ``pickle(list of items)``,
  one item per request (the tuple :class:`~aiir.gateway.decision_log.DecisionWriter` takes);
* child → parent (child's stdout): one line per committed frame, ``<cumulative rows done>`` or
  ``<cumulative rows done> E <error>`` when a batch had to go to ``<log>.rejects.jsonl``.

End of input → the child commits what it has and exits 0. If the child dies, the parent stops
accepting decisions (scoring returns 503 — no unlogged decisions) and writes every unacknowledged
decision to the rejects file.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiir.gateway.decision_log import DecisionLog, DecisionWriter, LogBacklogFull

_LEN = struct.Struct(">Q")


class ProcessDecisionWriter:
    """Same surface as :class:`DecisionWriter` (``submit``, ``flush``, ``aflush``, ``close``, ``stats``,
    ``pending``); ``submit`` must be called from the event loop thread."""

    def __init__(self, path: str | Path, *, linger: float = 0.025, max_backlog: int = 100_000,
                 ship_rows: int = 2000, durable: bool = False, encryptor_env: dict[str, str] | None = None):
        """``encryptor_env``: :meth:`aiir.audit.fieldcrypt.FieldEncryptor.env` — the child builds the same
        encryptor from its environment (the key never appears on a command line)."""
        self.path = Path(path)
        self.encrypted = bool(encryptor_env)
        self.durable = durable
        # durable: responses wait for the commit, so ship often (group commit every ~2 ms)
        self.linger = min(linger, 0.002) if durable else linger
        self.max_backlog = max_backlog
        self.ship_rows = ship_rows
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(encryptor_env or {})}
        if not encryptor_env:
            env.pop("AIIR_DECISION_LOG_ENCRYPT_FIELDS", None)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "aiir.gateway.log_writer", str(self.path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self._wfd = self.proc.stdin.fileno()
        self._rfd = self.proc.stdout.fileno()
        for fd in (self._wfd, self._rfd):
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self._buf: list[tuple] = []
        self._buf_rows = 0
        self._out = bytearray()  # framed bytes not yet accepted by the pipe
        self._unacked: deque[tuple[int, list[tuple]]] = deque()  # (cumulative rows at end, items)
        self._shipped = 0
        self._submitted = 0
        self._done = 0
        self._ackbuf = b""
        self.written = 0
        self.rejected = 0
        self.batches = 0
        self.last_error: str | None = None
        self.dead: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_task: asyncio.Task | None = None
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._writer_registered = False
        self._closed = False

    # ------------------------------------------------------------------ event-loop side
    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        loop.add_reader(self._rfd, self._on_ack)
        self._pump_task = loop.create_task(self._pump())

    async def _pump(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.linger)
            if self._buf:
                self._ship()

    def submit(self, item: tuple) -> int:
        """Queue one request's decisions; returns the commit mark to pass to :meth:`committed`."""
        if self.dead is not None:
            raise LogBacklogFull(f"decision log writer is down ({self.dead})")
        n = len(item[8])
        if self._submitted - self._done + n > self.max_backlog:
            raise LogBacklogFull(f"decision log backlog is full ({self.pending} rows pending"
                                 + (f"; last error: {self.last_error}" if self.last_error else "") + ")")
        if self._loop is None:
            self._attach()
        self._buf.append(item)
        self._buf_rows += n
        self._submitted += n
        if self._buf_rows >= self.ship_rows:
            self._ship()
        return self._submitted

    async def committed(self, mark: int, timeout: float = 10.0) -> None:
        """Wait until every decision up to ``mark`` is committed (raises LogBacklogFull if it cannot be)."""
        if self._done >= mark:
            return
        if self.dead is not None:
            raise LogBacklogFull(f"decision log writer is down ({self.dead})")
        fut = self._loop.create_future()
        self._waiters.append((mark, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise LogBacklogFull(f"decision not committed within {timeout:g}s") from None

    def _wake_waiters(self) -> None:
        if not self._waiters:
            return
        keep = []
        for mark, fut in self._waiters:
            if fut.done():
                continue
            if self.dead is not None:
                fut.set_exception(LogBacklogFull(f"decision log writer is down ({self.dead})"))
            elif mark <= self._done:
                fut.set_result(None)
            else:
                keep.append((mark, fut))
        self._waiters = keep

    def _ship(self) -> None:
        items, self._buf = self._buf, []
        self._shipped += self._buf_rows
        self._buf_rows = 0
        self._unacked.append((self._shipped, items))
        data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        self._out += _LEN.pack(len(data))
        self._out += data
        self._write_out()

    def _write_out(self) -> None:
        while self._out:
            try:
                n = os.write(self._wfd, self._out)
            except BlockingIOError:
                break
            except (BrokenPipeError, OSError) as exc:
                self._died(f"pipe to writer closed ({exc})")
                return
            del self._out[:n]
        if self._out and not self._writer_registered and self._loop is not None:
            self._loop.add_writer(self._wfd, self._write_out)
            self._writer_registered = True
        elif not self._out and self._writer_registered:
            self._loop.remove_writer(self._wfd)
            self._writer_registered = False

    def _on_ack(self) -> None:
        try:
            chunk = os.read(self._rfd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk = b""
            self.last_error = str(exc)
        if not chunk:
            if self._loop is not None:
                self._loop.remove_reader(self._rfd)
            if not self._closed:
                self._died(f"writer process exited (code {self.proc.poll()})")
            return
        self._ackbuf += chunk
        *lines, self._ackbuf = self._ackbuf.split(b"\n")
        for line in lines:
            self._handle_ack(line)

    def _handle_ack(self, line: bytes) -> None:
        parts = line.decode(errors="replace").split(" ", 2)
        try:
            done = int(parts[0])
        except ValueError:
            return
        if len(parts) == 3 and parts[1] == "E":
            self.last_error = parts[2]
            self.rejected += done - self._done
        else:
            self.written += done - self._done
            self.last_error = None
        self.batches += 1
        self._done = done
        while self._unacked and self._unacked[0][0] <= done:
            self._unacked.popleft()
        self._wake_waiters()

    def _died(self, why: str) -> None:
        if self.dead is not None:
            return
        self.dead = why
        self.last_error = why
        # nothing silently lost: everything not acknowledged goes to the rejects file
        pending = [it for _, items in self._unacked for it in items] + self._buf
        self._unacked.clear()
        self._buf = []
        if pending:
            _reject_items(self.path, pending, why, withhold=self.encrypted)
            lost = sum(len(it[8]) for it in pending)
            self.rejected += lost
            self._done += lost
        print(f"aiir gateway: decision log writer failed: {why}; scoring now returns 503",
              file=sys.stderr, flush=True)
        try:
            self._wake_waiters()
        except RuntimeError:  # loop already closed
            pass

    @property
    def pending(self) -> int:
        return self._submitted - self._done

    async def aflush(self, timeout: float = 10.0) -> bool:
        target = self._submitted
        if self._buf:
            self._ship()
        deadline = time.monotonic() + timeout
        while self._done < target:
            if self.dead is not None or time.monotonic() > deadline:
                return self._done >= target
            await asyncio.sleep(0.002)
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """From another thread while the loop runs: ask the loop to ship, then wait for the acks."""
        target = self._submitted
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(lambda: self._buf and self._ship())
        deadline = time.monotonic() + timeout
        while self._done < target:
            if self.dead is not None or time.monotonic() > deadline:
                return self._done >= target
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Send the rest (blocking), end the child's input, wait for it, read the final acks. Safe on the
        loop's thread during shutdown or after the loop stopped; idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():  # detach from the loop (may still be running)
            try:
                loop.remove_reader(self._rfd)
                if self._writer_registered:
                    loop.remove_writer(self._wfd)
                    self._writer_registered = False
                if self._pump_task is not None:
                    self._pump_task.cancel()
            except (RuntimeError, ValueError, OSError):
                pass
        if self.dead is None:
            try:
                if self._buf:
                    items, self._buf = self._buf, []
                    self._shipped += self._buf_rows
                    self._buf_rows = 0
                    self._unacked.append((self._shipped, items))
                    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
                    self._out += _LEN.pack(len(data)) + data
                fl = fcntl.fcntl(self._wfd, fcntl.F_GETFL)
                fcntl.fcntl(self._wfd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
                while self._out:
                    n = os.write(self._wfd, self._out)
                    del self._out[:n]
            except OSError as exc:
                self.last_error = f"could not hand over the last decisions ({exc})"
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            fl = fcntl.fcntl(self._rfd, fcntl.F_GETFL)
            fcntl.fcntl(self._rfd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
            rest = self._ackbuf + self.proc.stdout.read()
            for line in rest.split(b"\n"):
                if line.strip():
                    self._handle_ack(line)
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self._unacked and self.dead is None:
            self._died(f"writer process ended with code {self.proc.returncode} before committing everything")

    def stats(self) -> dict[str, Any]:
        return {"mode": "process", "durable": self.durable, "pid": self.proc.pid, "pending": self.pending, "written": self.written,
                "batches": self.batches, "rejected": self.rejected, "last_error": self.last_error,
                "alive": self.dead is None and self.proc.poll() is None}


def _reject_items(path: Path, items: list[tuple], why: str, *, encryptor=None, withhold: bool = False) -> None:
    rej = Path(str(path) + ".rejects.jsonl")
    with open(rej, "a", encoding="utf-8") as fh:
        for it in items:
            try:
                if withhold and encryptor is None:  # the parent has no key object: keep no plaintext
                    raise ValueError("withheld")
                rows = DecisionWriter._expand(it, encryptor)
            except Exception:  # noqa: BLE001 — keep something rather than nothing
                rows = [{"item": "(withheld: field encryption is on)" if withhold else repr(it)[:10000]}]
            for r in rows:
                fh.write(json.dumps({"error": why, **r}, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------------------------------- child

def _child(db_path: str) -> int:
    # The parent decides when we stop (end of input, also when it dies): a Ctrl-C sent to the whole
    # process group must not kill the writer before the parent hands over the last decisions.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log = DecisionLog(db_path)
    from aiir.audit.fieldcrypt import FieldEncryptor

    encryptor = FieldEncryptor.from_env()
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    done = 0
    while True:
        head = inp.read(_LEN.size)
        if not head or len(head) < _LEN.size:
            break
        (n,) = _LEN.unpack(head)
        data = inp.read(n)
        if len(data) < n:
            break
        items = pickle.loads(data)
        n_rows = sum(len(it[8]) for it in items)
        err = None
        try:
            rows = [v for it in items for v in DecisionWriter._expand_values(it, encryptor)]
        except Exception as exc:  # noqa: BLE001
            err = f"cannot encode decisions: {exc}"
            rows = None
        if rows is not None:
            for attempt in range(20):
                try:
                    log.write_values(rows)
                    err = None
                    break
                except Exception as exc:  # noqa: BLE001 — locked, disk full …: retry with backoff
                    err = f"{type(exc).__name__}: {exc}"
                    time.sleep(min(0.05 * 2 ** attempt, 2.0))
        if err is not None:
            _reject_items(Path(db_path), items, err, encryptor=encryptor, withhold=encryptor is not None)
        done += n_rows
        out.write(f"{done}{' E ' + err.replace(chr(10), ' ') if err else ''}\n".encode())
        out.flush()
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
