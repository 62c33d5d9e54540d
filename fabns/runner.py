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

import codecs
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from fabric.runners import Remote, cares_about_SIGWINCH
from invoke.terminals import pty_size

from fabns.host import Elevation, ssh_command
from fabns.markers import MarkerFilter
from fabns.session import TargetSession

#: Seconds a kill waits for the host side's markers of a command just sent.
ENTRY_WAIT = 10.0


class NamespaceRemote(Remote):  # type: ignore[misc]
    """Run one command inside the target of its context (a `NamespaceConnection`).

    Selected through Fabric's ``runners.remote`` config (`fabns.Config` sets
    it). It needs from its context only what Fabric's runner does
    (``create_session``) plus ``target_session``, the resolved
    `~fabns.session.TargetSession`.

    .. versionadded:: 0.1
    """

    #: Set by the connection before `run`: (uid, gid) override and explicit shell.
    call_options: dict[str, Any]
    markers: MarkerFilter
    session: TargetSession
    elevation: Elevation

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_options = {}
        self.session = self.context.target_session
        self.elevation = self.session.elevation
        self.markers = MarkerFilter(self.session.nonce)
        self._stdin_open = threading.Event()
        self._password_sent = False
        self._timer_fired = False
        self._sent = False
        self._markers_done = threading.Event()

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        host_command = self.session.command_script(command, env, **self.call_options)
        if self.elevation.mode != "sudo-password":
            self._stdin_open.set()
        self.channel = self.context.create_session()
        if self.using_pty:
            cols, rows = pty_size()
            self.channel.get_pty(width=cols, height=rows)
            if cares_about_SIGWINCH():
                signal.signal(signal.SIGWINCH, self.handle_window_change)
        line = self.elevation.wrap(
            host_command.script, args=host_command.args, ask=self.session.nonce
        )
        self.send_start_message(line)
        self._sent = True

    def send_start_message(self, command: str) -> None:
        # shell-neutral bytes: any login shell, and undecodable file names pass exactly
        self.channel.exec_command(ssh_command(command))

    def read_proc_output(self, reader: Any) -> Iterator[str]:
        # One incremental decoder per stream: a character split between two reads
        # is decoded whole (Invoke decodes each read on its own).
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        while True:
            data = reader(self.read_chunk_size)
            if not data:
                break
            text = decoder.decode(data)
            if text:
                yield text
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        while True:
            data = self.channel.recv(num_bytes)
            if not data:
                self._stdin_open.set()
                self._markers_done.set()
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
            self.channel.sendall(f"{self.elevation.password}\n".encode())
            self._stdin_open.set()
        if markers.done:
            self._stdin_open.set()
            self._markers_done.set()

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
        # Invoke calls this from its timeout timer only. Note the timeout first:
        # Invoke's own flag turns true only once the timer thread has finished,
        # and the kill below takes a host round trip.
        self._timer_fired = True
        self._signal_group("KILL")
        super().kill()

    @property
    def timed_out(self) -> bool:
        return self._timer_fired or bool(super().timed_out)

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
        if self._sent:
            # interrupted before the host side spoke: it will, in a moment
            self._markers_done.wait(ENTRY_WAIT)
        pid, start = markers.host_pid, markers.host_start
        if pid is None or start is None or not markers.entered:
            return
        with contextlib.suppress(Exception):
            self.session.kill(pid, start, signame)

    def generate_result(self, **kwargs: Any) -> Any:
        exited = kwargs.get("exited")
        ran = not self.opts.get("dry") and not self.timed_out and exited is not None
        if ran:
            failure = self._entry_failure(kwargs)
            if failure is not None:
                raise failure
        return super().generate_result(**kwargs)

    def _entry_failure(self, kwargs: dict[str, Any]) -> Exception | None:
        text = str(kwargs.get("stdout" if self.using_pty else "stderr", ""))
        return self.session.entry_failure(self.markers, int(kwargs["exited"]), text)


__all__ = ["NamespaceRemote"]
