"""The ``fabns`` command: ``fab`` plus containers, an interactive shell, copies, a demo.

::

    fabns -H web1/app,web2/app deploy          # task 'deploy' of ./fabfile.py in each container
    fabns -H @web --parallel 4 -- uname -a     # one command in a configured group
    fabns shell root@web1/app                  # interactive shell in container "app" on web1
    fabns shell web1 --pid 4242 --ns-user www  # by PID, as www inside
    fabns cp app.conf web1/app:/etc/app/       # a file into a container (or out of it)
    fabns demo                                 # end-to-end demo on this machine (root)

``shell``, ``cp`` and ``demo`` are recognised as the first word; anything else
is Fabric's ``fab`` command line (`fabns.program`), so a task of one of those
names runs as ``fabns -H TARGET shell``. Targets are ``[user@]host[:port]/container``
or ``.../pid:N``; SSH settings come from ``~/.ssh/config`` (``-S``/``-F`` for
another file), ``-i`` and Fabric's config files, as with ``fab``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

SHELL_EXAMPLES = """\
examples:
  fabns shell root@web1/app                    shell in container "app" (engine auto)
  fabns shell web1/app --engine lxc --owner alice
  fabns shell admin@web1:2222 --pid 4242 --ns-user www
"""

CP_EXAMPLES = """\
A side written [user@]host[:port]/container:path (or .../pid:N:path) is inside that
target, the other side is local; paths starting with /, ./, ../ or ~ are always local.
Relative paths inside are relative to the user's home there.

examples:
  fabns cp app.conf web1/app:/etc/app/app.conf     into the container, atomically
  fabns cp web1/app:/var/log/app.log logs/         out of it, into logs/app.log
  fabns cp -i key image.tar root@web1:2222/pid:4242:/srv/
"""


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The flags ``fabns shell`` and ``fabns cp`` share (``fabns -H`` has Fabric's own)."""
    group = parser.add_argument_group("target and connection")
    group.add_argument("--pid", type=int, help="enter the namespaces of this host PID")
    group.add_argument("--container", help="container name, when the target names none")
    group.add_argument(
        "--engine",
        choices=["auto", "machined", "lxc", "podman", "docker"],
        help="how to find the container by name (default: auto, every engine installed)",
    )
    group.add_argument("--owner", help="host user owning the container (unprivileged LXC/Podman)")
    group.add_argument(
        "--method",
        choices=["auto", "nsenter", "setns", "lxc-attach"],
        help="way in (default: auto)",
    )
    group.add_argument("--ns-user", help="user (name or uid) to be inside the container")
    group.add_argument("--ns-group", help="group (name or gid) to be inside the container")
    group.add_argument(
        "--persistent",
        action="store_true",
        default=None,
        help="enter once and run everything through that session",
    )
    group.add_argument("-i", "--identity", action="append", help="SSH private key file")
    group.add_argument("-S", "-F", "--ssh-config", help="SSH config file (default ~/.ssh/config)")
    group.add_argument("-t", "--connect-timeout", type=float, help="SSH connect timeout (s)")
    group.add_argument(
        "--prompt-for-sudo-password",
        action="store_true",
        help="ask for the host sudo password first (used only where sudo wants one)",
    )
    group.add_argument(
        "--sudo-password-env",
        metavar="VAR",
        help="environment variable holding the host sudo password (never a flag value)",
    )


def connector(args: argparse.Namespace) -> Any:
    """A function making the `NamespaceConnection` for a target string, from the flags."""
    from fabns import Config, NamespaceConnection

    overrides: dict[str, Any] = {}
    if args.sudo_password_env:
        overrides["sudo"] = {"password": os.environ.get(args.sudo_password_env, "")}
    if args.prompt_for_sudo_password:
        overrides["sudo"] = {"password": getpass.getpass("Desired 'sudo.password' config value: ")}
    config = Config(overrides=overrides, runtime_ssh_path=args.ssh_config)
    if args.ssh_config:
        config.load_ssh_config()
    connect_kwargs: dict[str, Any] = {}
    if args.identity:
        connect_kwargs["key_filename"] = args.identity
    options = {
        "pid": args.pid,
        "container": args.container,
        "engine": args.engine,
        "owner": args.owner,
        "method": args.method,
        "uid": _id(args.ns_user),
        "gid": _id(args.ns_group),
        "persistent": args.persistent,
    }

    def connect(target: str) -> Any:
        return NamespaceConnection.from_spec(
            target,
            config=config,
            connect_kwargs=connect_kwargs,
            connect_timeout=args.connect_timeout,
            **{k: v for k, v in options.items() if v is not None},
        )

    return connect


def _id(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isascii() and value.isdecimal() else value


def _failed(error: BaseException) -> int:
    print(f"fabns: {error}", file=sys.stderr)
    return 2 if isinstance(error, ValueError) else 1


def shell_main(argv: Sequence[str]) -> int:
    """``fabns shell TARGET``: an interactive login shell inside the target."""
    parser = argparse.ArgumentParser(
        prog="fabns shell",
        description="Open an interactive login shell inside a container on a remote host.",
        epilog=SHELL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", help="[user@]host[:port][/container or /pid:N]")
    add_connection_options(parser)
    args = parser.parse_args(argv)
    import paramiko

    from fabns import NamespaceError

    try:
        with connector(args)(args.target) as c:
            result = c.shell()
    except (NamespaceError, ValueError, OSError, paramiko.SSHException) as error:
        return _failed(error)
    return int(result.exited or 0)


def cp_main(argv: Sequence[str]) -> int:
    """``fabns cp SRC DST``: a file into or out of a target, atomically."""
    parser = argparse.ArgumentParser(
        prog="fabns cp",
        description="Copy a file into or out of a container on a remote host, atomically.",
        epilog=CP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="local path, or [user@]host[:port]/container:path")
    parser.add_argument("destination", help="local path, or [user@]host[:port]/container:path")
    add_connection_options(parser)
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress", action="store_true", default=None, help="always draw a progress bar"
    )
    shown.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="never draw one (default: on a terminal, for files of 1 MiB or more)",
    )
    args = parser.parse_args(argv)
    import paramiko

    from fabns import NamespaceError
    from fabns.copy import copy

    try:
        copy(args.source, args.destination, connector(args), progress=args.progress)
    except (NamespaceError, ValueError, OSError, paramiko.SSHException) as error:
        return _failed(error)
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
    if args[:1] == ["cp"]:
        return cp_main(args[1:])
    if args[:1] == ["demo"]:
        return demo()
    from fabns.program import make_program

    make_program().run(["fabns", *args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
