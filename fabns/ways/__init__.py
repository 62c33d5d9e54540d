"""Ways into a target: each turns a user's command into what runs on the host.

One module per way in. Each defines a `WayIn` subclass with a ``name`` and a
``command()`` that returns a host shell script; the host session runs it with
the fixed host environment and host privilege when needed, and Fabric's runner
streams it. Add a way in by adding a module and listing its class in `ways`.

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
from fabns.quoting import env_assignment, join, quote
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
    def command(self, call: Call) -> str:
        """The host shell script that enters the target and runs ``call``."""


def stat_fields(pid: int | str) -> str:
    """Shell that puts the fields after ``(comm)`` of /proc/PID/stat into ``$1``...

    ``pid`` is a number or ``"$$"`` (the script's own). Fails (status 1) when the
    process is gone. ``comm`` may hold anything, even ``") "``: everything up to
    the *last* ``") "`` is dropped.
    """
    ref = "$$" if pid == "$$" else str(int(pid))
    return f"s=$(cat /proc/{ref}/stat 2>/dev/null) && s=${{s##*) }} && set -- $s"


class ShellWayIn(WayIn):
    """A way in that is a host shell script around a host tool (nsenter, lxc-attach).

    The script re-verifies the leader (`guard`), reports its own PID and start
    time, says ``ok`` and execs the tool, which runs `inner_command` inside.
    Everything after ``ok`` is the container's, so a failure of the tool itself
    is recognised afterwards only from its exit status and its own error line
    (`error_prefix`): that choice of exception is the only thing container
    output could influence, never what fabns does on the host.
    """

    #: Exit status of the host script when the leader fails verification.
    exit_changed: ClassVar[int] = 125
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
        fail = f"printf '{PRINTF_PREFIX}err:{self.nonce}:%s:%s:%s\\n'"
        gone = quote(f"process {pid} has exited")
        changed = quote(f"process {pid} was restarted or the PID reused")
        moved = quote(f"the namespaces of process {pid} changed")
        stop = f"exit {self.exit_changed}"
        return (
            f"{stat_fields(pid)} || {{ {fail} gone 3 {gone}; {stop}; }}; "
            f"case $1 in Z|X) {fail} gone 3 {gone}; {stop};; esac; "
            f'[ "${{20}}" = {quote(leader.start_time)} ] || '
            f"{{ {fail} changed 0 {changed}; {stop}; }}; "
            f"set -- $({quote(self.tool('readlink'))} {links} 2>/dev/null); "
            f'[ "$*" = {quote(expected)} ] || {{ {fail} changed 0 {moved}; {stop}; }}'
        )

    def inner_command(self, call: Call, *, environment: bool = True) -> str:
        """``/bin/sh -c INNER fabns [NAME=value...] -- SHELL HOME COMMAND``, quoted."""
        env = sorted(call.environment.items()) if environment else []
        assignments = " ".join(env_assignment(k, v) for k, v in env)
        tail = join(["--", call.shell, call.credentials.home, call.command])
        return f"{join(['/bin/sh', '-c', self.INNER, 'fabns'])} {assignments} {tail}"

    def host_script(self, tool_command: str) -> str:
        """Guard, report our PID and start time, say ``ok``, exec ``tool_command``."""
        return (
            f"{self.guard()}; {stat_fields('$$')}; "
            f"printf '{PRINTF_PREFIX}pid:{self.nonce}:%s:%s\\n{PRINTF_PREFIX}ok:{self.nonce}\\n' "
            f'$$ "${{20}}"; exec {tool_command}'
        )


def kill_group_command(host_pid: int, start: str, signal: str) -> str:
    """Host script that signals the process group of ``host_pid``.

    Only if that PID still has the start time its host side reported (so a
    reused PID is never hit), and never a group below 2. The group is field 5
    of ``/proc/PID/stat``.
    """
    if not str(start).isdigit() or int(host_pid) <= 1:
        raise ValueError(f"refusing to signal PID {host_pid!r} (start time {start!r})")
    return (
        f"{stat_fields(host_pid)} || exit 0; "
        f'[ "${{20}}" = {int(start)} ] && [ "$3" -gt 1 ] && kill -s {signal} -- "-$3"; exit 0'
    )


def ways() -> dict[str, type[WayIn]]:
    """Every way in, by ``method=`` name."""
    from fabns.ways.lxc_attach import LxcAttach
    from fabns.ways.nsenter import Nsenter
    from fabns.ways.setns import Setns

    return {way.name: way for way in (Nsenter, Setns, LxcAttach)}
