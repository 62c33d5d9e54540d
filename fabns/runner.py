"""Invoke's runners, pointed into the target.

`NamespaceRunner` is what fabns adds to an Invoke runner, wherever the host
side runs: Invoke's machinery (echo, hide, warn, watchers, in_stream, timeout,
pty, `UnexpectedExit`) runs unchanged; the command started on the host is the
way in's host script with host privilege, the environment is the container's
(quoted, never Fabric's unquoted inline ``export``, never this process's),
marker lines are stripped from stdout, entry failures become fabns exceptions,
and timeouts and Ctrl-C kill the command's process group on the host instead of
only closing the channel. Two runners are it plus where the host side runs:

- `NamespaceRemote`, Fabric's `~fabric.runners.Remote`: over an SSH channel
  (``runners.remote``, what `fabns.Config` selects);
- `LocalNamespaceRunner`, Invoke's `~invoke.runners.Local`: as a process on
  this machine, for `fabns.local.LocalNamespaceConnection`.

The host sudo password is written only when the host side asks for it with a
``pw`` marker -- before entering, whatever stdin is -- and the user's stdin
is held back until then, so it can never be taken for the password, nor the
password reach the container.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Generator, Mapping
from types import FrameType
from typing import Any

from fabric.runners import Remote, Result, cares_about_SIGWINCH
from invoke.runners import Local, Runner
from invoke.terminals import pty_size

from fabns.host import FIXED_ENV, SH, Elevation, ssh_command
from fabns.markers import MarkerFilter
from fabns.quoting import exact_bytes
from fabns.session import TargetSession

#: Seconds a kill waits for the host side's markers of a command just sent.
ENTRY_WAIT = 10.0


class GroupSignallingRunner(Runner):
    """What every fabns runner adds to Invoke's: incremental decoding, no quadratic
    `respond` without watchers, and a timeout or Ctrl-C that signals the command's
    process group (`_signal_group`, the subclass's way of reaching it).

    .. versionadded:: 0.3
    """

    _timer_fired = False

    def _signal_group(self, signame: str) -> None:
        """Send ``SIG<signame>`` to the command's process group."""
        raise NotImplementedError

    def read_proc_output(self, reader: Any) -> Generator[str, None, None]:
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

    def respond(self, buffer_: list[str]) -> None:
        # Invoke joins the whole output so far on every read, for the watchers:
        # quadratic on a large output. Without watchers there is nothing to do.
        if self.watchers:
            super().respond(buffer_)

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


class NamespaceRunner(GroupSignallingRunner):
    """An Invoke runner whose command runs inside the target of its context.

    Not used by itself: a subclass says where the host side runs
    (`start_host`), and inherits from the Invoke runner that reads and writes
    it (`NamespaceRemote`, `LocalNamespaceRunner`). The context needs only
    ``target_session``, the resolved `~fabns.session.TargetSession`, besides
    what that Invoke runner needs. Results are Fabric's
    `~fabric.runners.Result`, with ``.connection`` (the context).

    .. versionadded:: 0.2
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

    def run(self, command: str, **kwargs: Any) -> Any:
        # The command's environment is the container's plus ``env``; this
        # process's own environment is added only on request (as in Fabric).
        kwargs.setdefault("replace_env", True)
        return super().run(command, **kwargs)

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        host_command = self.session.command_script(command, env, **self.call_options)
        if self.elevation.mode != "sudo-password":
            self._stdin_open.set()
        line = self.elevation.wrap(
            host_command.script, args=host_command.args, ask=self.session.nonce
        )
        self.start_host(line)
        self._sent = True

    def start_host(self, line: str) -> None:
        """Start the host shell ``line`` (with a pty if `using_pty`), with a fixed environment."""
        raise NotImplementedError

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        while True:
            data = super().read_proc_stdout(num_bytes)
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
            self._write_proc_stdin(f"{self.elevation.password}\n".encode())
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

    def write_proc_stdin(self, data: str) -> None:
        if self._hold_stdin():
            super().write_proc_stdin(data)

    def close_proc_stdin(self) -> None:
        if self._hold_stdin():
            super().close_proc_stdin()

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
        return Result(connection=self.context, **kwargs)

    def _entry_failure(self, kwargs: dict[str, Any]) -> Exception | None:
        text = str(kwargs.get("stdout" if self.using_pty else "stderr", ""))
        return self.session.entry_failure(self.markers, int(kwargs["exited"]), text)


class NamespaceRemote(NamespaceRunner, Remote):  # type: ignore[misc]
    """Run one command inside the target of its context (a `NamespaceConnection`), over SSH.

    Selected through Fabric's ``runners.remote`` config (`fabns.Config` sets
    it). It needs from its context only what Fabric's runner does
    (``create_session``) plus ``target_session``.

    .. versionadded:: 0.1
    """

    def start_host(self, line: str) -> None:
        self.channel = self.context.create_session()
        if self.using_pty:
            cols, rows = pty_size()
            self.channel.get_pty(width=cols, height=rows)
            if cares_about_SIGWINCH():
                signal.signal(signal.SIGWINCH, self.handle_window_change)
        self.send_start_message(line)

    def send_start_message(self, command: str) -> None:
        # shell-neutral bytes: any login shell, and undecodable file names pass exactly
        self.channel.exec_command(ssh_command(command))


def host_environment() -> dict[str, str]:
    """`~fabns.host.FIXED_ENV` as a mapping: the whole environment of a local host side."""
    return dict(entry.split("=", 1) for entry in FIXED_ENV)


def spawn_on_pty(
    argv: list[bytes], env: Mapping[str, str], cols: int, rows: int
) -> tuple[int, int]:
    """Start ``argv`` on a new pty of ``cols`` x ``rows``; returns (PID, the pty's master fd).

    The child is a session leader with the pty as its controlling terminal
    (so ``\\x03`` interrupts its foreground group), in ``/``, with only fds 0-2
    open. Between fork and exec it makes system calls only.
    """
    master, slave = os.openpty()
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environment = {k.encode(): v.encode() for k, v in env.items()}
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child execs or exits)
            try:
                os.close(master)
                os.login_tty(slave)
                os.closerange(3, 1 << 20)
                os.chdir("/")
                os.execve(argv[0], argv, environment)
            finally:
                os._exit(127)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return pid, master


class LocalNamespaceRunner(NamespaceRunner, Local):
    """Run one command inside the target of its context, on this machine, without SSH.

    Invoke's `~invoke.runners.Local` underneath: the host side is a local
    process -- ``/bin/sh -c LINE`` with nothing but the fixed host
    environment, in ``/``, in a new session (a kill of its process group never
    reaches this process) -- read and written as Invoke reads and writes any
    local command. A pty is given when asked for, whatever this process's own
    stdin is (as over SSH). The context is a
    `~fabns.local.LocalNamespaceConnection`.

    .. versionadded:: 0.2
    """

    def __init__(self, context: Any, **kwargs: Any) -> None:
        kwargs.pop("inline_env", None)  # what Fabric's connection gives every runner
        super().__init__(context, **kwargs)

    def should_use_pty(self, pty: bool = False, fallback: bool = True) -> bool:
        return bool(pty)

    def start_host(self, line: str) -> None:
        argv = [SH.encode(), b"-c", exact_bytes(line)]
        if self.using_pty:
            cols, rows = pty_size()
            self.pid, self.parent_fd = spawn_on_pty(argv, host_environment(), cols, rows)
            if cares_about_SIGWINCH():
                signal.signal(signal.SIGWINCH, self.handle_window_change)
            return
        self.process = subprocess.Popen(
            argv,
            env=host_environment(),
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def handle_window_change(self, signum: int, frame: FrameType | None) -> None:
        """Give the command's pty the local terminal's new size (a `signal.SIGWINCH` handler)."""
        cols, rows = pty_size()
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.parent_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def kill(self) -> None:
        # Local's SIGKILL of its child is refused when sudo made that child root's;
        # the host group was killed through the host side (with privilege) already.
        with contextlib.suppress(PermissionError):
            super().kill()

    def stop(self) -> None:
        super().stop()
        process = getattr(self, "process", None)
        if not self.using_pty and process is not None:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.using_pty and cares_about_SIGWINCH():
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)


__all__ = [
    "ENTRY_WAIT",
    "LocalNamespaceRunner",
    "NamespaceRemote",
    "NamespaceRunner",
    "host_environment",
    "spawn_on_pty",
]
