"""The playbook conf: every malformed field is refused with its name, before any task acts."""

from __future__ import annotations

import pytest

from aiir.errors import BadInput
from aiir.incident import add_event, from_check, save, timeline, validate_conf


def test_defaults_fill_and_id_generated(aiir_home):
    rec = validate_conf({})
    assert rec.model_name == "fraud-detector" and rec.target_kind == "local"
    assert rec.incident_id.startswith("INC-") and rec.detected_at.endswith("Z")


@pytest.mark.parametrize("conf, field, words", [
    ({"target_kind": "azure"}, "conf.target_kind", "got 'azure'"),
    ({"severity": "urgent"}, "conf.severity", "expected one of"),
    ({"dry_run": "yes"}, "conf.dry_run", "expected true or false"),
    ({"detected_at": "yesterday"}, "conf.detected_at", "ISO-8601"),
    ({"detected_at": "2026-11-25T03:00:00"}, "conf.detected_at", "no timezone"),
    ({"incident_id": "../../etc"}, "conf.incident_id", "letters, digits"),
    ({"model_name": " "}, "conf.model_name", "must not be empty"),
    ({"regimes": ["gdpr", "ccpa"]}, "conf.regimes", "unknown value 'ccpa'"),
    ({"findings": ["drift"]}, "conf.findings[0]", "'kind'"),
    ({"check_dir": "/nonexistent/dir"}, "conf.check_dir", "does not exist"),
    ({"modelname": "x"}, "conf.modelname", "unknown field"),
])
def test_malformed_conf_names_the_field(aiir_home, conf, field, words):
    with pytest.raises(BadInput) as exc:
        validate_conf(conf)
    assert exc.value.where == field
    assert words in exc.value.problem


def test_not_an_object():
    with pytest.raises(BadInput, match="expected a JSON object"):
        validate_conf(["model_name"])


def test_from_check_and_idempotent_timeline(aiir_home, tmp_path):
    result = {"status": "incident", "severity": "critical", "checked_at": "2026-11-25T03:00:00Z",
              "findings": [{"kind": "label_shift", "severity": "critical", "atlas": ["AML.T0020"],
                            "owasp": ["ML02"]}], "suspect_sources": ["partner_feed_c"]}
    rec = from_check(result, model_name="fraud-detector", target_kind="local", target_name="fraud-detector",
                     check_dir=tmp_path)
    assert rec.severity == "critical" and rec.opened_by == "data_integrity_check"
    assert rec.suspect_sources == ["partner_feed_c"] and rec.atlas == ["AML.T0020"]
    save(rec)
    save(rec)
    add_event(rec, "contained", actor="t")
    add_event(rec, "contained", actor="t")
    events = [e["event"] for e in timeline(rec)]
    assert events == ["detected", "state:open", "contained"]
    assert timeline(rec)[0]["at"] == "2026-11-25T03:00:00.000Z"
