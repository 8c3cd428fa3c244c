"""Adversarial evasion and model extraction: detection over served decisions, the inline guard, hardening.

Light on purpose: numpy is the only third-party import at module level (the gateway loads
:mod:`aiir.evasion.guard` in its serving path); scipy, sklearn, pandas and the adversarial-robustness-toolbox
load inside the functions that need them.

=================  =============================================================================
module             what
=================  =============================================================================
``config``         thresholds (TOML, overridable), binomial critical counts, calibration
``profile``        the reference profile: scaling, Mahalanobis outlier model, saved as JSON
``scan``           ``aiir scan-evasion``: signals per client, per input cluster and across clients
``guard``          streaming per-client / per-cluster statistics inside the gateway's serving path
``trigger``        asynchronous Airflow REST trigger of the playbook (never blocks scoring)
``attacks``        real attacks with ART: HopSkipJump over HTTP, transfer attack from a surrogate
``harden``         adversarial retraining, robust-accuracy gate, canary redeploy with rollback
``playbook``       the steps of ``incident_adversarial_evasion``
=================  =============================================================================
"""

from __future__ import annotations

ATLAS_EVASION = ("AML.T0040", "AML.T0043", "AML.T0015")
ATLAS_EXTRACTION = ("AML.T0040", "AML.T0024")
OWASP_EVASION = ("ML01",)
OWASP_EXTRACTION = ("ML05",)
