"""Persistent sessions against real processes: one helper, many streams, faults and load.

The behaviour suite (test_run, test_transfer, test_errors, test_attacks,
test_properties) already runs every test with ``method="persistent"`` too; this
file holds what only a persistent session has: one entry for many commands,
concurrency on one channel, flow control, and what happens when a part dies.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import CommandTimedOut
from support import connect, host_processes  # noqa: F401

from fabns import SessionLost, TargetChanged, TargetExited, TargetNotFound
from fabns.testing import Container


def persistent(connect: Any, user: str = "root", key: str = "plain", **kwargs: Any) -> Any:
    return connect(user, key, method="setns", persistent=True, **kwargs)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(predicate: Any, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def in_background(c: Any, command: str) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``command`` on ``c`` in a thread, started half a second ago; what it raised."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            c.run(command)
        except BaseException as error:
            outcome.append(error)

    runner = threading.Thread(target=run)
    runner.start()
    time.sleep(0.5)
    return runner, outcome


@pytest.fixture
def scratch_container(tmp_path: Path) -> Any:
    made: list[Container] = []

    def start(name: str, mode: str = "plain", owner: str = "root") -> Container:
        ctr = Container.start(tmp_path, name, mode, owner)
        made.append(ctr)
        return ctr

    yield start
    for ctr in made:
        ctr.stop()


class TestOneEntry:
    @pytest.mark.parametrize("user,key", [("root", "plain"), ("alice", "alice-subid")])
    def test_many_commands_one_helper(self, connect, user, key):
        c = persistent(connect, user, key)
        for n in range(20):
            assert c.run(f"echo {n}", hide=True).stdout == f"{n}\n"
        c.sudo("true", user="nobody", hide=True)
        c.put(io.BytesIO(b"data"), "/tmp/one-helper")
        c.get("/tmp/one-helper", io.BytesIO())
        session = c.persistent_session
        assert session.started == 1
        helper = session.helper_pid
        assert helper is not None and alive(helper)
        c.close()
        assert wait_until(lambda: not alive(helper)), "the helper outlived close()"
        c.close()  # idempotent

    def test_pty_is_the_containers_own(self, connect, harness):
        c = persistent(connect)
        script = 't=$(tty); echo "$t"; test -c "$t" && echo exists; stat -c %d "$t" /dev/pts/ptmx'
        name, exists, its_fs, pts_fs = c.run(script, pty=True, hide=True).stdout.split()
        assert name.startswith("/dev/pts/") and exists == "exists"
        # on the container's own devpts instance, not the host's
        assert its_fs == pts_fs != str(os.stat("/dev/pts/ptmx").st_dev)
        assert c.run("stty size", pty=True, hide=True).stdout.split() == ["24", "80"]

    def test_window_changes_reach_the_pty(self, connect):
        c = persistent(connect)
        stream = c.persistent_session.open_command(
            "stty size; read line; stty size", {}, {"cols": 80, "rows": 24}
        )
        first = b""
        while b"\n" not in first:
            first += stream.recv(1024)
        stream.resize_pty(132, 43)
        time.sleep(0.2)
        stream.sendall(b"go\n")
        rest = b"".join(iter(lambda: stream.recv(1024), b""))
        assert stream.recv_exit_status() == 0
        stream.close()
        assert first.split()[:2] == [b"24", b"80"]
        assert rest.split()[-2:] == [b"43", b"132"]

    def test_killed_by_a_signal_reports_minus_one_like_fabric(self, connect):
        c = persistent(connect)
        assert c.run("kill -TERM $$", warn=True, hide=True).exited == -1

    def test_session_env_and_cwd_per_command(self, connect):
        c = persistent(connect)
        assert c.run("echo $FOO", env={"FOO": "one"}, hide=True).stdout == "one\n"
        assert c.run("echo ${FOO-unset}", hide=True).stdout == "unset\n"
        with c.cd("/tmp"):
            assert c.run("pwd", hide=True).stdout == "/tmp\n"
        assert c.run("pwd", hide=True).stdout == "/root\n"


class TestStreams:
    def test_binary_data_passes_unchanged(self, connect):
        """Every byte value both ways through a stream (Invoke's runner decodes text, so
        this speaks to the session directly), and through SFTP."""
        c = persistent(connect)
        data = bytes(range(256)) * 4096 + os.urandom(1 << 20)
        stream = c.persistent_session.open_command("cat; exit 7", {}, None)
        received = bytearray()
        reader = threading.Thread(
            target=lambda: [received.extend(b) for b in iter(lambda: stream.recv(65536), b"")]
        )
        reader.start()
        stream.sendall(data)
        stream.shutdown_write()
        reader.join(60)
        assert stream.recv_exit_status() == 7
        stream.close()
        assert bytes(received) == data
        c.put(io.BytesIO(data), "/tmp/binary")
        back = io.BytesIO()
        c.get("/tmp/binary", back)
        assert back.getvalue() == data

    def test_text_stdin_arrives_unchanged(self, connect):
        c = persistent(connect)
        text = "".join(chr(n) for n in range(1, 0x3000) if not 0xD800 <= n < 0xE000) * 20
        out = c.run("sha256sum", in_stream=io.StringIO(text), hide=True).stdout
        assert out.split()[0] == hashlib.sha256(text.encode()).hexdigest()

    def test_large_output_streams_through(self, connect):
        c = persistent(connect)
        size = 32 << 20
        out = c.run(f"head -c {size} /dev/zero | tr '\\0' a", hide=True).stdout
        assert len(out) == size and set(out) == {"a"}

    def test_helper_memory_stays_bounded_with_large_output(self, connect):
        c = persistent(connect)
        c.run("true")
        helper = c.persistent_session.helper_pid

        class Sink(io.StringIO):
            def write(self, text: str) -> int:
                return len(text)

        size = 256 << 20
        c.run(f"head -c {size} /dev/zero", out_stream=Sink(), hide=False)
        with open(f"/proc/{helper}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        assert peak < 64 << 10, f"helper peak RSS {peak} KiB for {size >> 20} MiB of output"

    def test_slow_reader_does_not_stall_other_commands(self, connect):
        c = persistent(connect)
        c.run("true")
        others_done = threading.Event()
        sizes: list[int] = []

        class StalledOut(io.StringIO):
            def write(self, text: str) -> int:
                others_done.wait(60)  # this command's reader stops until the others finish
                sizes.append(len(text))
                return len(text)

        slow = threading.Thread(
            target=lambda: c.run("head -c 8000000 /dev/zero", out_stream=StalledOut(), hide=False)
        )
        slow.start()
        try:
            time.sleep(0.5)  # let it fill its window
            for n in range(20):
                assert c.run(f"echo {n}", hide=True).stdout == f"{n}\n"
            assert slow.is_alive(), "the stalled command finished while its reader was stalled"
        finally:
            others_done.set()
            slow.join(60)
        assert sum(sizes) == 8_000_000

    def test_threads_share_one_connection(self, connect):
        c = persistent(connect)
        results: dict[tuple[int, int], Any] = {}
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for n in range(15):
                    r = c.run(
                        f"echo out-{t}-{n}; echo err-{t}-{n} >&2; exit {(t + n) % 3}",
                        hide=True,
                        warn=True,
                    )
                    results[t, n] = r
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert len(results) == 16 * 15
        for (t, n), r in results.items():
            assert r.stdout == f"out-{t}-{n}\n"
            assert r.stderr == f"err-{t}-{n}\n"
            assert r.exited == (t + n) % 3
        assert c.persistent_session.started == 1


class TestFaults:
    def test_leader_killed_mid_command(self, connect, scratch_container):
        ctr = scratch_container("fabns-p-dies")
        c = persistent(connect, pid=ctr.leader_pid)
        c.run("true")
        runner, outcome = in_background(c, "sleep 1000")
        os.kill(ctr.leader_pid, signal.SIGKILL)
        runner.join(15)
        assert not runner.is_alive(), "the command outlived its leader by 15 s"
        assert outcome and isinstance(outcome[0], TargetExited), outcome
        with pytest.raises(TargetNotFound, match="no process"):  # pid=: resolved afresh, gone
            c.run("true")
        assert not host_processes("sleep 1000")

    def test_restarted_between_commands_by_pid(self, connect, scratch_container):
        ctr = scratch_container("fabns-p-restart")
        c = persistent(connect, pid=ctr.leader_pid)
        assert c.run("hostname", hide=True).stdout == "fabns-p-restart\n"
        ctr.restart()
        with pytest.raises(TargetChanged, match="nothing was run"):
            c.run("echo ran > /ran-after-restart")
        assert not (ctr.rootfs / "ran-after-restart").exists()

    def test_helper_killed(self, connect):
        c = persistent(connect)
        c.run("true")
        helper = c.persistent_session.helper_pid
        assert helper is not None
        runner, outcome = in_background(c, "sleep 1001")
        os.kill(helper, signal.SIGKILL)
        runner.join(15)
        assert outcome and isinstance(outcome[0], SessionLost), outcome
        assert wait_until(lambda: not host_processes("sleep 1001")), "the command survived"
        # the next command gets a new session, transparently
        assert c.run("echo again", hide=True).stdout == "again\n"
        assert c.persistent_session.started == 2

    def test_ssh_dropped_mid_command(self, connect):
        c = persistent(connect)
        c.run("true")
        helper = c.persistent_session.helper_pid
        runner, outcome = in_background(c, "sleep 1002")
        c.transport.close()  # the TCP connection goes away under the session
        runner.join(15)
        assert outcome and isinstance(outcome[0], SessionLost), outcome
        assert wait_until(lambda: helper is not None and not alive(helper))
        assert wait_until(lambda: not host_processes("sleep 1002")), "the command survived"
        assert c.run("echo reconnected", hide=True).stdout == "reconnected\n"

    def test_ssh_dropped_mid_transfer_leaves_no_file(self, connect, harness):
        c = persistent(connect)
        c.run("rm -f /tmp/big-upload /tmp/.fabns-tmp-*")
        leader = harness.containers["plain"].leader_pid
        data = os.urandom(16 << 20)

        def progress(sent: int, total: int) -> None:
            if sent > total // 3:
                c.transport.close()

        with pytest.raises(Exception) as raised:
            c.put(io.BytesIO(data), "/tmp/big-upload", progress=progress)
        assert not isinstance(raised.value, AssertionError)
        inside = Path(f"/proc/{leader}/root/tmp")
        assert not (inside / "big-upload").exists()
        assert wait_until(lambda: not list(inside.glob(".fabns-tmp-*"))), (
            "a temporary file remained"
        )
        c.put(io.BytesIO(b"after"), "/tmp/big-upload")
        assert (inside / "big-upload").read_bytes() == b"after"

    def test_timeout_leaves_nothing(self, connect):
        c = persistent(connect)
        with pytest.raises(CommandTimedOut):
            c.run("sleep 1003 & sleep 1003", timeout=1)
        assert wait_until(lambda: not host_processes("sleep 1003"))
        assert c.run("echo fine", hide=True).stdout == "fine\n"

    def test_client_process_killed(self, harness):
        """A client killed outright: its helper and its command vanish from the host."""
        ctr = harness.containers["plain"]
        script = (
            "import sys; from fabns import NamespaceConnection, Config; "
            f"c = NamespaceConnection(**{harness.sshd.connection_kwargs('root')!r}, "
            f"pid={ctr.leader_pid}, persistent=True, "
            "config=Config(overrides={'run': {'in_stream': False}})); "
            "c.run('true'); print(c.persistent_session.helper_pid, flush=True); "
            "c.run('sleep 1004')"
        )
        client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            assert client.stdout is not None
            helper = int(client.stdout.readline())
            assert wait_until(lambda: bool(host_processes("sleep 1004")))
        finally:
            client.kill()
            client.wait()
        assert wait_until(lambda: not alive(helper)), "the helper outlived its client"
        assert wait_until(lambda: not host_processes("sleep 1004")), "the command outlived it"


def test_restarted_container_found_again_by_name(sshd, beds):
    from fabns import Config, NamespaceConnection

    piece = beds.lxc["p1"]
    config = Config(overrides={"run": {"in_stream": False}})
    kwargs = sshd.connection_kwargs("root")
    with NamespaceConnection(
        **kwargs, container=piece.name, engine="lxc", persistent=True, config=config
    ) as c:
        c.run("true")
        old = c.target.pid
        piece.restart()
        assert c.run("hostname", hide=True).stdout == f"{piece.name}\n"
        assert c.target.pid == piece.leader_pid != old


class TestTrustBoundary:
    """What a hostile container can try against a persistent session."""

    def test_forged_frames_in_output_are_output(self, connect):
        """A command printing bytes shaped like the helper's frames (an EXIT for another
        stream, a GONE for the session) changes nothing: they are its output."""
        import json
        import struct

        from fabns.remote.protocol import FRAME_EXIT, FRAME_GONE, FRAME_HEADER

        c = persistent(connect)
        c.run("true")
        busy = threading.Thread(target=lambda: c.run("sleep 2; echo still", hide=True))
        busy.start()
        exit_payload = json.dumps({"status": 0}).encode()
        gone_payload = json.dumps({"detail": "forged"}).encode()
        forged = b"".join(
            struct.pack(FRAME_HEADER, kind, sid, len(payload)) + payload
            for kind, sid, payload in (
                *((FRAME_EXIT, sid, exit_payload) for sid in range(0, 12)),
                (FRAME_GONE, 0, gone_payload),
            )
        )
        octal = "".join(f"\\{b:03o}" for b in forged)
        result = c.run(f"printf '{octal}'; exit 3", hide=True, warn=True, encoding="latin-1")
        assert result.stdout.encode("latin-1") == forged and result.exited == 3
        busy.join(30)
        assert c.run("echo after", hide=True).stdout == "after\n"
        assert c.persistent_session.started == 1
        assert c.persistent_session.mux().gone is None

    def test_helper_is_invisible_and_untouchable_inside(self, connect):
        """The helper stays in the host's PID namespace: the container cannot name it,
        so it can neither signal it nor look at its descriptors."""
        c = persistent(connect)
        c.run("true")
        helper = c.persistent_session.helper_pid
        assert helper is not None
        script = (
            # the image has no python: a python3 process here would be the helper
            # (the pattern is put together at run time: this script's own text lacks it)
            'pat=pyth; pat="${pat}on3"; for p in /proc/[0-9]*; do '
            'case "$(tr "\\0" " " < "$p/cmdline" 2>/dev/null)" in *"$pat"*) echo "found $p";; '
            f'esac; done; kill -0 {helper} 2>/dev/null && echo "signalled"; true'
        )
        out = c.run(script, hide=True).stdout
        assert "found" not in out and "signalled" not in out
        assert alive(helper)
