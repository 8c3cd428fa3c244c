"""MITRE ATLAS (v5.6) techniques and mitigations, OWASP ML Top 10 (2023) and NIST phases used by aiir.

Only the entries aiir suggests are listed; ``tests/knowledge`` cross-checks every id and name against
the official ATLAS.yaml so a renamed or retired technique fails the build.
"""

from __future__ import annotations

from dataclasses import dataclass

ATLAS_VERSION = "5.6.0"


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    url: str


def _atlas(kind: str, id_: str, name: str) -> Entry:
    path = "techniques" if kind == "T" else "mitigations"
    return Entry(id_, name, f"https://atlas.mitre.org/{path}/{id_}")


ATLAS_TECHNIQUES: dict[str, Entry] = {e.id: e for e in (
    _atlas("T", "AML.T0020", "Poison Training Data"),
    _atlas("T", "AML.T0019", "Publish Poisoned Datasets"),
    _atlas("T", "AML.T0010", "AI Supply Chain Compromise"),
    _atlas("T", "AML.T0010.002", "Data"),  # AI Supply Chain Compromise: Data
    _atlas("T", "AML.T0010.003", "Model"),  # AI Supply Chain Compromise: Model
    _atlas("T", "AML.T0018", "Manipulate AI Model"),
    _atlas("T", "AML.T0018.000", "Poison AI Model"),
    _atlas("T", "AML.T0059", "Erode Dataset Integrity"),
    _atlas("T", "AML.T0031", "Erode AI Model Integrity"),
    _atlas("T", "AML.T0043", "Craft Adversarial Data"),
    _atlas("T", "AML.T0043.004", "Insert Backdoor Trigger"),
    _atlas("T", "AML.T0015", "Evade AI Model"),
    _atlas("T", "AML.T0040", "AI Model Inference API Access"),
    _atlas("T", "AML.T0024", "Exfiltration via AI Inference API"),
    _atlas("T", "AML.T0024.002", "Extract AI Model"),  # Exfiltration via AI Inference API: Extract AI Model
    _atlas("T", "AML.T0076", "Corrupt AI Model"),
    _atlas("T", "AML.T0048.000", "Financial Harm"),
)}

ATLAS_MITIGATIONS: dict[str, Entry] = {e.id: e for e in (
    _atlas("M", "AML.M0007", "Sanitize Training Data"),
    _atlas("M", "AML.M0014", "Verify AI Artifacts"),
    _atlas("M", "AML.M0013", "Code Signing"),
    _atlas("M", "AML.M0005", "Control Access to AI Models and Data at Rest"),
    _atlas("M", "AML.M0008", "Validate AI Model"),
    _atlas("M", "AML.M0025", "Maintain AI Dataset Provenance"),
    _atlas("M", "AML.M0024", "AI Telemetry Logging"),
    _atlas("M", "AML.M0015", "Adversarial Input Detection"),
    _atlas("M", "AML.M0004", "Restrict Number of AI Model Queries"),
    _atlas("M", "AML.M0019", "Control Access to AI Models and Data in Production"),
    _atlas("M", "AML.M0023", "AI Bill of Materials"),
    _atlas("M", "AML.M0003", "Model Hardening"),
)}

OWASP_ML_TOP10: dict[str, Entry] = {e.id: e for e in (
    Entry("ML01", "Input Manipulation Attack", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML01_2023-Input_Manipulation_Attack"),
    Entry("ML02", "Data Poisoning Attack", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML02_2023-Data_Poisoning_Attack"),
    Entry("ML03", "Model Inversion Attack", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML03_2023-Model_Inversion_Attack"),
    Entry("ML04", "Membership Inference Attack", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML04_2023-Membership_Inference_Attack"),
    Entry("ML05", "Model Theft", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML05_2023-Model_Theft"),
    Entry("ML06", "AI Supply Chain Attacks", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML06_2023-AI_Supply_Chain_Attacks"),
    Entry("ML07", "Transfer Learning Attack", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML07_2023-Transfer_Learning_Attack"),
    Entry("ML08", "Model Skewing", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML08_2023-Model_Skewing"),
    Entry("ML09", "Output Integrity Attack", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML09_2023-Output_Integrity_Attack"),
    Entry("ML10", "Model Poisoning", "https://owasp.org/www-project-machine-learning-security-top-10/docs/ML10_2023-Model_Poisoning"),
)}

# What each finding kind of `aiir check` suggests.
FINDING_KIND_MAP: dict[str, dict[str, tuple[str, ...]]] = {
    "schema": {"atlas": ("AML.T0059", "AML.T0010.002"), "owasp": ("ML02",),
               "mitigations": ("AML.M0007", "AML.M0025")},
    "drift": {"atlas": ("AML.T0020", "AML.T0059"), "owasp": ("ML02", "ML08"),
              "mitigations": ("AML.M0007", "AML.M0008")},
    "label_shift": {"atlas": ("AML.T0020",), "owasp": ("ML02", "ML08"),
                    "mitigations": ("AML.M0007", "AML.M0025")},
    "duplicates": {"atlas": ("AML.T0020", "AML.T0019"), "owasp": ("ML02",),
                   "mitigations": ("AML.M0007",)},
    "outliers": {"atlas": ("AML.T0020", "AML.T0043"), "owasp": ("ML02",),
                 "mitigations": ("AML.M0007",)},
    "source_anomaly": {"atlas": ("AML.T0020", "AML.T0010.002"), "owasp": ("ML02",),
                       "mitigations": ("AML.M0007", "AML.M0025")},
    "trigger": {"atlas": ("AML.T0020", "AML.T0018"), "owasp": ("ML02", "ML10"),
                "mitigations": ("AML.M0007",)},
    "integrity": {"atlas": ("AML.T0010.003", "AML.T0018", "AML.T0076"), "owasp": ("ML06", "ML10"),
                  "mitigations": ("AML.M0014", "AML.M0013", "AML.M0005")},
    "performance": {"atlas": ("AML.T0031", "AML.T0020"), "owasp": ("ML02", "ML10"),
                    "mitigations": ("AML.M0008",)},
    # `aiir scan-evasion` and the gateway's inline guard
    "evasion": {"atlas": ("AML.T0040", "AML.T0043", "AML.T0015"), "owasp": ("ML01",),
                "mitigations": ("AML.M0015", "AML.M0004", "AML.M0003")},
    # `aiir scan-evasion --labels`: decisions let through that delayed labels (chargebacks) marked positive
    "label_evasion": {"atlas": ("AML.T0015", "AML.T0043"), "owasp": ("ML01",),
                      "mitigations": ("AML.M0003", "AML.M0015")},
    "extraction": {"atlas": ("AML.T0040", "AML.T0024", "AML.T0024.002"), "owasp": ("ML05",),
                   "mitigations": ("AML.M0004", "AML.M0019", "AML.M0015")},
    # a registered model or dataset no longer matches its model-signing signature (aiir.audit)
    "artifact_tampering": {"atlas": ("AML.T0010", "AML.T0018"), "owasp": ("ML06", "ML10"),
                           "mitigations": ("AML.M0014", "AML.M0013", "AML.M0005")},
}

FINDING_KINDS = tuple(FINDING_KIND_MAP)


def suggest(kind: str) -> dict[str, list[str]]:
    """ATLAS technique ids, OWASP ids and ATLAS mitigation ids suggested by one finding kind."""
    m = FINDING_KIND_MAP[kind]
    return {"atlas": list(m["atlas"]), "owasp": list(m["owasp"]), "mitigations": list(m["mitigations"])}


# NIST SP 800-61r3 maps response onto the CSF 2.0 functions; aiir tags every task with one phase.
NIST_PHASES: dict[str, str] = {
    "detect": "DE — Detect (DE.CM, DE.AE)",
    "analyse": "RS.AN — Incident Analysis",
    "contain": "RS.MI — Incident Mitigation (containment)",
    "preserve": "RS.AN-03/RS.AN-07 — Analysis: evidence collected and integrity preserved",
    "eradicate": "RS.MI — Incident Mitigation (eradication)",
    "recover": "RC.RP — Incident Recovery Plan Execution",
    "report": "RS.CO — Incident Response Reporting and Communication",
    "lessons": "ID.IM — Improvement (lessons learned)",
}
