"""Hardening after an evasion incident: adversarial retraining with ART, a robust-accuracy gate, and a
canary redeploy that rolls back by itself.

* :func:`adversarial_retrain` — a drop-in model (a scikit-learn ``Pipeline(StandardScaler, LogisticRegression)``
  on the raw features, so the gateway serves it unchanged) trained on the clean training rows plus
  adversarial examples ART's ProjectedGradientDescent crafts against the current candidate, for a few rounds
  (Madry-style adversarial training, the attack re-run against each new candidate).
* :func:`robust_accuracy` — accuracy on adversarial rows: held-out attacks crafted against the *old* model
  (the HopSkipJump rows of the incident, or fresh ones), and a white-box PGD attack at radius ``eps``
  against each model itself (the adaptive attacker).
* :func:`gate` — the hardened model must be more robust by ``min_gain`` and lose at most ``max_clean_drop``
  of clean accuracy; a failed gate leaves the served model alone.
* :func:`canary_redeploy` — register nothing itself: give it the hardened version, it canaries it on the
  target, watches the canary's decisions (agreement with the guard-free primary on clean traffic, errors),
  and promotes (``rollback`` to it, pinned) or rolls back (canary share 0) automatically.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from aiir.errors import BadInput


def _pipeline(C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=C, max_iter=2000))])


def _pgd_raw(pipe, X: np.ndarray, y: np.ndarray, *, eps: float, max_iter: int = 20) -> np.ndarray:
    """PGD (L2, radius ``eps`` in the pipeline's standardised space) against a fitted pipeline, raw rows out."""
    from aiir.evasion.attacks import white_box

    sc, lr = pipe.named_steps["scale"], pipe.named_steps["clf"]
    Z = sc.transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Zadv = white_box(lr, Z, y, eps=eps, norm=2, max_iter=max_iter)
    return sc.inverse_transform(Zadv)


def adversarial_retrain(X: np.ndarray, y: np.ndarray, *, eps: float = 0.5, rounds: int = 3, C: float = 1.0,
                        ratio: float = 1.0, attacked_class: int | None = 1, seed: int = 0,
                        progress: Callable[[str], None] | None = None):
    """Adversarial training: fit, craft PGD examples against the candidate, add them (true labels), refit.

    ``attacked_class`` (default 1, fraud) crafts examples only from the class the attacker moves away from —
    an evader pushes fraud toward "legitimate", never the reverse — so the boundary moves where the attack
    lands instead of being pushed back by symmetric examples. ``None`` crafts from both classes."""
    say = progress or (lambda _m: None)
    X = np.asarray(X, float)
    y = np.asarray(y, int)
    if len(np.unique(y)) != 2:
        raise BadInput("training data", "adversarial retraining needs a binary label with both classes")
    rng = np.random.default_rng(seed)
    pipe = _pipeline(C).fit(X, y)
    Xa, ya = X, y
    pool = np.flatnonzero(y == attacked_class) if attacked_class is not None else np.arange(len(X))
    if pool.size == 0:
        raise BadInput("training data", f"no rows of the attacked class {attacked_class}")
    for r in range(rounds):
        idx = rng.choice(pool, size=min(pool.size, max(1, int(ratio * pool.size))), replace=False)
        Xadv = _pgd_raw(pipe, X[idx], y[idx], eps=eps)
        Xa = np.vstack([X, Xadv])
        ya = np.concatenate([y, y[idx]])
        pipe = _pipeline(C).fit(Xa, ya)
        say(f"adversarial training round {r + 1}/{rounds}: {len(idx)} PGD examples (eps {eps})")
    return pipe, {"method": "adversarial training (ART ProjectedGradientDescent, L2)", "eps": eps,
                  "rounds": rounds, "ratio": ratio, "C": C, "attacked_class": attacked_class, "rows": int(len(X)), "adversarial_rows": int(len(Xa) - len(X))}


def _predict(model, X) -> np.ndarray:
    import pandas as pd

    cols = getattr(model, "feature_names_in_", None)
    if cols is not None and not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(X, columns=list(cols))
    return np.asarray(model.predict(X)).astype(int)


def robust_accuracy(model, X_clean: np.ndarray, y_clean: np.ndarray, *, held_out: dict[str, tuple[np.ndarray, np.ndarray]],
                    eps: float | None = None) -> dict[str, Any]:
    """Clean accuracy, accuracy on each held-out attack set ``{name: (X_adv, y_true)}``, and (for pipelines)
    accuracy under a white-box PGD at ``eps``."""
    out: dict[str, Any] = {"clean_accuracy": float((_predict(model, X_clean) == y_clean).mean())}
    for name, (Xa, ya) in held_out.items():
        if len(Xa):
            out[f"robust_accuracy_{name}"] = float((_predict(model, Xa) == ya).mean())
            out[f"rows_{name}"] = int(len(Xa))
    if eps is not None and hasattr(model, "named_steps"):
        Xp = _pgd_raw(model, X_clean, y_clean, eps=eps)
        ok = _predict(model, Xp) == y_clean
        out["robust_accuracy_pgd"] = float(ok.mean())
        pos = y_clean == 1
        out["robust_accuracy_pgd_fraud"] = float(ok[pos].mean()) if pos.any() else None
        out["pgd_eps"] = eps
    return out


def gate(before: dict[str, Any], after: dict[str, Any], *, on: str, min_gain: float = 0.2,
         max_clean_drop: float = 0.05, min_robust: float = 0.5) -> dict[str, Any]:
    """Pass when the hardened model is more robust on ``on`` by ``min_gain`` (absolute), at least
    ``min_robust`` robust, and its clean accuracy dropped at most ``max_clean_drop``."""
    key = f"robust_accuracy_{on}"
    if key not in before or key not in after:
        raise BadInput("gate", f"no '{on}' attack set measured")
    gain = after[key] - before[key]
    drop = before["clean_accuracy"] - after["clean_accuracy"]
    reasons = []
    if gain < min_gain:
        reasons.append(f"robust accuracy on '{on}' rose by {gain:.3f} (< {min_gain})")
    if after[key] < min_robust:
        reasons.append(f"robust accuracy on '{on}' is {after[key]:.3f} (< {min_robust})")
    if drop > max_clean_drop:
        reasons.append(f"clean accuracy fell by {drop:.3f} (> {max_clean_drop})")
    return {"passed": not reasons, "on": on, "gain": round(gain, 4), "clean_drop": round(drop, 4),
            "criteria": {"min_gain": min_gain, "max_clean_drop": max_clean_drop, "min_robust": min_robust},
            "reasons": reasons}


def canary_redeploy(target, version: str, *, share: float = 0.2, observe_s: float = 5.0,
                    min_decisions: int = 20, max_error_rate: float = 0.02, check: Callable[[dict], str | None] | None = None,
                    poll_s: float = 0.5, reason: str = "") -> dict[str, Any]:
    """Canary ``version`` at ``share`` on ``target``; after ``observe_s`` (and ``min_decisions`` canary
    decisions) promote it, or roll back when the canary erred or ``check(stats)`` names a problem.

    Promotion pins the canary as the primary (``target.rollback(version)``), rollback ends the canary
    (share 0) and leaves the primary serving. Returns what happened, with the observed statistics."""
    t0 = time.time()
    from aiir.gateway.decision_log import to_iso

    since = to_iso(t0)
    target.canary(version, share, reason=reason or f"canary of hardened v{version}")
    stats: dict[str, Any] = {}
    problem = None
    try:
        deadline = t0 + observe_s
        while True:
            rows = target.decisions(since, None)
            can = [r for r in rows if str(r.get("model_version")) == str(version)]
            prim = [r for r in rows if str(r.get("model_version")) != str(version)]
            errors = sum(1 for r in can if r.get("prediction") is None)
            stats = {"canary_decisions": len(can), "primary_decisions": len(prim),
                     "canary_error_rate": errors / len(can) if can else None,
                     "canary_positive_rate": (sum(1 for r in can if r.get("prediction") in (1, True, "1")) / len(can))
                     if can else None,
                     "primary_positive_rate": (sum(1 for r in prim if r.get("prediction") in (1, True, "1")) / len(prim))
                     if prim else None}
            if can and stats["canary_error_rate"] > max_error_rate:
                problem = f"canary error rate {stats['canary_error_rate']:.3f} > {max_error_rate}"
                break
            if check is not None and (problem := check(stats)):
                break
            if time.time() >= deadline and len(can) >= min_decisions:
                break
            if time.time() >= deadline + 4 * observe_s:
                problem = f"only {len(can)} canary decisions after {time.time() - t0:.1f}s (< {min_decisions})"
                break
            time.sleep(poll_s)
    except Exception as exc:  # anything going wrong while watching rolls back
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        state = target.canary(version, 0.0, reason=f"automatic rollback of canary v{version}: {problem}")
        outcome = "rolled_back"
    else:
        state = target.rollback(version, reason=f"hardened v{version} promoted after canary")
        outcome = "promoted"
    return {"outcome": outcome, "version": str(version), "share": share, "problem": problem, "stats": stats,
            "seconds": round(time.time() - t0, 3), "state": state.to_dict()}


def register_hardened(model, *, name: str, X_example, tracking_uri: str | None = None, tags: dict[str, str] | None = None,
                      source_version: str | None = None) -> str:
    """Log ``model`` to MLflow with a signature from ``X_example`` and register it as a new version of ``name``,
    in the experiment of ``source_version``'s run (so its artifacts go where that experiment keeps them, never
    into the working directory)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient()
    exp_id = None
    if source_version is None:
        latest = client.search_model_versions(f"name='{name}'", max_results=1, order_by=["version_number DESC"])
        source_version = latest[0].version if latest else None
    if source_version is not None:
        run_id = client.get_model_version(name, str(source_version)).run_id
        exp_id = client.get_run(run_id).info.experiment_id if run_id else None
    if exp_id is None:
        from aiir.errors import BadInput

        raise BadInput("model_name", f"model '{name}' has no version with a run to register the hardened model beside")
    import pandas as pd

    if isinstance(X_example, pd.DataFrame):  # integer columns as doubles, as aiir.registry registers them
        X_example = X_example.astype({c: "float64" for c in X_example.columns
                                      if str(X_example[c].dtype).startswith(("int", "uint"))})
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-hardened", tags=tags or {}):
        # cloudpickle as aiir.registry: MLflow 3.17's default (skops) refuses HistGradientBoosting's TreePredictor
        # ("untrusted types"), which failed the harden step on the demo's fraud model through Airflow
        info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X_example, model.predict(X_example)),
                                        registered_model_name=name, pip_requirements=["scikit-learn", "pandas", "numpy"],
                                        serialization_format="cloudpickle")
    v = str(info.registered_model_version)
    # record the artifact digest and sign it as every aiir registration does: the verified loader (gateway,
    # triage) refuses a version without either (signing key: aiir's artifact key, AIIR_ARTIFACT_KEY/_CERT)
    from aiir.audit.integrity import sign_version
    from aiir.models import DIGEST_TAG, artifact_digest
    from aiir.registry import _local_path

    art = _local_path(client.get_model_version_download_uri(name, v) or "")
    if art is None:
        from aiir.errors import BadInput

        raise BadInput("model_name", f"hardened {name} v{v}: its artifacts are not on a local path (only local "
                                     "artifact stores are signed)")
    client.set_model_version_tag(name, v, DIGEST_TAG, artifact_digest(art))
    sign_version(client, name, v, art)
    return v


FRAME_MAX_CALLS_PER_ROW = 150  # model calls HopSkipJump may spend on one row of a frame (see _hsj_frame)


def _one_thread():
    """Native thread pools (OpenMP, BLAS) limited to one thread: a query-based attack calls the model on one to
    a few dozen rows at a time, thousands of times, and a HistGradientBoosting pipeline starting its OpenMP team
    on each call took 107 ms per single-row prediction vs 10 ms on one thread; its refit on 16,800 rows 5-11 s
    vs 0.9 s (2 cores shared by other jobs: OpenMP's threads wait on each other)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def hsj_examples(model, X, profile, *, rows: int = 40, attacked_class: int = 1, max_iter: int = 5,
                 seed: int = 0, columns: list[str] | None = None):
    """Adversarial rows ART's HopSkipJump finds against ``model`` (in-process, label-only) for up to ``rows``
    rows it predicts as ``attacked_class`` — the same attack the gateway saw, for any scikit-learn model.

    ``X`` is an array of the profile's numeric features (``columns`` names them for the model), or a
    DataFrame with every column the model takes: then only the profile's (numeric) columns are perturbed and
    the others — a categorical merchant category, say — keep each attacked row's own values (the attack is run
    once per combination of them); a DataFrame of the same columns comes back."""
    import pandas as pd

    from aiir.evasion.attacks import clip_bounds, hop_skip_jump

    if isinstance(X, pd.DataFrame):
        return _hsj_frame(model, X, profile, rows=rows, attacked_class=attacked_class, max_iter=max_iter, seed=seed)
    X = np.asarray(X, float)
    pred = _predict_cols(model, X, columns)
    pool = X[pred == attacked_class][:rows]
    if len(pool) == 0:
        return np.empty((0, X.shape[1]))

    def oracle(Z):
        Xq = profile.mean + np.asarray(Z, float) * profile.std
        p = _predict_cols(model, Xq, columns)
        return np.eye(2)[np.asarray(p, int)]

    with warnings.catch_warnings(), _one_thread():
        warnings.simplefilter("ignore")
        Z = hop_skip_jump(oracle, profile.standardise(pool), clip_bounds(profile.standardise(X)), max_iter=max_iter,
                          max_eval=200, init_eval=20, seed=seed)
    return profile.mean + Z * profile.std


def _hsj_frame(model, X, profile, *, rows: int, attacked_class: int, max_iter: int, seed: int,
               max_calls_per_row: int | None = FRAME_MAX_CALLS_PER_ROW):
    """:func:`hsj_examples` on a DataFrame: the profile's columns perturbed, the other columns held per row.

    Each row is attacked on its own with at most ``max_calls_per_row`` model calls: a row whose attack needs more
    stays as it was (a failed attack, filtered out by the callers). On the demo's fraud model a row took ~70
    calls; on a version retrained on more batches ART's HopSkipJump went on for minutes per row (its step
    searches on a tree ensemble's plateaus), which held the playbook's harden step for over 25 minutes."""
    import pandas as pd

    from aiir.evasion.attacks import QueryBudgetExhausted, clip_bounds, hop_skip_jump

    num = list(profile.columns)
    missing = [c for c in num if c not in X.columns]
    if missing:
        raise BadInput("training data", f"columns {', '.join(missing)} of the profile are not in the data")
    fixed = [c for c in X.columns if c not in num]
    pool = X[_predict(model, X) == attacked_class].head(rows)
    if len(pool) == 0:
        return X.head(0).copy()
    bounds = clip_bounds(profile.standardise(X[num].to_numpy(float)))
    out = []
    for i in range(len(pool)):
        part = pool.iloc[i:i + 1]
        values = tuple(part[c].iloc[0] for c in fixed)
        calls = [0]

        def frame(Z, values=values):
            Zs = np.asarray(Z, float).reshape(len(Z), -1)
            q = pd.DataFrame(profile.mean + Zs * profile.std, columns=num)
            for c, v in zip(fixed, values, strict=True):
                q[c] = v
            return q[list(X.columns)]

        def oracle(Z, frame=frame, calls=calls):
            calls[0] += 1
            if max_calls_per_row is not None and calls[0] > max_calls_per_row:
                raise QueryBudgetExhausted(f"{max_calls_per_row} model calls for one row")
            return np.eye(2)[_predict(model, frame(Z))]

        with warnings.catch_warnings(), _one_thread():
            warnings.simplefilter("ignore")
            Z = hop_skip_jump(oracle, profile.standardise(part[num].to_numpy(float)), bounds, max_iter=max_iter,
                              max_eval=200, init_eval=20, seed=seed + i)
        out.append(frame(Z).set_index(part.index))
    return pd.concat(out).loc[pool.index]


def _predict_cols(model, X, columns):
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return _predict(model, X)
    if columns is not None:
        X = pd.DataFrame(np.asarray(X, float), columns=columns)
    return _predict(model, X)


def augment_retrain(model, X, y: np.ndarray, profile, *, columns: list[str] | None = None, rows: int = 60,
                    rounds: int = 2, attacked_class: int = 1, seed: int = 0, extra=None,
                    progress: Callable[[str], None] | None = None):
    """Adversarial data augmentation for any scikit-learn estimator: a clone of ``model`` (same recipe, same
    hyper-parameters) refitted on the training rows plus HopSkipJump examples crafted against the current
    candidate, labelled with their true class, for ``rounds`` rounds. ``X`` as in :func:`hsj_examples` (an
    array of numeric features named by ``columns``, or a DataFrame of every model column). ``extra`` = (rows,
    labels) in ``X``'s form is added to every refit (transfer-robust examples: :func:`surrogate_examples`, and
    evading rows the label feed confirmed)."""
    import pandas as pd
    from sklearn.base import clone

    say = progress or (lambda _m: None)
    frame = isinstance(X, pd.DataFrame)
    if not frame:
        X = np.asarray(X, float)
    y = np.asarray(y, int)
    cand, Xa, ya = model, X, y
    n_extra = 0
    if extra is not None and len(extra[0]):
        ex, ey = extra
        Xa = pd.concat([Xa, ex], ignore_index=True) if frame else np.vstack([Xa, np.asarray(ex, float)])
        ya = np.concatenate([ya, np.asarray(ey, int)])
        n_extra = len(ey)
    added = 0
    for r in range(rounds):
        adv = hsj_examples(cand, X, profile, rows=rows, attacked_class=attacked_class, seed=seed + r, columns=columns)
        adv = adv[_predict_cols(cand, adv, columns) != attacked_class] if len(adv) else adv  # the ones that evade
        Xa = pd.concat([Xa, adv], ignore_index=True) if frame else np.vstack([Xa, adv])
        ya = np.concatenate([ya, np.full(len(adv), attacked_class)])
        added += len(adv)
        cand = clone(model).fit(Xa if frame else pd.DataFrame(Xa, columns=columns), ya)
        say(f"augmentation round {r + 1}/{rounds}: {len(adv)} evading HopSkipJump rows added")
    return cand, {"method": "adversarial data augmentation (ART HopSkipJump against the candidate, same recipe)",
                  "rounds": rounds, "rows_attacked_per_round": rows, "adversarial_rows": added, "extra_rows": n_extra,
                  "attacked_class": attacked_class, "estimator": type(model).__name__,
                  **({"held_fixed": [c for c in X.columns if c not in profile.columns]} if frame else {})}


# --- transfer-robust hardening: ensemble adversarial training (Tramèr et al., ICLR 2018) --------------------
SURROGATES = ("logreg-C0.1", "logreg-C10", "mlp-tanh16")
TRANSFER_EPS = 0.5  # L2 radius (std) of the surrogate examples the playbook adds after a label_evasion finding


def _surrogate(kind: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    if kind.startswith("logreg-C"):
        return LogisticRegression(C=float(kind.split("C", 1)[1]), max_iter=1000)
    if kind == "svc-rbf":  # ART's gradients of an RBF SVM: ~60 s for 500 rows on a busy core (not a default)
        return SVC(kernel="rbf", C=1.0, gamma="scale", probability=True, random_state=seed)
    if kind == "mlp-tanh16":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(16,), activation="tanh", max_iter=800, random_state=seed)
    raise BadInput("surrogates", f"unknown surrogate {kind!r} (known: {', '.join(SURROGATES)})")


def surrogate_examples(model, X, y: np.ndarray, profile, *, eps: float, columns: list[str] | None = None,
                       surrogates: tuple[str, ...] = SURROGATES, ratio: float = 1.0, attacked_class: int = 1,
                       max_fit_rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Transfer-style adversarial rows, as a transfer attacker makes them: local differentiable surrogates
    (``surrogates``: logistic regressions of two strengths, a small tanh MLP), each fitted on a bootstrap sample of
    the training rows labelled *by the model* (what an attacker's surrogate learns through the API), then ART
    ProjectedGradientDescent (L2, ``eps`` in standard deviations of ``profile``) on each, from true
    ``attacked_class`` rows pushed away from that class — ``ratio`` x as many crafted rows in all as the
    training data has rows of that class (split over the surrogates: the augmentation must not swamp the class
    balance the model's threshold relies on). Raw rows out (all labelled ``attacked_class``):
    the static-ensemble augmentation of ensemble adversarial training, which decouples the examples from the
    model being trained so that it learns the directions transferred attacks take rather than masking its
    own gradients."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import SklearnClassifier

    from aiir.evasion.attacks import clip_bounds

    X = np.asarray(X, float)
    y = np.asarray(y, int)
    rng = np.random.default_rng(seed)
    Z = profile.standardise(X)
    lo, hi = clip_bounds(Z)
    y_model = _predict_cols(model, X, columns)
    pool = np.flatnonzero(y == attacked_class)
    if pool.size == 0:
        raise BadInput("training data", f"no rows of the attacked class {attacked_class}")
    out, per = [], {}
    rows = max(1, int(round(ratio * pool.size / max(1, len(surrogates)))))
    for k, kind in enumerate(surrogates):
        fit_idx = rng.choice(len(X), size=min(len(X), max_fit_rows), replace=True)
        if len(np.unique(y_model[fit_idx])) < 2:
            per[kind] = 0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sur = _surrogate(kind, seed + k).fit(Z[fit_idx], y_model[fit_idx])
            src = rng.choice(pool, size=min(pool.size, rows), replace=False)
            if kind.startswith("mlp"):  # ART has no gradients for scikit-learn's MLP: the same PGD, by hand
                Zadv = _pgd_mlp(sur, Z[src], attacked_class, eps=eps, lo=lo, hi=hi)
            else:
                clf = SklearnClassifier(model=sur, clip_values=(lo.astype(np.float32), hi.astype(np.float32)))
                atk = ProjectedGradientDescent(clf, norm=2, eps=eps, eps_step=eps / 4, max_iter=20, verbose=False)
                Zadv = atk.generate(x=Z[src].astype(np.float32), y=np.eye(2)[np.full(len(src), attacked_class)])
        out.append(profile.mean + np.asarray(Zadv, float) * profile.std)
        per[kind] = int(len(src))
    Xadv = np.vstack(out) if out else np.empty((0, X.shape[1]))
    return Xadv, {"surrogates": per, "eps": eps, "rows": int(len(Xadv))}


def _pgd_mlp(mlp, Z: np.ndarray, attacked_class: int, *, eps: float, lo, hi, steps: int = 20) -> np.ndarray:
    """L2 PGD against a one-hidden-layer scikit-learn MLP (binary, logistic output): step eps/4 along the
    normalised input gradient of the logit, away from ``attacked_class``, projected onto the eps ball and the
    clip bounds (what ART's ProjectedGradientDescent does, with the MLP's gradient written out)."""
    W1, W2 = mlp.coefs_
    b1 = mlp.intercepts_[0]
    sign = -1.0 if attacked_class == 1 else 1.0  # lower the logit of class 1 to leave it
    Z0 = np.asarray(Z, float)
    Zc = Z0.copy()
    for _ in range(steps):
        H = np.tanh(Zc @ W1 + b1)
        g = ((1 - H ** 2) * W2[:, 0]) @ W1.T  # d logit / d z, per row
        n = np.linalg.norm(g, axis=1, keepdims=True)
        Zc = Zc + sign * (eps / 4) * g / np.where(n > 0, n, 1.0)
        d = Zc - Z0
        dn = np.linalg.norm(d, axis=1, keepdims=True)
        Zc = Z0 + d * np.minimum(1.0, eps / np.where(dn > 0, dn, 1.0))
        Zc = np.clip(Zc, lo, hi)
    return Zc


def ensemble_adversarial_retrain(model, X, y: np.ndarray, profile, *, eps: float = 1.0,
                                 columns: list[str] | None = None, surrogates: tuple[str, ...] = SURROGATES,
                                 ratio: float = 1.0, confirmed: np.ndarray | None = None, attacked_class: int = 1,
                                 seed: int = 0, progress: Callable[[str], None] | None = None):
    """Transfer-robust hardening: a clone of ``model`` (same recipe) refitted on the training rows plus the
    :func:`surrogate_examples` at ``eps`` and, when the label feed confirmed evading rows (``confirmed``: raw
    rows of decisions the model let through that were later labelled ``attacked_class``), those rows too,
    all with their true label ``attacked_class``."""
    import pandas as pd
    from sklearn.base import clone

    say = progress or (lambda _m: None)
    X = np.asarray(X, float)
    y = np.asarray(y, int)
    Xadv, info = surrogate_examples(model, X, y, profile, eps=eps, columns=columns, surrogates=surrogates,
                                    ratio=ratio, attacked_class=attacked_class, seed=seed)
    parts, labels = [X, Xadv], [y, np.full(len(Xadv), attacked_class)]
    n_conf = 0
    if confirmed is not None and len(confirmed):
        conf = np.asarray(confirmed, float)
        parts.append(conf)
        labels.append(np.full(len(conf), attacked_class))
        n_conf = len(conf)
    Xa, ya = np.vstack(parts), np.concatenate(labels)
    fit_X = pd.DataFrame(Xa, columns=columns) if columns is not None else Xa
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cand = clone(model).fit(fit_X, ya)
    say(f"ensemble adversarial training: {len(Xadv)} surrogate PGD rows (eps {eps}) + {n_conf} confirmed evasions")
    return cand, {"method": "ensemble adversarial training (ART ProjectedGradientDescent on static local "
                            "surrogates, L2; Tramèr et al. 2018)", **info, "confirmed_evasions": n_conf,
                  "attacked_class": attacked_class, "estimator": type(model).__name__}
