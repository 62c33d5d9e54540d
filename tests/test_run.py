"""run() and sudo() inside real containers over a real sshd: Fabric parity.

Every test runs for each way in (nsenter, setns) and, where it matters, for
root's containers and for the unprivileged owner's (alice) containers.
"""

from __future__ import annotations

import _thread
import io
import os
import threading
import time

import pytest
from fabric.runners import Result
from invoke.exceptions import CommandTimedOut, UnexpectedExit
from invoke.watchers import Responder
from support import (  # noqa: F401
    ALL_TARGETS,
    METHODS,
    OWNER_TARGETS,
    connect,
    host_processes,
    method,
    way_name,
)

from fabns import InvalidArgument, UnknownUser

HOSTILE = [
    "plain",
    "two  spaces",
    "single ' quote",
    'double " quote',
    "$(touch /tmp/pwned) `touch /tmp/pwned2` $HOME ${PATH}",
    "semi; colon && amp || pipe | done",
    "new\nline\n",
    "tab\tand\\backslash",
    "ünïcødé ✓ 日本",
    "-n",
    "*",
    "",
]


@pytest.fixture(params=ALL_TARGETS, ids=lambda t: f"{t[0]}-{t[1]}")
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)  # type: ignore[return-value]


class TestWhereItRuns:
    def test_hostname_and_pid_namespace_are_the_containers(self, connect, method, target, harness):
        user, key = target
        c = connect(user, key, method=method)
        out = c.run("hostname; readlink /proc/self/ns/pid; id -u", hide=True).stdout.split()
        assert out[0] == harness.containers[key].name
        leader = harness.containers[key].leader_pid
        assert out[1] == os.readlink(f"/proc/{leader}/ns/pid")  # the container's pid namespace
        assert out[2] == "0"  # root of the target by default, like nsenter
        assert c.method_name == way_name(method)
        assert c.target.pid == harness.containers[key].leader_pid

    def test_mount_namespace_sees_only_the_containers_tmpfs(self, connect, method, target):
        user, key = target
        c = connect(user, key, method=method)
        name = f"fabns-only-inside-{method}-{key}"
        c.run(f"echo hi > /tmp/{name}", hide=True)
        assert not os.path.exists(f"/tmp/{name}")
        assert c.run(f"cat /tmp/{name}", hide=True).stdout == "hi\n"

    def test_starts_in_the_users_home_like_ssh(self, connect, method, target):
        user, key = target
        c = connect(user, key, method=method)
        assert c.run("pwd", hide=True).stdout == "/root\n"
        if 1001 in c.target.book.uid_map:  # a --map-root-user namespace maps only 0
            assert c.sudo("pwd", user="alice", hide=True).stdout == "/home/alice\n"


class TestEnvironment:
    def test_container_environment_not_the_hosts(self, connect, method, target, harness):
        user, key = target
        c = connect(user, key, method=method)
        env = dict(
            line.split("=", 1)
            for line in c.run("env", hide=True).stdout.splitlines()
            if "=" in line
        )
        assert env["FABNS_CTR"] == harness.containers[key].name
        assert env["FABNS_SPACED"] == "a b  c"
        assert env["container"] == "fabns"
        for host_only in ("SSH_CONNECTION", "SSH_CLIENT", "XDG_RUNTIME_DIR", "MAIL", "PYENV_ROOT"):
            assert host_only not in env
        assert env["HOME"] == "/root" and env["USER"] == "root" and env["LOGNAME"] == "root"

    @pytest.mark.parametrize("value", HOSTILE)
    def test_env_values_arrive_exactly(self, connect, method, value):
        c = connect("root", "plain", method=method)
        result = c.run('printf %s "$FABNS_VALUE"', env={"FABNS_VALUE": value}, hide=True)
        assert result.stdout == value
        assert not os.path.exists("/tmp/pwned")

    def test_env_overrides_container_variable(self, connect, method):
        c = connect("root", "plain", method=method)
        out = c.run('echo "$FABNS_CTR"', env={"FABNS_CTR": "mine"}, hide=True).stdout
        assert out == "mine\n"

    def test_nul_in_env_is_refused_and_nothing_runs(self, connect, method):
        c = connect("root", "plain", method=method)
        with pytest.raises(InvalidArgument):
            c.run("touch /tmp/should-not-exist", env={"A": "x\x00y"}, hide=True)
        assert c.run("test -e /tmp/should-not-exist", warn=True, hide=True).exited == 1


class TestCommands:
    @pytest.mark.parametrize("value", HOSTILE)
    def test_hostile_command_text_is_passed_through(self, connect, method, value):
        c = connect("root", "plain", method=method)
        quoted = "'" + value.replace("'", "'\\''") + "'"
        assert c.run(f"printf %s {quoted}", hide=True).stdout == value

    def test_exit_codes_and_unexpected_exit_show_the_users_command(self, connect, method, target):
        user, key = target
        c = connect(user, key, method=method)
        result = c.run("echo out; echo err >&2; exit 3", warn=True, hide=True)
        assert isinstance(result, Result) and result.connection is c
        assert (result.exited, result.stdout, result.stderr) == (3, "out\n", "err\n")
        with pytest.raises(UnexpectedExit) as info:
            c.run("exit 7", hide=True)
        assert info.value.result.exited == 7
        assert info.value.result.command == "exit 7"

    def test_cd_and_prefix(self, connect, method):
        c = connect("root", "plain", method=method)
        with c.cd("/tmp"), c.prefix("export GREETING='hello there'"):
            result = c.run('pwd; echo "$GREETING"', hide=True)
        assert result.stdout == "/tmp\nhello there\n"
        assert (
            result.command == "cd /tmp && export GREETING='hello there' && pwd; echo \"$GREETING\""
        )

    def test_sudo_as_user_with_cd_and_prefix(self, connect, method):
        # plain Fabric runs the command *without* sudo here (invoke#459)
        c = connect("root", "plain", method=method)
        with c.cd("/tmp"), c.prefix("true"):
            result = c.sudo("id -un; pwd; echo $HOME", user="alice", hide=True)
        assert result.stdout == "alice\n/tmp\n/home/alice\n"

    def test_sudo_default_user_is_root(self, connect, method):
        c = connect("root", "plain", method=method, uid="alice")
        assert c.run("id -un", hide=True).stdout == "alice\n"
        assert c.sudo("id -un", hide=True).stdout == "root\n"

    def test_hide_and_echo(self, connect, method, capsys):
        c = connect("root", "plain", method=method)
        c.run("echo visible", echo=True)
        c.run("echo hidden", hide=True)
        out = capsys.readouterr().out
        assert "echo visible" in out and "visible\n" in out
        assert "hidden" not in out

    def test_in_stream(self, connect, method):
        c = connect("root", "plain", method=method)
        data = "line one\nünïcødé\n" * 100
        assert c.run("cat", in_stream=io.StringIO(data), hide=True).stdout == data

    def test_watchers_answer_prompts(self, connect, method):
        c = connect("root", "plain", method=method)
        responder = Responder(pattern=r"name\? ", response="fabns\n")
        result = c.run(
            "printf 'name? '; read answer; echo \"hi $answer\"",
            watchers=[responder],
            in_stream=False,
            hide=True,
        )
        assert result.stdout.endswith("hi fabns\n")

    def test_pty_is_allocated_inside(self, connect, method, target):
        user, key = target
        c = connect(user, key, method=method)
        script = 't=$(tty) && test -c "$t" && stat -c %d "$t" /dev/pts/ptmx'
        its_fs, pts_fs = c.run(script, pty=True, hide=True).stdout.split()
        # a terminal of the container's own devpts instance, not one of the host's
        assert its_fs == pts_fs != str(os.stat("/dev/pts/ptmx").st_dev)

    def test_pty(self, connect, method):
        c = connect("root", "plain", method=method)
        result = c.run("test -t 0 && test -t 1 && echo tty; echo err >&2", pty=True, hide=True)
        assert result.stdout.replace("\r", "") == "tty\nerr\n"  # a pty merges stderr

    def test_explicit_shell(self, connect, method):
        c = connect("root", "plain", method=method)
        assert c.run("echo $0", shell="/bin/ash", hide=True).stdout == "/bin/ash\n"


class TestKilling:
    def test_timeout_kills_the_command_inside(self, connect, method):
        c = connect("root", "plain", method=method)
        needle = f"sleep 31{METHODS.index(method)}7"
        with pytest.raises(CommandTimedOut):
            c.run(needle, timeout=1, hide=True)
        deadline = time.monotonic() + 5
        while host_processes(needle) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_processes(needle) == []

    def test_ctrl_c_without_pty_kills_the_command_inside(self, connect, method):
        c = connect("root", "plain", method=method)
        needle = f"sleep 32{METHODS.index(method)}7"
        timer = threading.Timer(1.0, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            c.run(needle, hide=True, in_stream=False)
        timer.cancel()
        deadline = time.monotonic() + 5
        while host_processes(needle) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_processes(needle) == []


class TestCredentials:
    def test_named_user_and_groups(self, connect, method):
        c = connect("root", "plain", method=method, uid="app")
        out = c.run("id -u; id -g; id -G; echo $HOME $USER", hide=True).stdout.splitlines()
        assert out[:2] == ["1002", "1002"]
        assert out[3] == "/home/app app"
        if way_name(method) == "setns":  # initgroups: primary plus wheel and staff
            assert sorted(map(int, out[2].split())) == [10, 50, 1002]
        else:  # nsenter -S/-G clears supplementary groups
            assert out[2].split() == ["1002"]

    def test_numeric_uid_and_named_gid(self, connect, method):
        c = connect("root", "plain", method=method, uid=1001, gid="staff")
        assert c.run("id -u; id -g", hide=True).stdout == "1001\n50\n"

    def test_unknown_user_raises_before_running(self, connect, method):
        c = connect("root", "plain", method=method, uid="nosuchuser")
        with pytest.raises(UnknownUser, match="nosuchuser"):
            c.run("true")

    @pytest.mark.parametrize("user,key", OWNER_TARGETS)
    def test_owner_container_ids(self, connect, method, user, key):
        c = connect(user, key, method=method)
        assert c.run("id -u; id -g", hide=True).stdout == "0\n0\n"
        if key == "alice-maproot":  # only 0 is mapped: alice's uid does not exist inside
            with pytest.raises(UnknownUser, match="not mapped"):
                c.sudo("true", user="alice")
        else:
            assert c.sudo("id -un", user="alice", hide=True).stdout == "alice\n"


class TestShell:
    def test_shell_api_runs_the_login_shell_inside(self, connect, method):
        c = connect("root", "plain", method=method, uid="alice")
        result = c.shell(in_stream=io.StringIO("hostname; echo $HOME $TERM; exit 5\n"))
        assert result.exited == 5
        assert "fabns-plain" in result.stdout and "/home/alice" in result.stdout

    def test_shell_takes_only_fabrics_arguments(self, connect):
        with pytest.raises(TypeError, match="pty"):
            connect("root", "plain").shell(pty=False)
