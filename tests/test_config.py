"""Configuration: the ``fabns`` subtree and ``FABRIC_*`` variables load as Fabric users expect."""

from __future__ import annotations

import fabric
import invoke
import pytest

from fabns import Config, ConfigError, NamespaceConnection, NamespaceGroup
from fabns.config import connection_options
from fabns.runner import NamespaceRemote
from fabns.testing import SUDO_PASSWORD, SUDO_USER


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME whose ``~/.fabric.yaml`` the test writes (no FABRIC_FABNS_* leaks in)."""
    import os

    for name in list(os.environ):
        if name.startswith("FABRIC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


class TestConnectionOptionsFromConfig:
    """Every NamespaceConnection option from files and FABRIC_FABNS_*; arguments win."""

    def test_every_option_from_the_user_file(self, home):
        (home / ".fabric.yaml").write_text(
            "fabns:\n  container: app\n  engine: lxc\n  owner: alice\n  method: setns\n"
            "  uid: www\n  gid: 33\n"
        )
        c = NamespaceConnection("web1")
        spec = c.target_spec
        assert (spec.container, spec.engine, spec.owner, spec.method, spec.uid, spec.gid) == (
            "app", "lxc", "alice", "setns", "www", 33,
        )  # fmt: skip

    def test_every_option_from_the_environment(self, home, monkeypatch):
        for key, value in {
            "PID": "4242", "ENGINE": "podman", "OWNER": "alice", "METHOD": "nsenter",
            "UID": "1001", "GID": "staff", "PERSISTENT": "1",
        }.items():  # fmt: skip
            monkeypatch.setenv(f"FABRIC_FABNS_{key}", value)
        config = Config()
        c = NamespaceConnection("web1", persistent=False, config=config)
        spec = c.target_spec
        # a configured engine is for containers by name: the PID needs none
        assert (spec.pid, spec.engine, spec.owner, spec.method, spec.uid, spec.gid) == (
            4242, "auto", "alice", "nsenter", 1001, "staff",
        )  # fmt: skip
        assert connection_options(c.config)["persistent"] is True
        monkeypatch.setenv("FABRIC_FABNS_CONTAINER", "app")
        monkeypatch.delenv("FABRIC_FABNS_PID")
        assert NamespaceConnection("web1", persistent=False).engine == "podman"

    def test_environment_over_files_and_arguments_over_both(self, home, monkeypatch):
        (home / ".fabric.yaml").write_text("fabns:\n  container: app\n  method: setns\n")
        monkeypatch.setenv("FABRIC_FABNS_METHOD", "nsenter")
        assert NamespaceConnection("web1").method == "nsenter"
        assert NamespaceConnection("web1", method="lxc-attach").method == "lxc-attach"
        c = NamespaceConnection("web1", pid=7)
        assert (c.target_pid, c.container) == (7, None)  # pid= replaces a configured container
        project = home / "project"
        project.mkdir()
        (project / "fabric.yaml").write_text("fabns:\n  container: db\n  method: setns\n")
        config = Config(project_location=str(project))
        config.load_project()
        c = NamespaceConnection("web1", config=config)
        assert (c.container, c.method) == ("db", "nsenter")  # project file < environment

    def test_a_string_target_wins_over_the_config(self, home):
        (home / ".fabric.yaml").write_text("fabns:\n  container: app\n  engine: lxc\n")
        c = NamespaceConnection.from_spec("web1/pid:12")
        assert (c.target_pid, c.container, c.engine) == (12, None, "auto")
        c = NamespaceConnection.from_spec("web1/db")
        assert (c.container, c.engine) == ("db", "lxc")
        assert NamespaceConnection.from_spec("web1").container == "app"

    def test_runtime_file_and_overrides(self, home, tmp_path):
        runtime = tmp_path / "fabns.yml"
        runtime.write_text("fabns:\n  pid: 99\n  uid: 0\n")
        config = Config(runtime_path=str(runtime), overrides={"fabns": {"uid": "alice"}})
        config.load_runtime()
        c = NamespaceConnection("web1", config=config)
        assert (c.target_pid, c.ns_uid) == (99, "alice")

    @pytest.mark.parametrize(
        "yaml, message",
        [
            ("fabns:\n  contianer: app\n", "fabns.contianer"),
            ("fabns:\n  pid: 12\n  sudo_password: x\n", "fabns.sudo_password"),
            ("fabns:\n  pid: twelve\n", "fabns.pid"),
            ("fabns:\n  pid: 3\n  method: teleport\n", "fabns.method"),
            ("fabns:\n  container: app\n  engine: k8s\n", "fabns.engine"),
            ("fabns:\n  pid: 3\n  persistent: maybe\n", "fabns.persistent"),
            ("fabns:\n  pid: 3\n  uid: [1]\n", "fabns.uid"),
        ],
    )
    def test_unknown_keys_and_bad_values_are_named(self, home, yaml, message):
        (home / ".fabric.yaml").write_text(yaml)
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            NamespaceConnection("web1")

    def test_groups_from_a_file(self, home):
        (home / ".fabric.yaml").write_text(
            "fabns:\n  groups:\n    web: [web1/app, 'admin@web2:2222/app']\n"
            "    all: ['@web', {host: db1, pid: 4, method: setns}]\n"
        )
        group = NamespaceGroup("@all")
        assert [str(c.target_spec) for c in group] == [
            "root@web1:22/app", "admin@web2:2222/app", "root@db1:22/pid:4",
        ]  # fmt: skip
        assert group[2].method == "setns"


def test_the_configured_container_and_method_are_used(harness, home, monkeypatch):
    """Over the real sshd: the target and the way in come from the config alone."""
    ctr = harness.containers["plain"]
    (home / ".fabric.yaml").write_text(f"fabns:\n  pid: {ctr.leader_pid}\n  method: setns\n")
    monkeypatch.setenv("FABRIC_RUN_IN_STREAM", "")  # pytest captures stdin
    with NamespaceConnection(**harness.sshd.connection_kwargs("root")) as c:
        assert c.run("hostname", hide=True).stdout == f"{ctr.name}\n"
        assert c.method_name == "setns"


class TestWithoutAHost:
    def test_fabns_variables_load_from_the_environment(self, monkeypatch):
        monkeypatch.setenv("FABRIC_FABNS_PYTHON", "/usr/bin/python3")
        monkeypatch.setenv("FABRIC_FABNS_HOST_TIMEOUT", "7")
        c = NamespaceConnection("web1", pid=4)
        assert c.python == "/usr/bin/python3"
        assert c.host_session.timeout == 7.0

    def test_explicit_overrides_win_over_the_environment(self, monkeypatch):
        monkeypatch.setenv("FABRIC_FABNS_PYTHON", "/usr/bin/python3")
        config = Config(overrides={"fabns": {"python": "/opt/py/bin/python3"}})
        assert NamespaceConnection("web1", pid=4, config=config).python == "/opt/py/bin/python3"

    @pytest.mark.parametrize("foreign", [fabric.Config, invoke.Config])
    def test_foreign_configs_are_cloned_into_fabns_config(self, foreign, monkeypatch):
        monkeypatch.setenv("FABRIC_FABNS_PYTHON", "/usr/bin/python3")
        config = foreign(overrides={"run": {"warn": True}})
        c = NamespaceConnection("web1", pid=4, config=config)
        assert isinstance(c.config, Config)
        assert c.config.run.warn is True
        assert c.config.fabns.host_timeout == 60
        assert c.config.runners.remote is NamespaceRemote

    def test_representations_are_one_line_and_show_no_secrets(self):
        config = Config(overrides={"sudo": {"password": "s3cret"}})
        c = NamespaceConnection("bob@web1", container="app", config=config)
        assert repr(c) == "<NamespaceConnection bob@web1:22 container=app>"
        assert "s3cret" not in repr(c) and "s3cret" not in str(c.target_spec)

    def test_spec_strings_make_connections(self):
        c = NamespaceConnection.from_spec("admin@web1:2222/app", method="setns")
        assert (c.user, c.host, c.port, c.container, c.method) == (
            "admin", "web1", 2222, "app", "setns"
        )  # fmt: skip


def test_sudo_password_from_the_environment(harness, monkeypatch):
    """``FABRIC_SUDO_PASSWORD`` is enough for an SSH user whose sudo wants a password."""
    monkeypatch.setenv("FABRIC_SUDO_PASSWORD", SUDO_PASSWORD)
    config = Config(overrides={"run": {"in_stream": False}})
    pid = harness.containers["plain"].leader_pid
    with NamespaceConnection(
        **harness.sshd.connection_kwargs(SUDO_USER), pid=pid, config=config
    ) as c:
        assert c.run("hostname", hide=True).stdout == "fabns-plain\n"
        assert c.elevation.mode == "sudo-password"
        assert "fabns-test-password" not in repr(c.target)


def test_target_repr_is_one_line(harness):
    config = Config(overrides={"run": {"in_stream": False}})
    pid = harness.containers["plain"].leader_pid
    kwargs = harness.sshd.connection_kwargs("root")
    with NamespaceConnection(**kwargs, pid=pid, config=config) as c:
        text = repr(c.target)
        assert "\n" not in text and "root:x:0:0" not in text and str(pid) in text
