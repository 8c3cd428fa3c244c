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

Cost (docs/benchmarks.md, "Inline evasion guard overhead"): counted in instructions (callgrind), the guard alone in
the grids' steady state, with its C kernel (round 12), ~24.6k per single-row request, ~5.3k per row of a 10-row
request and ~3.1k per row of a 64-row one (pure Python: ~38k, ~21.5k, ~17.4k with the numpy batch path). With the
kernel, its ``grid()`` also does the bookkeeping below for every row without a near-duplicate candidate (~all
clean rows; ``_grid_rows``), and ``_rows`` the rows it stops at, one at a time; the grid generations are then the
kernel's own hash tables of int64 cell keys (``_guardk.Cells``: no int object per key, no dict probe; to ``_rows``
a mapping with dict's semantics), and its ``rows()`` hands the request's results over as one list of z's and one
buffer of keys and bits (no tuple and no ints per row). Where the per-row arithmetic runs: in the optional C kernel ``_guardk`` (setup.py; built when a compiler is there) when it is
built — the same double operations in the same order as the Python code, so the same bits —, else in numpy for a
request of at least ``BATCH_MIN_ROWS`` rows (the same operations, sums as sequential accumulations), else row by
row in the generated Python function below; the three give the same z, cell keys and outlier bits (tests compare
them, whole guard state included). The rows function is one generated function per column layout, looping over the
request's rows (scaling, projection and grid scale as constants; one subtraction and multiplication per feature,
one floor per hashed dimension, whose entry in that dimension's table holds the three shifted grids' terms of the
cell indices ``(floor(3 q) + k) // 3``); a cell's key is the float sum of those terms (index_j * KEY_RADIX**j:
exact, distinct per cell, five additions per grid; the kernel and numpy give the same number as an int: an equal
dict key). Without the kernel the rest is Python (~10k per row: dict look-ups, entry tuples, their garbage
collection and the generation drops). One ``setdefault`` per grid on the current generation looks the row's
cell up and, when the cell was empty (~95 % of cells hold one query), already stores the query; a row whose six
cells (two generations) are empty (~60 % of clean rows) skips the search. A grid cell holding one query stores the
entry itself (no per-row container); the outlier test is decided for ~all clean rows by eigenvalue bounds on
``|z|^2`` (the quadratic form only between them); a client's window keeps only its queries that raised a signal (a
clean query only counts); and the significance lookups run only on a request that added a hit (critical counts
never fall as the window grows, so a request without a new hit cannot make a client significant). The grids live in
two generations of ``global_window`` queries: the older is dropped whole (no sweep: a sweep over the cells,
measured, costs more than the three look-ups it saves), with the clusters and union-find links nothing live can
reach.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections import deque
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from aiir.evasion.config import critical_counts, load_config
from aiir.evasion.profile import Profile

KERNEL_ABI = 5  # the C kernel's call convention this code speaks (_guardk.c KERNEL_ABI; 2: grid(); 3: z as bytes;
#                 4: Cells; 5: rows() as (zs, keys))
try:  # the optional C kernel of the per-row arithmetic (setup.py; same results as the Python code, bit for bit)
    from aiir.evasion import _guardk
except ImportError:  # not built (no compiler at install time): the pure-Python path
    _guardk = None


def _pick_kernel(module: Any, name: str = "rows") -> Any:
    """The kernel's function ``name`` (``rows``: the per-row arithmetic; ``grid``: the grid bookkeeping of rows
    without a near-duplicate candidate), or None: absent, or a build of another ABI (a stale .so left by an
    older checkout's editable install) is never called; the Python path runs instead."""
    return getattr(module, name, None) if module is not None and getattr(module, "ABI", None) == KERNEL_ABI else None


_KERNEL = _pick_kernel(_guardk)
_GRID = _pick_kernel(_guardk, "grid")
_CELLS = _pick_kernel(_guardk, "cells")  # an empty grid generation of the kernel (Cells, sized for n keys), or None

MAX_CLIENTS = 20_000
CELL = 10.0  # hash-grid cell width, in multiples of near_dup_rms
BUCKET = 32  # most recent queries kept per grid cell
GRIDS = 3  # three grids, each shifted by a third of a cell
BOUNDARY_NEEDS_NEAR_DUPS = 2  # the boundary signal trips a client only with this many near-duplicates in its window
PROJ_DIMS = 6  # with more features, hash on a random projection to this many dimensions
_SIMPLE = frozenset((int, str, bool))  # prediction types the guard compares as they are
GRID_OFFSET = 70  # added to every grid cell index: typical indices lie in [0, KEY_RADIX) (keys from the tables)
KEY_RADIX = 409  # a cell's key: sum of index_j * KEY_RADIX**j, exact in a float (409**6 < 2**53)
BIT = {"near_dup": 1, "boundary": 2, "flip": 4, "ood": 8}
_Z = itemgetter(4)  # an entry's standardised features
_ROW_KEYS = struct.Struct("4q")  # a row's keys and outlier bit in the kernel's rows() results (k0, k1, k2, bit)
_KEYS = struct.Struct("q")
BATCH_MIN_ROWS = 32  # without the C kernel, requests of at least this many rows take the numpy batch path (measured: docs/benchmarks.md)
_EXACT = frozenset((float, int, bool))  # value types the batch path takes (anything else: the per-row path)


def _utc(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class _Client:
    """A client's last ``w`` queries: the ones that raised a signal (their index among the client's queries and
    their flag bits, oldest first) and running sums per signal; a clean query only counts in ``seen``."""

    __slots__ = ("w", "hits", "sums", "seen", "first_seen", "ids")

    def __init__(self, w: int, now: float):
        self.w = w
        self.hits: deque[tuple[int, int]] = deque()  # (index of the query among the client's, flag bits)
        self.sums = [0, 0, 0, 0]  # near_dup, boundary, flip, ood (the order of BIT)
        self.seen = 0
        self.first_seen = now
        self.ids: deque[str] = deque(maxlen=w)

    @property
    def n(self) -> int:
        """Queries in the window (<= w)."""
        return self.seen if self.seen < self.w else self.w

    def window(self) -> dict[str, int]:
        return dict(zip(BIT, self.sums, strict=True))


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
        self.clients: dict[str, _Client] = {}  # least recently seen first (at most MAX_CLIENTS)
        self.clusters: dict[int, _Cluster] = {}
        # recent queries of all clients in three hash grids (cells of CELL x near_dup_rms, shifted by thirds of a
        # cell): a near-duplicate almost always shares a cell with its partner in one of them, and only the few
        # queries in those cells are compared (exactly). Entries older than `global_window` queries are ignored
        # and dropped.
        # A cell maps to its one entry (seq, client, prediction, cluster, z) or, once shared, to a list of the
        # last BUCKET entries. z: the standardised features, a tuple of floats, or with the C kernel (``_zb``) a
        # bytes object of the same doubles (one object per stored query instead of d + 1; -0.0 stored as 0.0, so
        # equal bytes are equal values).
        # Two generations of grids: queries go into the current one; every `global_window` queries it becomes
        # the previous one and the older is dropped whole.
        self.kernel = _KERNEL  # the C kernel of the rows function, or None (tests set None: the Python path)
        self.grid = _GRID  # the C kernel's grid bookkeeping (used with the kernel's rows), or None: _rows does it
        # With the C kernel's grid(), a generation is a _guardk.Cells (its hash table of int64 keys, a mapping with
        # dict's semantics to _rows); without it, a dict.
        self._cur: tuple[Any, ...] = self._generation()
        self._prev: tuple[Any, ...] = self._generation()
        self._gen_start = 0
        self._parent: dict[int, int] = {}  # cluster union-find: a query near two clusters merges them
        self._merged_at: dict[int, int] = {}  # when each merged-away cluster was merged (seq)
        self._seq = 0
        self._cell_inv = 1.0 / (CELL * float(sig["near_dup_rms"]))
        self._kmin_list = [self.kmin[name] for name in BIT]
        self._proj: list[list[float]] | None = None
        self._stdinv: list[float] | None = None
        self._meanl: list[float] | None = None
        self._invl: list[list[float]] | None = None
        self._ood_lo = self._ood_hi = math.inf
        self._fns: dict[tuple, Any] = {}  # column layout -> its generated rows function
        self.batch_min = BATCH_MIN_ROWS  # rows from which a request takes the numpy batch path
        self._zb: struct.Struct | None = None  # with the kernel (fixed at the first request): z as bytes, this layout
        self.new_trips: list[dict[str, Any]] = []
        self.tripped: dict[str, dict[str, Any]] = {}
        self.stats = {"rows": 0, "trips": 0, "fallback_rows": 0, "refused": 0, "skipped_rows": 0}
        self._lock = threading.Lock()
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._last_cols: list[str] | None = None  # the column layout of the last scored request, and its function
        self._last_fn: Any = None

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
    def _columns(self, cols: list[str], rows: list[list[Any]]) -> list[int]:
        """Positions of the guard's features in a request's columns (cached per column list)."""
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
        return got[0]

    def _matrix(self, idx: list[int], rows: list[list[Any]]) -> list[list[float]] | None:
        if not idx:
            return None
        try:
            X = [[float(r[i]) for i in idx] for r in rows]
        except (TypeError, ValueError, IndexError, OverflowError):
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
        self._acquire()  # = with self._lock, without the context manager's lookups and calls
        try:
            ev = self.tripped.get(client)
            if ev is not None:
                return ev
            if cols == self._last_cols:  # the same layout as the last request (a list compare, no hashing)
                fn = self._last_fn
            else:
                fn = self._fns.get(tuple(cols)) if self._meanl is not None else None
            if fn is None:  # a new column layout, or the scaling is not fixed yet
                idx = self._columns(cols, rows)
                if self._meanl is None:  # learning the scale without a profile, or the first request
                    X = self._matrix(idx, rows)
                    if X is None:
                        self.stats["skipped_rows"] += len(rows)
                        return None
                    if not self._learn(X):
                        self.stats["rows"] += len(rows)
                        return None
                    self._prepare(len(X[0]))
                if not idx:  # the request lacks profiled features: not scored by the guard
                    self.stats["skipped_rows"] += len(rows)
                    return None
                fn = self._fns[tuple(cols)] = self._rows_fn(idx)
                fn.pick = None if idx == list(range(len(cols))) else itemgetter(*idx)
                fn.kidx = struct.pack(f"{len(idx)}n", *idx)
            if fn is not self._last_fn:
                self._last_cols, self._last_fn = list(cols), fn
            n_rows = len(rows)
            zb = self._zb
            if zb is not None and self.kernel is not None and type(rows) is list and (
                    feats := self._kernel(fn, rows)) is not None:
                if feats is False:  # a value not finite: the request is not scored
                    self.stats["skipped_rows"] += n_rows
                    return None
                return self._observe(client, key_id, feats, n_rows, preds, scores, ids, kernel=True)
            if n_rows >= self.batch_min and (feats := self._batch(fn, rows)) is not None:
                if feats is False:  # a value not finite: the request is not scored
                    self.stats["skipped_rows"] += n_rows
                    return None
                if zb is not None:
                    feats = self._zpack(feats)
                return self._observe(client, key_id, feats, n_rows, preds, scores, ids)
            try:
                try:  # numbers as sent (int, float, bool) ...
                    feats = fn(rows)
                except TypeError:  # ... or anything float() reads, as the model's schema does
                    idx = self._col_idx[tuple(cols)][0]
                    conv = []
                    for r in rows:
                        rr = list(r)
                        for i in idx:
                            rr[i] = float(r[i])
                        conv.append(rr)
                    feats = fn(conv)
            except (TypeError, ValueError, IndexError, OverflowError):  # NaN / infinite values fail the floor
                feats = None
            if feats is None:  # a value missing, not a number or not finite: the request is not scored
                self.stats["skipped_rows"] += len(rows)
                return None
            if zb is not None:
                feats = self._zpack(feats)
            return self._observe(client, key_id, feats, len(feats), preds, scores, ids)
        finally:
            self._release()

    def _prepare(self, d: int) -> None:
        """Plain-Python copies of the scaling, the grid scale and the outlier model's bounds."""
        self._meanl = [float(v) for v in self._mean]
        self._stdinv = [1.0 / float(v) for v in self._std]
        self._r = math.sqrt(self.eps2 * d)  # RMS distance below near_dup_rms <=> Euclidean distance below this
        # the C grid's "no entry within r" test: its squared distances (naive sums) are within ~1e-14 of
        # math.dist's square; past this margin an entry is surely at r or farther (_guardk.c grid())
        self._r2_far = self._r * self._r * (1 + 1e-9)
        if self._inv is not None:
            self._invl = [[float(v) for v in row] for row in self._inv]
            lam = np.linalg.eigvalsh((self._inv + self._inv.T) / 2)
            # m2 = z' inv z lies in [lam_min |z|^2, lam_max |z|^2]: outside that band no quadratic form is needed
            self._ood_lo = float(self._ood_thr) / (float(lam.max()) * (1 + 1e-9)) if lam.max() > 0 else math.inf
            self._ood_hi = float(self._ood_thr) / (float(lam.min()) * (1 - 1e-9)) if lam.min() > 0 else math.inf
        if d > PROJ_DIMS:  # hash on a fixed random orthonormal projection (distances only shrink)
            rng = np.random.default_rng(0)
            q, _ = np.linalg.qr(rng.normal(size=(d, PROJ_DIMS)))
            self._proj = [[float(v) for v in col] for col in q.T]
        # the batch path's copies (the same doubles as the per-row function's constants)
        m = d if self._proj is None else len(self._proj)
        self._np_mean = np.array(self._meanl)
        self._np_stdinv = np.array(self._stdinv)
        self._np_proj = None if self._proj is None else np.array(self._proj).T.copy()  # [k, j]: z_k's in h_j
        self._s3 = 3.0 * self._cell_inv
        off = 3 * GRID_OFFSET
        self._nb = ((off - 1) / self._s3) ** 2  # the per-row function's table bound on |z|^2
        self._np_off3 = np.array([[off], [off + 1], [off + 2]], dtype=np.int64)
        self._np_radix = np.array([KEY_RADIX ** j for j in range(m)], dtype=np.int64)
        # the C kernel's: mean, stdinv, the projection (coefficient of z_k in h_j at k * m + j), s3, nb, lo, hi
        self._kdims = m
        if self.kernel is not None and d > getattr(_guardk, "MAXD", 0):
            # more features than the kernel's fixed arrays hold: the Python path, same results (its grid() goes with
            # it: it is only called on the kernel's rows, and _rotate sizes generations for it only)
            self.kernel = self.grid = None
        # the kernel stores z as bytes of doubles: from here on every z is (the Python paths' are packed, _zpack)
        self._zb = struct.Struct(f"{d}d") if self.kernel is not None else None
        kp = [*self._meanl, *self._stdinv]
        if self._proj is not None:
            kp += [self._proj[j][k] for k in range(d) for j in range(m)]
        kp += [self._s3, self._nb, self._ood_lo, self._ood_hi]
        self._kparams = struct.pack(f"{len(kp)}d", *kp)

    def _kernel(self, fn, rows: list[list[Any]]) -> Any:
        """The rows function's results from the C kernel (same operations, same order, same doubles: bit for
        bit); the rows it leaves to Python (past the key tables) computed by the rows function itself, and the
        outlier bit of the rows between the eigenvalue bounds by the quadratic form, as the rows function does.
        ``None``: not plain numbers, the Python path decides; ``False``: a value not finite."""
        res = self.kernel(rows, fn.kidx, self._kparams, len(self._meanl), self._kdims, 3 * GRID_OFFSET, KEY_RADIX)
        if res is None or res is False:
            return res
        zs, keys, slow, between = res
        if between:
            thr, m2, unpack = self._ood_thr, self._m2, self._zb.unpack
            for i in between:
                _KEYS.pack_into(keys, 32 * i + 24, 8 if m2(unpack(zs[i])) > thr else 0)
        if slow:
            for i, (z, k0, k1, k2, b) in zip(slow, self._zpack(fn([rows[i] for i in slow])), strict=True):
                zs[i] = z
                # the Python function's keys: integral floats below 2**53 (the tables) or hash(tuple): int64 both
                _ROW_KEYS.pack_into(keys, 32 * i, int(k0), int(k1), int(k2), b)
        return zs, keys

    def _zpack(self, feats: Any) -> list:
        """Rows' features from a Python path with z packed as the kernel stores it (bytes of the doubles, -0.0 as
        0.0): with the kernel every z in the grids is bytes, whichever path computed it."""
        pack = self._zb.pack
        return [(pack(*[v + 0.0 for v in z]), k0, k1, k2, b) for z, k0, k1, k2, b in feats]

    def _batch(self, fn, rows: list[list[Any]]) -> Any:
        """The rows function's results for a whole request at once, in numpy: the same operations in the same
        order on the same doubles (elementwise subtraction and multiplication; sums of squares and projections as
        sequential accumulations, never pairwise or BLAS; the cell indices as integers, whose key is the same
        number the tables' float sum gives — equal keys in a dict, int or float), so every z, key and outlier bit
        is the per-row path's, bit for bit. Returns an iterator of (z, key 0, 1, 2, ood bit), ``False`` when a
        value is not finite (the request is not scored), or ``None`` when the request is not plain numbers (the
        per-row path decides: conversions, errors). Rows past the tables' range or between the outlier bounds
        (rare) are computed by the per-row function itself."""
        pick = fn.pick
        d = len(self._meanl)
        if d < 2:
            return None
        n = len(rows)
        try:
            vals = list(chain.from_iterable(rows if pick is None else map(pick, rows)))
        except (TypeError, IndexError):
            return None
        if len(vals) != n * d or (pick is None and set(map(len, rows)) != {d}) or not _EXACT.issuperset(map(type, vals)):
            return None
        try:
            A = np.frombuffer(struct.pack(f"{n * d}d", *vals)).reshape(n, d)
        except (OverflowError, struct.error):
            return None
        # huge or infinite values overflow to inf / nan here, as in the per-row code (such a request is not
        # scored, below): no RuntimeWarning per request in the gateway's log
        with np.errstate(over="ignore", invalid="ignore"):
            Z = A - self._np_mean
            Z *= self._np_stdinv
            Q = Z * Z
            np.add.accumulate(Q, axis=1, out=Q)  # sequential: ((z0 z0 + z1 z1) + z2 z2) + ..., as the per-row code
            n2 = Q[:, -1]
            if self._np_proj is None:
                H = Z
            else:
                P = Z[:, :, None] * self._np_proj  # P[i, k, j] = z_k * coefficient of z_k in h_j
                np.add.accumulate(P, axis=1, out=P)
                H = P[:, -1, :]
            F = np.floor(H * self._s3)
        top = float(n2.max())
        slow = None
        if not top < self._nb:  # a row past the tables' range, or a value not finite
            if not np.isfinite(n2).all():
                return False
            slow = np.flatnonzero(n2 >= self._nb).tolist()
            F[slow] = 0.0
        K = (F.astype(np.int64)[:, None, :] + self._np_off3) // 3 @ self._np_radix  # K[i, g]: grid g's key
        k0, k1, k2 = K.T.tolist()
        zl = Z.ravel().tolist()
        zs = list(zip(*[iter(zl)] * d))  # noqa: B905 (d-tuples of the flat list)
        ood = [0] * n
        if top > self._ood_lo:  # rows past the outlier model's lower bound (rare): the per-row code's own test
            hi, thr, m2 = self._ood_hi, self._ood_thr, self._m2
            for i in np.flatnonzero(n2 > self._ood_lo).tolist():
                ood[i] = 8 if n2[i] > hi or m2(zs[i]) > thr else 0
        if slow:
            for i in slow:
                zs[i], k0[i], k1[i], k2[i], ood[i] = fn([rows[i]])[0]
        return zip(zs, k0, k1, k2, ood)  # noqa: B905 (n each)

    def _m2(self, z: tuple[float, ...]) -> float:
        """The outlier model's quadratic form z' inv z (rows between the eigenvalue bounds only)."""
        m2 = 0.0
        for a, row in zip(z, self._invl, strict=True):
            m2 += a * math.fsum([b * c for b, c in zip(row, z, strict=True)])
        return m2

    def _rows_fn(self, idx: list[int]):
        """A function rows -> [(z, grid key 0, 1, 2, ood bit), ...] for rows whose guard features sit at ``idx``
        (``None`` when a row is not finite), with the scaling, the projection and the grid scale as constants:
        generated once per column layout, one loop of straight-line arithmetic (one floor per dimension, three
        hashes per row). Only integers and float reprs go into the generated source."""
        d = len(idx)
        m = d if self._proj is None else len(self._proj)
        # the function's names are its locals (default arguments): no global lookup per use
        lines = ["def feats(rows, " + "".join(f"T{j}=T{j}, " for j in range(m))
                 + "floor=floor, lo=lo, hi=hi, m2=m2, thr=thr, key=key):", "    out = []", "    add = out.append",
                 "    for r in rows:"]
        lines += [f"        z{k} = (r[{int(i)}] - {self._meanl[k]!r}) * {self._stdinv[k]!r}" for k, i in enumerate(idx)]
        if self._proj is None:
            hs = [f"z{k}" for k in range(d)]
        else:
            for j, col in enumerate(self._proj):
                lines.append(f"        h{j} = " + " + ".join(f"{c!r} * z{k}" for k, c in enumerate(col)))
            hs = [f"h{j}" for j in range(len(self._proj))]
        # grid k's cell index along a dimension is floor(q + k/3) = (floor(3 q) + k) // 3, q = h / cell width:
        # one floor per dimension, the rest table lookups. The indices carry an offset of GRID_OFFSET (3 *
        # GRID_OFFSET added to floor(3 q)), so typical ones lie in [0, KEY_RADIX): a cell's key is then the
        # float sum of index_j * KEY_RADIX**j, exact (below 2**53) and distinct for distinct cells, its low bits
        # (a dict's slot: a float's hash is its integer value) spread like a tuple hash's (a power of two as
        # radix would crowd the slots); the table of dimension j holds the three grids' terms, so a key is five
        # float additions instead of a tuple and a hash() call. A cell with an index outside [0, KEY_RADIX) (a
        # far outlier) is keyed by the hash of its index tuple (a key shared by two cells would only make them
        # share candidates, which are compared exactly).
        s3 = 3.0 * self._cell_inv
        off = 3 * GRID_OFFSET
        tup = lambda items: "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"  # noqa: E731
        lines.append("        n2 = " + " + ".join(f"z{k} * z{k}" for k in range(d)))
        lines.append("        if n2 - n2 != 0.0:  # NaN or infinite")
        lines.append("            return None")
        # |h| <= |z| = sqrt(n2) (h: z or its orthonormal projection): below `nb` every f = floor(h * s3) lies in
        # [-off, off), where the table Tj[f] (a negative f indexing from its end) holds the three grids' terms
        # of the indices ((f + off) // 3, (f + off + 1) // 3, (f + off + 2) // 3), all in [0, 141)
        nb = ((off - 1) / s3) ** 2
        lines.append(f"        if n2 < {nb!r}:")
        lines += [f"            a{j}, b{j}, c{j} = T{j}[floor({h} * {s3!r})]" for j, h in enumerate(hs)]
        lines += [f"            k{g} = " + " + ".join(f"{v}{j}" for j in range(m)) for g, v in enumerate("abc")]
        lines.append("        else:")
        lines += [f"            g{j} = floor({h} * {s3!r}) + {off}" for j, h in enumerate(hs)]
        lines.append("            k0, k1, k2 = " + ", ".join(
            "key(" + tup([f"(g{j} + {k}) // 3" if k else f"g{j} // 3" for j in range(m)]) + ")"
            for k in range(GRIDS)))
        lines.append("        z = " + tup([f"z{k}" for k in range(d)]))
        lines.append("        if type(z0) is not float:")
        lines.append("            z = tuple([float(v) for v in z])")
        lines.append("        add((z, k0, k1, k2, (8 if n2 > hi or m2(z) > thr else 0) if n2 > lo else 0))")
        lines.append("    return out")
        ns: dict[str, Any] = {"floor": math.floor, "key": _cell_key, "lo": self._ood_lo, "hi": self._ood_hi,
                              "m2": self._m2, "thr": self._ood_thr}
        for j in range(m):
            w = KEY_RADIX ** j
            ns[f"T{j}"] = tuple((float((f + off) // 3 * w), float((f + off + 1) // 3 * w), float((f + off + 2) // 3 * w))
                                for f in (*range(off), *range(-off, 0)))
        exec(compile("\n".join(lines), "<aiir.evasion.guard features>", "exec"), ns)  # noqa: S102
        return ns["feats"]

    def _observe(self, client, key_id, feats, n_rows, preds, scores, ids, kernel=False) -> dict[str, Any] | None:
        """One request's rows into the guard's state. ``feats``: one (z, key 0, 1, 2, outlier bit) per row, or with
        ``kernel`` the C kernel's rows() results (zs, keys)."""
        if scores is None:
            scores = [None] * n_rows
        if len(preds) != n_rows or len(scores) != n_rows:
            raise ValueError(f"guard: {n_rows} rows, {len(preds)} predictions, {len(scores)} scores")
        now = None  # the request's time, read when something needs it (a new client, cluster or trip)
        clients = self.clients  # least recently seen first: a seen client is taken out and put back at the end
        c = clients.pop(client, None)
        if c is None:
            now = time.time()
            c = _Client(self.w, now)
            clients[client] = c
            if len(clients) > MAX_CLIENTS:
                del clients[next(iter(clients))]
        else:
            clients[client] = c
        if not kernel:
            added, trip_cluster, now = self._rows(c, client, feats, preds, scores, now)
        elif self.grid is not None and type(preds) is list and type(scores) is list:
            added, trip_cluster, now = self._grid_rows(self.grid, c, client, feats, preds, scores, now)
        else:  # the kernel's rows with the grid bookkeeping in Python
            zs, keys = feats
            added, trip_cluster, now = self._rows(
                c, client, [(z, *k) for z, k in zip(zs, _ROW_KEYS.iter_unpack(keys), strict=True)], preds, scores,
                now)
        hits, sums = c.hits, c.sums
        cs = c.seen
        if hits and hits[0][0] <= cs - self.w:  # queries that left the window take their hits along
            lim = cs - self.w
            while hits and hits[0][0] <= lim:
                gone = hits.popleft()[1]
                if gone & 1:
                    sums[0] -= 1
                if gone & 2:
                    sums[1] -= 1
                if gone & 4:
                    sums[2] -= 1
                if gone & 8:
                    sums[3] -= 1
        c.ids.extend(ids if len(ids) <= n_rows else ids[:n_rows])
        self.stats["rows"] += n_rows
        if not added and trip_cluster is None:
            # the critical counts never fall as the window grows and the sums only grow by new hits: a request
            # that added no hit cannot make a clean client significant
            return None
        n = c.n
        km = self._kmin_list
        reasons = [name for j, name in enumerate(BIT) if sums[j] >= km[j][n]]
        if "boundary" in reasons and sums[0] < BOUNDARY_NEEDS_NEAR_DUPS:
            # scores at the boundary alone can be a client's honest borderline business; probing also repeats
            # itself with small perturbations
            reasons.remove("boundary")
        if trip_cluster is not None:
            reasons.append("cluster")
        if not reasons:
            return None
        return self._trip(client, key_id, c, reasons, trip_cluster, time.time() if now is None else now)

    def _grid_rows(self, grid: Any, c: _Client, client: str, feats: tuple, preds: list, scores: list,
                   now: float | None) -> tuple[int, int | None, float | None]:
        """``_rows`` over the request with the C kernel's ``grid`` doing the rows without a near-duplicate
        candidate (~all clean rows; the same entries, cells, hits and sums as ``_rows``, see _guardk.c) and
        ``_rows`` the others, one at a time, in order. ``feats``: the kernel's rows() results (zs, keys)."""
        zs, keys = feats
        n = len(zs)
        added, trip_cluster, i = 0, None, 0
        while True:
            seq = self._seq
            (t0, t1, t2), (o0, o1, o2) = self._cur, self._prev
            i, seq2, a = grid(zs, keys, preds, scores, i, seq, self._gen_start + self.gw, client, self.thr,
                              self.band, self._r2_far, t0, t1, t2, o0, o1, o2, c.hits.append, c.sums, c.seen - seq,
                              BUCKET)
            added |= a
            c.seen += seq2 - seq
            self._seq = seq2
            if i >= n:
                return added, trip_cluster, now
            row = [(zs[i], *_ROW_KEYS.unpack_from(keys, 32 * i))]
            a, tc, now = self._rows(c, client, row, preds, scores, now, i, i + 1)
            added |= a
            if tc is not None:
                trip_cluster = tc
            i += 1

    def _rows(self, c: _Client, client: str, feats: Any, preds: Any, scores: Any, now: float | None,
              lo: int = 0, hi: int | None = None) -> tuple[int, int | None, float | None]:
        """Rows ``lo:hi`` of a request (all by default) into the grids, the clusters and the client's window.
        Returns (signal bits added, the last tripped cluster met or None, the request's time if read)."""
        if lo or hi is not None:  # rows lo:hi of preds and scores; feats: those rows' (_grid_rows), or all
            if len(feats) != hi - lo:
                feats = feats[lo:hi]
            preds, scores = preds[lo:hi], scores[lo:hi]
        r = self._r
        horizon = self.gw
        thr, band = self.thr, self.band
        if self._zb is None:
            dist = math.dist
        else:  # z as bytes (the kernel's): the same math.dist of the same doubles
            unpack, mdist = self._zb.unpack, math.dist

            def dist(a: bytes, b: bytes) -> float:
                return mdist(unpack(a), unpack(b))
        seq = self._seq
        rot_at = self._gen_start + horizon  # the next generation starts at this query
        (t0, t1, t2), (o0, o1, o2) = self._cur, self._prev
        sd0, sd1, sd2 = t0.setdefault, t1.setdefault, t2.setdefault
        sums, hits = c.sums, c.hits
        cs0 = c.seen - seq  # + seq: the query's index among the client's
        trip_cluster = None
        added = 0  # signal bits this request added to the client's window
        for (z, k0, k1, k2, flags), p, s in zip(feats, preds, scores):  # noqa: B905 (lengths checked above; a keyword costs an argument parse per request)
            if seq >= rot_at:
                self._rotate(seq)
                rot_at = seq + horizon
                (t0, t1, t2), (o0, o1, o2) = self._cur, self._prev
                sd0, sd1, sd2 = t0.setdefault, t1.setdefault, t2.setdefault
            if s is not None and -band < s - thr < band:  # = abs(s - thr) < band, without a call
                flags |= 2
            if type(p) not in _SIMPLE:  # predictions compared by value through their JSON form
                p = hash(json.dumps(p, default=str))
            # the query as its own cluster (id = its sequence number), what ~all clean queries store: one
            # setdefault per grid looks its cell up in the current generation and, when the cell was empty (~95 %
            # of them hold one query), already stores it there
            e = (seq, client, p, seq, z)
            b0, b1, b2 = sd0(k0, e), sd1(k1, e), sd2(k2, e)
            q0, q1, q2 = o0.get(k0), o1.get(k1), o2.get(k2)
            if b0 is e and b1 is e and b2 is e and q0 is None and q1 is None and q2 is None:
                best = None  # six empty cells (~60 % of clean rows): no candidate, the query is stored
            else:
                if b0 is e:
                    b0 = None
                if b1 is e:
                    b1 = None
                if b2 is e:
                    b2 = None
                best = None
                # exact rejection first: the nearest of the six cells' entries (a superset of the candidates:
                # stale and past-BUCKET entries included) at r or farther -> no candidate is a near-duplicate
                # (clean traffic: ~40 % of rows meet an occupied cell, ~0.3 % a near-duplicate)
                m = r
                for x in (b0, b1, b2, q0, q1, q2):
                    if x is not None:
                        dx = dist(z, x[4]) if type(x) is tuple else min(map(dist, repeat(z), map(_Z, x)))
                        if dx < m:
                            m = dx
                if m < r:  # the exact search: this query's candidates, as before
                    bestd, cflip = r, False
                    others = None
                    old = seq - horizon
                    cands: list = []
                    for b, q in ((b0, q0), (b1, q1), (b2, q2)):
                        nb = 0
                        if b is not None:
                            if type(b) is tuple:
                                cands.append(b)
                                nb = 1
                            else:
                                cands.extend(b)
                                nb = len(b)
                        if q is not None and nb < BUCKET:  # a cell's last BUCKET queries, over both generations
                            if type(q) is tuple:
                                cands.append(q)
                            else:
                                cands.extend(q[nb - BUCKET:])
                    seen = set() if len(cands) > 1 else None
                    for x in cands:
                        es = x[0]
                        if es < old:
                            continue
                        if seen is not None:
                            if es in seen:
                                continue
                            seen.add(es)
                        dd = dist(z, x[4])
                        if 1e-6 < dd < r:
                            if x[1] == client:
                                flags |= 1
                                if x[2] != p:
                                    flags |= 4
                            if x[2] != p:
                                cflip = True
                            if others is None:
                                others = {x[3]}
                            else:
                                others.add(x[3])
                            if dd < bestd:
                                best, bestd = x, dd
                if best is None:
                    entry = e
                else:
                    cid = self._find(best[3])
                    for o in others:
                        ro = self._find(o)
                        if ro != cid:
                            cid = self._union(cid, ro, seq)
                    entry = (seq, client, p, cid, z)
                # into the current generation; a cell of one query holds the entry itself
                if b0 is None:  # the cell was empty and holds e
                    if entry is not e:
                        t0[k0] = entry
                elif type(b0) is tuple:  # _push's first case, inline
                    t0[k0] = entry if (b0[4] == z and b0[1] == client) else [b0, entry]
                else:
                    _push(t0, k0, b0, entry)
                if b1 is None:  # the cell was empty and holds e
                    if entry is not e:
                        t1[k1] = entry
                elif type(b1) is tuple:  # _push's first case, inline
                    t1[k1] = entry if (b1[4] == z and b1[1] == client) else [b1, entry]
                else:
                    _push(t1, k1, b1, entry)
                if b2 is None:  # the cell was empty and holds e
                    if entry is not e:
                        t2[k2] = entry
                elif type(b2) is tuple:  # _push's first case, inline
                    t2[k2] = entry if (b2[4] == z and b2[1] == client) else [b2, entry]
                else:
                    _push(t2, k2, b2, entry)
            # the client's window: the queries with a signal, and running sums
            if flags:
                added |= flags
                hits.append((cs0 + seq, flags))
                if flags & 1:
                    sums[0] += 1
                if flags & 2:
                    sums[1] += 1
                if flags & 4:
                    sums[2] += 1
                if flags & 8:
                    sums[3] += 1
            # cluster statistics (a cluster exists from its second query on)
            if best is not None:
                cl = self.clusters.get(cid)
                if cl is None:
                    if now is None:
                        now = time.time()
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
                    if now is None:
                        now = time.time()
                    self._trip_members(cl, cid, now, exclude=client)
            seq += 1
        self._seq = seq
        c.seen = cs0 + seq
        return added, trip_cluster, now

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

    def _union(self, a: int, b: int, seq: int) -> int:
        """Merge clusters ``a`` and ``b`` (roots); the bigger absorbs the other's counts. Returns the root."""
        ca, cb = self.clusters.get(a), self.clusters.get(b)
        if (cb.n if cb else 1) > (ca.n if ca else 1):
            a, b, ca, cb = b, a, cb, ca
        self._parent[b] = a
        self._merged_at[b] = seq
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

    def _rotate(self, seq: int) -> None:
        """Every ``global_window`` queries the current grid generation becomes the previous one and the
        previous one is dropped whole (its queries are all older than the horizon), with the clusters nobody
        has joined within the horizon and the union-find links no live query can reach: O(1) per query, no
        sweep over the grids."""
        self._prev = self._cur
        self._cur = self._generation()
        self._gen_start = seq
        old = seq - self.gw
        self.clusters = {k: v for k, v in self.clusters.items() if v.tripped or v.last_seq >= old}
        # a cluster merged away at seq t is referenced only by queries older than t (later ones get its root)
        # and by links made before t: once t is past the horizon nothing live reaches it
        gone = [k for k, t in self._merged_at.items() if t < old]
        for k in gone:
            del self._merged_at[k]
            self._parent.pop(k, None)

    def _generation(self) -> tuple[Any, ...]:
        """A new generation's empty grids: the kernel's Cells, sized for ``global_window`` queries (no growth while
        it fills), when its rows() and grid() run; else dicts (``_rows`` uses either alike)."""
        if self.kernel is not None and self.grid is not None and _CELLS is not None:
            return tuple(_CELLS(self.gw) for _ in range(GRIDS))
        return tuple({} for _ in range(GRIDS))

    def _cluster_view(self, cid: int | None) -> dict[str, Any] | None:
        cl = self.clusters.get(cid) if cid is not None else None
        if cl is None:
            return None
        return {"cluster_id": cid, "size": cl.n, "boundary": cl.boundary, "flip": cl.flip,
                "n_clients": len(cl.clients),
                "clients": dict(sorted(cl.clients.items(), key=lambda kv: -kv[1])[:50])}

    def _trip(self, client: str, key_id: str | None, c: _Client | None, reasons: list[str], cid: int | None,
              now: float) -> dict[str, Any]:
        n = c.n if c is not None else 0
        ev = {"event": "guard_trip", "at": _utc(now), "client_id": client, "key_id": key_id, "reasons": reasons,
              "window": {"n": n, **(c.window() if c is not None else {})},
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


def _cell_key(idx: tuple[int, ...]) -> float | int:
    """A grid cell's key from its index tuple: sum of index_j * KEY_RADIX**j (a float, exact) when every index lies
    in [0, KEY_RADIX) — the key the generated rows function computes from its tables — else the tuple's hash."""
    if min(idx) >= 0 and max(idx) < KEY_RADIX:
        return float(sum(v * KEY_RADIX ** j for j, v in enumerate(idx)))
    return hash(idx)


def _push(t: Any, k: Any, b: Any, entry: tuple) -> None:
    """Add ``entry`` to the grid cell ``t[k]`` holding ``b`` (one entry, or a list of the last BUCKET)."""
    z, client = entry[4], entry[1]
    if type(b) is tuple:
        t[k] = entry if (b[4] == z and b[1] == client) else [b, entry]
    elif b[-1][4] == z and b[-1][1] == client:  # a client repeating itself exactly fills no cell
        b[-1] = entry
    else:
        b.append(entry)
        if len(b) > BUCKET:
            del b[0]


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
