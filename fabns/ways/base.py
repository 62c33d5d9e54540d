"""The base of the ways in: `WayIn`, and `ShellWayIn` for host-tool ways.

Each way in turns a user's command into the host shell script that enters the
target and runs it; the host session runs that script with the fixed host
environment and host privilege when needed, and Fabric's runner streams it.

The rule every way in keeps: the host side -- the script before it execs the
tool, or the setns helper before execve -- is the only thing that writes marker
lines, and it writes all of them (``pid``, then ``ok`` or ``err``) before the
container's first instruction. The container's environment is applied only
after entering; the host side never runs with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fabns.accounts import Credentials
from fabns.errors import ToolMissing
from fabns.markers import PRINTF_PREFIX
from fabns.quoting import check_env_name, join, quote
from fabns.remote.protocol import EXIT_SETUP_FAILED, MARKER_ERROR, MARKER_OK, MARKER_PID
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
    :param host_user: the SSH user's name on the host.
    :param tools: absolute paths of the host's programs (`fabns.host.HOST_TOOLS`).
    """

    #: The ``method=`` value that selects this way in.
    name: ClassVar[str]
    #: Host programs it needs (checked when the target is resolved).
    tools: ClassVar[tuple[str, ...]] = ()
    #: What the tool prints first when *it* fails (``"nsenter: "``), if anything.
    error_prefix: ClassVar[str | None] = None

    def __init__(
        self,
        leader: Leader,
        *,
        nonce: str,
        python: str,
        host_user: str = "",
        tools: Mapping[str, str | None] | None = None,
    ) -> None:
        self.leader = leader
        self.nonce = nonce
        self.python = python
        self.host_user = host_user
        self.host_tools = dict(tools or {})

    def tool(self, name: str) -> str:
        """Absolute host path of ``name``; `ToolMissing` if the host has none."""
        path = self.host_tools.get(name)
        if not path:
            raise ToolMissing(f"method={self.name!r} needs {name} on {self.leader.host}")
        return path

    @abstractmethod
    def command(self, call: Call) -> HostCommand:
        """The host script (and its arguments) that enters the target and runs ``call``."""


#: Shell function: ``fabns_stat PID`` sets ``state``, ``pgrp`` and ``start`` (fields 3, 5
#: and 22 of /proc/PID/stat) or fails when the process is gone. ``comm`` may hold
#: anything, even ``") "``: everything up to the *last* ``") "`` is dropped. A
#: function, so its ``set --`` leaves the script's own arguments alone.
STAT_FUNCTION = (
    'fabns_stat() { s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; '
    "set -- $s; state=$1; pgrp=$3; start=${20}; }"
)


@dataclass(frozen=True)
class HostCommand:
    """A host shell script and the arguments it receives as ``"$@"``.

    Arguments are quoted once, on the SSH command line, whatever the nesting of
    the script: a command full of quotes does not grow with each level.
    """

    script: str
    args: tuple[str, ...] = ()


class ShellWayIn(WayIn):
    """A way in that is a host shell script around a host tool (nsenter, lxc-attach).

    The script re-verifies the leader (`guard`), reports its own PID and start
    time, says ``ok`` and execs the tool, which runs `INNER` inside with the
    script's arguments: ``[NAME=value...] -- SHELL HOME COMMAND``.
    Everything after ``ok`` is the container's, so a failure of the tool itself
    is recognised afterwards only from its exit status and its own error line
    (`error_prefix`): that choice of exception is the only thing container
    output could influence, never what fabns does on the host.
    """

    #: Exit status of the host script when the leader fails verification.
    exit_changed: ClassVar[int] = EXIT_SETUP_FAILED
    #: Runs inside: export ``NAME=value`` arguments up to ``--``, go home, run the command.
    #: No shell variables: an exported name could overwrite them.
    INNER: ClassVar[str] = (
        'while [ "$1" != -- ]; do command export "$1" 2>/dev/null; shift; done; shift; '
        'cd -- "$2" 2>/dev/null || cd /; '
        '[ -x "$1" ] && exec "$1" -c "$3"; exec /bin/sh -c "$3"'
    )

    def guard(self) -> str:
        """Shell that exits with an ``err`` marker unless the leader is unchanged."""
        leader = self.leader
        pid = int(leader.pid)
        names = sorted(leader.namespaces)
        links = " ".join(f"/proc/{pid}/ns/{n}" for n in names)
        expected = " ".join(f"{n}:[{leader.namespaces[n]}]" for n in names)
        fail = f"printf '{PRINTF_PREFIX}{MARKER_ERROR}:{self.nonce}:%s:%s:%s\\n'"
        gone = quote(f"process {pid} has exited")
        changed = quote(f"process {pid} was restarted or the PID reused")
        moved = quote(f"the namespaces of process {pid} changed")
        stop = f"exit {self.exit_changed}"
        readlink = quote(self.tool("readlink"))
        return (
            f"{STAT_FUNCTION}; "
            f"fabns_ns() {{ set -- $({readlink} {links} 2>/dev/null); "
            f'[ "$*" = {quote(expected)} ]; }}; '
            f"fabns_stat {pid} || {{ {fail} gone 3 {gone}; {stop}; }}; "
            f"case $state in Z|X) {fail} gone 3 {gone}; {stop};; esac; "
            f'[ "$start" = {quote(leader.start_time)} ] || '
            f"{{ {fail} changed 0 {changed}; {stop}; }}; "
            f"fabns_ns || {{ {fail} changed 0 {moved}; {stop}; }}"
        )

    def inner_args(self, call: Call, *, environment: bool = True) -> tuple[str, ...]:
        """``[NAME=value...] -- SHELL HOME COMMAND``: what `INNER` receives."""
        env = sorted(call.environment.items()) if environment else []
        for key, _ in env:
            check_env_name(key)
        assignments = [f"{k}={v}" for k, v in env]
        return (*assignments, "--", call.shell, call.credentials.home, call.command)

    def inner_command(self) -> str:
        """``/bin/sh -c INNER fabns "$@"``: the tool's command, passing the script's arguments."""
        return f'{join(["/bin/sh", "-c", self.INNER, "fabns"])} "$@"'

    def host_script(self, tool_command: str) -> str:
        """Guard, report our PID and start time, say ``ok``, exec ``tool_command``."""
        return (
            f"{self.guard()}; fabns_stat $$; "
            f"printf '{PRINTF_PREFIX}{MARKER_PID}:{self.nonce}:%s:%s\\n"
            f"{PRINTF_PREFIX}{MARKER_OK}:{self.nonce}\\n' "
            f'$$ "$start"; exec {tool_command}'
        )


def kill_group_command(host_pid: int, start: str, signal: str) -> str:
    """Host script that signals the process group of ``host_pid``.

    Only if that PID still has the start time its host side reported (so a
    reused PID is never hit), and never a group below 2. The group is field 5
    of ``/proc/PID/stat``.
    """
    if not (str(start).isascii() and str(start).isdecimal()) or int(host_pid) <= 1:
        raise ValueError(f"refusing to signal PID {host_pid!r} (start time {start!r})")
    return (
        f"{STAT_FUNCTION}; fabns_stat {int(host_pid)} || exit 0; "
        f'[ "$start" = {int(start)} ] && [ "$pgrp" -gt 1 ] && kill -s {signal} -- "-$pgrp"; exit 0'
    )


__all__ = ["STAT_FUNCTION", "Call", "HostCommand", "ShellWayIn", "WayIn", "kill_group_command"]
