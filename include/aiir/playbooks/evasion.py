"""The adversarial-evasion playbook (MITRE ATLAS AML.T0040 → AML.T0043 → AML.T0015, OWASP ML01; model
extraction AML.T0024, ML05): contain the attacking clients at the target, preserve the attack queries,
harden the model with adversarial examples, redeploy it behind a canary that rolls back by itself, report."""

from __future__ import annotations

from aiir.playbooks.base import Playbook, Step

E = "aiir.evasion.playbook"

PLAYBOOK = Playbook(
    kind="adversarial_evasion",
    dag_id="incident_adversarial_evasion",
    title="Incident: adversarial evasion",
    description="A client probes the served model with crafted perturbations (or sweeps it to copy it): block "
                "or rate-limit it at the target, confirm the attack from the served decisions, seal the attack "
                "queries, retrain with adversarial examples (ART) behind a robust-accuracy gate, canary the "
                "hardened model with automatic rollback, report.",
    containment="block_clients",
    atlas=("AML.T0040", "AML.T0043", "AML.T0015"),
    owasp=("ML01",),
    mitigations=("AML.M0015", "AML.M0004", "AML.M0003", "AML.M0024"),
    report_sections=("summary", "deadlines", "containment", "triage", "recovery", "evidence", "taxonomy", "timeline"),
    finding_kinds=("evasion", "label_evasion", "extraction"),
    tags=("evasion", "AML.T0015", "OWASP-ML01"),
    steps=(
        Step("contain_clients", f"{E}:contain", "RS.MI", "Block or rate-limit the attacking clients at the target",
             output="contain.json", role="contain", retries=3, siem_phase="contain", event="clients_contained",
             alias="contain", mutates=True),
        Step("open_incident", "aiir.playbook:open_incident", "RS.MA", "Save the record, pin the attacked and "
             "last-known-good versions", output="versions.json", after=("contain_clients",), role="open", retries=0,
             siem_phase="detect", event="incident_opened", alias="open"),
        Step("triage", f"{E}:triage", "RS.AN", "Re-scan the served decisions: attackers, queries, perturbation sizes",
             output="triage.json", after=("open_incident",), siem_phase="analyse", event="attack_triaged"),
        Step("preserve_evidence", f"{E}:preserve", "RS.AN", "Seal the attack queries, the model, the target state "
             "and the guard's events", output="evidence.json", after=("triage",), role="preserve",
             siem_phase="preserve", event="evidence_sealed", alias="preserve"),
        Step("harden", f"{E}:harden", "RS.MI", "Retrain with adversarial examples (ART); robust-accuracy gate",
             output="harden.json", after=("preserve_evidence",), siem_phase="eradicate", event="model_hardened",
             mutates=True),
        Step("canary_redeploy", f"{E}:redeploy", "RC.RP", "Canary the hardened model; promote or roll back by itself",
             output="redeploy.json", after=("harden",), siem_phase="recover", event="model_redeployed",
             alias="redeploy", mutates=True),
        Step("report", f"{E}:report", "RS.CO", "HTML/JSON/Markdown report: attack queries, perturbations, clients",
             output="report", after=("canary_redeploy",), role="report", siem_phase="report",
             event="report_published"),
    ),
)
