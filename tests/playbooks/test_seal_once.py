"""A preserve step retried after a crash (issue #10's scheduler kill -9): ``aiir.playbook.seal_once`` never
seals twice and never fails a retry whose first try got as far as sealing.

Two windows a kill can hit that the Airflow fault test (tests/e2e/test_poisoning_playbook_airflow.py)
cannot aim at reliably: after the seal but before the step wrote evidence.json (the retry found a new file
to add — triage.json, written meanwhile by the parallel triage step — and a sealed bundle refuses it: every
retry failed), and between writing the manifest and logging ``sealed``.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from aiir.errors import BadInput
from aiir.evidence import EvidenceStore, load_or_create_signing_key, verify_bundle
from aiir.evidence import bundle as bundle_mod
from aiir.playbook import seal_once


def _actions(b) -> Counter:
    return Counter(e["action"] for e in b.custody())


def _collector(workdir, calls: list):
    def collect(b):
        calls.append(b.context["try_number"])
        b.add_json({"incident_id": "INC-1"}, "incident.json", category="incident")
        for name in ("contain.json", "triage.json"):
            if (workdir / name).exists():
                b.add_file(workdir / name, f"playbook/{name}", category="playbook")
        return "collected"

    return collect


def test_a_retry_after_the_seal_adds_nothing_and_returns_the_sealed_manifest(aiir_home, tmp_path):
    store, key = EvidenceStore(tmp_path / "evidence", fsync=False), load_or_create_signing_key()
    work = tmp_path / "incident"
    work.mkdir()
    (work / "contain.json").write_text('{"mode": "isolated"}')
    calls: list = []
    first = store.open_bundle("INC-1", actor="airflow", context={"try_number": 1})
    manifest, out = seal_once(first, key, _collector(work, calls))
    assert out == "collected" and calls == [1]
    # try 1 is killed here, before evidence.json; the parallel triage step writes its output meanwhile
    (work / "triage.json").write_text('{"confirmed": true}')
    retry = store.open_bundle("INC-1", actor="airflow", context={"try_number": 2})
    with pytest.raises(BadInput, match="is sealed"):
        _collector(work, [])(retry)  # what the retry did before seal_once: it failed every try
    again, out = seal_once(retry, key, _collector(work, calls))
    assert again == manifest and out is None and calls == [1]
    assert _actions(retry) == {"opened": 1, "added": 2, "sealed": 1}
    assert [f["path"] for f in again["files"]] == ["files/incident.json", "files/playbook/contain.json"]
    assert verify_bundle(retry.path).ok


def test_a_seal_killed_before_its_custody_entry_is_finished_once(aiir_home, tmp_path, monkeypatch):
    store, key = EvidenceStore(tmp_path / "evidence", fsync=False), load_or_create_signing_key()
    work = tmp_path / "incident"
    work.mkdir()
    first = store.open_bundle("INC-2", actor="airflow", context={"try_number": 1})
    real_append = bundle_mod.Bundle._append

    def killed_at_sealed(self, action, **fields):
        if action == "sealed":
            raise SystemExit("killed")  # the manifest, signature and key are on disk; the entry is not
        return real_append(self, action, **fields)

    monkeypatch.setattr(bundle_mod.Bundle, "_append", killed_at_sealed)
    with pytest.raises(SystemExit):
        seal_once(first, key, _collector(work, []))
    monkeypatch.setattr(bundle_mod.Bundle, "_append", real_append)
    assert (first.path / "manifest.json").exists() and _actions(first)["sealed"] == 0
    calls: list = []
    retry = store.open_bundle("INC-2", actor="airflow", context={"try_number": 2})
    manifest, out = seal_once(retry, key, _collector(work, calls))
    assert calls == [] and out is None
    assert manifest == json.loads((retry.path / "manifest.json").read_bytes())
    entries = retry.custody()
    assert _actions(retry) == {"opened": 1, "added": 1, "sealed": 1}
    assert entries[-1]["action"] == "sealed" and entries[-1]["context"] == {"try_number": 2}
    assert seal_once(retry, key, _collector(work, calls))[0] == manifest and _actions(retry)["sealed"] == 1
    assert verify_bundle(retry.path).ok
