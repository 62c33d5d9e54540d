"""``method="setns"``: the pushed Python helper calls setns(2) itself.

Works wherever nsenter's fixed rules do not (unprivileged owners, containers
that share some namespaces with the host), sets supplementary groups the way a
login does, and is safe for user-namespaced containers: it is non-dumpable
from before it opens the target until it execs the command, and closes every
host descriptor first. See ``fabns/remote/`` for what it does on the host.
"""

from __future__ import annotations

from typing import ClassVar

from fabns.accounts import Credentials
from fabns.helper import helper_command
from fabns.target import Leader
from fabns.ways.base import Call, HostCommand, WayIn


def credentials_request(credentials: Credentials) -> dict[str, object]:
    """The part of a helper request that says who to be inside, and where to start."""
    return {
        "uid": credentials.uid,
        "gid": credentials.gid,
        "groups": list(credentials.groups) if credentials.groups is not None else None,
        "cwd": credentials.home,
    }


def entry_request(
    mode: str, leader: Leader, nonce: str, credentials: Credentials
) -> dict[str, object]:
    """The part of a helper request that says what to enter and as whom."""
    return {
        "mode": mode,
        "nonce": nonce,
        "pid": leader.pid,
        "start_time": leader.start_time,
        "ns": dict(leader.namespaces),
        **credentials_request(credentials),
        "cgroups": True,
    }


def command_request(call: Call) -> dict[str, object]:
    """What runs ``call`` once entered: who, where, the environment and the argv."""
    return {
        **credentials_request(call.credentials),
        "env": dict(call.environment),
        "argv": [call.shell, "-c", call.command],
        "fallback_shell": "/bin/sh",
    }


class Setns(WayIn):
    """Enter with the helper, one process per command."""

    name: ClassVar[str] = "setns"

    def request(self, call: Call) -> dict[str, object]:
        return {
            **entry_request("exec", self.leader, self.nonce, call.credentials),
            **command_request(call),
        }

    def command(self, call: Call) -> HostCommand:
        return HostCommand(helper_command(self.python, self.request(call)))
