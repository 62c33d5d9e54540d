"""Per-command cost of fabns against plain Fabric and raw OpenSSH, measured in one run.

Starts the test harness (throw-away sshd + busybox containers on 127.0.0.1),
then times ``true`` run ROUNDS times each way over an already open
connection, and prints medians and ratios. Run with ``inv bench``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable

from fabns.testing import Harness
from fabric import Connection

from fabns import NamespaceConnection


def timed(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm up (connect, resolve)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
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
    finally:
        harness.stop()
    print(f"median per command over {args.rounds} rounds (ms), ratios vs plain Fabric:")
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
