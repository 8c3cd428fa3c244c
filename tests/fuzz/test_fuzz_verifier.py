"""Fuzzing the bundle verifier: a sealed bundle, copied and tampered with in generated ways (bytes flipped,
files truncated, removed, added or replaced by links, custody lines edited, dropped, duplicated or
reordered, the manifest or signature rewritten). Every tampered copy fails verification naming a problem
(or is refused as not a bundle at all, exit 2) — never an exception, never INTACT; the original bundle is
untouched and still verifies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiir.errors import BadInput
from aiir.evidence import EvidenceStore, load_or_create_signing_key, verify_bundle
from tests.fuzz._budget import MIN_PER_AREA, count, fuzz_settings, timed, total

AREA = "bundle verifier"
METADATA = ["manifest.json", "manifest.sig", "public_key.pem", "custody.jsonl"]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz-home")
    old = os.environ.get("AIIR_HOME")
    os.environ["AIIR_HOME"] = str(home)
    src = home / "src"
    (src / "model").mkdir(parents=True)
    (src / "model" / "MLmodel").write_text("flavors: {}\n")
    (src / "model" / "w.bin").write_bytes(os.urandom(5000))
    (src / "train.csv").write_text("a,b\n1,2\n")
    b = EvidenceStore(home / "evidence", fsync=False).open_bundle("INC-FUZZ", actor="fuzz")
    b.add_tree(src / "model", "model", category="model")
    b.add_file(src / "train.csv", "data/train.csv", category="training_data")
    b.seal(load_or_create_signing_key())
    b.record("exported", to="tape")
    assert verify_bundle(b.path, record=False).ok
    yield b.path
    if old is None:
        os.environ.pop("AIIR_HOME", None)
    else:
        os.environ["AIIR_HOME"] = old


def files_in(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in files_in(root)}


def tree(root: Path) -> dict[str, tuple]:
    """Everything verification could see: each entry's kind and bytes (or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", p.read_bytes())
    return out


def tail_cut_after_sealing(now: dict, pristine: dict) -> bool:
    rest = {k: v for k, v in now.items() if k != "custody.jsonl"}
    if rest != {k: v for k, v in pristine.items() if k != "custody.jsonl"} or "custody.jsonl" not in now:
        return False
    if now["custody.jsonl"][0] != "file":
        return False
    new, old = now["custody.jsonl"][-1], pristine["custody.jsonl"][-1]
    if new == old or not old.startswith(new) or not new.endswith(b"\n"):
        return False
    return any(json.loads(line).get("action") == "sealed" for line in new.splitlines())


op = st.sampled_from(["flip", "truncate", "append", "delete", "add", "symlink", "custody_edit", "custody_drop",
                      "custody_dup", "custody_swap", "custody_junk", "manifest_field", "manifest_junk",
                      "sig_junk", "files_is_a_file", "dir_for_file"])


def mutate(root: Path, kind: str, draw) -> bool:
    """Apply one tampering; returns False if it was not applicable (nothing changed)."""
    targets = [p for p in files_in(root)]
    if kind in ("flip", "truncate", "append", "delete", "symlink", "dir_for_file"):
        if not targets:
            return False
        p = targets[draw(st.integers(0, len(targets) - 1))]
        data = p.read_bytes()
        if kind == "flip":
            if not data:
                return False
            i = draw(st.integers(0, len(data) - 1))
            p.write_bytes(data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:])
        elif kind == "truncate":
            if not data:
                return False
            p.write_bytes(data[:draw(st.integers(0, len(data) - 1))])
        elif kind == "append":
            p.write_bytes(data + draw(st.binary(min_size=1, max_size=40)))
        elif kind == "delete":
            p.unlink()
        elif kind == "symlink":
            p.unlink()
            p.symlink_to("/etc/hostname")
        else:
            p.unlink()
            p.mkdir()
        return True
    if kind == "add":
        where = draw(st.sampled_from(["files/extra.bin", "files/model/extra.py", "extra-at-root", ".staging/x"]))
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes(draw(st.binary(max_size=30)))
        return True
    if kind == "files_is_a_file":
        if not (root / "files").is_dir() or (root / "files").is_symlink():
            return False
        shutil.rmtree(root / "files")
        (root / "files").write_text("not a folder")
        return True
    c = root / "custody.jsonl"
    if kind.startswith("custody") and c.is_file():
        lines = c.read_bytes().splitlines()
        if not lines:
            return False
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "custody_edit":
            try:
                e = json.loads(lines[i])
            except ValueError:
                return False
            if not isinstance(e, dict) or not e:
                return False
            key = draw(st.sampled_from(sorted(e)))
            new = draw(st.one_of(st.text(max_size=10), st.integers(), st.none()))
            if e[key] == new:
                return False
            e[key] = new
            lines[i] = json.dumps(e, sort_keys=True, separators=(",", ":")).encode()
        elif kind == "custody_drop":
            del lines[i]
        elif kind == "custody_dup":
            lines.insert(i, lines[i])
        elif kind == "custody_swap":
            j = draw(st.integers(0, len(lines) - 1))
            if lines[i] == lines[j]:
                return False
            lines[i], lines[j] = lines[j], lines[i]
        else:
            junk = draw(st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b))
            if junk == lines[i]:
                return False
            lines[i] = junk
        c.write_bytes(b"".join(x + b"\n" for x in lines))
        return True
    m = root / "manifest.json"
    if kind == "manifest_field" and m.is_file():
        try:
            doc = json.loads(m.read_bytes())
        except ValueError:
            return False
        if not isinstance(doc, dict) or not doc:
            return False
        key = draw(st.sampled_from(sorted(doc)))
        new = draw(st.one_of(st.text(max_size=10), st.integers(), st.none(), st.lists(st.integers(), max_size=2)))
        if doc[key] == new:
            return False
        doc[key] = new
        m.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
        return True
    if kind == "manifest_junk" and m.exists():
        m.write_bytes(draw(st.binary(max_size=80)))
        return True
    if kind == "sig_junk" and (root / "manifest.sig").exists():
        old = (root / "manifest.sig").read_bytes()
        new = draw(st.binary(max_size=80))
        if new == old:
            return False
        (root / "manifest.sig").write_bytes(new)
        return True
    return False


def test_every_tampered_copy_fails_with_a_named_problem(sealed, tmp_path):
    original = snapshot(sealed)
    pristine = tree(sealed)
    n = {"i": 0}

    @fuzz_settings(240)
    @given(ops=st.lists(op, min_size=1, max_size=3), data=st.data())
    def one(ops, data):
        n["i"] += 1
        copy = tmp_path / f"c{n['i']}"
        shutil.copytree(sealed, copy, symlinks=True)
        for p in [copy, *copy.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, 0o700 if p.is_dir() else 0o600)
        applied = [k for k in ops if mutate(copy, k, data.draw)]
        now = tree(copy)
        changed = applied if now != pristine else []  # two flips of one byte can cancel out
        if changed and tail_cut_after_sealing(now, pristine):
            # the documented limit (docs/evidence.md): a log cut short after the 'sealed' entry is consistent
            assert verify_bundle(copy, record=False).ok
            count(AREA, "tail of the custody log cut after sealing (documented limit: intact)")
            shutil.rmtree(copy, ignore_errors=True)
            return
        try:
            res = verify_bundle(copy, record=False)
        except BadInput as exc:  # e.g. manifest and custody log both gone: not a bundle any more
            assert "not an aiir evidence bundle" in str(exc) or "not a folder" in str(exc), exc
            count(AREA, "not a bundle (exit 2)")
        else:
            if changed:
                assert not res.ok, (changed, res.messages)
                problems = [m for m in res.messages if not m.startswith("NOTE")]
                assert problems, (changed, res.messages)
                count(AREA, "tampering detected")
            else:
                assert res.ok, res.messages
                count(AREA, "no-op, intact")
        shutil.rmtree(copy, ignore_errors=True)

    with timed(AREA):
        one()
    assert snapshot(sealed) == original
    assert verify_bundle(sealed, record=False).ok
    assert total(AREA) >= MIN_PER_AREA
