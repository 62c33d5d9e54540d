"""The helper's programs: assembled from `fabns.remote` per mode, as the package says."""

from __future__ import annotations

import ast
import base64
import errno
import re
import shlex
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fabns import markers, target, transfer
from fabns.helper import (
    PROGRAMS,
    _bootstrap,
    _without_sibling_imports,
    compact,
    encode_request,
    helper_command,
    program,
    sent_program,
)
from fabns.markers import MarkerFilter
from fabns.remote import protocol

REMOTE = Path(__file__).resolve().parent.parent / "fabns" / "remote"
MODULES = sorted(path.stem for path in REMOTE.glob("*.py") if path.stem != "__init__")
MODES = sorted(PROGRAMS)
#: Which module serves which mode.
SERVED_BY = {"probe": "probe", "exec": "enter", "sftp": "sftp"}
RUFF = str(Path(sys.executable).parent / "ruff")
NO_SUCH_PID = 999_999_999  # above any pid_max


def tree(module: str) -> ast.Module:
    return ast.parse((REMOTE / f"{module}.py").read_text())


def defined(node: ast.Module) -> set[str]:
    """Names a module binds at top level, other than by importing."""
    names: set[str] = set()
    for statement in node.body:
        if isinstance(statement, ast.FunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = (
                statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            )
            for each in targets:  # a name, or names unpacked (not MODES["x"] = ...)
                elements = each.elts if isinstance(each, ast.Tuple | ast.List) else [each]
                names.update(n.id for n in elements if isinstance(n, ast.Name))
    return names


def imported(node: ast.Module) -> set[str]:
    """Names a module binds by importing the standard library."""
    names: set[str] = set()
    for statement in node.body:
        if isinstance(statement, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in statement.names)
        elif isinstance(statement, ast.ImportFrom) and not statement.level:
            names.update(a.asname or a.name for a in statement.names)
    return names


def run(program_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", "-I", "-S", "-c", program_text, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- the modules ----------------------------------------------------------------


def test_every_module_is_in_a_program():
    assert {m for modules in PROGRAMS.values() for m in modules} == set(MODULES)
    for modules in PROGRAMS.values():
        assert modules[0] == "protocol" and modules[-1] == "main"


def test_module_level_names_do_not_collide():
    trees = {module: tree(module) for module in MODULES}
    for module in MODULES:
        for other in MODULES:
            if other == module:
                continue
            mine = defined(trees[module])
            assert not mine & defined(trees[other]), (module, other)
            assert not mine & imported(trees[other]), (module, other)


@pytest.mark.parametrize("module", MODULES)
def test_sibling_imports_name_what_the_sibling_defines(module):
    for statement in tree(module).body:
        if isinstance(statement, ast.ImportFrom) and statement.level:
            assert statement.module is not None
            theirs = defined(tree(statement.module))
            for alias in statement.names:
                assert alias.asname is None
                assert alias.name in theirs, f"{module}: {alias.name} from .{statement.module}"


def test_protocol_loads_nothing():
    """The client imports it: beyond os, nothing loaded (no ctypes), nothing run."""
    probe = (
        "import os, sys; before = set(sys.modules); "
        f"exec(compile(open({str(REMOTE / 'protocol.py')!r}).read(), 'protocol', 'exec')); "
        "print(sorted(set(sys.modules) - before))"
    )
    result = subprocess.run(
        ["python3", "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_client_uses_the_protocol_constants():
    assert markers.PREFIX is protocol.MARKER_PREFIX_BYTES
    assert protocol.MARKER_PREFIX.encode() == protocol.MARKER_PREFIX_BYTES
    printed = subprocess.run(["printf", markers.PRINTF_PREFIX], capture_output=True, check=True)
    assert printed.stdout == markers.PREFIX
    assert transfer.TEMP_PREFIX is protocol.TEMP_PREFIX
    assert transfer.KEEP == protocol.KEEP == 0xFFFFFFFF
    assert target.NS_TYPES is protocol.NS_TYPES
    assert set(protocol.NS_TYPES) == set(protocol.CLONE_FLAGS)
    assert protocol.NS_TYPES[0] == "user" and protocol.NS_TYPES[-1] == "mnt"


# -- the programs -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_program_compiles_without_imports_of_fabns(mode):
    text = program(mode)
    node = ast.parse(compile(text, f"<helper {mode}>", "exec", ast.PyCF_ONLY_AST))
    for each in ast.walk(node):
        if isinstance(each, ast.ImportFrom):
            assert not each.level and not (each.module or "").startswith("fabns")
        elif isinstance(each, ast.Import):
            assert not [a for a in each.names if a.name.split(".")[0] == "fabns"]


@pytest.mark.parametrize("mode", MODES)
def test_program_has_no_undefined_names(mode, tmp_path):
    path = tmp_path / f"helper-{mode}.py"
    path.write_text(program(mode))
    result = subprocess.run(
        [RUFF, "check", "--isolated", "--no-cache", "--select", "F821,F822,F823", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_program_holds_only_what_its_mode_needs(mode):
    names = defined(ast.parse(program(mode)))
    for module in MODULES:
        theirs = defined(tree(module)) - {"main"} if module != "main" else {"main"}
        if module in PROGRAMS[mode]:
            assert theirs <= names, module
        else:
            assert not theirs & names, module
    assert names == set().union(*(defined(tree(m)) for m in PROGRAMS[mode]))


def test_exec_is_the_smallest_and_holds_no_sftp_or_probe():
    text = program("exec")
    assert "SftpServer" not in text and "do_sftp" not in text
    assert "do_probe" not in text and "look_inside" not in text
    assert "SftpServer" not in program("probe")
    assert "do_probe" not in program("sftp")
    assert len(text) < min(len(program("probe")), len(program("sftp")))


@pytest.mark.parametrize("mode", MODES)
def test_helper_command_sends_the_program_of_its_mode(mode):
    argv = shlex.split(helper_command("python3", {"mode": mode, "pid": 1}))
    assert argv[:4] == ["python3", "-I", "-S", "-c"]
    packed = re.fullmatch(
        r"import binascii,zlib;exec\(zlib\.decompress\(binascii\.a2b_base64\("
        r"'([A-Za-z0-9+/=]+)'\)\)\)",
        argv[4],
    )
    assert packed is not None
    assert zlib.decompress(base64.b64decode(packed.group(1))).decode() == sent_program(mode)


def without_docstrings(node: ast.Module) -> ast.Module:
    """``node`` without the docstring of each def and class, and of each module (those
    of the second module on are plain statements of the assembled program)."""

    def docstring(statement: ast.stmt) -> bool:
        return isinstance(statement, ast.Expr) and isinstance(
            getattr(statement.value, "value", None), str
        )

    node.body = [statement for statement in node.body if not docstring(statement)]
    for each in ast.walk(node):
        if isinstance(each, ast.ClassDef | ast.FunctionDef) and docstring(each.body[0]):
            each.body = each.body[1:] or [ast.Pass()]
    return node


@pytest.mark.parametrize("mode", MODES)
def test_the_program_is_sent_without_docstrings_and_comments_and_nothing_else_changed(mode):
    """The same syntax tree as the assembled program (which vermin checks for 3.6), less
    its docstrings: nothing newer, nothing left out."""
    sent = sent_program(mode)
    assert ast.dump(ast.parse(sent)) == ast.dump(without_docstrings(ast.parse(program(mode))))
    assert "#" not in "".join(line.split("'")[0] for line in sent.splitlines())
    assert len(sent) < 0.8 * len(program(mode))
    assert compact(sent) == sent


@pytest.mark.parametrize("mode", MODES)
def test_unpacking_the_program_imports_only_binascii_and_zlib(mode):
    """Not base64, which imports re and enum (4 ms of a helper's 25)."""
    probe = (
        "import sys; before = set(sys.modules); "
        + _bootstrap(mode).replace("exec(", "len(")
        + "; print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        ["python3", "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert set(done.stdout.split()) <= {"binascii", "zlib"}


def test_helper_command_refuses_an_unknown_mode():
    with pytest.raises(ValueError):
        helper_command("python3", {"mode": "shell"})
    with pytest.raises(ValueError):
        helper_command("python3", {"pid": 1})


# -- running a program locally ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "argument",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        encode_request([1, 2]),  # type: ignore[arg-type]
        None,
    ],
    ids=["bad-base64", "bad-json", "not-an-object", "no-argument"],
)
def test_a_bad_request_is_a_structured_error(mode, argument):
    result = run(sent_program(mode), *([] if argument is None else [argument]))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fabns helper: bad request: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("asked", ["probe", "exec", "sftp", "nope", ["exec"], None])
def test_a_program_serves_only_the_modes_it_holds(mode, asked):
    result = run(
        sent_program(mode), encode_request({"mode": asked, "pid": NO_SUCH_PID, "nonce": "n"})
    )
    assert "Traceback" not in result.stderr
    if isinstance(asked, str) and SERVED_BY.get(asked) in PROGRAMS[mode]:
        assert result.stderr != "fabns helper: unknown mode\n"
    else:
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == "fabns helper: unknown mode\n"


def test_probe_of_a_missing_pid_reports_it_gone():
    result = run(sent_program("probe"), encode_request({"mode": "probe", "pid": NO_SUCH_PID}))
    assert result.returncode == 0, result.stderr
    report = target.decode_report(result.stdout)
    assert report is not None
    assert report["target"] == {"exists": False}
    assert set(report["self_ns"]) <= set(protocol.NS_TYPES)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["exec", "sftp"])
def test_entering_a_missing_pid_is_an_err_marker_the_client_reads(mode):
    nonce = "0123abcd"
    command = helper_command("python3", {"mode": mode, "pid": NO_SUCH_PID, "nonce": nonce})
    result = subprocess.run(command, shell=True, capture_output=True, timeout=30)
    assert result.returncode == protocol.EXIT_SETUP_FAILED
    assert result.stderr == b""
    found = MarkerFilter(nonce)
    assert found.feed(result.stdout) == b""
    assert found.error is not None and not found.entered
    assert (found.error.step, found.error.errno) == ("gone", errno.ENOENT)


# -- the assembler's rules ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "from .sftp import SftpServer\n",  # not earlier in the program
        "def f():\n    from .protocol import KEEP\n",  # not at top level
        "from ..helper import program\n",  # not a sibling
        "from .protocol import KEEP as K\n",  # renamed: gone once the line is dropped
        "from .protocol import KEEP; x = KEEP\n",  # shares its line
        "import fabns.target\n",
        "from fabns.remote import protocol\n",
    ],
)
def test_the_assembler_refuses_what_it_cannot_assemble(source):
    with pytest.raises(ValueError):
        _without_sibling_imports("sample", source, ("protocol", "enter"))


def test_the_assembler_drops_exactly_the_sibling_imports():
    source = (
        "import os\n"
        "from .protocol import (\n"
        "    KEEP,\n"
        "    MODES,\n"
        ")\n"
        "from .enter import exact\n"
        "X = (KEEP, MODES, exact, os)\n"
    )
    assert _without_sibling_imports("sample", source, ("protocol", "enter")) == (
        "import os\nX = (KEEP, MODES, exact, os)\n"
    )


@pytest.mark.parametrize("mode", sorted(PROGRAMS))
def test_once_serving_no_file_is_ever_imported_and_no_traceback_printed(mode, tmp_path):
    """After the helper enters, paths are the container's: no import may read a file.

    Python 3.13 imports ``traceback`` to print an uncaught exception; with the
    container's root that would run the container's ``traceback.py`` as host
    root. `seal` leaves only the built-in and frozen importers, restores SIGINT
    (so a signal from inside kills instead of raising), and ends the process on
    an uncaught exception without any hook.
    """
    (tmp_path / "evilmod.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    probe = (
        "\nimport signal as _s, sys as _y\n"
        f"_y.path.insert(0, {str(tmp_path)!r})\n"
        "seal()\n"
        "assert _s.getsignal(_s.SIGINT) is _s.SIG_DFL\n"
        "try:\n    import evilmod\nexcept ImportError:\n    print('refused', flush=True)\n"
        "raise RuntimeError('escaped')\n"
    )
    source = sent_program(mode).replace("if __name__ == '__main__':", "if False:")
    assert "__main__" not in source
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", source + probe], capture_output=True, text=True
    )
    assert done.stdout == "refused\n"
    assert not (tmp_path / "evilmod.py.ran").exists()
    assert done.returncode == 125 and "Traceback" not in done.stderr
