"""Real attacks with the adversarial-robustness-toolbox (ART) for tests, benchmarks and hardening.

* :class:`HttpModel` — the served model as the attacker sees it: every query is a real ``POST /invocations``
  to a gateway, under one client id / API key or rotating over many (a "slow" attacker spreading its
  queries); columns it does not perturb (a categorical feature) go unchanged with every row (``fixed``). It records each query (time, client, HTTP status, whether the guard answered) so containment
  can be measured from the first attack query. Refused queries (403/429) read as the positive class — the
  transaction is declined, which is what the attacker observes.
* :func:`hop_skip_jump` — ART's HopSkipJump (decision-based, label-only) through a ``BlackBoxClassifier``.
* :func:`transfer_attack` — a surrogate trained on labels obtained from the target, attacked white-box with
  ART's ProjectedGradientDescent / FastGradientMethod, the adversarial rows then sent to the target.

All attacks work in the standardised feature space of a :class:`~aiir.evasion.profile.Profile` (features of
very different scales), with per-feature clip bounds from the reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class QueryLog:
    """Every row the attacker sent: wall time, client, status, served-by-guard."""

    t: list[float] = field(default_factory=list)
    client: list[str] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    guarded: list[bool] = field(default_factory=list)

    def add(self, n: int, t: float, client: str, status: int, guarded: bool) -> None:
        self.t += [t] * n
        self.client += [client] * n
        self.status += [status] * n
        self.guarded += [guarded] * n

    @property
    def n(self) -> int:
        return len(self.t)

    def containment(self) -> dict[str, Any] | None:
        """Queries and seconds from the first query to the first one contained (guard answer or refusal)."""
        for i, (s, g) in enumerate(zip(self.status, self.guarded, strict=True)):
            if g or s in (403, 429):
                return {"queries": i + 1, "seconds": round(self.t[i] - self.t[0], 4), "status": s, "guarded": g}
        return None


class QueryBudgetExhausted(RuntimeError):
    """The attacker gave up: its query budget is spent (a contained attack never converges)."""


class HttpModel:
    """The gateway's ``/invocations`` as a label oracle over standardised inputs.

    ``max_queries`` bounds the attack: once the guard answers conservatively, HopSkipJump's step search
    never finds an adversarial point again and would query forever; past the budget the oracle raises
    :class:`QueryBudgetExhausted` and :func:`hop_skip_jump` returns the rows unchanged (the attack failed)."""

    def __init__(self, url: str, columns: list[str], *, mean: np.ndarray, std: np.ndarray,
                 clients: list[str] | None = None, api_keys: list[str] | None = None, rows_per_request: int = 64,
                 positive_class: Any = 1, timeout: float = 20.0, max_queries: int = 3000,
                 fixed: dict[str, Any] | None = None):
        import httpx

        self.url = url.rstrip("/")
        self.columns = list(columns)
        self.fixed = dict(fixed or {})  # columns sent unchanged with every row (e.g. a merchant category)
        self.mean, self.std = np.asarray(mean, float), np.asarray(std, float)
        self.ids = list(api_keys or clients or ["attacker"])
        self.use_keys = api_keys is not None
        self.rows_per_request = rows_per_request
        self.positive = positive_class
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        self.log = QueryLog()
        self.max_queries = max_queries
        self._turn = 0

    def close(self) -> None:
        self.http.close()

    def _headers(self, ident: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        h["X-Api-Key" if self.use_keys else "X-Client-Id"] = ident
        return h

    def labels_raw(self, X: np.ndarray) -> np.ndarray:
        """Predictions (0/1) for raw feature rows, one request per ``rows_per_request`` rows."""
        out = []
        if self.log.n >= self.max_queries:
            raise QueryBudgetExhausted(f"{self.log.n} queries sent")
        for k in range(0, len(X), self.rows_per_request):
            chunk = X[k:k + self.rows_per_request]
            ident = self.ids[self._turn % len(self.ids)]
            self._turn += 1
            data = np.round(chunk, 6).tolist()
            if self.fixed:
                data = [row + list(self.fixed.values()) for row in data]
            body = json.dumps({"dataframe_split": {"columns": self.columns + list(self.fixed),
                                                   "data": data}})
            r = self.http.post("/invocations", content=body, headers=self._headers(ident))
            t = time.time()
            who = ident if not self.use_keys else ident.split("_")[1]
            if r.status_code == 200:
                preds = r.json()["predictions"]
                self.log.add(len(chunk), t, who, 200, r.headers.get("x-aiir-guard") is not None)
            elif r.status_code in (403, 429):
                preds = [self.positive] * len(chunk)
                self.log.add(len(chunk), t, who, r.status_code, False)
            else:
                raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:300]}")
            out += [1 if p == self.positive else 0 for p in preds]
        return np.asarray(out)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """ART's ``predict_fn``: standardised rows → one-hot labels."""
        X = self.mean + np.asarray(Z, float).reshape(len(Z), -1) * self.std
        y = self.labels_raw(X)
        return np.eye(2)[y]


def clip_bounds(Z_ref: np.ndarray, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature bounds of the standardised reference, widened by ``margin`` standard deviations."""
    return Z_ref.min(axis=0) - margin, Z_ref.max(axis=0) + margin


def _seeded_hsj_class():
    """ART's HopSkipJump with its random starting points drawn from a seeded generator.

    ART 1.20.1 draws the uniform starting points of an untargeted attack from ``np.random.RandomState()``
    (seeded from the OS on every row), so the same seed gave different attacks run to run; everything else it
    draws from numpy's global generator, which :func:`hop_skip_jump` seeds. This subclass is ART's own
    ``_init_sample`` (untargeted branch) with that one generator replaced."""
    from art.attacks.evasion import HopSkipJump
    from art.config import ART_NUMPY_DTYPE

    class SeededHopSkipJump(HopSkipJump):
        def __init__(self, *args, rng_seed: int = 0, **kwargs):
            super().__init__(*args, **kwargs)
            self._rng = np.random.RandomState(rng_seed)

        def _init_sample(self, x, y, y_p, init_pred, adv_init, mask, clip_min, clip_max):
            if self.targeted:
                return super()._init_sample(x, y, y_p, init_pred, adv_init, mask, clip_min, clip_max)
            if adv_init is not None and init_pred != y_p:
                return adv_init.astype(ART_NUMPY_DTYPE), y_p
            for _ in range(self.init_size):
                random_img = self._rng.uniform(clip_min, clip_max, size=x.shape).astype(x.dtype)
                if mask is not None:
                    random_img = random_img * mask + x * (1 - mask)
                random_class = np.argmax(self.estimator.predict(np.array([random_img]), batch_size=self.batch_size),
                                         axis=1)[0]
                if random_class != y_p:
                    random_img = self._binary_search(current_sample=random_img, original_sample=x, target=y_p, norm=2,
                                                     clip_min=clip_min, clip_max=clip_max, threshold=0.001)
                    return random_img, y_p
            return None

    return SeededHopSkipJump


def hop_skip_jump(predict_fn, Z: np.ndarray, bounds: tuple[np.ndarray, np.ndarray], *, max_iter: int = 5,
                  max_eval: int = 200, init_eval: int = 20, init_size: int = 50, batch_size: int = 64,
                  seed: int = 0) -> np.ndarray:
    """ART HopSkipJump (untargeted, L2) on rows ``Z`` against a label oracle; returns the adversarial rows.
    Deterministic for a given ``seed`` and oracle (see :func:`_seeded_hsj_class`)."""
    from art.estimators.classification import BlackBoxClassifier

    np.random.seed(seed)  # ART samples its search directions with numpy's global generator
    clf = BlackBoxClassifier(predict_fn, input_shape=(Z.shape[1],), nb_classes=2,
                             clip_values=(bounds[0].astype(np.float32), bounds[1].astype(np.float32)))
    atk = _seeded_hsj_class()(clf, targeted=False, norm=2, max_iter=max_iter, max_eval=max_eval,
                              init_eval=init_eval, init_size=init_size, batch_size=batch_size, verbose=False,
                              rng_seed=seed)
    try:
        return atk.generate(x=Z.astype(np.float32))
    except QueryBudgetExhausted:
        return Z.astype(np.float32)


def fit_surrogate(Z: np.ndarray, y: np.ndarray, *, C: float = 1.0):
    """A logistic-regression surrogate on standardised rows labelled by the target."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=1000).fit(Z, y)


def white_box(model, Z: np.ndarray, y: np.ndarray, *, eps: float, bounds: tuple[np.ndarray, np.ndarray] | None = None,
              norm: Any = 2, method: str = "pgd", max_iter: int = 20) -> np.ndarray:
    """Adversarial rows for a scikit-learn logistic regression with ART (PGD or FGM), L2 or L-inf ``eps``."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import SklearnClassifier

    clip = (bounds[0].astype(np.float32), bounds[1].astype(np.float32)) if bounds is not None else None
    clf = SklearnClassifier(model=model, clip_values=clip)
    if method == "fgm":
        atk = FastGradientMethod(clf, norm=norm, eps=eps)
    else:
        atk = ProjectedGradientDescent(clf, norm=norm, eps=eps, eps_step=eps / 4, max_iter=max_iter, verbose=False)
    return atk.generate(x=Z.astype(np.float32), y=np.eye(2)[np.asarray(y, int)])


def transfer_attack(surrogate, Z: np.ndarray, *, eps: float, bounds=None, norm: Any = 2) -> np.ndarray:
    """Craft on the surrogate (white-box PGD, pushing the rows away from their surrogate label)."""
    y = surrogate.predict(Z)
    return white_box(surrogate, Z, y, eps=eps, bounds=bounds, norm=norm)
