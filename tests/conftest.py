"""Session wiring: one real sshd and set of containers, and a check that nothing leaks.

Imports nothing from fabns but `fabns.testing` (also through `testbeds`), so the
harness works whatever state the library is in.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import fabric  # noqa: F401  (imported before the leak snapshot: import-time state is not a leak)
import paramiko
import pytest
from testbeds import EngineBeds

from fabns.testing import Container, Harness, SSHServer, chroot_limitation

#: Open file descriptors the session may gain (pytest's own bookkeeping, lazy imports).
FD_TOLERANCE = 3
#: How long teardown waits for closing transports and exiting processes to settle.
SETTLE_SECONDS = 3.0
#: SSH transports still open when the harness stops (stopping sshd would hide them).
_open_transports: list[str] = []


@dataclass
class Snapshot:
    """Threads, open fds and live child processes of this pytest process."""

    threads: dict[int, str]
    fds: dict[int, str]
    children: dict[int, str]

    @classmethod
    def take(cls) -> Snapshot:
        threads = {t.ident or 0: f"{t.name} ({t!r})" for t in threading.enumerate()}
        fds: dict[int, str] = {}
        for entry in os.listdir("/proc/self/fd"):
            try:
                fds[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
            except OSError:  # the fd listdir itself used, closed again
                continue
        return cls(threads, fds, _live_children())

    def leaks_since(self, before: Snapshot) -> list[str]:
        """What grew since ``before``, one line per finding; empty if nothing leaked."""
        found = []
        if len(self.threads) > len(before.threads):
            new = [name for ident, name in self.threads.items() if ident not in before.threads]
            found.append(f"threads {len(before.threads)} -> {len(self.threads)}: {new}")
        if len(self.fds) > len(before.fds) + FD_TOLERANCE:
            new_fds = {
                fd: target for fd, target in self.fds.items() if before.fds.get(fd) != target
            }
            found.append(f"open fds {len(before.fds)} -> {len(self.fds)}: {new_fds}")
        new_children = {
            pid: cmd for pid, cmd in self.children.items() if pid not in before.children
        }
        if new_children:
            found.append(f"child processes still running: {new_children}")
        return found


def _live_children() -> dict[int, str]:
    """PID -> command line of every child of this process that is not a zombie."""
    me = os.getpid()
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[1]) != me or fields[0] == b"Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                children[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
    return children


@pytest.fixture(scope="session", autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail the run if threads, fds or child processes outlive the session (and the harness)."""
    before = Snapshot.take()
    yield
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        leaks = Snapshot.take().leaks_since(before)
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if _open_transports:
        leaks.append(f"SSH connections never closed: {_open_transports}")
    if leaks:
        pytest.fail(
            "the test session leaked (close every Connection, stop every Container):\n  "
            + "\n  ".join(leaks),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def harness(_no_leaks: None) -> Iterator[Harness]:
    """The real sshd and standard containers, started once per session; HarnessError if not."""
    started = Harness.start()
    try:
        yield started
    finally:
        _open_transports.extend(
            f"{t.get_username()}@{t.getpeername()}"
            for t in threading.enumerate()
            if isinstance(t, paramiko.Transport) and t.is_active()
        )
        started.stop()


@pytest.fixture(scope="session")
def sshd(harness: Harness) -> SSHServer:
    return harness.sshd


class _Containers(dict[str, Container]):
    """The harness's containers; asking for one the machine cannot hold skips with why.

    That happens only where the kernel refuses user namespaces (a chroot); on a
    normal machine and in CI every standard container runs or the harness fails.
    """

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness.containers)
        self.unavailable = harness.unavailable

    def __missing__(self, key: str) -> Container:
        if key in self.unavailable:
            pytest.skip(f"{key}: {self.unavailable[key]}")
        raise KeyError(key)


@pytest.fixture(scope="session")
def containers(harness: Harness) -> dict[str, Container]:
    return _Containers(harness)


@pytest.fixture(scope="session")
def state_before_beds() -> dict[str, object]:
    """What the machine looked like before the engine beds started (checked after a stop)."""
    from support import machine_state

    return machine_state()


@pytest.fixture(scope="session")
def beds(harness: Harness, state_before_beds: dict[str, object]) -> Iterator[EngineBeds]:
    """Every container engine (`testbeds`), started once per session.

    A piece that cannot start is a test error -- except in a chroot, where the
    kernel refuses the user namespaces and pivot_root that every engine needs.
    Started after the harness, so whatever holds connections to the beds is
    torn down before the harness looks for connections left open.
    """
    limitation = chroot_limitation()
    if limitation:
        pytest.skip(f"container engines: {limitation}")
    started = EngineBeds.start()
    try:
        yield started
    finally:
        started.stop()
