"""The DeploymentTarget contract every serving platform implements.

Every operation is idempotent — repeating it leaves the same state — and returns the
:class:`ServingState` it left, read back from the platform (never assumed).

Platforms whose changes take minutes (a SageMaker endpoint update, a Kubernetes rollout) return a state
with ``settled=False`` and say what is pending; :meth:`DeploymentTarget.describe` reports ``settled=True``
once the platform has finished. Callers wait with :meth:`DeploymentTarget.wait_settled` (the CLI) or a
deferrable Airflow trigger polling :meth:`describe` (no worker slot held). The local gateway settles at once.

A target declares the options it takes (:attr:`DeploymentTarget.options`) and how they come from an
Airflow-style connection (:meth:`DeploymentTarget.options_from_connection`, pure: no Airflow import), so
the Airflow hook, the CLI and the trigger form never special-case a kind. Targets are found through the
``aiir.targets`` entry-point group (see :mod:`aiir.targets.registry`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

Mode = Literal["serving", "isolated", "quarantined"]

# What a target can do; the playbooks check these before choosing a containment.
CAPABILITIES = ("isolate", "quarantine", "block_clients", "rate_limit", "restore", "rollback", "canary",
                "snapshot", "decisions")


@dataclass
class TrafficRoute:
    version: str
    share: float  # 0..1


@dataclass
class ServingState:
    target: str  # "<kind>:<name>"
    model: str
    mode: Mode
    routes: list[TrafficRoute]
    fallback_version: str | None = None
    blocked_clients: list[str] = field(default_factory=list)
    rate_limits: dict[str, float] = field(default_factory=dict)  # client id -> requests per second
    reason: str = ""
    updated_at: str = ""  # ISO-8601 UTC
    extra: dict[str, Any] = field(default_factory=dict)
    settled: bool = True  # False while the platform is still applying the last change
    pending: str = ""  # what is still settling, in words ("endpoint Updating", "rollout 1/3 replicas")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServingState:
        d = dict(d)
        d["routes"] = [TrafficRoute(**r) for r in d.get("routes", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def serving_versions(self) -> list[str]:
        return [r.version for r in self.routes if r.share > 0]


@dataclass(frozen=True)
class TargetOption:
    """One option a target takes: its name, JSON type, meaning, default and whether it is a secret."""

    name: str
    type: str = "string"  # JSON-schema type: string, integer, number, boolean, object
    description: str = ""
    default: Any = None
    secret: bool = False  # never logged, never shown in a form or a snapshot

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# One served decision as every target returns it (the local gateway's decision-log schema).
DECISION_FIELDS = ("decision_id", "ts", "client_id", "model", "model_version", "prediction", "score",
                   "features", "request_id")


class DeploymentTarget(abc.ABC):
    """One serving endpoint of one model on one platform."""

    kind: ClassVar[str]
    title: ClassVar[str] = ""
    #: the Python modules the target needs; a kind whose modules are missing is not offered
    requires: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[TargetOption, ...]] = ()
    capabilities: ClassVar[frozenset[str]] = frozenset(CAPABILITIES)
    #: the Airflow connection id the hook uses when none is named
    default_conn_id: ClassVar[str | None] = None

    def __init__(self, name: str):
        self.name = name

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.name}"

    # ------------------------------------------------------------------ configuration
    @classmethod
    def options_from_connection(cls, *, host: str | None = None, port: int | None = None,
                                schema: str | None = None, login: str | None = None,
                                password: str | None = None, extra: dict[str, Any] | None = None
                                ) -> dict[str, Any]:
        """Options from an Airflow-style connection's fields. Default: declared options from ``extra``."""
        names = {o.name for o in cls.options}
        return {k: v for k, v in (extra or {}).items() if k in names}

    @classmethod
    def describe_kind(cls) -> dict[str, Any]:
        """What ``aiir targets list`` shows and the trigger form offers."""
        return {"kind": cls.kind, "title": cls.title or cls.kind, "class": f"{cls.__module__}.{cls.__qualname__}",
                "capabilities": sorted(cls.capabilities), "options": [o.to_dict() for o in cls.options],
                "requires": list(cls.requires), "default_conn_id": cls.default_conn_id}

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release clients (HTTP sessions); the target may be used again afterwards."""

    # ------------------------------------------------------------------ contract
    @abc.abstractmethod
    def describe(self) -> ServingState:
        """Which version serves which share of traffic, what containment is active, whether it settled."""

    @abc.abstractmethod
    def isolate(self, *, fallback_version: str | None = None, quarantine: bool = False,
                reason: str = "") -> ServingState:
        """Route all traffic to ``fallback_version`` or, with ``quarantine``, refuse every request (503)."""

    @abc.abstractmethod
    def block_clients(self, clients: list[str], *, rate_limit_per_s: float | None = None,
                      reason: str = "") -> ServingState:
        """Refuse (or, with ``rate_limit_per_s``, throttle) the named clients."""

    @abc.abstractmethod
    def restore(self, *, reason: str = "") -> ServingState:
        """Lift isolation, quarantine, blocks and rate limits."""

    @abc.abstractmethod
    def rollback(self, version: str, *, reason: str = "") -> ServingState:
        """Serve ``version`` with 100 % of traffic as the primary (not a containment)."""

    @abc.abstractmethod
    def canary(self, version: str, share: float, *, reason: str = "") -> ServingState:
        """Send ``share`` (0..1) of traffic to ``version``, the rest to the current primary."""

    @abc.abstractmethod
    def snapshot(self, dest: Path) -> list[Path]:
        """Write the target's own state (config, routing, recent logs) into ``dest``; return the files."""

    def decisions(self, since: str | datetime | None = None, until: str | datetime | None = None, *,
                  limit: int | None = None) -> list[dict[str, Any]]:
        """Served decisions from the platform's own log, oldest first, each a dict with
        :data:`DECISION_FIELDS` (``features`` a dict). Targets without a log raise TargetError."""
        from aiir.errors import TargetError

        raise TargetError(f"{self.ref}: this target keeps no log of served decisions")

    def wait_settled(self, *, timeout: float = 900.0, poll: float = 5.0,
                     progress: Callable[[ServingState], None] | None = None) -> ServingState:
        """Poll :meth:`describe` until the platform reports ``settled``; TargetError after ``timeout``."""
        from aiir.errors import TargetError

        deadline = time.monotonic() + timeout
        while True:
            state = self.describe()
            if state.settled:
                return state
            if progress is not None:
                progress(state)
            if time.monotonic() >= deadline:
                raise TargetError(f"{self.ref}: not settled after {timeout:g}s ({state.pending or 'pending'})")
            time.sleep(poll)
