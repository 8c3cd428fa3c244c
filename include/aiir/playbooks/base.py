"""A playbook is a definition: an ordered list of named steps, each a reusable function, read by the DAG
builder, the CLI, the operators and the report alike (the evidently-preset shape: a composite as a list
of parts). Nothing here imports a step's code: a step names its function as ``"module:function"`` and it
is imported only when the step runs, so containment never waits on another step's imports.

Step roles (how the Airflow builder turns a step into a task, and what the CLI does with it):

``contain``   the run's first task; validates the conf itself and acts on the target (light imports only)
``open``      validates the conf, saves the record and pins the versions in play
``step``      a function of the incident record, output written once in the incident workspace
``preserve``  like ``step``, with the evidence signing key passed in
``child``     runs another playbook (its kind in ``child``) with the conf a previous step produced
``approval``  a person decides (Airflow HITL; the CLI asks on a terminal or needs ``--approve``)
``report``    runs whatever happened before it (trigger rule ALL_DONE)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiir.errors import BadInput

ROLES = ("contain", "open", "step", "preserve", "child", "approval", "report")
# NIST CSF 2.0 functions/categories the steps are filed under (SP 800-61r3 maps its lifecycle onto them)
PHASES = {
    "DE.AE": "Detect — adverse event analysis",
    "RS.MA": "Respond — incident management",
    "RS.AN": "Respond — incident analysis",
    "RS.MI": "Respond — incident mitigation (containment, eradication)",
    "RS.CO": "Respond — incident reporting and communication",
    "RC.RP": "Recover — recovery plan execution",
    "ID.RA": "Identify — risk assessment",
    "PR.DS": "Protect — data security",
}


@dataclass(frozen=True)
class Step:
    name: str
    func: str  # "module:function"; called with the incident record (child/approval: the conf)
    phase: str  # a key of PHASES
    title: str
    output: str | None = None  # file or folder in the incident workspace the step writes
    after: tuple[str, ...] = ()  # steps that must have finished first
    role: str = "step"
    child: str | None = None  # role "child": the playbook kind it runs
    conf_from: str | None = None  # role "child": "<step>.<key>" of the output holding the child's conf
    event: str = ""  # SIEM action emitted when the step succeeds ("endpoint_isolated")
    siem_phase: str = ""  # its SIEM phase (aiir.siem.NIST_PHASES: detect, contain, preserve, analyse, ...)
    alias: str = ""  # the CLI's short name (`aiir incident contain` for isolate_endpoint)
    retries: int | None = None  # Airflow retries (None: the DAG's default)
    mutates: bool = False  # acts on the target or registry: serialised per model
    asset: str = ""  # name of the Airflow Asset (aiir_airflow.assets) the step's success updates
    when: str | None = None  # role "approval": "module:function" of the subject — is a person needed now?

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"step {self.name}: role must be one of {ROLES}, got {self.role!r}")
        if self.phase not in PHASES:
            raise ValueError(f"step {self.name}: phase must be one of {sorted(PHASES)}, got {self.phase!r}")
        if self.role == "approval" and not self.when:
            raise ValueError(f"step {self.name}: an approval step names its condition (when)")
        if self.role == "child" and not (self.child and self.conf_from):
            raise ValueError(f"step {self.name}: a child step names its playbook and conf_from")

    @property
    def branch_ids(self) -> tuple[str, str]:
        """Role "approval": the Airflow task ids of its branch (ask or not) and of the not-needed path."""
        return f"{self.name}_needed", f"{self.name}_not_needed"

    def condition(self) -> Callable[..., bool] | None:
        return _load(self.when, self.name) if self.when else None

    def function(self) -> Callable[..., Any]:
        return _load(self.func, self.name)

    def run(self, subject: Any, **kwargs) -> Any:
        """Call the step's function; a ``mutates`` step holds its model's lock (aiir.locks) while it runs."""
        fn = self.function()
        if not self.mutates:
            return fn(subject, **kwargs)
        from aiir.locks import model_lock

        model = subject.get("model_name") if isinstance(subject, dict) else getattr(subject, "model_name", None)
        if not model:
            return fn(subject, **kwargs)
        with model_lock(model):
            return fn(subject, **kwargs)


def _load(spec: str, step: str) -> Callable[..., Any]:
    mod, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"step {step}", f"cannot load {spec} ({exc})") from None


@dataclass(frozen=True)
class Playbook:
    kind: str  # "data_poisoning"
    dag_id: str  # the Airflow DAG that runs it
    title: str
    steps: tuple[Step, ...]
    description: str = ""
    containment: str = "none"  # "isolate" | "block_clients" | "none"
    atlas: tuple[str, ...] = ()  # default ATLAS techniques when the findings name none
    owasp: tuple[str, ...] = ()
    mitigations: tuple[str, ...] = ()
    report_sections: tuple[str, ...] = ()
    finding_kinds: tuple[str, ...] = ()  # integrity findings that call for this playbook
    conf: str = "incident"  # "incident" (IncidentRecord conf) or "retrain" (recovery conf)
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"playbook {self.kind}: step names repeat: {names}")
        seen: set[str] = set()
        for s in self.steps:
            missing = [a for a in s.after if a not in seen]
            if missing:
                raise ValueError(f"playbook {self.kind}: step {s.name} runs after {missing}, which are not "
                                 "earlier steps")
            seen.add(s.name)
        contain = [s for s in self.steps if s.role == "contain"]
        if contain and self.steps[0].role != "contain":
            raise ValueError(f"playbook {self.kind}: the containment step must be the first step")

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise BadInput("step", f"playbook '{self.kind}' has no step '{name}' (steps: {', '.join(self.step_names)})")

    def edges(self) -> list[tuple[str, str]]:
        return [(a, s.name) for s in self.steps for a in s.after]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dag_id": self.dag_id, "title": self.title, "containment": self.containment,
                "atlas": list(self.atlas), "owasp": list(self.owasp), "finding_kinds": list(self.finding_kinds),
                "steps": [{"name": s.name, "phase": s.phase, "title": s.title, "role": s.role,
                           "after": list(s.after), "output": s.output} for s in self.steps]}
