"""The human-readable drift report: Evidently 0.7 ``DataDriftPreset`` rendered to HTML on a sample.

Evidently is far too slow and memory-hungry for the decision on large data (see docs/benchmarks.md), so the
decision comes from :mod:`aiir.detect.drift`; this report is for people, on at most ``max_rows`` rows of
each side (deterministic sample), with the column types aiir inferred.

The report is made **safe to open** before it is written (:func:`make_report_safe`): Evidently embeds its
data (column names, categorical values, ...) as JSON in an inline ``<script>`` without escaping ``</``, so a
column named ``</script><script>...`` would run. Inside those JSON blocks ``<``, ``>`` and ``&`` are
rewritten as ``\\u003c``, ``\\u003e``, ``\\u0026`` (the same JSON value, but nothing the HTML parser can
see), and a Content-Security-Policy ``<meta>`` allows exactly the report's own inline scripts (by SHA-256)
and nothing else: no other script, no event-handler attribute, no network, no forms, no frames. If the
rendered page does not have the structure this relies on (another Evidently version), no report is
written and the check records why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

# = aiir.detect.signals.SEED (a test checks it): a literal, because ReportProcess runs this file as a plain
# script, without importing the aiir package (and the statistics libraries that brings in)
SEED = 20240601

if TYPE_CHECKING:
    import pandas as pd

# Evidently 0.7's file template (evidently/legacy/utils/dashboard.py: file_html_template). json.dumps never
# emits a raw newline, so these newline-anchored markers cannot be forged by the data inside the block.
_DATA_BLOCK = re.compile(r"<script>\n    var (metric_[0-9a-f]{32}) = ([^\n]*);\n"
                         r"    var additional_graphs_\1 = ([^\n]*);\n</script>\n")
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


class UnsafeReport(RuntimeError):
    """The rendered report cannot be made safe (its structure is not the one expected)."""


def script_safe_json(text: str) -> str:
    """JSON text with ``< > &`` (and U+2028/9) as ``\\u`` escapes: the same value, inert inside <script>.
    Outside string literals JSON has none of these characters, so the rewrite only touches strings."""
    return _JSON_ESCAPE_RE.sub(lambda m: _JSON_ESCAPES[m.group(0)], text)


def content_security_policy(script_hashes: list[str]) -> str:
    hashes = " ".join(f"'sha256-{h}'" for h in script_hashes)
    return ("default-src 'none'; "
            f"script-src {hashes}; "
            "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
            "connect-src 'none'; frame-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")


def make_report_safe(page: str) -> str:
    """Escape the data blocks of an Evidently 0.7 HTML report and add the CSP (see the module doc)."""
    blocks = list(_DATA_BLOCK.finditer(page))
    if len(blocks) != 1:
        raise UnsafeReport(f"expected one Evidently data block, found {len(blocks)}")
    m = blocks[0]
    dashboard_id, info, graphs = m.group(1), m.group(2), m.group(3)
    for name, text in (("dashboard", info), ("additional graphs", graphs)):
        try:
            json.loads(text)
        except ValueError as exc:
            raise UnsafeReport(f"the report's {name} data is not one JSON value ({exc})") from None
    safe_block = (f"<script>\n    var {dashboard_id} = {script_safe_json(info)};\n"
                  f"    var additional_graphs_{dashboard_id} = {script_safe_json(graphs)};\n</script>\n")
    page = page[:m.start()] + safe_block + page[m.end():]
    if page.count("<head>") != 1:
        raise UnsafeReport("expected one <head>")
    # Every remaining inline script is Evidently's own (template + bundled library): allow those by hash.
    found = list(_SCRIPT.finditer(page))
    outside = _SCRIPT.sub("", page)
    if not found or "<script" in outside.lower() or "</script" in outside.lower():
        raise UnsafeReport("unexpected <script> elements in the rendered report")
    scripts = [x.group(1) for x in found]
    hashes = sorted({base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode() for s in scripts})
    meta = (f'<meta http-equiv="Content-Security-Policy" content="{content_security_policy(hashes)}">\n'
            '        <meta name="referrer" content="no-referrer">')
    anchor = '<meta charset="UTF-8">' if page.count('<meta charset="UTF-8">') == 1 else "<head>"
    return page.replace(anchor, anchor + "\n        " + meta, 1)


def _samples(ref: pd.DataFrame, cur: pd.DataFrame, types: dict[str, str], max_rows: int):
    num = [c for c, t in types.items() if t == "numerical" and c in cur.columns]
    cat = [c for c, t in types.items() if t == "categorical" and c in cur.columns]
    cols = num + cat
    r = ref[cols].sample(n=max_rows, random_state=SEED) if len(ref) > max_rows else ref[cols]
    c = cur[cols].sample(n=max_rows, random_state=SEED) if len(cur) > max_rows else cur[cols]
    return num, cat, r, c


def drift_report_html(ref: pd.DataFrame, cur: pd.DataFrame, types: dict[str, str], out: Path,
                      *, max_rows: int = 5000) -> dict:
    """Write the report; returns {"path", "sampled", "reference_rows", "current_rows"}."""
    num, cat, r, c = _samples(ref, cur, types, max_rows)
    info = _render(num, cat, r, c, Path(out))
    return {**info, "sampled": len(ref) > max_rows or len(cur) > max_rows}


def _render(num: list[str], cat: list[str], r: pd.DataFrame, c: pd.DataFrame, out: Path) -> dict:
    cols = num + cat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
        snapshot = Report([DataDriftPreset(columns=cols)]).run(
            current_data=Dataset.from_pandas(c.reset_index(drop=True), data_definition=dd),
            reference_data=Dataset.from_pandas(r.reset_index(drop=True), data_definition=dd))
        page = make_report_safe(snapshot.get_html_str(as_iframe=False))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "reference_rows": len(r), "current_rows": len(c)}


# ------------------------------------------------------------------- rendering in a second process

class ReportProcess:
    """The report rendered by a fresh Python process while the check computes (``python -m aiir.detect.html``).

    Importing Evidently (~6 s of CPU) and rendering (~5 s) do not depend on the statistics; on a large batch
    they run on a second core instead of after them. The process gets only the two samples (Parquet files in
    a private temporary folder) and the column types; :meth:`result` waits for it and returns what
    :func:`drift_report_html` returns, or raises ``RuntimeError`` with the process's last error line.
    """

    def __init__(self, ref: pd.DataFrame, cur: pd.DataFrame, types: dict[str, str], out: Path,
                 *, max_rows: int = 5000):
        import subprocess
        import sys
        import tempfile

        num, cat, r, c = _samples(ref, cur, types, max_rows)
        self.sampled = len(ref) > max_rows or len(cur) > max_rows
        self._tmp = tempfile.TemporaryDirectory(prefix="aiir-report-")
        folder = Path(self._tmp.name)
        r.reset_index(drop=True).to_parquet(folder / "ref.parquet", index=False)
        c.reset_index(drop=True).to_parquet(folder / "cur.parquet", index=False)
        self._request = folder / "request.json"
        self._request.write_text(json.dumps({"num": num, "cat": cat, "out": str(out)}))
        # this file run as __main__ by path (runpy, so its folder is not put first on sys.path: this module's
        # name would shadow the standard library's html)
        code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        self._proc = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).resolve()), str(self._request)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        import weakref

        # a check that stops early (an error, Ctrl-C) does not leave the renderer behind
        weakref.finalize(self, stop_child, self._proc, self._tmp)

    def result(self, timeout: float = 900) -> dict:
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except Exception:
            self._proc.kill()
            self._proc.communicate()
            raise
        finally:
            self._tmp.cleanup()
        lines = [x for x in out.splitlines() if x.strip()]
        if self._proc.returncode != 0 or not lines:
            tail = (err.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"report process exited {self._proc.returncode}: {tail[:300]}")
        return {**json.loads(lines[-1]), "sampled": self.sampled, "rendered_in": "second process"}


def stop_child(proc, tmp) -> None:
    """Kill a second process still running and remove its private folder (the finaliser of the report's and
    the contract's second process, :class:`aiir.detect.gx_process.ContractProcess`: a check that stops early
    leaves neither behind)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    tmp.cleanup()


def _main(argv: list[str]) -> int:
    import pandas as pd

    request = Path(argv[0])
    req = json.loads(request.read_text())
    r = pd.read_parquet(request.parent / "ref.parquet")
    c = pd.read_parquet(request.parent / "cur.parquet")
    print(json.dumps(_render(req["num"], req["cat"], r, c, Path(req["out"]))))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
