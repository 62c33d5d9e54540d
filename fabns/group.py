"""Groups of containers: Fabric's `~fabric.group.Group` API, one key per container.

::

    from fabns import NamespaceGroup, ThreadingNamespaceGroup

    web = ThreadingNamespaceGroup("web1/app", "web1/worker", "web2/app")
    for c, result in web.run("hostname", hide=True).items():
        print(c.target_spec, result.stdout.strip())
    web.get("/var/log/app.log")          # -> web1/app/app.log, web1/worker/app.log, ...

Members on the same host (same port and SSH user) share one SSH transport:
one handshake per host, whatever the number of containers -- and fabns's own
host steps (who the SSH user is, which tools, host privilege) are asked once.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fabric import Connection, Group, GroupResult
from fabric.exceptions import GroupException

from fabns.config import as_fabns_config, group_members
from fabns.connection import NamespaceConnection
from fabns.errors import ConfigError, InvalidArgument
from fabns.spec import TargetSpec

#: What a group (or ``fabns -H``) accepts as one target.
Target = str | TargetSpec | NamespaceConnection | Mapping[str, Any]

#: How many members a `ThreadingNamespaceGroup` runs at once by default: below
#: OpenSSH's ``MaxSessions`` (10 channels per SSH connection) for one shared host.
DEFAULT_WORKERS = 8


def expand_targets(targets: Iterable[Any], config: Any) -> list[Any]:
    """``targets`` with each ``"@name"`` replaced by the members of ``fabns.groups.name``.

    Groups may name other groups; a loop is a `~fabns.errors.ConfigError`.
    """
    expanded: list[Any] = []

    def add(items: Iterable[Any], trail: tuple[str, ...]) -> None:
        for item in items:
            if isinstance(item, str) and item.startswith("@"):
                name = item[1:]
                if name in trail:
                    loop = " -> ".join(f"@{n}" for n in (*trail, name))
                    raise ConfigError(f"fabns.groups loop: {loop}")
                add(group_members(config, name), (*trail, name))
            else:
                expanded.append(item)

    add(targets, ())
    return expanded


def connection_for(target: Target, **kwargs: Any) -> NamespaceConnection:
    """A `NamespaceConnection` for one target.

    ``target`` is a ``[user@]host[:port]/container`` (or ``/pid:N``) string, a
    `~fabns.spec.TargetSpec`, a connection (returned as it is), or a mapping of
    `NamespaceConnection` keyword arguments whose ``host`` may name the target
    too (``{"host": "web1/app", "method": "setns"}``, as in ``fabns.groups``).
    ``kwargs`` are defaults for strings, specs and mappings.
    """
    if isinstance(target, NamespaceConnection):
        return target
    if isinstance(target, Connection):
        raise InvalidArgument(f"{target!r} is a plain fabric.Connection: give its target instead")
    if isinstance(target, Mapping):
        options = {**kwargs, **target}
        host = options.pop("host", None)
        if not isinstance(host, str):
            raise InvalidArgument(f"a target mapping needs a host: {dict(target)!r}")
        return NamespaceConnection.from_spec(host, **options)
    if isinstance(target, str | TargetSpec):
        return NamespaceConnection.from_spec(target, **kwargs)
    raise InvalidArgument(f"not a target: {target!r}")


def share_transports(connections: Iterable[NamespaceConnection]) -> None:
    """Put connections that log in to the same host the same way on one SSH transport.

    Same host, port, user, ``connect_kwargs`` and gateway: one transport (see
    `NamespaceConnection.share_transport`). Members already connected keep
    their own, except the first, which the others then join.
    """
    buckets: dict[tuple[Any, ...], list[NamespaceConnection]] = {}
    for c in connections:
        buckets.setdefault((c.host, c.port, c.user), []).append(c)
    for members in buckets.values():
        while members:
            hub = next((c for c in members if c.is_connected), members[0])
            same = [
                c
                for c in members
                if c.connect_kwargs == hub.connect_kwargs and c.gateway == hub.gateway
            ]
            for c in same:
                if c is not hub and not c.is_connected:
                    c.share_transport(with_=hub)
            members = [c for c in members if c not in same]


class NamespaceGroup(Group):  # type: ignore[misc]
    """Fabric's `~fabric.group.SerialGroup` for targets: members run one after the other.

    ::

        group = NamespaceGroup("web1/app", "root@web2:2222/pid:4242", method="setns")
        results = group.run("uname -r", hide=True)   # a fabric GroupResult
        results[group[0]].stdout

    :param targets: target strings, `~fabns.spec.TargetSpec` s,
        `NamespaceConnection` s or mappings (see `connection_for`); ``"@name"``
        means the members of ``fabns.groups.name`` in the config.
    :param share: members on the same host share one SSH transport (default).
    :param kwargs: `NamespaceConnection` arguments for members made from
        strings, specs and mappings (``config=``, ``connect_kwargs=``,
        ``method=``...).

    ``run``, ``sudo``, ``put``, ``get`` and ``each`` return a `~fabric.group.GroupResult`
    keyed by member -- one key per container, even for several containers on
    one host -- or raise `~fabric.exceptions.GroupException` holding it when any
    member failed, as Fabric's groups do. ``get`` saves to
    ``{host}/{target}/`` by default (the target is the container name or
    ``pid-N``). Closing the group (or leaving its ``with`` block) closes every
    member, and each shared transport once.

    .. versionadded:: 0.2
    """

    def __init__(self, *targets: Target, share: bool = True, **kwargs: Any) -> None:
        list.__init__(self)
        if any(isinstance(t, str) and t.startswith("@") for t in targets):
            targets = tuple(expand_targets(targets, as_fabns_config(kwargs.get("config"))))
        members = [connection_for(t, **kwargs) for t in targets]
        seen: dict[NamespaceConnection, NamespaceConnection] = {}
        for c in members:
            if c in seen:
                raise InvalidArgument(f"{c!r} is twice in the group")
            seen[c] = c
        self.extend(members)
        if share:
            share_transports(members)

    @classmethod
    def from_connections(cls, connections: Iterable[NamespaceConnection]) -> NamespaceGroup:
        """A group of existing `NamespaceConnection` s (sharing transports where they can)."""
        return cls(*connections)

    def each(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> GroupResult:
        """``function(member, *args, **kwargs)`` for every member, like `run`.

        The way to run a task (any function taking a connection first, such as
        a Fabric ``@task``) over the group -- serially here, in threads in a
        `ThreadingNamespaceGroup`. Returns a `~fabric.group.GroupResult` of
        what it returned, or raises `~fabric.exceptions.GroupException`.
        """
        return self._each(lambda c: function(c, *args, **kwargs))

    def _each(self, action: Callable[[NamespaceConnection], Any]) -> GroupResult:
        """``action`` on every member, in order; `GroupException` if any raised."""
        results = GroupResult()
        failed = False
        for c in self:
            try:
                results[c] = action(c)
            except Exception as error:
                results[c] = error
                failed = True
        if failed:
            raise GroupException(results)
        return results

    def _do(self, method: str, *args: Any, **kwargs: Any) -> GroupResult:
        return self._each(lambda c: getattr(c, method)(*args, **kwargs))

    def _transfer(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._each(self._tidy(lambda c: getattr(c, method)(*args, **kwargs)))

    @staticmethod
    def _tidy(action: Callable[[NamespaceConnection], Any]) -> Callable[..., Any]:
        """``action``, then the member's SFTP channel closed if its transport is shared
        (an idle one per member would reach the server's ``MaxSessions``)."""

        def tidied(c: NamespaceConnection) -> Any:
            try:
                return action(c)
            finally:
                if c._shared is not None:
                    c.close_sftp()

        return tidied

    def put(self, *args: Any, **kwargs: Any) -> GroupResult:
        """`NamespaceConnection.put` on every member (the same local file for each).

        A file-like ``local`` is read once, from its start (its position is
        left as it was), and each member is sent those bytes.
        """
        local: Any = args[0] if args else kwargs.get("local")
        if hasattr(local, "read"):
            position = local.tell()
            local.seek(0)
            data = local.read()
            local.seek(position)
            rest = args[1:]
            kwargs.pop("local", None)

            def action(c: NamespaceConnection) -> Any:
                return c.put(io.BytesIO(data), *rest, **kwargs)

            return self._each(self._tidy(action))
        return self._transfer("put", args, kwargs)

    def get(self, *args: Any, **kwargs: Any) -> GroupResult:
        """`NamespaceConnection.get` on every member.

        ``local`` defaults to ``"{host}/{target}/"``: one directory per
        container (Fabric's groups use ``"{host}/"``, which two containers on
        one host would share). A file-like ``local`` is refused.
        """
        local = args[1] if len(args) > 1 else kwargs.get("local")
        if local is None:
            args = args[:1]
            kwargs["local"] = "{host}/{target}/"
        elif hasattr(local, "write"):
            raise InvalidArgument("a group cannot get() into one file-like object")
        return self._transfer("get", args, kwargs)


class ThreadingNamespaceGroup(NamespaceGroup):
    """A `NamespaceGroup` whose members run concurrently, at most ``workers`` at once.

    :param workers: the bound (default `DEFAULT_WORKERS`, 8: OpenSSH allows 10
        channels per SSH connection, and members on one host share one).

    .. versionadded:: 0.2
    """

    workers: int = DEFAULT_WORKERS

    def __init__(self, *targets: Target, workers: int = DEFAULT_WORKERS, **kwargs: Any) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidArgument(f"workers must be a positive number, not {workers!r}")
        super().__init__(*targets, **kwargs)
        self.workers = workers

    def _each(self, action: Callable[[NamespaceConnection], Any]) -> GroupResult:
        results = GroupResult()
        if not self:
            return results
        workers = min(self.workers, len(self))
        with ThreadPoolExecutor(workers, thread_name_prefix="fabns-group") as pool:
            futures = [(c, pool.submit(action, c)) for c in self]
        failed = False
        for c, future in futures:
            error = future.exception()
            results[c] = future.result() if error is None else error
            failed = failed or error is not None
        if failed:
            raise GroupException(results)
        return results


__all__ = [
    "DEFAULT_WORKERS",
    "NamespaceGroup",
    "Target",
    "ThreadingNamespaceGroup",
    "connection_for",
    "expand_targets",
    "share_transports",
]
