"""Ways into a target: one module per way in, one table.

`ways` maps each ``method=`` name to its class: `~fabns.ways.nsenter.Nsenter`,
`~fabns.ways.setns.Setns`, `~fabns.ways.lxc_attach.LxcAttach`, all built on
`fabns.ways.base`. Add a way in by adding a module and listing its class here.
"""

from __future__ import annotations

from fabns.ways.base import Call, HostCommand, ShellWayIn, WayIn, kill_group_command
from fabns.ways.lxc_attach import LxcAttach
from fabns.ways.nsenter import Nsenter
from fabns.ways.setns import Setns

#: Every way in, by ``method=`` name.
WAYS: dict[str, type[WayIn]] = {way.name: way for way in (Nsenter, Setns, LxcAttach)}


def ways() -> dict[str, type[WayIn]]:
    """Every way in, by ``method=`` name."""
    return dict(WAYS)


__all__ = ["WAYS", "Call", "HostCommand", "ShellWayIn", "WayIn", "kill_group_command", "ways"]
