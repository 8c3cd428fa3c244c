"""Spreadsheet-safe CSV (issue #10 item 3): formula-looking text cells neutralised, numbers kept, 0600."""

from __future__ import annotations

import csv
import io
import stat

import pandas as pd
import pytest

from aiir.csvsafe import csv_text, neutralise, write_csv

EVIL = ["=HYPERLINK(\"http://evil\",\"click\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"]


@pytest.mark.parametrize("cell", EVIL)
def test_formula_cells_are_prefixed(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["ok", "", "a=b", "1-2", 3, -3.5, None, True])
def test_other_cells_are_untouched(cell):
    assert neutralise(cell) == cell


def test_write_csv_neutralises_every_text_cell_and_header(tmp_path):
    df = pd.DataFrame({"client_id": EVIL, "score": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5],
                       "=evil header": ["x"] * 6, "cat": pd.Series(EVIL, dtype="string")})
    p = write_csv(df, tmp_path / "out.csv")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["client_id", "score", "'=evil header", "cat"]
    for r, want in zip(rows[1:], EVIL, strict=True):
        assert r[0] == "'" + want and r[3] == "'" + want
        assert not r[1].startswith("'")  # numbers stay numbers
    assert rows[1][1] == "-0.5"
    assert not list(tmp_path.glob(".out.csv.*"))  # no temp file left


def test_rows_form_and_the_original_frame_is_not_changed():
    df = pd.DataFrame({"a": ["=1"]})
    csv_text(df)
    assert df["a"][0] == "=1"
    assert csv_text([["=1", 2]], header=["@h", "b"]) == "'@h,b\r\n'=1,2\r\n"
    back = pd.read_csv(io.StringIO(csv_text(pd.DataFrame({"a": ["x\ry", "=z"], "b": [1, None]}))))
    assert back["a"].tolist() == ["x\ry", "'=z"] and back["b"].isna().tolist() == [False, True]
