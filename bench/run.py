"""What a command costs with fabns, against plain Fabric, OpenSSH and Mitogen, in one run.

Starts the test harness (throw-away sshd + busybox containers on 127.0.0.1) and
a bench sshd whose accounts' login shells start fast, then prints, per account:

- per command (``true``): median and p95 over ``--rounds`` sequential commands
  on one open connection -- OpenSSH with a ControlMaster, plain Fabric on the
  host, fabns one-shot (nsenter, setns) and persistent, Mitogen's persistent
  interpreter -- as ratios against plain Fabric and OpenSSH; and the same
  one-shot ways with ``TCP_NODELAY`` on the client's socket (paramiko never
  sets it, and a small SSH packet then waits for a delayed ACK);
- throughput: ``--threads`` threads on one connection against one thread;
- ``--gib`` GiB of output (``head -c``): time, and the peak memory of the client
  process and of the helper on the host (``VmHWM``);
- resolving a container by name against by PID: the first command on a fresh
  connection, ``engine="auto"``, with the host steps it took;
- transfers (``--mib``, ``--small``) and groups (``bench/groups.py``).

Run with ``inv bench``. Nothing here is a test: no figure is asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric import Connection

from fabns import NamespaceConnection
from fabns.errors import NotImplementedYet
from fabns.testing import Harness, HarnessError, SSHServer

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent / "tests"
#: Who runs the bench, and the container each one enters (a harness key).
ACCOUNTS = {"root": "plain", "alice": "alice-subid"}
#: How the bench sshd keeps root's login shell from dominating: this machine's
#: ~root/.bashrc runs pyenv (50 ms a command); the bench sshd sees an empty one.
QUIET_RC = "/root/.bashrc"
GIB = 1 << 30
#: Plain Fabric's output is capped: Invoke's time grows with its square.
PLAIN_FABRIC_BYTES = 8 << 20


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per command, sequentially; or why there is none."""

    samples: list[float]
    missing: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, round(len(ordered) * 0.95) - 1)] * 1000

    @property
    def rate(self) -> float:
        """Commands per second, one after the other."""
        return len(self.samples) / sum(self.samples)


def timed(fn: Callable[[], object], rounds: int) -> Timing:
    fn()  # warm up (connect, resolve, start a session)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(samples)


def in_threads(fn: Callable[[], object], threads: int, total: int) -> float:
    """Commands per second with ``threads`` threads sharing ``total`` commands."""
    errors: list[BaseException] = []
    left = [total]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            try:
                fn()
            except BaseException as error:  # reported below, after every thread ended
                errors.append(error)
                return

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for each in pool:
        each.start()
    for each in pool:
        each.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return total / elapsed


def nodelay(connection: Connection) -> None:
    """TCP_NODELAY on a connection's socket (what paramiko leaves off)."""
    connection.open()
    sock = connection.client.get_transport().sock
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the bench sshd and its accounts -------------------------------------------------------


@contextmanager
def bench_sshd(directory: Path) -> Iterator[SSHServer]:
    """An sshd for root and alice, in a mount namespace where ~root/.bashrc is empty."""
    empty = directory / "empty-bashrc"
    empty.write_text("")
    wrapper = [
        "unshare", "--mount", "--propagation", "unchanged", "sh", "-c",
        'mount --make-rprivate / && mount --bind "$1" "$2" && shift 2 && exec "$@"',
        "sh", str(empty), QUIET_RC,
    ]  # fmt: skip
    if not Path(QUIET_RC).exists():
        wrapper = []
    server = SSHServer.start(directory / "sshd", users=tuple(ACCOUNTS), wrapper=wrapper)
    try:
        yield server
    finally:
        server.stop()


def login_shells(server: SSHServer) -> str:
    """Which login shell each account has, and what the bench did about its startup."""
    described = []
    for user in ACCOUNTS:
        entry = subprocess.run(["getent", "passwd", user], capture_output=True, text=True)
        shell = entry.stdout.strip().split(":")[-1]
        note = "~/.bashrc empty in the bench sshd" if user == "root" else "stock ~/.bashrc"
        plain = Connection(**server.connection_kwargs(user))
        with plain:
            ms = timed(lambda plain=plain: plain.run("exit 0", hide=True), 20).median
        described.append(f"{user} ({shell}, {note}; plain run() {ms:.0f} ms)")
    return ", ".join(described)


def ssh_argv(server: SSHServer, user: str, control: Path | None) -> list[str]:
    argv = server.ssh_argv(user)
    if control is not None:
        options = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                   "-o", "ControlPersist=60"]  # fmt: skip
        argv = [*argv[:-1], *options, argv[-1]]
    return argv


# -- Mitogen -------------------------------------------------------------------------------


class Mitogen:
    """Mitogen's persistent interpreter on the host, if it runs here; else why not."""

    def __init__(self, server: SSHServer, user: str) -> None:
        self.missing = ""
        self.broker: Any = None
        self.context: Any = None
        try:
            import mitogen.master
        except ImportError as error:
            self.missing = f"n/a (mitogen not installed: {error}; pip install mitogen)"
            return
        try:
            self.broker = mitogen.master.Broker()
            router = mitogen.master.Router(self.broker)
            self.context = router.ssh(
                hostname=server.host, port=server.port, username=user,
                identity_file=str(server.client_key), check_host_keys="ignore",
                python_path=["/usr/bin/python3"], ssh_args=["-F", "/dev/null",
                "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={server.known_hosts}"],
            )  # fmt: skip
            self.context.call(os.getpid)
        except Exception as error:
            self.missing = f"n/a (Mitogen {mitogen.__version__} failed: {error!r:.120})"
            self.close()

    def call(self) -> None:
        self.context.call(os.getpid)

    def run_true(self) -> None:
        self.context.call(subprocess.call, ["true"])

    def close(self) -> None:
        if self.broker is not None:
            with suppress(Exception):
                self.broker.shutdown()
                self.broker.join()
            self.broker = None


# -- per command and threads ------------------------------------------------------------------


@dataclass
class Row:
    """One way of running ``true``: its sequential timing and its threaded rate."""

    what: str
    timing: Timing
    threaded: float | None = None
    note: str = ""


def one_shot(server: SSHServer, user: str, pid: int, **options: Any) -> NamespaceConnection:
    return NamespaceConnection(**server.connection_kwargs(user), pid=pid, **options)


def per_command(
    harness: Harness, server: SSHServer, user: str, rounds: int, threads: int
) -> list[Row]:
    """Every way of running ``true`` as ``user``, sequentially and from ``threads`` threads."""
    pid = harness.containers[ACCOUNTS[user]].leader_pid
    kw = server.connection_kwargs(user)
    rows: list[Row] = []

    control = Path(tempfile.mkdtemp(prefix="fabns-bench-cm-")) / "control"
    ssh = ssh_argv(server, user, control)
    try:

        def ssh_true() -> None:
            subprocess.run([*ssh, "true"], check=True)

        timing = timed(ssh_true, rounds)
        rows.append(
            Row(
                "OpenSSH ControlMaster: ssh host true",
                timing,
                in_threads(ssh_true, threads, rounds),
            )
        )
    finally:
        subprocess.run([*ssh[:-1], "-O", "exit", ssh[-1]], capture_output=True)
        shutil.rmtree(control.parent, ignore_errors=True)

    def run_true(c: Connection) -> Callable[[], object]:
        return lambda: c.run("true", hide=True, in_stream=False)

    plans: list[tuple[str, Callable[[], Connection], bool]] = [
        ("plain Fabric run() on the host", lambda: Connection(**kw), False),
        ("fabns one-shot, nsenter", lambda: one_shot(server, user, pid, method="nsenter"), False),
        ("fabns one-shot, setns", lambda: one_shot(server, user, pid, method="setns"), False),
        ("fabns persistent", lambda: one_shot(server, user, pid, persistent=True), False),
        ("plain Fabric run(), TCP_NODELAY", lambda: Connection(**kw), True),
        ("fabns one-shot, nsenter, TCP_NODELAY",
         lambda: one_shot(server, user, pid, method="nsenter"), True),
        ("fabns one-shot, setns, TCP_NODELAY",
         lambda: one_shot(server, user, pid, method="setns"), True),
    ]  # fmt: skip
    for what, make, fast in plans:
        try:
            with make() as c:
                if fast:
                    nodelay(c)
                timing = timed(run_true(c), rounds)
                rate = None if fast else in_threads(run_true(c), threads, rounds)
                rows.append(Row(what, timing, rate))
        except NotImplementedYet:
            rows.append(Row(what, Timing([], "n/a (not implemented)")))

    mitogen = Mitogen(server, user)
    try:
        if mitogen.missing:
            rows.append(Row("Mitogen: call()", Timing([], mitogen.missing)))
        else:
            for what, fn in (
                ("Mitogen: call(os.getpid)", mitogen.call),
                ("Mitogen: call(subprocess.call, ['true'])", mitogen.run_true),
            ):
                rows.append(Row(what, timed(fn, rounds), in_threads(fn, threads, rounds)))
    finally:
        mitogen.close()
    return rows


def print_per_command(user: str, rows: list[Row], rounds: int, threads: int) -> None:
    base = next(r.timing for r in rows if r.what.startswith("plain Fabric run() on"))
    ssh = next(r.timing for r in rows if r.what.startswith("OpenSSH"))
    print(f"\n{user}: true, {rounds} commands one after the other on one connection (ms), "
          f"and {threads} threads on it:")  # fmt: skip
    print(f"  {'':44} {'median':>7} {'p95':>7} {'x Fabric':>9} {'x ssh':>6}"
          f" {'cmd/s':>7} {f'{threads} thr':>7} {'gain':>5}")  # fmt: skip
    for row in rows:
        t = row.timing
        if t.missing:
            print(f"  {row.what:44} {t.missing}")
            continue
        line = (f"  {row.what:44} {t.median:7.1f} {t.p95:7.1f} {t.median / base.median:9.2f}"
                f" {t.median / ssh.median:6.2f} {t.rate:7.0f}")  # fmt: skip
        if row.threaded is not None:
            line += f" {row.threaded:7.0f} {row.threaded / t.rate:5.1f}"
        print(line)
    fast = {r.what: r.timing for r in rows if r.what.endswith("TCP_NODELAY") and r.timing.samples}
    fast_base = fast.pop("plain Fabric run(), TCP_NODELAY", None)
    if fast_base is not None and fast:
        ratios = ", ".join(
            f"{what.split(', ')[1]} x{t.median / fast_base.median:.2f}" for what, t in fast.items()
        )
        print(f"  {'':44} TCP_NODELAY on both sides: {ratios} plain Fabric's")


# -- a GiB of output -----------------------------------------------------------------------------


def big_output_child(spec: dict[str, Any]) -> None:
    """In a fresh process (so that its peak memory is this run's): run ``head -c`` and
    print elapsed seconds, this process's VmHWM and the helper's, as JSON."""
    kw = spec["kwargs"]
    command = f"head -c {spec['bytes']} /dev/zero"
    helpers: dict[int, int] = {}
    done = threading.Event()

    if spec["way"] == "plain":
        c: Connection = Connection(**kw)
    else:
        options = {"persistent": True} if spec["way"] == "persistent" else {"method": spec["way"]}
        c = NamespaceConnection(**kw, pid=spec["pid"], **options)
    with c:
        c.run("true", hide=True, in_stream=False)
        nonce = getattr(c, "fabns_nonce", None)
        watcher = threading.Thread(target=watch_helpers, args=(nonce, helpers, done), daemon=True)
        watcher.start()
        start = time.perf_counter()
        result = c.run(command, hide=True, in_stream=False)
        elapsed = time.perf_counter() - start
        size = len(result.stdout)
        del result
        session = c.persistent_session if getattr(c, "persistent", False) else None
        if session is not None and session.helper_pid:
            helpers[session.helper_pid] = max(
                helpers.get(session.helper_pid, 0), vm_hwm(session.helper_pid)
            )
        done.set()
        watcher.join()
    print(json.dumps({"seconds": elapsed, "bytes": size, "client_kib": vm_hwm(os.getpid()),
                      "helper_kib": max(helpers.values(), default=0)}))  # fmt: skip


def vm_hwm(pid: int) -> int:
    """Peak resident memory of ``pid`` in KiB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def watch_helpers(nonce: str | None, seen: dict[int, int], done: threading.Event) -> None:
    """Record the peak memory of every fabns helper of this connection (by its request's
    nonce) while ``done`` is unset: the host is this machine."""
    while nonce and not done.wait(0.05):
        for entry in os.listdir("/proc"):
            if entry.isdigit() and helper_nonce(int(entry)) == nonce:
                seen[int(entry)] = max(seen.get(int(entry), 0), vm_hwm(int(entry)))


def helper_nonce(pid: int) -> str | None:
    """The nonce in the request of a fabns helper process, None for any other process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if len(argv) < 6 or argv[1:4] != [b"-I", b"-S", b"-c"]:
        return None
    try:
        request = json.loads(base64.b64decode(argv[5]))
    except ValueError:
        return None
    return request.get("nonce") if isinstance(request, dict) else None


def big_output(harness: Harness, server: SSHServer, user: str, gib: float) -> list[str]:
    """``head -c`` of ``gib`` GiB each way, one fresh client process each."""
    count = int(gib * GIB)
    pid = harness.containers[ACCOUNTS[user]].leader_pid
    lines = []
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *server.ssh_argv(user), f"head -c {count} /dev/zero"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    kib = int(done.stderr.strip().splitlines()[-1]) if done.returncode == 0 else 0
    rate = count / seconds / 2**20
    lines.append(f"  {'OpenSSH: ssh host head -c':36} {seconds:6.1f} s {rate:7.0f} MiB/s"
                 f"  client {kib / 1024:6.0f} MiB  helper      -")  # fmt: skip
    for way, what in (
        ("plain", "plain Fabric run() on the host"),
        ("nsenter", "fabns one-shot, nsenter"),
        ("setns", "fabns one-shot, setns"),
        ("persistent", "fabns persistent"),
    ):
        size = min(count, PLAIN_FABRIC_BYTES) if way == "plain" else count
        if size < count:
            what = f"plain Fabric, {size >> 20} MiB only (*)"
        spec = {"kwargs": server.connection_kwargs(user), "pid": pid, "way": way, "bytes": size}
        child = subprocess.run(
            [sys.executable, __file__, "--big-output-child", json.dumps(spec)],
            capture_output=True, text=True,
        )  # fmt: skip
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["?"])[-1]
            if "NotImplementedYet" in child.stderr:
                last = "not implemented"
            lines.append(f"  {what:36} n/a ({last[:100]})")
            continue
        got = json.loads(child.stdout.strip().splitlines()[-1])
        helper = f"{got['helper_kib'] / 1024:6.0f} MiB" if got["helper_kib"] else "     -"
        wrong = "" if got["bytes"] == size else f"  (got {got['bytes']} bytes!)"
        lines.append(
            f"  {what:36} {got['seconds']:6.1f} s {size / got['seconds'] / 2**20:7.0f} MiB/s"
            f"  client {got['client_kib'] / 1024:6.0f} MiB  helper {helper}{wrong}"
        )
    if count > PLAIN_FABRIC_BYTES:
        lines.append(
            "  (*) Invoke's respond() joins the whole output so far on every 1000-byte read, for"
            " its watchers:\n      quadratic (32 MiB took 169 s here); fabns's runners skip it"
            " without watchers"
        )
    return lines


# -- resolving by name ---------------------------------------------------------------------------


def counting_channels(c: Connection) -> list[int]:
    """From now on, count the SSH channels ``c`` opens (each host step and command is one)."""
    opened = [0]
    create_session = c.create_session

    def counted() -> Any:
        opened[0] += 1
        return create_session()

    c.create_session = counted
    return opened


def resolves(harness: Harness, server: SSHServer, count: int) -> list[str]:
    """The first command on a fresh connection: container= (engine="auto") against pid=.

    The harness container is registered with a systemd-machined of the engine
    test beds, so the name is known to one engine; every installed engine is asked.
    """
    sys.path.insert(0, str(TESTS))
    try:
        from testbeds import Machined
    except ImportError as error:
        return [f"  n/a (no engine test beds: {error})"]
    container = harness.containers["plain"]
    directory = Path(tempfile.mkdtemp(prefix="fabns-bench-machined-"))
    try:
        machined = Machined.start(directory)
    except HarnessError as error:
        shutil.rmtree(directory, ignore_errors=True)
        return [f"  n/a (systemd-machined would not start: {str(error)[:120]})"]
    lines = []
    try:
        machined.register("fabns-bench", container.leader_pid, container.rootfs)
        medians = {}
        for what, target in (
            ("pid=", {"pid": container.leader_pid}),
            ('container=, engine="auto"', {"container": "fabns-bench"}),
            ('container=, engine="machined"', {"container": "fabns-bench", "engine": "machined"}),
        ):
            samples, steps = [], 0
            for _ in range(count + 1):
                with NamespaceConnection(**server.connection_kwargs("root"), **target) as c:
                    c.open()
                    opened = counting_channels(c)
                    start = time.perf_counter()
                    c.run("true", hide=True, in_stream=False)
                    samples.append(time.perf_counter() - start)
                    steps = opened[0]
                    engine = c.target.engine
            timing = Timing(samples[1:])
            medians[what] = timing.median
            lines.append(
                f"  {what:32} {timing.median:7.1f} ms (p95 {timing.p95:6.1f})  "
                f"x{timing.median / medians['pid=']:4.2f} of pid=  "
                f"{steps} SSH channels (the command included), found by {engine}"
            )
    finally:
        machined.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return lines


# -- transfers (as before) -----------------------------------------------------------------------


def throughput(
    label: str, amount: int, fn: Callable[[], object], repeat: int = 3
) -> tuple[str, float]:
    """Median rate over ``repeat`` runs (this machine's loopback is noisy)."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        rates.append(amount / (time.perf_counter() - start))
    return label, statistics.median(rates)


def transfers(harness: Harness, server: SSHServer, mib: int, small: int) -> None:
    """put/get of one large file and many small ones, container vs plain SFTP to the host."""
    kw = server.connection_kwargs("root")
    pid = harness.containers["plain"].leader_pid
    work = Path(tempfile.mkdtemp(prefix="fabns-bench-"))
    try:
        big = work / "big.bin"
        with open(big, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        smalls = []
        for i in range(small):
            path = work / f"small-{i}"
            path.write_bytes(os.urandom(1024))
            smalls.append(path)
        results: dict[str, float] = {}
        with Connection(**kw) as plain:
            plain.sftp()  # both sides start from an open SFTP session
            plain.run("mkdir -p /tmp/fabns-bench-host", hide=True)
            for label, value in (
                throughput("put", mib, lambda: plain.put(str(big), "/tmp/fabns-bench-host/big")),
                throughput(
                    "get", mib, lambda: plain.get("/tmp/fabns-bench-host/big", str(work / "b1"))
                ),
                throughput(
                    "small put",
                    small,
                    lambda: [plain.put(str(p), f"/tmp/fabns-bench-host/{p.name}") for p in smalls],
                ),
            ):
                results[f"plain {label}"] = value
            plain.run("rm -rf /tmp/fabns-bench-host", hide=True)
        for method in ("nsenter", "setns"):
            with NamespaceConnection(**kw, pid=pid, method=method) as c:
                c.sftp()
                c.run("mkdir -p /root/bench", hide=True)
                for label, value in (
                    throughput("put", mib, lambda c=c: c.put(str(big), "/root/bench/big")),
                    throughput("get", mib, lambda c=c: c.get("/root/bench/big", str(work / "b2"))),
                    throughput(
                        "small put",
                        small,
                        lambda c=c: [c.put(str(p), f"/root/bench/{p.name}") for p in smalls],
                    ),
                ):
                    results[f"{method} {label}"] = value
                c.run("rm -rf /root/bench", hide=True)
    finally:
        shutil.rmtree(work)
    print(f"\ntransfers as root ({mib} MiB file; {small} files of 1 KiB), ratio vs plain SFTP:")
    for label, unit in (("put", "MiB/s"), ("get", "MiB/s"), ("small put", "files/s")):
        base = results[f"plain {label}"]
        print(f"  {'plain Fabric SFTP to the host':32} {label:9} {base:8.1f} {unit}")
        for method in ("nsenter", "setns"):
            value = results[f"{method} {label}"]
            print(
                f"  {'fabns into container (' + method + ')':32} {label:9} {value:8.1f} {unit}"
                f"  x{value / base:4.2f}"
            )


# -- groups (bench/groups.py, when it is there) --------------------------------------------------


def groups(harness: Harness, count: int, rounds: int) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import groups as module
    except ImportError:
        print("\ngroups: skipped (no bench/groups.py)")
        return
    directory = Path(tempfile.mkdtemp(prefix="fabns-bench-groups-", dir="/tmp"))
    directory.chmod(0o755)
    containers = []
    try:
        containers = module.start_containers(directory, count)
        rows = module.measure(harness, containers, rounds)
    finally:
        for ctr in containers:
            ctr.stop()
        shutil.rmtree(directory, ignore_errors=True)
    module.print_table(rows, rounds)


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="commands each (0: skip)")
    parser.add_argument("--threads", type=int, default=16, help="threads on one connection")
    parser.add_argument("--gib", type=float, default=1, help="GiB of output (0: skip)")
    parser.add_argument("--resolves", type=int, default=20, help="fresh connections (0: skip)")
    parser.add_argument("--mib", type=int, default=256, help="large transfer MiB (0: skip)")
    parser.add_argument("--small", type=int, default=1000, help="number of small files")
    parser.add_argument("--groups", type=int, default=32, help="containers (0: skip)")
    parser.add_argument("--groups-rounds", type=int, default=3)
    parser.add_argument("--users", default=",".join(ACCOUNTS), help="accounts, comma-separated")
    parser.add_argument("--big-output-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_output_child:
        big_output_child(json.loads(args.big_output_child))
        return
    users = [u for u in args.users.split(",") if u]
    harness = Harness.start()
    directory = Path(tempfile.mkdtemp(prefix="fabns-bench-", dir="/tmp"))
    directory.chmod(0o755)  # alice's sshd reads her key below it
    try:
        with bench_sshd(directory) as server:
            print(f"accounts: {login_shells(server)}")
            print(f"host python: {sys_python()}; client: Python {sys.version.split()[0]}")
            for user in users if args.rounds else ():
                rows = per_command(harness, server, user, args.rounds, args.threads)
                print_per_command(user, rows, args.rounds, args.threads)
            if args.gib:
                for user in users:
                    print(f"\n{user}: {args.gib:g} GiB of output (head -c), a fresh client each:")
                    for line in big_output(harness, server, user, args.gib):
                        print(line)
            if args.resolves:
                print(
                    f"\nroot: the first command on a fresh connection, median of "
                    f"{args.resolves} (connect excluded):"
                )
                for line in resolves(harness, server, args.resolves):
                    print(line)
            if args.mib or args.small:
                transfers(harness, server, args.mib, args.small)
        if args.groups:
            groups(harness, args.groups, args.groups_rounds)
    finally:
        harness.stop()
        shutil.rmtree(directory, ignore_errors=True)


def sys_python() -> str:
    done = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
