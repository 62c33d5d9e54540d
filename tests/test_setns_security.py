"""The setns helper's promises: what the command inside can and cannot see."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ALL_TARGETS, METHODS, connect, host_processes  # noqa: F401

from fabns.helper import PROGRAMS, program

VERMIN = str(Path(sys.executable).parent / "vermin")
REMOTE = Path(__file__).resolve().parent.parent / "fabns" / "remote"
REMOTE_MODULES = sorted(REMOTE.glob("*.py"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("user,key", ALL_TARGETS)
def test_only_stdio_is_open_inside(connect, method, user, key):
    c = connect(user, key, method=method)
    # fd 3 is the directory `ls` itself opened to list /proc/self/fd
    assert c.run("ls /proc/self/fd", hide=True).stdout.split() == ["0", "1", "2", "3"]


@pytest.mark.parametrize("user,key", ALL_TARGETS)
def test_helper_is_not_dumpable_while_it_holds_host_fds(connect, user, key):
    c = connect(user, key, method="setns")
    promise = c.run("sleep 2", asynchronous=True, hide=True)
    deadline = time.monotonic() + 5
    while promise.runner.markers.host_pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = promise.runner.markers.host_pid
    assert pid is not None
    # /proc/PID of a non-dumpable process belongs to root, whoever runs it
    status = Path(f"/proc/{pid}/status").read_text()
    real_uid = int(status.split("Uid:")[1].split()[0])
    assert real_uid == (0 if user == "root" else int(subprocess.check_output(["id", "-u", user])))
    assert os.stat(f"/proc/{pid}/fd").st_uid == 0
    promise.join()


def _vermin(path):
    return subprocess.run(
        [VERMIN, "-t=3.6-", "--no-tips", "--violations", str(path)],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("path", REMOTE_MODULES, ids=lambda path: path.name)
def test_helper_modules_need_nothing_newer_than_python_3_6(path):
    result = _vermin(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", sorted(PROGRAMS))
def test_helper_program_needs_nothing_newer_than_python_3_6(mode, tmp_path):
    path = tmp_path / f"helper-{mode}.py"
    path.write_text(program(mode))
    result = _vermin(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", REMOTE_MODULES, ids=lambda path: path.name)
def test_helper_imports_only_the_stdlib_and_its_siblings(path):
    siblings = {module.stem for module in REMOTE_MODULES} - {"__init__"}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            # a sibling, at top level, in the one form the assembler drops
            assert node.level == 1 and node.module in siblings, ast.dump(node)
            assert node in tree.body, f"{path.name}:{node.lineno}: not at top level"
            continue
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names, f"{path.name}: imports {name}"


@pytest.mark.parametrize("user,key", ALL_TARGETS)
def test_command_dies_with_a_killed_helper(connect, user, key):
    c = connect(user, key, method="setns")
    needle = "sleep 3417"
    # the timeout only bounds a failure: an orphaned command would hold the channel open
    promise = c.run(needle, asynchronous=True, warn=True, timeout=20)
    deadline = time.monotonic() + 5
    while promise.runner.markers.host_pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
    while not host_processes(needle) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert host_processes(needle)
    os.kill(promise.runner.markers.host_pid, signal.SIGKILL)
    result = promise.join()
    assert result.exited != 0
    deadline = time.monotonic() + 5
    while host_processes(needle) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes(needle) == []
