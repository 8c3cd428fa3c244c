"""MLflow scoring formats → validated rows, and the errors for everything else."""

from __future__ import annotations

import json

import pytest

from aiir.gateway.scoring import ColumnSpec, InputError, InputSchema, parse_body

COLS = ["amount", "merchant_risk", "hour"]
SCHEMA = InputSchema([ColumnSpec(c, "double") for c in COLS], max_rows=50)
ROWS = [[10.0, 0.5, 3.0], [300.0, 0.9, 23.0]]


def j(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": COLS, "data": ROWS}},
    {"dataframe_split": {"data": ROWS}},  # columns omitted: signature order
    {"dataframe_split": {"columns": ["hour", "amount", "merchant_risk"], "data": [[3, 10, 0.5], [23, 300, 0.9]],
                         "index": [7, 8]}},
    {"dataframe_records": [dict(zip(COLS, r, strict=True)) for r in ROWS]},
    {"inputs": [dict(zip(COLS, r, strict=True)) for r in ROWS]},
    {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLS)}},
    {"instances": ROWS},
    {"inputs": ROWS, "params": {}},
])
def test_json_formats_give_the_same_rows(body):
    cols, rows = parse_body(j(body), "application/json", SCHEMA)
    assert cols == COLS
    assert rows == ROWS
    assert all(type(v) is float for r in rows for v in r)


def test_single_row_shortcuts():
    assert parse_body(j({"inputs": {"amount": 1, "merchant_risk": 0.1, "hour": 2}}), "application/json",
                      SCHEMA)[1] == [[1.0, 0.1, 2.0]]
    assert parse_body(j({"inputs": [1, 0.1, 2]}), "application/json; charset=utf-8", SCHEMA)[1] == [[1.0, 0.1, 2.0]]


@pytest.mark.parametrize("text", [
    "amount,merchant_risk,hour\n10,0.5,3\n300,0.9,23\n",
    "hour,amount,merchant_risk\r\n3,10,0.5\r\n23,300,0.9",
    "10,0.5,3\n300,0.9,23",  # SageMaker style: no header
])
def test_csv_with_and_without_header(text):
    cols, rows = parse_body(text.encode(), "text/csv", SCHEMA)
    assert cols == COLS and rows == ROWS


def test_frame_has_signature_dtypes():
    schema = InputSchema([ColumnSpec("a", "double"), ColumnSpec("n", "long"), ColumnSpec("f", "boolean"),
                          ColumnSpec("s", "string"), ColumnSpec("o", "double", required=False)])
    cols, rows = parse_body(j({"dataframe_records": [{"a": 1, "n": 2.0, "f": True, "s": "x"}]}),
                            "application/json", schema)
    assert rows == [[1.0, 2, True, "x", None]]
    df = schema.to_frame(cols, rows)
    assert [str(t) for t in df.dtypes] == ["float64", "int64", "bool", "object", "float64"]
    df2 = SCHEMA.to_frame(COLS, ROWS)
    assert list(df2.columns) == COLS and str(df2.dtypes.iloc[0]) == "float64"


@pytest.mark.parametrize("body,ctype,code,words", [
    (b"", "application/json", "empty_body", "empty request body"),
    (b"{not json", "application/json", "bad_json", "not valid JSON"),
    (b'\xff\xfe{"a"', "application/json", "bad_json", ""),
    (b'{"inputs": [[1, NaN, 2]]}', "application/json", "bad_json", "NaN is not allowed"),
    (b"[1, 2, 3]", "application/json", "bad_format", "must be an object"),
    (j({"data": ROWS}), "application/json", "bad_format", "found keys: data"),
    (j({"inputs": ROWS, "instances": ROWS}), "application/json", "bad_format", "exactly one"),
    (j({"inputs": ROWS, "params": {"x": 1}}), "application/json", "bad_format", "params"),
    (j({"dataframe_split": {"columns": COLS}}), "application/json", "bad_format", "'data'"),
    (j({"dataframe_split": {"columns": COLS, "data": [], "foo": 1}}), "application/json", "bad_format", "foo"),
    (j({"dataframe_split": {"columns": ["amount", "hour"], "data": [[1, 2]]}}), "application/json",
     "missing_columns", "missing column(s): merchant_risk"),
    (j({"dataframe_split": {"columns": COLS + ["is_fraud"], "data": [[1, 2, 3, 0]]}}), "application/json",
     "unexpected_columns", "unexpected column(s): is_fraud"),
    (j({"dataframe_split": {"columns": ["amount", "amount", "hour"], "data": [[1, 2, 3]]}}), "application/json",
     "duplicate_columns", "duplicate column(s): amount"),
    (j({"dataframe_split": {"columns": COLS, "data": [[1, 2]]}}), "application/json", "missing_columns",
     "row 0 has 2 values, expected 3"),
    (j({"inputs": [[1, 2, 3, 4]]}), "application/json", "unexpected_columns", "signature order"),
    (j({"dataframe_records": [{"amount": "12", "merchant_risk": 0.1, "hour": 1}]}), "application/json",
     "bad_type", "column 'amount' (double), row 0: expected a number, got \"12\""),
    (j({"dataframe_records": [{"amount": 1, "merchant_risk": True, "hour": 1}]}), "application/json",
     "bad_type", "merchant_risk"),
    (j({"dataframe_records": [{"amount": 1, "merchant_risk": None, "hour": 1}]}), "application/json",
     "bad_type", "required"),
    (j({"dataframe_records": [{"amount": 1, "merchant_risk": [1], "hour": 1}]}), "application/json",
     "bad_type", "expected a number"),
    (j({"dataframe_records": [{"amount": 1, "merchant_risk": 1, "hour": 1}, {"amount": 1, "hour": 1}]}),
     "application/json", "missing_columns", "item 1"),
    (j({"dataframe_records": []}), "application/json", "bad_format", "non-empty"),
    (j({"inputs": ROWS * 30}), "application/json", "too_many_rows", "limit is 50"),
    (b"amount,merchant_risk,hour\n1,abc,3", "text/csv", "bad_type", "row 0: expected a number, got \"abc\""),
    (b"amount,merchant_risk,hour\n1,inf,3", "text/csv", "bad_type", "finite"),
    (b"amount,hour\n1,3", "text/csv", "missing_columns", "merchant_risk"),
    (b"amount,merchant_risk,hour\n", "text/csv", "empty_body", "header but no rows"),
    (b"1,2", "text/csv", "missing_columns", "row 0 has 2 values"),
    (b"a=1&b=2", "application/x-www-form-urlencoded", "unsupported_media_type", "text/csv"),
    (b'{"inputs": [[' + b"9" * 5000 + b', 1, 2]]}', "application/json", "bad_json", "not usable JSON"),
    (b'{"inputs": [[1e400, 1, 2]]}', "application/json", "bad_type", "finite"),
    (b'{"inputs": [[' + b"9" * 400 + b', 1, 2]]}', "application/json", "bad_type", "double range"),
])
def test_bad_input_is_refused_with_a_named_problem(body, ctype, code, words):
    with pytest.raises(InputError) as ei:
        parse_body(body, ctype, SCHEMA)
    assert ei.value.code == code
    assert words in ei.value.message
    assert 400 <= ei.value.status < 500


def test_deeply_nested_json_is_refused_not_crashing():
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InputError):
        parse_body(body, "application/json", SCHEMA)


def test_no_signature_needs_column_names():
    schema = InputSchema(None)
    assert parse_body(j({"dataframe_split": {"columns": ["x"], "data": [[1]]}}), "application/json", schema) == \
        (["x"], [[1]])
    with pytest.raises(InputError, match="column names are required"):
        parse_body(j({"inputs": [[1, 2]]}), "application/json", schema)
