"""``aiir traffic``: replay clean rows against a gateway at a fixed rate with several client ids."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from aiir.errors import BadInput


def _rows(data: Path, label_column: str | None) -> tuple[list[str], list[list[Any]]]:
    from aiir.tabular import read_table, require_columns

    df = read_table(data, what="traffic data")
    if label_column:
        require_columns(df, {"--label-column": label_column}, where=str(data))
        df = df.drop(columns=[label_column])
    df = df.astype(object).where(df.notna(), None)
    return [str(c) for c in df.columns], df.values.tolist()


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 3)


def replay(*, url: str | None, data: Path, rate: float, duration: float, clients: list[str],
           label_column: str | None = None, batch: int = 1, concurrency: int = 16,
           timeout: float = 5.0) -> dict[str, Any]:
    from aiir import config

    if rate <= 0 or not math.isfinite(rate):
        raise BadInput("--rate", f"must be > 0, got {rate}")
    if duration <= 0:
        raise BadInput("--duration", f"must be > 0, got {duration}")
    if batch < 1:
        raise BadInput("--batch", f"must be ≥ 1, got {batch}")
    if not clients:
        raise BadInput("--clients", "give at least one client id")
    base = (url or config.gateway_url()).rstrip("/")
    columns, rows = _rows(Path(data), label_column)
    return asyncio.run(_run(base, columns, rows, rate, duration, clients, batch, max(1, concurrency), timeout))


async def _run(base, columns, rows, rate, duration, clients, batch, concurrency, timeout) -> dict[str, Any]:
    import httpx

    total = max(1, int(rate * duration))
    sem = asyncio.Semaphore(concurrency)
    status: Counter = Counter()
    by_client: dict[str, Counter] = defaultdict(Counter)
    by_version: Counter = Counter()
    errors: Counter = Counter()
    lat: list[float] = []
    decisions = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as http:
        async def one(i: int) -> None:
            nonlocal decisions
            client = clients[i % len(clients)]
            start = (i * batch) % len(rows)
            chunk = [rows[(start + k) % len(rows)] for k in range(batch)]
            body = json.dumps({"dataframe_split": {"columns": columns, "data": chunk}}, default=str)
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await http.post("/invocations", content=body,
                                        headers={"Content-Type": "application/json", "X-Client-Id": client})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    by_client[client]["error"] += 1
                    by_client[client]["sent"] += 1
                    return
                lat.append((time.perf_counter() - t0) * 1000)
            status[str(r.status_code)] += 1
            by_client[client]["sent"] += 1
            by_client[client][str(r.status_code)] += 1
            if r.status_code == 200:
                by_client[client]["ok"] += 1
                by_version[r.headers.get("x-model-version", "?")] += 1
                decisions += batch
            else:
                try:
                    errors[r.json().get("error", str(r.status_code))] += 1
                except ValueError:
                    errors[str(r.status_code)] += 1

        t_start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = t_start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t_start

    ok = status.get("200", 0)
    return {
        "url": base, "sent": total, "ok": ok, "errors": total - ok, "decisions": decisions,
        "duration_s": round(elapsed, 3), "rate_target": rate, "rate_achieved": round(total / elapsed, 2),
        "by_status": dict(sorted(status.items())), "error_kinds": dict(errors),
        "by_client": {c: dict(v) for c, v in sorted(by_client.items())},
        "by_version": dict(sorted(by_version.items())),
        "latency_ms": {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99), "max": _pct(lat, 1.0)},
    }
