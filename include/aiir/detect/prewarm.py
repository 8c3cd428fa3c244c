"""Import the check's heavy libraries in a background thread while the statistics run.

Great Expectations (~5 s of CPU to import) and Evidently (~6 s) are needed only for the contract and the
HTML report; imported on the critical path they were a third of a 1M-row check. The statistics spend most
of their time in numpy / pandas / scikit-learn kernels that release the GIL, so an import thread runs
alongside them on a second core. Nothing depends on the thread's success: a module that fails to import
here is imported again (and fails with its own error) where it is used. Modules already imported are
skipped, so repeated checks in one process (tests, benchmarks, a long-lived worker) start no thread.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import warnings

GX = ("great_expectations",)
EVIDENTLY = ("evidently", "evidently.presets")
SKLEARN = ("sklearn.ensemble", "sklearn.isotonic")


def start(modules: tuple[str, ...] | list[str]) -> threading.Thread | None:
    """Import ``modules`` (in order) in a daemon thread; None when all are imported already."""
    missing = [m for m in modules if m not in sys.modules]
    if not missing:
        return None
    if any(m.startswith("great_expectations") for m in missing):
        os.environ["GX_ANALYTICS_ENABLED"] = "false"  # as aiir.detect.contract._gx does, before the import

    def work() -> None:
        log = logging.getLogger("great_expectations")
        level = log.level
        log.setLevel(logging.CRITICAL)  # GX logs noisily while importing; contract._quiet_gx does the same
        try:
            for name in missing:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the import where the module is used reports it
            pass
        finally:
            log.setLevel(level)

    th = threading.Thread(target=work, name="aiir-prewarm", daemon=True)
    th.start()
    return th
