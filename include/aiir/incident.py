"""The incident record, the playbook's conf schema and the incident workspace.

An incident is opened by ``data_integrity_check`` (from a check result) or by a person (Airflow trigger
form or ``aiir incident open``). Either way the conf goes through :func:`validate_conf` before any task
acts: a malformed conf fails with one message naming the field and what was expected.

Workspace: ``$AIIR_HOME/incidents/<incident_id>/`` holds ``incident.json``, ``timeline.jsonl`` and one
file or folder per playbook step. Sealed evidence lives apart, in the write-once evidence store.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput

TARGET_KINDS = ("local", "sagemaker", "kubernetes")  # built in; param_specs() offers what is installed
SEVERITIES = ("low", "medium", "high", "critical")
REGIMES = ("gdpr", "nis2", "hipaa", "sec_8k", "nydfs", "eu_ai_act")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,120}$")

# JSON-schema of every conf field: the Airflow Params form is built from this table, and
# validate_conf() enforces the same rules for a conf that arrives by REST or from another DAG.
PARAM_SPECS: dict[str, dict[str, Any]] = {
    "model_name": {"default": "fraud-detector", "type": "string", "minLength": 1,
                   "title": "Registered model", "description": "MLflow registered model under attack."},
    "target_kind": {"default": "local", "type": "string", "enum": list(TARGET_KINDS),
                    "title": "Target kind", "description": "Where the model is served."},
    "target_name": {"default": "fraud-detector", "type": "string", "minLength": 1,
                    "title": "Target name", "description": "Endpoint / deployment / gateway name."},
    "target_conn_id": {"default": "", "type": "string", "title": "Target connection",
                       "description": "Airflow connection every step uses to reach the target (empty: the "
                                      "kind's default, e.g. aiir_target_local, aws_default, kubernetes_default)."},
    "incident_id": {"default": "", "type": "string",
                    "title": "Incident id", "description": "Leave empty to generate one."},
    "detected_at": {"default": "", "type": "string",
                    "title": "Detected at (ISO-8601, UTC)", "description": "Empty means now."},
    "severity": {"default": "high", "type": "string", "enum": list(SEVERITIES), "title": "Severity"},
    "containment": {"default": "fallback", "type": "string", "enum": ["fallback", "quarantine"],
                    "title": "Containment",
                    "description": "fallback: all traffic to last-known-good; quarantine: refuse all (503)."},
    "dry_run": {"default": False, "type": "boolean", "title": "Dry run",
                "description": "Analyse and report only; change nothing on the target or registry."},
    "require_approval": {"default": False, "type": "boolean", "title": "Destructive steps wait for approval",
                         "description": "Promotion of the retrained model waits for a person."},
    "canary_share": {"default": 0.0, "type": "number", "minimum": 0, "maximum": 0.99,
                     "title": "Canary share of the retrained model",
                     "description": "Recovery serves the new version to this share of live traffic, compares it "
                                    "with last-known-good, then promotes or rolls back by itself (0: no canary)."},
    "regimes": {"default": ["gdpr", "nis2", "eu_ai_act"], "type": "array",
                "items": {"type": "string", "enum": list(REGIMES)},
                "title": "Regulatory regimes", "description": "Clocks to compute in the report."},
    "check_dir": {"default": "", "type": "string", "title": "Integrity-check output folder",
                  "description": "Folder with findings.json (set by data_integrity_check)."},
    "findings": {"default": [], "type": "array", "title": "Findings",
                 "description": "Findings from the integrity check (set automatically)."},
    "suspect_sources": {"default": [], "type": "array", "items": {"type": "string"},
                        "title": "Suspect sources"},
    "opened_by": {"default": "manual", "type": "string", "title": "Opened by"},
    "personal_data": {"default": "unknown", "type": "string", "enum": ["unknown", "yes", "no"],
                      "title": "Personal data affected?",
                      "description": "GDPR / HIPAA clocks apply only when personal (health) data were affected."},
    "sec_materiality_at": {"default": "", "type": "string", "title": "SEC materiality determined at (ISO-8601)",
                           "description": "Starts the Form 8-K Item 1.05 clock (4 business days). Empty: not yet."},
    "eu_ai_act_death": {"default": False, "type": "boolean", "title": "EU AI Act: a person died",
                        "description": "Art. 73(4): 10-day report instead of 15."},
    "eu_ai_act_widespread": {"default": False, "type": "boolean",
                             "title": "EU AI Act: widespread infringement",
                             "description": "Art. 73(3): 2-day report."},
    "eu_ai_act_critical_infrastructure": {"default": False, "type": "boolean",
                                          "title": "EU AI Act: critical infrastructure disrupted",
                                          "description": "Art. 73(3) with Art. 3(49)(b): 2-day report."},
    "fingerprint": {"default": "", "type": "string", "title": "Fingerprint",
                    "description": "Model, batch digest, finding kinds and sources (set by the check)."},
}
# Who may open an incident without a person: their containment never takes the whole service down.
AUTOMATIC_OPENERS = ("data_integrity_check", "artifact_integrity", "scan_evasion", "gateway_guard")


def param_specs() -> dict[str, dict[str, Any]]:
    """PARAM_SPECS with the target kinds that can run here (the target registry), for the trigger form."""
    from aiir.targets.registry import available_kinds

    specs = {k: dict(v) for k, v in PARAM_SPECS.items()}
    specs["target_kind"]["enum"] = available_kinds() or ["local"]
    return specs


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str, *, field_name: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise BadInput(field_name, f"expected an ISO-8601 time such as 2026-11-25T03:00:00Z, got {value!r}") from None
    if dt.tzinfo is None:
        raise BadInput(field_name, f"time {value!r} has no timezone; add Z or +00:00")
    return dt.astimezone(UTC)


def new_incident_id(model: str, at: datetime | None = None) -> str:
    at = at or datetime.now(UTC)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-")[:40] or "model"
    return f"INC-{at:%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(2)}"


@dataclass
class IncidentRecord:
    incident_id: str
    model_name: str
    target_kind: str
    target_name: str
    detected_at: str
    severity: str
    containment: str = "fallback"
    dry_run: bool = False
    require_approval: bool = False
    regimes: list[str] = field(default_factory=lambda: ["gdpr", "nis2", "eu_ai_act"])
    check_dir: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    suspect_sources: list[str] = field(default_factory=list)
    opened_by: str = "manual"
    kind: str = "data_poisoning"  # the playbook (aiir.playbooks registry kind)
    target_conn_id: str = ""
    personal_data: str = "unknown"
    sec_materiality_at: str = ""
    eu_ai_act_death: bool = False
    eu_ai_act_widespread: bool = False
    eu_ai_act_critical_infrastructure: bool = False
    fingerprint: str = ""
    canary_share: float = 0.0

    @property
    def automatic(self) -> bool:
        """Opened by a check or guard, not by a person."""
        return self.opened_by in AUTOMATIC_OPENERS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def workdir(self) -> Path:
        return config.paths().incidents / self.incident_id

    @property
    def playbook(self):
        from aiir.playbooks import get_playbook

        return get_playbook(self.kind)

    @property
    def atlas(self) -> list[str]:
        return sorted({t for f in self.findings for t in f.get("atlas", [])} or set(self.playbook.atlas))

    @property
    def owasp(self) -> list[str]:
        return sorted({t for f in self.findings for t in f.get("owasp", [])} or set(self.playbook.owasp))


def id_from_run(run_id: str) -> str:
    """An incident id derived from an Airflow run id (every task of one run derives the same one)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-._")[:110]
    return slug if ID_RE.match(slug) else f"INC-{slug or 'run'}"


def validate_conf(conf: Any, *, default_id: str | None = None, default_detected_at: str | None = None,
                  kind: str = "data_poisoning") -> IncidentRecord:
    """Check a playbook conf field by field; fill defaults; raise BadInput naming the first bad field.

    ``default_id`` / ``default_detected_at`` fill an empty id / time deterministically (the Airflow
    operators pass the run id and the run's trigger time, so every task derives the same record)."""
    if not isinstance(conf, dict):
        raise BadInput("conf", f"expected a JSON object, got {type(conf).__name__}")
    unknown = sorted(set(conf) - set(PARAM_SPECS))
    if unknown:
        raise BadInput(f"conf.{unknown[0]}", f"unknown field (known: {', '.join(PARAM_SPECS)})")
    values: dict[str, Any] = {}
    for name, spec in PARAM_SPECS.items():
        v = conf.get(name, spec["default"])
        where = f"conf.{name}"
        t = spec["type"]
        if t == "string" and not isinstance(v, str):
            raise BadInput(where, f"expected a string, got {type(v).__name__}")
        if t == "number":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BadInput(where, f"expected a number, got {type(v).__name__}")
            if not spec.get("minimum", float("-inf")) <= v <= spec.get("maximum", float("inf")):
                raise BadInput(where, f"expected a number from {spec.get('minimum')} to {spec.get('maximum')}, "
                                      f"got {v}")
            v = float(v)
        if t == "boolean" and not isinstance(v, bool):
            raise BadInput(where, f"expected true or false, got {v!r}")
        if t == "array" and not isinstance(v, list):
            raise BadInput(where, f"expected a list, got {type(v).__name__}")
        if name == "target_kind" and isinstance(v, str):
            _check_target_kind(v)
            values[name] = v
            continue
        if "enum" in spec and v not in spec["enum"]:
            raise BadInput(where, f"expected one of {', '.join(spec['enum'])}, got {v!r}")
        if t == "array" and "enum" in spec.get("items", {}):
            bad = [x for x in v if x not in spec["items"]["enum"]]
            if bad:
                raise BadInput(where, f"unknown value {bad[0]!r} (expected any of {', '.join(spec['items']['enum'])})")
        if spec.get("minLength") and not v.strip():
            raise BadInput(where, "must not be empty")
        values[name] = v
    if values["incident_id"] and not ID_RE.match(values["incident_id"]):
        raise BadInput("conf.incident_id", "expected 3-121 characters of letters, digits, '.', '_' or '-'")
    if not values["incident_id"]:
        values["incident_id"] = default_id or new_incident_id(values["model_name"])
    detected = values["detected_at"] or default_detected_at
    values["detected_at"] = (parse_time(detected, field_name="conf.detected_at")
                             .isoformat(timespec="milliseconds").replace("+00:00", "Z")
                             if detected else now_iso())
    for i, f in enumerate(values["findings"]):
        if not isinstance(f, dict) or "kind" not in f:
            raise BadInput(f"conf.findings[{i}]", "expected an object with at least a 'kind'")
    if values["sec_materiality_at"]:
        values["sec_materiality_at"] = (parse_time(values["sec_materiality_at"], field_name="conf.sec_materiality_at")
                                        .isoformat(timespec="seconds").replace("+00:00", "Z"))
    if values["check_dir"] and not Path(values["check_dir"]).is_dir():
        raise BadInput("conf.check_dir", f"folder {values['check_dir']} does not exist")
    from aiir.playbooks import get_playbook

    get_playbook(kind)  # BadInput naming the unknown playbook
    return IncidentRecord(**values, kind=kind)


def _check_target_kind(kind: str) -> None:
    from aiir.targets.registry import kinds, missing_requirements, target_class

    if kind not in kinds():
        raise BadInput("conf.target_kind", f"expected one of {', '.join(kinds())}, got {kind!r}")
    missing = missing_requirements(target_class(kind))
    if missing:
        raise BadInput("conf.target_kind", f"target kind '{kind}' cannot run here (missing modules: "
                                           f"{', '.join(missing)})")


def from_check(result: dict[str, Any], *, model_name: str, target_kind: str, target_name: str,
               check_dir: str | Path, regimes: list[str] | None = None, fingerprint: str = "") -> IncidentRecord:
    """The incident record a failed integrity check opens by itself."""
    conf = {
        "model_name": model_name, "target_kind": target_kind, "target_name": target_name,
        "detected_at": result.get("checked_at") or now_iso(),
        "severity": result.get("severity") if result.get("severity") in SEVERITIES else "high",
        "check_dir": str(check_dir), "findings": result.get("findings", []),
        "suspect_sources": list(result.get("suspect_sources", [])), "opened_by": "data_integrity_check",
        "fingerprint": fingerprint,
        # automatic incidents promote a retrained model only after a person approves, when configured
        "require_approval": os.environ.get("AIIR_REQUIRE_APPROVAL", "0") == "1",
    }
    if regimes is not None:
        conf["regimes"] = regimes
    from aiir.playbooks import for_findings

    # the playbook the findings call for (no check hard-codes a DAG)
    return validate_conf(conf, kind=for_findings(result.get("findings", [])).kind)


def save(record: IncidentRecord) -> Path:
    """Write ``incident.json`` once; a later save with the same id keeps the first record (idempotent)."""
    d = record.workdir
    d.mkdir(parents=True, exist_ok=True)
    path = d / "incident.json"
    if not path.exists():
        from aiir.jsonio import write_json

        write_json(path, record.to_dict())
        add_event(record, "detected", at=record.detected_at, actor=record.opened_by,
                  details={"severity": record.severity, "findings": len(record.findings)})
        from aiir import lifecycle

        lifecycle.init_state(record, fingerprint_value=record.fingerprint or None)
    return path


def load(incident_id: str) -> IncidentRecord:
    path = config.paths().incidents / incident_id / "incident.json"
    if not path.exists():
        raise BadInput("incident_id", f"no incident '{incident_id}' under {path.parent.parent}")
    return IncidentRecord(**json.loads(path.read_text()))


def add_event(record: IncidentRecord, event: str, *, at: str | None = None, actor: str = "aiir",
              details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append a timeline event once: re-running a step does not duplicate (or re-date) its event."""
    path = record.workdir / "timeline.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    for e in timeline(record):
        if e["event"] == event:
            return e
    entry = {"event": event, "at": at or now_iso(), "actor": actor, "details": details or {}}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
    return entry


def timeline(record: IncidentRecord) -> list[dict[str, Any]]:
    path = record.workdir / "timeline.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
