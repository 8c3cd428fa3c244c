"""Containment and routing rules behind the admin API, independent of HTTP.

Two orthogonal things:

* **routing** — the *primary* version (follows the alias, or is pinned by ``rollback``) and an optional
  *canary* taking a share of traffic;
* **containment** — ``isolated`` (all traffic to a fallback version), ``quarantined`` (every scoring
  request refused with 503), blocked clients (403) and per-client rate limits (429).

An operation takes effect (the routing swap) before it is made durable (``state.json`` written and
fsynced); the caller gets its answer after both. If saving fails the caller gets an error saying the
change is in effect but not persisted, and every later operation retries the save.

``rollback`` is a routing decision that replaces an isolation (mode goes back to ``serving`` on the
rolled-back version) but keeps a quarantine, blocks and rate limits — only ``restore`` lifts those.
Every operation is idempotent: it computes the target state, and when that equals the current state
nothing is written and ``updated_at`` stays (the call is still audited, with ``changed: false``).

The scoring hot path reads one immutable :class:`Routing` snapshot per request; admin operations
build the next snapshot (after loading any version they need) and swap it in one assignment, so a
switch takes effect for the very next request.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from aiir.errors import BadInput, IntegrityError
from aiir.gateway.identity import (
    MAX_CLIENT_ID,
    RULE,
    InvalidClientId,
    is_valid_client_id,
    normalise_client_id,
)
from aiir.gateway.models import LoadedVersion, UnknownVersion
from aiir.gateway.state import GatewayState, StateStore, utc_now

__all__ = ["MAX_CLIENT_ID", "ControlError", "Controller", "Routing", "valid_client_id"]


class ControlError(Exception):
    def __init__(self, message: str, *, status: int = 400, code: str = "bad_request"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Routing:
    mode: str
    primary: LoadedVersion | None
    serving: LoadedVersion | None  # what serves when not canaried: primary, or the fallback when isolated
    canary: LoadedVersion | None
    canary_share: float
    blocked: frozenset[str]
    rate_limits: dict[str, float] = field(default_factory=dict)


def valid_client_id(c: Any) -> bool:
    return isinstance(c, str) and is_valid_client_id(c)


def _normalised(ids: Any) -> list[str]:
    """Saved ids in their normalised form (a state written before normalisation still matches)."""
    out = []
    for c in ids:
        try:
            out.append(normalise_client_id(c))
        except InvalidClientId:
            out.append(str(c))  # cannot match a request any more; kept so it stays visible
    return out


class Controller:
    def __init__(self, name: str, models: Any, store: StateStore, *, alias: str = "champion",
                 fallback_alias: str | None = "last-known-good"):
        self.name = name
        self.models = models
        self.store = store
        self.alias = alias
        self.fallback_alias = fallback_alias
        self.state: GatewayState | None = None
        self.routing: Routing | None = None
        self.alias_versions: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._dirty = False  # in-memory state not yet saved
        self._pending: list[tuple] = []  # block_now operations in force, not yet audited
        self._canary_acc = 0.0
        self._buckets: dict[str, list[float]] = {}
        self.stats: Counter = Counter()
        self.by_version: Counter = Counter()
        self.started_at = utc_now()
        self.warnings: list[str] = []

    # ------------------------------------------------------------------ start
    def start(self) -> GatewayState:
        """Load persisted state (containment survives restarts), resolve aliases, preload versions."""
        saved = self.store.load()
        if saved is not None and saved.model != self.name:
            raise BadInput(str(self.store.state_path), f"state belongs to model '{saved.model}', not "
                                                       f"'{self.name}' (use another --state-dir)")
        st = saved or GatewayState(model=self.name)
        st.alias, st.fallback_alias = self.alias, self.fallback_alias
        self._resolve_aliases()
        if not st.primary_pinned:
            v = self.alias_versions.get(self.alias)
            if v is None:
                exists = getattr(self.models, "model_exists", None)
                if exists is not None and not exists():
                    uri = getattr(self.models, "tracking_uri", "the registry")
                    raise BadInput("--model", f"no registered model '{self.name}' in {uri}")
                if st.primary_version is None:
                    raise BadInput("--alias", f"model '{self.name}' has no alias '{self.alias}' in the registry "
                                              "(set it, or check MLFLOW_TRACKING_URI)")
                self.warnings.append(f"alias '{self.alias}' not found; keeping version {st.primary_version} "
                                     "from the saved state")
            else:
                st.primary_version = v
        try:
            self._load(st.primary_version)
        except ControlError as exc:
            if exc.code == "integrity_failed":  # exit 3: the artifact was tampered with, not a bad option
                raise IntegrityError(exc.message) from None
            raise BadInput("--model", exc.message) from None
        for v in (st.fallback_version, st.canary_version, self.alias_versions.get(self.fallback_alias or "")):
            if v:
                try:
                    self._load(v)
                except ControlError as exc:
                    self.warnings.append(f"could not preload version {v}: {exc.message}")
        if self.fallback_alias and self.alias_versions.get(self.fallback_alias) is None:
            self.warnings.append(f"alias '{self.fallback_alias}' not found: isolate() needs an explicit "
                                 "fallback_version")
        if saved is None or saved.to_dict() != st.to_dict():
            st.updated_at = st.updated_at or utc_now()
            self.store.save(st)
        self.state = st
        self.routing = self._build_routing(st)
        self.store.audit({"action": "start", "actor": {"process": "aiir serve"}, "changed": saved is None,
                          "params": {"alias": self.alias, "fallback_alias": self.fallback_alias},
                          "reason": "", "state": st.essence()})
        return st

    def _resolve_aliases(self, *which: str | None) -> None:
        for a in which or (self.alias, self.fallback_alias):
            if a:
                self.alias_versions[a] = self.models.resolve_alias(a)

    def _load(self, version: str | None) -> LoadedVersion:
        if version is None:
            raise ControlError("no version to serve", status=409, code="no_version")
        try:
            return self.models.get(str(version))
        except UnknownVersion as exc:
            raise ControlError(str(exc), status=404, code="unknown_version") from None
        except IntegrityError as exc:
            raise ControlError(str(exc), status=409, code="integrity_failed") from None

    def _build_routing(self, st: GatewayState) -> Routing:
        primary = self._load(st.primary_version)
        serving = primary
        if st.mode == "isolated":
            serving = self._load(st.fallback_version)
        canary = self._load(st.canary_version) if st.canary_version and st.canary_share > 0 else None
        return Routing(mode=st.mode, primary=primary, serving=serving, canary=canary,
                       canary_share=st.canary_share if canary else 0.0,
                       blocked=frozenset(_normalised(st.blocked_clients)),
                       rate_limits=dict(zip(_normalised(st.rate_limits), st.rate_limits.values(), strict=True)))

    # ------------------------------------------------------------------ hot path
    def pick(self, r: Routing) -> LoadedVersion:
        """The version for this request: the fallback while isolated, else canary by share."""
        if r.mode == "serving" and r.canary is not None:
            self._canary_acc += r.canary_share
            if self._canary_acc >= 1.0:
                self._canary_acc -= 1.0
                return r.canary
        return r.serving

    def allow(self, client: str, rate: float) -> tuple[bool, float]:
        """Token bucket per client (capacity max(1, rate)). Returns (allowed, seconds to wait)."""
        now = time.monotonic()
        cap = max(1.0, rate)
        b = self._buckets.get(client)
        if b is None or b[2] != rate:
            b = self._buckets[client] = [cap, now, rate]
        tokens = min(cap, b[0] + (now - b[1]) * rate)
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return True, 0.0
        b[0] = tokens
        return False, (1.0 - tokens) / rate

    # ------------------------------------------------------------------ admin operations
    def _apply(self, action: str, params: dict[str, Any], reason: str, actor: dict[str, Any], mutate
               ) -> dict[str, Any]:
        with self._lock:
            self._audit_pending()  # block_now operations before this one, in order
            cur = self.state
            new = copy.deepcopy(cur)
            try:
                mutate(new)
                routing = self._build_routing(new)
            except ControlError as exc:
                self.store.audit({"action": action, "actor": actor, "params": params, "reason": reason,
                                  "changed": False, "refused": exc.message})
                raise
            changed = new.essence() != cur.essence()
            if changed:
                new.reason = reason
                new.updated_at = utc_now()
                if routing.rate_limits != self.routing.rate_limits:
                    self._buckets.clear()
                self.state = new
                # One assignment and the next request sees the new routing. It happens before the fsyncs
                # below: containment takes effect first, then becomes durable.
                self.routing = routing
                self._dirty = True
            persist_error = None
            if self._dirty:  # also retries a save that failed on an earlier call
                try:
                    self.store.save(self.state)
                    self._dirty = False
                except OSError as exc:
                    persist_error = f"{type(exc).__name__}: {exc}"
            self.store.audit({"action": action, "actor": actor, "params": params, "reason": reason,
                              "changed": changed, "state": self.state.essence(),
                              **({"persist_error": persist_error} if persist_error else {})})
            if persist_error:
                raise ControlError(f"{action} is in effect but NOT persisted ({persist_error}); a restart "
                                   "would lose it — fix the state dir and repeat the call",
                                   status=500, code="not_persisted")
            return self.describe()

    def isolate(self, *, fallback_version: str | None = None, quarantine: bool = False, reason: str = "",
                actor: dict | None = None) -> dict[str, Any]:
        fb = None if fallback_version in (None, "") else str(fallback_version)
        if fb is None and not quarantine and self.fallback_alias:
            self._resolve_aliases(self.fallback_alias)  # only the registry lookup this call needs

        def mutate(st: GatewayState) -> None:
            if quarantine:
                st.mode = "quarantined"
                if fb is not None:
                    self._load(fb)
                    st.fallback_version = fb
                return
            target = fb or (self.alias_versions.get(self.fallback_alias) if self.fallback_alias else None)
            if target is None:
                raise ControlError(f"no fallback version: pass fallback_version, or set the "
                                   f"'{self.fallback_alias}' alias on model '{self.name}'",
                                   status=409, code="no_fallback")
            if target == st.primary_version:
                raise ControlError(f"fallback version {target} is the primary version being isolated; "
                                   "choose another version or quarantine", status=409, code="fallback_is_primary")
            self._load(target)
            st.mode = "isolated"
            st.fallback_version = target

        return self._apply("isolate", {"fallback_version": fb, "quarantine": bool(quarantine)}, reason,
                           actor or {}, mutate)

    @staticmethod
    def _block_args(clients: Any, rate_limit_per_s: Any) -> tuple[list[str], float | None]:
        if not isinstance(clients, list) or not clients:
            raise ControlError("'clients' must be a non-empty list of client ids", code="bad_clients")
        bad, norm = [], []
        for c in clients:
            try:
                if not isinstance(c, str):
                    raise InvalidClientId("not a string")
                norm.append(normalise_client_id(c))
            except InvalidClientId as exc:
                bad.append(f"{str(c)[:60]!r}: {exc}")
        if bad:
            raise ControlError(f"invalid client id(s): {'; '.join(bad[:5])} (expected {RULE})", code="bad_clients")
        rate = None
        if rate_limit_per_s is not None:
            if isinstance(rate_limit_per_s, bool) or not isinstance(rate_limit_per_s, int | float):
                raise ControlError("'rate_limit_per_s' must be a number", code="bad_rate")
            rate = float(rate_limit_per_s)
            if not math.isfinite(rate) or rate <= 0:
                raise ControlError("'rate_limit_per_s' must be > 0 (to refuse a client entirely, block it "
                                   "without a rate limit)", code="bad_rate")
        return sorted(set(norm)), rate

    @staticmethod
    def _block_mutation(clients: list[str], rate: float | None):
        def mutate(st: GatewayState) -> None:
            blocked = set(_normalised(st.blocked_clients))
            st.rate_limits = dict(zip(_normalised(st.rate_limits), st.rate_limits.values(), strict=True))
            for c in clients:
                if rate is None:
                    blocked.add(c)
                    st.rate_limits.pop(c, None)
                else:
                    blocked.discard(c)
                    st.rate_limits[c] = rate
            st.blocked_clients = sorted(blocked)
            st.rate_limits = dict(sorted(st.rate_limits.items()))
        return mutate

    def block(self, clients: list[str], *, rate_limit_per_s: float | None = None, reason: str = "",
              actor: dict | None = None) -> dict[str, Any]:
        clients, rate = self._block_args(clients, rate_limit_per_s)
        return self._apply("block", {"clients": clients, "rate_limit_per_s": rate}, reason, actor or {},
                           self._block_mutation(clients, rate))

    def block_now(self, clients: list[str], *, rate_limit_per_s: float | None = None, reason: str = "",
                  actor: dict | None = None) -> bool:
        """:meth:`block`'s containment in memory, at once, for the serving path (the inline guard): the
        routing swap only — no registry, no model load, no disk, and never a wait: when another operation
        holds the controller this instant it returns False (call :meth:`block` off the serving path instead).
        The change is made durable and audited by the next :meth:`persist_pending` (or any later operation's
        save)."""
        clients, rate = self._block_args(clients, rate_limit_per_s)
        if not self._lock.acquire(blocking=False):
            return False
        try:
            cur = self.state
            new = copy.deepcopy(cur)
            self._block_mutation(clients, rate)(new)
            changed = new.essence() != cur.essence()
            if changed:
                new.reason = reason
                new.updated_at = utc_now()
                routing = replace(self.routing, blocked=frozenset(_normalised(new.blocked_clients)),
                                  rate_limits=dict(zip(_normalised(new.rate_limits), new.rate_limits.values(),
                                                       strict=True)))
                if routing.rate_limits != self.routing.rate_limits:
                    self._buckets.clear()
                self.state = new
                self.routing = routing  # in force for the next request
                self._dirty = True
            self._pending.append(("block", {"clients": clients, "rate_limit_per_s": rate}, reason, actor or {},
                                  changed))
            return True
        finally:
            self._lock.release()

    def persist_pending(self) -> None:
        """Save the state and audit the operations :meth:`block_now` put in force (off the serving path)."""
        with self._lock:
            pending, self._pending = self._pending, []
            persist_error = None
            if self._dirty:
                try:
                    self.store.save(self.state)
                    self._dirty = False
                except OSError as exc:
                    persist_error = f"{type(exc).__name__}: {exc}"
            self._audit_pending(pending, persist_error)
            if persist_error:
                raise ControlError(f"containment is in effect but NOT persisted ({persist_error}); a restart "
                                   "would lose it", status=500, code="not_persisted")

    def _audit_pending(self, pending: list[tuple] | None = None, persist_error: str | None = None) -> None:
        if pending is None:
            pending, self._pending = self._pending, []
        for action, params, reason, actor, changed in pending:
            self.store.audit({"action": action, "actor": actor, "params": params, "reason": reason,
                              "changed": changed, "state": self.state.essence(),
                              **({"persist_error": persist_error} if persist_error else {})})

    def restore(self, *, reason: str = "", follow_alias: bool = False, actor: dict | None = None
                ) -> dict[str, Any]:
        self._resolve_aliases()

        def mutate(st: GatewayState) -> None:
            st.mode = "serving"
            st.fallback_version = None
            st.blocked_clients = []
            st.rate_limits = {}
            if follow_alias:
                st.primary_pinned = False
            if not st.primary_pinned:
                v = self.alias_versions.get(self.alias)
                if v is not None:
                    self._load(v)
                    st.primary_version = v
            if st.canary_version == st.primary_version:
                st.canary_version, st.canary_share = None, 0.0

        return self._apply("restore", {"follow_alias": bool(follow_alias)}, reason, actor or {}, mutate)

    def rollback(self, version: str, *, reason: str = "", actor: dict | None = None) -> dict[str, Any]:
        if version in (None, "") or not isinstance(version, str | int) or isinstance(version, bool):
            raise ControlError("'version' is required (a registered version number)", code="bad_version")
        v = str(version)

        def mutate(st: GatewayState) -> None:
            self._load(v)
            st.primary_version = v
            st.primary_pinned = True
            st.canary_version, st.canary_share = None, 0.0
            if st.mode == "isolated":
                st.mode = "serving"
                st.fallback_version = None

        return self._apply("rollback", {"version": v}, reason, actor or {}, mutate)

    def canary(self, version: str, share: float, *, reason: str = "", actor: dict | None = None
               ) -> dict[str, Any]:
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= float(share) <= 1.0:
            raise ControlError(f"'share' must be a number between 0 and 1, got {share!r}", code="bad_share")
        share = float(share)
        v = None if version in (None, "") else str(version)
        if share > 0 and v is None:
            raise ControlError("'version' is required for a canary share > 0", code="bad_version")

        def mutate(st: GatewayState) -> None:
            if share == 0.0:
                st.canary_version, st.canary_share = None, 0.0
                return
            if st.mode != "serving":
                raise ControlError(f"gateway is {st.mode}; restore before starting a canary",
                                   status=409, code="contained")
            if v == st.primary_version:
                raise ControlError(f"version {v} is already the primary", status=409, code="canary_is_primary")
            self._load(v)
            st.canary_version, st.canary_share = v, share

        self._canary_acc = 0.0
        return self._apply("canary", {"version": v, "share": share}, reason, actor or {}, mutate)

    # ------------------------------------------------------------------ views
    def describe(self) -> dict[str, Any]:
        """The DeploymentTarget ``ServingState`` as a dict, plus gateway details under ``extra``."""
        from aiir.targets.base import ServingState, TrafficRoute

        st = self.state
        routes: list[TrafficRoute] = []
        if st.mode == "serving":
            if st.canary_version and st.canary_share > 0:
                routes = [TrafficRoute(st.primary_version, round(1.0 - st.canary_share, 6)),
                          TrafficRoute(st.canary_version, st.canary_share)]
            else:
                routes = [TrafficRoute(st.primary_version, 1.0)]
        elif st.mode == "isolated":
            routes = [TrafficRoute(st.fallback_version, 1.0)]
        fallback = st.fallback_version if st.mode != "serving" else (
            self.alias_versions.get(self.fallback_alias) if self.fallback_alias else None)
        extra = {
            "alias": st.alias, "fallback_alias": st.fallback_alias,
            "alias_versions": dict(self.alias_versions),
            "primary_version": st.primary_version, "primary_pinned": st.primary_pinned,
            "canary": ({"version": st.canary_version, "share": st.canary_share}
                       if st.canary_version else None),
            "loaded_versions": {v: lv.digest for v, lv in sorted(self.models.cached().items())},
            "started_at": self.started_at,
        }
        return ServingState(target=f"local:{self.name}", model=self.name, mode=st.mode, routes=routes,
                            fallback_version=fallback, blocked_clients=list(st.blocked_clients),
                            rate_limits=dict(st.rate_limits), reason=st.reason, updated_at=st.updated_at,
                            extra=extra).to_dict()
