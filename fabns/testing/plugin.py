"""A pytest plugin: test your own tasks against real containers over a real sshd.

Loaded only on request -- it registers no entry point, so installing fabns
never changes anyone's pytest run::

    pytest -p fabns.testing.plugin
    # or in your top-level conftest.py (not in a test module: its options
    # must be known before the command line is read)
    pytest_plugins = ["fabns.testing.plugin"]

It needs pytest (``pip install 'fabns[testing]'``), root, and what the rest
of `fabns.testing` needs (OpenSSH's sshd, busybox-static, uidmap; the users
that `fabns_sshd` lets in must exist).

Fixtures:

- `fabns_sshd` (session): a throw-away sshd on 127.0.0.1.
- `fabns_container` (per test): ``fabns_container(name, mode="plain",
  owner="root", rootfs=None, env=None)`` starts a `Container`; stopped and
  removed after the test.
- `fabns_connect` (per test): ``fabns_connect(container, user="root",
  **kwargs)`` returns a `NamespaceConnection` into that container over
  `fabns_sshd`; closed after the test.

Options: ``--fabns-rootfs PATH`` (a directory or tar archive, e.g. from
``mmdebstrap``) is the root filesystem of every container a test starts
without ``rootfs=`` (default: busybox), so the same tests run against your real
distribution image; ``--fabns-users`` names who may log in to `fabns_sshd`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from fabns import Config, NamespaceConnection
from fabns.testing.base import NOPASSWD_USER, SUDO_USER, TEST_USER, HarnessError
from fabns.testing.containers import Container, chroot_limitation
from fabns.testing.harness import stop_all
from fabns.testing.sshd import SSHServer

__all__ = [
    "DEFAULT_USERS",
    "ConnectFactory",
    "ContainerFactory",
    "fabns_connect",
    "fabns_container",
    "fabns_sshd",
]

#: Who may log in to `fabns_sshd` unless ``--fabns-users`` says otherwise.
DEFAULT_USERS = ("root", TEST_USER, SUDO_USER, NOPASSWD_USER)


class ContainerFactory(Protocol):
    """The type of the `fabns_container` fixture, for annotating your tests."""

    def __call__(
        self,
        name: str,
        mode: str = "plain",
        owner: str = "root",
        rootfs: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Container: ...


class ConnectFactory(Protocol):
    """The type of the `fabns_connect` fixture, for annotating your tests."""

    def __call__(
        self, container: Container, user: str = "root", **kwargs: Any
    ) -> NamespaceConnection: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fabns", "fabns test containers (fabns.testing.plugin)")
    group.addoption(
        "--fabns-rootfs",
        metavar="PATH",
        default=None,
        help="root filesystem of fabns_container's containers when a test names none: a "
        "directory or a tar archive (.tar, .tar.gz, .tar.xz), e.g. from mmdebstrap; "
        "default: busybox",
    )
    group.addoption(
        "--fabns-users",
        metavar="USER,...",
        default=",".join(DEFAULT_USERS),
        help="users who may log in to fabns_sshd (each must exist here); default: %(default)s",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"fabns: containers from {_default_rootfs(config) or 'busybox'}"


def _default_rootfs(config: pytest.Config) -> Path | None:
    """``--fabns-rootfs``, relative to where pytest was started."""
    value = config.getoption("fabns_rootfs")
    return None if not value else config.invocation_params.dir / Path(value).expanduser()


@pytest.fixture(scope="session")
def _fabns_directory() -> Iterator[Path]:
    """A 0755 directory under /tmp for the sshd's files and the containers, removed at the end.

    Unprivileged owners' containers must reach their root filesystems through
    it, which pytest's own temporary directories (mode 0700) would not allow.
    """
    path = Path(tempfile.mkdtemp(prefix="fabns-pytest-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fabns_sshd(request: pytest.FixtureRequest, _fabns_directory: Path) -> Iterator[SSHServer]:
    """A throw-away OpenSSH sshd on 127.0.0.1, key-only, for the whole session.

    root and the test users (``--fabns-users``; default root, alice, bob and
    carol) log in with its `SSHServer.client_key`; ``connection_kwargs(user)``
    gives what ``fabric.Connection`` needs, ``ssh_argv(user)`` an OpenSSH
    command line. Stopped, with every session it forked, when the session ends.
    """
    users = [user.strip() for user in request.config.getoption("fabns_users").split(",")]
    server = SSHServer.start(_fabns_directory / "sshd", users=[user for user in users if user])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fabns_container(
    request: pytest.FixtureRequest, _fabns_directory: Path
) -> Iterator[ContainerFactory]:
    """Factory: ``fabns_container(name, mode="plain", owner="root", rootfs=None, env=None)``.

    Starts a real `Container` named (and with the hostname) ``name`` and
    returns it once its leader runs: ``mode`` ``"plain"`` (no user namespace,
    root only), ``"maproot"`` or ``"subid"`` (a user namespace owned by
    ``owner``). ``rootfs`` is a directory or tar archive to make its root
    filesystem from; None means ``--fabns-rootfs``, else busybox. ``env`` adds
    to the leader's environment. Each test gets fresh root filesystems; every
    container it started is stopped and removed after it. Where the kernel
    cannot make user namespaces (a chroot) the test is skipped for the modes
    that need one.
    """
    default = _default_rootfs(request.config)
    directory = Path(tempfile.mkdtemp(prefix="test-", dir=_fabns_directory))
    directory.chmod(0o755)
    started: dict[str, Container] = {}

    def factory(
        name: str,
        mode: str = "plain",
        owner: str = "root",
        rootfs: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Container:
        if name in started:
            raise HarnessError(f"container {name!r} already runs in this test")
        limitation = chroot_limitation()
        if mode != "plain" and limitation:
            pytest.skip(f"container {name} ({mode}): {limitation}")
        image = rootfs if rootfs is not None else default
        started[name] = Container.start(directory, name, mode, owner, rootfs=image, env=env)
        return started[name]

    yield factory
    stop_all(started.values(), "the test's containers")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fabns_connect(fabns_sshd: SSHServer) -> Iterator[ConnectFactory]:
    """Factory: ``fabns_connect(container, user="root", **kwargs)`` -> `NamespaceConnection`.

    A connection to `fabns_sshd` as ``user`` whose every ``run``, ``sudo``,
    ``put`` and ``get`` happens inside ``container`` (a `Container`, entered by
    its leader's PID); ``kwargs`` go to `NamespaceConnection` (``method=``,
    ``uid=``, ``config=``, ...). Unless you pass a ``config``, it has
    ``run.in_stream=False``: pytest captures stdin, so commands must not read
    it. After ``container.restart()`` ask for a new connection (the old one
    raises ``TargetChanged``). Closed after the test.
    """
    made: list[NamespaceConnection] = []

    def factory(container: Container, user: str = "root", **kwargs: Any) -> NamespaceConnection:
        kwargs.setdefault("config", Config(overrides={"run": {"in_stream": False}}))
        login: dict[str, Any] = dict(fabns_sshd.connection_kwargs(user))
        conn = NamespaceConnection(**login, pid=container.leader_pid, **kwargs)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.close()
