"""Targets are found, not wired: kind -> DeploymentTarget class.

Built-in kinds are listed here; any installed package adds its own through the ``aiir.targets`` entry-point
group (``[project.entry-points."aiir.targets"] mykind = "mypkg.target:MyTarget"``), the way MLflow finds
deployment plugins. A kind whose required modules are not importable is listed as unavailable and never
offered by the trigger form. Nothing here imports a target's module until that kind is used.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from typing import Any

from aiir.errors import BadInput

ENTRY_POINT_GROUP = "aiir.targets"
BUILTIN: dict[str, str] = {
    "local": "aiir.targets.local:LocalGatewayTarget",
    "sagemaker": "aiir.targets.sagemaker:SageMakerTarget",
    "kubernetes": "aiir.targets.kubernetes:KubernetesTarget",
}
_REGISTERED: dict[str, str | type] = {}


def register(kind: str, target: str | type) -> None:
    """Register a kind at run time (tests, notebooks); entry points are the way for packages."""
    _REGISTERED[kind] = target
    _specs.cache_clear()


@lru_cache(maxsize=1)
def _specs() -> dict[str, str | type]:
    from importlib.metadata import entry_points

    found: dict[str, str | type] = {}
    for kind, spec in BUILTIN.items():
        mod = spec.split(":", 1)[0]
        if importlib.util.find_spec(mod) is not None:
            found[kind] = spec
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    found.update(_REGISTERED)
    return found


def refresh() -> None:
    _specs.cache_clear()


def kinds() -> list[str]:
    return sorted(_specs())


def target_class(kind: str) -> type:
    specs = _specs()
    if kind not in specs:
        raise BadInput("target_kind", f"unknown target kind '{kind}' (installed: {', '.join(kinds()) or 'none'})")
    spec = specs[kind]
    if isinstance(spec, type):
        return spec
    mod, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(mod), attr)
    except ImportError as exc:
        raise BadInput("target_kind", f"target kind '{kind}' is not usable here: {exc}") from None
    return cls


def missing_requirements(cls: type) -> list[str]:
    return [m for m in getattr(cls, "requires", ()) if importlib.util.find_spec(m) is None]


def available_kinds() -> list[str]:
    """Kinds whose implementation and required modules import here (what the trigger form offers)."""
    out = []
    for kind in kinds():
        try:
            cls = target_class(kind)
        except BadInput:
            continue
        if not missing_requirements(cls):
            out.append(kind)
    return out


def list_targets() -> list[dict[str, Any]]:
    rows = []
    for kind in kinds():
        try:
            cls = target_class(kind)
        except BadInput as exc:
            rows.append({"kind": kind, "available": False, "problem": exc.problem})
            continue
        row = cls.describe_kind()
        missing = missing_requirements(cls)
        row["available"] = not missing
        if missing:
            row["problem"] = f"missing modules: {', '.join(missing)}"
        rows.append(row)
    return rows


def get_target(kind: str, name: str, **options):
    cls = target_class(kind)
    known = {o.name for o in cls.options}
    unknown = sorted(set(options) - known) if known else []
    if unknown:
        raise BadInput("target options", f"target kind '{kind}' takes {sorted(known)}, not {unknown}")
    return cls(name=name, **options)
