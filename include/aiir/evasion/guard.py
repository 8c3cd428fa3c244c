"""The inline evasion guard: cheap streaming statistics in the gateway's serving path.

For every scored row the guard updates, per client (the API-key identity, or the header id in the
trusting demo mode) and across clients, the same signals as ``aiir scan-evasion``:

* near-duplicates and decision flips against the client's last ``guard.window`` queries;
* near-duplicates against the last ``guard.global_window`` queries of *all* clients, which links queries
  into input clusters (a query joins the cluster of its nearest near-duplicate);
* score within ``boundary_band`` of the decision threshold;
* out-of-distribution (Mahalanobis distance past the reference quantile; needs a reference profile).

A client trips when the hits of one signal in its window reach the binomial critical count (precomputed
lookup tables, same ``alpha``/clean rates as the scan); a cluster trips when it holds at least
``clusters.min_size`` queries and its boundary or flip count is significant — then every client that
sends a query into it trips, however many ids the attacker spreads over. Tripping takes effect on the
request that tripped it (inside the serving path, before the response): with ``action = fallback`` the
client gets conservative answers (positive class when score >= ``fallback_threshold``, scores withheld)
and a rate limit; with ``block`` it is refused. The gateway then persists the block / rate limit through
the admin controller and triggers the playbook, both in the background.

Cost: two small distance computations (einsum over ``window`` x d and ``global_window`` x d) and a few
dictionary updates per row; numbers in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np

from aiir.evasion.config import critical_counts, load_config
from aiir.evasion.profile import Profile

MAX_CLIENTS = 20_000
CELL = 10.0  # hash-grid cell width, in multiples of near_dup_rms
BUCKET = 32  # most recent queries kept per grid cell
GRID_OFFSETS = (0.0, 1 / 3, 2 / 3)  # three grids, each shifted by a third of a cell
VECTORISE_FROM = 4  # requests with at least this many rows get their arithmetic from numpy
BOUNDARY_NEEDS_NEAR_DUPS = 2  # the boundary signal trips a client only with this many near-duplicates in its window
PROJ_DIMS = 6  # with more features, hash on a random projection to this many dimensions
BIT = {"near_dup": 1, "boundary": 2, "flip": 4, "ood": 8}


def _utc(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class _Client:
    __slots__ = ("flags", "sums", "seen", "first_seen", "ids")

    def __init__(self, w: int, now: float):
        self.flags: deque[int] = deque()
        self.sums = {"near_dup": 0, "boundary": 0, "flip": 0, "ood": 0}
        self.seen = 0
        self.first_seen = now
        self.ids: deque[str] = deque(maxlen=w)


class _Cluster:
    __slots__ = ("n", "boundary", "flip", "clients", "tripped", "first_seen", "last_seq")

    def __init__(self, now: float):
        self.last_seq = 0
        self.n = 0
        self.boundary = 0
        self.flip = 0
        self.clients: dict[str, int] = {}
        self.tripped = False
        self.first_seen = now


class Guard:
    """Streaming evasion signals per client and per input cluster; thread-safe (one lock per observe)."""

    def __init__(self, *, profile: Profile | None = None, thresholds: Any = None, positive_class: Any = 1):
        cfg = load_config(thresholds) if not isinstance(thresholds, dict) or "guard" not in thresholds else thresholds
        self.cfg = cfg
        g, sig, tst, rates = cfg["guard"], cfg["signals"], cfg["tests"], cfg["clean_rates"]
        self.profile = profile
        self.w = int(g["window"])
        self.gw = int(g["global_window"])
        self.action = g["action"]
        self.rate_limit = float(g["rate_limit_per_s"])
        self.fallback_threshold = float(g["fallback_threshold"])
        self.warmup = int(g["warmup_rows"])
        self.thr = float(sig["decision_threshold"])
        self.band = float(sig["boundary_band"])
        self.eps2 = float(sig["near_dup_rms"]) ** 2
        self.alpha, self.min_hits = float(tst["alpha"]), int(tst["min_hits"])
        self.rates = rates
        self.kmin = {s: critical_counts(self.w, rates[s], self.alpha, self.min_hits) for s in BIT}
        self.cluster_min = int(cfg["clusters"]["min_size"])
        self._ckmin: dict[tuple[str, int], int] = {}
        self.positive_class = positive_class
        self.columns: list[str] | None = profile.columns if profile is not None else None
        self._col_idx: dict[tuple, tuple[list[int], list[str]]] = {}
        self._mean = profile.mean if profile is not None else None
        self._std = profile.std if profile is not None else None
        self._inv = profile.inv_cov if profile is not None and profile.ood_threshold is not None else None
        self._ood_thr = profile.ood_threshold if profile is not None else None
        self._welford: list[Any] | None = None  # [n, mean, M2] while learning scale without a profile
        self.clients: OrderedDict[str, _Client] = OrderedDict()
        self.clusters: dict[int, _Cluster] = {}
        # recent queries of all clients in three hash grids (cells of CELL x near_dup_rms, shifted by thirds of a
        # cell): a near-duplicate almost always shares a cell with its partner in one of them, and only the few
        # queries in those cells are compared (exactly). Entries older than `global_window` queries are ignored
        # and dropped.
        self._tables: tuple[dict, ...] = tuple({} for _ in GRID_OFFSETS)
        self._parent: dict[int, int] = {}  # cluster union-find: a query near two clusters merges them
        self._seq = 0
        self._cell_inv = 1.0 / (CELL * float(sig["near_dup_rms"]))
        self._proj: list[list[float]] | None = None
        self._stdinv: list[float] | None = None
        self._meanl: list[float] | None = None
        self._invl: list[list[float]] | None = None
        self.new_trips: list[dict[str, Any]] = []
        self._next_cluster = 1
        self._swept = 0
        self.tripped: dict[str, dict[str, Any]] = {}
        self.stats = {"rows": 0, "trips": 0, "fallback_rows": 0, "refused": 0, "skipped_rows": 0}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ configuration view
    def describe(self) -> dict[str, Any]:
        return {"enabled": True, "action": self.action, "window": self.w, "global_window": self.gw,
                "profile": self.profile.source if self.profile is not None else None,
                "outlier_model": self._inv is not None,
                "scaling": "reference profile" if self.profile is not None else (
                    "learnt from traffic" if self._mean is not None else f"learning ({self.warmup} rows)"),
                "columns": self.columns, "rate_limit_per_s": self.rate_limit,
                "fallback_threshold": self.fallback_threshold, "stats": dict(self.stats),
                "tracked_clients": len(self.clients),
                "tripped": {c: {k: e[k] for k in ("at", "reasons", "queries_seen", "cluster")}
                            for c, e in self.tripped.items()}}

    def release(self, clients: list[str] | None = None) -> None:
        """Forget trips (all, or the named clients): what ``/admin/restore`` does to the guard."""
        with self._lock:
            for c in (list(self.tripped) if clients is None else clients):
                self.tripped.pop(c, None)
                self.clients.pop(c, None)
            if clients is None:
                for cl in self.clusters.values():
                    cl.tripped = False

    # ------------------------------------------------------------------ hot path
    def _matrix(self, cols: list[str], rows: list[list[Any]]) -> list[list[float]] | None:
        key = tuple(cols)
        got = self._col_idx.get(key)
        if got is None:
            if self.columns is not None:
                idx = [cols.index(c) for c in self.columns if c in cols]
            else:  # no profile: the numeric inputs (by the first request's values; strings are left out)
                idx = [i for i, v in enumerate(rows[0] if rows else [])
                       if isinstance(v, int | float) and not isinstance(v, bool)]
            if self.columns is not None and len(idx) != len(self.columns):
                idx = []  # the request lacks profiled features: not scored by the guard
            got = self._col_idx[key] = (idx, [cols[i] for i in idx])
            if self.columns is None:
                self.columns = got[1]
        idx = got[0]
        if not idx:
            return None
        try:
            X = [[float(r[i]) for i in idx] for r in rows]
        except (TypeError, ValueError, IndexError):
            return None
        for x in X:
            for v in x:
                if v - v != 0.0:  # NaN or infinite
                    return None
        return X

    def _learn(self, X: list[list[float]]) -> bool:
        """Without a profile: Welford mean/std over the first ``warmup`` rows; True once scaling is fixed."""
        if self._mean is not None:
            return True
        X = np.asarray(X, dtype=float)
        w = self._welford
        if w is None:
            w = self._welford = [0, np.zeros(X.shape[1]), np.zeros(X.shape[1])]
        for x in X:
            w[0] += 1
            delta = x - w[1]
            w[1] = w[1] + delta / w[0]
            w[2] = w[2] + delta * (x - w[1])
        if w[0] >= self.warmup:
            std = np.sqrt(w[2] / max(1, w[0] - 1))
            self._std = np.where(std > 1e-12, std, 1.0)
            self._mean = w[1]
            self._welford = None
            return True
        return False

    def _ck(self, signal: str, n: int) -> int:
        k = self._ckmin.get((signal, n))
        if k is None:
            k = critical_counts(n, self.rates[signal], self.alpha, self.min_hits)[n] if n <= 4096 else 1 << 30
            self._ckmin[(signal, n)] = k
        return k

    def observe(self, client: str, cols: list[str], rows: list[list[Any]], preds: list[Any],
                scores: list[float] | None, ids: list[str], *, key_id: str | None = None
                ) -> dict[str, Any] | None:
        """Update the statistics with one scored request. Returns the trip event when this request trips the
        client (or the client had tripped already); ``None`` while the client looks clean."""
        with self._lock:
            ev = self.tripped.get(client)
            if ev is not None:
                return ev
            X = self._matrix(cols, rows)
            if X is None:
                self.stats["skipped_rows"] += len(rows)
                return None
            if not self._learn(X):
                self.stats["rows"] += len(rows)
                return None
            return self._observe(client, key_id, X, preds, scores, ids)

    def _prepare(self, d: int) -> None:
        """Plain-Python copies of the scaling and the outlier model (no numpy in the per-row path)."""
        self._meanl = [float(v) for v in self._mean]
        self._stdinv = [1.0 / float(v) for v in self._std]
        self._sinv_np = np.asarray(self._stdinv)
        self._invl = [[float(v) for v in row] for row in self._inv] if self._inv is not None else None
        if d > PROJ_DIMS:  # hash on a fixed random orthonormal projection (distances only shrink)
            rng = np.random.default_rng(0)
            q, _ = np.linalg.qr(rng.normal(size=(d, PROJ_DIMS)))
            self._proj = [[float(v) for v in col] for col in q.T]
            self._proj_np = np.asarray(self._proj)

    def _observe(self, client, key_id, X, preds, scores, ids) -> dict[str, Any] | None:
        now = time.time()
        d = len(X[0])
        if self._stdinv is None:
            self._prepare(d)
        mean, sinv, inv, proj = self._meanl, self._stdinv, self._invl, self._proj
        r2 = self.eps2 * d
        cinv = self._cell_inv
        tables = self._tables
        offs = GRID_OFFSETS
        horizon = self.gw
        c = self.clients.get(client)
        if c is None:
            c = self.clients[client] = _Client(self.w, now)
            if len(self.clients) > MAX_CLIENTS:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(client)
        trip_cluster = None
        sums = c.sums
        floor = math.floor
        batch = None
        if len(X) >= VECTORISE_FROM:  # a batch: the arithmetic for all its rows in a few numpy calls
            Za = (np.asarray(X, dtype=float) - self._mean) * self._sinv_np
            Ha = Za if proj is None else Za @ self._proj_np.T
            batch = ([tuple(r) for r in Za.tolist()],
                     [[tuple(r) for r in np.floor(Ha * cinv + o).astype(np.int64).tolist()] for o in offs],
                     (np.einsum("ij,jk,ik->i", Za, self._inv, Za) > self._ood_thr).tolist()
                     if inv is not None else None)
        for i, x in enumerate(X):
            if batch is None:
                z = tuple([(x[k] - mean[k]) * sinv[k] for k in range(d)])
                h = z if proj is None else [sum(a * b for a, b in zip(col, z, strict=True)) for col in proj]
                keys = [tuple([floor(v * cinv + o) for v in h]) for o in offs]
            else:
                z = batch[0][i]
                keys = [kk[i] for kk in batch[1]]
            pv = preds[i]
            p = hash(pv) if isinstance(pv, int | str) else hash(json.dumps(pv, default=str))
            s = scores[i] if scores is not None else None
            flags = 0
            bs = [t.get(k) for t, k in zip(tables, keys, strict=True)]
            seq = self._seq
            best, bestd, cflip = None, r2, False
            others: set[int] = set()
            if any(bs):
                old = seq - horizon
                seen = set()
                for b in bs:
                    if not b:
                        continue
                    for e in b:
                        if e[0] < old or e[0] in seen:
                            continue
                        seen.add(e[0])
                        ez = e[4]
                        d2 = 0.0
                        for k in range(d):
                            t = z[k] - ez[k]
                            d2 += t * t
                        if 1e-12 < d2 < r2:
                            if e[1] == client:
                                flags |= 1
                                if e[2] != p:
                                    flags |= 4
                            if e[2] != p:
                                cflip = True
                            others.add(e[3])
                            if d2 < bestd:
                                best, bestd = e, d2
            linked = best is not None
            if linked:
                cid = self._find(best[3])
                for o in others:
                    ro = self._find(o)
                    if ro != cid:
                        cid = self._union(cid, ro)
            else:
                cid = self._next_cluster
                self._next_cluster += 1
            if s is not None and abs(s - self.thr) < self.band:
                flags |= 2
            if batch is not None:
                if batch[2] is not None and batch[2][i]:
                    flags |= 8
            elif inv is not None:
                m2 = 0.0
                for a in range(d):
                    row = inv[a]
                    acc = 0.0
                    for bb in range(d):
                        acc += row[bb] * z[bb]
                    m2 += z[a] * acc
                if m2 > self._ood_thr:
                    flags |= 8
            entry = (seq, client, p, cid, z)
            for t, k, b in zip(tables, keys, bs, strict=True):
                if b is None:
                    t[k] = deque((entry,), maxlen=BUCKET)
                elif b[-1][4] != z or b[-1][1] != client:  # a client repeating itself exactly fills no cell
                    b.append(entry)
                else:
                    b[-1] = entry
            self._seq = seq + 1
            # window sums
            c.flags.append(flags)
            if flags:
                for name, bit in BIT.items():
                    if flags & bit:
                        sums[name] += 1
            if len(c.flags) > self.w:
                old_f = c.flags.popleft()
                if old_f:
                    for name, bit in BIT.items():
                        if old_f & bit:
                            sums[name] -= 1
            c.seen += 1
            if i < len(ids):
                c.ids.append(ids[i])
            # cluster statistics (a cluster exists from its second query on)
            if linked:
                cl = self.clusters.get(cid)
                if cl is None:
                    cl = self.clusters[cid] = _Cluster(now)
                    cl.n = 1  # the query it linked to, counted as a singleton until now
                    cl.clients[best[1]] = 1
                cl.n += 1
                cl.boundary += 1 if flags & 2 else 0
                cl.flip += 1 if cflip else 0
                cl.clients[client] = cl.clients.get(client, 0) + 1
                cl.last_seq = seq
                if cl.tripped:
                    trip_cluster = cid
                elif cl.n >= self.cluster_min and (cl.boundary >= self._ck("boundary", cl.n)
                                                   or cl.flip >= self._ck("flip", cl.n)):
                    cl.tripped = True
                    trip_cluster = cid
                    self._trip_members(cl, cid, now, exclude=client)
        self.stats["rows"] += len(X)
        if self._seq - self._swept > 4 * horizon:
            self._sweep()
        n = len(c.flags)
        reasons = [s for s in BIT if sums[s] >= self.kmin[s][n]]
        if "boundary" in reasons and sums["near_dup"] < BOUNDARY_NEEDS_NEAR_DUPS:
            # scores at the boundary alone can be a client's honest borderline business; probing also repeats
            # itself with small perturbations
            reasons.remove("boundary")
        if trip_cluster is not None:
            reasons.append("cluster")
        if not reasons:
            return None
        return self._trip(client, key_id, c, reasons, trip_cluster, now)

    def _find(self, cid: int) -> int:
        par = self._parent
        root = cid
        while root in par:
            root = par[root]
        while cid != root:  # path compression
            nxt = par[cid]
            par[cid] = root
            cid = nxt
        return root

    def _union(self, a: int, b: int) -> int:
        """Merge clusters ``a`` and ``b`` (roots); the bigger absorbs the other's counts. Returns the root."""
        ca, cb = self.clusters.get(a), self.clusters.get(b)
        if (cb.n if cb else 1) > (ca.n if ca else 1):
            a, b, ca, cb = b, a, cb, ca
        self._parent[b] = a
        if cb is not None:
            if ca is None:
                self.clusters[a] = cb
            else:
                ca.n += cb.n
                ca.boundary += cb.boundary
                ca.flip += cb.flip
                for k, v in cb.clients.items():
                    ca.clients[k] = ca.clients.get(k, 0) + v
                ca.tripped = ca.tripped or cb.tripped
                ca.last_seq = max(ca.last_seq, cb.last_seq)
            del self.clusters[b]
        return a

    def _sweep(self) -> None:
        """Drop grid cells and clusters nobody has touched within the horizon (amortised, every 4 horizons)."""
        old = self._seq - self.gw
        for t in self._tables:
            for k in [k for k, b in t.items() if b[-1][0] < old]:
                del t[k]
        self.clusters = {k: v for k, v in self.clusters.items() if v.tripped or v.last_seq >= old}
        live = set(self.clusters)
        for t in self._tables:
            for b in t.values():
                for e in b:
                    live.add(e[3])
        self._parent = {k: v for k, v in self._parent.items() if k in live or v in live}
        self._swept = self._seq

    def _cluster_view(self, cid: int | None) -> dict[str, Any] | None:
        cl = self.clusters.get(cid) if cid is not None else None
        if cl is None:
            return None
        return {"cluster_id": cid, "size": cl.n, "boundary": cl.boundary, "flip": cl.flip,
                "n_clients": len(cl.clients),
                "clients": dict(sorted(cl.clients.items(), key=lambda kv: -kv[1])[:50])}

    def _trip(self, client: str, key_id: str | None, c: _Client | None, reasons: list[str], cid: int | None,
              now: float) -> dict[str, Any]:
        n = len(c.flags) if c is not None else 0
        ev = {"event": "guard_trip", "at": _utc(now), "client_id": client, "key_id": key_id, "reasons": reasons,
              "window": {"n": n, **(c.sums if c is not None else {})},
              "critical_counts": {s: self.kmin[s][n] for s in BIT} if n else {},
              "queries_seen": c.seen if c is not None else 0,
              "first_seen_at": _utc(c.first_seen) if c is not None else None,
              "cluster": self._cluster_view(cid), "decision_ids": list(c.ids) if c is not None else [],
              "action": self.action}
        self.tripped[client] = ev
        self.new_trips.append(ev)
        self.stats["trips"] += 1
        return ev

    def _trip_members(self, cl: _Cluster, cid: int, now: float, *, exclude: str) -> None:
        """A cluster tripped: every client that sent a query into it trips too (the spread attacker)."""
        for member in cl.clients:
            if member != exclude and member not in self.tripped:
                self._trip(member, None, self.clients.get(member), ["cluster"], cid, now)

    def drain_trips(self) -> list[dict[str, Any]]:
        """Trips since the last call (the gateway persists and reports each once)."""
        with self._lock:
            out, self.new_trips = self.new_trips, []
        return out

    # ------------------------------------------------------------------ the conservative fallback
    def conservative(self, preds: list[Any], scores: list[float] | None) -> tuple[list[Any], list[None]]:
        """Positive class whenever the score reaches ``fallback_threshold``; scores withheld."""
        n = len(preds)
        self.stats["fallback_rows"] += n
        if scores is None:
            return [self.positive_class] * n, [None] * n
        return ([self.positive_class if (s is not None and s >= self.fallback_threshold) else p
                 for p, s in zip(preds, scores, strict=True)], [None] * n)


def guard_from_options(*, reference: str | None, thresholds: str | None, positive_class: Any = 1,
                       columns: list[str] | None = None) -> Guard:
    """The guard ``aiir serve --guard`` builds: a profile from ``reference`` (JSON profile, or a table of
    which the model's input ``columns`` are used)."""
    prof = None
    cfg = load_config(thresholds)
    if reference:
        from aiir.errors import BadInput
        from aiir.evasion.profile import load_reference

        prof = load_reference(reference, ood_quantile=cfg["signals"]["ood_quantile"], restrict=columns)
        if columns is not None and (extra := [c for c in prof.columns if c not in columns]):
            raise BadInput(str(reference), f"profile feature(s) {', '.join(extra)} are not inputs of the model "
                                           f"({', '.join(columns)})")
    return Guard(profile=prof, thresholds=cfg, positive_class=positive_class)


def finite_or_none(v: Any) -> float | None:
    return v if isinstance(v, float) and math.isfinite(v) else None
