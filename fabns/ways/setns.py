"""``method="setns"``: the pushed Python helper calls setns(2) itself.

Works wherever nsenter's fixed rules do not (unprivileged owners, containers
that share some namespaces with the host) and sets supplementary groups the
way a login does. See ``fabns/_helper.py`` for what it does on the host.
"""

from __future__ import annotations

from typing import ClassVar

from fabns.helper import helper_command
from fabns.ways import Call, WayIn


class Setns(WayIn):
    """Enter with the helper, one process per command."""

    name: ClassVar[str] = "setns"

    def request(self, call: Call) -> dict[str, object]:
        creds = call.credentials
        return {
            "mode": "exec",
            "nonce": self.nonce,
            "pid": self.leader.pid,
            "start_time": self.leader.start_time,
            "ns": dict(self.leader.namespaces),
            "uid": creds.uid,
            "gid": creds.gid,
            "groups": list(creds.groups) if creds.groups is not None else None,
            "env": dict(call.environment),
            "cwd": creds.home,
            "argv": [call.shell, "-c", call.command],
            "fallback_shell": "/bin/sh",
            "cgroups": True,
        }

    def command(self, call: Call) -> str:
        return helper_command(self.python, self.request(call))
