"""Helpers shared by the CLI areas: JSON output, error wrapping, progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer

from aiir.errors import AiirError


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
