"""Where aiir keeps its state, and every environment variable that moves it.

One project-local state folder (``AIIR_HOME``, default ``<repo>/.aiir``) holds everything the
embedded defaults need. Every location can be overridden on its own:

=========================  =========================================  ==============================
variable                   default                                    what lives there
=========================  =========================================  ==============================
``AIIR_HOME``              ``<repo>/.aiir``                           the state folder itself
``AIRFLOW_HOME``           ``$AIIR_HOME/airflow``                     airflow.cfg, SQLite metadata DB, logs
``MLFLOW_TRACKING_URI``    ``sqlite:///$AIIR_HOME/mlflow/mlflow.db``  MLflow runs and model registry
``AIIR_MLFLOW_ARTIFACTS``  ``$AIIR_HOME/mlflow/artifacts``            MLflow artifact root
``AIIR_EVIDENCE_DIR``      ``$AIIR_HOME/evidence``                    write-once evidence store
``AIIR_DATA_DIR``          ``$AIIR_HOME/data``                        demo datasets and arriving batches
``AIIR_GATEWAY_DIR``       ``$AIIR_HOME/gateway``                     gateway state, token, decision log
``AIIR_GATEWAY_URL``       ``http://127.0.0.1:8080``                  where the local gateway listens
``AIIR_THRESHOLDS``        (built-in ``detect/thresholds.toml``)      detection thresholds and severities
``AIIR_INTEGRITY_SCHEDULE``  ``@hourly``                              cron of data_integrity_check, or ``none``
``AIIR_EVASION_SCHEDULE``  ``*/15 * * * *`` (``none`` under runtime)  cron of scan_evasion, or ``none``
``AIIR_AIRFLOW_URL``       (unset: the guard triggers nothing)       Airflow the gateway's guard triggers the
                                                                      evasion playbook on; credentials
                                                                      ``AIIR_AIRFLOW_TOKEN``, or
                                                                      ``AIIR_AIRFLOW_USERNAME`` and
                                                                      ``AIIR_AIRFLOW_PASSWORD``
``AIIR_EVASION_DAG``       ``incident_adversarial_evasion``           the DAG the guard triggers
``AIIR_ACTOR``             the OS user                                who is recorded in custody and registry logs
``AIIR_TRUSTED_KEYS``      ``$AIIR_HOME/keys/trusted_keys``           key fingerprints ``aiir verify`` trusts
``AIIR_SIEM_HEC_URL``      (unset: events only written to files)      Splunk HEC endpoint to forward events to
``AIIR_SIEM_HEC_TOKEN``    —                                          its token (``AIIR_SIEM_HEC_INDEX``,
                                                                      ``AIIR_SIEM_HEC_INSECURE=1`` optional)
``AIIR_PAGER_WEBHOOK``     (unset)                                    URL POSTed when containment fails or
                                                                      needs a person's decision
``AIIR_REQUIRE_APPROVAL``  ``0``                                      ``1``: incidents the check opens by
                                                                      itself wait for a person before promotion
``AIIR_MODEL_LOCK_TIMEOUT`` ``600``                                   seconds a step waits for its model's lock
``AIIR_ARTIFACT_KEY``      ``$AIIR_HOME/keys/artifact_ecdsa_p256.pem``  ECDSA key signing models and datasets
                                                                      (``AIIR_ARTIFACT_KEY_PASSWORD``)
``AIIR_ARTIFACT_CERT``     (unset: key-based signing)                 signing certificate (a user's PKI), with
                                                                      ``AIIR_ARTIFACT_CERT_CHAIN``
``AIIR_ARTIFACT_TRUST_CHAIN``  (``AIIR_ARTIFACT_CERT_CHAIN``)         CA certificates verification trusts
``AIIR_ARTIFACT_TRUSTED_KEYS`` (aiir's own artifact key)              more public keys verification trusts
``AIIR_ARTIFACT_INTEGRITY_SCHEDULE`` ``@daily``                       cron of artifact_integrity, or ``none``
``AIIR_ARTIFACT_REGISTRATION_GRACE_S`` ``600``                        a version younger than this without its
                                                                      signature tag is still being registered
``AIIR_ALLOW_UNSIGNED_MODELS`` ``0``                                  ``1``: the verified loader accepts versions
                                                                      with a digest but no signature (knowingly)
``AIIR_ALLOW_UNRECORDED_MODELS`` ``0``                                ``1``: it accepts models with neither
``AIIR_DECISION_LOG_KEY``  (unset: features stored in clear)          AES-256 key of ``--encrypt-fields``
                                                                      (or ``AIIR_DECISION_LOG_KEY_FILE``)
``AIIR_AUDIT_ACCESS_LOG``  ``$AIIR_HOME/audit/access-log.jsonl``      who traced which decision, when
``AIIR_LINEAGE_URL``       (unset: file transport)                    OpenLineage HTTP endpoint (Marquez …);
                                                                      ``AIIR_LINEAGE_FILE``, ``AIIR_LINEAGE=off``
``AIIR_CODE_VERSION``      (the git commit of this checkout)          code version recorded at training
``AIIR_AIRFLOW_START_TIMEOUT`` ``600``                                seconds the demo and tests wait for the
                                                                      Airflow they start to answer
``AIIR_AIRFLOW_API_TIMEOUT`` ``30``                                   seconds per REST call to that Airflow
=========================  =========================================  ==============================

SIEM events are always written to ``$AIIR_HOME/siem/ecs.jsonl`` and ``hec.jsonl``; the evidence signing
key defaults to ``$AIIR_HOME/keys/evidence_ed25519.pem`` (0600), or the Airflow connection
``aiir_evidence_signing``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


@dataclass(frozen=True)
class Paths:
    home: Path
    airflow_home: Path
    mlflow_db: Path
    mlflow_artifacts: Path
    evidence: Path
    data: Path
    gateway: Path

    @property
    def mlflow_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    @property
    def incidents(self) -> Path:
        return self.home / "incidents"

    @property
    def checks(self) -> Path:
        return self.home / "checks"

    @property
    def registry_log(self) -> Path:
        return self.home / "registry-log.jsonl"

    def ensure(self) -> Paths:
        """Create every folder. A state folder created here is owner-only (0700), and the folders that
        hold copies of decisions and evidence (incidents, evidence, gateway) are kept owner-only: like the
        decision log's own folder, whatever a file's mode, others cannot reach it."""
        new_home = not self.home.exists()
        for p in (self.home, self.airflow_home, self.mlflow_db.parent, self.mlflow_artifacts,
                  self.evidence, self.data, self.gateway, self.incidents, self.checks):
            p.mkdir(parents=True, exist_ok=True)
        for p in ((self.home,) if new_home else ()) + (self.evidence, self.gateway, self.incidents):
            try:
                if p.stat().st_uid == os.getuid() and p.stat().st_mode & 0o077:
                    os.chmod(p, 0o700)
            except OSError:
                pass  # a filesystem without modes: nothing to tighten
        return self


def paths() -> Paths:
    """Resolve every location now (environment variables are read on each call)."""
    home = _path("AIIR_HOME", REPO_ROOT / ".aiir")
    return Paths(
        home=home,
        airflow_home=_path("AIRFLOW_HOME", home / "airflow"),
        mlflow_db=home / "mlflow" / "mlflow.db",
        mlflow_artifacts=_path("AIIR_MLFLOW_ARTIFACTS", home / "mlflow" / "artifacts"),
        evidence=_path("AIIR_EVIDENCE_DIR", home / "evidence"),
        data=_path("AIIR_DATA_DIR", home / "data"),
        gateway=_path("AIIR_GATEWAY_DIR", home / "gateway"),
    )


def gateway_url() -> str:
    return os.environ.get("AIIR_GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/")
