"""Run a playbook's steps without Airflow (the CLI: `aiir incident run`, `aiir incident step NAME`).

The same functions the Airflow operators call, in the definition's order. A step is handed only the
context its function declares (``target``, ``signing_key``, ``actor``, ``context``, ``approve``), so
every step that talks to the target uses the one target built for the run. A ``child`` step runs the
child playbook's steps with the conf its parent produced; an ``approval`` step asks a person.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from aiir.errors import BadInput
from aiir.playbooks.base import Playbook, Step
from aiir.playbooks.registry import get


def _call(step: Step, subject: Any, ctx: dict[str, Any]) -> Any:
    if step.role == "approval":
        ctx = {**ctx, "actor": ctx.get("actor")}
    fn = step.function()
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in ctx.items() if v is not None and (accepts_any or k in params)}
    return step.run(subject, **kwargs)


def child_conf(pb: Playbook, step: Step, record) -> dict[str, Any]:
    """The conf a ``child`` step hands its playbook: ``conf_from`` = "<step>.<key>" of an earlier output."""
    from aiir.jsonio import read_json

    src_name, _, key = (step.conf_from or "").partition(".")
    src = pb.step(src_name)
    out = read_json(record.workdir / src.output) if src.output else None
    if not isinstance(out, dict) or key not in out:
        raise BadInput(f"step {step.name}", f"needs {src_name}'s output ({src.output}) with '{key}'; run "
                                            f"{src_name} first")
    return out[key]


def run_child(record, *, playbook: Playbook | None = None, step: Step | None = None,
              progress: Callable[[str], None] | None = None, **ctx) -> dict[str, Any]:
    """Run the child playbook of ``step`` inline (the CLI's stand-in for a triggered DAG run)."""
    pb = playbook or get(record.kind)
    step = step or next(s for s in pb.steps if s.role == "child")
    conf = child_conf(pb, step, record)
    child = get(step.child)
    return run_all(child, conf, progress=progress, **ctx)


def validate_subject(pb: Playbook, subject: Any) -> Any:
    if pb.conf == "retrain":
        from aiir import recovery

        return recovery.validate_conf(subject)
    return subject


def run_step(pb: Playbook, name: str, subject: Any, *, progress: Callable[[str], None] | None = None,
             **ctx) -> Any:
    """One step by name (``subject``: the IncidentRecord, or the retrain conf for a retrain playbook)."""
    step = pb.step(name)
    subject = validate_subject(pb, subject)
    if progress:
        progress(f"{pb.kind}: {step.name} — {step.title}")
    if step.role == "child":
        conf = child_conf(pb, step, subject)
        return run_all(get(step.child), conf, progress=progress, **ctx)
    if step.role == "approval" and not step.condition()(subject):
        return {"needed": False}
    return _call(step, subject, ctx)


def run_all(pb: Playbook, subject: Any, *, progress: Callable[[str], None] | None = None,
            skip: tuple[str, ...] = (), **ctx) -> dict[str, Any]:
    """Every step in order; a failed step stops the run, except that ``report`` steps still run."""
    subject = validate_subject(pb, subject)
    out: dict[str, Any] = {}
    failure: BaseException | None = None
    for step in pb.steps:
        if step.name in skip:
            continue
        if failure is not None and step.role != "report":
            continue
        try:
            out[step.name] = run_step(pb, step.name, subject, progress=progress, **ctx)
        except Exception as exc:
            if step.role == "report":
                raise
            failure = exc
            out[step.name] = {"error": f"{type(exc).__name__}: {exc}"}
    if failure is not None:
        raise failure
    return out
