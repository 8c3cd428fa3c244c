"""The target's snapshot sealed into evidence: every file of its tree (SageMaker writes endpoint-configs/,
model-data/ and data-capture/ folders; round 2 sealed only the top-level files), taken once and re-added
identically on a retry, and a target that cannot be read recorded loudly instead of failing the step."""

from __future__ import annotations

import json

from aiir.evidence import EvidenceStore, load_or_create_signing_key, verify_bundle
from aiir.playbook import seal_target_snapshot


class FolderTarget:
    """A target whose snapshot is a nested folder, as SageMakerTarget.snapshot writes one."""

    ref = "test:nested"

    def __init__(self):
        self.calls = 0

    def snapshot(self, dest):
        self.calls += 1
        (dest / "data-capture" / "v2" / "2026").mkdir(parents=True)
        (dest / "endpoint.json").write_text(json.dumps({"EndpointName": "m", "call": self.calls}))
        (dest / "data-capture" / "v2" / "2026" / "a.jsonl").write_text('{"x": 1}\n')
        return [dest / "endpoint.json", dest / "data-capture" / "v2" / "2026" / "a.jsonl"]


class DownTarget:
    ref = "test:down"

    def snapshot(self, dest):
        raise ConnectionError("connection refused")


def _files(bundle_path):
    return sorted(f["path"] for f in json.loads((bundle_path / "manifest.json").read_text())["files"])


def test_every_file_of_the_tree_is_sealed_once_and_a_retry_reuses_it(aiir_home, tmp_path):
    store = EvidenceStore(tmp_path / "evidence")
    key = load_or_create_signing_key()
    target, snap = FolderTarget(), tmp_path / "incident" / "target_snapshot"
    snap.parent.mkdir()
    b = store.open_bundle("INC-1", actor="test")
    assert seal_target_snapshot(b, target, snap) is None
    # a retried task (the first try died before sealing): the same bytes again, no second snapshot
    assert seal_target_snapshot(b, target, snap) is None
    b.seal(key)
    assert target.calls == 1
    assert _files(b.path) == ["files/target/data-capture/v2/2026/a.jsonl", "files/target/endpoint.json"]
    assert verify_bundle(b.path).ok


def test_an_unreadable_target_is_recorded_and_the_rest_preserved(aiir_home, tmp_path):
    store = EvidenceStore(tmp_path / "evidence")
    b = store.open_bundle("INC-2", actor="test")
    err = seal_target_snapshot(b, DownTarget(), tmp_path / "target_snapshot")
    assert err == "ConnectionError: connection refused"
    b.add_json({"ok": True}, "incident.json", category="incident", description="record")
    b.seal(load_or_create_signing_key())
    assert _files(b.path) == ["files/incident.json", "files/target/snapshot_error.json"]
    sealed = json.loads((b.path / "files" / "target" / "snapshot_error.json").read_text())
    assert sealed == {"error": err, "target": "test:down"}
