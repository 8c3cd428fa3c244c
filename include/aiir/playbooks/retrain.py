"""Post-incident retraining from clean data: clean set, validation, same-recipe training, gate, an
optional human approval, promotion. Run by the poisoning playbook's ``retrain_from_clean_data`` step."""

from __future__ import annotations

from aiir.playbooks.base import Playbook, Step

R = "aiir.recovery"

PLAYBOOK = Playbook(
    kind="retrain_from_clean_data",
    dag_id="retrain_from_clean_data",
    title="Retrain from clean data",
    conf="retrain",
    tags=("recover", "retrain"),
    extra={"run_suffix": "retrain"},
    steps=(
        Step("build_clean_set", f"{R}:build_clean_set", "RC.RP", "Clean training set (quarantine removed, "
             "digests verified)", output="retrain/clean_train.parquet"),
        Step("validate_clean_set", f"{R}:validate_clean_set", "RC.RP", "Great Expectations validation "
             "against the trusted reference", after=("build_clean_set",)),
        Step("train_candidate", f"{R}:train_candidate", "RC.RP", "Same recipe, MLflow lineage",
             output="retrain/candidate.json", after=("validate_clean_set",)),
        Step("gate", f"{R}:gate", "RC.RP", "Holdout within tolerance of last-known-good and not fooled by the "
             "poisoned rows", output="retrain/gate.json", after=("train_candidate",), retries=0,
             siem_phase="recover", event="candidate_passed_gate"),
        Step("await_approval", f"{R}:approval_request", "RC.RP", "A person approves the promotion "
             "(when require_approval)", after=("gate",), role="approval", when=f"{R}:approval_needed"),
        Step("canary", f"{R}:canary", "RC.RP", "Live canary at canary_share: compare with last-known-good, "
             "keep or roll back by itself", output="retrain/canary.json", after=("await_approval",),
             siem_phase="recover", event="canary_judged", mutates=True),
        Step("promote", f"{R}:promote", "RC.RP", "Move champion/last-known-good, serve the new version, lift "
             "containment", output="recovery.json", after=("canary",), siem_phase="recover",
             event="model_promoted", mutates=True, asset="promoted_models"),
    ),
)
