"""Build the command line that runs the pushed helper (the `fabns.remote` package).

The helper travels inside the command itself -- compressed, base64, passed to
``python3 -c`` -- so nothing is written on the host or in the container, and
stdin stays free for the user's command. Each mode gets a program of only the
modules it needs (`PROGRAMS`), assembled as `fabns.remote` describes, and sent
without docstrings and comments (`compact`).

Where the time of a one-shot helper goes on the host (Python 3.11, 2 cores):
starting ``python3 -I -S`` 7.5 ms; importing the stdlib modules the program
needs 4-10 ms (``ctypes`` 2 ms; ``re`` with ``enum`` 4 ms wherever ``base64``,
``json``, ``encodings.idna`` or ``signal`` pull them in); compiling the program
5 ms (exec) to 11 ms (serve), in proportion to its code, not its comments;
unpacking it 0.2 ms.
"""

from __future__ import annotations

import ast
import base64
import functools
import json
import threading
import zlib
from collections.abc import Mapping
from importlib import resources

from fabns.quoting import join

#: The modules of each mode's program, in dependency order.
PROGRAMS: Mapping[str, tuple[str, ...]] = {
    "probe": ("protocol", "enter", "probe", "main"),
    "exec": ("protocol", "enter", "main"),
    "sftp": ("protocol", "enter", "sftp", "main"),
    "serve": ("protocol", "enter", "sftp", "serve", "main"),
}


def _module_source(name: str) -> str:
    return resources.files("fabns.remote").joinpath(f"{name}.py").read_text("utf-8")


def _without_sibling_imports(name: str, source: str, earlier: tuple[str, ...]) -> str:
    """``source`` without its ``from .X import ...`` statements, checked against the rules."""
    tree = ast.parse(source, f"fabns/remote/{name}.py")
    top = {id(node) for node in tree.body}
    lines = source.splitlines(keepends=True)
    dropped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if (
                id(node) not in top
                or node.level != 1
                or node.module not in earlier
                or any(alias.asname for alias in node.names)
            ):
                raise ValueError(
                    f"fabns/remote/{name}.py:{node.lineno}: a sibling import must be "
                    f"'from .X import NAME, ...' at top level (no 'as'), X one of {earlier}"
                )
            assert node.end_lineno is not None
            dropped.update(range(node.lineno - 1, node.end_lineno))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
            if any(n == "fabns" or n.startswith("fabns.") for n in names):
                raise ValueError(f"fabns/remote/{name}.py:{node.lineno}: imports from fabns")
    for node in tree.body:  # a dropped line must hold nothing else
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        kept = not (isinstance(node, ast.ImportFrom) and node.level)
        if kept and (first in dropped or last in dropped):
            raise ValueError(f"fabns/remote/{name}.py:{node.lineno}: shares a line with an import")
    return "".join(line for number, line in enumerate(lines) if number not in dropped)


def _modules(mode: str) -> tuple[str, ...]:
    try:
        return PROGRAMS[mode]
    except KeyError:
        raise ValueError(f"no helper mode {mode!r}") from None


#: Python 3.11's ast is not safe from several threads at once (``SystemError: AST
#: constructor recursion depth mismatch``): groups assemble the helper from threads.
_AST_LOCK = threading.RLock()


@functools.cache
def _assembled(name: str, earlier: tuple[str, ...]) -> str:
    with _AST_LOCK:
        return _without_sibling_imports(name, _module_source(name), earlier)


@functools.cache
def _compacted(name: str, earlier: tuple[str, ...]) -> str:
    return compact(_assembled(name, earlier))  # once per module, for every mode that has it


@functools.cache
def program(mode: str) -> str:
    """The helper's source for ``mode``: its modules in order, sibling imports dropped."""
    modules = _modules(mode)
    return "\n\n".join(
        f"# fabns.remote.{name}\n" + _assembled(name, modules[:index])
        for index, name in enumerate(modules)
    )


def compact(source: str) -> str:
    """``source`` as it is sent: the same syntax tree without docstrings, written
    back by `ast.unparse`, so without comments either (a third less to send).

    Nothing newer than the source is written: the tree is the same, node for node.
    """
    with _AST_LOCK:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                first = node.body[0] if node.body else None
                if isinstance(first, ast.Expr) and isinstance(
                    getattr(first.value, "value", 0), str
                ):
                    node.body = node.body[1:] or [ast.Pass()]
        return ast.unparse(tree)


@functools.cache
def sent_program(mode: str) -> str:
    """What the helper runs for ``mode``: `program`, each module made `compact`."""
    modules = _modules(mode)
    return "\n".join(_compacted(name, modules[:index]) for index, name in enumerate(modules))


@functools.cache
def _bootstrap(mode: str) -> str:
    """The ``-c`` argument: unpack and run `sent_program`. ``binascii`` rather than
    ``base64``, which imports ``re`` (with ``enum``, 4 ms of a 25 ms helper)."""
    packed = base64.b64encode(zlib.compress(sent_program(mode).encode("utf-8"), 9))
    return f"import binascii,zlib;exec(zlib.decompress(binascii.a2b_base64('{packed.decode()}')))"


def encode_request(request: Mapping[str, object]) -> str:
    """The helper's single argument: base64 of the JSON request."""
    return base64.b64encode(json.dumps(request).encode("utf-8")).decode("ascii")


def helper_command(python: str, request: Mapping[str, object]) -> str:
    """Shell command that runs the helper with ``python`` on the request.

    The program sent is the one for ``request["mode"]`` (see `PROGRAMS`).
    ``-I``: no ``PYTHON*`` variables, no user site, no script directory on the
    path; ``-S``: no ``site`` import (faster; the helper needs only the stdlib).
    """
    mode = request.get("mode")
    if not isinstance(mode, str):
        raise ValueError(f"no helper mode {mode!r}")
    return join([python, "-I", "-S", "-c", _bootstrap(mode), encode_request(request)])
