"""Deploy tasks that run inside containers: a fabfile for ``fabns``; copy this and adapt.

``fabns`` is ``fab`` with targets inside containers, so these are ordinary
Fabric tasks; each gets a `~fabns.NamespaceConnection` into one container::

    fabns -r examples -H web1/app,web2/app status
    fabns -r examples -H web1/app,web2/app release --version 1.2.3
    fabns -r examples -H @web --parallel 4 release --version 1.2.3   # fabns.groups.web

Everything a task does -- commands, ``sudo(user=...)``, file uploads --
happens inside the container. The functions are plain Fabric tasks, so
`tasks.py`, `deploy.py` and `test_deploy.py` call them with a connection too.
"""

from __future__ import annotations

import io
import shlex

from fabric import Connection, task

APP_DIR = "/srv/app"


@task
def status(c: Connection) -> str:
    """Print (and return) where the task ran and which release is live."""
    result = c.run(f"hostname; cat {APP_DIR}/RELEASE 2>/dev/null || echo none", hide=True)
    host, release_ = result.stdout.split()
    line = f"{host}: release {release_}"
    print(line)
    return line


@task(help={"version": "the release to switch to", "settings": "settings.ini contents"})
def release(c: Connection, version: str, settings: str = "") -> str:
    """Upload the release's settings atomically and switch the live release to it."""
    directory = f"{APP_DIR}/releases/{version}"
    c.sudo(f"mkdir -p {shlex.quote(directory)}", user="root")
    content = settings or f"[app]\nversion = {version}\n"
    c.put(io.BytesIO(content.encode()), f"{directory}/settings.ini", mode=0o640)
    with c.cd(APP_DIR):
        c.run(f"ln -sfn {shlex.quote('releases/' + version)} current")
        c.run(f"echo {shlex.quote(version)} > RELEASE")
    return str(status(c))
