"""Local mode: the same operations against targets on this machine, without SSH.

For ``inv`` tasks on a container host. `LocalNamespaceConnection` is a
`~fabns.connection.NamespaceConnection` whose host is this machine: the same
``run``/``sudo``/``put``/``get``/``sftp``/``shell``/``cd``/``prefix`` and
the same target keywords, with two seams changed and nothing else:

- fabns's own host steps (probes, lookups, kills) and the in-target SFTP
  channel run over a `LocalChannel` -- a local process behind the part of
  `paramiko.Channel` that `~fabns.host.HostSession` and paramiko's SFTP client
  use -- instead of an SSH channel;
- commands run through `~fabns.runner.LocalNamespaceRunner`, Invoke's local
  runner with fabns's host script, markers, password gating and kills.

The trust boundary is unchanged: every host side is started with nothing but
the fixed host environment (`~fabns.host.FIXED_ENV`), never this process's
environment, and in a session of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import socket
import subprocess
from typing import Any, ClassVar

from fabns.config import as_fabns_config
from fabns.connection import NamespaceConnection
from fabns.errors import NotImplementedYet
from fabns.host import SH
from fabns.quoting import exact_bytes
from fabns.runner import LocalNamespaceRunner, host_environment
from fabns.spec import TargetSpec

_names = itertools.count(1)


class LocalChannel:
    """The part of `paramiko.Channel` fabns uses, for a process on this machine.

    `exec_command` starts ``/bin/sh -c COMMAND`` with nothing but the fixed
    host environment, in ``/``, in a new session (so a kill of its process
    group never reaches this process), with stdin, stdout and stderr on three
    socket pairs (separate descriptions, as sshd's pipes are: a command may make
    its stdin non-blocking without changing its stdout): what sshd gives a
    command of a login shell that is ``/bin/sh``, without sshd. Timeouts (`settimeout`) raise
    `TimeoutError` (``socket.timeout``) as a channel's do; `recv` returns
    ``b""`` at the end of the output or once the channel is closed.

    No pty: commands that want one run through
    `~fabns.runner.LocalNamespaceRunner`.

    .. versionadded:: 0.2
    """

    def __init__(self) -> None:
        self.closed = False
        self._name = f"local-{next(_names)}"
        self._timeout: float | None = None
        self._in: socket.socket | None = None
        self._out: socket.socket | None = None
        self._err: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        closed = " (closed)" if self.closed else ""
        return f"<LocalChannel {self._name} pid={self.pid}{closed}>"

    def get_name(self) -> str:
        return self._name

    @property
    def pid(self) -> int | None:
        """The host PID of the command (None before `exec_command`)."""
        return self._process.pid if self._process is not None else None

    # -- starting ----------------------------------------------------------------

    def get_pty(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedYet(
            "a LocalChannel has no pty; LocalNamespaceRunner gives commands theirs"
        )

    def exec_command(self, command: str | bytes) -> None:
        """Start ``/bin/sh -c command`` (once per channel)."""
        if self._process is not None or self.closed:
            raise OSError("this channel already ran a command")
        line = exact_bytes(command) if isinstance(command, str) else command
        pairs = [socket.socketpair() for _ in range(3)]
        ours = [pair[0] for pair in pairs]
        theirs = [pair[1] for pair in pairs]
        try:
            self._process = subprocess.Popen(
                [SH.encode(), b"-c", line],
                env=host_environment(),
                cwd="/",
                stdin=theirs[0].fileno(),
                stdout=theirs[1].fileno(),
                stderr=theirs[2].fileno(),
                start_new_session=True,
            )
        except BaseException:
            for sock in ours:
                sock.close()
            raise
        finally:
            for sock in theirs:
                sock.close()
        self._in, self._out, self._err = ours
        self._in.shutdown(socket.SHUT_RD)
        self._out.shutdown(socket.SHUT_WR)
        self._err.shutdown(socket.SHUT_WR)
        self.settimeout(self._timeout)

    # -- timeouts ------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        """Seconds a `recv`, `recv_stderr` or `send` may wait (None: for ever)."""
        self._timeout = timeout
        for sock in (self._in, self._out, self._err):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, blocking: bool | int) -> None:
        self.settimeout(None if blocking else 0.0)

    # -- data ------------------------------------------------------------------------

    def _socket(self, sock: socket.socket | None) -> socket.socket:
        if sock is None:
            raise OSError("no command was started on this channel")
        return sock

    def send(self, data: bytes) -> int:
        if self.closed:
            raise OSError("Socket is closed")
        return self._socket(self._in).send(data)

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError("Socket is closed")
        self._socket(self._in).sendall(data)

    def _read(self, sock: socket.socket | None, nbytes: int) -> bytes:
        if self.closed:
            return b""
        try:
            return self._socket(sock).recv(nbytes)
        except TimeoutError:
            raise
        except OSError:
            if self.closed:  # closed by another thread while this one waited
                return b""
            raise

    def recv(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` of the command's stdout; ``b""`` at its end."""
        return self._read(self._out, nbytes)

    def recv_stderr(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` of the command's stderr; ``b""`` at its end."""
        return self._read(self._err, nbytes)

    def recv_ready(self) -> bool:
        """Whether `recv` would return without waiting."""
        if self.closed or self._out is None:
            return True
        try:
            return bool(self._out.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True

    def shutdown_write(self) -> None:
        """End the command's stdin."""
        if not self.closed and self._in is not None:
            self._in.shutdown(socket.SHUT_WR)

    # -- the end ---------------------------------------------------------------------

    def exit_status_ready(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def recv_exit_status(self) -> int:
        """Wait for the command and return its exit status (-1 if a signal ended it,
        as paramiko reports a command without an exit status)."""
        if self._process is None:
            return -1
        code = self._process.wait()
        return code if code >= 0 else -1

    def close(self) -> None:
        """Close this side: the command reads the end of its stdin, its writes fail.

        Wakes up any thread waiting in `recv` or `recv_stderr`. The command is
        not waited for (as an SSH channel's close does not); it is reaped once done.
        """
        if self.closed:
            return
        self.closed = True
        for sock in (self._in, self._out, self._err):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        if self._process is not None:
            self._process.poll()


def local_user() -> str:
    """The name of this process's effective user (from the password database,
    never from ``$USER``)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class LocalNamespaceConnection(NamespaceConnection):
    """A `NamespaceConnection` into a target on this machine, without SSH.

    For tasks that run on the container host itself (``inv deploy`` there)::

        c = LocalNamespaceConnection(container="app")
        c.run("hostname")             # the container's hostname
        c.put("app.conf", "/etc/app/app.conf")

    The same target keywords (``pid``, ``container``, ``engine``, ``owner``,
    ``method``, ``uid``, ``gid``), the same ``run``, ``sudo``, ``put``,
    ``get``, ``sftp``, ``shell``, ``cd`` and ``prefix``, the same results
    (`fabric.runners.Result` with ``.connection``, `fabric.transfer.Result`)
    and exceptions. Host steps and the host side of each command are local
    processes started with nothing but the fixed host environment; host
    privilege is that of this process: none needed as root, else sudo exactly
    as for an SSH user (``sudo -n``, or ``sudo.password``).

    Nothing opens SSH: `open` does nothing, the user is this process's
    effective user, the host is ``host`` (``"localhost"``: only a name, for
    messages, ``repr`` and ``get()``'s ``{host}``). Fabric's SSH-only methods
    (``forward_local``, ``forward_remote``, ``client``) keep their meaning and
    would connect to ``host`` over SSH. ``c.local()`` is Invoke's plain local
    command, on the host.

    :param host: the name this machine goes by in messages.
    :param config: as for `NamespaceConnection`; this connection uses a copy
        whose ``runners.remote`` is `runner_class`.

    .. versionadded:: 0.2
    """

    #: The runner of ``run``, ``sudo`` and ``shell`` (this connection's ``runners.remote``).
    runner_class: ClassVar[type[LocalNamespaceRunner]] = LocalNamespaceRunner

    def __init__(
        self,
        host: str = "localhost",
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
        config: Any = None,
    ) -> None:
        # A copy: the runner choice must not reach other connections sharing ``config``.
        config = as_fabns_config(config).clone()
        config.runners.remote = self.runner_class
        # Only what was given: options left out keep NamespaceConnection's defaults.
        options: dict[str, Any] = dict(
            pid=pid, container=container, engine=engine, owner=owner, method=method,
            uid=uid, gid=gid, persistent=persistent,
        )  # fmt: skip
        given = {key: value for key, value in options.items() if value is not None}
        super().__init__(host, user=local_user(), config=config, spec=spec, **given)

    def __repr__(self) -> str:
        return f"<LocalNamespaceConnection {self.user}@{self.host} {self.target_spec.key}>"

    def open(self) -> None:
        """Nothing to open: the host is this machine."""

    def share_transport(self, with_: Any) -> None:
        """Nothing to share: a local connection has no SSH transport."""

    def create_session(self) -> LocalChannel:
        """A `LocalChannel`: what fabns's host steps and SFTP use instead of an SSH channel."""
        return LocalChannel()


__all__ = ["LocalChannel", "LocalNamespaceConnection", "local_user"]
