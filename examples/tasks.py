"""Invoke tasks over groups of containers: ``inv -r examples ...``; copy this and adapt.

Each task builds a `~fabns.ThreadingNamespaceGroup` from ``--hosts``: targets
``[user@]host[:port]/container`` (or ``/pid:N``), comma-separated, or
``@name`` for a list in the config (``fabns.groups.name`` in ``fabric.yaml``).
Containers on one host share one SSH connection::

    inv -r examples status  --hosts web1/app,web1/worker,web2/app
    inv -r examples release --hosts @web --version 1.2.3

A container where a step fails is left out of the next steps, the others go
on; the task then names the failed ones and exits non-zero.
"""

from __future__ import annotations

import io
import shlex
import sys
from typing import Any

from fabric.exceptions import GroupException
from invoke import Context, Exit, task

from fabns import NamespaceGroup, ThreadingNamespaceGroup

APP_DIR = "/srv/app"


class Rollout:
    """A group and the containers that failed so far."""

    def __init__(self, hosts: str) -> None:
        self.group: NamespaceGroup = ThreadingNamespaceGroup(*hosts.split(","))
        self.live = self.group
        self.failed: list[str] = []

    def step(self, method: str, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        """``group.method(...)`` on the containers still in the rollout; their results."""
        try:
            return dict(getattr(self.live, method)(*args, **kwargs))
        except GroupException as error:
            for c, failure in error.result.failed.items():
                print(f"{c.target_spec}: {type(failure).__name__}: {failure}", file=sys.stderr)
                self.failed.append(str(c.target_spec))
            self.live = ThreadingNamespaceGroup.from_connections(error.result.succeeded)
            return dict(error.result.succeeded)

    def __enter__(self) -> Rollout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.group.close()  # every member, and each host's SSH connection once
        if self.failed and exc[0] is None:
            raise Exit(f"failed in {len(self.failed)}: {', '.join(self.failed)}", code=1)


def show_releases(rollout: Rollout) -> None:
    results = rollout.step("run", f"cat {APP_DIR}/RELEASE 2>/dev/null || echo none", hide=True)
    for c, result in results.items():
        print(f"{c.target_spec}: release {result.stdout.strip()}")


@task(help={"hosts": "targets or @group, comma-separated"})
def status(c: Context, hosts: str) -> None:
    """The live release of every container."""
    with Rollout(hosts) as rollout:
        show_releases(rollout)


@task(help={"hosts": "targets or @group, comma-separated", "version": "release to switch to"})
def release(c: Context, hosts: str, version: str) -> None:
    """Roll a release out to every container at once, step by step."""
    directory = f"{APP_DIR}/releases/{version}"
    settings = f"[app]\nversion = {version}\n".encode()
    with Rollout(hosts) as rollout:
        rollout.step("sudo", f"mkdir -p {shlex.quote(directory)}", user="root")
        rollout.step("put", io.BytesIO(settings), f"{directory}/settings.ini", mode=0o640)
        link, live = shlex.quote(f"releases/{version}"), shlex.quote(version)
        rollout.step("run", f"cd {APP_DIR} && ln -sfn {link} current && echo {live} > RELEASE")
        show_releases(rollout)
