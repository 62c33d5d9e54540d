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

from fabns.errors import EngineUnavailable, ToolMissing
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

    An engine says which host command looks a name up (`argv`) and what its
    answer means (`parse`); `fabns.engines.find_leader` runs the lookups of
    every engine it asks in one host step (`fabns.engines.batch`).

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
    #: Whether root's containers can only be listed as root (False: machined
    #: answers any user over D-Bus).
    needs_root: ClassVar[bool] = True

    def __init__(self, host: HostSession, owner: str | None) -> None:
        self.host = host
        self.owner = owner

    @abstractmethod
    def argv(self, name: str) -> list[str]:
        """The lookup of ``name``: `tool` (by name) and its arguments."""

    @abstractmethod
    def parse(self, name: str, result: HostResult) -> Found | None:
        """The container called ``name`` from the lookup's ``result``, or None if this
        engine does not know it.

        Raises `ContainerStopped` for a known but stopped container and
        `EngineUnavailable` when the tool could not answer.
        """

    def lookup(self, name: str) -> Lookup:
        """The host command that looks ``name`` up: as the owner (with the owner's
        runtime directory and bus) when there is one, else as root when the engine
        `needs_root`. The tool runs by its absolute path with the fixed host
        environment; root needs no sudo.
        """
        host = self.host
        facts = host.facts()
        argv = self.argv(name)
        path = host.tool(argv[0])
        if path is None:
            raise ToolMissing(f"{argv[0]} is not installed on {host.name}")
        command = join([path, *argv[1:]])
        if self.owner is not None:
            uid, home = host.account(self.owner)
            env = join(owner_session_env(uid, home))
            if self.owner == facts.name:
                return Lookup(self, name, f"{env} {command}", elevated=False)
            runuser = host.tool("runuser")
            if runuser is None:
                raise ToolMissing(f"runuser is not installed on {host.name} (owner=)")
            # from /: the owner may not enter the SSH user's working directory
            command = f"cd / && {quote(runuser)} -u {quote(self.owner)} -- {env} {command}"
            return Lookup(self, name, command, elevated=facts.uid != 0)
        return Lookup(self, name, command, elevated=self.needs_root and facts.uid != 0)

    def unavailable(self, result: HostResult, what: str) -> EngineUnavailable:
        """`EngineUnavailable` for a failed lookup, with the tool's first error line only."""
        first = (result.stderr.strip() or f"exit {result.exited}").splitlines()[0]
        return EngineUnavailable(f"{what} failed on {self.host.name}: {first}")

    def answer(self, lookup: Lookup, result: HostResult) -> Found | None:
        """What ``result`` of ``lookup`` means (see `parse`); `ToolMissing` if the
        tool was not there to answer."""
        if result.exited == 127 and "not found" in result.stderr:
            raise ToolMissing(
                f"{self.tool} is not installed on {self.host.name}: {result.stderr.strip()}"
            )
        return self.parse(lookup.name, result)


@dataclass(frozen=True)
class Lookup:
    """One engine's lookup of one name, as one host command.

    :param engine: the engine asking (and for whom: its ``owner``).
    :param name: the container name looked up.
    :param script: the host shell command (before host privilege).
    :param elevated: whether it runs with host privilege (sudo).
    """

    engine: Engine
    name: str
    script: str
    elevated: bool


__all__ = ["AUTO_ORDER", "KNOWN_ENGINES", "Engine", "Found", "Lookup"]
