"""The one way aiir writes JSON (and small text) files: atomically, JSON-safe, optionally durable.

A reader never sees a half-written file: the content goes to a temporary file in the same folder, is
flushed (and with ``durable`` fsynced, folder included) and renamed over the target. ``write_json``
returns False without touching the file when it already holds exactly these bytes, so re-running a
step changes no mtime. Values numpy/pandas/pathlib produce are converted; NaN and infinities become null.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples/sets to lists, paths to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and type(value).__module__.startswith("numpy"):
        value = value.item()
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def dumps(obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    return json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)


def write_text(path: str | Path, text: str, *, durable: bool = False, mode: int | None = None) -> bool:
    """Atomically replace ``path`` with ``text``; False (nothing written) when it already holds it."""
    path = Path(path)
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    return True


def write_json(path: str | Path, obj: Any, *, durable: bool = False, sort_keys: bool = False,
               mode: int | None = None) -> bool:
    return write_text(path, dumps(obj, sort_keys=sort_keys) + "\n", durable=durable, mode=mode)


def read_json(path: str | Path, default: Any = None) -> Any:
    """The parsed file, or ``default`` when it does not exist. A corrupt file is a BadInput naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        from aiir.errors import BadInput

        raise BadInput(str(path), f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
