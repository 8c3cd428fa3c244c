"""No half-written state (issue #10 item 5): every unwritable --out is one clear line and exit 2, special
files are named as what they are, and a failed command leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import run_aiir


@pytest.fixture
def tables(tmp_path):
    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    lines = ["amount,kind,label"] + [f"{i % 97},{'ab'[i % 2]},{i % 5 == 0:d}" for i in range(120)]
    ref.write_text("\n".join(lines) + "\n")
    cur.write_text("\n".join(lines) + "\n")
    return ref, cur


def check(tables, *extra):
    ref, cur = tables
    return run_aiir("check", "--reference", str(ref), "--current", str(cur), "--no-html", *extra, timeout=300)


def one_clear_line(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("aiir: error:")]
    assert len(errors) == 1, r.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def test_out_under_a_file(aiir_home, tables, tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("x")
    one_clear_line(check(tables, "--out", str(f / "sub" / "dir")), "is a regular file, not a folder")
    one_clear_line(check(tables, "--out", str(f)), "must be a folder, got a regular file")
    assert f.read_text() == "x"


def test_out_under_proc(aiir_home, tables):
    one_clear_line(check(tables, "--out", "/proc/aiir-no-such/out"), "--out is not writable")
    assert not os.path.exists("/proc/aiir-no-such")


def test_out_is_a_fifo_and_inputs_that_are_fifos(aiir_home, tables, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_clear_line(check(tables, "--out", str(fifo)), "FIFO (named pipe)")
    ref, _ = tables
    cur_fifo = tmp_path / "cur.csv.fifo.csv"
    os.mkfifo(cur_fifo)
    r = run_aiir("check", "--reference", str(ref), "--current", str(cur_fifo), "--out", str(tmp_path / "o"),
                 "--no-html", timeout=120)  # must not block reading the pipe
    one_clear_line(r, "FIFO (named pipe)")
    assert not (tmp_path / "o").exists()


def test_out_in_an_immutable_folder(aiir_home, tables, tmp_path):
    d = tmp_path / "locked"
    d.mkdir()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        one_clear_line(check(tables, "--out", str(d / "out")), "--out is not writable")
        one_clear_line(check(tables, "--out", str(d)), "--out is not writable")
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    assert os.listdir(d) == []


def test_out_on_a_read_only_folder_as_a_normal_user(aiir_home, tables, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes to 0500 folders; the immutable-folder test covers this as root")
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    one_clear_line(check(tables, "--out", str(d / "out")), "--out is not writable")


def test_a_failed_check_leaves_nothing_behind(aiir_home, tables, tmp_path):
    new = tmp_path / "new" / "deeper"
    one_clear_line(check(tables, "--out", str(new), "--label-column", "nope"), "--label-column 'nope'")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("keep me")
    one_clear_line(check(tables, "--out", str(kept), "--source-column", "nope"), "--source-column 'nope'")
    assert os.listdir(kept) == ["mine.txt"]
    r = check(tables, "--out", str(kept))  # and a good run still works there
    assert r.returncode in (0, 3), r.stderr[-2000:]
    assert (kept / "findings.json").exists() and (kept / "mine.txt").read_text() == "keep me"
