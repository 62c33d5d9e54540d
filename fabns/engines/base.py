"""The engine base class: what turns a container name into a leader PID on the host.

One module per engine (``fabns.engines.lxc`` ...), one table in
``fabns.engines``. An engine runs the host's own tool (``machinectl``, ``lxc-ls``, ``podman``,
``docker``) -- as the container's owner where that matters -- and returns
the leader PID; the connection then probes and verifies that PID like any
``pid=`` target. ``engine="auto"`` asks every engine present on the host, in
the order of `AUTO_ORDER`, and refuses to guess when two know the name.

Container names are untrusted: they reach a shell only through
`fabns.quoting.quote`, after ``--`` where the tool takes options, and the
list-style lookups (``lxc-ls``) match names in Python, not in the shell.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from fabns.errors import ElevationRequired, EngineUnavailable, ToolMissing
from fabns.host import HostResult, HostSession, owner_session_env
from fabns.quoting import join, quote

#: The order ``engine="auto"`` tries the engines installed on the host.
AUTO_ORDER = ("machined", "lxc", "podman", "docker")
#: Every value ``engine=`` accepts.
KNOWN_ENGINES = ("auto", "pid", *AUTO_ORDER)


@dataclass(frozen=True)
class Found:
    """A container an engine knows, with its current leader PID."""

    engine: str
    name: str
    pid: int
    owner: str | None


class Engine(ABC):
    """Base class of the engines: find a container's leader PID by name.

    :param host: the host session that runs the lookups.
    :param owner: host user owning the container, or None for root's.
    """

    #: The ``engine=`` value.
    name: ClassVar[str]
    #: The host program whose presence means the engine is installed.
    tool: ClassVar[str]
    #: Whether every user has containers of their own (LXC, rootless Podman);
    #: False for system-wide engines (machined, Docker).
    per_user: ClassVar[bool] = False

    def __init__(self, host: HostSession, owner: str | None) -> None:
        self.host = host
        self.owner = owner

    @abstractmethod
    def find(self, name: str) -> Found | None:
        """The container called ``name``, or None if this engine does not know it.

        Raises `ContainerStopped` for a known but stopped container.
        """

    def run(self, argv: list[str], *, as_owner: bool = True, root: bool = True) -> HostResult:
        """Run a lookup on the host: as the owner (with the owner's runtime
        directory and bus) when there is one, else as root when ``root``.

        ``argv[0]`` is a tool name, run by its absolute path with the fixed
        host environment; root needs no sudo.
        """
        host = self.host
        facts = host.facts()
        path = host.tool(argv[0])
        if path is None:
            raise ToolMissing(f"{argv[0]} is not installed on {host.name}")
        command = join([path, *argv[1:]])
        if self.owner is not None and as_owner:
            uid, home = host.account(self.owner)
            env = join(owner_session_env(uid, home))
            if self.owner == facts.name:
                return self._checked(host.run(f"{env} {command}"))
            runuser = host.tool("runuser")
            if runuser is None:
                raise ToolMissing(f"runuser is not installed on {host.name} (owner=)")
            # from /: the owner may not enter the SSH user's working directory
            command = f"cd / && {quote(runuser)} -u {quote(self.owner)} -- {env} {command}"
            return self._checked(host.run_as_root(command))
        if root and facts.uid != 0:
            return self._checked(host.run_as_root(command))
        return self._checked(host.run(command))

    def unavailable(self, result: HostResult, what: str) -> EngineUnavailable:
        """`EngineUnavailable` for a failed lookup, with the tool's first error line only."""
        first = (result.stderr.strip() or f"exit {result.exited}").splitlines()[0]
        return EngineUnavailable(f"{what} failed on {self.host.name}: {first}")

    def _checked(self, result: HostResult) -> HostResult:
        err = result.stderr.strip()
        if err.startswith("sudo:") and result.exited == 1:
            raise ElevationRequired(
                f"looking up {self.name} containers on {self.host.name} needs root: {err}"
            )
        if result.exited == 127 and "not found" in err:
            raise ToolMissing(f"{self.tool} is not installed on {self.host.name}: {err}")
        return result


__all__ = ["AUTO_ORDER", "KNOWN_ENGINES", "Engine", "Found"]
