"""`NamespaceConnection`: a Fabric connection whose every operation happens inside a target.

The data path reads one way: this connection (Fabric's face: its API and the
retry-after-restart policy) holds a `~fabns.spec.TargetSpec`; on first use it
opens a `~fabns.session.TargetSession` on its `~fabns.host.HostSession` (an
engine names the leader, the helper verifies it, a way in is chosen), and
hands each command to the runner Fabric's config selects
(`~fabns.runner.NamespaceRemote`) and each transfer to `fabns.transfer`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import paramiko
from fabric import Connection

from fabns.accounts import Credentials, check_id
from fabns.config import as_fabns_config, connection_options, fabns_setting, target_options
from fabns.errors import InvalidArgument, TargetChanged
from fabns.host import Elevation, HostSession
from fabns.persistent import PersistentRemote, PersistentSession
from fabns.quoting import quote, shell_path
from fabns.session import TargetSession
from fabns.shared import SharedTransport
from fabns.spec import TargetSpec
from fabns.target import Leader
from fabns.transfer import TEMP_PREFIX, NamespaceTransfer, TargetSFTPClient
from fabns.ways import WayIn

T = TypeVar("T")


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
    :param method: the way in: ``"auto"``, ``"nsenter"``, ``"setns"`` or
        ``"lxc-attach"`` (see the README for which is safe where).
    :param uid: user to run as inside (number or name looked up *inside*).
        Default: root of the target (like ``nsenter``).
    :param gid: group to run as inside; default the user's primary group.
    :param persistent: enter once: one helper (the setns way in) serves every
        command and transfer over one SSH channel (see the README's
        "Persistent sessions").
    :param spec: a `~fabns.spec.TargetSpec` instead of the target keywords.
    :param fabric_kwargs: everything else goes to `fabric.Connection`;
        ``config`` may be any Fabric or Invoke config (it is cloned into a
        `fabns.Config`, and ``FABRIC_*`` environment variables are loaded).

    Options left out (or ``None``) come from the ``fabns`` config subtree
    (``fabric.yaml``, ``FABRIC_FABNS_METHOD``...; see `fabns.config`).

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
        Option defaults come from the config.
    """

    # Declared at class level: Invoke's DataProxy would turn new instance
    # attributes into config writes.
    spec: TargetSpec | None = None
    persistent: bool = False
    fabns_nonce: str = ""
    _host_session: HostSession | None = None
    _target_session: TargetSession | None = None
    _persistent: PersistentSession | None = None
    _resolving: threading.Lock | None = None
    _transferring: threading.Lock | None = None
    _shared: SharedTransport | None = None

    def __init__(
        self,
        host: str,
        *,
        pid: int | None = None,
        container: str | None = None,
        engine: str | None = None,
        owner: str | None = None,
        method: str | None = None,
        uid: int | str | None = None,
        gid: int | str | None = None,
        persistent: bool | None = None,
        spec: TargetSpec | None = None,
        **fabric_kwargs: Any,
    ) -> None:
        config = as_fabns_config(fabric_kwargs.get("config"))
        fabric_kwargs["config"] = config
        super().__init__(host, **fabric_kwargs)
        options = connection_options(
            config, pid=pid, container=container, engine=engine, owner=owner, method=method,
            uid=uid, gid=gid, persistent=persistent,
        )  # fmt: skip
        persistent = bool(options.pop("persistent"))
        if spec is None:
            spec = TargetSpec(**options)
        if persistent:
            if spec.method not in ("auto", "setns"):
                raise InvalidArgument(
                    f"persistent=True enters with the setns helper: method={spec.method!r} "
                    "cannot be persistent"
                )
            spec = spec.replace(method="setns")
        self._set(
            spec=spec.replace(host=self.host, user=self.user, port=self.port),
            persistent=persistent,
            fabns_nonce=secrets.token_hex(8),
            _resolving=threading.Lock(),
            _transferring=threading.Lock(),
        )

    @classmethod
    def from_spec(cls, spec: TargetSpec | str, **kwargs: Any) -> NamespaceConnection:
        """A connection for ``spec`` (a `TargetSpec` or a ``[user@]host[:port]/target`` string).

        Keyword arguments are target options (``method=``...) or
        `fabric.Connection` arguments. For a string, options left out come
        from the config, and a target in the string wins over ``pid=`` and
        ``container=``.
        """
        fields = set(TargetSpec.__dataclass_fields__) - {"host", "user", "port"}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        options = {k: v for k, v in options.items() if v is not None}
        if isinstance(spec, str):
            # options not given come from the config (the string's target wins)
            kwargs["config"] = config = as_fabns_config(kwargs.get("config"))
            merged = target_options(config, **options)
            spec = TargetSpec.parse(spec, **{**merged, "engine": options.get("engine", "auto")})
            if spec.container is not None and "engine" not in options:
                spec = spec.replace(engine=target_options(config, container="-")["engine"])
        elif options:
            spec = spec.replace(**options)
        if spec.host is None:
            raise TypeError("the spec names no host")
        if spec.user is not None:
            kwargs.setdefault("user", spec.user)
        if spec.port is not None:
            kwargs.setdefault("port", spec.port)
        return cls(spec.host, spec=spec, **kwargs)

    def __repr__(self) -> str:
        return f"<NamespaceConnection {self.user}@{self.host}:{self.port} {self.target_spec.key}>"

    def _identity(self) -> tuple[Any, ...]:
        spec = self.target_spec
        # uid/gid as text: numbers and names must still sort against each other
        return (self.host, self.user, self.port, spec.key, str(spec.uid), str(spec.gid))

    @property
    def target_spec(self) -> TargetSpec:
        """What this connection enters (`~fabns.spec.TargetSpec`)."""
        assert self.spec is not None
        return self.spec

    # what was asked for, by the names of the keyword arguments
    target_pid = property(lambda self: self.target_spec.pid, doc="``pid=``")
    container = property(lambda self: self.target_spec.container, doc="``container=``")
    engine = property(lambda self: self.target_spec.engine, doc="``engine=``")
    owner = property(lambda self: self.target_spec.owner, doc="``owner=``")
    method = property(lambda self: self.target_spec.method, doc="``method=``")
    ns_uid = property(lambda self: self.target_spec.uid, doc="``uid=``")
    ns_gid = property(lambda self: self.target_spec.gid, doc="``gid=``")

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

    # -- the SSH transport ----------------------------------------------------------

    def share_transport(self, with_: NamespaceConnection) -> None:
        """Use one SSH connection with ``with_``: one handshake for both.

        Both must log in to the same host, port and user (containers on one
        host). Whichever opens first connects; `close` of one leaves the
        transport open for the others, and the last one to close closes it.
        With the same sudo password and ``fabns.host_timeout`` they also share
        fabns's host steps (the SSH account, its tools and privilege are
        asked once).
        Call it before this connection opens::

            app, db = NamespaceConnection("web1", container="app"), ...
            db.share_transport(with_=app)

        .. versionadded:: 0.2
        """
        if with_ is self:
            return
        if (self.host, self.port, self.user) != (with_.host, with_.port, with_.user):
            raise InvalidArgument(
                f"cannot share an SSH connection between {self.user}@{self.host}:{self.port} "
                f"and {with_.user}@{with_.host}:{with_.port}"
            )
        shared = with_._shared
        if shared is not None and shared is self._shared:
            return
        if self.is_connected:
            raise InvalidArgument(f"{self!r} is already connected: close it first")
        if shared is None:
            shared = SharedTransport(with_.client)
            if with_.is_connected:
                shared.hold(with_)
            with_._set(_shared=shared)
        self._set(_shared=shared, client=shared.client)
        for member in (with_, self):  # fabns's host steps: once per host, too
            if member._host_session is None:
                member._set(_host_session=shared.host_session(member.host, member.config))

    def open(self) -> Any:
        """Connect, as `fabric.Connection.open` -- or use the shared transport if it is up."""
        shared = self._shared
        if shared is None:
            return super().open()
        with shared.lock:
            if self.is_connected:
                return None
            transport = shared.active_transport()
            if transport is not None:
                self._set(transport=transport)
                result = None
            else:
                result = super().open()
            shared.hold(self)
            return result

    def close(self) -> None:
        """Close this connection, as `fabric.Connection.close`.

        With a shared transport (`share_transport`), only this connection's
        SFTP session closes while other members still hold the transport.
        A persistent session ends (see `close_persistent`).
        """
        self.close_persistent()
        shared = self._shared
        if shared is None:
            super().close()
            return
        with shared.lock:
            if shared.release(self):
                super().close()
            else:
                self.close_sftp()
            self._set(transport=None)

    # -- the sessions ---------------------------------------------------------------

    @property
    def host_session(self) -> HostSession:
        """fabns's own steps on the SSH host (facts, privilege, lookups)."""
        if self._host_session is None:
            self._set(_host_session=HostSession(self))
        assert self._host_session is not None
        return self._host_session

    @property
    def target_session(self) -> TargetSession:
        """The resolved target (opened on first use): leader, way in, host privilege."""
        assert self._resolving is not None
        with self._resolving:  # one resolve, whatever the number of threads
            if self._target_session is None:
                self.open()
                self._set(
                    _target_session=TargetSession.open(
                        self.host_session, self.target_spec, self.fabns_nonce, self.python
                    )
                )
            assert self._target_session is not None
            return self._target_session

    @property
    def persistent_session(self) -> PersistentSession:
        """The target's persistent session (``persistent=True``), started on first use."""
        session = self.target_session
        assert self._resolving is not None
        with self._resolving:
            current = self._persistent
            if current is None or current.target is not session:
                if current is not None:
                    current.close()
                current = PersistentSession(session)
                self._set(_persistent=current)
            return current

    def _open_once(self) -> None:
        """`open`, by one thread at a time (Fabric's is not safe from many at once)."""
        if not self.is_connected:
            assert self._resolving is not None
            with self._resolving:
                self.open()

    def resolve(self) -> Leader:
        """Find and verify the target now, and choose the way in.

        Raises `TargetNotFound`, `NotALeader`, `PermissionDenied`,
        `ElevationRequired`, `ToolMissing` or `UnknownUser` -- before anything
        runs in the target.
        """
        return self.target_session.leader

    def forget_target(self) -> None:
        """Drop the resolved target (and its persistent session); the next use resolves afresh."""
        self._set(_target_session=None)
        self.close_persistent()

    def close_persistent(self) -> None:
        """End the persistent session, if one runs (what still runs in it is killed).

        The next command starts a new one. `close` calls it.

        .. versionadded:: 0.3
        """
        current = self._persistent
        if current is not None:
            self._set(_persistent=None)
            current.close()

    @property
    def target(self) -> Leader:
        """The verified leader this connection enters (resolved on first use).

        ``c.target.engine``, ``.pid`` and ``c.method_name`` say what was used.
        """
        return self.target_session.leader

    @property
    def way(self) -> WayIn:
        """The way in (resolved on first use)."""
        return self.target_session.way

    @property
    def method_name(self) -> str:
        """The way in in use (``"nsenter"``, ``"setns"``, ``"lxc-attach"``), after resolving."""
        return self.way.name

    @property
    def elevation(self) -> Elevation:
        """How fabns gets host privilege for this target."""
        return self.target_session.elevation

    def _retrying(self, action: Callable[[TargetSession], T]) -> T:
        """Run ``action`` on the target session -- the one retry policy.

        A container restarted under the same name is found again and ``action``
        runs once more: the host side refused the old leader before entering,
        so nothing ran twice. A ``pid=`` target that changed stays an error.
        """
        for attempt in (1, 2):
            session = self.target_session
            try:
                return action(session)
            except TargetChanged:
                if self.target_spec.container is None or attempt == 2:
                    raise
            self.forget_target()
        raise AssertionError("unreachable")

    # -- running commands ------------------------------------------------------

    def credentials(
        self, uid: int | str | None = None, gid: int | str | None = None
    ) -> Credentials:
        """Who a command runs as: ``uid``/``gid`` or the connection's, resolved inside."""
        return self.target_session.credentials(uid, gid)

    def _run_inside(self, command: str, options: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        self._open_once()
        if "shell" in kwargs:
            options["shell"] = kwargs["shell"]

        pty = kwargs.get("pty", self.config.run.pty)

        def attempt(session: TargetSession) -> Any:
            if self.persistent:
                runner = PersistentRemote(context=self)
            elif pty and session.way.name != "lxc-attach":
                return self._run_with_inner_pty(session, command, options, kwargs)
            else:
                runner = self.config.runners.remote(context=self, inline_env=True)
            runner.call_options = options
            return self._run(runner, command, **kwargs)

        return self._retrying(attempt)

    def _run_with_inner_pty(
        self,
        session: TargetSession,
        command: str,
        options: dict[str, Any],
        kwargs: dict[str, Any],
    ) -> Any:
        """A one-shot command with a pty allocated *inside* the target.

        An SSH pty is the host's: inside, ``tty`` would name a terminal the
        target does not have. So the command runs through a helper session
        used for this command only, which allocates the pty from the target's
        own ``/dev/ptmx`` (lxc-attach allocates its own inside already).
        """
        runner = PersistentRemote(context=self)
        runner.call_options = options
        runner.session = PersistentSession(session)
        try:
            return self._run(runner, command, **kwargs)
        finally:
            runner.session.close()

    def run(self, command: str, **kwargs: Any) -> Any:
        """Run ``command`` inside the target, as `fabric.Connection.run` does on the host.

        Every `invoke.runners.Runner.run` option works (``env``, ``pty``,
        ``hide``, ``warn``, ``watchers``, ``timeout``, ``in_stream``, ``echo``,
        ``shell``...). ``env`` is added on top of the container's own
        environment, quoted. A ``timeout`` or Ctrl-C kills the command inside.
        """
        return self._run_inside(command, {}, kwargs)

    def sudo(self, command: str, **kwargs: Any) -> Any:
        """Run ``command`` inside the target as ``user`` (default root).

        No ``sudo`` runs inside the container: fabns enters directly as that
        user (resolved in the container's ``/etc/passwd``), so ``cd()`` and
        ``prefix()`` apply as the user too. ``password`` / ``sudo.password``
        are only used for sudo on the *host*, when entering needs root there.
        """
        self._open_once()
        user = kwargs.pop("user", self.config.sudo.user)
        password = kwargs.pop("password", None)
        if password is not None and self.elevation.mode == "sudo-password":
            self.host_session.use_password(str(password))
            self.target_session.elevation = self.host_session.elevation()
        uid: int | str = 0 if user is None else user
        check_id(uid, "user")
        return self._run_inside(command, {"uid": uid}, kwargs)

    # -- files -------------------------------------------------------------------

    @property
    def python(self) -> str:
        """The host's Python for the helper (config ``fabns.python``)."""
        return fabns_setting(self.config, "python", "python3")

    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP client whose paths are the *target's* filesystem.

        Served from inside the target by the fabns helper, as the connection's
        user; memoized like Fabric's, and reopened if its channel closed.
        """
        if self._sftp is not None and not self._sftp.sock.closed:
            return self._sftp
        self._open_once()
        if self.persistent:
            channel = self._retrying(lambda _: self.persistent_session.open_sftp(TEMP_PREFIX))
        else:
            channel = self._retrying(lambda session: session.sftp_channel(TEMP_PREFIX))
        self._set(_sftp=TargetSFTPClient(channel))
        return self._sftp

    @contextlib.contextmanager
    def transfer_sftp(self) -> Iterator[paramiko.SFTPClient]:
        """The SFTP client for one `put` or `get`, safe from many threads at once.

        With a persistent session, a client of its own on a new stream (transfers
        run side by side); otherwise the connection's `sftp`, one transfer at a
        time (paramiko's client is not safe for concurrent use).

        .. versionadded:: 0.3
        """
        if self.persistent:
            self._open_once()
            stream = self._retrying(lambda _: self.persistent_session.open_sftp(TEMP_PREFIX))
            client = TargetSFTPClient(stream)
            try:
                yield client
            finally:
                client.close()
            return
        assert self._transferring is not None
        with self._transferring:
            yield self.sftp()

    def close_sftp(self) -> None:
        """Close the SFTP session if one is open; the next `sftp` opens a new one.

        Frees its SSH channel (OpenSSH allows 10 per connection by default,
        ``MaxSessions``), e.g. between transfers of many containers on one
        shared transport.

        .. versionadded:: 0.2
        """
        sftp: Any = self._sftp
        if sftp is not None:
            self._set(_sftp=None)
            sftp.close()

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
        return NamespaceTransfer(self).put(
            local, remote, preserve_mode, mode=mode, owner=owner, group=group, progress=progress
        )

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
        return NamespaceTransfer(self).get(remote, local, preserve_mode, progress=progress)

    # -- interactive ------------------------------------------------------------

    def shell(self, **kwargs: Any) -> Any:
        """An interactive login shell inside the target, like `fabric.Connection.shell`.

        A pty sized to the local terminal (and resized with it), the local
        terminal put back as it was afterwards, the user's login shell from the
        container's ``/etc/passwd`` (``/bin/sh`` if it has none), its home and
        environment. Accepts Fabric's ``encoding``, ``env``, ``in_stream``,
        ``replace_env`` and ``watchers``; returns the `Result` with the shell's
        exit status (never raises for a non-zero one) and, as Fabric's, no
        ``command`` (``None``).

        .. versionchanged:: 0.2
            ``result.command`` is ``None``.
        """
        allowed = {"encoding", "env", "in_stream", "replace_env", "watchers"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"shell() got unexpected keyword arguments: {sorted(unknown)}")
        self._open_once()
        creds = self.credentials()
        env = {"TERM": os.environ.get("TERM", "xterm"), **kwargs.pop("env", {})}
        kwargs.update(pty=True, warn=True, hide=False, echo=False, env=env)
        result = self._run_inside(f"exec {quote(creds.shell)} -l", {}, kwargs)
        result.command = None  # an interactive session, not a command (as in Fabric)
        return result
