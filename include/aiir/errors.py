"""Typed errors and the exit codes the CLI maps them to.

Every error a user can cause names the field or file at fault and what was expected, so the
CLI prints one line and exits 2 instead of a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INCIDENT = 3  # `aiir check`: an incident should open; `aiir verify`: the bundle was changed


class AiirError(Exception):
    """Base class for every error aiir raises on purpose."""

    exit_code = 1


class BadInput(AiirError):
    """The user gave us something we cannot use (missing file, bad column, malformed conf)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class TargetError(AiirError):
    """A deployment target refused or failed an operation."""


class IntegrityError(AiirError):
    """Evidence or an artifact does not match its recorded digest."""

    exit_code = EXIT_INCIDENT
