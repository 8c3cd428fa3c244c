"""Per-model serialisation of the steps that change a model's serving target or registry entry.

Incidents on different models run at once; on one model, the *mutating* steps (containment, quarantine,
registration, promotion, restore) take the model's lock, so two incidents never act on one model at the
same instant — but a new incident's containment never waits behind an earlier incident's retraining or
approval, which hold no lock while they wait. The lock is an ``fcntl`` lock on a file under
``$AIIR_HOME/locks/`` (shared by every worker when AIIR_HOME is on a shared volume: see docs/playbooks.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator

from aiir import config
from aiir.errors import TargetError

DEFAULT_TIMEOUT_S = float(os.environ.get("AIIR_MODEL_LOCK_TIMEOUT", "600"))


def lock_path(model: str):
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[:120] or "model"
    d = config.paths().home / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{slug}.lock"


@contextlib.contextmanager
def model_lock(model: str, *, timeout: float | None = None, poll: float = 0.05) -> Iterator[float]:
    """Hold ``model``'s lock; yields the seconds spent waiting. TargetError after ``timeout``."""
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    fd = os.open(lock_path(model), os.O_RDWR | os.O_CREAT, 0o600)
    t0 = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 >= timeout:
                    raise TargetError(f"model '{model}': another incident's step has held its lock for over "
                                      f"{timeout:g}s ({lock_path(model)})") from None
                time.sleep(poll)
        yield time.monotonic() - t0
    finally:
        os.close(fd)
