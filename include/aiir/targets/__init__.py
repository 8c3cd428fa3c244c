"""Deployment targets: one contract (``base.DeploymentTarget``), one module per platform, found through
the ``aiir.targets`` entry-point group (``registry``)."""

from __future__ import annotations

from aiir.targets.base import DeploymentTarget, ServingState, TargetOption, TrafficRoute
from aiir.targets.registry import available_kinds, get_target, list_targets, target_class

__all__ = ["DeploymentTarget", "ServingState", "TargetOption", "TrafficRoute", "available_kinds", "get_target",
           "list_targets", "target_class"]
