"""What the user asked for: a target on a host, validated in one place.

`TargetSpec` is the one parser of ``[user@]host[:port]/container`` and
``[user@]host[:port]/pid:N`` strings, used by `NamespaceConnection`, the
command line and the examples alike. It only checks what can be checked
without the host (types, ranges, names that cannot be options); resolving it
is `fabns.session.TargetSession`'s job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fabns.accounts import check_id
from fabns.engines import KNOWN_ENGINES
from fabns.errors import InvalidArgument
from fabns.quoting import check_text

#: Every value ``method=`` accepts.
METHODS = ("auto", "nsenter", "setns", "lxc-attach")


@dataclass(frozen=True)
class TargetSpec:
    """A target: which process or container on which host, found and entered how, as whom.

    :param pid: a host PID inside the target's namespaces.
    :param container: a container name, found by ``engine``.
    :param engine: ``"auto"``, ``"machined"``, ``"lxc"``, ``"podman"`` or ``"docker"``.
    :param owner: host user owning an unprivileged container.
    :param method: the way in (``"auto"``, ``"nsenter"``, ``"setns"``, ``"lxc-attach"``).
    :param uid: user inside (number or name, looked up inside); default root.
    :param gid: group inside; default the user's primary group.
    :param host: the SSH host (``None`` where the caller gives it separately).
    :param user: the SSH user, if given in the string.
    :param port: the SSH port, if given in the string.

    .. versionadded:: 0.2
    """

    pid: int | None = None
    container: str | None = None
    engine: str = "auto"
    owner: str | None = None
    method: str = "auto"
    uid: int | str | None = None
    gid: int | str | None = None
    host: str | None = None
    user: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        pid, container = self.pid, self.container
        if (pid is None) == (container is None):
            raise InvalidArgument("give exactly one of pid= or container=")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
            raise InvalidArgument(f"pid must be a positive integer, not {pid!r}")
        if self.engine not in KNOWN_ENGINES:
            raise InvalidArgument(f"unknown engine {self.engine!r}; choose from {KNOWN_ENGINES}")
        if self.method not in METHODS:
            raise InvalidArgument(f"unknown method {self.method!r}; choose from {METHODS}")
        if container is not None:
            if not isinstance(container, str):
                raise InvalidArgument(f"container must be a name, not {container!r}")
            check_text(container, "the container name")
            if not container or self.engine == "pid":
                raise InvalidArgument(
                    f"not a container name for engine {self.engine!r}: {container!r}"
                )
        if pid is not None and self.engine not in ("auto", "pid"):
            raise InvalidArgument(
                f"engine={self.engine!r} finds containers by name; pid= needs none"
            )
        if self.owner is not None:
            if not isinstance(self.owner, str):
                raise InvalidArgument(f"owner must be a user name, not {self.owner!r}")
            check_text(self.owner, "the owner")
            if not self.owner or self.owner.startswith("-") or ":" in self.owner:
                raise InvalidArgument(f"not a user name: {self.owner!r}")
        check_id(self.uid, "uid")
        check_id(self.gid, "gid")
        if self.port is not None and not (
            isinstance(self.port, int)
            and not isinstance(self.port, bool)
            and 0 < self.port < 65536
        ):
            raise InvalidArgument(f"not a port: {self.port!r}")
        if self.host is not None:
            check_text(self.host, "the host")
            if not self.host or "/" in self.host:
                raise InvalidArgument(f"not a host: {self.host!r}")

    @classmethod
    def parse(cls, text: str, **options: Any) -> TargetSpec:
        """``[user@]host[:port]/container`` or ``.../pid:N``, plus keyword ``options``.

        The part after ``/`` may be left out when ``options`` hold ``pid`` or
        ``container``; a target in the string wins over them::

            TargetSpec.parse("root@web1:2222/app", method="setns")
            TargetSpec.parse("web1/pid:4242")
        """
        if not isinstance(text, str):
            raise InvalidArgument(f"not a target string: {text!r}")
        address, slash, name = text.partition("/")
        user, _, hostport = address.rpartition("@")
        host, colon, port = hostport.partition(":")
        if not host:
            raise InvalidArgument(f"no host in {text!r}")
        if colon and not port.isdigit():
            raise InvalidArgument(f"bad port in {text!r}")
        values: dict[str, Any] = dict(options)
        values.update(host=host, user=user or values.get("user"))
        if port:
            values["port"] = int(port)
        if slash:
            values.pop("pid", None)
            values.pop("container", None)
            if name.startswith("pid:"):
                if not name[4:].isdigit():
                    raise InvalidArgument(f"bad PID in {text!r}")
                values["pid"] = int(name[4:])
            elif name:
                values["container"] = name
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InvalidArgument(f"unknown target options: {sorted(unknown)}")
        if values.get("pid") is None and values.get("container") is None:
            raise InvalidArgument(f"{text!r} names no target: add /container or /pid:N")
        return cls(**values)

    def replace(self, **changes: Any) -> TargetSpec:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)

    @property
    def key(self) -> str:
        """``pid=N`` or ``container=NAME``."""
        return f"pid={self.pid}" if self.pid is not None else f"container={self.container}"

    @property
    def label(self) -> str:
        """A short name for file names and output prefixes: the container or ``pid-N``."""
        return self.container if self.container is not None else f"pid-{self.pid}"

    def address(self) -> str:
        """``[user@]host[:port]`` (empty without a host)."""
        if self.host is None:
            return ""
        text = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.user}@{text}" if self.user else text

    def __str__(self) -> str:
        name = self.container if self.container is not None else f"pid:{self.pid}"
        return f"{self.address()}/{name}"

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `NamespaceConnection` (``host`` first)."""
        values = asdict(self)
        return {k: v for k, v in values.items() if v is not None or k in ("host",)}


__all__ = ["METHODS", "TargetSpec"]
