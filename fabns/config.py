"""Fabric configuration with a ``fabns`` subtree.

Every `~fabns.NamespaceConnection` option has a key there, so it can be set
where Fabric settings live -- ``/etc/fabric.yaml``, ``~/.fabric.yaml``, the
project's ``fabric.yaml``, ``-f FILE`` -- or as ``FABRIC_FABNS_<KEY>``
environment variables, with Invoke's usual precedence; arguments given to the
connection win over all of them:

================= ============ ====================================================
key               default      meaning
================= ============ ====================================================
``pid``           ``None``     ``pid=``: a host PID inside the target
``container``     ``None``     ``container=``: a container name
``engine``        ``"auto"``   ``engine=``
``owner``         ``None``     ``owner=``
``method``        ``"auto"``   ``method=``
``uid``, ``gid``  ``None``     ``uid=``, ``gid=`` (numbers or names inside)
``persistent``    ``False``    ``persistent=``
``python``        ``python3``  the host's Python for the pushed helper
``host_timeout``  ``60``       seconds a fabns step on the host may take
``groups``        ``{}``       named target lists for ``fabns -H @name``
================= ============ ====================================================

Any other key in the subtree is a `~fabns.errors.ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabric import Config as FabricConfig

from fabns.engines import KNOWN_ENGINES
from fabns.errors import ConfigError
from fabns.runner import NamespaceRemote
from fabns.spec import METHODS

#: `NamespaceConnection` options that name the target, with their defaults.
TARGET_OPTIONS: dict[str, Any] = {
    "pid": None,
    "container": None,
    "engine": "auto",
    "owner": None,
    "method": "auto",
    "uid": None,
    "gid": None,
}
#: Every `NamespaceConnection` option the ``fabns`` subtree holds, with its default.
CONNECTION_OPTIONS: dict[str, Any] = {**TARGET_OPTIONS, "persistent": False}


class Config(FabricConfig):  # type: ignore[misc]
    """`fabric.Config` plus the ``fabns`` defaults.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
        Every connection option and ``groups`` are in the ``fabns`` subtree.
    """

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        defaults: dict[str, Any] = FabricConfig.global_defaults()
        defaults["fabns"] = {
            "python": "python3",
            "host_timeout": 60,
            "groups": {},
            **CONNECTION_OPTIONS,
        }
        defaults["runners"]["remote"] = NamespaceRemote
        return defaults


def as_fabns_config(config: Any) -> Config:
    """``config`` as a `Config` with the shell environment loaded, checked.

    ``None`` makes a new one (Fabric's config files load as usual); a plain
    Fabric or Invoke config is cloned into a `Config`, so the ``fabns`` subtree
    and its defaults exist. ``FABRIC_*`` variables (``FABRIC_FABNS_PYTHON``,
    ``FABRIC_SUDO_PASSWORD``...) are loaded in every case, below explicit
    overrides as always. An unknown key under ``fabns`` raises `ConfigError`.
    """
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        config = config.clone(into=Config)
    config.load_shell_env()
    assert isinstance(config, Config)
    check_config(config)
    return config


def check_config(config: Any) -> None:
    """Raise `ConfigError` for a key under ``fabns`` that fabns does not know."""
    subtree = _subtree(config)
    known = set(Config.global_defaults()["fabns"])
    unknown = sorted(str(key) for key in subtree if key not in known)
    if unknown:
        names = ", ".join(f"fabns.{key}" for key in unknown)
        raise ConfigError(
            f"unknown configuration key {names}; fabns knows {', '.join(sorted(known))}"
        )


def fabns_setting(config: Any, key: str, default: str) -> str:
    """Read ``fabns.KEY`` from any Fabric config, with a default for plain configs."""
    try:
        value = config.fabns[key]
    except (AttributeError, KeyError, TypeError):
        return default
    return str(value) if value else default


def connection_options(config: Any, **given: Any) -> dict[str, Any]:
    """The `NamespaceConnection` options: ``given`` ones (not ``None``) over the config's.

    ``pid`` and ``container`` go together: if either is given, neither comes
    from the config; a configured ``engine`` applies to containers only.
    Values from the config are checked here, so a bad one is a `ConfigError`
    naming its key (environment variables arrive as text:
    ``FABRIC_FABNS_PID=4242`` is the number 4242).
    """
    subtree = _subtree(config)
    options: dict[str, Any] = {}
    for key, default in CONNECTION_OPTIONS.items():
        value = subtree.get(key, default)
        options[key] = default if value is None else _checked(key, value)
    if given.get("pid") is not None or given.get("container") is not None:
        options.update(pid=None, container=None)
    options.update({key: value for key, value in given.items() if value is not None})
    if options["pid"] is not None and given.get("engine") is None:
        options["engine"] = "auto"  # a configured engine is for containers by name
    return options


def target_options(config: Any, **given: Any) -> dict[str, Any]:
    """`connection_options` without ``persistent``: `~fabns.spec.TargetSpec` fields."""
    options = connection_options(config, **given)
    del options["persistent"]
    return options


def group_members(config: Any, name: str) -> list[Any]:
    """The targets of ``fabns.groups.NAME``: a list (or a comma-separated string)."""
    groups = _subtree(config).get("groups") or {}
    if hasattr(groups, "keys") and not isinstance(groups, Mapping):
        groups = {key: groups[key] for key in groups.keys()}  # noqa: SIM118 (a DataProxy)
    if not isinstance(groups, Mapping):
        raise ConfigError(f"fabns.groups must map group names to target lists, not {groups!r}")
    if name not in groups:
        known = ", ".join(sorted(map(str, groups))) or "none are configured"
        raise ConfigError(f"no group {name!r} in fabns.groups ({known})")
    members = groups[name]
    if isinstance(members, str):
        members = [m.strip() for m in members.split(",") if m.strip()]
    if not isinstance(members, list | tuple) or not members:
        raise ConfigError(f"fabns.groups.{name} must be a non-empty list of targets")
    for member in members:
        if not isinstance(member, str | Mapping):
            raise ConfigError(f"fabns.groups.{name}: not a target: {member!r}")
    return list(members)


def _subtree(config: Any) -> Mapping[str, Any]:
    try:
        subtree = config.fabns
    except (AttributeError, KeyError):
        return {}
    if not isinstance(subtree, Mapping) and not hasattr(subtree, "keys"):
        raise ConfigError(f"the fabns configuration must be a mapping, not {subtree!r}")
    return {key: subtree[key] for key in subtree.keys()}  # noqa: SIM118 (a DataProxy)


def _checked(key: str, value: Any) -> Any:
    """A config value for connection option ``key``, converted from text where needed."""
    if key == "pid":
        if isinstance(value, str) and value.isascii() and value.isdecimal():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"fabns.pid must be a positive number, not {value!r}")
    elif key in ("uid", "gid"):
        if isinstance(value, str) and value.isascii() and value.isdecimal():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"fabns.{key} must be a number or a name, not {value!r}")
    elif key == "persistent":
        words = {"true": True, "yes": True, "on": True, "1": True}
        words |= {"false": False, "no": False, "off": False, "0": False, "": False}
        if isinstance(value, str) and value.strip().lower() in words:
            value = words[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"fabns.persistent must be true or false, not {value!r}")
    elif key == "engine" and value not in KNOWN_ENGINES:
        raise ConfigError(f"fabns.engine: unknown engine {value!r}; choose from {KNOWN_ENGINES}")
    elif key == "method" and value not in METHODS:
        raise ConfigError(f"fabns.method: unknown method {value!r}; choose from {METHODS}")
    elif key in ("container", "owner") and not isinstance(value, str):
        raise ConfigError(f"fabns.{key} must be a name, not {value!r}")
    return value


__all__ = [
    "CONNECTION_OPTIONS",
    "TARGET_OPTIONS",
    "Config",
    "as_fabns_config",
    "check_config",
    "connection_options",
    "fabns_setting",
    "group_members",
    "target_options",
]
