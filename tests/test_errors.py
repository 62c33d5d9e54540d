"""Bad input and a changing world: each a clear fabns error, nothing run anywhere."""

from __future__ import annotations

import os

import pytest
from support import METHODS, connect, hiding, method  # noqa: F401

from fabns import (
    Config,
    ElevationRequired,
    InvalidArgument,
    NamespaceConnection,
    NamespaceError,
    NotALeader,
    PermissionDenied,
    TargetChanged,
    TargetNotFound,
    ToolMissing,
)
from fabns.testing import NOPASSWD_USER, SUDO_PASSWORD, SUDO_USER, TEST_USER, SSHServer


class TestArguments:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {},
            {"pid": 1, "container": "x"},
            {"pid": 0},
            {"pid": -5},
            {"pid": "12"},
            {"pid": True},
            {"pid": 1, "method": "teleport"},
            {"pid": 1, "engine": "kubernetes"},
            {"pid": 1, "uid": -1},
            {"pid": 1, "uid": "a:b"},
            {"pid": 1, "gid": 1.5},
            {"container": ""},
            {"container": "a\x00b"},
            {"container": "web", "engine": "pid"},
            {"pid": 1, "engine": "lxc"},
            {"container": "web", "owner": "-rf"},
            {"container": "web", "owner": "a:b"},
            {"pid": 1, "persistent": True, "method": "nsenter"},
            {"pid": 1, "persistent": True, "method": "lxc-attach"},
        ],
    )
    def test_bad_arguments(self, kwargs):
        with pytest.raises(InvalidArgument):
            NamespaceConnection("127.0.0.1", **kwargs)

    def test_errors_share_a_base_and_a_builtin(self):
        assert issubclass(TargetNotFound, NamespaceError) and issubclass(
            TargetNotFound, LookupError
        )
        assert issubclass(PermissionDenied, PermissionError)
        assert issubclass(ToolMissing, FileNotFoundError)


class TestTargets:
    def test_pid_that_does_not_exist(self, connect, method):
        with pytest.raises(TargetNotFound, match="no process 4194000"):
            connect("root", pid=4194000, method=method).run("true")

    def test_pid_that_is_not_a_namespace_leader(self, connect, method, harness):
        # the sshd shares every namespace with the SSH session
        with pytest.raises(NotALeader, match=str(harness.sshd.pid)):
            connect("root", pid=harness.sshd.pid, method=method).run("true")

    def test_leader_restarted_between_commands(self, connect, method, harness, tmp_path):
        from fabns.testing import Container

        ctr = Container.start(tmp_path, "fabns-restart", "plain", "root")
        try:
            c = connect("root", pid=ctr.leader_pid, method=method)
            assert c.run("hostname", hide=True).stdout == "fabns-restart\n"
            ctr = ctr.restart()
            with pytest.raises(TargetChanged, match="nothing was run"):
                c.run("echo ran > /ran-after-restart")
            assert not (ctr.rootfs / "ran-after-restart").exists()
        finally:
            ctr.stop()

    def test_leader_died_between_resolve_and_run(self, connect, method, tmp_path):
        from fabns.testing import Container

        ctr = Container.start(tmp_path, "fabns-dies", "plain", "root")
        try:
            c = connect("root", pid=ctr.leader_pid, method=method)
            c.resolve()
        finally:
            ctr.stop()
        with pytest.raises(TargetChanged, match="exited"):
            c.run("true")


class TestPrivilege:
    def test_unprivileged_user_without_sudo(self, connect, method):
        c = connect(TEST_USER, "plain", method=method)
        with pytest.raises(ElevationRequired, match="needs root"):
            c.run("true")

    def test_passwordless_sudo_on_the_host(self, connect, method, harness):
        c = connect(NOPASSWD_USER, "plain", method=method)
        out = c.run("hostname; id -un", hide=True).stdout
        assert out == f"{harness.containers['plain'].name}\nroot\n"
        assert c.elevation.mode == "sudo"

    def test_sudo_password_from_config_is_fed_on_stdin(self, connect, method, harness):
        c = connect(SUDO_USER, "plain", {"sudo": {"password": SUDO_PASSWORD}}, method=method)
        out = c.run("hostname", hide=True).stdout
        assert out == f"{harness.containers['plain'].name}\n"
        assert c.elevation.mode == "sudo-password"
        # the password never appears on a command line: look at what runs on the host
        assert all(SUDO_PASSWORD not in p for p in _all_cmdlines())

    def test_sudo_password_and_pty(self, connect, method, harness):
        c = connect(SUDO_USER, "plain", {"sudo": {"password": SUDO_PASSWORD}}, method=method)
        out = c.run("hostname", hide=True, pty=True).stdout
        assert out.replace("\r", "").endswith(f"{harness.containers['plain'].name}\n")
        assert SUDO_PASSWORD not in out

    def test_sudo_needing_a_password_without_one(self, connect, method):
        c = connect(SUDO_USER, "plain", method=method)
        with pytest.raises(ElevationRequired, match="password"):
            c.run("true")

    def test_nsenter_missing_on_the_host(self, harness, tmp_path):
        # a second sshd whose host has no nsenter: a private mount namespace hides it
        wrapper = hiding("/usr/bin/nsenter")
        server = SSHServer.start(tmp_path / "no-nsenter", users=("root",), wrapper=wrapper)
        try:
            kwargs = {
                **server.connection_kwargs("root"),
                "pid": harness.containers["plain"].leader_pid,
            }
            config = Config(overrides={"run": {"in_stream": False}})
            c = NamespaceConnection(**kwargs, method="nsenter", config=config)
            with c, pytest.raises(ToolMissing, match="nsenter"):
                c.run("true")
            with NamespaceConnection(**kwargs, config=config) as c:  # auto: the helper instead
                assert c.run("hostname", hide=True).stdout == "fabns-plain\n"
                assert c.method_name == "setns"
        finally:
            server.stop()

    def test_wrong_python_is_reported(self, connect, method):
        overrides = {"fabns": {"python": "/nonexistent/python3"}}
        with pytest.raises(ToolMissing, match="/nonexistent/python3"):
            connect("root", "plain", overrides, method=method).run("true")


def _all_cmdlines() -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    lines.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
    return lines
