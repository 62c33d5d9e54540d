"""`NamespaceConnection`: a Fabric connection whose commands run inside a target.

The data path reads one way: this connection resolves its target to a
verified `~fabns.target.Leader` (once, lazily, on first use), picks a way in
(`fabns.ways`), and hands every command to `~fabns.runner.NamespaceRemote`,
Fabric's runner with the way in's wrapper around the command.
"""

from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass, replace
from typing import Any

import paramiko
from fabric import Connection

from fabns.accounts import Credentials, check_id, merge_environment
from fabns.config import Config, fabns_setting
from fabns.engines import KNOWN_ENGINES, find_leader
from fabns.errors import (
    ElevationRequired,
    EntryFailed,
    HelperError,
    InvalidArgument,
    NamespaceError,
    NotALeader,
    NotImplementedYet,
    PermissionDenied,
    TargetChanged,
    TargetNotFound,
    ToolMissing,
    UnknownUser,
)
from fabns.helper import helper_command
from fabns.host import Elevation, HostResult, run_on_host
from fabns.quoting import check_text, quote
from fabns.runner import NamespaceRemote
from fabns.target import Leader, decode_report, leader_from_probe
from fabns.ways import Call, WayIn, ways


@dataclass(frozen=True)
class HostAccount:
    """The SSH user on the host."""

    uid: int
    name: str


METHODS = ("auto", "nsenter", "setns", "lxc-attach")
PROBE_FILES = ("/etc/passwd", "/etc/group")


class NamespaceConnection(Connection):  # type: ignore[misc]
    """A `fabric.Connection` whose `run`, `sudo` (and more) happen inside a namespace.

    Connects to ``host`` over SSH like any Fabric connection, then enters the
    target on that host for every command::

        c = NamespaceConnection("web1", pid=4242)
        c.run("hostname")            # the container's hostname
        c.sudo("id -un", user="www") # as www, inside

    :param host: as for `fabric.Connection` (``user@host:port`` works).
    :param pid: the host PID of a process inside the target namespaces.
    :param container: a container name (resolved by ``engine``).
    :param engine: how to find ``container``: ``"auto"``, ``"machined"``,
        ``"lxc"``, ``"podman"`` or ``"docker"``.
    :param owner: the host user owning an unprivileged container.
    :param method: the way in: ``"auto"`` (nsenter when the host has it,
        else setns), ``"nsenter"``, ``"setns"`` or ``"lxc-attach"``.
    :param uid: user to run as inside (number or name looked up *inside*).
        Default: root of the target (like ``nsenter``).
    :param gid: group to run as inside; default the user's primary group.
    :param persistent: keep one entered helper for many commands.
    :param fabric_kwargs: everything else goes to `fabric.Connection`.

    .. versionadded:: 0.1
    """

    # Declared at class level: Invoke's DataProxy would turn new instance
    # attributes into config writes.
    target_pid: int | None = None
    container: str | None = None
    engine: str = "auto"
    owner: str | None = None
    method: str = "auto"
    ns_uid: int | str | None = None
    ns_gid: int | str | None = None
    persistent: bool = False
    fabns_nonce: str = ""
    _leader: Leader | None = None
    _way: WayIn | None = None
    _elevation: Elevation | None = None
    _host_account: HostAccount | None = None
    _host_uids: dict[str, int] | None = None

    def __init__(
        self,
        host: str,
        *,
        pid: int | None = None,
        container: str | None = None,
        engine: str = "auto",
        owner: str | None = None,
        method: str = "auto",
        uid: int | str | None = None,
        gid: int | str | None = None,
        persistent: bool = False,
        **fabric_kwargs: Any,
    ) -> None:
        if fabric_kwargs.get("config") is None:
            fabric_kwargs["config"] = Config()
        super().__init__(host, **fabric_kwargs)
        if (pid is None) == (container is None):
            raise InvalidArgument("give exactly one of pid= or container=")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
            raise InvalidArgument(f"pid must be a positive integer, not {pid!r}")
        if engine not in KNOWN_ENGINES:
            raise InvalidArgument(f"unknown engine {engine!r}; choose from {KNOWN_ENGINES}")
        if method not in METHODS:
            raise InvalidArgument(f"unknown method {method!r}; choose from {METHODS}")
        self._set(
            target_pid=pid,
            container=container,
            engine=engine,
            owner=owner,
            method=method,
            ns_uid=check_id(uid, "uid"),
            ns_gid=check_id(gid, "gid"),
            persistent=persistent,
            fabns_nonce=secrets.token_hex(8),
        )
        if container is not None:
            check_text(container, "the container name")
            if not container or engine == "pid":
                raise InvalidArgument(f"not a container name for engine {engine!r}: {container!r}")
        if owner is not None:
            check_text(owner, "the owner")
            if not owner or owner.startswith("-") or ":" in owner:
                raise InvalidArgument(f"not a user name: {owner!r}")
        if pid is not None and engine not in ("auto", "pid"):
            raise InvalidArgument(f"engine={engine!r} finds containers by name; pid= needs none")
        if persistent:
            raise NotImplementedYet("persistent=True is not implemented yet")

    def __repr__(self) -> str:
        return f"<NamespaceConnection {self.user}@{self.host}:{self.port} {self._target_key()}>"

    def _target_key(self) -> str:
        return f"pid={self.target_pid}" if self.target_pid else f"container={self.container}"

    def _identity(self) -> tuple[Any, ...]:
        return (self.host, self.user, self.port, self._target_key(), self.ns_uid, self.ns_gid)

    # -- resolving the target -------------------------------------------------

    @property
    def target(self) -> Leader:
        """The verified leader this connection enters (resolved on first use).

        ``c.target.engine``, ``.pid`` and ``c.method_name`` say what was used.
        """
        if self._leader is None:
            self.resolve()
        assert self._leader is not None
        return self._leader

    @property
    def method_name(self) -> str:
        """The way in in use (``"nsenter"``, ``"setns"``), after resolving."""
        if self._way is None:
            self.resolve()
        assert self._way is not None
        return self._way.name

    @property
    def elevation(self) -> Elevation:
        """How fabns gets host privilege for this target."""
        if self._elevation is None:
            self.resolve()
        assert self._elevation is not None
        return self._elevation

    def forget_target(self) -> None:
        """Drop the resolved leader and way in; the next use resolves afresh."""
        self._set(_leader=None, _way=None, _elevation=None)

    def describe_target(self) -> str:
        if self._leader is not None:
            return self._leader.describe()
        return f"{self._target_key()} on {self.host}"

    def resolve(self) -> Leader:
        """Find and verify the target now, and choose the way in.

        Raises `TargetNotFound`, `NotALeader`, `PermissionDenied`,
        `ElevationRequired`, `ToolMissing` or `UnknownUser` -- before anything
        runs in the target.
        """
        self.open()
        found = None
        if self.container is not None:
            found = find_leader(self, self.container, self.engine, self.owner)
            pid = found.pid
        else:
            assert self.target_pid is not None
            pid = self.target_pid
        python = fabns_setting(self.config, "python", "python3")
        wanted_tools = sorted({"sudo", *(t for way in ways().values() for t in way.tools)})
        request = {"mode": "probe", "pid": pid, "files": list(PROBE_FILES), "tools": wanted_tools}
        command = helper_command(python, request)
        elevation = Elevation()
        report = self._probe(command, elevation, python)
        if not report["target"].get("exists"):
            raise TargetNotFound(f"no process {pid} on {self.host}")
        if report.get("euid") != 0 and not self._accessible(report):
            elevation = self._elevation_for(report)
            report = self._probe(command, elevation, python)
            if not report["target"].get("exists"):
                raise TargetNotFound(f"no process {pid} on {self.host}")
        self._check_probe(report, pid, elevation)
        leader = leader_from_probe(self.host, pid, report, elevated=elevation.active)
        if found is not None:
            owner_uid = self.host_uid_of(found.owner) if found.owner else None
            leader = replace(
                leader, engine=found.engine, name=found.name, owner=found.owner,
                owner_uid=owner_uid,
            )  # fmt: skip
        if not leader.differing:
            raise NotALeader(
                f"process {pid} on {self.host} shares every namespace with "
                f"the {'elevated ' if elevation.active else ''}SSH session: nothing to enter"
            )
        way = self._choose_way(leader, python)
        # Fail early on a bad uid/gid rather than at the first command.
        leader.book.credentials(self.ns_uid, self.ns_gid, default_root=True)
        self._set(_leader=leader, _way=way, _elevation=elevation)
        return leader

    def _probe(self, command: str, elevation: Elevation, python: str) -> dict[str, Any]:
        result = run_on_host(self, command, elevation)
        report = decode_report(result.stdout)
        if report is not None and "target" in report:
            return report
        raise self._host_failure(result, elevation, python)

    def _host_failure(self, result: HostResult, elevation: Elevation, python: str) -> Exception:
        err = result.stderr.strip()
        where = f"on {self.host}"
        if elevation.active and result.exited == 1 and err.startswith("sudo:"):
            return ElevationRequired(f"entering {self.describe_target()} needs root: {err}")
        if elevation.active and "sudo" in err and "not found" in err:
            return ElevationRequired(
                f"entering {self.describe_target()} needs root, no sudo {where}"
            )
        if result.exited == 127 or "not found" in err:
            return ToolMissing(
                f"{python} not found {where}; the fabns helper needs Python 3.6+ "
                f"(set fabns.python): {err}"
            )
        return HelperError(f"the fabns probe failed {where} (exit {result.exited}): {err}")

    @staticmethod
    def _accessible(report: dict[str, Any]) -> bool:
        target = report["target"]
        inside = target.get("inside") or {}
        return bool(target.get("exists")) and "error" not in target and "error" not in inside

    def _elevation_for(self, report: dict[str, Any]) -> Elevation:
        if not (report.get("tools") or {}).get("sudo"):
            raise ElevationRequired(
                f"entering {self.describe_target()} needs root and sudo is not installed there"
            )
        return self.host_elevation()

    def _check_probe(self, report: dict[str, Any], pid: int, elevation: Elevation) -> None:
        target = report["target"]
        who = "root (via sudo)" if elevation.active else f"{self.user}"
        error = target.get("error") or (target.get("inside") or {}).get("error")
        if not error:
            return
        step, number = error.get("step"), error.get("errno")
        detail = str(error.get("detail", ""))
        if step == "gone":
            raise TargetNotFound(f"no process {pid} on {self.host}")
        if number in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(
                f"{who} may not enter process {pid} on {self.host}: {step} {detail} failed "
                f"with {errno.errorcode[number]}"
            )
        raise HelperError(
            f"could not inspect process {pid} on {self.host}: {step} {detail} (errno {number})",
            step=str(step),
            errno=number,
            detail=detail,
        )

    def _choose_way(self, leader: Leader, python: str) -> WayIn:
        available = ways()
        method = self.method
        if method == "auto":
            method = self.auto_method(leader)
        way_class = available[method]
        for tool in way_class.tools:
            if not leader.tools.get(tool):
                raise ToolMissing(
                    f'method="{method}" needs {tool} on {self.host}, which is not installed '
                    f'(or use method="setns", which needs only python3)'
                )
        return way_class(
            leader, nonce=self.fabns_nonce, python=python, host_user=self.host_account().name
        )

    def auto_method(self, leader: Leader) -> str:
        """``method="auto"``: lxc-attach when the SSH user is the unprivileged owner of
        the LXC container, otherwise nsenter where the host has it, else the setns helper."""
        owner = leader.owner
        lxc_owner = leader.engine == "lxc" and owner not in (None, "root")
        if lxc_owner and owner == self.host_account().name:
            return "lxc-attach"
        return "nsenter" if leader.tools.get("nsenter") else "setns"

    # -- facts about the host --------------------------------------------------------

    def host_account(self) -> HostAccount:
        """The SSH user as the host sees it (uid and name), asked once."""
        if self._host_account is None:
            result = run_on_host(self, "id -u; id -un")
            lines = result.stdout.split()
            if result.exited != 0 or len(lines) != 2 or not lines[0].isdigit():
                raise HelperError(f"could not run id on {self.host}: {result.stderr.strip()}")
            self._set(_host_account=HostAccount(int(lines[0]), lines[1]))
        assert self._host_account is not None
        return self._host_account

    def host_uid_of(self, user: str) -> int:
        """The host uid of ``user`` (an ``owner=``), asked once; `UnknownUser` if none."""
        if self._host_uids is None:
            self._set(_host_uids={})
        assert self._host_uids is not None
        if user not in self._host_uids:
            result = run_on_host(self, f"id -u -- {quote(user)}")
            text = result.stdout.strip()
            if result.exited != 0 or not text.isdigit():
                raise UnknownUser(f"no user {user!r} on {self.host} (owner=)")
            self._host_uids[user] = int(text)
        return self._host_uids[user]

    def host_tools(self, names: list[str]) -> dict[str, str | None]:
        """Where each program is on the host's PATH (None when missing)."""
        # a program counts if it is a regular executable file, not merely a name on PATH
        script = "; ".join(
            f'p=$(command -v {quote(n)}) && [ -f "$p" ] && [ -x "$p" ] || p=; printf "%s\\n" "$p"'
            for n in names
        )
        lines = run_on_host(self, script).stdout.split("\n")
        return {
            n: (lines[i].strip() or None) if i < len(lines) else None for i, n in enumerate(names)
        }

    def host_elevation(self) -> Elevation:
        """sudo on the host, with Fabric's ``sudo.password`` if configured."""
        password = self.config.sudo.password
        return Elevation("sudo-password", str(password)) if password else Elevation("sudo")

    # -- running commands ------------------------------------------------------

    def credentials(
        self, uid: int | str | None = None, gid: int | str | None = None
    ) -> Credentials:
        """Who a command runs as: ``uid``/``gid`` or the connection's, resolved inside."""
        if uid is None:
            uid, gid = self.ns_uid, self.ns_gid if gid is None else gid
        return self.target.book.credentials(uid, gid, default_root=True)

    def wrap_command(
        self,
        command: str,
        env: dict[str, Any],
        *,
        uid: int | str | None = None,
        gid: int | str | None = None,
        shell: str | None = None,
    ) -> str:
        """The full host command that runs ``command`` inside the target."""
        leader = self.target
        way = self._way
        assert way is not None
        creds = self.credentials(uid, gid)
        check_text(command, "the command")
        for key, value in env.items():
            check_text(f"{key}={value}", "an environment variable")
        call = Call(
            command=command,
            credentials=creds,
            environment=merge_environment(leader.environment, creds, env),
            shell=shell or creds.shell,
        )
        return self.elevation.wrap(way.command(call))

    def explain_failed_entry(self, exited: int, stderr: str) -> NamespaceError:
        """The exception for a way in that failed without saying why in a marker."""
        where = self.describe_target()
        elevation = self.elevation
        if elevation.active and stderr.startswith("sudo:"):
            return ElevationRequired(f"entering {where} needs root: {stderr}")
        if "Permission denied" in stderr or "Operation not permitted" in stderr:
            return PermissionDenied(f"{self.method_name} may not enter {where}: {stderr}")
        if exited == 127 or "not found" in stderr:
            return ToolMissing(f"{self.method_name} on {self.host}: {stderr}")
        return EntryFailed(
            f"{self.method_name} could not enter {where} (exit {exited}): {stderr or 'no output'}"
        )

    def _remote_runner(self) -> NamespaceRemote:
        return NamespaceRemote(context=self, inline_env=True)

    def _run_inside(self, command: str, options: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        if self._leader is None:
            self.resolve()
        if "shell" in kwargs:
            options["shell"] = kwargs["shell"]
        user_watchers = list(kwargs.pop("watchers", self.config.run.watchers))
        for attempt in (1, 2):
            runner = self._remote_runner()
            runner.call_options = options
            watchers = user_watchers + self.elevation.watchers()
            try:
                return self._run(runner, command, watchers=watchers, **kwargs)
            except TargetChanged:
                if self.container is None or attempt == 2:
                    raise
            # A container restarted under the same name: nothing ran (the guard
            # refused), so find its new leader and run the command there, once.
            self.forget_target()
            self.resolve()
        raise AssertionError("unreachable")

    def run(self, command: str, **kwargs: Any) -> Any:
        """Run ``command`` inside the target, as `fabric.Connection.run` does on the host.

        Every `invoke.runners.Runner.run` option works (``env``, ``pty``,
        ``hide``, ``warn``, ``watchers``, ``timeout``, ``in_stream``, ``echo``,
        ``shell``...). ``env`` is added on top of the container's own
        environment, quoted. A ``timeout`` or Ctrl-C kills the command inside.
        """
        self.open()
        return self._run_inside(command, {}, kwargs)

    def sudo(self, command: str, **kwargs: Any) -> Any:
        """Run ``command`` inside the target as ``user`` (default root).

        No ``sudo`` runs inside the container: fabns enters directly as that
        user (resolved in the container's ``/etc/passwd``), so ``cd()`` and
        ``prefix()`` apply as the user too. ``password`` / ``sudo.password``
        are only used for sudo on the *host*, when entering needs root there.
        """
        self.open()
        user = kwargs.pop("user", self.config.sudo.user)
        password = kwargs.pop("password", None)
        if password is not None and self._elevation is not None and self._elevation.active:
            self._set(_elevation=Elevation("sudo-password", str(password)))
        uid: int | str = 0 if user is None else user
        check_id(uid, "user")
        return self._run_inside(command, {"uid": uid}, kwargs)

    # -- files -------------------------------------------------------------------

    @property
    def python(self) -> str:
        """The host's Python for the helper (config ``fabns.python``)."""
        return fabns_setting(self.config, "python", "python3")

    def target_label(self) -> str:
        """A short name for the target, for file names: ``pid-4242`` or the container name."""
        return self.container or f"pid-{self.target_pid}"

    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP client whose paths are the *target's* filesystem.

        Served from inside the target by the fabns helper, as the connection's
        user; memoized like Fabric's, and reopened if its channel closed.
        """
        if self._sftp is not None and not self._sftp.sock.closed:
            return self._sftp
        from fabns.transfer import open_sftp

        try:
            self._set(_sftp=open_sftp(self))
        except TargetChanged:
            if self.container is None:
                raise
            self.forget_target()  # restarted: find it again
            self._set(_sftp=open_sftp(self))
        return self._sftp

    def put(
        self,
        local: Any,
        remote: str | None = None,
        preserve_mode: bool = True,
        *,
        mode: int | None = None,
        owner: int | str | None = None,
        group: int | str | None = None,
        progress: Any = None,
    ) -> Any:
        """Upload ``local`` into the target, atomically, like `fabric.Connection.put`.

        Relative ``remote`` paths resolve against ``cd()`` or the user's home
        inside. ``mode`` sets the mode (default: the local file's, with
        ``preserve_mode``); ``owner``/``group`` (names looked up inside) set
        ownership, which otherwise is the connection's user. ``progress`` is
        called with (bytes sent, total). Returns `fabric.transfer.Result`.
        """
        from fabns.transfer import put

        return put(
            self, local, remote, preserve_mode, mode=mode, owner=owner, group=group,
            progress=progress,
        )  # fmt: skip

    def get(
        self,
        remote: str,
        local: Any = None,
        preserve_mode: bool = True,
        *,
        progress: Any = None,
    ) -> Any:
        """Download ``remote`` from inside the target, like `fabric.Connection.get`.

        ``local`` may use ``{host}``, ``{user}``, ``{port}``, ``{dirname}``,
        ``{basename}`` and ``{target}``; the file appears there only when complete.
        """
        from fabns.transfer import get

        return get(self, remote, local, preserve_mode, progress=progress)

    # -- interactive ------------------------------------------------------------

    def shell(self, **kwargs: Any) -> Any:
        """An interactive login shell inside the target, like `fabric.Connection.shell`.

        A pty sized to the local terminal (and resized with it), the local
        terminal put back as it was afterwards, the user's login shell from the
        container's ``/etc/passwd`` (``/bin/sh`` if it has none), its home and
        environment. Accepts Fabric's ``encoding``, ``env``, ``in_stream``,
        ``replace_env`` and ``watchers``; returns the `Result` with the shell's
        exit status (never raises for a non-zero one).
        """
        allowed = {"encoding", "env", "in_stream", "replace_env", "watchers"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"shell() got unexpected keyword arguments: {sorted(unknown)}")
        self.open()
        creds = self.credentials()
        env = {"TERM": os.environ.get("TERM", "xterm"), **kwargs.pop("env", {})}
        kwargs.update(pty=True, warn=True, hide=False, echo=False, env=env)
        return self._run_inside(f"exec {quote(creds.shell)} -l", {}, kwargs)
