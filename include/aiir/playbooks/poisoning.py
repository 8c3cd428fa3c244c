"""The data-poisoning playbook (MITRE ATLAS AML.T0020, OWASP ML02): contain first, then preserve,
analyse, eradicate, recover through the clean retrain, report."""

from __future__ import annotations

from aiir.playbooks.base import Playbook, Step

P = "aiir.playbook"

PLAYBOOK = Playbook(
    kind="data_poisoning",
    dag_id="incident_data_poisoning",
    title="Incident: data poisoning",
    description="Poisoned training data reached a served model: isolate it to last-known-good, seal the "
                "evidence, confirm and localise the poison, quarantine it, retrain from clean data, report.",
    containment="isolate",
    atlas=("AML.T0020",),
    owasp=("ML02",),
    mitigations=("AML.M0007", "AML.M0014", "AML.M0025"),
    report_sections=("summary", "deadlines", "containment", "triage", "poison_localisation", "blast_radius",
                     "recovery", "evidence", "taxonomy", "timeline"),
    finding_kinds=("label_shift", "label_consistency", "duplicates", "drift", "outliers", "source_anomaly",
                   "trigger", "integrity", "label_flip", "point_mass", "backdoor"),
    tags=("poisoning", "AML.T0020", "OWASP-ML02"),
    steps=(
        Step("isolate_endpoint", f"{P}:contain", "RS.MI", "Isolate the endpoint: all traffic to "
             "last-known-good, or quarantine", output="contain.json", role="contain", retries=3,
             siem_phase="contain", event="endpoint_isolated", alias="contain", mutates=True),
        Step("open_incident", f"{P}:open_incident", "RS.MA", "Save the record, pin suspect and last-known-good",
             output="versions.json", after=("isolate_endpoint",), role="open", retries=0,
             siem_phase="detect", event="incident_opened", alias="open"),
        Step("confirm_quarantine", f"{P}:confirm_quarantine", "RS.MI", "Take the whole service down "
             "(quarantine)? Asked only when last-known-good is the version serving", after=("open_incident",),
             role="approval", when=f"{P}:quarantine_pending", siem_phase="contain", event="quarantine_decided",
             mutates=True),
        Step("preserve_evidence", f"{P}:preserve", "RS.AN", "Seal a signed, write-once evidence bundle",
             output="evidence.json", after=("open_incident",), role="preserve", siem_phase="preserve",
             event="evidence_sealed", alias="preserve"),
        Step("triage", f"{P}:triage", "RS.AN", "Confirm the signal: suspect vs last-known-good",
             output="triage.json", after=("open_incident",), siem_phase="analyse", event="signal_triaged"),
        Step("confirm_incident", f"{P}:confirm_incident", "RS.AN", "Go on, or close as a false positive? "
             "Asked only when triage confirmed nothing", after=("triage",), role="approval",
             when=f"{P}:triage_unconfirmed", siem_phase="analyse", event="incident_confirmed"),
        Step("forensics", f"{P}:forensics", "RS.AN", "Localise the poison; blast radius per client",
             output="forensics.json", after=("preserve_evidence", "confirm_incident"), siem_phase="analyse",
             event="poison_localised"),
        Step("eradicate", f"{P}:eradicate", "RS.MI", "Fix the quarantine list and the retrain conf",
             output="eradicate.json", after=("forensics",), siem_phase="eradicate", event="poison_quarantined"),
        Step("retrain_from_clean_data", "aiir.playbooks.runner:run_child", "RC.RP",
             "Clean retrain, gate, promote (its own DAG, waited on)", output="recovery.json",
             after=("eradicate",), role="child", child="retrain_from_clean_data",
             conf_from="eradicate.retrain_conf", siem_phase="recover", event="model_recovered",
             alias="retrain"),
        Step("report", f"{P}:report", "RS.CO", "HTML/JSON/Markdown report with deadlines and taxonomy",
             output="report", after=("retrain_from_clean_data",), role="report", siem_phase="report",
             event="report_published"),
    ),
)
