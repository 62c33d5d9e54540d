"""Marker lines: how the host side tells the client where the command starts.

Before the user's command runs, the *host side* of the way in (the guard
script before it execs nsenter or lxc-attach, or the setns helper before
execve) writes short lines on stdout, each ``\\x1ffabns:KIND:NONCE[:FIELDS]``,
with a nonce that is random per connection:

``pw:NONCE``
    the host side is ready for the sudo password (terminal echo is off); the
    client writes it to stdin now, and only now.
``pid:NONCE:PID:START``
    host PID (and its start time, field 22 of ``/proc/PID/stat``) whose
    process group is the command's; used to kill it on timeout or Ctrl-C, after
    checking that start time again on the host.
``ok:NONCE``
    entered; everything after this is the command's own output.
``err:NONCE:STEP:ERRNO:DETAIL``
    entering failed at STEP; the command never ran.

The filter reads markers only until ``ok`` or ``err``: those are written before
the container's first instruction, so nothing the container prints is ever
read as a marker -- whatever it knows of the nonce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fabns.remote.protocol import (
    MARKER_KINDS,
    MARKER_OK,
    MARKER_PASSWORD,
    MARKER_PID,
    MARKER_PREFIX_BYTES,
)

PREFIX = MARKER_PREFIX_BYTES
#: `PREFIX` as a printf(1) format (``\\037`` is the unit separator byte).
PRINTF_PREFIX = "\\037" + PREFIX[1:].decode()
#: A marker line up to its nonce: the prefix and the kind (group 1).
_HEAD = re.escape(PREFIX) + b"(" + b"|".join(re.escape(k.encode()) for k in MARKER_KINDS) + b"):"


def _number(text: str) -> bool:
    return text.isascii() and text.isdecimal()


@dataclass
class EntryError:
    step: str
    errno: int
    detail: str


class MarkerFilter:
    """Feed stdout chunks in, get the user's output out."""

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self._pattern = re.compile(_HEAD + re.escape(nonce.encode()) + rb"(?::([^\r\n]*))?\r?\n")
        self._buffer = b""
        self.done = False
        self.entered = False
        self.password_requested = False
        self.host_pid: int | None = None
        self.host_start: str | None = None
        self.error: EntryError | None = None

    def feed(self, data: bytes) -> bytes:
        """Return the part of ``data`` that belongs to the user."""
        if self.done:
            return data
        self._buffer += data
        out = b""
        while not self.done:
            match = self._pattern.search(self._buffer)
            if match is None:
                break
            out += self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            self._record(
                match.group(1).decode(), (match.group(2) or b"").decode("utf-8", "replace")
            )
        if self.done:
            out += self._buffer
            self._buffer = b""
            return out
        # Hold back only what could still become a marker.
        keep = self._partial_marker_start(self._buffer)
        out += self._buffer[:keep]
        self._buffer = self._buffer[keep:]
        return out

    def flush(self) -> bytes:
        """End of stream: give back whatever was held."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _record(self, kind: str, fields: str) -> None:
        if kind == MARKER_PASSWORD:
            self.password_requested = True
        elif kind == MARKER_PID:
            pid, _, start = fields.partition(":")
            # never a PID the kernel or init owns: a group <= 1 is never signalled
            if _number(pid) and int(pid) > 1 and _number(start):
                self.host_pid, self.host_start = int(pid), start
        elif kind == MARKER_OK:
            self.entered = True
            self.done = True
        else:  # MARKER_ERROR
            step, _, rest = fields.partition(":")
            number, _, detail = rest.partition(":")
            self.error = EntryError(step, int(number) if _number(number) else 0, detail)
            self.done = True

    @staticmethod
    def _partial_marker_start(buffer: bytes) -> int:
        start = buffer.find(PREFIX[:1])
        while start != -1:
            tail = buffer[start:]
            if (tail.startswith(PREFIX) or PREFIX.startswith(tail)) and b"\n" not in tail:
                return start
            start = buffer.find(PREFIX[:1], start + 1)
        return len(buffer)
