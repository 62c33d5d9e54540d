"""Fabric configuration with a ``fabns`` subtree.

``fabns.python`` -- the host's Python for the pushed helper (default
``python3`` from the fixed host PATH); ``fabns.host_timeout`` -- seconds a
fabns step on the host may take (default 60). Being in the defaults, it can also be set in
``fabric.yaml`` or as ``FABRIC_FABNS_PYTHON``.
"""

from __future__ import annotations

from typing import Any

from fabric import Config as FabricConfig


class Config(FabricConfig):  # type: ignore[misc]
    """`fabric.Config` plus the ``fabns`` defaults.

    .. versionadded:: 0.1
    """

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        defaults: dict[str, Any] = FabricConfig.global_defaults()
        defaults["fabns"] = {"python": "python3", "host_timeout": 60}
        return defaults


def fabns_setting(config: Any, key: str, default: str) -> str:
    """Read ``fabns.KEY`` from any Fabric config, with a default for plain configs."""
    try:
        value = config.fabns[key]
    except (AttributeError, KeyError, TypeError):
        return default
    return str(value) if value else default
