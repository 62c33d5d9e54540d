"""``fabns cp``: one file into or out of a container, atomically, with a progress bar.

A side that reads ``[user@]host[:port]/container:path`` (or
``.../pid:N:path``) is inside that target; the other side is local. A path
starting with ``/``, ``./``, ``../`` or ``~`` is always local (write
``./a/b:c`` for a local file whose name holds ``/`` and ``:``). The copy is
`NamespaceConnection.put` / `~NamespaceConnection.get`: it appears at the
destination only when complete.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from fabns.connection import NamespaceConnection
from fabns.errors import InvalidArgument

#: Below this size a terminal gets no progress bar (the copy is over before it would show).
PROGRESS_THRESHOLD = 1 << 20


@dataclass(frozen=True)
class Location:
    """One side of a copy: ``target`` is None for a local path."""

    path: str
    target: str | None = None

    @classmethod
    def parse(cls, text: str) -> Location:
        """``host/container:path``, ``host/pid:N:path`` or a local path."""
        if not text:
            raise InvalidArgument("an empty path")
        if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
            return cls(text)
        address, slash, rest = text.partition("/")
        if not slash or not address:
            return cls(text)
        if rest.startswith("pid:"):
            number, colon, path = rest[4:].partition(":")
            if not colon:
                return cls(text)
            if not number.isascii() or not number.isdecimal():
                raise InvalidArgument(f"bad PID in {text!r}")
            return cls(path, f"{address}/pid:{number}")
        name, colon, path = rest.partition(":")
        if not colon or not name:
            return cls(text)
        return cls(path, f"{address}/{name}")

    def __str__(self) -> str:
        return f"{self.target}:{self.path}" if self.target else self.path


class ProgressBar:
    """``progress=`` for put/get drawing one self-overwriting line on a terminal.

    Drawn at most ten times a second, and only for files of at least
    `PROGRESS_THRESHOLD` bytes unless ``always``.
    """

    def __init__(self, label: str, stream: IO[str], *, always: bool = False) -> None:
        self.label = label
        self.stream = stream
        self.always = always
        self.started = time.monotonic()
        self.drawn = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.always and total < PROGRESS_THRESHOLD:
            return
        now = time.monotonic()
        if done < total and now - self.drawn < 0.1:
            return
        self.drawn = now
        rate = done / max(now - self.started, 1e-6)
        percent = 100 * done // total if total else 100
        width = 24
        filled = width * percent // 100
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {percent:3d}% {_size(done)}/{_size(total)} {_size(rate)}/s "
        )
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _size(amount: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def copy(
    source: str,
    destination: str,
    connect: Callable[[str], NamespaceConnection],
    *,
    progress: bool | None = None,
    stream: IO[str] | None = None,
) -> str:
    """Copy ``source`` to ``destination`` (one of them inside a target); returns where it went.

    :param connect: makes the connection for a target string (SSH settings and
        target options are the caller's).
    :param progress: draw a progress bar: ``None`` (default) on a terminal for
        large files, ``True`` always, ``False`` never.
    """
    src, dst = Location.parse(source), Location.parse(destination)
    if (src.target is None) == (dst.target is None):
        raise InvalidArgument(
            "one side of fabns cp must be inside a target (host/container:path) and the other "
            f"local: {source!r} -> {destination!r}"
        )
    stream = stream or sys.stderr
    draw = progress if progress is not None else stream.isatty()
    bar = ProgressBar(
        os.path.basename(src.path.rstrip("/")) or src.path, stream, always=bool(progress)
    )
    callback = bar if draw else None
    try:
        if dst.target is not None:
            if os.path.isdir(src.path):
                raise InvalidArgument(f"{src.path!r} is a directory: fabns cp copies files")
            with connect(dst.target) as c:
                result = c.put(src.path, dst.path or None, progress=callback)
                return f"{dst.target}:{result.remote}"
        assert src.target is not None
        with connect(src.target) as c:
            result = c.get(src.path, dst.path, progress=callback)
            return str(result.local)
    finally:
        bar.finish()


__all__ = ["PROGRESS_THRESHOLD", "Location", "ProgressBar", "copy"]
