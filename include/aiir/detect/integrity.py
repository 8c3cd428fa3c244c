"""Artifact integrity: SHA-256 of registered data and model artifacts against a digest registry.

Registry file (JSON)::

    {"artifacts": [{"name": "train-2024-06", "kind": "data", "path": "data/train.parquet",
                    "sha256": "<64 hex>"},
                   {"name": "fraud-model", "kind": "model", "path": "models/fraud/", "sha256": "<64 hex>"}]}

A relative ``path`` is resolved against the registry file's folder. A file is hashed with
:func:`aiir.hashing.sha256_file`, a folder (e.g. an MLflow model directory) with
:func:`aiir.hashing.tree_digest`. A mismatch of a model is ``critical``, of data ``high``; a missing
artifact is ``high``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiir.detect.findings import finding
from aiir.errors import BadInput
from aiir.hashing import sha256_file, tree_digest

KINDS = ("data", "model")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def load_registry(path: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    p = Path(path)
    if not p.exists():
        raise BadInput(str(p), "registry file not found")
    if not p.is_file():
        raise BadInput(str(p), "registry must be a file, got a directory")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(str(p), f"registry is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise BadInput(str(p), 'registry must be a JSON object {"artifacts": [...]}')
    arts = []
    for i, a in enumerate(data["artifacts"]):
        where = f"{p}: artifacts[{i}]"
        if not isinstance(a, dict):
            raise BadInput(where, "must be an object with name, kind, path, sha256")
        for key in ("name", "kind", "path", "sha256"):
            if not isinstance(a.get(key), str) or not a[key]:
                raise BadInput(where, f"'{key}' must be a non-empty string")
        if a["kind"] not in KINDS:
            raise BadInput(where, f"'kind' must be one of {', '.join(KINDS)}, got {a['kind']!r}")
        if not _HEX.match(a["sha256"]):
            raise BadInput(where, "'sha256' must be 64 hexadecimal characters")
        arts.append(a)
    return p, arts


def digest(path: Path) -> str:
    return tree_digest(path) if path.is_dir() else sha256_file(path)


def check_registry(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(findings, one status row per artifact: name, kind, path, expected, actual, status)."""
    p, arts = load_registry(path)
    base = p.resolve().parent
    findings, rows = [], []
    for a in arts:
        target = Path(a["path"]).expanduser()
        target = target if target.is_absolute() else base / target
        expected = a["sha256"].lower()
        row = {"name": a["name"], "kind": a["kind"], "path": str(target), "expected": expected, "actual": None}
        if not target.exists():
            row["status"] = "missing"
            findings.append(finding(
                "integrity", "high", f"registered {a['kind']} artifact '{a['name']}' is missing",
                statistic=("sha256_match", 0), threshold=1,
                detail=f"{target} does not exist (registry {p}).", evidence={"artifact": row}))
        else:
            actual = digest(target)
            row["actual"] = actual
            row["status"] = "ok" if actual == expected else "mismatch"
            if actual != expected:
                findings.append(finding(
                    "integrity", "critical" if a["kind"] == "model" else "high",
                    f"registered {a['kind']} artifact '{a['name']}' does not match its SHA-256",
                    statistic=("sha256_match", 0), threshold=1,
                    detail=f"{target}: expected {expected}, found {actual} "
                           f"({'folder tree digest' if target.is_dir() else 'file digest'}).",
                    evidence={"artifact": row}))
        rows.append(row)
    return findings, rows


def verify_registry(path: str | Path) -> list[dict[str, Any]]:
    """Integrity findings (mismatched or missing artifacts) for a digest registry; [] when all match."""
    return check_registry(path)[0]
