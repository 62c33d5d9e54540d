"""Groups: one command in 1 and N containers on one host, over one SSH transport.

Against plain Fabric: N ``fabric.Connection`` s to the same host, one
handshake each. Every figure is the wall time of one ``true`` from nothing
(connect, log in, resolve each target, run), the median of ``rounds`` runs;
"warm" is a second command over the connections already open.

``python bench/groups.py`` starts the harness and N extra busybox containers
and prints the table; ``bench/run.py`` calls `measure` and `print_table`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric import Connection, SerialGroup, ThreadingGroup

from fabns import NamespaceConnection, NamespaceGroup, ThreadingNamespaceGroup
from fabns.testing import Container, Harness

#: (what, milliseconds, SSH handshakes) -- one row of the table.
Row = tuple[str, float, int]


def _median_ms(fn: Callable[[], int], rounds: int) -> tuple[float, int]:
    """Median wall time of ``fn`` (which returns its number of handshakes) over ``rounds``."""
    samples, handshakes = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        handshakes = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, handshakes


def _transports(group: list[Connection]) -> int:
    return len({id(c.transport) for c in group if c.transport is not None})


def measure(harness: Harness, containers: list[Container], rounds: int = 3) -> list[Row]:
    """The table's rows for ``containers`` (all root's, on the harness's host).

    One command in one container; in all of them with a `ThreadingNamespaceGroup`
    (8 at once, the default, and all at once), a serial `NamespaceGroup`, and
    threads with a transport (and handshake) per container;
    plain Fabric's `ThreadingGroup` and `SerialGroup` of as many connections to
    the host; then the same command again over the open connections.
    """
    kwargs = harness.sshd.connection_kwargs("root")
    login = {"connect_kwargs": kwargs["connect_kwargs"], "method": "nsenter"}
    address = f"root@{kwargs['host']}:{kwargs['port']}"
    targets = [f"{address}/pid:{ctr.leader_pid}" for ctr in containers]
    n = len(targets)
    rows: list[Row] = []

    def fabns_one() -> int:
        with NamespaceConnection.from_spec(targets[0], **login) as c:
            c.run("true", hide=True, in_stream=False)
            return 1

    def fabns_group(kind: type[NamespaceGroup], **options: Any) -> Callable[[], int]:
        def go() -> int:
            with kind(*targets, **login, **options) as group:
                group.run("true", hide=True, in_stream=False)
                return _transports(group)

        return go

    def fabric_group(kind: type[SerialGroup] | type[ThreadingGroup]) -> Callable[[], int]:
        hosts = [f"{address}"] * n

        def go() -> int:
            with kind(*hosts, connect_kwargs=kwargs["connect_kwargs"]) as group:
                group.run("true", hide=True, in_stream=False)
                return _transports(group)

        return go

    plans: list[tuple[str, Callable[[], int]]] = [
        ("fabns: 1 container", fabns_one),
        (f"fabns: {n} containers, threads (8 at once)", fabns_group(ThreadingNamespaceGroup)),
        (
            f"fabns: {n} containers, threads ({n} at once)",
            fabns_group(ThreadingNamespaceGroup, workers=n),
        ),
        (f"fabns: {n} containers, serial", fabns_group(NamespaceGroup)),
        (
            f"fabns: {n} containers, threads (8), a transport each",
            fabns_group(ThreadingNamespaceGroup, share=False),
        ),
        (f"plain Fabric: {n} connections to the host, threads", fabric_group(ThreadingGroup)),
        (f"plain Fabric: {n} connections to the host, serial", fabric_group(SerialGroup)),
    ]
    for what, fn in plans:
        ms, handshakes = _median_ms(fn, rounds)
        rows.append((what, ms, handshakes))

    # a second command over connections already open and targets already resolved
    with ThreadingNamespaceGroup(*targets, **login, workers=n) as group:
        group.run("true", hide=True, in_stream=False)
        ms, _ = _median_ms(lambda: len(group.run("true", hide=True, in_stream=False)), rounds)
        rows.append((f"fabns: {n} containers, threads, warm", ms, _transports(group)))
    with ThreadingGroup(*[address] * n, connect_kwargs=kwargs["connect_kwargs"]) as plain:
        plain.run("true", hide=True, in_stream=False)
        ms, _ = _median_ms(lambda: len(plain.run("true", hide=True, in_stream=False)), rounds)
        rows.append((f"plain Fabric: {n} connections, threads, warm", ms, _transports(plain)))
    return rows


def start_containers(directory: Path, count: int) -> list[Container]:
    """``count`` plain busybox containers (root's), ``fabns-g0`` ... in ``directory``."""
    started: list[Container] = []
    try:
        for i in range(count):
            started.append(Container.start(directory, f"fabns-g{i}", "plain"))
    except BaseException:
        for ctr in started:
            ctr.stop()
        raise
    return started


def print_table(rows: list[Row], rounds: int) -> None:
    print(f"\none command from nothing (connect, resolve, run), median of {rounds} (ms):")
    for what, ms, handshakes in rows:
        print(f"  {what:52} {ms:8.1f} ms  {handshakes:3d} SSH handshake(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    harness = Harness.start()
    directory = Path(tempfile.mkdtemp(prefix="fabns-bench-groups-", dir="/tmp"))
    directory.chmod(0o755)
    containers: list[Container] = []
    try:
        started = time.monotonic()
        containers = start_containers(directory, args.containers)
        print(f"{len(containers)} containers started in {time.monotonic() - started:.1f} s")
        rows = measure(harness, containers, args.rounds)
    finally:
        for ctr in containers:
            ctr.stop()
        shutil.rmtree(directory, ignore_errors=True)
        harness.stop()
    print_table(rows, args.rounds)


if __name__ == "__main__":
    main()
