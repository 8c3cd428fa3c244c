"""Fuzzing `aiir check`'s readers and options: every malformed table, threshold file, contract, registry
or option combination is answered by one BadInput naming the field or file (exit 2 from the CLI), never a
traceback; the inputs are left untouched and a failed run leaves no output folder behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from aiir.errors import BadInput
from aiir.tabular import read_table
from tests.fuzz._budget import MIN_PER_AREA, count, fuzz_settings, timed, total

AREA = "check readers and options"
GOOD = "amount,kind,label\n" + "".join(f"{i % 97},{'ab'[i % 2]},{int(i % 5 == 0)}\n" for i in range(60))

text_junk = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(str.encode),
    st.sampled_from([b"", b"\n", b",,,\n,,\n", b"a,b\n1\n1,2,3\n", b"\xff\xfe\x00\x00", b"PAR1" + b"\0" * 20 + b"PAR1",
                     b"a\n" * 3, b'"unterminated\n1,2', b"col\n" + b"x" * 5000, GOOD.encode()[:37],
                     GOOD.replace(",", ";").encode(), b"\x00" * 64]),
    st.lists(st.lists(st.one_of(st.text(max_size=8), st.integers(), st.floats(allow_nan=True)), max_size=5),
             max_size=6).map(lambda rows: "\n".join(",".join(map(str, r)) for r in rows).encode()),
)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_readers_answer_every_malformed_table(tmp_path):
    @fuzz_settings(160)
    @given(data=text_junk, suffix=st.sampled_from([".csv", ".parquet", ".pq", ".txt", ""]))
    def one(data, suffix):
        p = tmp_path / f"t{suffix}"
        p.write_bytes(data)
        before = sha(p)
        try:
            df = read_table(p, what="reference")
            assert isinstance(df, pd.DataFrame) and df.shape[0] > 0 and df.shape[1] > 0
            count(AREA, "read")
        except BadInput as exc:
            assert str(p) in str(exc) and exc.problem
            count(AREA, "BadInput")
        assert sha(p) == before  # nothing changed on the input

    with timed(AREA):
        one()


toml_junk = st.one_of(st.text(max_size=200), st.sampled_from([
    "[drift\n", "[drift]\np_value = 'x'\n", "[drift]\npsi = -1\n", "[nope]\nx = 1\n", "= = =",
    "[severity]\nlabel_shift = 'apocalyptic'\n", "[drift]\nmin_rows = 1e400\n", "\x00"]))
json_junk = st.one_of(
    st.text(max_size=200),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                 lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)),
                 max_leaves=8).map(json.dumps),
    st.sampled_from(['{"artifacts": [{"name": 1}]}', '{"artifacts": "x"}', '{"expectations": [{}]}',
                     '{"expectations": [{"type": "expect_nothing"}]}', "[]", "null", '{"a": 1, "a": 2}']))
column = st.one_of(st.none(), st.sampled_from(["amount", "kind", "label", "nope", "", " "]), st.text(max_size=20))


def test_options_are_validated_before_any_work(tmp_path):
    from aiir.cli import app

    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    ref.write_text(GOOD)
    cur.write_text(GOOD)
    digests = (sha(ref), sha(cur))
    runner = CliRunner()

    @fuzz_settings(60)
    @given(which=st.sampled_from(["thresholds", "contract", "registry", "columns"]),
           toml=toml_junk, js=json_junk, label=column, source=column,
           ignore=st.lists(st.one_of(column.filter(lambda c: c is not None), st.just("amount")), max_size=2))
    def one(which, toml, js, label, source, ignore):
        out = tmp_path / "out" / "run"
        args = ["check", "--reference", str(ref), "--current", str(cur), "--out", str(out), "--no-html"]
        if which == "thresholds":
            (tmp_path / "t.toml").write_text(toml)
            args += ["--thresholds", str(tmp_path / "t.toml")]
        elif which in ("contract", "registry"):
            (tmp_path / f"{which}.json").write_text(js)
            args += [f"--{which}", str(tmp_path / f"{which}.json")]
        else:
            if label is not None:
                args += ["--label-column", label]
            if source is not None:
                args += ["--source-column", source]
            for c in ignore:
                args += ["--ignore-column", c]
        r = runner.invoke(app, args, catch_exceptions=True)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
        assert r.exit_code in (0, 2, 3), (args, r.exit_code, r.output[-800:])
        if r.exit_code == 2:
            errors = [ln for ln in r.output.splitlines() if ln.startswith("aiir: error:")]
            assert len(errors) == 1 and "Traceback" not in r.output, r.output[-800:]
            assert not out.exists(), "a failed check left its output folder behind"
            count(AREA, "exit 2")
        else:
            assert (out / "findings.json").exists()
            count(AREA, f"exit {r.exit_code}")
        assert (sha(ref), sha(cur)) == digests
        shutil.rmtree(tmp_path / "out", ignore_errors=True)

    with timed(AREA):
        one()


def test_check_area_budget():
    assert total(AREA) >= MIN_PER_AREA, total(AREA)


