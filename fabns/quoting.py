"""The one place where strings become shell words.

Every user-supplied string that reaches a remote shell goes through `quote`
(or `join`, which calls it). Strings that a shell word cannot carry -- those
with a NUL byte -- are refused here rather than silently truncated.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from fabns.errors import InvalidArgument

#: What keeps a special meaning inside double quotes in a POSIX shell.
_DOUBLE_QUOTE_SPECIALS = re.compile(r'[\\$`"]')


def quote(word: object) -> str:
    """Return ``word`` as one POSIX shell word.

    Numbers are converted with `str`. A NUL byte raises `InvalidArgument`:
    no argv element or environment value can hold one.
    """
    text = str(word)
    if "\x00" in text:
        raise InvalidArgument(f"cannot pass a NUL byte to a remote shell: {text!r}")
    check_text(text, "a shell word")
    single = shlex.quote(text)
    if "'" not in text:
        return single
    # Single quotes cost five characters each in single-quote form ('"'"'): for
    # quote-heavy text the double-quote form, escaping only \ $ ` and ", is far
    # shorter (a command must fit in one 128 KiB argument of the host shell).
    double = '"' + _DOUBLE_QUOTE_SPECIALS.sub(r"\\\g<0>", text) + '"'
    return double if len(double) < len(single) else single


def check_text(text: str, what: str) -> str:
    """Refuse ``text`` unless it can reach the host exactly.

    A NUL byte cannot be in any argv or environment entry; a lone surrogate
    other than the ``surrogateescape`` ones (``\\udc80``-``\\udcff``, the bytes
    of an undecodable file name) stands for no bytes at all.
    """
    if "\x00" in text:
        raise InvalidArgument(f"{what} contains a NUL byte: {text!r}")
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"{what} holds text that is no bytes: {text!r} ({error.reason})"
        ) from None
    return text


def exact_bytes(text: str) -> bytes:
    """``text`` as the bytes it stands for (UTF-8; ``surrogateescape`` for undecodable ones)."""
    return check_text(text, "text").encode("utf-8", "surrogateescape")


def check_env_name(name: object) -> str:
    """Refuse anything but a portable environment variable name (``[A-Za-z_][A-Za-z0-9_]*``)."""
    if (
        not isinstance(name, str)
        or not name
        or not name.isascii()
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isalnum() or c == "_" for c in name)
    ):
        raise InvalidArgument(f"not a valid environment variable name: {name!r}")
    return name


def join(argv: Iterable[object]) -> str:
    """Quote every element of ``argv`` and join them with spaces."""
    return " ".join(quote(arg) for arg in argv)


def env_assignment(name: str, value: object) -> str:
    """Return ``NAME=value`` as one quoted word, checking that NAME is a valid name."""
    return quote(f"{check_env_name(name)}={value}")


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
