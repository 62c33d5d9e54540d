"""Shared helpers for the behaviour tests (imported by the test modules)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fabns import Config, NamespaceConnection

METHODS = ("nsenter", "setns")
#: (ssh user, container key) pairs that work without host privilege, or with it as root.
ROOT_TARGETS = (("root", "plain"), ("root", "rootns"))
OWNER_TARGETS = (("alice", "alice-maproot"), ("alice", "alice-subid"))
ALL_TARGETS = ROOT_TARGETS + OWNER_TARGETS

Connect = Callable[..., NamespaceConnection]


@pytest.fixture
def connect(harness: Any) -> Iterator[Connect]:
    """Factory: ``connect(user, container_key, **kwargs)`` -> NamespaceConnection."""
    made: list[NamespaceConnection] = []

    def factory(
        user: str = "root",
        container: str = "plain",
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> NamespaceConnection:
        # pytest captures stdin: like Fabric's own tests, do not mirror it
        settings: dict[str, Any] = {"run": {"in_stream": False}}
        for key, value in (overrides or {}).items():
            settings.setdefault(key, {}).update(value)
        kwargs["config"] = Config(overrides=settings)
        if container in harness.unavailable and "pid" not in kwargs:
            # Only where the kernel cannot make the container at all (a chroot); on a
            # normal machine -- and in CI -- every container runs or the harness fails.
            pytest.skip(f"{container}: {harness.unavailable[container]}")
        if "pid" not in kwargs:
            kwargs["pid"] = harness.containers[container].leader_pid
        conn = NamespaceConnection(**harness.sshd.connection_kwargs(user), **kwargs)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.close()


def host_processes(needle: str) -> list[str]:
    """Command lines of processes on this machine containing ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if needle in cmdline and "pytest" not in cmdline:
            found.append(f"{entry}: {cmdline}")
    return found


def host_run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
