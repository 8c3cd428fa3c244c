"""The calibrated incident decision of ``aiir check``.

Every statistical signal of the check becomes a test with a p-value under a stated null hypothesis
("this batch, or this source, behaves like the reference up to a stated tolerance"). The tests form one
family per checked batch:

* dataset-level tests: label rate, label consistency (whole batch), duplicate excess, candidate
  triggers (point masses);
* one combined test per source (``source:<name>``): the source's label evidence (label rate against the
  same source in the reference *and* against the other sources, label consistency) and its feature
  evidence (feature shift difference-in-differences, duplicates and outliers against the other sources,
  triggers concentrated in it). Within each group the smallest p-value is Bonferroni-corrected (valid
  under any dependence); the two groups are combined with Fisher's method — given the features, the
  label tests are independent of the feature tests under H0 — so several moderate signals that agree on
  one source add up; since Fisher dilutes evidence that sits in one group alone, the source's p-value is
  2 x min(Fisher, Bonferroni-min of the groups).

Holm's step-down procedure over the whole family keeps the probability of opening an incident on a batch
for which every null holds at most ``[decision] alpha`` (default 0.01). Contract breaches of structure
(missing column, type change) and artifact digest mismatches are rules, not statistics: they open an
incident at ``[incident] open_incident_at`` or above. Severities describe effect sizes only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from aiir.detect.stats import (
    bonferroni_min,
    contrast_p,
    excess_rate_test,
    fisher,
    holm,
    label_rate_test,
    log_rate,
    min_effect_p,
)

RULE_KINDS = ("schema", "integrity")


def _gated_excess(st: dict[str, Any] | None, t: dict[str, Any]) -> float:
    """p of an excess-rate statistic of signals.duplicates/outliers, 1 unless its effect gates pass."""
    if not st:
        return 1.0
    excess_rows = st["count"] - st["rows"] * st["expected_share"]
    if excess_rows < t["min_rows"] or st["ratio"] < t["min_ratio"] or st["excess_share"] < t["low_excess"]:
        return 1.0
    return excess_rate_test(st["count"], st["rows"], st["expected_share"])


def _vs_others(st: dict[str, Any], total: dict[str, Any]) -> float:
    """One-sided two-proportion p that this source's flagged share exceeds the other sources' share."""
    k, n = st["count"], st["rows"]
    ko, no = total["count"] - k, total["rows"] - n
    if no <= 0:
        return 0.0
    r1, r2 = (k + 0.5) / (n + 1), (ko + 0.5) / (no + 1)
    pooled = (k + ko + 1) / (n + no + 2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / max(n, 1) + 1 / max(no, 1)))
    return contrast_p(r1, se, r2, 0.0, direction=1)


def _label_tests_by_source(ref: pd.DataFrame, cur: pd.DataFrame, label: str, source: str, classes: list[Any],
                           minority: Any, names: list[str], tol: float) -> dict[str, dict[str, Any]]:
    """Per source: label rate vs the same source in the reference (minimum ratio ``tol``) and vs the others."""
    check = [minority] if len(classes) <= 2 else list(classes)
    cur_src = cur[source].astype(str).to_numpy()
    ref_src = ref[source].astype(str).to_numpy() if source in ref.columns else None
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        cm = cur_src == name
        rm = ref_src == name if ref_src is not None else np.zeros(len(ref), bool)
        rows = []
        for cls in check:
            c_lab, r_lab = cur[label].to_numpy(), ref[label].to_numpy()
            same = rm.sum() >= 30
            base = r_lab[rm] if same else r_lab
            res = label_rate_test(base, c_lab[cm], cls, min_ratio=tol)
            # against the other sources: difference of the log rate changes
            k_s, n_s = int((c_lab[cm] == cls).sum()), int(cm.sum())
            k_o, n_o = int((c_lab[~cm] == cls).sum()), int((~cm).sum())
            kr_s, nr_s = int((base == cls).sum()), int(base.size)
            kr_o = int((r_lab[~rm] == cls).sum()) if same else kr_s
            nr_o = int((~rm).sum()) if same else nr_s
            if n_o >= 30 and nr_o >= 30:
                a, sa = log_rate(k_s, n_s)
                b, sb = log_rate(kr_s, nr_s)
                c, sc = log_rate(k_o, n_o)
                d, sd = log_rate(kr_o, nr_o)
                p_oth = min_effect_p((a - b) - (c - d), math.sqrt(sa ** 2 + sb ** 2 + sc ** 2 + sd ** 2), 0.0)
            else:
                p_oth = 0.0  # no other source to compare with: the test against the reference decides
            res["p_vs_reference"] = res["p"]
            res["p_vs_other_sources"] = p_oth
            res["class"] = cls.item() if hasattr(cls, "item") else cls
            res["p"] = max(res["p"], p_oth)
            rows.append(res)
        best = min(rows, key=lambda r: r["p"])
        best = dict(best, p=min(1.0, best["p"] * len(rows)))
        out[name] = best
    return out


def build_family(*, ref: pd.DataFrame, cur: pd.DataFrame, t: dict[str, Any], label: str | None,
                 source: str | None, info: Any, label_stats: dict[str, Any] | None,
                 cons_stats: dict[str, Any] | None, dup_stats: dict[str, Any] | None,
                 out_stats: dict[str, Any] | None, shift_stats: dict[str, Any] | None,
                 triggers: list[dict[str, Any]], source_names: list[str]) -> dict[str, dict[str, Any]]:
    """Every test of the family: name -> {"p", "kind", "source", "components"}."""
    dt = t["decision"]
    fam: dict[str, dict[str, Any]] = {}
    classes = info.classes if info is not None and info.kind == "classes" else []
    tol = dt["label_ratio_tolerance"]

    # ---- dataset level
    if classes and len(classes) >= 2:
        check = [info.minority] if len(classes) <= 2 else list(classes)
        rows = [label_rate_test(ref[label], cur[label], c, min_ratio=tol) for c in check]
        best = min(rows, key=lambda r: r["p"])
        p = min(1.0, best["p"] * len(rows))
        adj = ((cons_stats or {}).get("groups") or {}).get("(all)", {}).get("all_rows")
        comp = {"label_rate": p}
        if adj is not None:
            comp["label_rate_given_features"] = adj["p"]
            p = max(p, adj["p"])
        fam["label_rate"] = {"p": p, "kind": "label_shift", "source": None, "components": comp}
        g = ((cons_stats or {}).get("groups") or {}).get("(all)")
        if g:
            fam["label_consistency"] = {"p": g["p_bands"], "kind": "label_shift", "source": None,
                                        "components": {"bands": g["p_bands"]}}
    if dup_stats and dup_stats.get("levels"):
        ps = {lv: _gated_excess(st, t["duplicates"]) for lv, st in dup_stats["levels"].items()}
        fam["duplicates"] = {"p": bonferroni_min(ps.values()), "kind": "duplicates", "source": None,
                             "components": ps}
    # the dataset-level outlier share is reported but not part of the family: natural drift of a heavy-tailed
    # feature (a 20 % rise in amounts) multiplies it; outliers concentrated in one source are (below)
    for i, trig in enumerate(triggers):
        fam[f"trigger:{i + 1}"] = {"p": trig["p"], "kind": "trigger", "source": None,
                                   "components": {"point_mass": trig["p"]}}

    # ---- per source
    if source is None or len(source_names) < 1:
        return fam
    label_by_src = (_label_tests_by_source(ref, cur, label, source, classes, info.minority, source_names, tol)
                    if classes and len(classes) >= 2 else {})
    cons_groups = (cons_stats or {}).get("groups") or {}
    dup_level = (dup_stats or {}).get("levels") or {}
    shift_src = (shift_stats or {}).get("per_source") or {}
    for name in source_names:
        comp_l: dict[str, float] = {}
        comp_f: dict[str, float] = {}
        lr = label_by_src.get(name)
        if lr is not None:
            # against its own reference (beyond the tolerance) AND against the other sources: a rate change
            # shared by every source (natural, or explained by the features) does not single one out, while
            # a source flooded with one class does even when its rows look like that class
            comp_l["label_rate"] = lr["p"]
        g = cons_groups.get(name)
        if g and "p_bands" in g:
            comp_l["label_consistency"] = max(g["p_bands"], g.get("p_vs_other_sources", 0.0))
        for lv, st in dup_level.items():
            ps = (st.get("per_source") or {}).get(name)
            if ps:
                comp_f[f"duplicates_{lv}"] = max(_gated_excess(ps, t["duplicates"]), _vs_others(ps, st))
        if out_stats and out_stats.get("overall"):
            ps = (out_stats.get("per_source") or {}).get(name)
            if ps:
                comp_f["outliers"] = max(_gated_excess(ps, t["outliers"]), _vs_others(ps, out_stats["overall"]))
        fs = shift_src.get(name)
        if fs and fs.get("tested"):
            comp_f["feature_shift"] = fs["p"]
        for i, trig in enumerate(triggers):
            conc = trig.get("sources") or {}
            if conc.get("top") == name:
                comp_f[f"trigger:{i + 1}"] = max(trig["p"], conc.get("p", 1.0))
        if not comp_l and not comp_f:
            continue
        p_l = bonferroni_min(comp_l.values()) if comp_l else None
        p_f = bonferroni_min(comp_f.values()) if comp_f else None
        groups = [x for x in (p_l, p_f) if x is not None]
        # Fisher rewards two groups that agree; evidence in one group alone is diluted by it, so the
        # stronger of Fisher and Bonferroni-min is taken (itself Bonferroni-corrected over the two)
        p = min(1.0, 2 * min(fisher(groups), bonferroni_min(groups))) if len(groups) > 1 else groups[0]
        fam[f"source:{name}"] = {"p": p, "kind": "source_anomaly", "source": name,
                                 "components": {"labels": comp_l, "features": comp_f,
                                                "labels_p": p_l, "features_p": p_f}}
    return fam


def decide(family: dict[str, dict[str, Any]], rule_findings: list[dict[str, Any]], t: dict[str, Any]
           ) -> dict[str, Any]:
    """Holm over the family at ``[decision] alpha``; plus the rule-based findings. Returns the decision block."""
    alpha = t["decision"]["alpha"]
    res = holm({k: v["p"] for k, v in family.items()}, alpha)
    tests = []
    for name, v in family.items():
        r = res[name]
        tests.append({"name": name, "kind": v["kind"], "source": v["source"], "p": r["p"],
                      "p_adjusted": r["p_adjusted"], "reject": r["reject"], "components": v["components"]})
    tests.sort(key=lambda x: (x["p"], x["name"]))
    rejected = [x["name"] for x in tests if x["reject"]]
    suspects = [x["source"] for x in tests if x["reject"] and x["source"] is not None]
    rules = [f"{f['kind']}: {f['title']}" for f in rule_findings]
    return {
        "rule": ("incident when Holm's step-down procedure over every statistical test of this check rejects "
                 f"at family-wise alpha {alpha} (per checked batch), or when a rule-based finding "
                 f"({', '.join(RULE_KINDS)}) reaches open_incident_at"),
        "alpha": alpha, "method": "holm", "tests_run": len(tests), "rejected": rejected,
        "suspect_sources": suspects, "rule_based": rules, "incident": bool(rejected or rules), "tests": tests,
    }
