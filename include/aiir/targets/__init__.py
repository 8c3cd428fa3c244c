"""Deployment targets: one contract (``base.DeploymentTarget``), one module per platform."""

from __future__ import annotations

from aiir.targets.base import DeploymentTarget, ServingState, TrafficRoute

__all__ = ["DeploymentTarget", "ServingState", "TrafficRoute", "get_target"]


def get_target(kind: str, name: str, **options) -> DeploymentTarget:
    """Build a target by kind: ``local`` (the aiir gateway), later ``sagemaker`` and ``kubernetes``."""
    if kind == "local":
        from aiir.targets.local import LocalGatewayTarget

        return LocalGatewayTarget(name=name, **options)
    from aiir.errors import BadInput

    raise BadInput("target_kind", f"unknown target kind '{kind}' (expected one of: local)")
