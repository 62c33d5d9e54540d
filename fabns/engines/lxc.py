"""``engine="lxc"``: LXC containers, root's or an unprivileged owner's."""

from __future__ import annotations

from typing import ClassVar

from fabns.engines.base import Engine, Found
from fabns.errors import ContainerStopped
from fabns.host import HostResult


def parse_lxc_ls(text: str) -> dict[str, str]:
    """``lxc-ls -1fFNAME,PID`` output (header, padded columns, ``-`` when stopped)."""
    rows: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


class Lxc(Engine):
    """Leader from ``lxc-ls -1fFNAME,PID``, run as the owner when there is one."""

    name: ClassVar[str] = "lxc"
    tool: ClassVar[str] = "lxc-ls"
    per_user: ClassVar[bool] = True

    def argv(self, name: str) -> list[str]:
        return ["lxc-ls", "-1fFNAME,PID"]  # names are matched here, not by the tool

    def parse(self, name: str, result: HostResult) -> Found | None:
        if result.exited != 0:
            raise self.unavailable(result, "lxc-ls")
        pid = parse_lxc_ls(result.stdout).get(name)
        if pid is None:
            return None
        if not pid.isdigit():
            raise ContainerStopped(f"lxc container {name!r} on {self.host.name} is not running")
        return Found(self.name, name, int(pid), self.owner)
