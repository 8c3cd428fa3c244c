"""Is there a per-client signal that separates a transfer attacker from clean clients? (issue #13, round 5)

The transfer attacker of bench_evasion.py, in-process: 300 recon rows labelled by the served model, a
logistic-regression surrogate, 40 fraud rows crafted on it with PGD (L2, eps 1.5 std), one per request. Per
client, over its last 40 rows: (1) Hotelling's T² of the mean of its standardised inputs against the reference
(the most powerful test of a common mean shift, weighting low-variance directions most: the crafted rows all
move the same way on a linear surrogate), threshold the chi²(d) quantile at 1e-4 (not tuned to the attacker);
(2) a two-sample Kolmogorov-Smirnov test of its scores against the population's. Clean clients: 1,000 windows of
40 fresh rows. Five seeded attackers (recon sample, target rows).

    .venv/bin/python bench/transfer_signals.py
"""
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
warnings.simplefilter("ignore")
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from aiir.evasion import attacks  # noqa: E402
from aiir.evasion.profile import fit_profile  # noqa: E402
from aiir.gateway.synthetic import FEATURES, synthetic_frame  # noqa: E402

W = 40


def main() -> int:
    Xtr, ytr = synthetic_frame()
    served = LogisticRegression(C=0.3, max_iter=500).fit(Xtr, ytr)  # the benchmark store's champion (v2)
    prof = fit_profile(Xtr.to_numpy(), FEATURES)
    Zref = prof.standardise(Xtr.to_numpy())
    bounds = attacks.clip_bounds(Zref)
    Xc = synthetic_frame(60000, seed=7)[0].to_numpy()
    Sinv = np.linalg.inv(np.cov(Zref, rowvar=False))
    s_pop = served.predict_proba(Xc[:20000])[:, 1]

    def t2(Z):
        m = Z.mean(axis=0) - Zref.mean(axis=0)
        return float(len(Z) * m @ Sinv @ m)

    atk = []
    pool = Xc[20000:][served.predict(Xc[20000:]) == 1]
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        recon = Xc[rng.choice(20000, 300, replace=False)]
        sur = attacks.fit_surrogate(prof.standardise(recon), served.predict(recon))
        tgt = pool[rng.choice(len(pool), W, replace=False)]
        Xt = prof.mean + attacks.transfer_attack(sur, prof.standardise(tgt), eps=1.5, bounds=bounds) * prof.std
        atk.append({"seed": seed, "evaded": int((served.predict(Xt) == 0).sum()), "t2": round(t2(prof.standardise(Xt)), 1),
                    "score_ks_p": float(stats.ks_2samp(served.predict_proba(Xt)[:, 1], s_pop).pvalue)})
    clean = [Xc[20000 + k * W:20000 + (k + 1) * W] for k in range(1000)]
    ct2 = np.array([t2(prof.standardise(x)) for x in clean])
    cks = np.array([stats.ks_2samp(served.predict_proba(x)[:, 1], s_pop).pvalue for x in clean])
    thr = float(stats.chi2.ppf(1 - 1e-4, df=len(FEATURES)))
    out = {"attackers": atk, "t2_threshold_chi2_1e-4": round(thr, 1),
           "t2_caught": sum(a["t2"] >= thr for a in atk), "t2_clean_flagged_share": float((ct2 >= thr).mean()),
           "clean_t2": {"median": round(float(np.median(ct2)), 2), "p99": round(float(np.quantile(ct2, 0.99)), 1),
                        "max": round(float(ct2.max()), 1)},
           "clean_flagged_at_each_attacker_t2": {str(a["t2"]): float((ct2 >= a["t2"]).mean()) for a in atk},
           "score_ks": {"attacker_p": [f"{a['score_ks_p']:.1e}" for a in atk], "clean_min_p": float(cks.min()),
                        "clean_share_below_attacker_max_p": float((cks <= max(a["score_ks_p"] for a in atk)).mean())}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
