"""Great Expectations work of the contract stage, importable on its own and runnable as a second process.

This file imports nothing from aiir (a :class:`ContractProcess` runs it as a plain script, so the child
loads pandas and GX only, not the statistics stack). :mod:`aiir.detect.contract` uses the same functions
in-process, so the suite and the validation result are built by the same code either way.

On a large batch the check starts a :class:`ContractProcess` before its statistics: the child imports GX
(~5 s of CPU), builds the inferred suite from its (class name, keyword arguments) list and validates the
deterministic sample of the current rows GX is given (``[contract] gx_max_rows``), on a second core while
the statistics run. The check then adds its exact null / range / domain counts over every row, as it does
in-process (:func:`aiir.detect.contract._patch_exact`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

GX_SAMPLE_SEED = 20240601  # the sample GX validates on a large batch (as aiir.detect.signals.SEED)


@contextlib.contextmanager
def quiet_gx():
    """GX logs full tracebacks for invalid configurations and warns a lot; keep stderr to our lines."""
    log = logging.getLogger("great_expectations")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def import_gx():
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    with quiet_gx():
        import great_expectations as gx
    return gx


def gx_sample(cur: pd.DataFrame, max_rows: int | None) -> pd.DataFrame:
    """The rows GX validates: every row, or a deterministic sample of ``max_rows`` rows in row order."""
    n = min(len(cur), max_rows) if max_rows else len(cur)
    return cur.sample(n=n, random_state=GX_SAMPLE_SEED).sort_index() if n < len(cur) else cur


def suite_from_spec(spec: list[tuple[str, dict[str, Any]]], *, name: str = "aiir-contract",
                    meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ExpectationSuite JSON of (GX expectation class name, keyword arguments) pairs."""
    gx = import_gx()
    E = gx.expectations
    exps = [getattr(E, cls)(**kw) for cls, kw in spec]
    with quiet_gx():
        suite = gx.ExpectationSuite(name=name, expectations=exps, meta={"aiir": meta or {}})
        return suite.to_json_dict()


def gx_validate(cur: pd.DataFrame, suite) -> dict[str, Any]:
    """GX's validation result JSON of ``cur`` (every row) against the ExpectationSuite ``suite``."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with quiet_gx():
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        batch = (ctx.data_sources.add_pandas("aiir")
                 .add_dataframe_asset(name="current")
                 .add_batch_definition_whole_dataframe("whole")
                 .get_batch(batch_parameters={"dataframe": cur}))
        result = batch.validate(suite, result_format="SUMMARY")
        return result.to_json_dict()


def suite_of(data: dict[str, Any]):
    """The ExpectationSuite of its JSON (for an inferred suite; a supplied one goes through
    :func:`aiir.detect.contract.build_suite`, which checks it)."""
    gx = import_gx()
    kwargs = {k: v for k, v in data.items()
              if k in {"name", "expectations", "suite_parameters", "meta", "notes"}}
    kwargs.setdefault("name", "aiir-contract")
    with quiet_gx():
        return gx.ExpectationSuite(**kwargs)


# ------------------------------------------------------------------- validating in a second process

class ContractProcess:
    """The inferred suite built and GX-validated by a fresh Python process (``python gx_process.py``).

    The child gets the expectations list, the suite's name and meta and the rows GX validates (pickled in a
    private temporary folder: dtypes exactly as here); :meth:`result` waits for it and returns
    ``(suite JSON, GX validation result JSON of those rows)``, or raises ``RuntimeError`` with the child's
    last error line.
    """

    def __init__(self, spec: list[tuple[str, dict[str, Any]]], rows: pd.DataFrame, *, name: str = "aiir-contract",
                 meta: dict[str, Any] | None = None):
        import sys
        import tempfile
        import weakref

        # imported here, in the parent: the child running this file imports nothing from aiir
        from aiir.detect.html import stop_child

        self._tmp = tempfile.TemporaryDirectory(prefix="aiir-contract-")
        folder = Path(self._tmp.name)
        self._request, self._answer = folder / "request.pkl", folder / "answer.pkl"
        with open(self._request, "wb") as fh:
            pickle.dump({"spec": spec, "name": name, "meta": meta, "rows": rows}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        self._proc = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).resolve()), str(self._request),
                                       str(self._answer)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
        # a check that stops early (an error, Ctrl-C) does not leave the child behind
        weakref.finalize(self, stop_child, self._proc, self._tmp)

    def result(self, timeout: float = 900) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            _, err = self._proc.communicate(timeout=timeout)
            if self._proc.returncode != 0 or not self._answer.exists():
                tail = (err.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"contract process exited {self._proc.returncode}: {tail[:300]}")
            with open(self._answer, "rb") as fh:
                answer = pickle.load(fh)  # written by our own child from our own request
            return answer["suite"], answer["result"]
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise
        finally:
            self._tmp.cleanup()


def _main(argv: list[str]) -> int:
    with open(argv[0], "rb") as fh:
        req = pickle.load(fh)  # written by the parent check into its private folder
    suite = suite_from_spec(req["spec"], name=req["name"], meta=req["meta"])
    result = gx_validate(req["rows"], suite_of(suite))
    tmp = Path(argv[1]).with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump({"suite": suite, "result": result}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
