"""The setns helper's promises: what the command inside can and cannot see."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ALL_TARGETS, METHODS, connect, host_processes  # noqa: F401

VERMIN = str(Path(sys.executable).parent / "vermin")
HELPER = Path(__file__).resolve().parent.parent / "fabns" / "_helper.py"


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


def test_helper_needs_nothing_newer_than_python_3_6():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "vermin"),
            "-t=3.6-",
            "--no-tips",
            "--violations",
            str(HELPER),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_helper_imports_nothing_from_fabns():
    imports = re.findall(r"^\s*(?:import|from)\s+(\S+)", HELPER.read_text(), re.M)
    assert imports and not [name for name in imports if name.startswith("fabns")]


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
