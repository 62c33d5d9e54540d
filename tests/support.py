"""Shared helpers for the behaviour tests (imported by the test modules)."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fabns import Config, NamespaceConnection

#: The ways in the behaviour suite runs through; "persistent" is the setns helper
#: entered once (``persistent=True``), every command a stream of its session.
METHODS = ("nsenter", "setns", "persistent")
#: (ssh user, container key) pairs that work without host privilege, or with it as root.
ROOT_TARGETS = (("root", "plain"), ("root", "rootns"))
OWNER_TARGETS = (("alice", "alice-maproot"), ("alice", "alice-subid"))
ALL_TARGETS = ROOT_TARGETS + OWNER_TARGETS

Connect = Callable[..., NamespaceConnection]


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    """Each way in that works for every kind of ``pid=`` target (and persistent sessions)."""
    return str(request.param)


def way_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for a connection, with ``method="persistent"`` made real (in place)."""
    if kwargs.get("method") == "persistent":
        kwargs.update(method="setns", persistent=True)
    return kwargs


def way_name(method: str) -> str:
    """The ``method_name`` a connection made with `method` reports."""
    return "setns" if method == "persistent" else method


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
        way_options(kwargs)
        conn = NamespaceConnection(**harness.sshd.connection_kwargs(user), **kwargs)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.close()


def hiding(program: str) -> list[str]:
    """An `SSHServer` wrapper: a private mount namespace where ``program`` is not executable.

    Refuses to run (rather than hide it for the whole machine) if the namespace
    still has shared mounts, e.g. in a chroot where ``/`` cannot be made private.
    """
    script = (
        "mount --make-rprivate / 2>/dev/null || "
        '! grep -q " shared:" /proc/self/mountinfo || exit 1; '
        f'mount --bind /dev/null {program} && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script, "sh"]


def replacing(programs: dict[str, str]) -> list[str]:
    """An `SSHServer` wrapper: a private mount namespace where each program is another file.

    ``programs`` maps a host program's path to the file bind-mounted over it
    (e.g. a script that lies), for that sshd and its sessions only. Refuses to
    run, like `hiding`, where the namespace would still share mounts.
    """
    binds = " && ".join(
        f"mount --bind {shlex.quote(replacement)} {shlex.quote(program)}"
        for program, replacement in programs.items()
    )
    script = (
        "mount --make-rprivate / 2>/dev/null || "
        '! grep -q " shared:" /proc/self/mountinfo || exit 1; '
        f'{binds} && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script, "sh"]


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


#: Paths the engines create on first use (none may be left behind by a stop).
WATCHED = [
    Path(p)
    for p in (
        "/run/systemd/system", "/run/systemd/nspawn", "/run/systemd/userdb", "/run/dbus/pid",
        "/run/dbus/system_bus_socket", "/run/lxc", "/var/lib/containers", "/run/containers",
        "/run/libpod", "/run/runc", "/var/lib/lxc/fabns-p1", "/home/alice/.local",
        "/home/alice/.config", "/home/alice/.cache", "/etc/cni/net.d/cni.lock",
    )
]  # fmt: skip
#: Folders whose entries must be the same after a stop as before the start.
LISTED = [Path("/run/user/1001"), Path("/run/systemd"), Path("/var/lib/lxc")]
#: Cgroups the engines make at the top of a hierarchy.
CGROUP_NAMES = ("fabns-alice", "machine.slice", "lxc.pivot", "libpod_parent")


def machine_state() -> dict[str, object]:
    """What a stop must restore: watched paths, folder listings, our top-level cgroups."""
    state: dict[str, object] = {str(p): os.path.lexists(p) for p in WATCHED}
    for folder in LISTED:
        state[f"{folder}/*"] = sorted(os.listdir(folder)) if folder.is_dir() else None
    cgroups = []
    for point in Path("/sys/fs/cgroup").iterdir():
        cgroups += [f"{point.name}/{n}" for n in CGROUP_NAMES if (point / n).is_dir()]
        cgroups += [f"{point.name}/{d.name}" for d in point.glob("lxc.*.fabns-*")]
    state["cgroups"] = sorted(cgroups)
    return state
