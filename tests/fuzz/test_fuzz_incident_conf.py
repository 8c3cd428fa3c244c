"""Fuzzing the playbook conf (`aiir.incident.validate_conf`, which every REST trigger, DAG-to-DAG trigger and
`aiir incident open` goes through): each malformed conf is refused with one BadInput naming the field, a
conf it accepts is normalised (id safe as a folder name, time in UTC), and the input is not mutated."""

from __future__ import annotations

import copy
import json

from hypothesis import given
from hypothesis import strategies as st

from aiir.errors import BadInput
from aiir.incident import ID_RE, PARAM_SPECS, validate_conf
from tests.fuzz._budget import MIN_PER_AREA, count, fuzz_settings, timed, total

AREA = "incident conf"

scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30))
value = st.recursive(scalar, lambda c: st.one_of(st.lists(c, max_size=3),
                                                 st.dictionaries(st.text(max_size=8), c, max_size=3)), max_leaves=6)
field_values = {
    "incident_id": st.one_of(st.text(max_size=130), st.sampled_from(["../etc", "a/b", "ok-id-1", "", " ", "x" * 122])),
    "detected_at": st.one_of(st.text(max_size=40), st.sampled_from(
        ["2026-13-01T00:00:00Z", "2026-11-24T15:00:00+25:00", "yesterday", "2026-11-24", "1e9", "2026-11-24T15:00:00Z"])),
    "severity": st.one_of(st.sampled_from(["low", "medium", "high", "critical", "HIGH", ""]), value),
    "regimes": st.one_of(st.lists(st.sampled_from(["gdpr", "nis2", "eu_ai_act", "sec_8k", "hipaa", 1]), max_size=4),
                         value),
    "findings": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({"kind": st.text(max_size=10)}), value),
                                   max_size=3), value),
    "check_dir": st.one_of(st.text(max_size=40), st.sampled_from(["/nonexistent/x", "/tmp", "\0", ""])),
}


def conf_strategy():
    keys = st.sampled_from(sorted(PARAM_SPECS) + ["unknown_field", "incidentId", ""])
    return st.dictionaries(keys, st.one_of(value, *field_values.values()), max_size=6) | st.builds(
        dict, **{k: s for k, s in field_values.items()}) | value


def test_validate_conf_answers_everything():
    @fuzz_settings(400)
    @given(conf=conf_strategy())
    def one(conf):
        frozen = copy.deepcopy(conf)
        try:
            rec = validate_conf(conf, default_id="run-1", default_detected_at="2026-11-24T15:00:00Z")
        except BadInput as exc:
            assert exc.where == "conf" or exc.where.startswith("conf."), exc
            assert exc.problem and "Traceback" not in exc.problem
            count(AREA, "BadInput")
        else:
            assert ID_RE.match(rec.incident_id), rec.incident_id
            assert rec.detected_at.endswith("Z")
            json.dumps(rec.__dict__ if hasattr(rec, "__dict__") else {}, default=str)
            count(AREA, "accepted")
        assert conf == frozen or json.dumps(conf, default=str, sort_keys=True) == json.dumps(
            frozen, default=str, sort_keys=True)

    with timed(AREA):
        one()
    assert total(AREA) >= MIN_PER_AREA
