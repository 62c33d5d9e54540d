"""The ``fabns`` command line: shells and one-off commands inside containers.

::

    fabns shell root@web1/app                 # interactive shell in container "app" on web1
    fabns shell web1 --pid 4242 --ns-user www # by PID, as www inside
    fabns -H web1/app,web2/app -- uname -a    # one command in several containers
    fabns demo                                # end-to-end demo on this machine (root)

Targets are ``[user@]host[:port][/container]``; ``host/pid:N`` or ``--pid``
names a process instead of a container. SSH settings come from ``~/.ssh/config`` (``-F`` for
another file), ``-i`` and Fabric's config files, as with ``fab``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from fabns import __version__

EXAMPLES = """\
examples:
  fabns shell root@web1/app                    shell in container "app" (engine auto)
  fabns shell web1/app --engine lxc --owner alice
  fabns shell admin@web1:2222 --pid 4242 --ns-user www
  fabns -H web1/app,web2/app -- uname -a       run one command in each target
  fabns -H web1/pid:4242,web2/pid:77 --method setns -- id
  sudo fabns demo                              end-to-end demo on this machine
"""


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The flags shared by ``fabns shell`` and ``fabns -H``."""
    group = parser.add_argument_group("target and connection")
    group.add_argument("--pid", type=int, help="enter the namespaces of this host PID")
    group.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "machined", "lxc", "podman", "docker"],
        help="how to find the container by name (default: auto, every engine installed)",
    )
    group.add_argument("--owner", help="host user owning the container (unprivileged LXC/Podman)")
    group.add_argument(
        "--method",
        default="auto",
        choices=["auto", "nsenter", "setns", "lxc-attach"],
        help="way in (default: auto)",
    )
    group.add_argument("--ns-user", help="user (name or uid) to be inside the container")
    group.add_argument("--ns-group", help="group (name or gid) to be inside the container")
    group.add_argument("-i", "--identity", action="append", help="SSH private key file")
    group.add_argument("-F", "--ssh-config", help="SSH config file (default ~/.ssh/config)")
    group.add_argument("-t", "--connect-timeout", type=float, help="SSH connect timeout (s)")
    group.add_argument(
        "--sudo-password-env",
        metavar="VAR",
        help="environment variable holding the host sudo password (never a flag value)",
    )


def target_spec(text: str, args: argparse.Namespace) -> Any:
    """The `~fabns.spec.TargetSpec` for one command-line target and the flags."""
    from fabns.spec import TargetSpec

    return TargetSpec.parse(
        text,
        pid=args.pid,
        engine=args.engine,
        owner=args.owner,
        method=args.method,
        uid=_id(args.ns_user),
        gid=_id(args.ns_group),
    )


def label(spec: Any) -> str:
    """How output lines of a target are prefixed: ``host[:port]/container``."""
    return str(spec.replace(user=None))


def connect(spec: Any, args: argparse.Namespace) -> Any:
    """A `NamespaceConnection` for one command-line target."""
    from fabns import Config, NamespaceConnection

    overrides: dict[str, Any] = {}
    if args.sudo_password_env:
        overrides["sudo"] = {"password": os.environ.get(args.sudo_password_env, "")}
    config = Config(overrides=overrides, runtime_ssh_path=args.ssh_config)
    if args.ssh_config:
        config.load_ssh_config()
    connect_kwargs: dict[str, Any] = {}
    if args.identity:
        connect_kwargs["key_filename"] = args.identity
    return NamespaceConnection.from_spec(
        spec, config=config, connect_kwargs=connect_kwargs, connect_timeout=args.connect_timeout
    )


def _id(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isascii() and value.isdecimal() else value


def shell_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fabns shell",
        description="Open an interactive login shell inside a container on a remote host.",
        epilog="example: fabns shell root@web1/app   or   fabns shell web1 --pid 4242",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", help="[user@]host[:port][/container or /pid:N]")
    add_connection_options(parser)
    args = parser.parse_args(argv)
    from fabns import NamespaceError

    try:
        with connect(target_spec(args.target, args), args) as c:
            result = c.shell()
    except (NamespaceError, ValueError) as error:
        print(f"fabns: {error}", file=sys.stderr)
        return 2
    return int(result.exited or 0)


class Prefixed:
    """A text stream that prefixes every line written to ``stream``."""

    def __init__(self, stream: IO[str], prefix: str, lock: threading.Lock) -> None:
        self.stream = stream
        self.prefix = prefix
        self.lock = lock
        self.partial = ""

    def write(self, text: str) -> int:
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        if lines:
            with self.lock:
                self.stream.write("".join(f"{self.prefix}{line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.write("\n")
        with self.lock:
            self.stream.flush()


def run_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fabns",
        description=(
            "Fabric connections that run inside Linux namespaces and containers.\n"
            "Run one command in each target: fabns -H TARGETS [options] -- COMMAND...\n"
            "Other commands: fabns shell TARGET (interactive shell), fabns demo."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fabns {__version__}")
    parser.add_argument(
        "-H", "--hosts", help="comma-separated targets, each [user@]host[:port][/container|/pid:N]"
    )
    add_connection_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not args.hosts or not command:
        parser.print_help()
        return 0 if not argv else 2
    from fabns import NamespaceError
    from fabns.quoting import join

    text = command[0] if len(command) == 1 else join(command)
    lock = threading.Lock()
    failures: list[str] = []
    targets = [t for t in args.hosts.split(",") if t]
    for text_target in targets:
        name = text_target
        try:
            spec = target_spec(text_target, args)
            name = label(spec)
            out = Prefixed(sys.stdout, f"[{name}] ", lock)
            err = Prefixed(sys.stderr, f"[{name}] ", lock)
            with connect(spec, args) as c:
                result = c.run(text, warn=True, out_stream=out, err_stream=err, in_stream=False)
            out.flush()
            err.flush()
            if result.exited != 0:
                failures.append(f"{name} (exit {result.exited})")
        except (NamespaceError, ValueError, OSError) as error:
            print(f"[{name}] fabns: {error}", file=sys.stderr)
            failures.append(f"{name} ({type(error).__name__})")
    if failures:
        print(
            f"fabns: {len(failures)} of {len(targets)} targets failed: {', '.join(failures)}",
            file=sys.stderr,
        )
        return 1
    return 0


def demo() -> int:
    """Run the end-to-end demo; returns the exit status."""
    import io

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
                c.put(io.BytesIO(b"written by fabns\n"), "/tmp/only-in-container.txt")
                on_host = os.path.exists("/tmp/only-in-container.txt")
                inside = c.run("cat /tmp/only-in-container.txt", hide=True).stdout.strip()
                print(f"  c.put() into the container's /tmp: {inside!r}; on the host: {on_host}")
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
        if "alice-subid" in harness.unavailable:
            print(f"\n(no user-namespaced containers here: {harness.unavailable['alice-subid']})")
        else:
            owned = harness.containers["alice-subid"]
            with NamespaceConnection(**ssh("alice"), pid=owned.leader_pid) as c:
                r = c.run("hostname; id -u", hide=True)
                print(
                    f"\nalice (no sudo) into her own user-namespaced container: {r.stdout.split()}"
                )
    finally:
        harness.stop()
    print(
        f"\nfabns demo: done in {time.monotonic() - started:.1f}s; everything it started is gone."
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fabns`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["shell"]:
        return shell_main(args[1:])
    if args[:1] == ["demo"]:
        return demo()
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
