"""``aiir scan-evasion``: adversarial-evasion and model-extraction signals over served decisions.

Per query (standardised features, see :mod:`aiir.evasion.profile`):

* ``near_dup`` — another query *of the same client* lies within ``near_dup_rms`` (RMS distance over the
  standardised features; exact repeats excluded): the small perturbations a query-based attack sends;
* ``boundary`` — the score lies within ``boundary_band`` of the decision threshold;
* ``flip`` — a near-duplicate of the same client got a different decision;
* ``ood`` — the input is outside the reference distribution (Mahalanobis distance past the reference's
  ``ood_quantile``; needs ``--reference``).

Per client, each signal is a one-sided binomial test against its clean rate (thresholds.toml); a client is
suspect when a test is significant. Across clients, near-duplicate queries are linked into clusters
(connected components of the near-duplicate graph over *all* clients); a cluster of at least
``clusters.min_size`` queries whose boundary share or flip count is significant is a suspect input
cluster, and every client that sent a query into it is suspect — a slow attacker spreading its queries
over many ids still meets itself in feature space. Model extraction: a client with many queries and a
peak rate above ``extraction.max_rate_per_min`` or a significant out-of-distribution share.

Writes ``DIR/findings.json`` (status, suspect_clients, suspect_clusters, findings with ATLAS/OWASP ids) and
``DIR/suspect_decisions.csv``. Exit codes as ``aiir check``: 0 clean, 3 incident, 2 bad input.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aiir.errors import BadInput
from aiir.evasion.config import SIGNALS, load_config, strength, test_signal
from aiir.evasion.profile import Profile, finite

MAX_IDS = 200  # decision ids listed per client / cluster in findings.json (all are in the CSV)
LABEL_SIGNALS = ("label_miss", "label_surprise")  # the delayed-label signal (aiir.evasion.labels)


@dataclass
class ScanResult:
    status: str
    report: dict[str, Any]
    paths: dict[str, str]

    @property
    def incident(self) -> bool:
        return self.status == "incident"

    def summary(self) -> dict[str, Any]:
        r = self.report
        return {"status": r["status"], "severity": r["severity"], "decisions": r["decisions"],
                "clients": r["clients"],
                "suspect_clients": [{"client_id": c["client_id"], "score": c["score"], "signals": c["reasons"]}
                                    for c in r["suspect_clients"]],
                "suspect_clusters": [{"cluster_id": c["cluster_id"], "size": c["size"], "clients": c["n_clients"]}
                                     for c in r["suspect_clusters"]],
                "atlas": [t["id"] for t in r["atlas"]], "owasp": [o["id"] for o in r["owasp"]],
                "paths": self.paths}


def _epoch(ts: str) -> float:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        raise BadInput("decisions", f"decision timestamp {ts!r} is not ISO-8601") from None


def _columns(decisions: list[dict[str, Any]]) -> list[str]:
    """Numeric feature keys present in at least 99 % of decisions, in first-seen order."""
    seen: dict[str, int] = {}
    for d in decisions:
        for k, v in d["features"].items():
            if finite(v) is not None:
                seen[k] = seen.get(k, 0) + 1
    need = 0.99 * len(decisions)
    return [k for k, c in seen.items() if c >= need]


def _matrix(decisions: list[dict[str, Any]], columns: list[str], fill: np.ndarray | None) -> np.ndarray:
    n, d = len(decisions), len(columns)
    X = np.full((n, d), np.nan)
    for i, dec in enumerate(decisions):
        f = dec["features"]
        for j, c in enumerate(columns):
            v = finite(f.get(c))
            if v is not None:
                X[i, j] = v
    if np.isnan(X).any():
        med = fill if fill is not None else np.nanmedian(X, axis=0)
        med = np.where(np.isnan(med), 0.0, med)
        X = np.where(np.isnan(X), med, X)
    return X


def _robust_profile(X: np.ndarray, columns: list[str]) -> Profile:
    """Without a reference: scale by the traffic itself (median, IQR/1.349, else std); no outlier model."""
    center = np.median(X, axis=0)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    std = X.std(axis=0)
    scale = np.where(scale > 1e-12, scale, np.where(std > 1e-12, std, 1.0))
    return Profile(list(columns), center, scale, None, None, {"fitted_on": "the scanned traffic (no reference)"})


def _neighbours(Z: np.ndarray, r: float, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, at Euclidean distance in (0, r): the near-duplicate graph (k nearest per point)."""
    from scipy.spatial import cKDTree

    n = len(Z)
    if n < 2:
        return np.empty(0, dtype=int), np.empty(0, dtype=int)
    kk = min(k + 1, n)
    dist, idx = cKDTree(Z).query(Z, k=kk, distance_upper_bound=r)
    rows = np.repeat(np.arange(n), kk).reshape(n, kk)
    ok = (idx < n) & (dist > 1e-9) & np.isfinite(dist)
    a, b = rows[ok], idx[ok]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if lo.size == 0:
        return lo, hi
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _peak_per_min(t: np.ndarray) -> int:
    """Most queries in any 60 s window (t sorted)."""
    if t.size == 0:
        return 0
    j = np.searchsorted(t, t + 60.0, side="left")
    return int((j - np.arange(t.size)).max())


def run_scan(decisions: list[dict[str, Any]], out_dir: str | Path, *, profile: Profile | None = None,
             thresholds: str | Path | dict[str, Any] | None = None, source: dict[str, Any] | None = None,
             window: dict[str, Any] | None = None, labels: str | Path | dict[str, Any] | tuple | None = None,
             progress: Callable[[str], None] | None = None) -> ScanResult:
    """Scan served decisions (dicts with the :data:`aiir.targets.base.DECISION_FIELDS`) and write the findings.

    ``labels`` (a CSV/Parquet file with ``decision_id`` and ``label``, a dict of them, or what
    :func:`aiir.evasion.labels.load_labels` returned for one): the delayed-label signal of :mod:`aiir.evasion.labels`."""
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    cfg = load_config(thresholds)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(str(out), "--out must be a directory, got a file")
    for i, d in enumerate(decisions[:1000]):
        if not isinstance(d, dict) or not isinstance(d.get("features"), dict) or "client_id" not in d:
            raise BadInput("decisions", f"decision {i} has no features object or client_id")
    decisions = sorted(decisions, key=lambda d: (str(d.get("ts") or ""), str(d.get("decision_id") or "")))
    n = len(decisions)
    sig, tst = cfg["signals"], cfg["tests"]
    alpha, min_hits = tst["alpha"], int(tst["min_hits"])
    rates = cfg["clean_rates"]
    out.mkdir(parents=True, exist_ok=True)

    clients = np.array([str(d["client_id"]) for d in decisions], dtype=object)
    columns = profile.columns if profile is not None else _columns(decisions) if n else []
    if n and not columns:
        raise BadInput("decisions", "no numeric features in the decisions to scan")
    say(f"scanning {n:,} decisions from {len(set(clients.tolist())):,} clients over {len(columns)} features")
    X = _matrix(decisions, columns, profile.mean if profile is not None else None) if n else np.empty((0, 0))
    prof = profile if profile is not None else (_robust_profile(X, columns) if n else None)
    Z = prof.standardise(X) if n else X
    d = max(1, len(columns))
    r = sig["near_dup_rms"] * math.sqrt(d)
    preds = np.array([json.dumps(x.get("prediction"), sort_keys=True, default=str) for x in decisions], dtype=object)
    scores = np.array([finite(x.get("score")) if finite(x.get("score")) is not None else np.nan for x in decisions],
                      dtype=float)
    has_score = np.isfinite(scores)
    boundary = has_score & (np.abs(scores - sig["decision_threshold"]) < sig["boundary_band"])
    ood = np.zeros(n, dtype=bool)
    ood_on = prof is not None and prof.inv_cov is not None and prof.ood_threshold is not None
    if ood_on and n:
        ood = prof.mahalanobis2(Z) > prof.ood_threshold
    near_dup = np.zeros(n, dtype=bool)
    flip = np.zeros(n, dtype=bool)
    epoch = np.array([_epoch(str(x.get("ts"))) for x in decisions]) if n else np.empty(0)

    # ---- per client: near-duplicates and flips among the client's own queries
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clients):
        groups[c].append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        ii = np.asarray(idx)
        a, b = _neighbours(Z[ii], r)
        if a.size:
            ga, gb = ii[a], ii[b]
            near_dup[ga] = True
            near_dup[gb] = True
            diff = preds[ga] != preds[gb]
            flip[ga[diff]] = True
            flip[gb[diff]] = True

    flags = {"near_dup": near_dup, "boundary": boundary, "flip": flip, "ood": ood}
    lab = base = None
    if labels is not None:
        from aiir.evasion import labels as lb

        if not n:
            file = labels[1]["file"] if isinstance(labels, tuple) else None if isinstance(labels, dict) else labels
            raise BadInput(str(file or "labels"), "decision_id: no scanned decision to match the labels to")
        say("matching the delayed labels to the decisions")
        lab = lb.prepare(labels, decisions, scores, cfg)
        let_through_pos = (lab.y == 1) & lab.through

    # ---- across clients: clusters of near-duplicate queries
    say("linking near-duplicate queries across clients")
    ga, gb = _neighbours(Z, r) if n else (np.empty(0, int), np.empty(0, int))
    cluster_of = np.full(n, -1)
    suspect_clusters: list[dict[str, Any]] = []
    if ga.size:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        g = coo_matrix((np.ones(ga.size), (ga, gb)), shape=(n, n))
        _, component = connected_components(g, directed=False)
        sizes = np.bincount(component)
        cflip = np.zeros(n, dtype=bool)
        diff = preds[ga] != preds[gb]
        cflip[ga[diff]] = True
        cflip[gb[diff]] = True
        big = np.flatnonzero(sizes >= cfg["clusters"]["min_size"])
        k = 0
        for comp in big[np.argsort(-sizes[big])]:
            members = np.flatnonzero(component == comp)
            mc = sorted(set(clients[members].tolist()))
            if len(mc) < cfg["clusters"]["min_clients"]:
                continue
            nb = int(has_score[members].sum())
            tests = {"boundary": test_signal(int(boundary[members].sum()), nb, rates["boundary"], alpha, min_hits),
                     "flip": test_signal(int(cflip[members].sum()), len(members), rates["flip"], alpha, min_hits)}
            if not any(t["significant"] for t in tests.values()):
                continue
            k += 1
            cid = f"C{k}"
            cluster_of[members] = k
            centre = prof.mean + Z[members].mean(axis=0) * prof.std
            radius = float(np.sqrt(((Z[members] - Z[members].mean(axis=0)) ** 2).mean(axis=1)).max())
            per_client = {c: int((clients[members] == c).sum()) for c in mc}
            suspect_clusters.append({
                "cluster_id": cid, "size": int(len(members)), "n_clients": len(mc),
                "clients": dict(sorted(per_client.items(), key=lambda kv: -kv[1])),
                "centre": {c: round(float(v), 6) for c, v in zip(columns, centre, strict=True)},
                "radius_rms": round(radius, 4), "signals": tests,
                "score": max(strength(t["p_value"]) for t in tests.values()),
                "first_ts": decisions[int(members[0])].get("ts"), "last_ts": decisions[int(members[-1])].get("ts"),
                "decision_ids": [decisions[int(i)].get("decision_id") for i in members[:MAX_IDS]],
            })

    # ---- per-client tests
    say("testing every client against the clean rates")
    suspects: list[dict[str, Any]] = []
    extraction_clients: list[str] = []
    n_clean = 0
    n_tests = 0

    def input_tests(ii: np.ndarray):
        m = len(ii)
        tests: dict[str, Any] = {}
        for s in SIGNALS:
            if s == "ood" and not ood_on:
                continue
            denom = int(has_score[ii].sum()) if s == "boundary" else m
            tests[s] = test_signal(int(flags[s][ii].sum()), denom, rates[s], alpha, min_hits)
        peak = _peak_per_min(np.sort(epoch[ii]))
        extraction = bool(m >= cfg["extraction"]["min_queries"] and
                          (peak > cfg["extraction"]["max_rate_per_min"] or tests.get("ood", {}).get("significant")))
        in_clusters = sorted({f"C{int(k)}" for k in cluster_of[ii] if k > 0})
        reasons = [s for s, t in tests.items() if t["significant"]]
        if "boundary" in reasons and tests["near_dup"]["hits"] < 2:
            reasons.remove("boundary")  # borderline business alone is no probing: it needs near-duplicates too
        if extraction:
            reasons.append("extraction")
        if in_clusters:
            reasons.append("cluster")
        return tests, reasons, peak, extraction, in_clusters

    pre = {c: input_tests(np.asarray(idx)) for c, idx in groups.items()}
    if lab is not None:
        # the baseline of the label tests: decisions the model answered (not the guard's fallback), of clients
        # no input signal names (a probing attacker's labelled queries say nothing about the clean miss rate)
        flagged = {c for c, v in pre.items() if v[1]}
        keep = lab.labelled & ~lab.guard & ~np.isin(clients, list(flagged))
        base = lb.Baseline(lab, cfg, keep)
    for c, idx in sorted(groups.items()):
        ii = np.asarray(idx)
        m = len(ii)
        tests, reasons, peak, extraction, in_clusters = pre[c]
        n_tests += len(tests)
        label_base = None
        if base is not None and (lab.y[ii] >= 0).any():
            lt = lb.tests_for(ii, base, cfg)
            label_base = lt.pop("baseline", None)
            tests.update(lt)
            n_tests += len(lt)
            reasons += [s for s in LABEL_SIGNALS if lt.get(s, {}).get("significant")]
        if not reasons:
            n_clean += 1
            continue
        hit = np.zeros(m, dtype=bool)
        for s in reasons:
            if s in flags:
                hit |= flags[s][ii]
        hit |= cluster_of[ii] > 0
        if set(reasons) & set(LABEL_SIGNALS):
            hit |= let_through_pos[ii]
        score = max([strength(t["p_value"]) for s, t in tests.items() if t["significant"]]
                    + [cl["score"] for cl in suspect_clusters if cl["cluster_id"] in in_clusters]
                    + ([strength(1e-10)] if extraction else []))
        techniques = set()
        if set(reasons) & {"near_dup", "boundary", "flip", "cluster"}:
            techniques |= {"AML.T0040", "AML.T0043", "AML.T0015"}
        if extraction or "ood" in reasons:
            techniques |= {"AML.T0040", "AML.T0024"}
        if set(reasons) & set(LABEL_SIGNALS):
            techniques |= {"AML.T0043", "AML.T0015"}
        if extraction:
            extraction_clients.append(c)
        suspects.append({
            "client_id": c, "score": score, "reasons": reasons, "queries": m, "peak_per_min": peak,
            "signals": tests, "clusters": in_clusters, "techniques": sorted(techniques),
            "first_ts": decisions[int(ii[0])].get("ts"), "last_ts": decisions[int(ii[-1])].get("ts"),
            "suspect_decisions": int(hit.sum()),
            # when its suspect behaviour was last seen (an incident closed after it covers it: aiir.lifecycle)
            "last_suspect_ts": decisions[int(ii[hit][-1] if hit.any() else ii[-1])].get("ts"),
            "decision_ids": [decisions[int(i)].get("decision_id") for i in ii[hit][:MAX_IDS]],
            **({"labels": {"labelled": int((lab.y[ii] >= 0).sum()), "labelled_positive": int((lab.y[ii] == 1).sum()),
                           "let_through_positive": int(let_through_pos[ii].sum()),
                           "let_through_positive_ids": [decisions[int(i)].get("decision_id")
                                                        for i in ii[let_through_pos[ii]][:MAX_IDS]],
                           "baseline": label_base}} if label_base is not None else {}),
        })
    suspects.sort(key=lambda s: -s["score"])

    # ---- findings with ATLAS/OWASP ids
    from aiir.detect.findings import _clean, finding
    from aiir.knowledge import taxonomy

    findings = []
    ev = [s for s in suspects if set(s["reasons"]) & {"near_dup", "boundary", "flip", "cluster"}]
    if ev or suspect_clusters:
        findings.append(finding(
            "evasion", "high", f"query-based evasion: {len(ev)} client(s), {len(suspect_clusters)} input cluster(s)",
            statistic=("max_client_score", max([s["score"] for s in ev] + [c["score"] for c in suspect_clusters]
                                               + [0.0])),
            threshold={"alpha": alpha, "min_hits": min_hits}, sources=[s["client_id"] for s in ev],
            detail="near-duplicate queries with small perturbations, scores concentrated near the decision "
                   "boundary and decision flips between near-identical inputs",
            evidence={"clients": [s["client_id"] for s in ev], "clusters": [c["cluster_id"] for c in suspect_clusters]}))
    ex = [s for s in suspects if "extraction" in s["reasons"] or "ood" in s["reasons"]]
    if ex:
        findings.append(finding(
            "extraction", "high" if extraction_clients else "medium",
            f"model extraction / feature-space exploration by {len(ex)} client(s)",
            statistic=("max_peak_per_min", max(s["peak_per_min"] for s in ex)),
            threshold={"max_rate_per_min": cfg["extraction"]["max_rate_per_min"],
                       "min_queries": cfg["extraction"]["min_queries"]},
            sources=[s["client_id"] for s in ex],
            detail="many queries at an unusual rate or far from the training distribution"))
    lsus = [s for s in suspects if set(s["reasons"]) & set(LABEL_SIGNALS)]
    if lsus:  # per client only, no per-cluster label test: see docs/evasion.md (delayed labels)
        ids = [i for s in lsus for i in s["labels"]["let_through_positive_ids"]]
        findings.append(finding(
            "label_evasion", "high",
            f"evasion confirmed by delayed labels: {len(lsus)} client(s) whose decisions the model let through "
            "were later labelled positive far more often than other clients'",
            statistic=("max_client_score", max(s["score"] for s in lsus)),
            threshold={"alpha": cfg["labels"]["alpha"], "min_misses": cfg["labels"]["min_misses"],
                       "baseline_quantile": cfg["labels"]["baseline_quantile"]},
            sources=[s["client_id"] for s in lsus],
            detail="decisions served as legitimate that chargebacks / analyst labels later marked as the attacked "
                   "class, more than other clients' at the same scores: evasion that left no trace in the inputs "
                   "(e.g. a transfer attack crafted on a surrogate). As late as the label feed.",
            evidence={"clients": [s["client_id"] for s in lsus],
                      "decision_ids": ids[:MAX_IDS], "labels_file": lab.info.get("file"),
                      "first_ts": min((str(decisions[int(i)].get("ts")) for i in np.flatnonzero(let_through_pos)
                                       if clients[i] in {s["client_id"] for s in lsus}), default=None),
                      "signals": {s["client_id"]: [r for r in s["reasons"] if r in LABEL_SIGNALS] for s in lsus}}))
    status = "incident" if suspects or suspect_clusters else "clean"
    atlas_ids = sorted({t for f in findings for t in f["atlas"]})
    owasp_ids = sorted({o for f in findings for o in f["owasp"]})
    mit_ids = sorted({m for f in findings for m in f["mitigations"]})

    # ---- suspect decisions CSV (every flagged query of every suspect client)
    sus_clients = {s["client_id"] for s in suspects}
    csv_path = out / "suspect_decisions.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["decision_id", "ts", "client_id", "score", "prediction", *SIGNALS, "cluster",
                    *(["label", "let_through_positive"] if lab is not None else []), *columns])
        for i in range(n):
            ltp = lab is not None and bool(let_through_pos[i])
            if clients[i] in sus_clients and (near_dup[i] or boundary[i] or flip[i] or ood[i] or cluster_of[i] > 0
                                              or ltp):
                w.writerow([decisions[i].get("decision_id"), decisions[i].get("ts"), clients[i],
                            None if np.isnan(scores[i]) else scores[i], preds[i],
                            int(near_dup[i]), int(boundary[i]), int(flip[i]), int(ood[i]),
                            f"C{cluster_of[i]}" if cluster_of[i] > 0 else "",
                            *([int(lab.y[i]) if lab.y[i] >= 0 else "", int(ltp)] if lab is not None else []),
                            *X[i].tolist()])
    report = {
        "status": status, "severity": "high" if findings else None,
        "scanned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source or {}, "window": window or {},
        "decisions": n, "clients": len(groups), "clean_clients": n_clean,
        "features": columns,
        "profile": {"source": prof.source if prof else None, "outlier_model": ood_on,
                    "ood_threshold": prof.ood_threshold if prof else None},
        "suspect_clients": suspects, "suspect_clusters": suspect_clusters, "findings": findings,
        "atlas": [taxonomy.ATLAS_TECHNIQUES[t].__dict__ for t in atlas_ids],
        "owasp": [taxonomy.OWASP_ML_TOP10[o].__dict__ for o in owasp_ids],
        "mitigations": [taxonomy.ATLAS_MITIGATIONS[m].__dict__ for m in mit_ids],
        "signal_totals": {s: int(v.sum()) for s, v in flags.items()},
        "labels": ({**lab.info, "baseline_miss_rate_all": round(base.miss / base.pos, 4) if base.pos else None}
                   if lab is not None else None),
        "false_alarms": {"tests": n_tests, "alpha": alpha,
                         "expected_false_alarms_bound": n_tests * alpha,
                         "note": "binomial tests against the clean rates; the bound holds when clean traffic "
                                 "is at or below those rates (measured: docs/benchmarks.md)"},
        "thresholds": cfg, "seconds": round(time.perf_counter() - t0, 3),
    }
    paths = {"findings": str(out / "findings.json"), "suspect_decisions": str(csv_path)}
    report["paths"] = paths
    report = _clean(report)
    from aiir.gateway.state import atomic_write_json

    atomic_write_json(out / "findings.json", report)
    return ScanResult(status, report, paths)


def scan_decision_log(path: str | Path, out_dir: str | Path, *, since=None, until=None,
                      reference: str | Path | None = None, thresholds=None, model: str | None = None,
                      labels: str | Path | None = None, progress: Callable[[str], None] | None = None) -> ScanResult:
    """Scan a gateway decision log (SQLite) between ``since`` (inclusive) and ``until`` (exclusive)."""
    from aiir.gateway.decision_log import DecisionLog, parse_when

    p = Path(path)
    if not p.is_file():
        raise BadInput(str(p), "decision log not found")
    cfg = load_config(thresholds)
    if reference is not None and not Path(reference).is_file():
        raise BadInput(str(reference), "reference file not found")
    labels = _read_labels(labels)
    s, u = parse_when(since, where="--since"), parse_when(until, where="--until")
    log = DecisionLog(p, create=False)
    try:
        rows = log.query(since=s, until=u, model=model)
        head = log.head()
    finally:
        log.close()
    prof = _reference(reference, cfg, rows)
    return run_scan(rows, out_dir, profile=prof, thresholds=cfg,
                    source={"decision_log": str(p.resolve()), "head": head}, window={"since": s, "until": u},
                    labels=labels, progress=progress)


def scan_target(target, out_dir: str | Path, *, since=None, until=None, reference=None, thresholds=None,
                limit: int | None = None, labels: str | Path | None = None,
                progress: Callable[[str], None] | None = None) -> ScanResult:
    """The same scan over any :class:`~aiir.targets.base.DeploymentTarget`'s served decisions."""
    from aiir.gateway.decision_log import parse_when

    cfg = load_config(thresholds)
    if reference is not None and not Path(reference).is_file():
        raise BadInput(str(reference), "reference file not found")
    labels = _read_labels(labels)
    s, u = parse_when(since, where="--since"), parse_when(until, where="--until")
    rows = target.decisions(s, u, limit=limit)
    prof = _reference(reference, cfg, rows)
    return run_scan(rows, out_dir, profile=prof, thresholds=cfg, source={"target": target.ref},
                    window={"since": s, "until": u}, labels=labels, progress=progress)


def _read_labels(labels):
    """The labels file read (and a bad one refused) before any decision is; passed on read, not read again."""
    if labels is None:
        return None
    from aiir.evasion.labels import load_labels

    return load_labels(labels)


def _reference(reference, cfg, rows: list[dict[str, Any]]) -> Profile | None:
    if reference is None:
        return None
    from aiir.evasion.profile import load_reference

    return load_reference(reference, ood_quantile=cfg["signals"]["ood_quantile"],
                          restrict=_columns(rows) if rows else None)
