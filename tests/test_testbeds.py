"""The container engines of `testbeds`, used over ssh the way fabns resolves names.

Every check runs a real command through a real sshd against a real engine:
machined + nspawn, LXC (privileged, and unprivileged for alice in her delegated
cgroup with her own ``systemd --user``), and rootful and rootless podman.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fabric
import pytest
from support import machine_state
from testbeds import EngineBeds

from fabns.testing import TEST_USER, Container, SSHServer


def ctr_processes() -> dict[int, str]:
    """Processes whose environment names one of the beds' containers (FABNS_CTR=fabns-*)."""
    names = {b"FABNS_CTR=fabns-" + n for n in (b"n1", b"n2", b"p1", b"u1", b"pod1", b"apod")}
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if env & names and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found[int(entry)] = stat.split(" ", 2)[1]
    return found


def start_time(pid: int) -> str | None:
    """Start time of a running (non-zombie) ``pid``, None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


@pytest.fixture(scope="session")
def beds_sshd() -> Iterator[SSHServer]:
    """A plain sshd for root and alice (its sessions sit in the root cgroups)."""
    # not under pytest's 0700 tmp: sshd reads alice's authorized keys as alice
    directory = Path(tempfile.mkdtemp(prefix="fabns-beds-sshd-", dir="/tmp"))
    directory.chmod(0o755)
    server = SSHServer.start(directory, users=("root", TEST_USER))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory)


Run = Callable[..., Any]


@pytest.fixture(scope="session")
def run(beds: EngineBeds, beds_sshd: SSHServer) -> Iterator[Run]:
    """``run(user, command, delegated=False)`` -> fabric Result (never raises on exit codes).

    ``delegated`` logs alice in through ``beds.alice_sshd`` (inside her delegated cgroup).
    """
    connections: dict[tuple[str, int], fabric.Connection] = {}
    config = fabric.Config(overrides={"run": {"in_stream": False}})

    def run(user: str, command: str, delegated: bool = False) -> Any:
        server = beds.alice_sshd if delegated else beds_sshd
        assert server is not None
        key = (user, server.port)  # a restart of the beds starts a new alice_sshd
        if key not in connections:
            connections[key] = fabric.Connection(**server.connection_kwargs(user), config=config)
        return connections[key].run(command, hide=True, warn=True)

    yield run
    for connection in connections.values():
        connection.close()


def assert_clean(result: Any, expected: str) -> None:
    """Exit 0, ``expected`` as the whole of stdout, nothing on stderr."""
    assert (result.exited, result.stdout.strip(), result.stderr) == (0, expected, ""), result


# --------------------------------------------------------------------------------- names -> PIDs


def test_machinectl_shows_the_leader_of_each_nspawn_machine(beds: EngineBeds, run: Run) -> None:
    for key in ("n1", "n2"):
        machine = beds.machines[key]
        result = run("root", f"machinectl show {machine.name} -p Leader --value")
        assert_clean(result, str(machine.leader_pid))


def test_n2_runs_in_a_user_namespace_on_ids_no_user_owns(beds: EngineBeds) -> None:
    status = Path(f"/proc/{beds.machines['n2'].leader_pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid % 65536 == 0 and uid > 0
    for line in Path("/etc/subuid").read_text().split():
        _, start, count = line.split(":")
        assert not int(start) <= uid < int(start) + int(count), line


def test_alice_sees_machines_too(beds: EngineBeds, run: Run) -> None:
    machine = beds.machines["n1"]
    result = run(TEST_USER, f"machinectl show {machine.name} -p Leader --value")
    assert_clean(result, str(machine.leader_pid))


def test_machined_registers_any_running_leader(beds: EngineBeds, run: Run) -> None:
    """RegisterMachine for a container no engine made (an unshare one), then UnregisterMachine."""
    directory = Path(tempfile.mkdtemp(prefix="fabns-beds-c1-", dir="/tmp"))
    container = Container.start(directory, "fabns-c1")
    try:
        beds.machined.register(container.name, container.leader_pid, container.rootfs)
        result = run("root", f"machinectl show {container.name} -p Leader --value")
        assert_clean(result, str(container.leader_pid))
        beds.machined.unregister(container.name)
        assert container.name not in beds.machined.names()
        assert start_time(container.leader_pid) is not None  # unregistering kills nothing
    finally:
        container.stop()
        shutil.rmtree(directory)


def test_lxc_ls_lists_the_privileged_container_with_its_pid(beds: EngineBeds, run: Run) -> None:
    p1 = beds.lxc["p1"]
    result = run("root", "lxc-ls -1fFNAME,PID")
    assert result.exited == 0, result
    assert [p1.name, str(p1.leader_pid)] in [line.split() for line in result.stdout.splitlines()]
    assert_clean(run("root", f"lxc-info -n {p1.name} -pH"), str(p1.leader_pid))


def test_lxc_ls_lists_alices_container_for_alice(beds: EngineBeds, run: Run) -> None:
    u1 = beds.lxc["u1"]
    result = run(TEST_USER, "lxc-ls -1fFNAME,PID", delegated=True)
    assert result.exited == 0, result
    assert [u1.name, str(u1.leader_pid)] in [line.split() for line in result.stdout.splitlines()]


@pytest.mark.parametrize(("user", "key"), [("root", "pod1"), (TEST_USER, "apod")])
def test_podman_inspect_gives_the_live_leader(
    beds: EngineBeds, run: Run, user: str, key: str
) -> None:
    container = beds.podman[key]
    result = run(user, f"podman inspect -f '{{{{.State.Pid}}}}' {container.name}")
    assert result.exited == 0, result
    pid = int(result.stdout)
    assert pid == container.leader_pid
    assert start_time(pid) is not None


# --------------------------------------------------------------------------------- entering


@pytest.mark.parametrize("key", ["n1", "n2", "p1", "pod1"])
def test_root_nsenter_into_each_leader_sees_the_container_hostname(
    beds: EngineBeds, run: Run, key: str
) -> None:
    target = {**beds.machines, **beds.lxc, **beds.podman}[key]
    assert_clean(run("root", f"nsenter -t {target.leader_pid} -a hostname"), target.name)


def test_every_leader_has_fabns_ctr_in_its_environment(beds: EngineBeds) -> None:
    targets = {**beds.machines, **beds.lxc, **beds.podman}
    for target in targets.values():
        environ = Path(f"/proc/{target.leader_pid}/environ").read_bytes().split(b"\0")
        assert f"FABNS_CTR={target.name}".encode() in environ, target.name


def test_lxc_attach_into_the_privileged_container(beds: EngineBeds, run: Run) -> None:
    name = beds.lxc["p1"].name
    assert_clean(run("root", f"lxc-attach -n {name} --clear-env -- hostname"), name)


def test_alice_sessions_on_alice_sshd_start_in_her_delegated_cgroup(
    beds: EngineBeds, run: Run
) -> None:
    result = run(TEST_USER, "cat /proc/self/cgroup", delegated=True)
    assert f"0::/{beds.delegation.name}" in result.stdout, result


def test_alice_lxc_attach_from_her_cgroup(beds: EngineBeds, run: Run) -> None:
    name = beds.lxc["u1"].name
    result = run(TEST_USER, f"lxc-attach -n {name} --clear-env -- hostname", delegated=True)
    assert_clean(result, name)


def test_alice_systemd_run_user_scope_lxc_attach(beds: EngineBeds, run: Run) -> None:
    name = beds.lxc["u1"].name
    command = (
        "systemd-run --user --scope --quiet -p Delegate=yes "
        f"lxc-attach -n {name} --clear-env -- hostname"
    )
    assert_clean(run(TEST_USER, command, delegated=True), name)


def test_alice_user_manager_is_running(beds: EngineBeds, run: Run) -> None:
    result = run(TEST_USER, "systemctl --user is-system-running", delegated=True)
    assert result.stdout.strip() in ("running", "degraded"), result


def test_alice_cannot_attach_from_the_root_cgroup(beds: EngineBeds, run: Run) -> None:
    """Why `alice_sshd` exists: the plain sshd's sessions sit in the root cgroups."""
    name = beds.lxc["u1"].name
    result = run(TEST_USER, f"lxc-attach -n {name} --clear-env -- hostname")
    assert result.exited != 0 and "Permission denied" in result.stderr, result


# --------------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("key", ["p1", "u1"])
def test_lxc_restart_gives_a_new_leader(beds: EngineBeds, run: Run, key: str) -> None:
    container = beds.lxc[key]
    old = container.leader_pid
    container.restart()
    new = container.leader_pid
    assert new != old and start_time(old) is None and start_time(new) is not None
    user, delegated = ("root", False) if key == "p1" else (TEST_USER, True)
    assert_clean(run(user, f"lxc-info -n {container.name} -pH", delegated=delegated), str(new))


@pytest.mark.parametrize(("user", "key"), [("root", "pod1"), (TEST_USER, "apod")])
def test_podman_restart_gives_a_new_leader(
    beds: EngineBeds, run: Run, user: str, key: str
) -> None:
    container = beds.podman[key]
    old = container.leader_pid
    container.restart()
    new = container.leader_pid
    assert new != old and start_time(old) is None and start_time(new) is not None
    result = run(user, f"podman inspect -f '{{{{.State.Pid}}}}' {container.name}")
    assert_clean(result, str(new))
    assert_clean(run("root", f"nsenter -t {new} -a hostname"), container.name)


# --------------------------------------------------------------------------------- teardown


def test_stop_leaves_the_machine_as_found(
    beds: EngineBeds, run: Run, state_before_beds: dict[str, object]
) -> None:
    """Runs last in this module; restarts the beds afterwards for whoever comes next."""
    started = {label: (pid, start_time(pid)) for label, pid in beds.processes().items()}
    assert all(start is not None for _, start in started.values()), started
    beds.stop()
    survivors = {
        label: pid
        for label, (pid, start) in started.items()
        if start_time(pid) is not None and start_time(pid) == start
    }
    assert survivors == {}
    assert ctr_processes() == {}
    assert machine_state() == state_before_beds
    beds.restart()
    machine = beds.machines["n1"]
    result = run("root", f"machinectl show {machine.name} -p Leader --value")
    assert_clean(result, str(machine.leader_pid))
    u1 = beds.lxc["u1"].name
    assert_clean(run(TEST_USER, f"lxc-attach -n {u1} -- hostname", delegated=True), u1)
