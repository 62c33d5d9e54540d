"""The one place where strings become shell words.

Every user-supplied string that reaches a remote shell goes through `quote`
(or `join`, which calls it). Strings that a shell word cannot carry -- those
with a NUL byte -- are refused here rather than silently truncated.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from fabns.errors import InvalidArgument


def quote(word: object) -> str:
    """Return ``word`` as one POSIX shell word.

    Numbers are converted with `str`. A NUL byte raises `InvalidArgument`:
    no argv element or environment value can hold one.
    """
    text = str(word)
    if "\x00" in text:
        raise InvalidArgument(f"cannot pass a NUL byte to a remote shell: {text!r}")
    return shlex.quote(text)


def check_text(text: str, what: str) -> str:
    """Refuse ``text`` if it holds a NUL byte (no argv or environment entry can)."""
    if "\x00" in text:
        raise InvalidArgument(f"{what} contains a NUL byte: {text!r}")
    return text


def join(argv: Iterable[object]) -> str:
    """Quote every element of ``argv`` and join them with spaces."""
    return " ".join(quote(arg) for arg in argv)


def env_assignment(name: str, value: object) -> str:
    """Return ``NAME=value`` as one quoted word, checking that NAME is a valid name."""
    if (
        not name
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isalnum() or c == "_" for c in name)
    ):
        raise InvalidArgument(f"not a valid environment variable name: {name!r}")
    if not name.isascii():
        raise InvalidArgument(f"not a valid environment variable name: {name!r}")
    return quote(f"{name}={value}")


def shell_path(path: str) -> str:
    """``path`` as one shell word for ``cd``: literal, except that a leading ``~``
    (alone or before ``/``) still means the user's home, as in Fabric."""
    check_text(path, "a path")
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + quote(path[2:]) if path[2:] else "~/"
    if path.startswith("-"):
        path = "./" + path  # never an option to cd
    return quote(path)
