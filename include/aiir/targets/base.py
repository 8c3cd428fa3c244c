"""The DeploymentTarget contract every serving platform implements.

Every operation is idempotent — repeating it leaves the same state — and returns the
:class:`ServingState` it left, read back from the platform (never assumed).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

Mode = Literal["serving", "isolated", "quarantined"]


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServingState:
        d = dict(d)
        d["routes"] = [TrafficRoute(**r) for r in d.get("routes", [])]
        return cls(**d)

    @property
    def serving_versions(self) -> list[str]:
        return [r.version for r in self.routes if r.share > 0]


class DeploymentTarget(abc.ABC):
    """One serving endpoint of one model on one platform."""

    kind: ClassVar[str]

    def __init__(self, name: str):
        self.name = name

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.name}"

    @abc.abstractmethod
    def describe(self) -> ServingState:
        """Which version serves which share of traffic, and what containment is active."""

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
