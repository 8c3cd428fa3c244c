"""Shared material for the evasion tests: a fraud model, its reference profile, clean traffic from many
clients and real HopSkipJump attack queries (ART) recorded in-process, as decision-log records."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import numpy as np

from aiir.evasion import attacks
from aiir.evasion.profile import fit_profile
from aiir.gateway.synthetic import FEATURES, synthetic_frame

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Oracle:
    """The served model in-process: records every query (raw features, score) like the decision log."""

    def __init__(self, model, profile):
        self.model, self.profile = model, profile
        self.queries: list[tuple[np.ndarray, float]] = []

    def predict(self, Z):
        X = self.profile.mean + np.asarray(Z, float) * self.profile.std
        p = self.model.predict_proba(X)[:, 1]
        self.queries += list(zip(X, p, strict=True))
        return np.eye(2)[(p >= 0.5).astype(int)]


def world(seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    X, y = synthetic_frame(2000, seed=seed)
    model = LogisticRegression(C=0.3, max_iter=500).fit(X, y)
    prof = fit_profile(X.to_numpy(), FEATURES)
    return X, y, model, prof


def record(client: str, X: np.ndarray, scores: np.ndarray, start: datetime, step_s: float, prefix: str) -> list[dict]:
    return [{"decision_id": f"{prefix}-{i}", "ts": iso(start + timedelta(seconds=i * step_s)), "client_id": client,
             "features": dict(zip(FEATURES, map(float, x), strict=True)), "prediction": int(s >= 0.5),
             "score": float(s), "model": "gw-test", "model_version": "2"}
            for i, (x, s) in enumerate(zip(X, scores, strict=True))]


def write_log(path, recs: list[dict]):
    """The records (as :func:`record` makes them) appended to a real decision log at ``path``."""
    from aiir.gateway.decision_log import DecisionLog

    log = DecisionLog(path)
    log.append_many([{k: r[k] for k in ("decision_id", "ts", "client_id", "features", "prediction", "score",
                                        "model", "model_version")} for r in recs])
    log.close()
    return path


def clean_traffic(model, *, clients: int = 40, per_client: int = 100, seed: int = 7) -> list[dict]:
    Xc, _ = synthetic_frame(clients * per_client, seed=seed)
    Xc = Xc.to_numpy()
    p = model.predict_proba(Xc)[:, 1]
    out = []
    for k in range(clients):
        sl = slice(k * per_client, (k + 1) * per_client)
        out += record(f"merchant-{k:03d}", Xc[sl], p[sl], T0 + timedelta(seconds=k), 30.0, f"clean{k}")
    return out


def hsj_queries(model, prof, X, *, rows: int = 2, seed: int = 0, max_iter: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Every query ART's HopSkipJump sends while evading ``rows`` fraud rows (raw features, scores)."""
    fraud = X.to_numpy()[model.predict(X) == 1][seed * rows:(seed + 1) * rows]
    oracle = Oracle(model, prof)
    bounds = attacks.clip_bounds(prof.standardise(X.to_numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attacks.hop_skip_jump(oracle.predict, prof.standardise(fraud), bounds, max_iter=max_iter, max_eval=200,
                              init_eval=20, seed=seed)
    Xq = np.array([q[0] for q in oracle.queries])
    return Xq, np.array([q[1] for q in oracle.queries])


def attack_single(model, prof, X, client: str = "attacker-1", **kw) -> list[dict]:
    Xq, s = hsj_queries(model, prof, X, **kw)
    return record(client, Xq, s, T0 + timedelta(minutes=5), 0.01, f"atk-{client}")


def attack_spread(model, prof, X, ids: int = 30, **kw) -> list[dict]:
    """One HopSkipJump run whose queries rotate over ``ids`` client ids (a request of ~8 rows each)."""
    Xq, s = hsj_queries(model, prof, X, **kw)
    recs = record("x", Xq, s, T0 + timedelta(minutes=7), 0.05, "spread")
    for i, r in enumerate(recs):
        r["client_id"] = f"sybil-{(i // 8) % ids:02d}"
    return recs


def attack_transfer(model, prof, X, *, client: str = "transfer-1", recon: int = 300, rows: int = 40,
                    eps: float = 1.5, seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """The transfer attacker of bench_evasion in-process: ``recon`` fresh rows labelled through the model, a
    logistic-regression surrogate, ``rows`` fraud rows crafted on it with PGD (L2 ``eps`` std), sent one each.
    Returns its decision records and their true labels (recon rows: their own; crafted rows: fraud)."""
    Xr, yr = synthetic_frame(recon, seed=100 + seed)
    Xr = Xr.to_numpy()
    pool, _ = synthetic_frame(4000, seed=200 + seed)
    pool = pool.to_numpy()
    pool = pool[model.predict(pool) == 1][:rows]
    bounds = attacks.clip_bounds(prof.standardise(X.to_numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sur = attacks.fit_surrogate(prof.standardise(Xr), model.predict(Xr))
        Xt = prof.mean + attacks.transfer_attack(sur, prof.standardise(pool), eps=eps, bounds=bounds) * prof.std
    Xq = np.vstack([Xr, Xt])
    recs = record(client, Xq, model.predict_proba(Xq)[:, 1], T0 + timedelta(minutes=9), 0.05, f"tr-{client}")
    truth = np.concatenate([yr, np.ones(len(Xt), int)])
    return recs, {r["decision_id"]: int(t) for r, t in zip(recs, truth, strict=True)}


def clean_labels(clients: int = 40, per_client: int = 100, seed: int = 7) -> dict[str, int]:
    """The true labels of :func:`clean_traffic`'s decisions."""
    _, y = synthetic_frame(clients * per_client, seed=seed)
    return {f"clean{k}-{i}": int(y[k * per_client + i]) for k in range(clients) for i in range(per_client)}
