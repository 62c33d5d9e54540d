"""Configuration: the ``fabns`` subtree and ``FABRIC_*`` variables load as Fabric users expect."""

from __future__ import annotations

import fabric
import invoke
import pytest

from fabns import Config, NamespaceConnection
from fabns.runner import NamespaceRemote
from fabns.testing import SUDO_PASSWORD, SUDO_USER


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
