"""The data-integrity check (``aiir check``): contract, drift, poisoning signals, artifact integrity.

Public API::

    from aiir.detect import run_check
    result = run_check(reference, current, out_dir, contract=None, label_column=None,
                       source_column=None, registry=None, thresholds=None, html=True)
    result.status, result.severity, result.findings, result.suspect_sources, result.paths, result.to_dict()

Also :func:`aiir.detect.drift.drift_table` and :func:`aiir.detect.integrity.verify_registry`.
Heavy libraries (Great Expectations, Evidently, scikit-learn) are imported inside the functions that use them.
"""

from __future__ import annotations

from aiir.detect.check import CheckResult, run_check

__all__ = ["CheckResult", "run_check"]
