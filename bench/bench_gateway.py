"""Benchmark: `aiir serve` vs `mlflow models serve` on the same model, same load, same run.

Measures
  1. throughput and p50/p99 latency under the same concurrent load (single-row and 10-row requests,
     fixed request count, N keep-alive connections) for: aiir serve (decision logging on),
     aiir serve --no-log, and mlflow models serve -m models:/NAME@champion --env-manager local;
  2. logging overhead = 1 - throughput(log on) / throughput(--no-log), and the same in server CPU time
     per request (all processes of the server: gateway, log writer child; mlflow's uvicorn worker);
     aiir serve --durable (answers after the commit) is measured alongside;
  3. containment latency: time from the start of an admin isolate call to the first response served by
     the fallback version, with another thread scoring continuously (repeated isolate/restore cycles).

The load generator is a minimal asyncio HTTP/1.1 client (pre-built request bytes, keep-alive), so the
client spends as little of the shared CPU as possible. Rounds interleave the servers to spread noise.

    .venv/bin/python bench/bench_gateway.py [--requests 3000] [--connections 8] [--rounds 3]

Writes bench/results/gateway-<UTC>.json and prints the summary JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, module_at_revision  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "include"))

MODEL = "bench-fraud"


# ------------------------------------------------------------------------------------------ servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/ping")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not answer /ping within {timeout}s")


def start(cmd: list[str], env: dict, port: int, log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ping(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ------------------------------------------------------------------------------------------ load

def request_bytes(port: int, body: bytes, client: str) -> bytes:
    head = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Client-Id: {client}\r\n\r\n").encode()
    return head + body


async def _read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    h = low.find(b"content-length:")
    if h >= 0:
        await reader.readexactly(int(low[h + 15:low.find(b"\r\n", h)]))
    else:  # chunked
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return int(head[9:12]), low


async def _conn_worker(port: int, req: bytes, budget: list[int], lat: list[float], bad: list[int],
                       versions: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reqs = req if isinstance(req, list) else [req]  # a list: cycle through different requests
    i = 0
    try:
        while budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            i += 1
            status, low = await _read_response(reader)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                bad[0] += 1
            j = low.find(b"x-model-version:")
            if j >= 0:
                v = low[j + 16:low.find(b"\r\n", j)].strip().decode()
                versions[v] = versions.get(v, 0) + 1
    finally:
        writer.close()


def cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in a process group (the server, its workers, its log writer)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the ")"
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_load(port: int, body: bytes, n_requests: int, connections: int, pgid: int | None = None) -> dict:
    async def main():
        budget = [n_requests]
        lat: list[float] = []
        bad = [0]
        versions: dict = {}
        reqs = [request_bytes(port, body, f"bench-{k}") for k in range(connections)]
        t0 = time.perf_counter()
        await asyncio.gather(*(_conn_worker(port, reqs[k], budget, lat, bad, versions)
                               for k in range(connections)))
        return time.perf_counter() - t0, lat, bad[0], versions

    cpu0 = cpu_seconds(pgid) if pgid else None
    elapsed, lat, bad, versions = asyncio.run(main())
    cpu = cpu_seconds(pgid) - cpu0 if pgid else None
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000  # noqa: E731
    return {"requests": len(lat), "errors": bad, "seconds": round(elapsed, 3),
            "rps": round(len(lat) / elapsed, 1), "p50_ms": round(q(0.50), 3), "p99_ms": round(q(0.99), 3),
            "versions": versions,
            "server_cpu_ms_per_request": round(cpu * 1000 / max(1, len(lat)), 4) if cpu is not None else None}


# ------------------------------------------------------------------------------------------ isolation

def admin(port: int, token: str, path: str, body: dict) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {token}",
                                               "Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status} {data}")
    return data


def isolation_latency(port: int, token: str, body: bytes, fallback: str, primary: str, cycles: int) -> dict:
    """Poll /invocations continuously on one connection; time isolate → first fallback response."""
    seen: list[tuple[float, str]] = []
    stop_flag = threading.Event()
    lock = threading.Lock()

    def poller():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        hdr = {"Content-Type": "application/json", "X-Client-Id": "bench-poller"}
        while not stop_flag.is_set():
            c.request("POST", "/invocations", body, hdr)
            r = c.getresponse()
            r.read()
            with lock:
                seen.append((time.perf_counter(), r.getheader("X-Model-Version")))

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    time.sleep(0.3)

    def wait_for(version: str, t0: float, timeout: float = 5.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with lock:
                for t, v in reversed(seen):
                    if t < t0:
                        break
                    if v == version:
                        first = min(tt for tt, vv in seen if tt >= t0 and vv == version)
                        return first - t0
            time.sleep(0.0005)
        raise RuntimeError(f"version {version} never served within {timeout}s")

    iso, adm, rest = [], [], []
    for _ in range(cycles):
        t0 = time.perf_counter()
        admin(port, token, "/admin/isolate", {"reason": "bench"})
        adm.append(time.perf_counter() - t0)
        iso.append(wait_for(fallback, t0))
        time.sleep(0.05)
        t1 = time.perf_counter()
        admin(port, token, "/admin/restore", {"reason": "bench"})
        rest.append(wait_for(primary, t1))
        time.sleep(0.05)
    stop_flag.set()
    th.join(5)
    ms = lambda xs: [round(x * 1000, 2) for x in xs]  # noqa: E731
    return {"cycles": cycles, "isolate_to_first_fallback_ms": ms(iso),
            "median_ms": round(statistics.median(iso) * 1000, 2), "max_ms": round(max(iso) * 1000, 2),
            "admin_call_ms_median": round(statistics.median(adm) * 1000, 2),
            "restore_to_first_primary_ms_median": round(statistics.median(rest) * 1000, 2),
            "polled_requests": len(seen)}


# ------------------------------------------------------------------------------------------ main

def machine() -> dict:
    cpu = cpu_model(platform.processor())
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import mlflow  # noqa: F401  (version only)
    import sklearn
    import starlette
    import uvicorn

    return {"nproc": os.cpu_count(), "memory_gib": mem, "cpu": cpu, "python": platform.python_version(),
            "mlflow": sys.modules["mlflow"].__version__, "sklearn": sklearn.__version__,
            "starlette": starlette.__version__, "uvicorn": uvicorn.__version__}


SECTION = "## Serving gateway (bench/bench_gateway.py)"


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def markdown(res: dict) -> str:
    m, p, iso = res["machine"], res["params"], res["isolation"]
    lines = [
        SECTION, "",
        f"Run: {res['date']} — machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Python {m['python']}; mlflow {m['mlflow']}, scikit-learn {m['sklearn']}, starlette {m['starlette']}, "
        f"uvicorn {m['uvicorn']}. Load average (1 min) {m['loadavg_1m_before']} before → "
        f"{m['loadavg_1m_after']} after: the machine is shared, so throughput is noisy; server CPU per "
        "request is the steadier number.",
        "",
        f"Same model (synthetic 6-feature logistic regression, `{p['model']}@champion`), same run, same load: "
        f"{p['requests']:,} requests per measurement over {p['connections']} keep-alive connections "
        f"(a minimal asyncio HTTP/1.1 client), {p['rounds']} interleaved rounds, medians reported. "
        "`mlflow` is `mlflow models serve -m models:/NAME@champion --env-manager local` (1 uvicorn worker, "
        "its default); `aiir` is `aiir serve` with decision logging on (default child-process writer), "
        "`aiir --no-log` without logging, `aiir --durable` answering only after the commit. CPU is utime+stime "
        "of every process of the server (gateway + log writer; mlflow's parent + worker) per request.",
        "",
        "| scenario | server | req/s | p50 ms | p99 ms | server CPU ms/req |",
        "|---|---|---|---|---|---|",
    ]
    names = {"aiir": "aiir", "aiir_nolog": "aiir --no-log", "aiir_durable": "aiir --durable",
             "aiir_guard": "aiir --guard",
             "mlflow": "mlflow models serve"}
    for scen, s in res["summary"].items():
        for k, label in names.items():
            if k in s:
                r = s[k]
                lines.append(f"| {scen.replace('_', ' ')} | {label} | {_fmt(r['rps_median'])} | "
                             f"{r['p50_ms_median']:.2f} | {r['p99_ms_median']:.2f} | "
                             f"{r['server_cpu_ms_per_request']:.3f} |")
    lines += ["", "| scenario | throughput aiir / mlflow (goal ≥ 1.0×) | p99 aiir / mlflow | "
                  "logging overhead, throughput (goal ≤ 10 %) | logging overhead, CPU | durable / mlflow |",
              "|---|---|---|---|---|---|"]
    for scen, s in res["summary"].items():
        lines.append(f"| {scen.replace('_', ' ')} | **{s['ratio_aiir_vs_mlflow_throughput']:.2f}×** | "
                     f"{s['p99_ratio_aiir_vs_mlflow']:.2f}× | **{100 * s['logging_overhead']:.1f} %** | "
                     f"{100 * s['logging_overhead_cpu']:.1f} % | "
                     f"{s.get('ratio_aiir_durable_vs_mlflow_throughput', float('nan')):.2f}× |")
    if all("guard_overhead" in s for s in res["summary"].values()):
        lines += ["", "Inline evasion guard (`aiir serve --guard --guard-reference`, decision logging on, vs `aiir` "
                      "with logging on; same load):", "",
                  "| scenario | guard overhead, throughput (goal ≤ 5 %) | guard overhead, server CPU per request |",
                  "|---|---|---|"]
        for scen, s in res["summary"].items():
            lines.append(f"| {scen.replace('_', ' ')} | **{100 * s['guard_overhead']:.1f} %** | "
                         f"{100 * s['guard_overhead_cpu']:.1f} % |")
    ms = sorted(iso["isolate_to_first_fallback_ms"])
    lines += [
        "",
        f"Containment: from the start of `POST /admin/isolate` to the first response served by the fallback "
        f"version, while another thread scores continuously ({iso['cycles']} isolate/restore cycles): "
        f"median **{iso['median_ms']:.1f} ms**, max {iso['max_ms']:.1f} ms (goal ≤ 100 ms); "
        f"all: {', '.join(f'{x:.0f}' for x in ms)} ms. The admin call itself takes "
        f"{iso['admin_call_ms_median']:.1f} ms (median): registry lookup of the fallback alias, routing swap, "
        "then state fsync and audit line.",
        "",
        "Decision logs after the run (servers stopped with SIGTERM): "
        + "; ".join(f"`{n}` {d['rows']:,} rows for {d['expected_rows']:,} answered decisions, hash chain "
                    f"{'verified' if d['chain_ok'] else 'BROKEN: ' + d['problem']}"
                    for n, d in res["decision_log"].items())
        + ". Raw results: `bench/results/gateway-*.json`.",
        "",
    ]
    return "\n".join(lines)


def write_section(md: str, path: Path) -> None:
    """Replace this benchmark's section in docs/benchmarks.md (or append it); other sections untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + md
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + md + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    path.write_text(text)


GUARD_SECTION = "Inline evasion guard overhead (bench/bench_gateway.py --guard-only)"


GUARD_BASELINE_REV = "ea53217"  # the guard before the per-row rewrite (37-43 us of CPU per row measured then)


def guard_cpu_per_row(ref: Path, baseline_rev: str | None, reps: int = 5) -> dict:
    """The guard alone, in this process: CPU microseconds per clean row (60 clients x 400 fresh rows, single-row
    and 10-row requests, best of ``reps``, GC on), this code and the guard of ``baseline_rev`` alternating."""
    import gc

    from sklearn.linear_model import LogisticRegression

    from aiir.evasion.guard import guard_from_options
    from aiir.gateway.synthetic import FEATURES, synthetic_frame

    impls = {"current": lambda: guard_from_options(reference=str(ref), thresholds=None, columns=FEATURES)}
    if baseline_rev:
        mod = module_at_revision(baseline_rev, "include/aiir/evasion/guard.py", "guard_baseline")
        impls["baseline"] = lambda: mod.guard_from_options(reference=str(ref), thresholds=None, columns=FEATURES)
    Xt, yt = synthetic_frame()
    model = LogisticRegression(C=0.3, max_iter=500).fit(Xt.to_numpy(), yt)
    X, _ = synthetic_frame(60 * 400, seed=7)
    rows = X[FEATURES].to_numpy().round(4)
    p = model.predict_proba(rows)[:, 1]
    rows, preds, scores = rows.tolist(), (p >= 0.5).astype(int).tolist(), p.tolist()
    out: dict = {}
    for batch in (1, 10):
        calls = [(f"merchant-{(j // batch) % 60:02d}", FEATURES, rows[j:j + batch], preds[j:j + batch],
                  scores[j:j + batch], [f"d{j + k}" for k in range(batch)]) for j in range(0, len(rows), batch)]
        got: dict = {n: [] for n in impls}
        for _ in range(reps):
            for name, make in impls.items():
                g = make()
                gc.collect()
                t0 = time.process_time()
                for a in calls:
                    g.observe(*a)
                got[name].append((time.process_time() - t0) / len(rows) * 1e6)
                assert not g.tripped, f"{name}: clean traffic tripped {sorted(g.tripped)[:5]}"
        out[f"{'single_row' if batch == 1 else f'batch_{batch}'}"] = {n: round(min(v), 2) for n, v in got.items()}
    return {"us_per_row": out, "baseline_rev": baseline_rev, "rows": len(rows), "reps": reps}


async def _timed_worker(port: int, reqs: list[bytes], start_at: float, deadline: float, out: dict) -> None:
    """Send ``reqs`` one after the other on one keep-alive connection from ``start_at`` until ``deadline``;
    counts the answers completed inside the window (and whether the connection ran out of fresh rows)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        i = 0
        while time.perf_counter() < deadline:
            if i == len(reqs):
                out["exhausted"] += 1
                break
            writer.write(reqs[i])
            i += 1
            status, _ = await _read_response(reader)
            if time.perf_counter() <= deadline:
                out["done"] += 1
                out["errors"] += status != 200
    finally:
        writer.close()


def _callgrind_available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def guard_only(args) -> int:
    """`aiir serve --guard --guard-reference` vs `aiir serve`, both logging, same load, with fresh rows from 8
    clients (so the guard's grids see realistic, non-repeating traffic), and a second plain `aiir serve` as a
    control (its 'overhead' against the first is the noise floor of the same measurement). Two designs in the
    same command: (1) interleaved rounds, one server loaded at a time, the order rotating; (2) concurrent windows,
    the three servers loaded at the same time for ``--window`` seconds, so each meets the same contention from the
    rest of the machine (the servers' throughput ratios are then their CPU cost ratios). Optionally (3) the
    instructions each server executes per request under callgrind (same request stream), which no other load moves."""
    from _common import write_section

    from aiir.gateway.synthetic import FEATURES, build_store, synthetic_frame

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="aiir-bench-guard-"))
    info = build_store(tmp / "store", MODEL)
    env = {**os.environ, "MLFLOW_TRACKING_URI": info["tracking_uri"], "AIIR_HOME": str(tmp / "home"),
           "AIIR_ARTIFACT_TRUSTED_KEYS": info["trusted_key"],  # the store's signing key
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONWARNINGS": "ignore"}
    env.pop("AIIR_AIRFLOW_URL", None)  # no playbook trigger from the bench's gateways
    ref = tmp / "reference.csv"
    synthetic_frame()[0].to_csv(ref, index=False)
    ref_keep = Path(tempfile.mkdtemp(prefix="aiir-bench-guard-ref-")) / "reference.csv"
    shutil.copyfile(ref, ref_keep)
    # Fresh rows only: no connection sends a row twice to a server during the run (a client replaying the same
    # rows every few hundred requests is not clean traffic: two near-identical borderline rows replayed ten
    # times form a cluster the guard trips on). Each measurement of a server continues where its previous one
    # stopped; every server gets the same rows in the same order.
    C = args.connections
    B = args.batch
    scens = ["single_row", f"batch_{B}"]
    width = {"single_row": 1, f"batch_{B}": B}
    quota = -(-3 * max(200, args.requests) // (2 * C))  # requests per connection per sequential measurement
    seq_reqs = (1 + args.rounds) * quota  # per connection and scenario (warm-up + rounds)
    cap = int(args.window * 150) + 50  # requests per connection per concurrent window (up to 150 req/s each)
    conc_reqs = args.concurrent_rounds * cap
    cg_reqs = -(-(args.callgrind + 300) // C) if args.callgrind else 0
    per_conn = {s: (seq_reqs + conc_reqs + cg_reqs) * width[s] for s in scens}
    X, _ = synthetic_frame(C * sum(per_conn.values()), seed=7)
    rows = X[FEATURES].values.round(4).tolist()
    base = {scens[0]: 0, scens[1]: C * per_conn[scens[0]]}
    all_bodies: dict = {}

    def bodies(k: int, scen: str) -> list[bytes]:
        """Connection k's requests for the whole run: its own fresh rows, one or `batch` per request: first the
        sequential rounds' share, then the concurrent windows', then the callgrind stream's."""
        if (k, scen) not in all_bodies:
            n = width[scen]
            start = base[scen] + k * per_conn[scen]
            mine = rows[start:start + per_conn[scen]]
            all_bodies[(k, scen)] = [json.dumps({"dataframe_split": {"columns": FEATURES, "data": mine[j:j + n]}}
                                                ).encode() for j in range(0, len(mine) - n + 1, n)]
        return all_bodies[(k, scen)]

    aiir_bin = str(VENV_BIN / "aiir")
    names = ["aiir", "aiir_guard", "aiir_control"]
    ports = {n: free_port() for n in names}
    procs: dict = {}
    seq_runs: dict = {s: {n: [] for n in names} for s in scens}
    conc_runs: dict = {s: {n: [] for n in names} for s in scens}
    pos: dict = {}

    def take(name: str, scen: str, k: int, n: int) -> list[bytes]:
        at = pos.get((name, scen, k), 0)
        pos[(name, scen, k)] = at + n
        return [request_bytes(ports[name], b, f"bench-{k}") for b in bodies(k, scen)[at:at + n]]

    def seek(name: str, scen: str, at: int) -> None:
        for k in range(C):
            pos[(name, scen, k)] = at

    def load(name: str, scen: str, n: int) -> dict:
        async def go():
            budget, lat, bad = [n], [], [0]
            reqs = [take(name, scen, k, quota) for k in range(C)]
            t0 = time.perf_counter()
            await asyncio.gather(*(_conn_worker(ports[name], reqs[k], budget, lat, bad, {}) for k in range(C)))
            return time.perf_counter() - t0, lat, bad[0]
        cpu0 = cpu_seconds(procs[name].pid)
        el, lat, bad = asyncio.run(go())
        cpu = cpu_seconds(procs[name].pid) - cpu0
        return {"rps": round(len(lat) / el, 1), "errors": bad,
                "cpu_ms_per_request": round(cpu * 1000 / max(1, len(lat)), 4)}

    def window(scen: str, rnd: int) -> dict:
        """The three servers under load at the same time for args.window seconds."""
        async def go():
            outs = {n: {"done": 0, "errors": 0, "exhausted": 0} for n in names}
            reqs = {n: [take(n, scen, k, cap) for k in range(C)] for n in names}
            t0 = time.perf_counter() + 0.3
            t1 = t0 + args.window
            cpu0 = {n: cpu_seconds(procs[n].pid) for n in names}
            await asyncio.gather(*(_timed_worker(ports[n], reqs[n][k], t0, t1, outs[n]) for n in names for k in range(C)))
            cpu = {n: cpu_seconds(procs[n].pid) - cpu0[n] for n in names}
            return outs, cpu, time.perf_counter() - t0
        for n in names:  # each window starts at its own block of fresh rows
            seek(n, scen, seq_reqs + rnd * cap)
        outs, cpu, _ = asyncio.run(go())
        return {n: {"rps": round(outs[n]["done"] / args.window, 1), "errors": outs[n]["errors"],
                    "exhausted_connections": outs[n]["exhausted"],
                    "cpu_ms_per_request": round(cpu[n] * 1000 / max(1, outs[n]["done"]), 4)} for n in names}

    def serve_cmd(name: str, port: int, state: Path) -> list[str]:
        cmd = [aiir_bin, "serve", "--model", MODEL, "--port", str(port), "--state-dir", str(state)]
        return cmd + (["--guard", "--guard-reference", str(ref)] if name == "aiir_guard" else [])

    guard_state: dict = {}
    instr: dict | None = None
    try:
        for n in names:
            procs[n] = start(serve_cmd(n, ports[n], tmp / f"gw-{n}"), env, ports[n], tmp / f"{n}.log")
        for n in names:  # warm-up (one quota per connection)
            for scen in scens:
                load(n, scen, 200)
        for rnd in range(args.rounds):
            order = names[rnd % 3:] + names[:rnd % 3]
            for scen in scens:
                for n in (order if rnd % 2 == 0 else order[::-1]):
                    r = load(n, scen, args.requests)
                    seq_runs[scen][n].append(r)
                    print(f"· interleaved round {rnd + 1} {scen:>10} {n:>12}: {r['rps']:8.1f} req/s cpu "
                          f"{r['cpu_ms_per_request']:.3f} ms/req errors {r['errors']}", file=sys.stderr)
        for rnd in range(args.concurrent_rounds):
            for scen in scens:
                w = window(scen, rnd)
                for n in names:
                    conc_runs[scen][n].append(w[n])
                print(f"· concurrent window {rnd + 1} {scen:>10}: " + "  ".join(
                    f"{n} {w[n]['rps']:.1f} req/s cpu {w[n]['cpu_ms_per_request']:.3f}" for n in names),
                    file=sys.stderr)
        import urllib.request

        tok = (tmp / "gw-aiir_guard" / "admin.token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{ports['aiir_guard']}/admin/guard",
                                     headers={"Authorization": f"Bearer {tok}"})
        guard_state = json.loads(urllib.request.urlopen(req, timeout=30).read())
    finally:
        for p in procs.values():
            stop(p)
    if args.callgrind:
        try:
            instr = callgrind_instructions(args, env, serve_cmd, take, seek, ports, procs, tmp, scens,
                                           seq_reqs + conc_reqs)
        finally:
            for p in procs.values():
                stop(p)
    if args.keep:
        print(f"· kept {tmp} (callgrind outputs: <server>-<scenario>.callgrind)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    inproc = guard_cpu_per_row(ref_keep, args.guard_baseline_rev or None) if not args.skip_inprocess else None
    shutil.rmtree(ref_keep.parent, ignore_errors=True)

    def summarise(by: dict) -> dict:
        med = {n: statistics.median(r["rps"] for r in rs) for n, rs in by.items()}
        cpu = {n: statistics.median(r["cpu_ms_per_request"] for r in rs) for n, rs in by.items()}
        out = {"rps": med, "cpu_ms_per_request": cpu,
               "errors": sum(r["errors"] for rs in by.values() for r in rs)}
        for n in ("aiir_guard", "aiir_control"):
            # per round: the server's run against the plain run of the same round (adjacent or simultaneous)
            out[f"{n}_throughput_overhead_per_round"] = [round(1 - g["rps"] / a["rps"], 4)
                                                         for a, g in zip(by["aiir"], by[n], strict=True)]
            out[f"{n}_cpu_overhead_per_round"] = [round(g["cpu_ms_per_request"] / a["cpu_ms_per_request"] - 1, 4)
                                                  for a, g in zip(by["aiir"], by[n], strict=True)]
            out[f"{n}_throughput_overhead"] = round(statistics.median(out[f"{n}_throughput_overhead_per_round"]), 4)
            out[f"{n}_cpu_overhead"] = round(statistics.median(out[f"{n}_cpu_overhead_per_round"]), 4)
        return out

    summary = {"interleaved": {s: summarise(seq_runs[s]) for s in scens},
               "concurrent": {s: summarise(conc_runs[s]) for s in scens}}
    res = {"benchmark": "gateway-guard", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(platform.processor()),
                       "python": platform.python_version()},
           "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
           "params": {"requests": args.requests, "connections": C, "rounds": args.rounds, "batch": B,
                      "window_s": args.window, "concurrent_rounds": args.concurrent_rounds,
                      "callgrind_requests": args.callgrind},
           "summary": summary, "runs": {"interleaved": seq_runs, "concurrent": conc_runs}, "in_process": inproc,
           "instructions": instr,
           "guard_after_run": {k: guard_state.get(k) for k in ("stats", "tripped", "tracked_clients")}}
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"gateway-guard-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(res, indent=2))
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    lines = [f"Load average (1 min) {res['loadavg_1m_before']} before → {res['loadavg_1m_after']} after (shared "
             "machine, other sessions' Airflow and test suites running).", "",
             f"`aiir serve --guard --guard-reference` vs `aiir serve`, both with decision logging (child-process "
             f"writer), same model and rows, and a second plain `aiir serve` as a control: its difference from the "
             f"first is the noise floor of the same measurement. Each server is one uvicorn process (one event loop "
             f"thread; native pools limited to one thread) plus its log-writer process; the load is {C} keep-alive "
             f"connections per server from one asyncio client process, each connection its own client sending only "
             f"fresh rows (none twice). Interleaved: {args.rounds} rounds of {args.requests:,} requests per server, "
             f"one server loaded at a time, the order rotating. Concurrent: {args.concurrent_rounds} windows of "
             f"{args.window:g} s with the three servers loaded at the same time (each meets the same contention; "
             "on a CPU-bound server, throughput ratio = inverse CPU cost ratio). Medians of the per-round ratios; "
             "per-round values in the JSON.", "",
             "| design | scenario | req/s aiir | req/s aiir --guard | **guard throughput overhead** (goal ≤ 5 %) | "
             "control (A/A) | guard CPU/req overhead | control CPU/req | guard overhead per round |",
             "|---|---|---|---|---|---|---|---|---|"]
    for design, by in summary.items():
        for scen, v in by.items():
            lines.append(
                f"| {design} | {scen.replace('_', ' ')} | {v['rps']['aiir']:,.1f} | {v['rps']['aiir_guard']:,.1f} | "
                f"**{pct(v['aiir_guard_throughput_overhead'])}** | {pct(v['aiir_control_throughput_overhead'])} | "
                f"{pct(v['aiir_guard_cpu_overhead'])} | {pct(v['aiir_control_cpu_overhead'])} | "
                + ", ".join(f"{100 * x:.0f}" for x in v["aiir_guard_throughput_overhead_per_round"]) + " % |")
    if instr:
        lines += ["", f"Instructions per request under callgrind ({instr['valgrind']}, the same "
                      f"{instr['requests']:,} fresh requests per scenario to each server after a 300-request warm-up, "
                      "gateway process only; counts do not depend on the machine's load):", "",
                  "| scenario | aiir | aiir --guard | guard overhead |", "|---|---|---|---|"]
        for scen, v in instr["per_request"].items():
            lines.append(f"| {scen.replace('_', ' ')} | {v['aiir']:,.0f} | {v['aiir_guard']:,.0f} | "
                         f"**{pct(v['overhead'])}** |")
    st = res["guard_after_run"]
    lines += ["", f"The guard scored {st['stats']['rows']:,} rows during the run and tripped on "
                  f"{len(st['tripped'] or {})} of the {C} clean clients."]
    if inproc:
        u = inproc["us_per_row"]
        base_txt = f" vs **{u['single_row']['baseline']:.1f}** / {u['batch_10']['baseline']:.1f} µs for the guard of " \
                   f"`{inproc['baseline_rev']}`" if inproc["baseline_rev"] else ""
        lines += ["", f"The guard alone, in-process (`time.process_time`, GC on, best of {inproc['reps']}, 60 clients "
                      f"× 400 fresh rows, same reference profile): **{u['single_row']['current']:.1f} µs** of CPU per "
                      f"row in single-row requests and {u['batch_10']['current']:.1f} µs per row in 10-row requests"
                      f"{base_txt} (same process, alternating)."]
    if not args.no_doc:
        write_section(GUARD_SECTION, "\n".join(lines))
    print(json.dumps({"summary": summary, "instructions": instr, "in_process": inproc}, indent=2))
    return 0


def callgrind_instructions(args, env, serve_cmd, take, seek, ports, procs, tmp, scens, offset) -> dict:
    """Instructions per request of `aiir serve` and `aiir serve --guard` on the same request stream: both servers
    under `valgrind --tool=callgrind --instr-atstart=no` (started side by side per scenario), counting switched on
    (callgrind_control) only around each one's measured requests, one server at a time."""
    if not _callgrind_available():
        raise SystemExit("--callgrind needs valgrind (Debian package valgrind)")
    ver = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    C, n = args.connections, args.callgrind
    per_req: dict = {s: {} for s in scens}
    pair = ("aiir", "aiir_guard")
    for scen in scens:
        outs = {}
        for name in pair:
            outs[name] = tmp / f"{name}-{scen}.callgrind"
            ports[name] = free_port()
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={outs[name]}"]
            cmd += serve_cmd(name, ports[name], tmp / f"cg-{name}-{scen}")
            fh = open(tmp / f"cg-{name}-{scen}.log", "w")
            procs[name] = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        for name in pair:
            wait_ping(ports[name], procs[name], timeout=900)
        done = {}
        for name in pair:
            p, port = procs[name], ports[name]
            seek(name, scen, offset)  # its own block of fresh rows, the same for both servers

            async def go(m: int, name=name, port=port, scen=scen):
                budget, lat, bad = [m], [], [0]
                reqs = [take(name, scen, k, -(-m // C)) for k in range(C)]
                await asyncio.gather(*(_conn_worker(port, reqs[k], budget, lat, bad, {}) for k in range(C)))
                return len(lat), bad[0]
            asyncio.run(go(300))
            subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True)
            done[name], bad = asyncio.run(go(n))
            subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True, capture_output=True)
            if bad:
                raise RuntimeError(f"callgrind run of {name}: {bad} errors")
        for name in pair:
            stop(procs[name])
            total = next(int(line.split()[1]) for line in outs[name].read_text().splitlines()
                         if line.startswith("totals:"))
            per_req[scen][name] = total / done[name]
            print(f"· callgrind {scen:>10} {name:>10}: {total / done[name]:,.0f} instructions per request "
                  f"({done[name]} requests)", file=sys.stderr)
    for v in per_req.values():
        v["overhead"] = round(v["aiir_guard"] / v["aiir"] - 1, 4)
    return {"valgrind": ver, "requests": n, "per_request": per_req}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10, help="rows in the small-batch scenario")
    ap.add_argument("--cycles", type=int, default=20, help="isolate/restore cycles")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--guard-baseline-rev", default=GUARD_BASELINE_REV,
                    help="--guard-only: the revision whose guard the in-process measurement compares with ('' for none)")
    ap.add_argument("--skip-inprocess", action="store_true", help="--guard-only: no in-process measurement")
    ap.add_argument("--window", type=float, default=3.0, help="--guard-only: seconds per concurrent window")
    ap.add_argument("--concurrent-rounds", type=int, default=8, help="--guard-only: concurrent windows per scenario")
    ap.add_argument("--callgrind", type=int, default=0, metavar="N",
                    help="--guard-only: also count instructions per request under callgrind over N requests")
    ap.add_argument("--guard-only", action="store_true",
                    help="only `aiir --guard` vs `aiir` (the inline evasion guard's overhead), its own docs section")
    args = ap.parse_args()
    if args.guard_only:
        return guard_only(args)

    from aiir.gateway.synthetic import FEATURES, build_store, synthetic_frame

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="aiir-bench-gw-"))
    print(f"· building the MLflow store in {tmp}", file=sys.stderr)
    info = build_store(tmp / "store", MODEL)
    env = {**os.environ, "MLFLOW_TRACKING_URI": info["tracking_uri"], "AIIR_HOME": str(tmp / "home"),
           "AIIR_ARTIFACT_TRUSTED_KEYS": info["trusted_key"],  # the store's signing key
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONWARNINGS": "ignore"}
    X, _ = synthetic_frame(200, seed=7)
    rows = X[FEATURES].values.tolist()
    bodies = {
        "single_row": json.dumps({"dataframe_split": {"columns": FEATURES, "data": rows[:1]}}).encode(),
        f"batch_{args.batch}": json.dumps({"dataframe_split": {"columns": FEATURES,
                                                               "data": rows[:args.batch]}}).encode(),
    }
    ports = {"aiir": free_port(), "aiir_nolog": free_port(), "aiir_durable": free_port(),
             "aiir_guard": free_port(), "mlflow": free_port()}
    ref = tmp / "reference.csv"  # the training data of the served versions: the guard's reference profile
    synthetic_frame()[0].to_csv(ref, index=False)
    aiir_bin = str(VENV_BIN / "aiir")
    procs = {}
    results: dict = {}
    ok_rows = {n: 0 for n in ports}  # decisions each server answered with 200

    def load(name: str, scen: str, n: int) -> dict:
        r = run_load(ports[name], bodies[scen], n, args.connections, procs[name].pid)
        ok_rows[name] += (r["requests"] - r["errors"]) * rows_in[scen]
        return r

    rows_in = {"single_row": 1, f"batch_{args.batch}": args.batch}
    try:
        print("· starting servers", file=sys.stderr)
        procs["aiir"] = start([aiir_bin, "serve", "--model", MODEL, "--port", str(ports["aiir"]),
                               "--state-dir", str(tmp / "gw-log")], env, ports["aiir"], tmp / "aiir.log")
        procs["aiir_nolog"] = start([aiir_bin, "serve", "--model", MODEL, "--port", str(ports["aiir_nolog"]),
                                     "--state-dir", str(tmp / "gw-nolog"), "--no-log"], env,
                                    ports["aiir_nolog"], tmp / "aiir-nolog.log")
        procs["aiir_durable"] = start([aiir_bin, "serve", "--model", MODEL, "--port", str(ports["aiir_durable"]),
                                       "--state-dir", str(tmp / "gw-durable"), "--durable"], env,
                                      ports["aiir_durable"], tmp / "aiir-durable.log")
        procs["aiir_guard"] = start([aiir_bin, "serve", "--model", MODEL, "--port", str(ports["aiir_guard"]),
                                     "--state-dir", str(tmp / "gw-guard"), "--guard", "--guard-reference", str(ref)],
                                    env, ports["aiir_guard"], tmp / "aiir-guard.log")
        procs["mlflow"] = start([str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                                 "--env-manager", "local", "-p", str(ports["mlflow"]), "--host", "127.0.0.1"],
                                env, ports["mlflow"], tmp / "mlflow.log")
        # warm-up (first requests pay lazy imports / JIT-ish caches)
        for name in ports:
            for scen in bodies:
                load(name, scen, 200)

        runs: dict = {s: {n: [] for n in ports} for s in bodies}
        for rnd in range(args.rounds):
            for scen in bodies:
                order = list(ports) if rnd % 2 == 0 else list(reversed(ports))
                for name in order:
                    r = load(name, scen, args.requests)
                    runs[scen][name].append(r)
                    print(f"· round {rnd + 1} {scen:>10} {name:>10}: {r['rps']:8.1f} req/s "
                          f"p99 {r['p99_ms']:.2f} ms cpu {r['server_cpu_ms_per_request']:.3f} ms/req errors {r['errors']}", file=sys.stderr)

        summary: dict = {}
        for scen, by in runs.items():
            s = {}
            for name, rs in by.items():
                s[name] = {"rps_median": statistics.median(r["rps"] for r in rs),
                           "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
                           "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
                           "server_cpu_ms_per_request": statistics.median(r["server_cpu_ms_per_request"]
                                                                          for r in rs),
                           "errors": sum(r["errors"] for r in rs)}
            s["ratio_aiir_vs_mlflow_throughput"] = round(s["aiir"]["rps_median"] / s["mlflow"]["rps_median"], 3)
            s["ratio_aiir_nolog_vs_mlflow_throughput"] = round(
                s["aiir_nolog"]["rps_median"] / s["mlflow"]["rps_median"], 3)
            s["logging_overhead"] = round(1 - s["aiir"]["rps_median"] / s["aiir_nolog"]["rps_median"], 4)
            s["logging_overhead_cpu"] = round(s["aiir"]["server_cpu_ms_per_request"]
                                              / s["aiir_nolog"]["server_cpu_ms_per_request"] - 1, 4)
            s["cpu_ratio_mlflow_vs_aiir"] = round(s["mlflow"]["server_cpu_ms_per_request"]
                                                  / s["aiir"]["server_cpu_ms_per_request"], 3)
            s["p99_ratio_aiir_vs_mlflow"] = round(s["aiir"]["p99_ms_median"] / s["mlflow"]["p99_ms_median"], 3)
            s["ratio_aiir_durable_vs_mlflow_throughput"] = round(
                s["aiir_durable"]["rps_median"] / s["mlflow"]["rps_median"], 3)
            s["guard_overhead"] = round(1 - s["aiir_guard"]["rps_median"] / s["aiir"]["rps_median"], 4)
            s["guard_overhead_cpu"] = round(s["aiir_guard"]["server_cpu_ms_per_request"]
                                            / s["aiir"]["server_cpu_ms_per_request"] - 1, 4)
            summary[scen] = s

        token = (tmp / "gw-log" / "admin.token").read_text().strip()
        iso = isolation_latency(ports["aiir"], token, bodies["single_row"], fallback=info["aliases"]["last-known-good"],
                                primary=info["aliases"]["champion"], cycles=args.cycles)
        ok_rows["aiir"] += iso["polled_requests"]
        results = {
            "benchmark": "gateway", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {**machine(), "loadavg_1m_before": round(load_before[0], 2),
                        "loadavg_1m_after": round(os.getloadavg()[0], 2)},
            "params": {"requests": args.requests, "connections": args.connections, "rounds": args.rounds,
                       "batch": args.batch, "cycles": args.cycles, "model": MODEL,
                       "mlflow_cmd": "mlflow models serve -m models:/NAME@champion --env-manager local"},
            "summary": summary, "isolation": iso, "runs": runs,
        }
    finally:
        for p in procs.values():
            stop(p)
        if results:  # after a graceful stop every decision is committed: check count and chain
            from aiir.gateway.decision_log import DecisionLog

            results["decision_log"] = {}
            for name, sub in (("aiir", "gw-log"), ("aiir_durable", "gw-durable")):
                rep = DecisionLog(tmp / sub / "decisions.db").verify_chain()
                results["decision_log"][name] = {"rows": rep.rows, "expected_rows": ok_rows[name],
                                                 "chain_ok": rep.ok, "problem": rep.problem}
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"gateway-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2))
    if not args.no_doc:
        write_section(markdown(results), REPO / "docs" / "benchmarks.md")
    print(json.dumps({k: results[k] for k in ("date", "machine", "summary", "isolation", "decision_log")},
                     indent=2))
    print(f"· results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
