"""Fabric's runner, pointed into the target.

`NamespaceRemote` is a `fabric.runners.Remote`: Invoke's machinery (echo,
hide, warn, watchers, in_stream, timeout, pty, `Result`, `UnexpectedExit`)
runs unchanged. What differs: the command sent to the host is the way in's
wrapper, the environment is the container's (quoted, never Fabric's unquoted
inline ``export``), marker lines are stripped from stdout, entry failures
become fabns exceptions, and timeouts and Ctrl-C kill the command's process
group on the host instead of only closing the channel.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import signal
from typing import TYPE_CHECKING, Any

from fabric.runners import Remote, cares_about_SIGWINCH
from invoke.terminals import pty_size

from fabns.errors import (
    HelperError,
    NamespaceError,
    PermissionDenied,
    TargetChanged,
    ToolMissing,
    UnknownUser,
)
from fabns.host import run_on_host
from fabns.markers import EntryError, MarkerFilter
from fabns.ways import kill_group_command

if TYPE_CHECKING:
    from fabns.connection import NamespaceConnection


class NamespaceRemote(Remote):  # type: ignore[misc]
    """Run one command inside a `NamespaceConnection`'s target.

    .. versionadded:: 0.1
    """

    #: Set by the connection before `run`: (uid, gid) override and explicit shell.
    call_options: dict[str, Any]
    markers: MarkerFilter
    context: NamespaceConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_options = {}
        self.markers = MarkerFilter(self.context.fabns_nonce)

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        connection = self.context
        wrapped = connection.wrap_command(command, env, **self.call_options)
        self.channel = connection.create_session()
        if self.using_pty:
            cols, rows = pty_size()
            self.channel.get_pty(width=cols, height=rows)
            if cares_about_SIGWINCH():
                signal.signal(signal.SIGWINCH, self.handle_window_change)
        self.send_start_message(wrapped)

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        while True:
            data = self.channel.recv(num_bytes)
            if not data:
                return self.markers.flush()
            out = self.markers.feed(data)
            if out:
                return out

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
        pid = self.markers.host_pid
        if pid is None or not self.markers.entered:
            return
        with contextlib.suppress(Exception):
            run_on_host(self.context, kill_group_command(pid, signame), self.context.elevation)

    def generate_result(self, **kwargs: Any) -> Any:
        exited = kwargs.get("exited")
        ran = not self.opts.get("dry") and not self.timed_out and exited is not None
        if ran and not self.markers.entered:
            raise self._entry_failure(kwargs)
        return super().generate_result(**kwargs)

    def _entry_failure(self, kwargs: dict[str, Any]) -> NamespaceError:
        connection = self.context
        where = connection.describe_target()
        stderr = str(kwargs.get("stderr", "")).strip()
        error = self.markers.error
        if error is not None:
            return translate_entry_error(error, where, connection.method_name)
        return connection.explain_failed_entry(int(kwargs["exited"]), stderr)


def translate_entry_error(error: EntryError, where: str, method: str) -> NamespaceError:
    """Turn a helper or guard ``err`` marker into the matching exception."""
    detail = f" ({error.detail})" if error.detail else ""
    reason = f"{errno_codes.errorcode.get(error.errno, error.errno)}" if error.errno else ""
    if error.step in ("gone", "changed"):
        return TargetChanged(f"{where}: {error.detail}; nothing was run")
    if error.errno in (errno_codes.EPERM, errno_codes.EACCES):
        return PermissionDenied(
            f"{where}: {method} may not enter: {error.step}{detail}: {reason}; nothing was run"
        )
    if error.step in ("setuid", "setgid") and error.errno == errno_codes.EINVAL:
        return UnknownUser(f"{where}: id {error.detail} is not mapped in the container")
    if error.step == "exec" and error.errno == errno_codes.ENOENT:
        return ToolMissing(f"{where}: {error.detail} does not exist inside the container")
    return HelperError(
        f"{where}: {method} failed at {error.step}{detail}: {reason or 'error'}; nothing was run",
        step=error.step,
        errno=error.errno or None,
        detail=error.detail,
    )


__all__ = ["NamespaceRemote", "translate_entry_error"]
