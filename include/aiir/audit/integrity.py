"""Integrity of registered artifacts: one model version, one dataset, or everything registered.

``aiir verify`` dispatches here for anything that is not an evidence bundle:

* ``model:NAME/VERSION`` (or ``model:NAME@alias``) — the version's MLflow artifact folder against the
  signature recorded on the version (``aiir.signature`` tag), plus every training dataset it lists;
* ``dataset:PATH`` or a data file path — the file against ``PATH.sig``;
* a model folder path — the folder against ``FOLDER.sig``.

:func:`verify_registered` re-verifies every registered version (the ``artifact_integrity`` DAG):
each result names what changed; a mismatch becomes findings of kind ``artifact_tampering``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiir.errors import BadInput

from .signing import ArtifactCheck, signature_path, verify_artifact

SIGNATURE_TAG = "aiir.signature"
TRAIN_SIGNATURES_TAG = "aiir.train_signatures"
# A registration signs the artifact, then records the tags one by one: a version younger than this without
# its signature tag is still being registered (AIIR_ARTIFACT_REGISTRATION_GRACE_S, seconds).
REGISTRATION_GRACE_S = 600.0
_MODEL_REF = re.compile(r"^model:(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_.-]+))$")


def is_artifact_ref(arg: str) -> bool:
    """True for what :func:`verify_ref` handles (so ``aiir verify`` can dispatch before the bundle code)."""
    if arg.startswith(("model:", "dataset:")):
        return True
    p = Path(arg)
    if p.is_file():
        return True
    if p.is_dir() and not ((p / "manifest.json").exists() or (p / "custody.jsonl").exists()):
        return signature_path(p).exists() or (p / "MLmodel").exists()
    return False


def _tag_json(tags: dict[str, str], key: str) -> Any:
    raw = tags.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _load_keys(trusted_keys: list[str | Path] | None):
    """The default trusted artifact keys plus ``trusted_keys`` (PEM files), as ``aiir verify --trusted-key``."""
    if not trusted_keys:
        return None
    from .signing import default_trusted_keys, load_ec_public_key

    return [*default_trusted_keys(), *(load_ec_public_key(Path(k)) for k in trusted_keys)]


def verify_model_version(name: str, version: str | None = None, *, alias: str | None = None,
                         trusted_keys: list[Any] | None = None, trust_chain: list[Path] | None = None,
                         datasets: bool = True, grace_s: float | None = None) -> dict[str, Any]:
    """The version's artifact and its training datasets against their recorded signatures.

    ``grace_s`` (the scheduled check): a version younger than this with no signature recorded yet is
    ``registering`` (a registration signs first, then records its tags), not judged."""
    from aiir import registry

    mv = registry.get_version(name, version, alias=alias)
    out: dict[str, Any] = {"kind": "model", "model": name, "version": mv.version, "run_id": mv.run_id,
                           "ok": False, "status": "tampered", "messages": []}
    rec = _tag_json(mv.tags, SIGNATURE_TAG)
    out["model_signed"] = bool(rec)
    if mv.artifact_dir is None:
        raise BadInput(f"model:{name}/{mv.version}", "artifact is not on a local path (only local stores are verified)")
    unsigned = None  # why the version has no signature to check, when it has none
    if not rec:
        out["model_check"] = None
        beside = signature_path(mv.artifact_dir)
        age = _age_s(mv.created_ms)
        if grace_s is not None and age is not None and age < grace_s:
            unsigned = "registering"
            out["messages"].append(f"REGISTERING: {name} v{mv.version} was created {age:.0f} s ago and its "
                                   f"signature is not recorded yet; checked on the next run")
        elif beside.exists():
            # the tag is gone but a signature lies beside the artifact: check the files against it
            chk = verify_artifact(mv.artifact_dir, beside, kind="model", trusted_keys=trusted_keys,
                                  trust_chain=trust_chain)
            out["model_check"] = chk.to_dict()
            out["messages"].append(f"model {name} v{mv.version}: SIGNATURE TAG MISSING: no '{SIGNATURE_TAG}' tag, "
                                   f"checked against {beside.name} beside the artifact")
            out["messages"] += [f"model {name} v{mv.version}: {m}" for m in chk.messages]
            if chk.ok:
                unsigned = "unsigned"
        else:
            unsigned = "unsigned"
            young = f"; it was created {age:.0f} s ago: still being registered?" if age is not None and age < 600 else ""
            out["messages"].append(f"UNSIGNED: {name} v{mv.version} has no '{SIGNATURE_TAG}' tag and no signature "
                                   "beside its artifact (registered before signing was in place? sign it with "
                                   f"`aiir sign model:{name}/{mv.version}`{young})")
    else:
        chk = verify_artifact(mv.artifact_dir, Path(rec["signature"]), kind="model",
                              expected_signature_sha256=rec.get("signature_sha256"),
                              trusted_keys=trusted_keys, trust_chain=trust_chain)
        out["model_check"] = chk.to_dict()
        out["messages"] += [f"model {name} v{mv.version}: {m}" for m in chk.messages]
    digest = mv.tags.get("aiir.artifact_sha256")
    if digest and mv.artifact_dir.exists() and unsigned != "registering":  # signed or not, the digest must hold
        from aiir.hashing import tree_digest

        now = tree_digest(mv.artifact_dir)
        out["artifact_sha256"] = {"registered": digest, "now": now, "ok": now == digest}
    ds_checks = []
    if datasets:
        for d in _tag_json(mv.tags, TRAIN_SIGNATURES_TAG) or []:
            chk = verify_artifact(Path(d["path"]), Path(d["signature"]), kind="dataset",
                                  expected_signature_sha256=d.get("signature_sha256"),
                                  trusted_keys=trusted_keys, trust_chain=trust_chain)
            ds_checks.append(chk.to_dict())
            out["messages"] += [f"dataset {Path(d['path']).name}: {m}" for m in chk.messages]
        listed = {d["path"] for d in _tag_json(mv.tags, TRAIN_SIGNATURES_TAG) or []}
        if unsigned != "registering":
            for f in _tag_json(mv.tags, "aiir.train_files") or []:
                if f.get("path") not in listed:
                    out["messages"].append(f"UNSIGNED: training dataset {f.get('path')} has no recorded signature")
                    ds_checks.append({"path": f.get("path"), "kind": "dataset", "ok": False, "signature": None,
                                      "unsigned": True, "messages": ["no recorded signature"]})
    out["datasets"] = ds_checks
    digest_ok = (out.get("artifact_sha256") or {"ok": True})["ok"]
    out["ok"] = bool(out.get("model_check") and out["model_check"]["ok"] and rec and digest_ok
                     and all(d["ok"] for d in ds_checks))
    if out.get("artifact_sha256") and not digest_ok:
        out["messages"].append(f"model {name} v{mv.version}: CHANGED: artifact tree digest "
                               f"{out['artifact_sha256']['now']}, registered {out['artifact_sha256']['registered']}")
    # what a failure means: "tampered" (a recorded digest or signature does not hold, or the signature beside
    # it fails), "unsigned" (nothing recorded to check: not evidence of tampering), "registering" (too young)
    recorded_failed = (not digest_ok or (out["model_check"] is not None and not out["model_check"]["ok"])
                       or any(not d["ok"] and not d.get("unsigned") for d in ds_checks))
    if out["ok"]:
        out["status"] = "intact"
    elif recorded_failed:
        out["status"] = "tampered"
    else:
        out["status"] = unsigned or "unsigned"
    return out


def _grace_s() -> float:
    import os

    raw = os.environ.get("AIIR_ARTIFACT_REGISTRATION_GRACE_S")
    if raw is None or raw == "":
        return REGISTRATION_GRACE_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise BadInput("AIIR_ARTIFACT_REGISTRATION_GRACE_S", f"expected seconds, got {raw!r}") from None


def _age_s(created_ms: int | None) -> float | None:
    import time

    return None if not created_ms else max(0.0, time.time() - created_ms / 1000.0)


def verify_ref(arg: str, *, trusted_keys: list[str | Path] | None = None,
               cert_chain: list[str | Path] | None = None, signature: str | Path | None = None) -> dict[str, Any]:
    """``aiir verify`` for models and datasets. Raises BadInput for what is neither."""
    keys = _load_keys(trusted_keys)
    chain = [Path(c) for c in cert_chain] if cert_chain else None
    for c in chain or []:
        if not c.is_file():
            raise BadInput(str(c), "certificate chain file not found")
    m = _MODEL_REF.match(arg)
    if arg.startswith("model:"):
        if not m:
            raise BadInput(arg, "expected model:NAME/VERSION or model:NAME@ALIAS (e.g. model:fraud-detector/3)")
        return verify_model_version(m["name"], m["version"], alias=m["alias"], trusted_keys=keys, trust_chain=chain)
    raw = arg[len("dataset:"):] if arg.startswith("dataset:") else arg
    p = Path(raw)
    if not p.exists():
        raise BadInput(raw, "no such file or folder")
    sig = Path(signature) if signature else signature_path(p)
    if not sig.exists():
        raise BadInput(str(sig), f"no signature beside {p} (give one with --signature)")
    chk: ArtifactCheck = verify_artifact(p, sig, kind="model" if p.is_dir() else "dataset",
                                         trusted_keys=keys, trust_chain=chain)
    return {"kind": chk.kind, "path": str(p), "ok": chk.ok, "check": chk.to_dict(), "messages": chk.messages}


# ================================================================================= everything

def registered_versions(model: str | None = None) -> list[tuple[str, str]]:
    from aiir import registry

    c = registry.client()
    names = [model] if model else [m.name for m in c.search_registered_models()]
    out = []
    for n in names:
        for v in c.search_model_versions(f"name='{n}'"):
            out.append((n, str(v.version)))
    return sorted(out, key=lambda t: (t[0], int(t[1])))


def verify_registered(model: str | None = None, *, trusted_keys: list[Any] | None = None) -> dict[str, Any]:
    """Re-verify every registered version and its datasets. ``findings`` lists each mismatch (kind
    ``artifact_tampering``, ATLAS AML.T0010 / AML.T0018, OWASP ML06 / ML10)."""
    from aiir.registry import now_iso

    grace = _grace_s()
    results, findings, unsigned, registering = [], [], [], []
    seen_datasets: dict[str, dict[str, Any]] = {}
    for name, version in registered_versions(model):
        r = verify_model_version(name, version, trusted_keys=trusted_keys, grace_s=grace)
        results.append(r)
        if r["status"] == "registering":
            registering.append({"model": name, "version": version, "message": r["messages"][0]})
            continue
        mc = r.get("model_check")
        model_failed = (mc is not None and not mc["ok"]) or not (r.get("artifact_sha256") or {"ok": True})["ok"]
        if model_failed:
            findings.append(_finding("model", f"{name} v{version}", r["messages"], name=name, version=version,
                                     check=mc))
        elif not r["model_signed"]:
            # nothing recorded to check against: a gap to close (`aiir sign`), not evidence of tampering
            unsigned.append({"model": name, "version": version, "what": "model",
                             "message": next((m for m in r["messages"] if "UNSIGNED" in m or "TAG MISSING" in m),
                                             r["messages"][0] if r["messages"] else "unsigned"),
                             "remedy": f"aiir sign model:{name}/{version}"})
        for d in r["datasets"]:
            if not d["ok"] and d["path"] not in seen_datasets:
                seen_datasets[d["path"]] = d
                if d.get("unsigned"):
                    unsigned.append({"model": name, "version": version, "what": "dataset", "path": d["path"],
                                     "message": f"training dataset {d['path']} has no recorded signature",
                                     "remedy": f"aiir sign model:{name}/{version}"})
                else:
                    findings.append(_finding("dataset", d["path"], d.get("messages", []), name=name,
                                             version=version, check=d))
    return {"checked_at": now_iso(), "versions": len(results), "ok": not findings and not unsigned,
            "findings": findings, "unsigned": unsigned, "registering": registering, "results": results}


def _finding(kind: str, what: str, messages: list[str], *, name: str, version: str,
             check: dict[str, Any] | None) -> dict[str, Any]:
    from aiir.knowledge import taxonomy

    tax = taxonomy.suggest("artifact_tampering")
    return {"kind": "artifact_tampering", "severity": "critical" if kind == "model" else "high",
            "title": f"registered {kind} {what} does not match its signature",
            "detail": "; ".join(messages[:8]), "model": name, "version": version, "artifact_kind": kind,
            "atlas": tax["atlas"], "owasp": tax["owasp"], "mitigations": tax["mitigations"],
            "sources": [], "evidence": {"check": check}}


def sign_version(client: Any, name: str, version: str, artifact_dir: Path, *, spec: Any = None,
                 train_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Sign a registered version's artifact folder (and its training files) and record the signature on
    the version (tags ``aiir.signature``, ``aiir.train_signatures``), as registration does. Refuses a folder
    whose recorded digest (``aiir.artifact_sha256``) no longer matches: what would be signed is not what
    was registered."""
    from aiir.errors import IntegrityError
    from aiir.models import DIGEST_TAG, artifact_digest

    from .signing import SignerSpec, sign_artifact

    spec = spec or SignerSpec.from_env()
    mv = client.get_model_version(name, str(version))
    recorded = (mv.tags or {}).get(DIGEST_TAG)
    if recorded and artifact_digest(artifact_dir) != recorded:
        raise IntegrityError(f"{artifact_dir}: model {name} v{version} changed since registration (SHA-256 now "
                             f"{artifact_digest(artifact_dir)}, registered {recorded}); not signing it")
    rec = sign_artifact(artifact_dir, kind="model", name=f"{name}/{version}", spec=spec)
    ds = []
    for f in train_files or []:
        r = sign_artifact(Path(f["path"]), kind="dataset", name=Path(f["path"]).name, spec=spec)
        ds.append({"path": f["path"], "sha256": f["sha256"], **{k: r[k] for k in (
            "signature", "signature_sha256", "manifest", "method", "key_id", "reused")}})
    client.set_model_version_tag(name, str(version), SIGNATURE_TAG, json.dumps({k: rec[k] for k in (
        "signature", "signature_sha256", "manifest", "subject_sha256", "method", "key_id")}))
    client.set_model_version_tag(name, str(version), TRAIN_SIGNATURES_TAG, json.dumps(ds))
    return {**rec, "datasets": ds}


def sign_ref(arg: str) -> dict[str, Any]:
    """Sign what was registered before signing existed: ``model:NAME/V`` (artifact folder and training
    datasets, recorded as tags on the version) or a path (signature beside it)."""
    from aiir import registry

    from .signing import SignerSpec, sign_artifact

    spec = SignerSpec.from_env()
    m = _MODEL_REF.match(arg)
    if arg.startswith("model:"):
        if not m:
            raise BadInput(arg, "expected model:NAME/VERSION or model:NAME@ALIAS")
        mv = registry.get_version(m["name"], m["version"], alias=m["alias"])
        if mv.artifact_dir is None or not mv.artifact_dir.is_dir():
            raise BadInput(arg, "artifact folder is not on a local path")
        if mv.tags.get(SIGNATURE_TAG):
            raise BadInput(arg, f"already signed ({SIGNATURE_TAG} is set); a signature is never replaced")
        rec = sign_version(registry.client(), mv.name, mv.version, mv.artifact_dir, spec=spec,
                           train_files=_tag_json(mv.tags, "aiir.train_files") or [])
        return {"model": mv.name, "version": mv.version, **rec}
    raw = arg[len("dataset:"):] if arg.startswith("dataset:") else arg
    p = Path(raw)
    if not p.exists():
        raise BadInput(raw, "no such file or folder")
    return sign_artifact(p, kind="model" if p.is_dir() else "dataset", name=p.name, spec=spec)
