"""Ways into a target: each turns a user's command into what runs on the host.

One module per way in. Each defines a `WayIn` subclass with a ``name`` and a
``command()`` that returns a host shell command; the connection wraps it with
host privilege when needed and hands it to Fabric's runner. Add a way in by
adding a module and listing its class in `WAYS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fabns.accounts import Credentials
from fabns.target import Leader


@dataclass(frozen=True)
class Call:
    """One command to run inside the target, fully decided.

    :param command: the user's command (with ``cd()``/``prefix()`` applied).
    :param credentials: who it runs as.
    :param environment: its entire environment.
    :param shell: the shell that runs ``command`` (``shell -c command``).
    """

    command: str
    credentials: Credentials
    environment: Mapping[str, str]
    shell: str


class WayIn(ABC):
    """Base class of the ways in.

    :param leader: the verified target.
    :param nonce: the connection's marker nonce (see `fabns.markers`).
    :param python: the host's Python, for ways that push the helper.
    """

    #: The ``method=`` value that selects this way in.
    name: ClassVar[str]
    #: Host programs it needs (checked when the target is resolved).
    tools: ClassVar[tuple[str, ...]] = ()

    def __init__(self, leader: Leader, *, nonce: str, python: str) -> None:
        self.leader = leader
        self.nonce = nonce
        self.python = python

    @abstractmethod
    def command(self, call: Call) -> str:
        """The host shell command that enters the target and runs ``call``."""


def kill_group_command(host_pid: int, signal: str) -> str:
    """Host command that signals the process group of ``host_pid``.

    The group is read from ``/proc/PID/stat`` (field 5, after the
    parenthesised command name).
    """
    return (
        f"s=$(cat /proc/{int(host_pid)}/stat 2>/dev/null) || exit 0; "
        f"s=${{s##*) }}; set -- $s; kill -s {signal} -- -$3 2>/dev/null; exit 0"
    )


def ways() -> dict[str, type[WayIn]]:
    """Every way in, by ``method=`` name."""
    from fabns.ways.nsenter import Nsenter
    from fabns.ways.setns import Setns

    return {way.name: way for way in (Nsenter, Setns)}
