"""``engine="machined"``: machines registered with systemd-machined (nspawn and others)."""

from __future__ import annotations

from typing import ClassVar

from fabns.engines.base import Engine, Found
from fabns.host import HostResult


class Machined(Engine):
    """Leader from ``machinectl show NAME -p Leader --value``."""

    name: ClassVar[str] = "machined"
    tool: ClassVar[str] = "machinectl"
    needs_root: ClassVar[bool] = False

    def argv(self, name: str) -> list[str]:
        return ["machinectl", "show", "-p", "Leader", "--value", "--", name]

    def parse(self, name: str, result: HostResult) -> Found | None:
        text = result.stdout.strip()
        if result.exited != 0:
            if "No machine" in result.stderr or "not known" in result.stderr:
                return None
            raise self.unavailable(result, "machinectl")
        if not text.isdigit() or int(text) <= 0:
            return None
        return Found(self.name, name, int(text), self.owner)
