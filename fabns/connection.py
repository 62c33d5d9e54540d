"""`NamespaceConnection`: a Fabric connection whose commands run inside a target.

The data path reads one way: this connection resolves its target to a
verified `~fabns.target.Leader` (once, lazily, on first use), picks a way in
(`fabns.ways`), and hands every command to `~fabns.runner.NamespaceRemote`,
Fabric's runner with the way in's wrapper around the command.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
from dataclasses import replace
from typing import Any

import paramiko
from fabric import Connection

from fabns.accounts import Credentials, check_id, merge_environment
from fabns.config import Config, fabns_setting
from fabns.engines import KNOWN_ENGINES, Found, find_leader
from fabns.errors import (
    HelperError,
    InvalidArgument,
    NotALeader,
    NotImplementedYet,
    PermissionDenied,
    TargetChanged,
    TargetNotFound,
    ToolMissing,
)
from fabns.failures import from_exit
from fabns.helper import helper_command
from fabns.host import Elevation, HostResult, HostSession
from fabns.quoting import check_text, quote, shell_path
from fabns.runner import NamespaceRemote
from fabns.target import Leader, decode_report, leader_from_probe
from fabns.ways import Call, WayIn, ways

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
    _host_session: HostSession | None = None

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

    @property
    def cwd(self) -> str:
        """The working directory from ``cd()``, as one shell word.

        Unlike Invoke (which only escapes spaces), the path is quoted: it is a
        literal path, so ``cd("/srv/my app")`` and ``cd("$(cmd)")`` name those
        directories. A leading ``~`` still means the user's home.
        """
        path = self.literal_cwd
        return shell_path(path) if path else ""

    @property
    def literal_cwd(self) -> str:
        """The working directory from ``cd()`` as a plain path ("" outside ``cd()``)."""
        cwds = list(self.command_cwds)
        if not cwds:
            return ""
        start = 0
        for index in range(len(cwds) - 1, -1, -1):
            if cwds[index].startswith(("~", "/")):
                start = index
                break
        return str(posixpath.join(*cwds[start:]))

    # -- resolving the target -------------------------------------------------

    @property
    def host_session(self) -> HostSession:
        """fabns's own steps on the SSH host (facts, privilege, lookups)."""
        if self._host_session is None:
            self._set(_host_session=HostSession(self))
        assert self._host_session is not None
        return self._host_session

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
    def way(self) -> WayIn:
        """The way in (resolved on first use)."""
        if self._way is None:
            self.resolve()
        assert self._way is not None
        return self._way

    @property
    def method_name(self) -> str:
        """The way in in use (``"nsenter"``, ``"setns"``, ``"lxc-attach"``), after resolving."""
        return self.way.name

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
        host = self.host_session
        facts = host.facts()
        found = None
        if self.container is not None:
            found = find_leader(host, self.container, self.engine, self.owner)
            pid = found.pid
        else:
            assert self.target_pid is not None
            pid = self.target_pid
        python = self.python
        request = {"mode": "probe", "pid": pid, "files": list(PROBE_FILES), "tools": []}
        command = helper_command(python, request)
        elevation = Elevation()
        report = self._probe(command, elevation, python)
        if not report["target"].get("exists"):
            raise TargetNotFound(f"no process {pid} on {self.host}")
        if facts.uid != 0 and not self._accessible(report):
            elevation = host.elevation()
            report = self._probe(command, elevation, python)
            if not report["target"].get("exists"):
                raise TargetNotFound(f"no process {pid} on {self.host}")
        self._check_probe(report, pid, elevation)
        leader = leader_from_probe(self.host, pid, report, elevated=elevation.active)
        leader = replace(leader, tools=facts.tools)
        if found is not None:
            owner_uid, owner_home = host.account(found.owner) if found.owner else (None, "/")
            if owner_uid:
                self._check_owner(found, owner_uid, report)
            leader = replace(
                leader, engine=found.engine, name=found.name, owner=found.owner,
                owner_uid=owner_uid, owner_home=owner_home,
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

    def _check_owner(self, found: Found, owner_uid: int, report: dict[str, Any]) -> None:
        """An owner's lookup is the owner's word: enter only a leader in their user namespace.

        The leader's user namespace (or one above it) must have been created by
        the owner, and must not be the host's own.
        """
        userns = report["target"].get("userns") or {}
        owners = [o for o in userns.get("owners") or [] if isinstance(o, int)]
        if userns.get("own") or owner_uid not in owners:
            raise PermissionDenied(
                f"{found.engine} on {self.host}, asked as {found.owner}, named PID {found.pid} "
                f"for {found.name!r}, but that process is not in a user namespace of "
                f"{found.owner}'s (owners: {owners or 'the host'}); refusing to enter it"
            )

    def _probe(self, command: str, elevation: Elevation, python: str) -> dict[str, Any]:
        result = self.host_session.run(command, elevation)
        report = decode_report(result.stdout)
        if report is not None and "target" in report:
            return report
        raise self._host_failure(result, python)

    def _host_failure(self, result: HostResult, python: str) -> Exception:
        err = result.stderr.strip()
        if result.exited == 127 or (result.exited != 0 and "not found" in err):
            return ToolMissing(
                f"{python} not found on {self.host}; the fabns helper needs Python 3.6+ "
                f"(set fabns.python): {err}"
            )
        if err.startswith("sudo:"):
            return from_exit(result.exited, err, self.describe_target(), "the probe")
        return HelperError(f"the fabns probe failed on {self.host} (exit {result.exited}): {err}")

    @staticmethod
    def _accessible(report: dict[str, Any]) -> bool:
        target = report["target"]
        inside = target.get("inside") or {}
        return bool(target.get("exists")) and "error" not in target and "error" not in inside

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
        if method == "lxc-attach" and (leader.engine != "lxc" or not leader.name):
            raise InvalidArgument(
                f'method="lxc-attach" enters LXC containers only, not {leader.describe()}'
            )
        for tool in way_class.tools:
            if not leader.tools.get(tool):
                raise ToolMissing(
                    f'method="{method}" needs {tool} on {self.host}, which is not installed '
                    f'(or use method="setns", which needs only python3)'
                )
        return way_class(
            leader,
            nonce=self.fabns_nonce,
            python=python,
            host_user=self.host_session.facts().name,
            tools=leader.tools,
        )

    def auto_method(self, leader: Leader) -> str:
        """``method="auto"``: the way in without a known race for this target.

        lxc-attach when the SSH user is the unprivileged owner of the LXC
        container (it also puts the command in the owner's cgroup); the setns
        helper for any other target in another user namespace (nsenter would
        fork into it dumpable, before switching credentials); otherwise nsenter
        where the host has it, else the setns helper.
        """
        owner = leader.owner
        lxc_owner = leader.engine == "lxc" and owner not in (None, "root")
        ssh_user = self.host_session.facts().name
        if lxc_owner and owner == ssh_user and leader.tools.get("lxc-attach"):
            return "lxc-attach"
        if leader.new_userns:
            return "setns"
        return "nsenter" if leader.tools.get("nsenter") else "setns"

    # -- running commands ------------------------------------------------------

    def credentials(
        self, uid: int | str | None = None, gid: int | str | None = None
    ) -> Credentials:
        """Who a command runs as: ``uid``/``gid`` or the connection's, resolved inside."""
        if uid is None:
            uid, gid = self.ns_uid, self.ns_gid if gid is None else gid
        return self.target.book.credentials(uid, gid, default_root=True)

    def command_script(
        self,
        command: str,
        env: dict[str, Any],
        *,
        uid: int | str | None = None,
        gid: int | str | None = None,
        shell: str | None = None,
    ) -> str:
        """The host script (before host privilege) that runs ``command`` inside the target."""
        leader = self.target
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
        return self.way.command(call)

    def _remote_runner(self) -> NamespaceRemote:
        return NamespaceRemote(context=self, inline_env=True)

    def _run_inside(self, command: str, options: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        if self._leader is None:
            self.resolve()
        if "shell" in kwargs:
            options["shell"] = kwargs["shell"]
        for attempt in (1, 2):
            runner = self._remote_runner()
            runner.call_options = options
            try:
                return self._run(runner, command, **kwargs)
            except TargetChanged:
                if self.container is None or attempt == 2:
                    raise
            # A container restarted under the same name: nothing ran (the host
            # guard refused before entering), so find its new leader and run the
            # command there, once.
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
        if password is not None and self.elevation.mode == "sudo-password":
            self.host_session.use_password(str(password))
            self._set(_elevation=self.host_session.elevation())
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
