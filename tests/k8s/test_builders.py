"""The pure builders of every manifest and patch (no cluster)."""

from __future__ import annotations

import json

import pytest

from aiir.targets import k8s_builders as kb


def _svc(selector, rv="41", ann=None):
    return {"metadata": {"name": "m", "resourceVersion": rv, "annotations": ann or {}}, "spec": {"selector": selector}}


def _vs(route, rv="7", ann=None, extra=None):
    h = {"name": "default", "timeout": "2s", "route": route, **(extra or {})}
    return {"metadata": {"name": "m", "resourceVersion": rv, "annotations": ann or {}}, "spec": {"hosts": ["m"],
                                                                                               "http": [h]}}


def test_every_patch_carries_the_resource_version_it_was_built_from():
    svc = _svc({"app": "m", "track": "primary"}, rv="41")
    rec = kb.containment_record("isolated", reason="r", at="t", fallback_version="1")
    assert kb.isolate_service_patch(svc, {"app": "m", "track": "fallback"}, rec)["metadata"]["resourceVersion"] == "41"
    vs = _vs([{"destination": {"host": "m", "subset": "v2"}, "weight": 100}], rv="7")
    assert kb.isolate_vs_patch(vs, "m", "v1", rec)["metadata"]["resourceVersion"] == "7"
    dep = {"metadata": {"resourceVersion": "99", "annotations": {}}, "spec": {"template": {}}}
    assert kb.scale_patch(dep, 0)["metadata"]["resourceVersion"] == "99"
    ops = kb.rollback_patch(dep, {"metadata": {"labels": {}}}, {"reason": "x"})
    assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "99"}


def test_service_isolation_switches_the_selector_whole_and_remembers_the_old_one_once():
    svc = _svc({"app": "m", "track": "primary", "tier": "web"})
    rec = kb.containment_record("isolated", reason="incident 7", at="2026-12-01T00:00:00Z", fallback_version="1")
    patch = kb.isolate_service_patch(svc, {"app": "m", "track": "fallback"}, rec)
    # merge patch: a key the new selector lacks is deleted (None), not left behind
    assert patch["spec"]["selector"] == {"app": "m", "track": "fallback", "tier": None}
    ann = patch["metadata"]["annotations"]
    assert json.loads(ann[kb.A_PREVIOUS_SELECTOR]) == {"app": "m", "track": "primary", "tier": "web"}
    assert json.loads(ann[kb.A_CONTAINMENT])["mode"] == "isolated"
    # isolating again keeps the original previous selector, not the isolated one
    again = _svc({"app": "m", "track": "fallback"}, ann=ann)
    ann2 = kb.isolate_service_patch(again, {"app": "m", "track": "fallback"}, rec)["metadata"]["annotations"]
    assert json.loads(ann2[kb.A_PREVIOUS_SELECTOR]) == {"app": "m", "track": "primary", "tier": "web"}


def test_service_restore_reverses_exactly_and_retargets_a_version_after_a_rollback():
    ann = {kb.A_PREVIOUS_SELECTOR: json.dumps({"app": "m", "aiir.io/version": "2"}), kb.A_CONTAINMENT: "{}"}
    svc = _svc({"app": "m", "aiir.io/version": "1"}, ann=ann)
    p = kb.restore_service_patch(svc)
    assert p["spec"]["selector"] == {"app": "m", "aiir.io/version": "2"}
    assert p["metadata"]["annotations"] == {kb.A_PREVIOUS_SELECTOR: None, kb.A_CONTAINMENT: None}
    p = kb.restore_service_patch(svc, retarget=("aiir.io/version", "2", "3"))
    assert p["spec"]["selector"]["aiir.io/version"] == "3"
    assert kb.restore_service_patch(_svc({"app": "m"})) is None  # nothing to undo


def test_virtualservice_isolation_keeps_every_rule_but_its_destinations():
    vs = _vs([{"destination": {"host": "m", "subset": "v2"}, "weight": 90},
              {"destination": {"host": "m", "subset": "v3"}, "weight": 10}], extra={"retries": {"attempts": 2}})
    rec = kb.containment_record("isolated", reason="r", at="t", fallback_version="1")
    p = kb.isolate_vs_patch(vs, "m", "v1", rec)
    (rule,) = p["spec"]["http"]
    assert rule["route"] == [{"destination": {"host": "m", "subset": "v1"}, "weight": 100}]
    assert rule["timeout"] == "2s" and rule["retries"] == {"attempts": 2} and rule["name"] == "default"
    assert json.loads(p["metadata"]["annotations"][kb.A_PREVIOUS_HTTP]) == vs["spec"]["http"]
    assert kb.vs_routes({"spec": p["spec"]}) == [("v1", 100)]


def test_virtualservice_restore_returns_the_old_rules_unless_the_primary_moved():
    old = [{"name": "default", "route": [{"destination": {"host": "m", "subset": "v2"}, "weight": 100}]}]
    vs = _vs([{"destination": {"host": "m", "subset": "v1"}, "weight": 100}],
             ann={kb.A_PREVIOUS_HTTP: json.dumps(old), kb.A_CONTAINMENT: "{}"})
    assert kb.restore_vs_patch(vs, host="m", primary_subset="v2")["spec"]["http"] == old
    moved = kb.restore_vs_patch(vs, host="m", primary_subset="v3", primary_changed=True)
    assert moved["spec"]["http"][0]["route"] == [{"destination": {"host": "m", "subset": "v3"}, "weight": 100}]
    assert moved["spec"]["http"][0]["name"] == "default"
    assert kb.restore_vs_patch(_vs([]), host="m", primary_subset="v2") is None


@pytest.mark.parametrize("share,weights", [(0.0, (100, 0)), (0.1, (90, 10)), (0.333, (67, 33)), (1.0, (0, 100)),
                                           (1.7, (0, 100)), (-1, (100, 0))])
def test_canary_weights_are_integers_summing_to_100(share, weights):
    assert kb.split_weights(share) == weights and sum(weights) == 100


def test_vs_routes_reads_weights_and_a_single_unweighted_destination():
    assert kb.vs_routes(_vs([{"destination": {"host": "m", "subset": "v2"}}])) == [("v2", 100)]
    assert kb.vs_routes({"spec": {}}) == []


def test_quarantine_policy_denies_all_traffic_to_the_model_pods():
    np_ = kb.quarantine_network_policy("aiir-quarantine-m", "ns", {"app.kubernetes.io/name": "m"}, reason="r <b>",
                                       at="t", model="m")
    assert np_["kind"] == "NetworkPolicy" and np_["metadata"]["namespace"] == "ns"
    assert np_["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "m"}},
                           "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    assert np_["metadata"]["labels"][kb.L_MANAGED_BY] == "aiir"
    assert json.loads(np_["metadata"]["annotations"][kb.A_CONTAINMENT])["reason"] == "r <b>"


def test_block_policy_denies_the_named_clients_by_header():
    ap = kb.block_authorization_policy("aiir-block-m", "ns", {"app": "m"}, ["b", "a"], header="x-client-id",
                                       reason="r", at="t", model="m")
    assert ap["spec"]["action"] == "DENY"
    assert ap["spec"]["rules"] == [{"when": [{"key": "request.headers[x-client-id]", "values": ["a", "b"]}]}]
    assert kb.blocked_clients(ap) == ["a", "b"] and kb.blocked_clients(None) == []


def test_rollback_template_is_the_revision_template_with_this_deployments_identity():
    rs_tpl = {"metadata": {"labels": {"app": "m", "track": "fallback", "aiir.io/version": "1",
                                      kb.POD_TEMPLATE_HASH: "abc"}, "creationTimestamp": None},
              "spec": {"containers": [{"name": "model", "image": "r/m@sha256:" + "1" * 64}]}}
    dep = {"metadata": {"resourceVersion": "5", "annotations": {kb.K8S_REVISION: "3"}},
           "spec": {"selector": {"matchLabels": {"app": "m", "track": "primary"}}, "template": {}}}
    tpl = kb.rollback_template(rs_tpl, dep)
    assert tpl["metadata"]["labels"] == {"app": "m", "track": "primary", "aiir.io/version": "1"}
    assert "creationTimestamp" not in tpl["metadata"]
    assert rs_tpl["metadata"]["labels"]["track"] == "fallback"  # the input is not changed
    ops = kb.rollback_patch(dep, tpl, {"reason": "incident 9", "version": "1"})
    assert ops[1] == {"op": "replace", "path": "/spec/template", "value": tpl}
    ann = ops[2]["value"]
    assert ann[kb.K8S_REVISION] == "3" and ann[kb.K8S_CHANGE_CAUSE] == "aiir: incident 9"
    assert json.loads(ann[kb.A_ROLLBACK])["version"] == "1"
    assert kb.same_template(tpl, {**tpl, "metadata": {"labels": {**tpl["metadata"]["labels"],
                                                                 kb.POD_TEMPLATE_HASH: "zzz"}}})


def test_set_image_template_names_the_container():
    dep = {"spec": {"template": {"metadata": {"labels": {}},
                                 "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}}}
    assert kb.set_image_template(dep, None, "z")["spec"]["containers"][0]["image"] == "z"
    assert kb.set_image_template(dep, "b", "z")["spec"]["containers"][1]["image"] == "z"
    with pytest.raises(KeyError):
        kb.set_image_template(dep, "c", "z")


@pytest.mark.parametrize("status,done,what", [
    ({"observedGeneration": 1}, False, "not yet observed"),
    ({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 2, "availableReplicas": 1}, False, "1 of 2 updated"),
    ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3, "availableReplicas": 2}, False, "1 old replicas"),
    ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}, False, "1 of 2 updated replicas available"),
    ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}, True, ""),
    # scaled to 0 (quarantine): the status still counts the pod the controller has not removed yet
    ({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1, "want": 0}, False,
     "1 replicas still to scale down"),
    ({"observedGeneration": 2, "want": 0}, True, ""),
])
def test_rollout_status_judges_like_kubectl(status, done, what):
    status = dict(status)
    dep = {"metadata": {"name": "m", "generation": 2}, "spec": {"replicas": status.pop("want", 2)}, "status": status}
    got_done, why = kb.rollout_status(dep)
    assert got_done is done and what in why


def test_selectors():
    assert kb.common_selector({"a": "1", "t": "p"}, {"a": "1", "t": "f"}) == {"a": "1"}
    assert kb.selects({"a": "1"}, {"a": "1", "b": "2"}) and not kb.selects({}, {"a": "1"})
    assert kb.label_selector({"b": "2", "a": "1"}) == "a=1,b=2"


def test_snapshot_strips_managed_fields_only():
    obj = {"metadata": {"name": "m", "managedFields": [{"manager": "x"}]}, "spec": {"a": 1}}
    assert kb.strip_for_snapshot(obj) == {"metadata": {"name": "m"}, "spec": {"a": 1}}
    assert "managedFields" in obj["metadata"]
