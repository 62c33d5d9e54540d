"""The target session: a verified leader, the way in, and host privilege.

`TargetSession.open` resolves a `~fabns.spec.TargetSpec` on a
`~fabns.host.HostSession`: an engine names the leader PID (for a container),
the pushed helper probes and verifies it, the owner's word is checked, and the
way in is chosen. The session then builds each call's host command, opens the
in-target SFTP channel, kills a command's host process group, and translates
every entry failure (through `fabns.failures`). The runner and the transfers
use it; neither knows the connection.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import Any

from fabns.accounts import Credentials, merge_environment
from fabns.engines import Found, find_leader
from fabns.errors import (
    HelperError,
    HostTimeout,
    InvalidArgument,
    NamespaceError,
    NotALeader,
    PermissionDenied,
    TargetNotFound,
    ToolMissing,
)
from fabns.failures import from_exit, from_marker, tool_failure
from fabns.helper import helper_command
from fabns.host import Elevation, HostResult, HostSession
from fabns.markers import MarkerFilter
from fabns.quoting import check_text
from fabns.spec import TargetSpec
from fabns.target import Leader, decode_report, leader_from_probe
from fabns.ways import Call, HostCommand, WayIn, kill_group_command, ways
from fabns.ways.setns import entry_request

#: Files read from inside the target when it is resolved.
PROBE_FILES = ("/etc/passwd", "/etc/group")


class TargetSession:
    """One resolved target on one host.

    :param host: the host session it runs on.
    :param spec: what was asked for.
    :param leader: the verified leader.
    :param way: the way in.
    :param elevation: host privilege for entering.
    :param nonce: the marker nonce of the connection.
    :param python: the host's Python for the helper.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        host: HostSession,
        spec: TargetSpec,
        leader: Leader,
        way: WayIn,
        elevation: Elevation,
        nonce: str,
        python: str,
    ) -> None:
        self.host = host
        self.spec = spec
        self.leader = leader
        self.way = way
        self.elevation = elevation
        self.nonce = nonce
        self.python = python

    def __repr__(self) -> str:
        return f"<TargetSession {self.describe()} via {self.way.name}>"

    def describe(self) -> str:
        return self.leader.describe()

    # -- resolving -----------------------------------------------------------------

    @classmethod
    def open(cls, host: HostSession, spec: TargetSpec, nonce: str, python: str) -> TargetSession:
        """Find and verify ``spec`` on ``host`` and choose the way in.

        Raises `TargetNotFound`, `NotALeader`, `PermissionDenied`,
        `ElevationRequired`, `ToolMissing` or `UnknownUser` -- before anything
        runs in the target.
        """
        facts = host.facts()
        found = None
        if spec.container is not None:
            found = find_leader(host, spec.container, spec.engine, spec.owner)
            pid = found.pid
        else:
            assert spec.pid is not None
            pid = spec.pid
        request = {"mode": "probe", "pid": pid, "files": list(PROBE_FILES), "tools": []}
        command = helper_command(python, request)
        elevation = Elevation()
        report = _probe(host, command, elevation, python)
        if not report["target"].get("exists"):
            raise TargetNotFound(f"no process {pid} on {host.name}")
        if facts.uid != 0 and not _accessible(report):
            elevation = host.elevation()
            report = _probe(host, command, elevation, python)
            if not report["target"].get("exists"):
                raise TargetNotFound(f"no process {pid} on {host.name}")
        _check_probe(host, report, pid, elevation)
        leader = leader_from_probe(host.name, pid, report, elevated=elevation.active)
        leader = replace(leader, tools=facts.tools)
        if found is not None:
            owner_uid, owner_home = host.account(found.owner) if found.owner else (None, "/")
            if owner_uid:
                _check_owner(host, found, owner_uid, report)
            leader = replace(
                leader, engine=found.engine, name=found.name, owner=found.owner,
                owner_uid=owner_uid, owner_home=owner_home,
            )  # fmt: skip
        if not leader.differing:
            raise NotALeader(
                f"process {pid} on {host.name} shares every namespace with "
                f"the {'elevated ' if elevation.active else ''}SSH session: nothing to enter"
            )
        way = _choose_way(host, spec, leader, nonce, python)
        # Fail early on a bad uid/gid rather than at the first command.
        leader.book.credentials(spec.uid, spec.gid, default_root=True)
        return cls(host, spec, leader, way, elevation, nonce, python)

    # -- calls ---------------------------------------------------------------------

    def credentials(
        self, uid: int | str | None = None, gid: int | str | None = None
    ) -> Credentials:
        """Who a call runs as: ``uid``/``gid`` or the spec's, resolved inside."""
        if uid is None:
            uid, gid = self.spec.uid, self.spec.gid if gid is None else gid
        return self.leader.book.credentials(uid, gid, default_root=True)

    def call(
        self,
        command: str,
        env: dict[str, Any],
        *,
        uid: int | str | None = None,
        gid: int | str | None = None,
        shell: str | None = None,
    ) -> Call:
        """``command`` fully decided: credentials, the whole environment, the shell.
        `InvalidArgument` for text that cannot reach the target exactly."""
        creds = self.credentials(uid, gid)
        check_text(command, "the command")
        if shell is not None:
            check_text(shell, "the shell")
        return Call(
            command=command,
            credentials=creds,
            environment=merge_environment(self.leader.environment, creds, env),
            shell=shell or creds.shell,
        )

    def command_script(self, command: str, env: dict[str, Any], **options: Any) -> HostCommand:
        """The host script and its arguments (before host privilege) that run ``command``
        inside (``options`` as for `call`)."""
        return self.way.command(self.call(command, env, **options))

    def entry_failure(
        self, markers: MarkerFilter, exited: int, text: str
    ) -> NamespaceError | None:
        """The fabns exception for a call that ended with ``exited``, if entering failed.

        ``text`` is the host side's error output (stderr; stdout with a pty).
        """
        where, method = self.describe(), self.way.name
        if markers.entered:
            return tool_failure(exited, text, self.way.error_prefix, where, method)
        if markers.error is not None:
            return from_marker(markers.error, where, method)
        return from_exit(exited, text, where, method)

    def kill(self, host_pid: int, start: str, signame: str) -> None:
        """Signal a call's host process group (as its host side reported it)."""
        self.host.run(kill_group_command(host_pid, start, signame), self.elevation)

    def sftp_channel(self, temp_prefix: str) -> Any:
        """A channel with the helper serving SFTP from inside the target, entered.

        Raises the fabns exception for a failed entry; nothing of the SFTP
        stream is consumed.
        """
        request = {
            **entry_request("sftp", self.leader, self.nonce, self.credentials()),
            "temp_prefix": temp_prefix,
        }
        channel, _ = self._entered_channel(request)
        # a helper that stops answering (stopped, or stuck on a file inside)
        # fails the transfer after fabns.host_timeout instead of hanging it
        channel.settimeout(self.host.timeout)
        return channel

    def serve_channel(self) -> tuple[Any, int | None]:
        """A channel with a ``serve`` helper inside the target, entered, its frames next,
        and the helper's host PID.

        The helper runs with host privilege; who each command runs as is in
        its own request (`fabns.ways.setns.command_request`).
        """
        return self._entered_channel(
            entry_request("serve", self.leader, self.nonce, self.credentials())
        )

    def _entered_channel(self, request: dict[str, Any]) -> tuple[Any, int | None]:
        channel = self.host.start(helper_command(self.python, request), self.elevation)
        markers = MarkerFilter(self.nonce)
        # Only the helper's marker lines come before ``ok``; read them a byte at a
        # time so that nothing of the stream after it is consumed here.
        try:
            while not markers.done:
                byte = channel.recv(1)
                if not byte:
                    break
                markers.feed(byte)
        except TimeoutError as error:
            channel.close()
            raise HostTimeout(
                f"the fabns helper on {self.host.name} did not enter {self.describe()} "
                f"within {self.host.timeout:.0f} s (fabns.host_timeout)"
            ) from error
        if markers.entered:
            return channel, markers.host_pid
        stderr = b""
        while chunk := channel.recv_stderr(65536):
            stderr += chunk
        exited = channel.recv_exit_status()
        channel.close()
        failure = self.entry_failure(markers, exited, stderr.decode("utf-8", "replace"))
        assert failure is not None
        raise failure


# -- resolving, step by step ---------------------------------------------------------


def _probe(host: HostSession, command: str, elevation: Elevation, python: str) -> dict[str, Any]:
    result = host.run(command, elevation)
    report = decode_report(result.stdout)
    if report is not None and "target" in report:
        return report
    raise _probe_failure(host, result, python)


def _probe_failure(host: HostSession, result: HostResult, python: str) -> Exception:
    err = result.stderr.strip()
    if result.exited == 127 or (result.exited != 0 and "not found" in err):
        return ToolMissing(
            f"{python} not found on {host.name}; the fabns helper needs Python 3.6+ "
            f"(set fabns.python): {err}"
        )
    if err.startswith("sudo:"):
        return from_exit(result.exited, err, host.name, "the probe")
    return HelperError(f"the fabns probe failed on {host.name} (exit {result.exited}): {err}")


def _accessible(report: dict[str, Any]) -> bool:
    target = report["target"]
    inside = target.get("inside") or {}
    return bool(target.get("exists")) and "error" not in target and "error" not in inside


def _check_probe(
    host: HostSession, report: dict[str, Any], pid: int, elevation: Elevation
) -> None:
    target = report["target"]
    who = "root (via sudo)" if elevation.active else host.facts().name
    error = target.get("error") or (target.get("inside") or {}).get("error")
    if not error:
        return
    step, number = error.get("step"), error.get("errno")
    detail = str(error.get("detail", ""))
    if step == "gone":
        raise TargetNotFound(f"no process {pid} on {host.name}")
    if number in (errno.EPERM, errno.EACCES):
        raise PermissionDenied(
            f"{who} may not enter process {pid} on {host.name}: {step} {detail} failed "
            f"with {errno.errorcode[number]}"
        )
    raise HelperError(
        f"could not inspect process {pid} on {host.name}: {step} {detail} (errno {number})",
        step=str(step),
        errno=number,
        detail=detail,
    )


def _check_owner(host: HostSession, found: Found, owner_uid: int, report: dict[str, Any]) -> None:
    """An owner's lookup is the owner's word: enter only a leader in their user namespace.

    The leader's user namespace (or one above it) must have been created by the
    owner, and must not be the host's own.
    """
    userns = report["target"].get("userns") or {}
    owners = [o for o in userns.get("owners") or [] if isinstance(o, int)]
    if userns.get("own") or owner_uid not in owners:
        raise PermissionDenied(
            f"{found.engine} on {host.name}, asked as {found.owner}, named PID {found.pid} "
            f"for {found.name!r}, but that process is not in a user namespace of "
            f"{found.owner}'s (owners: {owners or 'the host'}); refusing to enter it"
        )


def auto_method(host: HostSession, leader: Leader) -> str:
    """``method="auto"``: the way in without a known race for this target.

    lxc-attach when the SSH user is the unprivileged owner of the LXC container
    (it also puts the command in the owner's cgroup); the setns helper for any
    other target in another user namespace (nsenter would fork into it
    dumpable, before switching credentials); otherwise nsenter where the host
    has it, else the setns helper.
    """
    owner = leader.owner
    lxc_owner = leader.engine == "lxc" and owner not in (None, "root")
    if lxc_owner and owner == host.facts().name and leader.tools.get("lxc-attach"):
        return "lxc-attach"
    if leader.new_userns:
        return "setns"
    return "nsenter" if leader.tools.get("nsenter") else "setns"


def _choose_way(
    host: HostSession, spec: TargetSpec, leader: Leader, nonce: str, python: str
) -> WayIn:
    method = auto_method(host, leader) if spec.method == "auto" else spec.method
    way_class = ways()[method]
    if method == "lxc-attach" and (leader.engine != "lxc" or not leader.name):
        raise InvalidArgument(
            f'method="lxc-attach" enters LXC containers only, not {leader.describe()}'
        )
    for tool in way_class.tools:
        if not leader.tools.get(tool):
            raise ToolMissing(
                f'method="{method}" needs {tool} on {host.name}, which is not installed '
                f'(or use method="setns", which needs only python3)'
            )
    return way_class(
        leader, nonce=nonce, python=python, host_user=host.facts().name, tools=leader.tools
    )


__all__ = ["PROBE_FILES", "TargetSession", "auto_method"]
