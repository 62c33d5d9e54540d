"""Persistent sessions: enter once, then run every command through one helper.

`PersistentSession` belongs to one `~fabns.session.TargetSession`: on first use
it starts the ``serve`` helper (`fabns.remote.serve`) over one SSH channel,
which verifies and enters the target once; each command, and each SFTP
session, is then one `~fabns.mux.MuxStream` on that channel -- no new SSH
session, interpreter or entry. `PersistentRemote` is Fabric's runner over such
a stream: Invoke's whole ``run()`` contract, without its polling floor (it
waits for the command's exit, and naps on stdin only while nothing is there).

A session that broke is started again once, transparently, for the next
command -- never for a command that may have started: that one fails with
`~fabns.errors.SessionLost`.
"""

from __future__ import annotations

import signal
import threading
from typing import IO, Any

from fabric.runners import Remote, cares_about_SIGWINCH
from invoke.terminals import character_buffered, pty_size
from invoke.util import isatty

from fabns.errors import SessionLost, TargetChanged, TargetExited
from fabns.failures import from_marker
from fabns.markers import EntryError
from fabns.mux import Mux, MuxStream, set_nodelay
from fabns.runner import GroupSignallingRunner
from fabns.session import TargetSession
from fabns.ways.setns import command_request, credentials_request


class PersistentSession:
    """The ``serve`` helper of one target session, started on first use.

    :param target: the resolved target session.

    .. versionadded:: 0.3
    """

    def __init__(self, target: TargetSession) -> None:
        self.target = target
        self._mux: Mux | None = None
        self._lock = threading.Lock()
        #: helpers started so far, and the host PID of the last one
        self.started = 0
        self.helper_pid: int | None = None

    def __repr__(self) -> str:
        return f"<PersistentSession {self.target.describe()} {self._mux!r}>"

    def mux(self) -> Mux:
        """The live session, started (or started again, if it broke) now."""
        with self._lock:
            mux = self._mux
            if mux is not None and mux.gone is not None:
                raise TargetChanged(f"{self.target.describe()}: {mux.gone}; nothing was run")
            if mux is None or mux.broken is not None:
                connection = self.target.host.connection
                channel, helper_pid = self.target.serve_channel()
                set_nodelay(getattr(connection, "transport", None))
                mux = self._mux = Mux(channel, self.target.describe())
                self.helper_pid = helper_pid
                self.started += 1
            return mux

    def open(self, request: dict[str, Any]) -> MuxStream:
        """A started stream for ``request``; the fabns exception if it could not start.

        If the session turns out broken before the request left, it is started
        again once; a stream that may have started is never opened twice.
        """
        for attempt in (1, 2):
            mux = self.mux()
            try:
                stream = mux.open(request)
                break
            except SessionLost:
                if attempt == 2 or mux.gone is not None:
                    raise
        stream.started.wait()
        if stream.failure is not None:
            stream.close()
            step, number, detail = stream.failure
            raise from_marker(
                EntryError(step, number, detail), self.target.describe(), "setns (persistent)"
            )
        if stream.result.get("lost") and stream.pid is None:
            stream.close()
            raise self.lost(stream)
        return stream

    def lost(self, stream: MuxStream) -> Exception:
        """The exception for a stream the session ended (None if it ended by itself)."""
        why = stream.result.get("lost")
        where = self.target.describe()
        mux = self._mux
        if why == "gone" or (mux is not None and mux.gone is not None):
            return TargetExited(f"{where}: the target exited while the command ran")
        return SessionLost(
            f"{where}: the fabns session broke while the command ran "
            f"({mux.broken if mux else why}); it was not run again"
        )

    def open_command(
        self, command: str, env: dict[str, Any], pty: dict[str, int] | None, **options: Any
    ) -> MuxStream:
        """Start ``command`` (``options``: ``uid``, ``gid``, ``shell``)."""
        call = self.target.call(command, env, **options)
        return self.open({**command_request(call), "pty": pty})

    def open_sftp(self, temp_prefix: str) -> MuxStream:
        """An SFTP session served inside the target as the connection's user."""
        request = {
            **credentials_request(self.target.credentials()),
            "sftp": True,
            "temp_prefix": temp_prefix,
        }
        stream = self.open(request)
        stream.kill_on_close = False
        stream.settimeout(self.target.host.timeout)
        return stream

    def close(self) -> None:
        """End the helper (it kills what still runs). Idempotent."""
        with self._lock:
            mux, self._mux = self._mux, None
        if mux is not None:
            mux.close()


class PersistentRemote(GroupSignallingRunner, Remote):  # type: ignore[misc]
    """Run one command through the context's `PersistentSession`.

    Chosen by `~fabns.connection.NamespaceConnection` when ``persistent=True``.
    Echo, hide, warn, watchers, in_stream, pty, timeout, encoding and
    `UnexpectedExit` are Invoke's; the pty is allocated inside the target.

    .. versionadded:: 0.3
    """

    read_chunk_size = 65536
    call_options: dict[str, Any]
    channel: MuxStream
    #: The session to run in; None: the context's ``persistent_session``.
    session: PersistentSession | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_options = {}

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        pty = None
        if self.using_pty:
            cols, rows = pty_size()
            pty = {"cols": cols, "rows": rows}
        if self.session is None:
            self.session = self.context.persistent_session
        self.channel = self.session.open_command(command, env, pty, **self.call_options)
        if self.using_pty and cares_about_SIGWINCH():
            signal.signal(signal.SIGWINCH, self.handle_window_change)

    def wait(self) -> None:
        # the stream's exit is an event: no sleep between polls
        while not self.channel.wait_exit(0.1):
            if self.has_dead_threads:
                break

    def handle_stdin(self, input_: IO[Any], output: IO[Any], echo: bool = False) -> None:
        """As Invoke's, but reads again at once while data flows, and naps on the
        command's end instead of a fixed sleep, so it stops as soon as the command does."""
        closed = False
        with character_buffered(input_):
            while True:
                data = self.read_our_stdin(input_)
                if data:
                    self.write_proc_stdin(data)
                    if echo is None:
                        echo = self.should_echo_stdin(input_, output)
                    if echo:
                        self.write_our_output(stream=output, string=data)
                    continue
                if data is not None and not self.using_pty and not closed:
                    self.close_proc_stdin()
                    closed = True
                if self.program_finished.is_set():
                    break
                if data is not None and not isatty(input_):
                    # a file at its end: nothing more will come
                    self.program_finished.wait()
                    break
                self.program_finished.wait(self.input_sleep)

    def _signal_group(self, signame: str) -> None:
        # the helper signals the group of its own child: no host step
        self.channel.signal(getattr(signal, f"SIG{signame}"))

    def generate_result(self, **kwargs: Any) -> Any:
        lost = self.channel.result.get("lost")
        if lost in ("gone", "session") and not self.timed_out:
            assert self.session is not None
            error = self.session.lost(self.channel)
            if lost == "gone":
                self.context.forget_target()  # the next command resolves afresh
            raise error
        return super().generate_result(**kwargs)


__all__ = ["PersistentRemote", "PersistentSession"]
