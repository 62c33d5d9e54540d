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
from fabns.markers import PREFIX
from fabns.quoting import join, quote
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
    """

    #: The ``method=`` value that selects this way in.
    name: ClassVar[str]
    #: Host programs it needs (checked when the target is resolved).
    tools: ClassVar[tuple[str, ...]] = ()

    def __init__(self, leader: Leader, *, nonce: str, python: str, host_user: str = "") -> None:
        self.leader = leader
        self.nonce = nonce
        self.python = python
        self.host_user = host_user

    @abstractmethod
    def command(self, call: Call) -> str:
        """The host shell command that enters the target and runs ``call``."""


#: The marker prefix as a printf(1) format (``\\037`` is the unit separator byte).
PRINTF_MARK = "\\037" + PREFIX[1:].decode()


class ShellWayIn(WayIn):
    """A way in that is a host shell script around a host tool (nsenter, lxc-attach).

    The script first re-verifies the leader (`guard`), reports its PID, then
    execs the tool, which runs `inner_command` inside the target.
    """

    #: Exit status of the host script when the leader fails verification.
    exit_changed: ClassVar[int] = 125

    def guard(self) -> str:
        """Shell that exits with an ``err`` marker unless the leader is unchanged."""
        leader = self.leader
        pid = int(leader.pid)
        names = sorted(leader.namespaces)
        links = " ".join(f"/proc/{pid}/ns/{n}" for n in names)
        expected = " ".join(f"{n}:[{leader.namespaces[n]}]" for n in names)
        fail = f"printf '{PRINTF_MARK}err:{self.nonce}:%s:%s:%s\\n'"
        gone = quote(f"process {pid} has exited")
        changed = quote(f"process {pid} was restarted or the PID reused")
        moved = quote(f"the namespaces of process {pid} changed")
        stop = f"exit {self.exit_changed}"
        return (
            f"s=$(cat /proc/{pid}/stat 2>/dev/null) || {{ {fail} gone 3 {gone}; {stop}; }}; "
            f"s=${{s##*) }}; set -- $s; case $1 in Z|X) {fail} gone 3 {gone}; {stop};; esac; "
            f'[ "${{20}}" = {quote(leader.start_time)} ] || '
            f"{{ {fail} changed 0 {changed}; {stop}; }}; "
            f'set -- $(readlink {links} 2>/dev/null); [ "$*" = {quote(expected)} ] || '
            f"{{ {fail} changed 0 {moved}; {stop}; }}"
        )

    def inner_script(self) -> str:
        """Runs inside the target: report entry, go home, run the command."""
        return (
            f"printf '{PRINTF_MARK}ok:{self.nonce}\\n'; "
            'cd -- "$2" 2>/dev/null || cd /; '
            's=$1; [ -x "$s" ] || s=/bin/sh; exec "$s" -c "$3"'
        )

    def inner_command(self, call: Call) -> str:
        """``/bin/sh -c INNER fabns SHELL HOME COMMAND``, quoted."""
        return join(
            ["/bin/sh", "-c", self.inner_script(), "fabns", call.shell,
             call.credentials.home, call.command]
        )  # fmt: skip

    def host_script(self, tool_command: str) -> str:
        """Guard, report the host PID, then exec ``tool_command``."""
        return (
            f"{self.guard()}; printf '{PRINTF_MARK}pid:{self.nonce}:%s\\n' $$; exec {tool_command}"
        )


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
    from fabns.ways.lxc_attach import LxcAttach
    from fabns.ways.nsenter import Nsenter
    from fabns.ways.setns import Setns

    return {way.name: way for way in (Nsenter, Setns, LxcAttach)}
