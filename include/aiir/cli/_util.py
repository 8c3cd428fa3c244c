"""Helpers shared by the CLI areas: JSON output, error wrapping, progress."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import typer

from aiir.errors import AiirError, BadInput


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str, sort_keys=False))


def guarded(fn: Callable) -> Callable:
    """Turn AiirError into one clear stderr line and the error's exit code (no traceback)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AiirError as exc:
            typer.echo(f"aiir: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def progress(msg: str) -> None:
    """A progress line on stderr, so stdout stays machine-readable."""
    print(f"· {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """A folder a command may write into, or one clear :class:`BadInput` (exit 2) saying why not.

    Checked *before* any work: an existing non-folder (file, FIFO, device) is named as what it is; the
    folder (and missing parents) is created, and a probe file written and removed, so that a path under a
    file, under ``/proc``, on a read-only or immutable folder fails here. If the body fails, everything it
    left behind goes: folders this call created are removed, and in a folder that existed only the new
    entries are. An ``OSError`` from the body becomes a BadInput naming the folder.
    """
    from aiir.tabular import file_kind

    out = Path(path)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise BadInput(str(out), f"{option} must be a folder, got {file_kind(out)}")
    created: list[Path] = []
    probe = out / f".aiir-write-probe-{os.getpid()}"
    try:
        missing = []
        p = out
        while not (p.exists() or p.is_symlink()):
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        if p.exists() and not p.is_dir():
            raise BadInput(str(out), f"{option} cannot be created: {p} is {file_kind(p)}, not a folder")
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        _remove_created(created)
        raise BadInput(str(out), f"{option} is not writable: {exc.strerror or exc}") from None
    before = set() if created else set(os.listdir(out))
    try:
        yield out
    except BaseException as exc:
        if created:
            _remove_created(created)
        else:
            for name in set(os.listdir(out)) - before:
                target = out / name
                with contextlib.suppress(OSError):
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
        if isinstance(exc, OSError):
            raise BadInput(str(out), f"cannot write the results: {exc.strerror or exc}"
                           " (nothing was left behind)") from None
        raise


def _remove_created(created: list[Path]) -> None:
    if created:
        shutil.rmtree(created[0], ignore_errors=True)
