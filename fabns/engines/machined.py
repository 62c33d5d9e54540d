"""``engine="machined"``: machines registered with systemd-machined (nspawn and others)."""

from __future__ import annotations

from typing import ClassVar

from fabns.engines.base import Engine, Found


class Machined(Engine):
    """Leader from ``machinectl show NAME -p Leader --value``."""

    name: ClassVar[str] = "machined"
    tool: ClassVar[str] = "machinectl"

    def find(self, name: str) -> Found | None:
        result = self.run(
            ["machinectl", "show", "-p", "Leader", "--value", "--", name], root=False
        )
        text = result.stdout.strip()
        if result.exited != 0:
            if "No machine" in result.stderr or "not known" in result.stderr:
                return None
            raise self.unavailable(result, "machinectl")
        if not text.isdigit() or int(text) <= 0:
            return None
        return Found(self.name, name, int(text), self.owner)
