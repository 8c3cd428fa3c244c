"""SageMakerTarget against the extended moto server over real HTTP (see conftest for what was extended)."""

from __future__ import annotations

import time

import pytest

from aiir.errors import BadInput, TargetError
from aiir.targets.sagemaker import SageMakerTarget, check_applied
from tests.sagemaker.conftest import REGION, make_model, target, unique

WRITES = ("sagemaker:UpdateEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities", "sagemaker:AddTags",
          "sagemaker:DeleteTags", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
          "sagemaker:CreateModel")


def variants(sm, ep):
    return {v["VariantName"]: v for v in sm.describe_endpoint(EndpointName=ep)["ProductionVariants"]}


def test_isolate_shifts_weights_and_capacities_then_settles(sim, aws, deployed):
    sm, ep = aws["sagemaker"], deployed["endpoint"]
    before = deployed["target"].describe()
    assert before.settled and before.fallback_version == "1"
    assert {r.version: r.share for r in before.routes} == {"2": 1.0, "1": 0.0}
    t = target(sim, ep, model_name=deployed["model"], wait=False)
    state = t.isolate(reason="incident INC-7: suspected data poisoning (batch #005)")
    # the update was accepted, the endpoint is still applying it: not settled, and it says what is pending
    assert not state.settled and state.pending.startswith("endpoint Updating")
    assert sm.describe_endpoint(EndpointName=ep)["EndpointStatus"] == "Updating"
    settled = t.wait_settled(timeout=20, poll=0.1)
    check_applied(settled)
    assert settled.mode == "isolated" and settled.serving_versions == ["1"]
    assert {r.version: r.share for r in settled.routes} == {"2": 0.0, "1": 1.0}
    live = variants(sm, ep)
    # weights AND capacities were sent: neither variant lost its two instances
    assert live["v1"]["CurrentWeight"] == 1.0 and live["v2"]["CurrentWeight"] == 0.0
    assert live["v1"]["CurrentInstanceCount"] == 2 and live["v2"]["CurrentInstanceCount"] == 2
    assert settled.reason == "incident INC-7: suspected data poisoning _batch _005_"  # tag values: AWS's character set
    calls = [c for c in t.api_calls if c == "sagemaker:UpdateEndpointWeightsAndCapacities"]
    assert calls == ["sagemaker:UpdateEndpointWeightsAndCapacities"]


def test_isolate_again_changes_nothing(sim, deployed):
    t = deployed["target"]
    t.isolate(reason="first")
    again = target(sim, deployed["endpoint"], model_name=deployed["model"])
    state = again.isolate(reason="retry of the Airflow task")
    assert state.mode == "isolated" and state.serving_versions == ["1"]
    assert not [c for c in again.api_calls if c in WRITES], again.api_calls


def test_silent_rollback_of_a_weight_shift_is_caught(sim, aws, deployed):
    sim.arm_silent_rollback("UpdateEndpointWeightsAndCapacities")
    t = deployed["target"]
    with pytest.raises(TargetError) as err:
        t.isolate(reason="incident")
    msg = str(err.value)
    assert "did not keep the change" in msg
    # both values are named: what aiir asked for and what SageMaker reports
    assert "'v1': 1.0" in msg and "'v2': 1.0" in msg and "FailureReason" in msg
    state = t.describe()
    assert state.settled and state.serving_versions == ["2"]
    assert state.extra["intent_mismatch"]["expected"]["weights"] == {"v1": 1.0, "v2": 0.0}
    with pytest.raises(TargetError):
        check_applied(state.to_dict())  # what the deferrable operator does with the trigger event alone


def test_isolate_by_config_switch_and_its_silent_rollback(sim, aws):
    """No variant serves last-known-good: a new config with only v1, UpdateEndpoint, re-read."""
    sm = aws["sagemaker"]
    model = unique("fraud")
    for v in ("1", "2"):
        make_model(sm, f"{model}-v{v}", v)
    t = target(sim, f"{model}-ep", model_name=model, keep_fallback_variant=False, fallback_version="1")
    t.rollback("2", reason="deploy")  # creates the endpoint
    old_cfg = sm.describe_endpoint(EndpointName=f"{model}-ep")["EndpointConfigName"]
    sim.arm_silent_rollback("UpdateEndpoint")
    with pytest.raises(TargetError) as err:
        t.isolate(reason="incident")
    assert old_cfg in str(err.value) and "-aiir-isolate-" in str(err.value)
    # the second try (the Airflow retry) goes through and is verified the same way
    state = t.isolate(reason="incident, retried")
    assert state.serving_versions == ["1"] and state.extra["endpoint_config_name"] != old_cfg
    assert "intent_mismatch" not in state.extra


def test_rollback_makes_a_new_config_and_never_edits_one_in_use(sim, aws, deployed):
    sm, ep, t = aws["sagemaker"], deployed["endpoint"], deployed["target"]
    in_use = sm.describe_endpoint(EndpointName=ep)["EndpointConfigName"]
    snapshot_before = sm.describe_endpoint_config(EndpointConfigName=in_use)["ProductionVariants"]
    state = t.rollback("1", reason="back to v1")
    new_cfg = state.extra["endpoint_config_name"]
    assert new_cfg != in_use and state.serving_versions == ["1"] and state.mode == "serving"
    assert sm.describe_endpoint_config(EndpointConfigName=in_use)["ProductionVariants"] == snapshot_before
    again = target(sim, ep, model_name=deployed["model"])
    state2 = again.rollback("1", reason="retry")
    assert state2.extra["endpoint_config_name"] == new_cfg
    assert not [c for c in again.api_calls if c in WRITES]


def test_canary_then_promote_or_take_off(sim, aws, deployed):
    sm, t = aws["sagemaker"], deployed["target"]
    make_model(sm, f"{deployed['model']}-v3", "3")
    state = t.canary("3", 0.1, reason="canary v3")
    assert {r.version: r.share for r in state.routes} == {"2": 0.9, "1": 0.0, "3": 0.1}
    cfg = state.extra["endpoint_config_name"]
    state = t.canary("3", 0.25)  # already on the endpoint: a weight shift, same config
    assert state.extra["endpoint_config_name"] == cfg and dict((r.version, r.share) for r in state.routes)["3"] == 0.25
    state = t.canary("3", 0.0)  # rolled back: no traffic to v3
    assert state.serving_versions == ["2"]
    state = t.canary("3", 1.0)  # promoted: v3 is the primary of a new config
    assert state.serving_versions == ["3"] and state.extra["endpoint_config_name"] != cfg


def test_restore_puts_back_what_served_before_containment(sim, aws, deployed):
    t = deployed["target"]
    t.isolate(reason="incident")
    state = t.restore(reason="false alarm")
    assert state.mode == "serving" and state.serving_versions == ["2"] and state.reason == "false alarm"
    assert state.extra["restore"] is None
    assert t.restore().serving_versions == ["2"]  # idempotent


def test_quarantine_switches_to_the_quarantine_config(sim, aws, deployed):
    sm, ep = aws["sagemaker"], deployed["endpoint"]
    with pytest.raises(TargetError, match="quarantine_endpoint_config"):
        deployed["target"].isolate(quarantine=True)
    make_model(sm, f"{deployed['model']}-refuse", "quarantine")
    sm.create_endpoint_config(EndpointConfigName=f"{deployed['model']}-quarantine", ProductionVariants=[
        {"VariantName": "refuse", "ModelName": f"{deployed['model']}-refuse", "InitialInstanceCount": 1,
         "InstanceType": "ml.t2.medium", "InitialVariantWeight": 1.0}])
    t = target(sim, ep, model_name=deployed["model"], quarantine_endpoint_config=f"{deployed['model']}-quarantine")
    state = t.isolate(quarantine=True, reason="quarantine")
    assert state.mode == "quarantined" and state.serving_versions == ["quarantine"]
    state = t.restore()
    assert state.mode == "serving" and state.serving_versions == ["2"]


def test_block_clients_is_not_a_sagemaker_capability(deployed):
    assert "block_clients" not in SageMakerTarget.capabilities
    assert "rate_limit" not in SageMakerTarget.capabilities
    with pytest.raises(TargetError, match="cannot refuse or throttle individual clients"):
        deployed["target"].block_clients(["merchant-17"])


def test_throttling_is_retried_by_botocore(sim, deployed):
    sim.calls(clear=True)
    sim.inject("UpdateEndpointWeightsAndCapacities", "ThrottlingException", count=3)
    state = deployed["target"].isolate(reason="incident under throttling")
    assert state.serving_versions == ["1"]
    seen = [c for c in sim.calls() if c["action"] == "UpdateEndpointWeightsAndCapacities"]
    assert [c["injected"] for c in seen] == [True, True, True, False]
    assert [c["status"] for c in seen] == [400, 400, 400, 200]


def test_5xx_is_retried_and_what_still_fails_leaves_a_known_state(sim, deployed):
    sim.inject("DescribeEndpoint", "ServiceUnavailable", status=503, count=2)
    assert deployed["target"].describe().serving_versions == ["2"]
    t = target(sim, deployed["endpoint"], model_name=deployed["model"], max_attempts=2)
    sim.inject("UpdateEndpointWeightsAndCapacities", "InternalFailure", status=500, count=5)
    t0 = time.monotonic()
    with pytest.raises(TargetError) as err:
        t.isolate(reason="incident")
    assert "UpdateEndpointWeightsAndCapacities failed after 2 attempt(s) (InternalFailure" in str(err.value)
    assert time.monotonic() - t0 < 20
    sim.clear_faults()
    state = t.describe()  # the endpoint reads as it is: serving v2, not marked isolated, no stale intent
    assert state.mode == "serving" and state.serving_versions == ["2"] and "intent_mismatch" not in state.extra
    assert state.extra["restore"] is None


def test_last_known_good_from_the_model_registry(sim, aws):
    """Approved model packages: the newest approved one the endpoint was not serving is last-known-good;
    its model is created from the package (CreateModel) when isolation needs it."""
    sm = aws["sagemaker"]
    group = unique("fraud-pkg")
    sm.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for _ in range(2):
        arns.append(sm.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus="Approved",
            InferenceSpecification={"Containers": [{"Image": "img:1", "ModelDataUrl": "s3://models/m.tar.gz"}],
                                    "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
        )["ModelPackageArn"])
    assert arns[1].endswith("/2")
    make_model(sm, f"{group}-m2", "2", package_arn=arns[1])
    sm.create_endpoint_config(EndpointConfigName=f"{group}-cfg", ProductionVariants=[
        {"VariantName": "primary", "ModelName": f"{group}-m2", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    sm.create_endpoint(EndpointName=f"{group}-ep", EndpointConfigName=f"{group}-cfg")
    t = target(sim, f"{group}-ep", model_name=group, model_package_group=group, execution_role_arn=None)
    before = t.describe()
    assert before.serving_versions == ["2"] and before.fallback_version == "1"
    state = t.isolate(reason="incident")
    assert state.serving_versions == ["1"] and state.fallback_version == "1"
    assert "sagemaker:CreateModel" in t.api_calls
    created = sm.describe_model(ModelName=f"{group}-v1")
    assert created["PrimaryContainer"]["ModelPackageName"] == arns[0]


def test_unknown_endpoint_is_bad_input(sim):
    with pytest.raises(BadInput, match="no SageMaker endpoint named 'nope-ep'"):
        target(sim, "nope-ep").describe()


def test_options_from_an_aws_connection_and_the_registry(sim):
    opts = SageMakerTarget.options_from_connection(
        login="AKIA", password="secret", extra={"region_name": "eu-west-1", "endpoint_url": sim.url,
                                                "config_kwargs": {"retries": {"mode": "adaptive", "max_attempts": 3}},
                                                "fallback_variant": "v1", "unrelated": 1})
    assert opts == {"region": "eu-west-1", "endpoint_url": sim.url, "retry_mode": "adaptive", "max_attempts": 4,
                    "fallback_variant": "v1", "aws_access_key_id": "AKIA", "aws_secret_access_key": "secret"}
    from aiir.targets import get_target, list_targets

    t = get_target("sagemaker", "x-ep", region=REGION)
    assert isinstance(t, SageMakerTarget) and t.wait and t.retry_mode == "standard" and t.max_attempts == 8
    row = next(r for r in list_targets() if r["kind"] == "sagemaker")
    assert row["available"] and row["default_conn_id"] == "aws_default" and "block_clients" not in row["capabilities"]
    with pytest.raises(BadInput, match="retry_mode"):
        SageMakerTarget("x", retry_mode="hand-loop")


def test_a_new_version_gets_a_model_from_the_data_template(sim, aws, deployed):
    """What the clean retrain's promote needs: a version no SageMaker model serves yet."""
    sm, model = aws["sagemaker"], deployed["model"]
    with pytest.raises(BadInput, match="no SageMaker model serves version 4"):
        deployed["target"].rollback("4")
    t = target(sim, deployed["endpoint"], model_name=model,
               model_data_url_template="s3://models/{model}/{version}/model.tar.gz")
    assert t.rollback("4", reason="promote clean v4").serving_versions == ["4"]
    created = sm.describe_model(ModelName=f"{model}-v4")["PrimaryContainer"]
    assert created["ModelDataUrl"] == f"s3://models/{model}/4/model.tar.gz"
    assert created["Environment"]["AIIR_MODEL_VERSION"] == "4"
    assert created["Image"] == sm.describe_model(ModelName=f"{model}-v2")["PrimaryContainer"]["Image"]
