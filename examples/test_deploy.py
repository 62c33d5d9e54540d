"""Tests of the deploy tasks in fabfile.py, against real containers: copy this and adapt.

fabns's pytest plugin starts a throw-away sshd on 127.0.0.1 and a fresh
container per test; each test calls the real Fabric tasks with a
`NamespaceConnection`, exactly as ``fabns -H host/container`` runs them. As root, on
a machine prepared like ``scripts/install.sh`` does (``pip install
'fabns[testing]'`` brings pytest)::

    pytest -p fabns.testing.plugin examples/test_deploy.py

By default the containers are busybox; to run the same tests in your real
distribution, give the plugin a root filesystem, e.g. one made by mmdebstrap::

    mmdebstrap --variant=minbase bookworm /tmp/bookworm.tar
    pytest -p fabns.testing.plugin examples/test_deploy.py --fabns-rootfs /tmp/bookworm.tar
"""

from __future__ import annotations

import fabfile
import pytest

from fabns import NamespaceGroup
from fabns.testing import TEST_USER
from fabns.testing.plugin import ConnectFactory, ContainerFactory


@pytest.mark.parametrize("mode, owner", [("plain", "root"), ("subid", TEST_USER)])
def test_a_release_goes_live_inside_the_container(
    fabns_container: ContainerFactory, fabns_connect: ConnectFactory, mode: str, owner: str
) -> None:
    # root's container, and an unprivileged user's own one (entered without any privilege)
    app = fabns_container("app1", mode=mode, owner=owner)
    c = fabns_connect(app, user=owner)
    assert fabfile.status(c) == "app1: release none"
    assert fabfile.release(c, "1.2.3", "[app]\n") == "app1: release 1.2.3"
    assert c.run("cat /srv/app/current/settings.ini", hide=True).stdout == "[app]\n"
    # the same file seen from the host, through the container's leader
    settings = app.inside("/srv/app/releases/1.2.3/settings.ini")
    assert settings.read_bytes() == b"[app]\n"
    assert settings.stat().st_mode & 0o777 == 0o640


def test_a_second_release_switches_and_keeps_the_first(
    fabns_container: ContainerFactory, fabns_connect: ConnectFactory
) -> None:
    c = fabns_connect(fabns_container("app1"))
    fabfile.release(c, "1.0", "one\n")
    assert fabfile.release(c, "2.0", "two\n") == "app1: release 2.0"
    out = c.run("readlink /srv/app/current; ls /srv/app/releases", hide=True).stdout
    assert out.split() == ["releases/2.0", "1.0", "2.0"]


def test_each_container_has_its_own_release(
    fabns_container: ContainerFactory, fabns_connect: ConnectFactory
) -> None:
    web1, web2 = fabns_container("web1"), fabns_container("web2")
    fabfile.release(fabns_connect(web1), "1.0")
    # both containers as one group (one SSH connection): a result per container
    group = NamespaceGroup(fabns_connect(web1), fabns_connect(web2))
    assert list(group.each(fabfile.status).values()) == ["web1: release 1.0", "web2: release none"]
