"""Per-command cost of fabns against plain Fabric and raw OpenSSH, measured in one run.

Starts the test harness (throw-away sshd + busybox containers on 127.0.0.1),
then times ``true`` run ROUNDS times each way over an already open
connection, and prints medians and ratios. Run with ``inv bench``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fabric import Connection

from fabns import NamespaceConnection
from fabns.testing import Harness


def timed(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm up (connect, resolve)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


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


def transfers(harness: Harness, mib: int, small: int) -> None:
    """put/get of one large file and many small ones, container vs plain SFTP to the host."""
    kw = harness.sshd.connection_kwargs("root")
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--mib", type=int, default=256, help="size of the large transfer")
    parser.add_argument("--small", type=int, default=1000, help="number of small files")
    args = parser.parse_args()
    harness = Harness.start()
    rows: list[tuple[str, str, float]] = []
    try:
        sshd = harness.sshd
        for user, key in (("root", "plain"), ("alice", "alice-subid")):
            pid = harness.containers[key].leader_pid
            kw = sshd.connection_kwargs(user)
            control = f"/tmp/fabns-bench-{user}.sock"
            ssh = [
                "ssh", "-F", "/dev/null", "-p", str(sshd.port), "-i", str(sshd.client_key),
                "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                "-o", "BatchMode=yes", "-o", "ControlMaster=auto",
                "-o", f"ControlPath={control}", "-o", "ControlPersist=60",
                f"{user}@127.0.0.1",
            ]  # fmt: skip
            rows.append(
                (user, "raw OpenSSH (ControlMaster)",
                 timed(lambda ssh=ssh: subprocess.run([*ssh, "true"], check=True), args.rounds))
            )  # fmt: skip
            subprocess.run([*ssh[:-1], "-O", "exit", ssh[-1]], capture_output=True)
            with Connection(**kw) as plain:
                rows.append(
                    (user, "plain Fabric run() on the host",
                     timed(lambda: plain.run("true", hide=True), args.rounds))
                )  # fmt: skip
            for method in ("nsenter", "setns"):
                with NamespaceConnection(**kw, pid=pid, method=method) as c:
                    rows.append(
                        (user, f"fabns run() via {method}",
                         timed(lambda: c.run("true", hide=True), args.rounds))
                    )  # fmt: skip
        if args.mib or args.small:
            transfers(harness, args.mib, args.small)
    finally:
        harness.stop()
    print(f"\nmedian per command over {args.rounds} rounds (ms), ratios vs plain Fabric:")
    for user in ("root", "alice"):
        base = next(ms for u, what, ms in rows if u == user and what.startswith("plain Fabric"))
        nsenter = next(ms for u, what, ms in rows if u == user and what.endswith("nsenter"))
        for u, what, ms in rows:
            if u == user:
                print(f"  {user:6} {what:32} {ms:8.1f} ms  x{ms / base:5.2f}")
        setns = next(ms for u, what, ms in rows if u == user and what.endswith("setns"))
        print(f"  {user:6} setns / nsenter per command: x{setns / nsenter:.2f}")


if __name__ == "__main__":
    main()
