"""The artifact-tampering playbook (MITRE ATLAS AML.T0010 / AML.T0018, OWASP ML06 / ML10): a registered
model or training dataset no longer matches its model-signing signature (found by the scheduled
``artifact_integrity`` check). Contain first, then preserve, find which versions still verify and every
decision the tampered ones served, report."""

from __future__ import annotations

from aiir.playbooks.base import Playbook, Step

P = "aiir.playbook"
A = "aiir.audit.response"

PLAYBOOK = Playbook(
    kind="artifact_integrity",
    dag_id="incident_artifact_tampering",
    title="Incident: tampered model or training data",
    description="A registered artifact no longer matches its signature: isolate the endpoint to last-known-good, "
                "seal the evidence, re-verify every version, list every decision a tampered version served, "
                "report.",
    containment="isolate",
    atlas=("AML.T0010", "AML.T0018"),
    owasp=("ML06", "ML10"),
    mitigations=("AML.M0014", "AML.M0013", "AML.M0005"),
    report_sections=("summary", "deadlines", "containment", "evidence", "taxonomy", "timeline"),
    finding_kinds=("artifact_tampering",),
    tags=("tampering", "AML.T0010", "AML.T0018", "OWASP-ML06", "OWASP-ML10"),
    steps=(
        Step("isolate_endpoint", f"{P}:contain", "RS.MI", "Isolate the endpoint: all traffic to "
             "last-known-good, or quarantine", output="contain.json", role="contain", retries=3,
             siem_phase="contain", event="endpoint_isolated", alias="contain", mutates=True),
        Step("open_incident", f"{P}:open_incident", "RS.MA", "Save the record, pin suspect and last-known-good",
             output="versions.json", after=("isolate_endpoint",), role="open", retries=0,
             siem_phase="detect", event="incident_opened", alias="open"),
        Step("preserve_evidence", f"{P}:preserve", "RS.AN", "Seal a signed, write-once evidence bundle",
             output="evidence.json", after=("open_incident",), role="preserve", siem_phase="preserve",
             event="evidence_sealed", alias="preserve"),
        Step("verify_artifacts", f"{A}:verify_artifacts", "RS.AN", "Re-verify every version of the model and its "
             "datasets against their signatures", output="verification.json", after=("open_incident",),
             siem_phase="analyse", event="artifacts_verified"),
        Step("affected_decisions", f"{A}:affected_decisions", "RS.AN", "Every decision a tampered version served, "
             "per client", output="affected.json", after=("verify_artifacts",), siem_phase="analyse",
             event="blast_radius_measured"),
        Step("report", f"{P}:report", "RS.CO", "HTML/JSON/Markdown report with deadlines and taxonomy",
             output="report", after=("preserve_evidence", "affected_decisions"), role="report",
             siem_phase="report", event="report_published"),
    ),
)
