"""The fabns command line: an interactive shell through a real pty, one-off commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

FABNS = str(Path(sys.executable).parent / "fabns")


def ssh_args(harness, user: str = "root") -> tuple[str, list[str]]:
    sshd = harness.sshd
    return f"{user}@127.0.0.1:{sshd.port}", ["-i", str(sshd.client_key)]


def answer_cursor_query(child: pexpect.spawn) -> None:
    """busybox ash asks the terminal where the cursor is; answer as a terminal would."""
    try:
        child.expect_exact("\x1b[6n", timeout=2)
        child.send("\x1b[1;1R")
    except pexpect.TIMEOUT:
        pass


@pytest.mark.parametrize("method", ["nsenter", "setns"])
def test_interactive_shell_in_a_container(harness, method, tmp_path):
    address, keys = ssh_args(harness)
    ctr = harness.containers["plain"]
    child = pexpect.spawn(
        "bash", ["--norc", "--noprofile"], dimensions=(24, 80), encoding="utf-8", timeout=20
    )
    try:
        child.sendline(f"PS1='LOCAL$ '; stty -g > {tmp_path}/before")
        child.expect_exact("LOCAL$ ")
        command = [FABNS, "shell", f"{address}/pid:{ctr.leader_pid}", *keys, "--method", method]
        child.sendline(" ".join(command) + f"; echo RC=$?; stty -g > {tmp_path}/after")
        child.expect("# ")
        answer_cursor_query(child)
        child.sendline("hostname; pwd")
        child.expect(rf"{ctr.name}\r+\n/root")
        child.sendline("stty size")
        child.expect("24 80")
        child.setwinsize(33, 101)
        child.sendline("stty size")
        child.expect("33 101")
        child.sendline("exit 3")
        child.expect("RC=3")
        child.expect_exact("LOCAL$ ")
    finally:
        child.close(force=True)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()


def test_shell_as_another_user(harness):
    address, keys = ssh_args(harness)
    ctr = harness.containers["plain"]
    child = pexpect.spawn(
        FABNS,
        ["shell", address, "--pid", str(ctr.leader_pid), *keys, "--ns-user", "alice"],
        dimensions=(24, 80),
        encoding="utf-8",
        timeout=20,
    )
    child.expect(r"\$ ")
    answer_cursor_query(child)
    child.sendline("id -un; echo $HOME; exit")
    child.expect(r"alice\r+\n/home/alice")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_one_off_command_across_targets(harness):
    address, keys = ssh_args(harness)
    plain = harness.containers["plain"]
    other = harness.containers.get("rootns", plain)
    hosts = ",".join(
        [f"{address}/pid:{plain.leader_pid}", f"{address}/pid:{other.leader_pid}",
         f"{address}/pid:4194000"]
    )  # fmt: skip
    result = subprocess.run(
        [FABNS, "-H", hosts, *keys, "--", "hostname; echo warn >&2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    port = harness.sshd.port
    assert f"[127.0.0.1:{port}/pid:{plain.leader_pid}] {plain.name}\n" in result.stdout
    assert f"[127.0.0.1:{port}/pid:{other.leader_pid}] {other.name}\n" in result.stdout
    assert f"[127.0.0.1:{port}/pid:{plain.leader_pid}] warn\n" in result.stderr
    assert "no process 4194000" in result.stderr
    assert f"1 of 3 targets failed: 127.0.0.1:{port}/pid:4194000" in result.stderr


def test_one_off_command_exit_status_and_argv(harness):
    address, keys = ssh_args(harness)
    ctr = harness.containers["plain"]
    target = f"{address}/pid:{ctr.leader_pid}"
    ok = subprocess.run(
        [FABNS, "-H", target, *keys, "--", "printf", "%s|", "a b", "$(x)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0
    assert ok.stdout == f"[127.0.0.1:{harness.sshd.port}/pid:{ctr.leader_pid}] a b|$(x)|\n"
    bad = subprocess.run(
        [FABNS, "-H", target, *keys, "--", "exit 4"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "(exit 4)" in bad.stderr


@pytest.mark.parametrize("args", [["--help"], ["shell", "--help"]])
def test_help_explains_every_flag_with_an_example(args):
    out = subprocess.run([FABNS, *args], capture_output=True, text=True, check=True).stdout
    for flag in ("--pid", "--engine", "--owner", "--ns-user", "--method", "-i", "-F"):
        assert flag in out
    assert "example" in out
