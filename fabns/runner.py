"""Fabric's runner, pointed into the target.

`NamespaceRemote` is a `fabric.runners.Remote`: Invoke's machinery (echo,
hide, warn, watchers, in_stream, timeout, pty, `Result`, `UnexpectedExit`)
runs unchanged. What differs: the command sent to the host is the way in's
host script with host privilege, the environment is the container's (quoted,
never Fabric's unquoted inline ``export``), marker lines are stripped from
stdout, entry failures become fabns exceptions, and timeouts and Ctrl-C kill
the command's process group on the host instead of only closing the channel.

The host sudo password is written only when the host side asks for it with a
``pw`` marker -- before entering, whatever stdin is -- and the user's stdin
is held back until then, so it can never be taken for the password, nor the
password reach the container.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Any

from fabric.runners import Remote, cares_about_SIGWINCH
from invoke.terminals import pty_size

from fabns.errors import NamespaceError
from fabns.failures import from_exit, from_marker, tool_failure
from fabns.markers import MarkerFilter
from fabns.ways import kill_group_command

if TYPE_CHECKING:
    from fabns.connection import NamespaceConnection
    from fabns.host import Elevation


class NamespaceRemote(Remote):  # type: ignore[misc]
    """Run one command inside a `NamespaceConnection`'s target.

    .. versionadded:: 0.1
    """

    #: Set by the connection before `run`: (uid, gid) override and explicit shell.
    call_options: dict[str, Any]
    markers: MarkerFilter
    context: NamespaceConnection
    elevation: Elevation | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_options = {}
        self.markers = MarkerFilter(self.context.fabns_nonce)
        self.elevation = None
        self._stdin_open = threading.Event()
        self._password_sent = False

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        connection = self.context
        script = connection.command_script(command, env, **self.call_options)
        self.elevation = connection.elevation
        if self.elevation.mode != "sudo-password":
            self._stdin_open.set()
        self.channel = connection.create_session()
        if self.using_pty:
            cols, rows = pty_size()
            self.channel.get_pty(width=cols, height=rows)
            if cares_about_SIGWINCH():
                signal.signal(signal.SIGWINCH, self.handle_window_change)
        self.send_start_message(self.elevation.wrap(script, ask=connection.fabns_nonce))

    def send_start_message(self, command: str) -> None:
        # bytes, so strings holding lone surrogates (undecodable file names) pass exactly
        self.channel.exec_command(command.encode("utf-8", "surrogateescape"))

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        while True:
            data = self.channel.recv(num_bytes)
            if not data:
                self._stdin_open.set()
                return self.markers.flush()
            out = self.markers.feed(data)
            self._answer_host()
            if out:
                return out

    def _answer_host(self) -> None:
        """Send the sudo password when (and only when) the host side asked for it."""
        markers = self.markers
        if markers.password_requested and not self._password_sent and not markers.done:
            self._password_sent = True
            assert self.elevation is not None
            self.channel.sendall(f"{self.elevation.password}\n".encode())
            self._stdin_open.set()
        if markers.done:
            self._stdin_open.set()

    def _hold_stdin(self) -> bool:
        """Wait until stdin may flow; False if the command ended first."""
        while not self._stdin_open.wait(0.05):
            if self.program_finished.is_set():
                return False
        return True

    def write_proc_stdin(self, data: bytes) -> None:
        if self._hold_stdin():
            super().write_proc_stdin(data)

    def close_proc_stdin(self) -> None:
        if self._hold_stdin():
            super().close_proc_stdin()

    def kill(self) -> None:
        self._signal_group("KILL")
        super().kill()

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        if self.using_pty:
            super().send_interrupt(interrupt)
            return
        self._signal_group("TERM")
        raise interrupt

    def _signal_group(self, signame: str) -> None:
        """Signal the command's host process group, as its host side reported it.

        Only after ``ok`` (so the PID came from the host side, never the
        container) and only if that PID still has the reported start time.
        """
        markers = self.markers
        pid, start = markers.host_pid, markers.host_start
        if pid is None or start is None or not markers.entered:
            return
        host = self.context.host_session
        with contextlib.suppress(Exception):
            host.run(kill_group_command(pid, start, signame), self.context.elevation)

    def generate_result(self, **kwargs: Any) -> Any:
        exited = kwargs.get("exited")
        ran = not self.opts.get("dry") and not self.timed_out and exited is not None
        if ran:
            failure = self._entry_failure(kwargs)
            if failure is not None:
                raise failure
        return super().generate_result(**kwargs)

    def _entry_failure(self, kwargs: dict[str, Any]) -> NamespaceError | None:
        connection = self.context
        where = connection.describe_target()
        method = connection.method_name
        exited = int(kwargs["exited"])
        text = str(kwargs.get("stdout" if self.using_pty else "stderr", ""))
        if self.markers.entered:
            return tool_failure(exited, text, connection.way.error_prefix, where, method)
        if self.markers.error is not None:
            return from_marker(self.markers.error, where, method)
        return from_exit(exited, text, where, method)


__all__ = ["NamespaceRemote"]
