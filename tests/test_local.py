"""Local mode: the behaviour suite against containers on this machine, without SSH.

Every behaviour test of ``test_run.py`` and ``test_transfer.py`` runs here a
second time through `LocalNamespaceConnection`: the `connect` fixture below
replaces ``support.connect`` for this module, so the same test bodies enter the
same harness containers, with every way in, with Invoke's local runner
underneath and no sshd involved. So do the trust-boundary attacks that are not
about an SSH account (``test_attacks.py``) and the check that only stdio is
open inside (``test_setns_security.py``).

Local mode runs as the user of this process -- root here -- so the SSH user
a behaviour test names only chose who connects over SSH; root may enter every
harness container (alice's too, by ``pid=``). Local mode as an unprivileged
user (no privilege, ``sudo -n``, a sudo password) is tested below in processes
of alice, carol and bob.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import functools
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import test_attacks
import test_run
import test_transfer
from fabric.runners import Result
from invoke.runners import Local
from invoke.terminals import pty_size
from support import METHODS, host_processes, method  # noqa: F401

# Fixtures the imported attack classes use; module-scoped ones start again for this module.
from test_attacks import (  # noqa: F401
    clean_markers,
    decoy,
    files_ctr,
    forger,
    hostile_env_containers,
    payloads,
    scratch,
    world,
)
from test_engines import ROOT_CASES
from test_run import target  # noqa: F401
from test_setns_security import test_only_stdio_is_open_inside  # noqa: F401

from fabns import Config, NamespaceConnection, NotImplementedYet
from fabns.errors import HostTimeout
from fabns.host import FIXED_ENV
from fabns.local import LocalChannel, LocalNamespaceConnection
from fabns.quoting import quote
from fabns.runner import LocalNamespaceRunner, NamespaceRemote
from fabns.testing import NOPASSWD_USER, SUDO_PASSWORD, SUDO_USER, TEST_USER

# -- the behaviour suite, again -------------------------------------------------------------


def _classes(module: Any) -> dict[str, type]:
    return {
        name: value
        for name, value in vars(module).items()
        if name.startswith("Test")
        and isinstance(value, type)
        and value.__module__ == module.__name__
    }


#: Every test class of the behaviour suite (new ones included without an edit here).
BEHAVIOUR = {**_classes(test_run), **_classes(test_transfer)}
assert len(BEHAVIOUR) == len(_classes(test_run)) + len(_classes(test_transfer)), "a name clash"
globals().update(BEHAVIOUR)

#: The attacks on the trust boundary that do not depend on an SSH account. Left out:
#: TestSudoPasswordPhishing (bob's sudo password over SSH; bob's local mode is tested
#: below), TestLyingOwnerLookup, TestProbeLimits and TestNonPosixLoginShell (each needs
#: an sshd of its own: lying tools, a memory limit, a fish login shell), TestEngineBeds
#: (an sshd fixture; engines are tested locally below).
ATTACKS = ("TestHostEnvironmentInjection", "TestForgedMarkers", "TestTransfers",
           "TestCdPathsAreLiteral", "TestNumericUidWithoutAccount", "TestAutoPicksNoRacyWayIn",
           "TestHostGroupsNeverLeak")  # fmt: skip
globals().update({name: getattr(test_attacks, name) for name in ATTACKS})


@pytest.fixture
def connect(harness: Any) -> Iterator[Any]:
    """Factory: ``connect(user, container_key, **kwargs)`` -> `LocalNamespaceConnection`.

    The same signature as ``support.connect``; ``user`` (the SSH user there) is
    not used: local mode is this process's user, root.
    """
    made: list[LocalNamespaceConnection] = []

    def factory(
        user: str = "root",
        container: str = "plain",
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LocalNamespaceConnection:
        settings: dict[str, Any] = {"run": {"in_stream": False}}
        for key, value in (overrides or {}).items():
            settings.setdefault(key, {}).update(value)
        if container in harness.unavailable and "pid" not in kwargs:
            pytest.skip(f"{container}: {harness.unavailable[container]}")
        if "pid" not in kwargs:
            kwargs["pid"] = harness.containers[container].leader_pid
        kwargs.update(way(kwargs.pop("method", "auto")))
        conn = LocalNamespaceConnection(config=Config(overrides=settings), **kwargs)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.close()


def way(method: str) -> dict[str, Any]:
    """Connection keywords for a ``method`` fixture value ("persistent": setns, once)."""
    if method == "persistent":
        return {"method": "setns", "persistent": True}
    return {"method": method}


def _paramiko_transports() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)]


def _wait_for_host_pid(promise: Any) -> int:
    deadline = time.monotonic() + 10
    while promise.runner.markers.host_pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = promise.runner.markers.host_pid
    assert pid is not None, "the host side never reported its PID"
    return int(pid)


@contextlib.contextmanager
def host_sides(c: LocalNamespaceConnection) -> Iterator[list[int]]:
    """Host PIDs of ``c``'s host sides, while they run: a command's (the persistent
    helper's, for a persistent session) and the SFTP server's."""
    if c.persistent:
        c.run("true", hide=True)
        channel = c.persistent_session.mux().channel
        assert isinstance(channel, LocalChannel) and channel.pid is not None
        yield [channel.pid]
        return
    promise = c.run("sleep 2", asynchronous=True, hide=True)
    try:
        command = _wait_for_host_pid(promise)
        sftp = c.sftp().get_channel()
        assert isinstance(sftp, LocalChannel) and sftp.pid is not None
        yield [command, sftp.pid]
    finally:
        promise.join()


def _environ(pid: int) -> list[str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return sorted(entry.decode() for entry in data.split(b"\0") if entry)


# -- what local mode is ------------------------------------------------------------------------


class TestNoSSH:
    def test_nothing_opens_ssh(self, connect, method, tmp_path):
        before = _paramiko_transports()
        c = connect("root", "plain", method=method)
        result = c.run("hostname", hide=True)
        assert isinstance(result, Result) and result.connection is c
        assert result.stdout == "fabns-plain\n"
        c.put(io.BytesIO(b"x"), "/tmp/local-no-ssh")
        assert c.sftp().listdir("/tmp").count("local-no-ssh") == 1
        assert c.transport is None and c.client.get_transport() is None
        assert _paramiko_transports() == before
        assert c.config.runners.remote is LocalNamespaceRunner
        assert repr(c) == f"<LocalNamespaceConnection root@localhost pid={c.target.pid}>"

    def test_works_in_a_network_namespace_without_any_network(self, harness):
        """No sshd can be reached from a new network namespace (not even loopback is up)."""
        leader = harness.containers["plain"].leader_pid
        script = (
            "import socket, sys\n"
            "from fabns.local import LocalNamespaceConnection\n"
            "try:\n"
            "    socket.create_connection(('127.0.0.1', 22), timeout=2)\n"
            "    sys.exit('the network is reachable')\n"
            "except OSError:\n"
            "    pass\n"
            f"c = LocalNamespaceConnection(pid={leader})\n"
            "print(c.run('hostname', hide=True, in_stream=False).stdout, end='')\n"
            "c.put(__import__('io').BytesIO(b'netless'), '/tmp/netless')\n"
            "print(c.run('cat /tmp/netless', hide=True, in_stream=False).stdout)\n"
        )
        done = subprocess.run(
            ["unshare", "--net", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == "fabns-plain\nnetless\n"

    def test_local_is_still_invokes_local_runner_on_the_host(self, connect):
        c = connect("root", "plain")
        assert c.config.runners.local is Local
        here = c.local("readlink /proc/self/ns/mnt", hide=True).stdout.strip()
        assert here == os.readlink("/proc/self/ns/mnt")
        inside = c.run("readlink /proc/self/ns/mnt", hide=True).stdout.strip()
        assert inside != here

    def test_a_shared_config_keeps_its_remote_runner(self, harness):
        shared = Config(overrides={"run": {"in_stream": False}})
        local = LocalNamespaceConnection(pid=harness.containers["plain"].leader_pid, config=shared)
        remote = NamespaceConnection("web1", pid=4, config=shared)
        assert local.config.runners.remote is LocalNamespaceRunner
        assert remote.config.runners.remote is NamespaceRemote
        assert shared.runners.remote is NamespaceRemote

    def test_there_is_no_transport_to_share(self, connect):
        plain, rootns = connect("root", "plain"), connect("root", "rootns")
        rootns.share_transport(with_=plain)  # what a group does for members on one host
        assert plain.run("hostname", hide=True).stdout == "fabns-plain\n"
        assert rootns.run("hostname", hide=True).stdout == "fabns-rootns\n"
        assert plain.transport is None and rootns.transport is None

    def test_target_keywords_and_spec_strings(self, harness):
        leader = harness.containers["plain"].leader_pid
        c = LocalNamespaceConnection.from_spec(f"localhost/pid:{leader}", method="setns")
        try:
            assert (c.host, c.target_pid, c.method, c.user) == (
                "localhost",
                leader,
                "setns",
                "root",
            )
            assert c.run("hostname", hide=True, in_stream=False).stdout == "fabns-plain\n"
        finally:
            c.close()


# -- the host side: this machine's trust boundary ----------------------------------------------


class TestHostSide:
    def test_this_process_environment_never_reaches_the_host_side(
        self, connect, method, monkeypatch, clean_markers
    ):
        """Everything in this process's environment that could make a host program run
        code (LD_PRELOAD..., a PATH of fake tools) and a secret: the host sides of a
        command and of an SFTP session start with exactly the fixed environment; inside
        sees the container's."""
        for name, value in clean_markers.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PATH", f"{clean_markers.fake_bin}:{os.environ['PATH']}")
        monkeypatch.setenv("FABNS_HOST_SECRET", "s3cret")
        c = connect("root", "plain", method=method)
        with host_sides(c) as pids:
            for pid in pids:
                # /bin/sh (dash) exports PWD itself: the directory the host side runs in
                assert _environ(pid) in (sorted(FIXED_ENV), sorted([*FIXED_ENV, "PWD=/"]))
        env = c.run("env", hide=True).stdout
        assert "FABNS_HOST_SECRET" not in env and "LD_PRELOAD" not in env
        assert "FABNS_CTR=fabns-plain" in env.splitlines()
        assert c.run("echo err >&2", hide=True).stderr == "err\n"  # no loader complaints
        assert clean_markers.fired() == {}, "host programs ran with this process's environment"

    def test_host_side_runs_in_a_session_of_its_own(self, connect, method):
        """A kill of the host side's process group can never reach this process."""
        c = connect("root", "plain", method=method)
        with host_sides(c) as pids:
            for pid in pids:
                assert os.getsid(pid) != os.getsid(0)
                assert os.getpgid(pid) != os.getpgrp()

    @pytest.mark.parametrize("pty", [False, True])
    def test_hostile_bytes_arrive_exactly(self, connect, method, pty, tmp_path):
        """Every byte but NUL -- quotes, ``$()``, backslashes, newlines, bytes that are no
        UTF-8 -- in a command, an ``env`` value and a ``cd()`` path, through the local
        runner's argv."""
        c = connect("root", "plain", method=method)
        raw = bytes(range(1, 256))
        text = raw.decode("utf-8", "surrogateescape")
        where = f"/tmp/fabns-local-{secrets.token_hex(4)}"
        c.run(f"mkdir -p {quote(where)}/{quote(text.replace('/', '-'))}", hide=True, pty=pty)
        with c.cd(f"{where}/{text.replace('/', '-')}"):
            c.run(
                f'printf %s {quote(text)} > cmd; printf %s "$FABNS_VALUE" > env; pwd > pwd',
                env={"FABNS_VALUE": text}, hide=True, pty=pty,
            )  # fmt: skip
            for name in ("cmd", "env"):
                sink = io.BytesIO()
                c.get(name, sink)
                assert sink.getvalue() == raw, name
            sink = io.BytesIO()
            c.get("pwd", sink)
            assert sink.getvalue() == f"{where}/".encode() + raw.replace(b"/", b"-") + b"\n"
        assert not os.path.exists("/tmp/pwned")

    def test_host_steps_time_out(self, connect):
        c = connect("root", "plain", overrides={"fabns": {"host_timeout": 1}})
        started = time.monotonic()
        with pytest.raises(HostTimeout):
            c.host_session.run("sleep 3")
        assert time.monotonic() - started < 2.5


# -- the channel of host steps ---------------------------------------------------------------


class TestLocalChannel:
    """`LocalChannel` by itself: what HostSession, SFTP and persistent sessions rely on."""

    def test_output_exit_status_and_stdin(self):
        channel = LocalChannel()
        channel.exec_command(b"cat; echo err >&2; exit 3")
        channel.sendall(b"in\n")
        channel.shutdown_write()
        assert _read_all(channel.recv) == b"in\n"
        assert _read_all(channel.recv_stderr) == b"err\n"
        assert channel.recv_exit_status() == 3 and channel.exit_status_ready()
        channel.close()
        assert channel.closed and channel.recv(1) == b""

    def test_a_non_blocking_stdin_leaves_stdout_blocking(self):
        """The persistent helper makes its stdin non-blocking and then writes megabytes."""
        channel = LocalChannel()
        script = "import os; os.set_blocking(0, False); os.write(1, b'x' * (4 << 20))"
        channel.exec_command(f"exec /usr/bin/python3 -I -c {quote(script)}")
        time.sleep(0.5)  # let the socket buffer fill up before anything reads
        assert len(_read_all(channel.recv)) == 4 << 20
        assert channel.recv_exit_status() == 0
        channel.close()

    def test_requests_sent_before_replies_are_read_never_deadlock(self):
        """paramiko's SFTP prefetch sends read requests while nothing reads the replies: the
        channel holds the replies in memory (up to its window), as an SSH channel does."""
        channel = LocalChannel()
        channel.settimeout(30)
        script = (
            "import sys\n"
            "for _ in range(24):\n"
            "    sys.stdout.buffer.write(sys.stdin.buffer.read(65536)); sys.stdout.flush()\n"
        )
        channel.exec_command(f"exec /usr/bin/python3 -I -c {quote(script)}")
        payload = os.urandom(24 * 65536)
        channel.sendall(payload)  # far more than a socket buffer, both ways
        channel.shutdown_write()
        assert _read_all(channel.recv) == payload
        assert channel.recv_exit_status() == 0
        channel.close()

    def test_many_small_requests_before_any_reply_is_read(self):
        """The other way: paramiko's prefetch sends thousands of small read requests. The
        kernel charges each small write to a socket far more than its size; the channel
        holds them as sshd would, so none of these sends waits for the replies."""
        channel = LocalChannel()
        channel.settimeout(30)
        script = (
            "import sys\n"
            "for line in sys.stdin.buffer:\n"
            "    sys.stdout.buffer.write(line * 512); sys.stdout.flush()\n"
        )
        channel.exec_command(f"exec /usr/bin/python3 -I -c {quote(script)}")
        for _ in range(3000):
            channel.send(b"r" * 31 + b"\n")
        channel.shutdown_write()
        assert len(_read_all(channel.recv)) == 3000 * 32 * 512
        assert channel.recv_exit_status() == 0
        channel.close()

    def test_timeouts_and_close_wake_readers(self):
        channel = LocalChannel()
        channel.settimeout(0.3)
        channel.exec_command("exec sleep 5")
        with pytest.raises(TimeoutError):
            channel.recv(1)
        channel.settimeout(None)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(channel.recv_stderr(1)))
        reader.start()
        time.sleep(0.2)
        channel.close()
        reader.join(5)
        assert got == [b""] and not reader.is_alive()
        os.kill(channel.pid, signal.SIGKILL)
        assert channel.recv_exit_status() == -1  # as paramiko says for a signal

    def test_no_pty(self):
        with pytest.raises(NotImplementedYet):
            LocalChannel().get_pty()


def _read_all(read: Any) -> bytes:
    chunks = []
    while chunk := read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- ptys ----------------------------------------------------------------------------------------


class TestPty:
    def test_pty_has_the_local_terminals_size(self, connect, method):
        c = connect("root", "plain", method=method)
        cols, rows = pty_size()
        assert c.run("stty size", pty=True, hide=True).stdout.strip() == f"{rows} {cols}"

    def test_ctrl_c_with_a_pty_interrupts_the_command_inside(self, connect, method):
        c = connect("root", "plain", method=method)
        needle = f"sleep 33{METHODS.index(method)}7"
        timer = threading.Timer(1.0, _thread.interrupt_main)
        timer.start()
        try:
            result = c.run(needle, pty=True, hide=True, warn=True)
        finally:
            timer.cancel()
        assert result.failed
        deadline = time.monotonic() + 5
        while host_processes(needle) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_processes(needle) == []


# -- containers by name --------------------------------------------------------------------------


def local(**kwargs: Any) -> LocalNamespaceConnection:
    return LocalNamespaceConnection(
        config=Config(overrides={"run": {"in_stream": False}}), **kwargs
    )


class TestEngines:
    """Containers by name through every engine's tool, run locally (the engine beds)."""

    @pytest.mark.parametrize(
        "engine,name,method",
        [(e, n, m) for e, _, n, methods in ROOT_CASES for m in methods],
    )
    def test_root_by_name(self, beds, engine, name, method):
        with local(container=name, engine=engine, method=method) as c:
            out = c.run("hostname; id -u", hide=True).stdout.split()
            assert out == [name, "0"]
            assert (c.target.engine, c.target.name, c.method_name) == (engine, name, method)

    def test_pty_through_lxc_attach(self, beds):
        """lxc-attach makes its own pty inside: the command runs on a pty of Invoke's local
        runner (nsenter and setns allocate theirs inside, through a helper session)."""
        with local(container="fabns-p1", engine="lxc", method="lxc-attach") as c:
            result = c.run("tty >/dev/null && echo tty; exit 3", pty=True, hide=True, warn=True)
            assert (result.exited, result.stdout.replace("\r", "")) == (3, "tty\n")
            needle = "sleep 3417"
            timer = threading.Timer(1.0, _thread.interrupt_main)
            timer.start()
            try:
                result = c.run(needle, pty=True, hide=True, warn=True)
            finally:
                timer.cancel()
            assert result.failed
            deadline = time.monotonic() + 5
            while host_processes(needle) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert host_processes(needle) == []

    @pytest.mark.parametrize("method", ["nsenter", "setns"])
    def test_root_into_alices_containers_by_owner(self, beds, method):
        for name, engine in (("fabns-u1", "lxc"), ("fabns-apod", "podman")):
            with local(container=name, owner="alice", engine=engine, method=method) as c:
                assert c.run("hostname", hide=True).stdout == f"{name}\n"

    def test_restarted_container_is_found_again_by_name(self, beds):
        piece = beds.lxc["p1"]
        with local(container=piece.name, engine="lxc") as c:
            c.run("true")
            old = c.target.pid
            piece.restart()
            assert c.run("hostname", hide=True).stdout == f"{piece.name}\n"
            assert c.target.pid == piece.leader_pid != old


# -- as an unprivileged user ---------------------------------------------------------------------

#: Run as another user: a local connection's commands, a transfer, and what it used.
AS_USER = """
import io, json, sys
from fabns import Config, ElevationRequired
from fabns.local import LocalNamespaceConnection
request = json.loads(sys.argv[1])
config = Config(overrides={"sudo": {"password": request.get("password")}})
c = LocalNamespaceConnection(config=config, **request["kwargs"])
try:
    out = c.run("hostname; id -u", hide=True, in_stream=False).stdout.split()
    # a pty: with a sudo password, the host side turns its echo off before asking
    out += c.run("tty >/dev/null && echo tty", pty=True, hide=True).stdout.split()
    c.put(io.BytesIO(b"by " + request["who"].encode()), "/tmp/local-put")
    sink = io.BytesIO()
    c.get("/tmp/local-put", sink)
    print(json.dumps({"out": out, "got": sink.getvalue().decode(), "user": c.user,
                      "elevation": c.elevation.mode, "method": c.method_name}))
except ElevationRequired as error:
    print(json.dumps({"error": "ElevationRequired", "message": str(error)}))
finally:
    c.close()
"""


@functools.cache
def readable_path() -> str:
    """A PYTHONPATH every user can read: fabns and the venv's packages, copied out (the
    checkout and root's venv may lie under /root, which only root may enter)."""
    site = next(p for p in sys.path if p.endswith("site-packages") and "/.venv/" in p)
    repo = Path(__file__).resolve().parents[1]
    place = Path(tempfile.mkdtemp(prefix="fabns-as-user-"))
    place.chmod(0o755)
    shutil.copytree(repo / "fabns", place / "code" / "fabns")
    shutil.copytree(site, place / "site", symlinks=True)
    for directory, _, files in os.walk(place):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    atexit.register(shutil.rmtree, place, True)
    return f"{place / 'code'}:{place / 'site'}"


def as_user(user: str, **request: Any) -> dict[str, Any]:
    """Run `AS_USER` as ``user`` with the system Python 3 (root's venv lies under /root)."""
    done = subprocess.run(
        ["runuser", "-u", user, "--", "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
         f"PYTHONPATH={readable_path()}", "/usr/bin/python3", "-c", AS_USER,
         json.dumps({"who": user, **request})],
        capture_output=True, text=True, timeout=120, cwd="/", stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert SUDO_PASSWORD not in done.stdout + done.stderr
    return result


class TestAsAnUnprivilegedUser:
    @pytest.mark.parametrize("key", ["alice-maproot", "alice-subid"])
    def test_owner_needs_no_privilege(self, containers, key, method):
        ctr = containers[key]
        got = as_user(TEST_USER, kwargs={"pid": ctr.leader_pid, **way(method)})
        assert got["out"] == [ctr.name, "0", "tty"] and got["got"] == f"by {TEST_USER}"
        assert (got["user"], got["elevation"]) == (TEST_USER, "none")
        assert got["method"] == way(method)["method"]

    def test_sudo_without_a_password(self, containers, method):
        ctr = containers["plain"]
        got = as_user(NOPASSWD_USER, kwargs={"pid": ctr.leader_pid, **way(method)})
        assert got["out"] == [ctr.name, "0", "tty"] and got["got"] == f"by {NOPASSWD_USER}"
        assert got["elevation"] == "sudo"

    def test_sudo_with_a_password(self, containers, method):
        ctr = containers["plain"]
        kwargs = {"pid": ctr.leader_pid, **way(method)}
        got = as_user(SUDO_USER, kwargs=kwargs, password=SUDO_PASSWORD)
        assert got["out"] == [ctr.name, "0", "tty"] and got["got"] == f"by {SUDO_USER}"
        assert got["elevation"] == "sudo-password"
        refused = as_user(SUDO_USER, kwargs=kwargs, password="wrong")
        assert refused["error"] == "ElevationRequired" and "refused" in refused["message"]

    def test_no_way_to_elevate(self, containers):
        got = as_user(TEST_USER, kwargs={"pid": containers["plain"].leader_pid})
        assert got["error"] == "ElevationRequired"
