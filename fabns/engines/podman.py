"""``engine="podman"`` and ``engine="docker"``: containers by name, rootful or rootless."""

from __future__ import annotations

from typing import ClassVar

from fabns.engines.base import Engine, Found
from fabns.errors import ContainerStopped, EngineUnavailable
from fabns.host import HostResult


class Podman(Engine):
    """Leader from ``podman inspect -f '{{.State.Pid}}'`` (0 means stopped)."""

    name: ClassVar[str] = "podman"
    tool: ClassVar[str] = "podman"
    per_user: ClassVar[bool] = True

    def argv(self, name: str) -> list[str]:
        return [self.tool, "inspect", "--type", "container", "-f", "{{.State.Pid}}", "--", name]

    def parse(self, name: str, result: HostResult) -> Found | None:
        text = result.stdout.strip()
        if result.exited != 0:
            err = result.stderr.lower()
            if "no such" in err or "not found" in err:
                return None
            raise self.unavailable(result, f"{self.tool} inspect")
        if not text.isdigit():
            raise EngineUnavailable(f"{self.tool} inspect printed {text!r} for {name!r}")
        if int(text) == 0:
            raise ContainerStopped(
                f"{self.name} container {name!r} on {self.host.name} is not running"
            )
        return Found(self.name, name, int(text), self.owner)


class Docker(Podman):
    """The same lookup with the ``docker`` client."""

    name: ClassVar[str] = "docker"
    tool: ClassVar[str] = "docker"
    per_user: ClassVar[bool] = False
