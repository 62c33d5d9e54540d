"""Soak: 8 threads of mixed commands and transfers over persistent sessions, no growth.

4 containers on 2 loopback hosts (the harness sshd, as root, and a second sshd,
as alice, for her own containers); two threads share each connection. Every
output, exit status and file is checked, and afterwards nothing has grown:
the client's descriptors and threads, the processes under each sshd, the
helpers' descriptors, the processes in each container.

CI runs it short (``FABNS_SOAK_COMMANDS``, default 25 per thread); ``inv soak``
runs the full 500 per thread.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fabns import Config, NamespaceConnection
from fabns.testing import SSHServer

COMMANDS = int(os.environ.get("FABNS_SOAK_COMMANDS", "25"))
THREADS = 8


def descendants(pid: int) -> set[int]:
    """PIDs below ``pid`` in the host's process tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def fd_count(pid: int | str) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def container_processes(leader: int) -> int:
    return sum(1 for e in os.listdir(f"/proc/{leader}/root/proc") if e.isdigit())


@pytest.fixture
def second_sshd(harness: Any) -> Any:
    # beside the harness's: a directory every test user can reach (sshd's StrictModes)
    server = SSHServer.start(Path(harness.directory) / "sshd-soak")
    yield server
    server.stop()


@pytest.mark.soak
def test_soak(harness, second_sshd):
    config = Config(overrides={"run": {"in_stream": False}})
    plan = [
        (harness.sshd, "root", "plain"),
        (harness.sshd, "root", "rootns"),
        (second_sshd, "alice", "alice-maproot"),
        (second_sshd, "alice", "alice-subid"),
    ]
    conns = [
        NamespaceConnection(
            **server.connection_kwargs(user),
            pid=harness.containers[key].leader_pid,
            method="setns",
            persistent=True,
            config=config,
        )
        for server, user, key in plan
    ]
    try:
        # warm up: every kind of operation once, so sessions and SFTP exist
        for n, c in enumerate(conns):
            c.run("true")
            c.put(io.BytesIO(b"warm"), f"/tmp/soak-warm-{n}")
            c.get(f"/tmp/soak-warm-{n}", io.BytesIO())
        time.sleep(0.5)

        def snapshot() -> dict[str, Any]:
            helpers = [c.persistent_session.helper_pid for c in conns]
            return {
                "client fds": fd_count("self"),
                "client threads": threading.active_count(),
                "under sshd 1": len(descendants(harness.sshd.pid)),
                "under sshd 2": len(descendants(second_sshd.pid)),
                "helper fds": [fd_count(pid) for pid in helpers if pid],
                "container processes": [
                    container_processes(harness.containers[key].leader_pid) for _, _, key in plan
                ],
            }

        before = snapshot()
        errors: list[str] = []

        def work(t: int) -> None:
            c = conns[t % len(conns)]
            try:
                for i in range(COMMANDS):
                    if i % 10 == 5:
                        data = os.urandom(1000 + 997 * i)
                        path = f"/tmp/soak-{t}-{i % 3}"
                        c.put(io.BytesIO(data), path)
                        back = io.BytesIO()
                        c.get(path, back)
                        if back.getvalue() != data:
                            errors.append(f"thread {t} round {i}: the file came back changed")
                        continue
                    r = c.run(f"echo {t}-{i}; echo e{i} >&2; exit {i % 4}", hide=True, warn=True)
                    if (r.stdout, r.stderr, r.exited) != (f"{t}-{i}\n", f"e{i}\n", i % 4):
                        errors.append(
                            f"thread {t} round {i}: {r.stdout!r} {r.stderr!r} {r.exited}"
                        )
            except Exception as error:
                errors.append(f"thread {t}: {type(error).__name__}: {error}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(1800)
        assert not errors, errors[:10]
        assert all(c.persistent_session.started == 1 for c in conns)
        after = snapshot()
        deadline = time.monotonic() + 10
        while after != before and time.monotonic() < deadline:
            time.sleep(0.2)
            after = snapshot()
        assert after == before
    finally:
        for c in conns:
            c.close()
