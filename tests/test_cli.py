"""The fabns command line: fab's tasks in containers, --parallel, groups, cp, a shell."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pexpect
import pytest

FABNS = str(Path(sys.executable).parent / "fabns")

FABFILE = textwrap.dedent(
    """
    import time

    from fabric import task

    from fabns import NamespaceConnection


    @task
    def where(c):
        assert isinstance(c, NamespaceConnection), type(c)
        name = c.run("hostname", hide=True).stdout.strip()
        user = c.run("id -un", hide=True).stdout.strip()
        print("in", name, "as", user)


    @task
    def slow(c):
        time.sleep(1)
        c.run("echo done in $(hostname)")


    @task
    def fail_in_plain(c):
        c.run("test $(hostname) != fabns-plain")


    @task
    def options(c):
        print(c.method, c.engine, c.ns_uid, c.persistent)
    """
)


def fabns(
    *argv: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    return subprocess.run(
        [FABNS, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "fabfile.py").write_text(FABFILE)
    return tmp_path


def target(harness, key: str, user: str = "root") -> str:
    return f"{user}@127.0.0.1:{harness.sshd.port}/pid:{harness.containers[key].leader_pid}"


def label(harness, key: str) -> str:
    return f"127.0.0.1:{harness.sshd.port}/pid:{harness.containers[key].leader_pid}"


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


class TestTasks:
    """``fabns -H TARGETS task``: Fabric's program, each task given a NamespaceConnection."""

    def test_a_task_runs_in_each_container(self, harness, project):
        key = str(harness.sshd.client_key)
        hosts = f"{target(harness, 'plain')},{target(harness, 'rootns')}"
        result = fabns("-H", hosts, "-i", key, "where", cwd=project)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "in fabns-plain as root\nin fabns-rootns as root\n"

    def test_target_flags_apply_to_every_target(self, harness, project):
        bare = f"root@127.0.0.1:{harness.sshd.port}"
        pid = str(harness.containers["plain"].leader_pid)
        key = str(harness.sshd.client_key)
        result = fabns(
            "-H", bare, "--pid", pid, "--ns-user", "alice", "--method", "setns", "-i", key,
            "where", cwd=project,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("in fabns-plain as alice\n")
        shown = fabns("-H", bare, "--pid", pid, "--persistent", "--ns-user", "7", "options",
                      cwd=project)  # fmt: skip
        assert shown.stdout.endswith(" auto 7 True\n"), shown.stderr  # nothing connects here

    def test_fab_flags_keep_working(self, harness, project, tmp_path):
        """-S (an ssh config naming the host), -i, -f (a runtime config file), -e (echo)."""
        sshd = harness.sshd
        (tmp_path / "ssh_config").write_text(
            f"Host app-host\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
            f"  IdentityFile {sshd.client_key}\n"
        )
        (tmp_path / "fabns.yml").write_text("fabns:\n  method: setns\n")
        pid = harness.containers["plain"].leader_pid
        result = fabns(
            "-S", str(tmp_path / "ssh_config"), "-f", str(tmp_path / "fabns.yml"), "-e",
            "-H", f"app-host/pid:{pid}", "options", "slow", cwd=project,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("setns auto None False\n")
        assert "echo done in $(hostname)" in result.stdout  # echoed
        assert result.stdout.endswith("done in fabns-plain\n")

    def test_prompt_for_the_host_sudo_password(self, harness):
        """Invoke's --prompt-for-sudo-password: the password sudo on the host wants for bob."""
        from fabns.testing import SUDO_PASSWORD, SUDO_USER

        argv = ["--prompt-for-sudo-password", "-i", str(harness.sshd.client_key),
                "-H", target(harness, "plain", SUDO_USER), "--", "id -u; hostname"]  # fmt: skip
        child = pexpect.spawn(FABNS, argv, encoding="utf-8", timeout=60)
        child.expect_exact("'sudo.password'")
        child.sendline(SUDO_PASSWORD)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        prefix = f"[{label(harness, 'plain')}]"
        assert f"{prefix} 0\r\n{prefix} fabns-plain" in child.before
        assert SUDO_PASSWORD not in child.before

    def test_named_groups_from_the_config(self, harness, project):
        (project / "fabric.yaml").write_text(
            "fabns:\n  groups:\n"
            f"    web: ['{target(harness, 'plain')}', '@more']\n"
            f"    more: ['{target(harness, 'rootns')}']\n"
        )
        key = str(harness.sshd.client_key)
        result = fabns("-H", "@web", "-i", key, "--", "hostname", cwd=project)
        assert result.returncode == 0, result.stderr
        assert result.stdout == (
            f"[{label(harness, 'plain')}] fabns-plain\n[{label(harness, 'rootns')}] fabns-rootns\n"
        )
        unknown = fabns("-H", "@db", "-i", key, "--", "hostname", cwd=project)
        assert unknown.returncode == 2
        assert unknown.stderr == "fabns: no group 'db' in fabns.groups (more, web)\n"

    def test_a_failing_target_is_left_out_of_later_tasks(self, harness, project):
        key = str(harness.sshd.client_key)
        hosts = f"{target(harness, 'plain')},{target(harness, 'rootns')}"
        result = fabns("-H", hosts, "-i", key, "fail-in-plain", "where", cwd=project)
        assert result.returncode == 1
        assert result.stdout == "in fabns-rootns as root\n"
        plain = label(harness, "plain")
        assert f"[{plain}] fabns: fail-in-plain: 'test $(hostname) != fabns-plain' exited 1\n" in (
            result.stderr
        )
        assert result.stderr.endswith(
            f"fabns: 1 of 2 targets failed: {plain} (fail-in-plain: exit 1)\n"
        )
        assert "Traceback" not in result.stderr

    def test_fail_fast_stops_at_the_first_failing_target(self, harness, project):
        key = str(harness.sshd.client_key)
        hosts = f"{target(harness, 'plain')},{target(harness, 'rootns')}"
        result = fabns("-H", hosts, "-i", key, "--fail-fast", "fail-in-plain", cwd=project)
        assert result.returncode == 1
        assert f"not run on {label(harness, 'rootns')}\n" in result.stderr

    def test_bad_input_is_one_line_and_status_2(self, harness, project, tmp_path):
        bad_target = fabns("-H", "web1:x/app", "--", "true", cwd=project)
        assert (bad_target.returncode, bad_target.stderr) == (
            2,
            "fabns: bad port in 'web1:x/app'\n",
        )
        (tmp_path / "typo.yml").write_text("fabns:\n  contianer: app\n")
        typo = fabns("-f", str(tmp_path / "typo.yml"), "-H", "web1/app", "--", "true")
        assert typo.returncode == 2 and "unknown configuration key fabns.contianer" in typo.stderr
        no_hosts = fabns("--", "true", cwd=project)
        assert no_hosts.returncode == 2 and "not given any hosts" in no_hosts.stderr
        parallel = fabns("--parallel", "0", "-H", "web1/app", "--", "true", cwd=project)
        assert parallel.returncode == 2 and "--parallel must be at least 1" in parallel.stderr


class TestParallel:
    def test_targets_run_at_once_with_prefixed_output(self, harness, project):
        key = str(harness.sshd.client_key)
        keys = ("plain", "rootns", "alice-maproot", "alice-subid")
        hosts = ",".join(target(harness, k) for k in keys)
        started = time.monotonic()
        result = fabns("-H", hosts, "-i", key, "--parallel", "4", "slow", cwd=project)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert sorted(lines) == sorted(
            f"[{label(harness, k)}] done in {harness.containers[k].name}" for k in keys
        )
        assert took < 4  # four one-second tasks at once, connections included

    def test_a_target_that_cannot_log_in_is_one_failure(self, harness, project):
        key = str(harness.sshd.client_key)
        port = harness.sshd.port
        pid = harness.containers["plain"].leader_pid
        unused = _closed_port()
        hosts = ",".join(
            [f"nosuchuser@127.0.0.1:{port}/pid:{pid}", target(harness, "plain"),
             f"root@127.0.0.1:{unused}/pid:{pid}", target(harness, "rootns")]
        )  # fmt: skip
        result = fabns("-H", hosts, "-i", key, "--parallel", "2", "where", cwd=project)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        # two users for one target: the labels say which
        assert f"[root@{label(harness, 'plain')}] in fabns-plain as root\n" in result.stdout
        assert f"[{label(harness, 'rootns')}] in fabns-rootns as root\n" in result.stdout
        nobody = f"nosuchuser@127.0.0.1:{port}/pid:{pid}"
        assert f"[{nobody}] fabns: where: AuthenticationException" in result.stderr
        assert f"[127.0.0.1:{unused}/pid:{pid}] fabns: where: NoValidConnectionsError" in (
            result.stderr
        )
        summary = result.stderr.splitlines()[-1]
        assert summary.startswith("fabns: 2 of 4 targets failed: ")
        assert "(where: AuthenticationException)" in summary
        assert "(where: NoValidConnectionsError)" in summary

    def test_one_command_in_parallel(self, harness):
        key = str(harness.sshd.client_key)
        hosts = f"{target(harness, 'plain')},{target(harness, 'rootns')}"
        result = fabns("-H", hosts, "-i", key, "--parallel", "2", "--", "sleep 1; hostname")
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.splitlines()) == [
            f"[{label(harness, 'plain')}] fabns-plain",
            f"[{label(harness, 'rootns')}] fabns-rootns",
        ]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestCopy:
    """``fabns cp``: into and out of a container, atomically, with a bar on a terminal."""

    def test_into_and_out_of_a_container(self, harness, tmp_path):
        ctr = harness.containers["plain"]
        key = str(harness.sshd.client_key)
        source = tmp_path / "app.conf"
        source.write_text("[app]\n")
        source.chmod(0o640)
        inside = f"{target(harness, 'plain')}:/tmp/fabns-cp/"
        ctr_dir = ctr.inside("/tmp/fabns-cp")
        ctr_dir.mkdir(exist_ok=True)
        put = fabns("cp", "-i", key, str(source), inside)
        assert put.returncode == 0, put.stderr
        assert (ctr_dir / "app.conf").read_text() == "[app]\n"
        assert (ctr_dir / "app.conf").stat().st_mode & 0o777 == 0o640
        assert not Path("/tmp/fabns-cp/app.conf").exists()  # the container's /tmp, not ours
        (tmp_path / "back").mkdir()
        get = fabns(
            "cp", "-i", key, f"{target(harness, 'plain')}:/etc/hostname", f"{tmp_path}/back"
        )
        assert get.returncode == 0, get.stderr
        assert (tmp_path / "back" / "hostname").read_text() == f"{ctr.name}\n"
        home = fabns(
            "cp", "-i", key, "--ns-user", "alice", str(source), f"{target(harness, 'plain')}:"
        )
        assert home.returncode == 0, home.stderr
        assert ctr.inside("/home/alice/app.conf").read_text() == "[app]\n"
        ctr.inside("/home/alice/app.conf").unlink()

    def test_failures_leave_nothing_and_say_why(self, harness, tmp_path):
        key = str(harness.sshd.client_key)
        source = tmp_path / "x"
        source.write_text("x")
        missing = fabns("cp", "-i", key, str(source), f"{target(harness, 'plain')}:/no/such/dir/x")
        assert missing.returncode == 1 and missing.stderr.startswith("fabns: ")
        assert "/no/such/dir" in missing.stderr and "Traceback" not in missing.stderr
        gone = fabns("cp", "-i", key, f"{target(harness, 'plain')}:/no/such/file", str(tmp_path))
        assert gone.returncode == 1 and "/no/such/file" in gone.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
        both = fabns("cp", str(source), str(tmp_path / "y"))
        assert (
            both.returncode == 2 and "one side of fabns cp must be inside a target" in both.stderr
        )

    def test_a_progress_bar_on_a_terminal_for_large_files(self, harness, tmp_path):
        ctr = harness.containers["plain"]
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(8 << 20))
        argv = ["cp", "-i", str(harness.sshd.client_key), str(source),
                f"{target(harness, 'plain')}:/root/big.bin"]  # fmt: skip
        child = pexpect.spawn(FABNS, argv, dimensions=(24, 120), encoding="utf-8", timeout=60)
        child.expect(r"big\.bin \[#+\] 100% 8\.0 MiB/8\.0 MiB")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        copied = ctr.inside("/root/big.bin")
        assert (
            hashlib.sha256(copied.read_bytes()).digest()
            == hashlib.sha256(source.read_bytes()).digest()
        )
        copied.unlink()
        quiet = fabns("cp", *argv[1:])  # not a terminal: no bar
        assert quiet.returncode == 0 and quiet.stderr == ""
        ctr.inside("/root/big.bin").unlink()


@pytest.mark.parametrize(
    "args, flags",
    [
        (["--help"], ["--pid", "--container", "--engine", "--owner", "--ns-user", "--method",
                      "--persistent", "--parallel", "-i", "-S", "-H", "fabns shell", "fabns cp"]),
        (["shell", "--help"], ["--pid", "--engine", "--owner", "--ns-user", "--method", "-i",
                               "-S", "--prompt-for-sudo-password"]),
        (["cp", "--help"], ["--pid", "--engine", "--ns-user", "--method", "-i", "-S",
                            "--progress"]),
    ],
)  # fmt: skip
def test_help_explains_every_flag_with_an_example(args, flags, tmp_path):
    out = subprocess.run([FABNS, *args], capture_output=True, text=True, check=True, cwd=tmp_path)
    for flag in flags:
        assert flag in out.stdout
    assert "example" in out.stdout
