"""``aiir trace``: everything an auditor asks about one served decision, sealed as an evidence bundle.

For each decision id:

* the decision as served (input features — decrypted only with the key —, output, client, time) and
  the local proof of its decision-log row (its hash, and the links to the rows before and after);
* the model name, version and artifact digest (as the target recorded it, as registered, and now), and
  whether the version's signature verifies **now**;
* the training run (MLflow), the code version (git commit recorded at training), every training dataset
  with its digest, its signature status now and its validation result at training time;
* who promoted that version, when and why (the hash-chained registry log, whose chain is verified);
* which version was serving at that moment — by the registry log (aliases) and by the target's own
  state log (for the local gateway ``admin-audit.jsonl``, chain verified) — and whether the decision's
  version agrees;
* every incident that touched that version or that decision (``incidents/*/forensics`` blast radius).

The package (``trace.json``, ``trace.html``, ``trace.md``, copies of the logs it relied on, the
signatures it checked) is sealed as an evidence bundle ``AUDIT-…`` in the evidence store (or ``out``).
Each trace is first recorded in the access log (:mod:`aiir.audit.accesslog`), whose copy goes in too.

Decisions come through the serving target: for the local gateway its decision log (index lookup by id);
for other targets :meth:`DeploymentTarget.decisions` over the time window encoded in the decision id
(UUIDv7) or the ``since``/``until`` given.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput

FORMATS = ("json", "html", "md")
MAX_LATENCY_S = 60  # longest a request may take between arriving (the row's time) and its id being made
_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# ================================================================================= locating decisions

def uuid7_time(decision_id: str) -> datetime | None:
    """The creation time encoded in a UUIDv7 decision id (the gateway's ids), else None."""
    if not _UUID7.match(decision_id):
        return None
    ms = int(decision_id.replace("-", "")[:12], 16)
    return datetime.fromtimestamp(ms / 1000, UTC)


def _local_logs(target_name: str | None, state_dir: Path | None) -> list[tuple[str, Path]]:
    from aiir.gateway import DECISIONS_FILE

    if state_dir is not None:
        return [(target_name or state_dir.name, Path(state_dir))]
    root = config.paths().gateway
    if target_name:
        return [(target_name, root / target_name)]
    return sorted((p.parent.name, p.parent) for p in root.glob(f"*/{DECISIONS_FILE}"))


_LOGS: dict[str, tuple[tuple[int, ...], Any]] = {}


def _open_log(path: Path):
    """One DecisionLog (and its read connection) per log file, reopened when the file was replaced or
    rewritten (device, inode, size or mtime changed; appends in WAL mode change none of them)."""
    from aiir.gateway.decision_log import DecisionLog

    st = path.stat()
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _LOGS.get(str(path))
    if cached is not None and cached[0] == ident:
        return cached[1]
    if cached is not None:
        cached[1].close()
    if len(_LOGS) > 16:
        for _, old in _LOGS.values():
            old.close()
        _LOGS.clear()
    log = DecisionLog(path, create=False)
    _LOGS[str(path)] = (ident, log)
    return log


def locate(decision_ids: list[str], *, target_kind: str = "local", target_name: str | None = None,
           state_dir: Path | None = None, target: Any = None, since: str | None = None,
           until: str | None = None) -> dict[str, dict[str, Any]]:
    """``{decision_id: {"row": decision, "log": {...proof...}, "target": ref, "state_dir": path|None}}``
    for every id found; missing ids are absent."""
    from aiir.gateway import DECISIONS_FILE

    found: dict[str, dict[str, Any]] = {}
    if target is None and target_kind == "local":
        for name, sdir in _local_logs(target_name, state_dir):
            path = sdir / DECISIONS_FILE
            if not path.exists():
                continue
            want = [i for i in decision_ids if i not in found]
            if not want:
                break
            log = _open_log(path)
            for did, (row, proof) in log.lookup(want).items():
                found[did] = {"row": row, "log": {"path": str(path), **proof}, "target": f"local:{name}",
                              "state_dir": str(sdir)}
        return found
    if target is None:
        from aiir.targets.registry import get_target

        if not target_name:
            raise BadInput("--target-name", f"which {target_kind} target (endpoint) served the decisions?")
        target = get_target(target_kind, target_name)
    # A gateway stamps a decision when its request arrives and makes the id after scoring, so the row's
    # time is at most one request's duration before the time the UUIDv7 id encodes: search
    # [id time - MAX_LATENCY, id time + 1 s], merging the windows of ids close together (one call each).
    windows: list[list[Any]] = []
    if since is not None or until is not None:
        windows.append([since, until, list(decision_ids)])
    else:
        timed = sorted(((uuid7_time(d), d) for d in decision_ids), key=lambda x: (x[0] is None, x[0] or 0))
        untimed = [d for t, d in timed if t is None]
        if untimed:
            raise BadInput(untimed[0], "not a time-ordered (UUIDv7) id: give --since/--until to bound the "
                                       f"search on {target.ref}")
        for t, d in timed:
            lo, hi = t - timedelta(seconds=MAX_LATENCY_S), t + timedelta(seconds=1)
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
                windows[-1][2].append(d)
            else:
                windows.append([lo, hi, [d]])
    for lo, hi, ids in windows:
        want = set(ids)
        lo_s = lo.isoformat() if hasattr(lo, "isoformat") else lo
        hi_s = hi.isoformat() if hasattr(hi, "isoformat") else hi
        for row in target.decisions(lo_s, hi_s, limit=100_000):
            did = str(row.get("decision_id"))
            if did in want and did not in found:
                found[did] = {"row": row, "log": {"path": None, "ok": None,
                                                  "problems": [f"{target.ref} keeps its own log; row proof "
                                                               "not available from aiir"]},
                              "target": target.ref, "state_dir": None}
    return found


# ================================================================================= the pieces

def _mlflow_run(run_id: str | None) -> dict[str, Any] | None:
    if not run_id:
        return None
    from aiir import registry

    try:
        r = registry.client().get_run(run_id)
    except Exception as exc:  # noqa: BLE001 — a deleted run is a finding, not a crash
        return {"run_id": run_id, "error": f"run not readable: {type(exc).__name__}"}
    info, data = r.info, r.data

    def ms(t):
        return None if t is None else datetime.fromtimestamp(t / 1000, UTC).isoformat().replace("+00:00", "Z")

    inputs = []
    for di in (getattr(r, "inputs", None) and r.inputs.dataset_inputs) or []:
        ds = di.dataset
        inputs.append({"name": ds.name, "digest": ds.digest, "source": _source_uri(ds.source)})
    return {"run_id": info.run_id, "run_name": info.run_name, "status": info.status, "user": info.user_id,
            "start_time": ms(info.start_time), "end_time": ms(info.end_time), "params": dict(data.params),
            "metrics": dict(data.metrics), "git_commit": data.tags.get("aiir.git_commit"),
            "mlflow_git_commit": data.tags.get("mlflow.source.git.commit"), "inputs": inputs}


def _source_uri(src: Any) -> Any:
    try:
        return json.loads(src).get("uri") if isinstance(src, str) else src
    except (ValueError, AttributeError):
        return src


def _checks_index() -> list[dict[str, Any]]:
    """Every ``aiir check`` result on disk: the current file's digest, when, the verdict."""
    out = []
    for f in sorted(config.paths().checks.glob("*/findings.json")):
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cur = d.get("current") or {}
        out.append({"file": str(f), "current": cur.get("path"), "sha256": cur.get("sha256"),
                    "checked_at": d.get("checked_at"), "status": d.get("status"), "severity": d.get("severity"),
                    "findings": [x.get("title") for x in d.get("findings", [])][:10],
                    "contract_success": (d.get("contract") or {}).get("success")})
    return out


def _before(a: str | None, b: str | None) -> bool | None:
    if not a or not b:
        return None
    try:
        ta = datetime.fromisoformat(a.replace("Z", "+00:00"))
        tb = datetime.fromisoformat(b.replace("Z", "+00:00"))
        if ta.tzinfo is None:
            ta = ta.replace(tzinfo=UTC)
        if tb.tzinfo is None:
            tb = tb.replace(tzinfo=UTC)
        return ta <= tb
    except ValueError:
        return None


def _registry_chain() -> dict[str, Any]:
    from aiir import registry
    from aiir.errors import IntegrityError

    try:
        entries = registry.verify_alias_log()
        return {"ok": True, "entries": len(entries), "head": entries[-1]["hash"] if entries else registry.GENESIS,
                "problem": None}
    except IntegrityError as exc:
        return {"ok": False, "entries": len(registry.read_alias_log()), "head": None, "problem": str(exc)}


def _aliases_at(entries: list[dict[str, Any]], model: str, ts: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for e in sorted((e for e in entries if e.get("model") == model), key=lambda e: e.get("seq", 0)):
        if e.get("at") and _before(e["at"], ts):
            out[e["alias"]] = e.get("to_version")
    return out


def _alias_tail_check(entries: list[dict[str, Any]], model: str) -> list[str]:
    """The registry log must end where MLflow's aliases are now (an entry cut from the end shows here)."""
    from aiir import registry

    problems = []
    last: dict[str, str | None] = {}
    for e in sorted((e for e in entries if e.get("model") == model), key=lambda e: e.get("seq", 0)):
        last[e["alias"]] = e.get("to_version")
    for alias in sorted(set(last) | {registry.CHAMPION, registry.LAST_KNOWN_GOOD}):
        now = registry.resolve_alias(model, alias)
        if last.get(alias) != now:
            problems.append(f"MLflow alias '{alias}' of {model} points at {now}, but the registry log's last "
                            f"entry for it says {last.get(alias)} (an entry is missing or the alias was moved "
                            "outside aiir)")
    return problems


def _state_at(state_dir: Path | None, ts: str) -> dict[str, Any]:
    """Replay the local gateway's admin audit log up to ``ts``: mode and the versions that could serve."""
    if state_dir is None:
        return {"available": False, "reason": "the target keeps no state log aiir can read"}
    from aiir.gateway import AUDIT_FILE
    from aiir.gateway.state import verify_audit

    path = Path(state_dir) / AUDIT_FILE
    if not path.exists():
        return {"available": False, "reason": f"{path} does not exist"}
    chain = verify_audit(path)
    st, event = None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not _before(e.get("time"), ts):
            break
        if isinstance(e.get("state"), dict):
            st, event = e["state"], {k: e.get(k) for k in ("seq", "time", "action", "reason", "actor", "hash")}
    if st is None:
        return {"available": True, "path": str(path), "chain": chain, "state": None, "serving": [],
                "reason": "no state recorded before this decision"}
    if st.get("mode") == "isolated":
        serving = [st.get("fallback_version")]
    elif st.get("mode") == "quarantined":
        serving = []
    else:
        serving = [st.get("primary_version")]
        if st.get("canary_version") and float(st.get("canary_share") or 0) > 0:
            serving.append(st.get("canary_version"))
    return {"available": True, "path": str(path), "chain": chain, "state": st, "last_change": event,
            "serving": [str(v) for v in serving if v is not None]}


def _incidents(model: str, version: str, decision_id: str) -> list[dict[str, Any]]:
    out = []
    root = config.paths().incidents
    for inc in sorted(p for p in root.glob("*") if p.is_dir()):
        rec = None
        for name in ("incident.json", "record.json"):
            f = inc / name
            if f.exists():
                try:
                    rec = json.loads(f.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    rec = None
                break
        touches, radius = [], []
        for br in sorted(inc.glob("**/blast_radius.json")):
            try:
                b = json.loads(br.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if b.get("model") != model:
                continue
            hit_version = str(b.get("version")) == str(version)
            hit_decision = False
            aff = br.parent / (b.get("affected_decisions_file") or "affected_decisions.csv")
            if aff.exists():
                with open(aff, encoding="utf-8", newline="") as fh:
                    hit_decision = any(r.get("decision_id") == decision_id for r in csv.DictReader(fh))
            if hit_version or hit_decision:
                radius.append({"file": str(br), "version": b.get("version"), "window": b.get("window"),
                               "decisions": b.get("decisions"), "clients_affected": b.get("clients_affected"),
                               "includes_this_decision": hit_decision})
                touches += (["version"] if hit_version else []) + (["decision"] if hit_decision else [])
        rec_version = None
        if rec:
            rec_version = rec.get("suspect_version") or (rec.get("artifact") or {}).get("version")
            for f in rec.get("findings") or []:
                if f.get("model") == model and str(f.get("version")) == str(version):
                    touches.append("version")
        if rec and rec.get("model_name") == model and rec_version is not None and str(rec_version) == str(version):
            touches.append("version")
        if touches:
            out.append({"incident_id": inc.name, "touches": sorted(set(touches)),
                        "kind": (rec or {}).get("kind"), "severity": (rec or {}).get("severity"),
                        "detected_at": (rec or {}).get("detected_at"), "blast_radius": radius})
    return out


class _Cache:
    def __init__(self, verify_artifacts: bool, trusted_keys: list[Any] | None):
        self.verify_artifacts = verify_artifacts
        self.trusted_keys = trusted_keys
        self.versions: dict[tuple[str, str], dict[str, Any]] = {}
        self._checks: list[dict[str, Any]] | None = None
        self._registry: list[dict[str, Any]] | None = None
        self._chain: dict[str, Any] | None = None
        self._tails: dict[str, list[str]] = {}

    @property
    def checks(self) -> list[dict[str, Any]]:
        if self._checks is None:
            self._checks = _checks_index()
        return self._checks

    @property
    def registry(self) -> list[dict[str, Any]]:
        if self._registry is None:
            from aiir import registry

            self._registry = registry.read_alias_log()
        return self._registry

    @property
    def chain(self) -> dict[str, Any]:
        if self._chain is None:
            self._chain = _registry_chain()
        return self._chain

    def tail(self, model: str) -> list[str]:
        if model not in self._tails:
            self._tails[model] = _alias_tail_check(self.registry, model)
        return self._tails[model]


def _version_facts(model: str, version: str, cache: _Cache) -> dict[str, Any]:
    key = (model, version)
    if key in cache.versions:
        return cache.versions[key]
    from aiir import registry
    from aiir.hashing import tree_digest

    from .integrity import SIGNATURE_TAG, TRAIN_SIGNATURES_TAG, _tag_json, verify_model_version

    try:
        mv = registry.get_version(model, version)
    except BadInput as exc:
        facts = {"registered": False, "problem": str(exc)}
        cache.versions[key] = facts
        return facts
    tags = mv.tags
    run = _mlflow_run(mv.run_id)
    integ = verify_model_version(model, version, trusted_keys=cache.trusted_keys) if cache.verify_artifacts else None
    now_digest = tree_digest(mv.artifact_dir) if mv.artifact_dir and mv.artifact_dir.exists() else None
    code = _tag_json(tags, "aiir.code_version") or {}
    sig = _tag_json(tags, SIGNATURE_TAG)
    validation = _tag_json(tags, "aiir.train_validation") or {}
    ds_checks = {d["path"]: d for d in (integ or {}).get("datasets", []) if d.get("path")}
    datasets = []
    train_start = (run or {}).get("start_time")
    for f in _tag_json(tags, TRAIN_SIGNATURES_TAG) or _tag_json(tags, "aiir.train_files") or []:
        chk = ds_checks.get(f["path"])
        checks = [c for c in cache.checks if c["sha256"] == f["sha256"]]
        datasets.append({
            "path": f["path"], "sha256": f["sha256"], "signature": f.get("signature"),
            "signature_sha256": f.get("signature_sha256"), "signing_key": f.get("key_id"),
            "signature_status": ("not signed" if not f.get("signature") else
                                 "not checked" if chk is None else
                                 "verified" if chk["ok"] else "FAILED"),
            "signature_messages": (chk or {}).get("messages", []) if chk and not chk["ok"] else [],
            "validation_at_training": validation.get(f["path"]),
            "integrity_checks": [{**c, "before_training": _before(c["checked_at"], train_start)} for c in checks],
        })
    mc = (integ or {}).get("model_check")
    facts = {
        "registered": True, "name": model, "version": mv.version, "run_id": mv.run_id,
        "aliases_now": mv.aliases, "stage": tags.get("aiir.stage"), "recipe": tags.get("aiir.recipe"),
        "artifact": {"path": str(mv.artifact_dir) if mv.artifact_dir else None,
                     "registered_sha256": tags.get("aiir.artifact_sha256"), "sha256_now": now_digest},
        "signature": {"recorded": sig, "status": ("not signed" if not sig else "not checked" if integ is None else
                                                  "verified" if mc and mc["ok"] else "FAILED"),
                      "check": mc},
        "integrity_ok": (integ or {}).get("ok"),
        "integrity_messages": (integ or {}).get("messages", []),
        "training_run": run,
        "code_version": {"commit": tags.get("aiir.git_commit") or code.get("commit") or (run or {}).get("git_commit"),
                         "dirty": code.get("dirty"), "source": code.get("source") or
                         ("not recorded (registered before code versions were recorded)"
                          if not tags.get("aiir.git_commit") else "git"),
                         "aiir_version": code.get("aiir_version")},
        "datasets": datasets,
        "lineage": _tag_json(tags, "aiir.lineage"),
        "promotions": [{k: e.get(k) for k in ("seq", "at", "actor", "host", "alias", "from_version", "to_version",
                                               "reason", "incident_id", "hash")}
                       for e in cache.registry if e.get("model") == model and str(e.get("to_version")) == mv.version],
        "demotions": [{k: e.get(k) for k in ("seq", "at", "actor", "alias", "to_version", "reason", "incident_id")}
                      for e in cache.registry if e.get("model") == model and str(e.get("from_version")) == mv.version],
    }
    cache.versions[key] = facts
    return facts


def _decision_entry(did: str, hit: dict[str, Any] | None, keys: list[bytes] | None, cache: _Cache) -> dict[str, Any]:
    from .fieldcrypt import decrypt_features, encrypted_fields

    if hit is None:
        return {"decision_id": did, "found": False,
                "problems": [f"decision {did} is not in the decision log of the target(s) searched (never "
                             "served there, or its row was deleted)"]}
    row = dict(hit["row"])
    feats = row.get("features") if isinstance(row.get("features"), dict) else {}
    enc = encrypted_fields(feats)
    decrypted, dproblems = [], []
    if enc and keys:
        feats, decrypted, dproblems = decrypt_features(did, feats, keys)
    elif enc:
        feats = {k: ("(encrypted)" if k in enc else v) for k, v in feats.items()}
    model, version, ts = str(row.get("model")), str(row.get("model_version")), str(row.get("ts"))
    facts = _version_facts(model, version, cache)
    reg_at = _aliases_at(cache.registry, model, ts)
    state = _state_at(Path(hit["state_dir"]) if hit.get("state_dir") else None, ts)
    problems: list[str] = []
    log = hit["log"]
    if log.get("ok") is False:
        problems += [f"decision log: {p}" for p in log.get("problems", [])]
    if not facts.get("registered"):
        problems.append(f"model {model} v{version} is not (or no longer) registered")
    else:
        art = facts["artifact"]
        if row.get("artifact_digest") and art["registered_sha256"] and row["artifact_digest"] != art["registered_sha256"]:
            problems.append(f"the target served artifact {row['artifact_digest']}, but {model} v{version} was "
                            f"registered as {art['registered_sha256']}")
        if art["sha256_now"] and art["registered_sha256"] and art["sha256_now"] != art["registered_sha256"]:
            problems.append(f"{model} v{version} artifact changed since registration (now {art['sha256_now']})")
        if facts["signature"]["status"] in ("FAILED", "not signed"):
            problems += [m for m in facts["integrity_messages"] if m.startswith("model ") or m.startswith("UNSIGNED")
                         if not m.split(": ", 1)[-1].startswith(("INTACT", "NOTE"))]
        for d in facts["datasets"]:
            if d["signature_status"] == "FAILED":
                problems += [f"dataset {Path(d['path']).name}: {m}" for m in d["signature_messages"]]
    if not cache.chain["ok"]:
        problems.append(f"registry log: {cache.chain['problem']}")
    problems += [f"registry log: {p}" for p in cache.tail(model)]
    if state.get("available") and not state["chain"]["ok"]:
        problems.append(f"target state log: {state['chain'].get('problem')} at line {state['chain'].get('line')}")
    consistent = None
    if state.get("available") and state.get("state") is not None:
        consistent = version in state["serving"]
        if not consistent:
            problems.append(f"the decision says v{version} served it, but the target's state log says "
                            f"{', '.join(state['serving']) or 'nothing'} was serving at {ts}")
    problems += [f"decryption: {p}" for p in dproblems]
    return {
        "decision_id": did, "found": True, "target": hit["target"],
        "decision": {"ts": ts, "client_id": row.get("client_id"), "request_id": row.get("request_id"),
                     "features": feats, "prediction": row.get("prediction"), "score": row.get("score"),
                     "latency_ms": row.get("latency_ms"), "source": row.get("source"),
                     "encrypted_fields": enc, "decrypted_fields": decrypted},
        "log": log,
        "model": {"name": model, "version": version, "served_artifact_digest": row.get("artifact_digest")},
        "version": facts,
        "serving_at_decision": {"registry_log": reg_at, "target_state_log": state,
                                "decision_version_consistent_with_state_log": consistent},
        "incidents": _incidents(model, version, did),
        "problems": problems,
        "ok": not problems,
    }


# ================================================================================= trace

def new_audit_id() -> str:
    return f"AUDIT-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def trace(decision_ids: list[str], *, target_kind: str = "local", target_name: str | None = None,
          state_dir: str | Path | None = None, target: Any = None, since: str | None = None,
          until: str | None = None, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None,
          keys: list[bytes] | None = None, actor: str | None = None, purpose: str = "",
          verify_artifacts: bool = True, trusted_keys: list[Any] | None = None, signing_key: Any = None,
          context: dict[str, Any] | None = None, seal: bool = True) -> dict[str, Any]:
    """Trace ``decision_ids``; returns ``{audit_id, ok, bundle, files, decisions, access}``.
    ``keys``: decision-log field keys (decrypt encrypted features); ``out``: evidence store root for the
    package (default ``$AIIR_EVIDENCE_DIR``)."""
    from . import accesslog

    ids = [str(i).strip() for i in decision_ids if str(i).strip()]
    if not ids:
        raise BadInput("decision_ids", "give at least one decision id")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise BadInput("--format", f"unknown format {bad[0]!r} (expected {', '.join(FORMATS)})")
    t0 = time.perf_counter()
    audit_id = new_audit_id()
    access = accesslog.record(action="trace", decision_ids=ids, actor=actor, purpose=purpose,
                              decrypted=bool(keys), audit_id=audit_id,
                              target=target.ref if target is not None else f"{target_kind}:{target_name or '*'}",
                              context=context or {})
    hits = locate(ids, target_kind=target_kind, target_name=target_name,
                  state_dir=Path(state_dir) if state_dir else None, target=target, since=since, until=until)
    cache = _Cache(verify_artifacts, trusted_keys)
    entries = [_decision_entry(did, hits.get(did), keys, cache) for did in ids]
    access_chain = accesslog.verify()
    doc = {
        "format": "aiir-decision-trace/1", "audit_id": audit_id, "generated_at": access["at"],
        "traced_by": {"actor": access["actor"], "host": access["host"], "purpose": purpose,
                      "access_log_seq": access["seq"], "access_log_hash": access["hash"]},
        "decisions": entries,
        "registry_log": {"path": str(config.paths().registry_log), **cache.chain},
        "access_log": {"path": str(accesslog.path()), **access_chain},
        "ok": all(e.get("ok") for e in entries) and access_chain["ok"],
        "seconds": None,
    }
    if not access_chain["ok"]:
        doc["problems"] = [f"access log: {access_chain['problem']}"]
    doc["seconds"] = round(time.perf_counter() - t0, 4)
    result = {"audit_id": audit_id, "ok": doc["ok"], "decisions": entries, "document": doc,
              "access": {"seq": access["seq"], "hash": access["hash"]}}
    if seal:
        result.update(_package(doc, formats, out=out, signing_key=signing_key, actor=actor, context=context))
    return result


def _package(doc: dict[str, Any], formats: tuple[str, ...], *, out: str | Path | None, signing_key: Any,
             actor: str | None, context: dict[str, Any] | None) -> dict[str, Any]:
    from aiir.evidence import EvidenceStore, load_or_create_signing_key

    from . import accesslog

    store = EvidenceStore(out) if out else EvidenceStore()
    b = store.open_bundle(doc["audit_id"], actor=actor, context={"via": "aiir trace", **(context or {})})
    files = {}
    if "json" in formats:
        files["json"] = b.add_json(doc, "trace.json", category="report", description="decision audit trace").path
    if "html" in formats:
        files["html"] = b.add_bytes(render_html(doc).encode(), "trace.html", category="report",
                                    description="decision audit trace (HTML, self-contained)").path
    if "md" in formats:
        files["md"] = b.add_bytes(render_md(doc).encode(), "trace.md", category="report",
                                  description="decision audit trace (Markdown)").path
    if accesslog.path().exists():
        b.add_file(accesslog.path(), "logs/access-log.jsonl", category="other",
                   description="who traced which decision, when (hash-chained)")
    if config.paths().registry_log.exists():
        b.add_file(config.paths().registry_log, "logs/registry-log.jsonl", category="registry",
                   description="alias history (hash-chained)")
    seen: set[str] = set()
    for e in doc["decisions"]:
        sd = (e.get("serving_at_decision") or {}).get("target_state_log") or {}
        if sd.get("path") and sd["path"] not in seen:
            seen.add(sd["path"])
            b.add_file(sd["path"], f"logs/{e['target'].replace(':', '-')}-admin-audit.jsonl", category="target_state",
                       description=f"{e['target']} state log")
        v = e.get("version") or {}
        rec = (v.get("signature") or {}).get("recorded") or {}
        for p in (rec.get("signature"), rec.get("manifest")):
            if p and Path(p).is_file() and p not in seen:
                seen.add(p)
                b.add_file(p, f"signatures/{v['name']}-v{v['version']}/{Path(p).name}", category="model",
                           description=f"signature of {v['name']} v{v['version']}")
        for d in v.get("datasets", []):
            for p in (d.get("signature"), d.get("signature") and str(Path(d["signature"]).with_name(
                    Path(d["signature"]).name[:-4] + ".manifest.json"))):
                if p and Path(p).is_file() and p not in seen:
                    seen.add(p)
                    b.add_file(p, f"signatures/datasets/{Path(p).name}", category="training_data",
                               description=f"signature of {Path(d['path']).name}")
    manifest = b.seal(signing_key if signing_key is not None else load_or_create_signing_key())
    return {"bundle": str(b.path), "files": {k: str(b.path / v) for k, v in files.items()},
            "manifest_sha256": _sha(b.path / "manifest.json"), "file_count": manifest["file_count"]}


def _sha(p: Path) -> str:
    from aiir.hashing import sha256_file

    return sha256_file(p)


# ================================================================================= rendering

def _j(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def render_md(doc: dict[str, Any]) -> str:
    def esc(v: Any) -> str:  # Markdown table cells: no pipes or newlines from data
        return _j(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")

    w = io.StringIO()
    w.write(f"# Decision audit trace {esc(doc['audit_id'])}\n\n")
    w.write(f"Generated {esc(doc['generated_at'])} by {esc(doc['traced_by']['actor'])}@"
            f"{esc(doc['traced_by']['host'])}; verdict **{'INTACT' if doc['ok'] else 'PROBLEMS FOUND'}**. "
            f"Registry log chain: {'ok' if doc['registry_log']['ok'] else 'BROKEN'}; access log chain: "
            f"{'ok' if doc['access_log']['ok'] else 'BROKEN'}.\n\n")
    for e in doc["decisions"]:
        w.write(f"## Decision {esc(e['decision_id'])}\n\n")
        if not e.get("found"):
            w.write(f"**Not found.** {esc('; '.join(e['problems']))}\n\n")
            continue
        d, m, v = e["decision"], e["model"], e["version"]
        rows = [("served at", d["ts"]), ("client", d["client_id"]), ("target", e["target"]),
                ("input features", d["features"]), ("output", {"prediction": d["prediction"], "score": d["score"]}),
                ("encrypted fields", d["encrypted_fields"] or "none"),
                ("model", f"{m['name']} v{m['version']}"), ("artifact digest (served)", m["served_artifact_digest"])]
        if v.get("registered"):
            sig = v["signature"]
            rows += [("artifact digest (registered / now)", f"{v['artifact']['registered_sha256']} / {v['artifact']['sha256_now']}"),
                     ("signature now", sig["status"]),
                     ("training run", (v["training_run"] or {}).get("run_id")),
                     ("trained", f"{(v['training_run'] or {}).get('start_time')} → {(v['training_run'] or {}).get('end_time')}"),
                     ("code version", v["code_version"]["commit"] or v["code_version"]["source"])]
        sa = e["serving_at_decision"]
        rows += [("aliases at that moment (registry log)", sa["registry_log"]),
                 ("serving at that moment (target state log)", (sa["target_state_log"] or {}).get("serving",
                                                                (sa["target_state_log"] or {}).get("reason"))),
                 ("decision log row", f"seq {e['log'].get('seq')} {'ok' if e['log'].get('ok') else e['log'].get('problems')}")]
        w.write("| | |\n|---|---|\n")
        for k, val in rows:
            w.write(f"| {esc(k)} | {esc(val)} |\n")
        if v.get("registered"):
            w.write("\n**Training datasets**\n\n| file | sha256 | signature now | validation at training | integrity checks |\n|---|---|---|---|---|\n")
            for ds in v["datasets"]:
                chk = "; ".join(f"{c['status']} at {c['checked_at']}" + (" (before training)" if c["before_training"]
                                else " (after training)" if c["before_training"] is False else "")
                                for c in ds["integrity_checks"]) or "none"
                w.write(f"| {esc(ds['path'])} | {esc(ds['sha256'])} | {esc(ds['signature_status'])} | "
                        f"{esc(ds['validation_at_training'] or 'none recorded')} | {esc(chk)} |\n")
            w.write("\n**Promotions (registry log)**\n\n| at | who | alias | from → to | why | incident |\n|---|---|---|---|---|---|\n")
            for p in v["promotions"]:
                w.write(f"| {esc(p['at'])} | {esc(p['actor'])} | {esc(p['alias'])} | {esc(p['from_version'])} → "
                        f"{esc(p['to_version'])} | {esc(p['reason'])} | {esc(p['incident_id'] or '')} |\n")
        w.write("\n**Incidents**: " + (", ".join(f"{esc(i['incident_id'])} ({esc(', '.join(i['touches']))})"
                                                 for i in e["incidents"]) or "none") + "\n\n")
        if e["problems"]:
            w.write("**Problems**\n\n" + "".join(f"- {esc(p)}\n" for p in e["problems"]) + "\n")
    return w.getvalue()


_CSS = ("body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.2em;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;text-align:left}th{background:#f3f3f3}code{font-size:12px;word-break:break-all}"
        ".bad{color:#a40000;font-weight:bold}.ok{color:#1a6d1a;font-weight:bold}h2{border-top:2px solid #ddd;padding-top:.6em}")


def render_html(doc: dict[str, Any]) -> str:
    from html import escape

    def e_(v: Any) -> str:
        return escape(_j(v) if v is not None else "—", quote=True)

    def table(rows: list[tuple[str, Any]]) -> str:
        return "<table>" + "".join(f"<tr><th>{e_(k)}</th><td><code>{e_(v)}</code></td></tr>" for k, v in rows) + "</table>"

    def grid(head: list[str], rows: list[list[Any]]) -> str:
        return ("<table><tr>" + "".join(f"<th>{e_(h)}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td><code>{e_(c)}</code></td>" for c in r) + "</tr>" for r in rows)
                + "</table>")

    verdict = '<span class="ok">INTACT</span>' if doc["ok"] else '<span class="bad">PROBLEMS FOUND</span>'
    # no script, no external resource: the CSP forbids both, so even a missed escape could not run
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
             f"content=\"{csp}\"><title>{e_('Decision audit trace ' + doc['audit_id'])}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Decision audit trace {e_(doc['audit_id'])}</h1>",
             f"<p>Generated {e_(doc['generated_at'])} by {e_(doc['traced_by']['actor'])}@{e_(doc['traced_by']['host'])}"
             f" ({e_(doc['traced_by']['purpose'] or 'no purpose given')}). Verdict: {verdict}.</p>",
             table([("registry log", f"{doc['registry_log']['entries']} entries, chain "
                     f"{'ok' if doc['registry_log']['ok'] else 'BROKEN: ' + str(doc['registry_log']['problem'])}"),
                    ("access log", f"{doc['access_log']['entries']} entries, chain "
                     f"{'ok' if doc['access_log']['ok'] else 'BROKEN: ' + str(doc['access_log']['problem'])}")])]
    for ent in doc["decisions"]:
        parts.append(f"<h2>Decision {e_(ent['decision_id'])}</h2>")
        if not ent.get("found"):
            parts.append(f"<p class='bad'>Not found: {e_('; '.join(ent['problems']))}</p>")
            continue
        d, m, v, sa = ent["decision"], ent["model"], ent["version"], ent["serving_at_decision"]
        parts.append(table([("served at", d["ts"]), ("client", d["client_id"]), ("request", d["request_id"]),
                            ("target", ent["target"]), ("input features", d["features"]),
                            ("encrypted fields", d["encrypted_fields"] or "none"),
                            ("decrypted for this trace", d["decrypted_fields"] or "none"),
                            ("output", {"prediction": d["prediction"], "score": d["score"]}),
                            ("model", f"{m['name']} v{m['version']}"),
                            ("artifact digest served", m["served_artifact_digest"]),
                            ("decision log row", ent["log"])]))
        if v.get("registered"):
            run = v["training_run"] or {}
            parts.append("<h3>Model version</h3>" + table([
                ("artifact registered", v["artifact"]["registered_sha256"]), ("artifact now", v["artifact"]["sha256_now"]),
                ("signature now", v["signature"]["status"]), ("signature recorded", v["signature"]["recorded"]),
                ("stage / recipe", f"{v['stage']} / {v['recipe']}"), ("aliases now", v["aliases_now"]),
                ("training run", run.get("run_id")), ("trained", f"{run.get('start_time')} → {run.get('end_time')}"),
                ("trained by", run.get("user")), ("params", run.get("params")), ("metrics", run.get("metrics")),
                ("code version", v["code_version"]), ("lineage", v["lineage"])]))
            parts.append("<h3>Training datasets</h3>" + grid(
                ["file", "sha256", "signature now", "validation at training", "integrity checks"],
                [[ds["path"], ds["sha256"], ds["signature_status"] + ("; " + "; ".join(ds["signature_messages"])
                                                                       if ds["signature_messages"] else ""),
                  ds["validation_at_training"] or "none recorded",
                  [{"status": c["status"], "at": c["checked_at"], "before_training": c["before_training"],
                    "findings": c["findings"]} for c in ds["integrity_checks"]] or "none"] for ds in v["datasets"]]))
            parts.append("<h3>Promotions (registry log)</h3>" + grid(
                ["at", "who", "alias", "from", "to", "why", "incident"],
                [[p["at"], p["actor"], p["alias"], p["from_version"], p["to_version"], p["reason"], p["incident_id"]]
                 for p in v["promotions"]]))
            if v["demotions"]:
                parts.append("<h3>Moved away (registry log)</h3>" + grid(
                    ["at", "who", "alias", "to", "why", "incident"],
                    [[p["at"], p["actor"], p["alias"], p["to_version"], p["reason"], p["incident_id"]]
                     for p in v["demotions"]]))
        st = sa["target_state_log"] or {}
        parts.append("<h3>Serving at that moment</h3>" + table([
            ("aliases (registry log)", sa["registry_log"]),
            ("target state log", st.get("serving") if st.get("available") else st.get("reason")),
            ("state", st.get("state")), ("last state change before it", st.get("last_change")),
            ("decision version consistent with the state log", sa["decision_version_consistent_with_state_log"])]))
        parts.append("<h3>Incidents</h3>" + (grid(["incident", "touches", "kind", "severity", "detected", "blast radius"],
                                                   [[i["incident_id"], i["touches"], i["kind"], i["severity"],
                                                     i["detected_at"], i["blast_radius"]] for i in ent["incidents"]])
                                              if ent["incidents"] else "<p>none</p>"))
        if ent["problems"]:
            parts.append("<h3 class='bad'>Problems</h3><ul>" + "".join(f"<li>{e_(p)}</li>" for p in ent["problems"])
                         + "</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)
