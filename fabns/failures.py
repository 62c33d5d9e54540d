"""One translator: what the host side said about a failed entry -> the exception.

Two sources only, both written by host-side code before anything of the
container ran: an ``err`` marker (`from_marker`), or the exit status and first
error line of the host side when it printed no marker (`from_exit`). For
nsenter and lxc-attach, whose own failures can only show after ``ok``,
`tool_failure` reads the tool's own error line; container output could at
most change which exception is raised there, never what fabns does.
"""

from __future__ import annotations

import errno as errno_codes

from fabns.errors import (
    ElevationRequired,
    EntryFailed,
    HelperError,
    NamespaceError,
    PermissionDenied,
    TargetChanged,
    ToolMissing,
    UnknownUser,
)
from fabns.markers import EntryError

#: (step, errno) -> exception class for ``err`` markers; None matches anything.
MARKER_TABLE: tuple[tuple[str | None, int | None, type[NamespaceError]], ...] = (
    ("gone", None, TargetChanged),
    ("changed", None, TargetChanged),
    (None, errno_codes.EPERM, PermissionDenied),
    (None, errno_codes.EACCES, PermissionDenied),
    ("setuid", errno_codes.EINVAL, UnknownUser),
    ("setgid", errno_codes.EINVAL, UnknownUser),
    ("exec", errno_codes.ENOENT, ToolMissing),
)

#: (text found in the host side's error output) -> exception class, first match wins.
EXIT_TABLE: tuple[tuple[str, type[NamespaceError]], ...] = (
    ("sudo: ", ElevationRequired),
    ("Permission denied", PermissionDenied),
    ("Operation not permitted", PermissionDenied),
    ("not found", ToolMissing),
    ("No such file or directory", ToolMissing),
)


def from_marker(error: EntryError, where: str, method: str) -> NamespaceError:
    """The exception for an ``err`` marker of the guard or the helper."""
    detail = f" ({error.detail})" if error.detail else ""
    reason = f"{errno_codes.errorcode.get(error.errno, error.errno)}" if error.errno else "error"
    kind: type[NamespaceError] = HelperError
    for step, number, candidate in MARKER_TABLE:
        if (step is None or step == error.step) and (number is None or number == error.errno):
            kind = candidate
            break
    if kind is TargetChanged:
        return TargetChanged(f"{where}: {error.detail}; nothing was run")
    if kind is UnknownUser:
        return UnknownUser(f"{where}: id {error.detail} is not mapped in the container")
    if kind is ToolMissing:
        return ToolMissing(f"{where}: {error.detail} does not exist inside the container")
    message = f"{where}: {method} could not enter: {error.step}{detail}: {reason}; nothing ran"
    if kind is HelperError:
        number = error.errno or None
        return HelperError(message, step=error.step, errno=number, detail=error.detail)
    return kind(message)


def from_exit(exited: int, text: str, where: str, method: str) -> NamespaceError:
    """The exception for a host side that failed without a marker (sudo, a missing tool)."""
    text = text.strip()
    for needle, kind in EXIT_TABLE:
        if needle in text or (kind is ToolMissing and exited == 127):
            if kind is ElevationRequired:
                return ElevationRequired(f"entering {where} needs root: {text}")
            return kind(f"{method} could not enter {where} (exit {exited}): {text}")
    return EntryFailed(f"{method} could not enter {where} (exit {exited}): {text or 'no output'}")


def tool_failure(
    exited: int, text: str, prefix: str | None, where: str, method: str
) -> NamespaceError | None:
    """nsenter's or lxc-attach's own failure after ``ok``, from its first error line."""
    if not prefix or exited == 0:
        return None
    first = text.lstrip().split("\n", 1)[0].rstrip("\r")
    if not first.startswith(prefix):
        return None
    return from_exit(exited, first, where, method)


__all__ = ["EXIT_TABLE", "MARKER_TABLE", "from_exit", "from_marker", "tool_failure"]
