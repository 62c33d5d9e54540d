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
import selectors
import socket
import subprocess
import threading
import time
from typing import Any, ClassVar

from fabns.config import as_fabns_config
from fabns.connection import NamespaceConnection
from fabns.errors import NotImplementedYet
from fabns.host import SH
from fabns.quoting import exact_bytes
from fabns.runner import LocalNamespaceRunner, host_environment
from fabns.spec import TargetSpec

_names = itertools.count(1)

#: Bytes held in memory each way: of a command's stdout, of its stderr, and of what is sent
#: to its stdin. paramiko's default window: what an SSH channel (and its sshd) would hold.
WINDOW = 2 * 1024 * 1024


class _Output:
    """One output stream of a `LocalChannel`'s command, as its pump buffers it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False


class LocalChannel:
    """The part of `paramiko.Channel` fabns uses, for a process on this machine.

    `exec_command` starts ``/bin/sh -c COMMAND`` with nothing but the fixed
    host environment, in ``/``, in a new session (so a kill of its process
    group never reaches this process), with stdin, stdout and stderr on three
    socket pairs (separate descriptions, as sshd's pipes are: a command may make
    its stdin non-blocking without changing its stdout): what sshd gives a
    command of a login shell that is ``/bin/sh``, without sshd.

    As an SSH channel is (paramiko's transport thread on one side, sshd on the
    other), it is buffered both ways: a thread of the channel moves what is
    sent to the command's stdin, and its stdout and stderr as they come, up to
    `WINDOW` bytes each. So a client that sends requests while nothing reads
    the replies (paramiko's SFTP prefetch) never deadlocks against a command
    that answers each request before reading the next. Timeouts
    (`settimeout`) raise `TimeoutError` (``socket.timeout``) as a channel's
    do; `recv` returns ``b""`` at the end of the output or once the channel is
    closed.

    No pty: commands that want one run through
    `~fabns.runner.LocalNamespaceRunner`.

    .. versionadded:: 0.2
    """

    def __init__(self) -> None:
        self.closed = False
        self._name = f"local-{next(_names)}"
        self._timeout: float | None = None
        self._in: socket.socket | None = None
        self._pending = bytearray()  # sent, not yet written to the command's stdin
        self._end_input = False  # shutdown_write was called: end stdin once _pending is written
        self._input_ended = False
        self._input_error: OSError | None = None
        self._out: _Output | None = None
        self._err: _Output | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._pump: threading.Thread | None = None
        self._changed = threading.Condition()
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
        stdin, stdout, stderr = ours
        stdin.shutdown(socket.SHUT_RD)
        for sock in (stdout, stderr):
            sock.shutdown(socket.SHUT_WR)
        self._wake = socket.socketpair()
        for sock in (*ours, *self._wake):
            sock.setblocking(False)
        with self._changed:
            self._in, self._out, self._err = stdin, _Output(stdout), _Output(stderr)
        self._pump = threading.Thread(target=self._move, name=self._name, daemon=True)
        self._pump.start()

    # -- timeouts ------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        """Seconds a `recv`, `recv_stderr` or `send` may wait (None: for ever; 0: not at all)."""
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, blocking: bool | int) -> None:
        self.settimeout(None if blocking else 0.0)

    def _wait(self, ready: Any) -> None:
        """Wait (holding ``_changed``) until ``ready()``; `TimeoutError` after the timeout."""
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("timed out")
            self._changed.wait(remaining)

    # -- the pump --------------------------------------------------------------------

    def _move(self) -> None:
        """Move stdin out of memory and stdout/stderr into it, each up to `WINDOW`."""
        assert self._in is not None and self._out is not None and self._err is not None
        assert self._wake is not None
        stdin, outputs, wake = self._in, (self._out, self._err), self._wake[1]
        selector = selectors.DefaultSelector()
        selector.register(wake, selectors.EVENT_READ)
        watched: dict[socket.socket, int] = {}
        try:
            while True:
                wanted: dict[socket.socket, int] = {}
                with self._changed:
                    if self.closed or all(output.eof for output in outputs):
                        return
                    for output in outputs:
                        if not output.eof and len(output.buffer) < WINDOW:
                            wanted[output.sock] = selectors.EVENT_READ
                    if self._input_error is None:
                        if self._pending:
                            wanted[stdin] = selectors.EVENT_WRITE
                        elif self._end_input and not self._input_ended:
                            self._input_ended = True
                            with contextlib.suppress(OSError):
                                stdin.shutdown(socket.SHUT_WR)
                for sock in set(watched) - set(wanted):
                    selector.unregister(sock)
                for sock, events in wanted.items():
                    if sock not in watched:
                        selector.register(sock, events)
                watched = wanted
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        with contextlib.suppress(OSError):
                            wake.recv(4096)
                    elif key.fileobj is stdin:
                        self._write_input(stdin)
                    else:
                        self._read_output(next(o for o in outputs if o.sock is key.fileobj))
        finally:
            selector.close()
            with self._changed:
                for output in outputs:
                    output.eof = True
                if self._input_error is None:
                    self._input_error = OSError("Socket is closed")
                self._changed.notify_all()

    def _write_input(self, stdin: socket.socket) -> None:
        with self._changed:
            data = bytes(self._pending[:65536])
        try:
            sent = stdin.send(data)
        except BlockingIOError:
            return
        except OSError as error:  # the command closed its stdin or ended
            with self._changed:
                self._input_error = error
                self._pending.clear()
                self._changed.notify_all()
            return
        with self._changed:
            del self._pending[:sent]
            self._changed.notify_all()

    def _read_output(self, output: _Output) -> None:
        try:
            chunk = output.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        with self._changed:
            if chunk:
                output.buffer += chunk
            else:
                output.eof = True
            self._changed.notify_all()

    def _wake_pump(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[0].send(b"w")

    # -- writing ---------------------------------------------------------------------

    def send(self, data: bytes) -> int:
        """Queue up to ``len(data)`` bytes for the command's stdin; returns how many."""
        with self._changed:
            if self._in is None and not self.closed:
                raise OSError("no command was started on this channel")

            def ready() -> bool:
                failed = self.closed or self._input_error is not None
                return failed or len(self._pending) < WINDOW

            self._wait(ready)
            if self.closed or self._input_error is not None or self._end_input:
                raise OSError("Socket is closed")
            taken = min(len(data), WINDOW - len(self._pending))
            self._pending += data[:taken]
        self._wake_pump()
        return taken

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.send(bytes(view[: WINDOW // 2])) :]

    def shutdown_write(self) -> None:
        """End the command's stdin, once what was sent is written."""
        with self._changed:
            if self.closed or self._in is None:
                return
            self._end_input = True
        self._wake_pump()

    # -- reading ---------------------------------------------------------------------

    def _take(self, output: _Output | None, nbytes: int) -> bytes:
        with self._changed:
            if output is None:
                if self.closed:
                    return b""
                raise OSError("no command was started on this channel")
            self._wait(lambda: bool(output.buffer) or output.eof or self.closed)
            if self.closed:
                return b""
            full = len(output.buffer) >= WINDOW
            data = bytes(output.buffer[:nbytes])
            del output.buffer[:nbytes]
        if full:
            self._wake_pump()
        return data

    def recv(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` of the command's stdout; ``b""`` at its end."""
        return self._take(self._out, nbytes)

    def recv_stderr(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` of the command's stderr; ``b""`` at its end."""
        return self._take(self._err, nbytes)

    def recv_ready(self) -> bool:
        """Whether stdout has data that `recv` returns without waiting."""
        with self._changed:
            return self._out is not None and bool(self._out.buffer)

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

        Wakes up any thread waiting in `recv`, `recv_stderr` or `send`. The
        command is not waited for (as an SSH channel's close does not); it is
        reaped once done.
        """
        with self._changed:
            if self.closed:
                return
            self.closed = True
            self._changed.notify_all()
        self._wake_pump()
        pump = self._pump
        if pump is not None and pump is not threading.current_thread():
            pump.join()
        sockets = [self._in, *(o.sock for o in (self._out, self._err) if o is not None)]
        for sock in [*sockets, *(self._wake or ())]:
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
