"""Deploy tasks that run inside containers on remote hosts: copy this and adapt.

Run with Invoke (``--hosts`` takes ``[user@]host[:port]/container`` targets, comma-separated)::

    inv -r examples deploy.status   --hosts root@web1/app,root@web2/app
    inv -r examples deploy.release --hosts root@web1/app --version 1.2.3

Each task gets one `NamespaceConnection` per target; everything it does --
commands, ``sudo(user=...)``, file uploads -- happens inside the container.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from fabric import Connection
from invoke import Collection, task
from invoke.context import Context

from fabns import NamespaceConnection

APP_DIR = "/srv/app"
APP_USER = "app"


def connections(hosts: str) -> Iterator[NamespaceConnection]:
    """One connection per ``[user@]host[:port]/container`` (or ``/pid:N``) target."""
    for target in filter(None, hosts.split(",")):
        yield NamespaceConnection.from_spec(target)


def status(c: Connection) -> str:
    """Where am I, and what release is live?"""
    result = c.run(f"hostname; cat {APP_DIR}/RELEASE 2>/dev/null || echo none", hide=True)
    host, release = result.stdout.split()
    return f"{host}: release {release}"


def release(c: Connection, version: str, settings: bytes) -> str:
    """Upload settings atomically, switch the release marker, as the app user where it matters."""
    c.sudo(f"mkdir -p {APP_DIR}/releases/{version}", user="root")
    c.put(io.BytesIO(settings), f"{APP_DIR}/releases/{version}/settings.ini", mode=0o640)
    with c.cd(APP_DIR):
        c.run(f"ln -sfn releases/{version} current && echo {version} > RELEASE")
    return status(c)


@task(help={"hosts": "targets: [user@]host[:port]/container, comma-separated"})
def status_task(ctx: Context, hosts: str) -> None:
    """Print each target's hostname and live release."""
    for c in connections(hosts):
        with c:
            print(status(c))


@task(help={"hosts": "targets", "version": "release to switch to"})
def release_task(ctx: Context, hosts: str, version: str) -> None:
    """Roll a release out to every target, one after the other."""
    for c in connections(hosts):
        with c:
            print(release(c, version, f"[app]\nversion = {version}\n".encode()))


ns = Collection("deploy")
ns.add_task(status_task, "status")
ns.add_task(release_task, "release")
