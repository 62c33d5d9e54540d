"""The ``fabns`` command line.

``fabns demo`` is the end-to-end example: it starts a throw-away sshd on
127.0.0.1 and a busybox container (needs root and the packages that
``scripts/install.sh`` installs), runs commands inside the container through
a `NamespaceConnection`, prints what happened, and removes everything it
started.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from fabns import __version__


def demo() -> int:
    """Run the end-to-end demo; returns the exit status."""
    from fabns import NamespaceConnection, TargetChanged
    from fabns.testing import Harness

    def ssh(user: str) -> dict[str, Any]:
        return dict(harness.sshd.connection_kwargs(user))

    started = time.monotonic()
    print("fabns demo: starting a throw-away sshd on 127.0.0.1 and busybox containers ...")
    harness = Harness.start()
    try:
        ctr = harness.containers["plain"]
        print(f"  sshd on 127.0.0.1:{harness.sshd.port} (PID {harness.sshd.pid})")
        print(f"  container {ctr.name!r}: leader PID {ctr.leader_pid}")
        for method in ("nsenter", "setns"):
            c = NamespaceConnection(**ssh("root"), pid=ctr.leader_pid, method=method)
            with c:
                print(f"\n[{method}] NamespaceConnection('root@127.0.0.1', pid={ctr.leader_pid})")
                r = c.run("hostname; id; pwd; echo $FABNS_CTR", hide=True)
                for line in r.stdout.splitlines():
                    print(f"  inside> {line}")
                r = c.sudo("id -un; echo $HOME", user="alice", hide=True)
                print(f"  c.sudo(user='alice') -> {r.stdout.split()}")
                with c.cd("/tmp"):
                    c.run("echo written inside > only-in-container.txt")
                on_host = os.path.exists("/tmp/only-in-container.txt")
                print(f"  wrote /tmp/only-in-container.txt inside; on the host's /tmp: {on_host}")
                print(
                    f"  way in: {c.method_name}, leader PID {c.target.pid}, "
                    f"namespaces entered: {', '.join(c.target.differing)}"
                )
        c = NamespaceConnection(**ssh("root"), pid=ctr.leader_pid)
        with c:
            c.run("true")
            ctr.restart()
            try:
                c.run("echo this must not run")
            except TargetChanged as error:
                print(f"\nafter a container restart fabns refuses to run: {error}")
        owned = harness.containers["alice-subid"]
        c = NamespaceConnection(**ssh("alice"), pid=owned.leader_pid)
        with c:
            r = c.run("hostname; id -u", hide=True)
            print(f"\nalice (no sudo) into her own user-namespaced container: {r.stdout.split()}")
    finally:
        harness.stop()
    print(
        f"\nfabns demo: done in {time.monotonic() - started:.1f}s; everything it started is gone."
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fabns`` console script."""
    parser = argparse.ArgumentParser(
        prog="fabns",
        description="Fabric connections that run inside Linux namespaces and containers.",
        epilog="example: sudo fabns demo   # end-to-end run on this machine (root, Debian)",
    )
    parser.add_argument("--version", action="version", version=f"fabns {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="start a throw-away sshd and container, run commands inside")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
