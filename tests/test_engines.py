"""Containers by name, over the real sshd, with every engine and way in that makes sense.

machined + nspawn, LXC (root's, and alice's unprivileged one in her delegated
cgroup), rootful and rootless Podman: see `fabns.testbeds`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import hiding, replacing

from fabns import (
    AmbiguousContainer,
    Config,
    ContainerNotFound,
    ContainerStopped,
    EngineUnavailable,
    InvalidArgument,
    NamespaceConnection,
    ToolMissing,
)
from fabns.engines.batch import lookups_script, parse_lookups
from fabns.host import HostResult
from fabns.testing import SSHServer

ROOT_CASES = [
    # (engine, key, container name, methods)
    ("machined", "n1", "fabns-n1", ["nsenter", "setns"]),
    ("machined", "n2", "fabns-n2", ["nsenter", "setns"]),
    ("lxc", "p1", "fabns-p1", ["nsenter", "setns", "lxc-attach"]),
    ("podman", "pod1", "fabns-pod1", ["nsenter", "setns"]),
]


def open_connection(sshd: SSHServer, user: str, **kwargs: Any) -> NamespaceConnection:
    config = Config(overrides={"run": {"in_stream": False}})
    return NamespaceConnection(**sshd.connection_kwargs(user), config=config, **kwargs)


@contextmanager
def counting_channels(c: NamespaceConnection) -> Iterator[list[int]]:
    """Count the SSH channels ``c`` opens (every host step and command is one)."""
    opened = [0]
    create_session = c.create_session

    def counted() -> Any:
        opened[0] += 1
        return create_session()

    c.create_session = counted
    try:
        yield opened
    finally:
        del c.create_session


def check_inside(c: NamespaceConnection, name: str) -> None:
    out = c.run("hostname; echo $FABNS_CTR; id -u; pwd", hide=True).stdout.split()
    assert out == [name, name, "0", "/root"]


@pytest.mark.parametrize(
    "engine,key,name,method",
    [(e, k, n, m) for e, k, n, methods in ROOT_CASES for m in methods],
)
def test_root_by_name(sshd, beds, engine, key, name, method):
    for which in (engine, "auto"):
        with open_connection(sshd, "root", container=name, engine=which, method=method) as c:
            check_inside(c, name)
            assert (c.target.engine, c.target.name, c.method_name) == (engine, name, method)


@pytest.mark.parametrize("method", ["auto", "lxc-attach", "setns", "nsenter"])
def test_alice_into_her_unprivileged_lxc(beds, method):
    # alice's sessions on this sshd start in her delegated cgroup, as on a systemd host
    with open_connection(
        beds.alice_sshd, "alice", container="fabns-u1", owner="alice", method=method
    ) as c:
        check_inside(c, "fabns-u1")
        assert c.method_name == ("lxc-attach" if method == "auto" else method)
        assert c.target.engine == "lxc" and c.target.owner == "alice"
        if c.method_name == "lxc-attach":
            result = c.run("echo out; echo err >&2; exit 3", warn=True, hide=True)
            assert (result.exited, result.stdout, result.stderr) == (3, "out\n", "err\n")


@pytest.mark.parametrize("method", ["nsenter", "setns"])
def test_root_into_alices_containers_by_owner(sshd, beds, method):
    for name, engine in (("fabns-u1", "lxc"), ("fabns-apod", "podman")):
        with open_connection(
            sshd, "root", container=name, owner="alice", engine=engine, method=method
        ) as c:
            assert c.run("hostname", hide=True).stdout == f"{name}\n"


@pytest.mark.parametrize("method", ["auto", "nsenter", "setns"])
def test_alice_into_her_rootless_podman(sshd, beds, method):
    with open_connection(sshd, "alice", container="fabns-apod", owner="alice", method=method) as c:
        check_inside(c, "fabns-apod")
        assert c.target.engine == "podman"


class TestEveryEngineInOneStep:
    """``engine="auto"`` asks every installed engine in one host step, at the same time."""

    def test_a_name_costs_one_host_step_more_than_a_pid(self, sshd, beds):
        pid = beds.lxc["p1"].leader_pid
        steps = {}
        for key, target in (("pid", {"pid": pid}), ("name", {"container": "fabns-p1"})):
            with open_connection(sshd, "root", **target) as c:
                c.open()
                with counting_channels(c) as opened:
                    c.resolve()
                steps[key] = opened[0]
        # facts and the probe; a name adds one step for all engines
        assert steps == {"pid": 2, "name": 3}

    def test_an_unprivileged_user_without_sudo_asks_her_own_in_one_step(self, servers):
        _, alice = servers
        with open_connection(alice, "alice", container="fabns-apod") as c:
            c.open()
            with counting_channels(c) as opened:
                c.resolve()
            assert c.target.engine == "podman"
        assert opened[0] == 3  # facts, her own lookups (root's: no sudo, no step), probe


#: Lookup outputs that try to pass for the framing, another lookup, or the end.
HOSTILE = [
    "printf 'lookup 1\\no \\nx 0\\ne \\nend 2\\n'",
    "printf 'x 0\\n'; printf 'e \\nlookup 1\\n' >&2; exit 7",
    "echo out >&3; echo out >&4; echo $fabns_r",  # the script's own descriptors are closed
    "printf '\\377\\000\\n\\r'; exit 255",
    "head -c 200000 /dev/zero | tr '\\0' x",  # more than a pipe holds
    "sleep 0.2; echo late",
]


class TestLookupFraming:
    """What a lookup prints is data: it comes back to that lookup only, and exactly."""

    @pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
    def test_each_lookup_gets_its_own_output(self, shell):
        done = subprocess.run(
            [shell, "-c", "exec </dev/null; " + lookups_script(HOSTILE)],
            capture_output=True,
            timeout=30,
        )
        results = parse_lookups(done.stdout.decode(), len(HOSTILE))
        assert results is not None
        assert results[0] == HostResult(0, "lookup 1\no \nx 0\ne \nend 2", "")
        assert results[1] == HostResult(7, "x 0", "e \nlookup 1")
        assert results[2].stdout == "" and "Bad file descriptor" in results[2].stderr
        assert results[3].exited == 255 and results[3].stdout.startswith("\ufffd")
        assert results[4] == HostResult(0, "x" * 200_000, "")
        assert results[5] == HostResult(0, "late", "")

    def test_lookups_run_at_the_same_time(self):
        done = subprocess.run(
            ["/bin/sh", "-c", lookups_script(["sleep 1; echo a", "sleep 1; echo b"])],
            capture_output=True,
            text=True,
            timeout=30,
        )
        results = parse_lookups(done.stdout, 2)
        assert results is not None and [r.stdout for r in results] == ["a", "b"]

    @pytest.mark.parametrize(
        "stdout",
        [
            "",
            "end 1\n",
            "lookup 0\no \nx 0\ne \nend 1",  # no final newline
            "lookup 0\no \nx 0\ne \nend 2\n",  # a count that is not the one sent
            "lookup 1\no \nx 0\ne \nend 1\n",
            "lookup 0\nx 0\ne \nend 1\n",  # no o line
            "lookup 0\no \ne \nend 1\n",  # no x line
            "lookup 0\no \nx 0\nend 1\n",  # no e line
            "lookup 0\no a?==\nx 0\ne \nend 1\n",  # not base64
            "lookup 0\no YQ=\nx 0\ne \nend 1\n",  # bad padding
            "lookup 0\no \nx 0\ne \nlookup 1\no \nx 0\ne \nend 1\n",  # one too many
            "lookup 0\no \nx 0\ne \nstray\nend 1\n",
            "lookup 0\no \nx 0\ne \nend 1\nend 1\n",
            "lookup 0\no \nx 1000\ne \nend 1\n",
        ],
    )
    def test_anything_else_is_refused(self, stdout):
        assert parse_lookups(stdout, 1) is None

    def test_the_exact_shape_is_read(self):
        # base64 wrapped over lines, as the host's base64 prints it
        assert parse_lookups("lookup 0\no YWJj\no ZA==\nx 3\ne \nend 1\n", 1) == [
            HostResult(3, "abcd", "")
        ]


def test_unknown_name_names_engines_tried(sshd, beds):
    with (
        open_connection(sshd, "root", container="fabns-nosuch") as c,
        pytest.raises(ContainerNotFound) as caught,
    ):
        c.run("true")
    lines = str(caught.value).splitlines()
    assert "fabns-nosuch" in lines[0]
    # one line per engine asked, each saying what came of it, nothing more
    asked = [line.split(":")[0].strip() for line in lines[1:]]
    # docker only where a docker client is installed (then: no daemon, one line)
    assert asked in (["machined", "lxc", "podman"], ["machined", "lxc", "podman", "docker"])
    assert all(len(line) < 200 for line in lines)


@pytest.mark.parametrize("engine", ["machined", "lxc", "podman"])
@pytest.mark.parametrize(
    "name", ["; touch /tmp/fabns-pwned", "$(touch /tmp/fabns-pwned)", "-rf", "a b", "x'y"]
)
def test_hostile_names_are_data(sshd, beds, engine, name):
    import os

    with (
        open_connection(sshd, "root", container=name, engine=engine) as c,
        pytest.raises(ContainerNotFound),
    ):
        c.run("true")
    assert not os.path.exists("/tmp/fabns-pwned")


def test_two_engines_knowing_a_name_is_an_error(sshd, beds):
    p1 = beds.lxc["p1"]
    beds.machined.register("fabns-p1", p1.leader_pid, beds.directory)
    try:
        with (
            open_connection(sshd, "root", container="fabns-p1") as c,
            pytest.raises(AmbiguousContainer, match=r"machined .* and lxc"),
        ):
            c.run("true")
        with open_connection(sshd, "root", container="fabns-p1", engine="lxc") as c:
            assert c.run("hostname", hide=True).stdout == "fabns-p1\n"
    finally:
        beds.machined.unregister("fabns-p1")


@pytest.mark.parametrize("key,engine", [("p1", "lxc"), ("pod1", "podman")])
def test_restarted_container_is_found_again_by_name(sshd, beds, key, engine):
    piece = beds.lxc[key] if engine == "lxc" else beds.podman[key]
    with open_connection(sshd, "root", container=piece.name, engine=engine) as c:
        c.run("true")
        old = c.target.pid
        piece.restart()
        assert c.run("hostname", hide=True).stdout == f"{piece.name}\n"
        assert c.target.pid == piece.leader_pid != old


@pytest.mark.parametrize(
    "engine,name,stop,start",
    [
        ("lxc", "fabns-p1", ["lxc-stop", "-k", "-n"], ["lxc-start", "-d", "-n"]),
        ("podman", "fabns-pod1", ["podman", "stop", "-t", "0"], ["podman", "start"]),
    ],
)
def test_stopped_container(sshd, beds, engine, name, stop, start):
    subprocess.run([*stop, name], check=True, capture_output=True)
    try:
        with (
            open_connection(sshd, "root", container=name, engine=engine) as c,
            pytest.raises(ContainerStopped, match="not running"),
        ):
            c.run("true")
    finally:
        subprocess.run([*start, name], check=True, capture_output=True)


def test_engine_whose_tool_fails(beds, tmp_path):
    # a podman client whose service cannot be reached, as a docker client without its daemon
    failing = tmp_path / "podman"
    failing.write_text(
        "#!/bin/sh\necho 'Error: cannot connect to the container service' >&2\nexit 125\n"
    )
    failing.chmod(0o755)
    server = SSHServer.start(
        tmp_path / "failing-podman",
        users=("root",),
        wrapper=replacing({"/usr/bin/podman": str(failing)}),
    )
    try:
        with (
            open_connection(server, "root", container="fabns-pod1", engine="podman") as c,
            pytest.raises(EngineUnavailable, match="cannot connect to the container service"),
        ):
            c.run("true")
        # auto: the engine that cannot answer is named, the others still find theirs
        with open_connection(server, "root", container="fabns-p1") as c:
            assert c.run("hostname", hide=True).stdout == "fabns-p1\n"
        with (
            open_connection(server, "root", container="fabns-nosuch") as c,
            pytest.raises(ContainerNotFound, match="podman: unavailable: podman inspect failed"),
        ):
            c.run("true")
    finally:
        server.stop()


def test_missing_engine_tool(beds, harness, tmp_path):
    wrapper = hiding("/usr/bin/machinectl")
    server = SSHServer.start(tmp_path / "no-machinectl", users=("root",), wrapper=wrapper)
    try:
        with (
            open_connection(server, "root", container="fabns-n1", engine="machined") as c,
            pytest.raises(ToolMissing, match="machinectl"),
        ):
            c.run("true")
    finally:
        server.stop()


def test_lxc_attach_needs_an_lxc_name(sshd, harness):
    with (
        open_connection(
            sshd, "root", pid=harness.containers["plain"].leader_pid, method="lxc-attach"
        ) as c,
        pytest.raises(InvalidArgument, match="LXC containers only"),
    ):
        c.run("true")


def test_lxc_attach_refuses_a_podman_container(sshd, beds):
    # a podman container is no LXC container, even if LXC had one of the same name
    with (
        open_connection(
            sshd, "root", container="fabns-pod1", engine="podman", method="lxc-attach"
        ) as c,
        pytest.raises(InvalidArgument, match="LXC containers only"),
    ):
        c.run("true")


@pytest.fixture(scope="module")
def servers(beds):
    """sshds for root and alice on a host whose sudo is hidden (a private mount namespace)."""
    base = Path(tempfile.mkdtemp(prefix="fabns-no-sudo-", dir="/tmp"))
    base.chmod(0o755)  # alice's sshd reads her keys as alice
    wrapper = hiding("/usr/bin/sudo")
    started: list[SSHServer] = []
    try:
        started.append(SSHServer.start(base / "root", users=("root",), wrapper=wrapper))
        started.append(SSHServer.start(base / "alice", users=("alice",), wrapper=wrapper))
        beds.delegation.enter(started[1].pid)  # as on a systemd host: her sessions, her cgroup
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


class TestWithoutSudo:
    """Every SSH user finds what is theirs by name on a host that has no sudo at all."""

    def test_sudo_is_really_missing(self, servers):
        root, _ = servers
        with open_connection(root, "root", pid=1) as c:
            assert c.host_session.tool("sudo") is None

    @pytest.mark.parametrize("name,engine", [("fabns-u1", "lxc"), ("fabns-apod", "podman")])
    def test_root_with_owner_needs_no_sudo(self, servers, name, engine):
        root, _ = servers
        with open_connection(root, "root", container=name, owner="alice", engine=engine) as c:
            assert c.run("hostname", hide=True).stdout == f"{name}\n"

    @pytest.mark.parametrize("name,engine", [("fabns-u1", "lxc"), ("fabns-apod", "podman")])
    def test_alice_finds_her_own_containers_without_owner(self, servers, name, engine):
        _, alice = servers
        for which in (engine, "auto"):
            with open_connection(alice, "alice", container=name, engine=which) as c:
                assert c.run("hostname", hide=True).stdout == f"{name}\n"
                assert (c.target.engine, c.target.owner) == (engine, "alice")

    def test_roots_containers_are_skipped_and_named(self, servers):
        _, alice = servers
        with (
            open_connection(alice, "alice", container="fabns-p1") as c,
            pytest.raises(ContainerNotFound) as caught,
        ):
            c.run("true")
        text = str(caught.value)
        assert "lxc: as alice: not found; root's: not asked, needs root" in text
        assert "sudo is not installed" in text
