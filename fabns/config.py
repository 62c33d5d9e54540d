"""Fabric configuration with a ``fabns`` subtree.

``fabns.python`` -- the host's Python for the pushed helper (default
``python3`` from the fixed host PATH); ``fabns.host_timeout`` -- seconds a
fabns step on the host may take (default 60). Being in the defaults, it can also be set in
``fabric.yaml`` or as ``FABRIC_FABNS_PYTHON``.
"""

from __future__ import annotations

from typing import Any

from fabric import Config as FabricConfig

from fabns.runner import NamespaceRemote


class Config(FabricConfig):  # type: ignore[misc]
    """`fabric.Config` plus the ``fabns`` defaults.

    .. versionadded:: 0.1
    """

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        defaults: dict[str, Any] = FabricConfig.global_defaults()
        defaults["fabns"] = {"python": "python3", "host_timeout": 60}
        defaults["runners"]["remote"] = NamespaceRemote
        return defaults


def as_fabns_config(config: Any) -> Config:
    """``config`` as a `Config` with the shell environment loaded.

    ``None`` makes a new one (Fabric's config files load as usual); a plain
    Fabric or Invoke config is cloned into a `Config`, so the ``fabns`` subtree
    and its defaults exist. ``FABRIC_*`` variables (``FABRIC_FABNS_PYTHON``,
    ``FABRIC_SUDO_PASSWORD``...) are loaded in every case, below explicit
    overrides as always.
    """
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        config = config.clone(into=Config)
    config.load_shell_env()
    assert isinstance(config, Config)
    return config


def fabns_setting(config: Any, key: str, default: str) -> str:
    """Read ``fabns.KEY`` from any Fabric config, with a default for plain configs."""
    try:
        value = config.fabns[key]
    except (AttributeError, KeyError, TypeError):
        return default
    return str(value) if value else default
