"""Every ATLAS id and name aiir uses exists in the official ATLAS.yaml (5.6), spelled as there."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiir.knowledge import taxonomy

ATLAS_YAML = Path(__file__).resolve().parents[3] / "shared/reference/mitre-atlas/ATLAS.yaml"


@pytest.fixture(scope="module")
def atlas():
    if not ATLAS_YAML.is_file():
        pytest.skip(f"official ATLAS.yaml not found at {ATLAS_YAML} (the shared reference checkout beside the repo)")
    import yaml

    doc = yaml.safe_load(ATLAS_YAML.read_text(encoding="utf-8"))
    matrix = next(m for m in doc["matrices"] if m["id"] == "ATLAS")
    return {
        "version": str(doc.get("version")),
        "techniques": {t["id"]: t for t in matrix["techniques"]},
        "mitigations": {m["id"]: m for m in matrix["mitigations"]},
    }


def test_version_matches(atlas):
    assert atlas["version"] == taxonomy.ATLAS_VERSION


@pytest.mark.parametrize("tid", sorted(taxonomy.ATLAS_TECHNIQUES))
def test_technique_id_and_name(atlas, tid):
    entry = taxonomy.ATLAS_TECHNIQUES[tid]
    assert tid in atlas["techniques"], f"{tid} is not a technique in ATLAS {atlas['version']}"
    official = atlas["techniques"][tid]
    assert entry.name == official["name"], f"{tid}: aiir says {entry.name!r}, ATLAS says {official['name']!r}"
    if "." in tid.removeprefix("AML."):  # a sub-technique: its parent must exist too
        assert official.get("subtechnique-of") == tid.rsplit(".", 1)[0]
        assert official["subtechnique-of"] in atlas["techniques"]
    assert entry.url == f"https://atlas.mitre.org/techniques/{tid}"


@pytest.mark.parametrize("mid", sorted(taxonomy.ATLAS_MITIGATIONS))
def test_mitigation_id_and_name(atlas, mid):
    entry = taxonomy.ATLAS_MITIGATIONS[mid]
    assert mid in atlas["mitigations"], f"{mid} is not a mitigation in ATLAS {atlas['version']}"
    official = atlas["mitigations"][mid]
    assert entry.name == official["name"], f"{mid}: aiir says {entry.name!r}, ATLAS says {official['name']!r}"
    assert entry.url == f"https://atlas.mitre.org/mitigations/{mid}"


def test_finding_kind_map_only_references_defined_ids(atlas):
    for kind, m in taxonomy.FINDING_KIND_MAP.items():
        for tid in m["atlas"]:
            assert tid in taxonomy.ATLAS_TECHNIQUES, f"{kind}: {tid} not in taxonomy.ATLAS_TECHNIQUES"
            assert tid in atlas["techniques"], f"{kind}: {tid} not in ATLAS"
        for mid in m["mitigations"]:
            assert mid in taxonomy.ATLAS_MITIGATIONS, f"{kind}: {mid} not in taxonomy.ATLAS_MITIGATIONS"
            assert mid in atlas["mitigations"], f"{kind}: {mid} not in ATLAS"
        for oid in m["owasp"]:
            assert oid in taxonomy.OWASP_ML_TOP10, f"{kind}: {oid} not in taxonomy.OWASP_ML_TOP10"


def test_mitigations_are_not_deprecated(atlas):
    for mid in taxonomy.ATLAS_MITIGATIONS:
        assert "deprecated" not in str(atlas["mitigations"][mid].get("name", "")).lower()
    for tid in taxonomy.ATLAS_TECHNIQUES:
        assert atlas["techniques"][tid].get("object-type") == "technique"
