"""What a model version was built from and when it served: training files and their digests, deployment windows from the hash-chained registry log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiir import registry
from aiir.errors import BadInput
from aiir.hashing import sha256_file

if TYPE_CHECKING:

    pass

def train_files(mv: registry.ModelVersion) -> list[dict[str, str]]:
    """The ``aiir.train_files`` tag of a version: ``[{"path", "sha256"}, ...]``."""
    raw = mv.tags.get("aiir.train_files")
    if not raw:
        raise BadInput(f"{mv.name} v{mv.version}", "version has no 'aiir.train_files' tag (registered "
                                                   "outside aiir.registry.log_and_register?)")
    try:
        files = json.loads(raw)
        return [{"path": str(f["path"]), "sha256": str(f["sha256"])} for f in files]
    except (ValueError, TypeError, KeyError):
        raise BadInput(f"{mv.name} v{mv.version}", "tag 'aiir.train_files' is not a JSON list of "
                                                   "{path, sha256}") from None


def verify_files(entries: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Recompute each file's SHA-256: status ``ok``, ``mismatch`` or ``missing``."""
    out = []
    for e in entries:
        p = Path(e["path"])
        if not p.is_file():
            out.append({"path": e["path"], "expected_sha256": e["sha256"], "actual_sha256": None,
                        "status": "missing"})
            continue
        actual = sha256_file(p)
        out.append({"path": e["path"], "expected_sha256": e["sha256"], "actual_sha256": actual,
                    "status": "ok" if actual == e["sha256"] else "mismatch"})
    return out




def deployment_windows(model: str, version: str, alias: str = registry.CHAMPION) -> list[dict[str, Any]]:
    """Every interval in which ``alias`` pointed at ``version``, from the hash-chained registry log."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for e in sorted(registry.alias_history(model, alias), key=lambda e: e.get("seq", 0)):
        if str(e.get("to_version")) == str(version) and cur is None:
            cur = {"since": e["at"], "until": None, "moved_in_by": e.get("actor"), "reason_in": e.get("reason")}
        elif cur is not None and str(e.get("to_version")) != str(version):
            cur.update(until=e["at"], moved_out_by=e.get("actor"), reason_out=e.get("reason"),
                       replaced_by=e.get("to_version"))
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def deployment_window(model: str, version: str) -> tuple[str, str | None]:
    """``(since, until or None)``: when ``champion`` first moved to ``version`` and when it last moved away
    (None while it is still champion). Decisions are also filtered by version, so gaps between several
    deployments never count other versions' decisions."""
    wins = deployment_windows(model, str(version))
    if not wins:
        raise BadInput("version", f"{model} v{version} was never '{registry.CHAMPION}' according to the "
                                  "registry log")
    return wins[0]["since"], wins[-1]["until"]
