"""A fake `HostSession` for unit tests: canned answers for fabns's host steps, no SSH, no root.

It answers the facts step, the probe (a report built by `report`) and engine
lookups by matching what the script runs, and records every script it was
asked to run, so tests can check what fabns *would* run on a host.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fabns.host import HOST_TOOLS, Elevation, HostResult, HostSession

TOOLS = {t: f"/usr/bin/{t}" for t in HOST_TOOLS}
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1002:1002:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\nwheel:x:10:app\napp:x:1002:\n"
NO_ELEVATION = Elevation()


def report(
    *,
    pid: int = 4242,
    userns: bool = False,
    owners: list[int] | None = None,
    error: dict[str, Any] | None = None,
    file_errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A probe report like the helper's, for a leader in new namespaces."""
    ns = {"mnt": 11, "pid": 12, "uts": 13, "ipc": 14, "net": 15}
    own = {"mnt": 1, "pid": 2, "uts": 3, "ipc": 4, "net": 5, "user": 6}
    ns["user"] = 16 if userns else 6
    target: dict[str, Any] = {
        "exists": True,
        "start_time": "987654",
        "comm": "sh",
        "setgroups": "allow",
        "uid_map": "0 100000 65536\n" if userns else "0 0 4294967295\n",
        "gid_map": "0 100000 65536\n" if userns else "0 0 4294967295\n",
        "environ": "PATH=/bin\0container=fake\0",
        "ns": ns,
        "userns": {"own": not userns, "owners": owners or [], "reaches_own": True},
        "inside": {
            "files": {"/etc/passwd": PASSWD, "/etc/group": GROUP},
            "file_errors": file_errors or {},
        },
    }
    if error is not None:
        target["error"] = error
    return {"uid": 0, "euid": 0, "self_ns": own, "target": target}


#: One lookup (a quoted script) in the script of `fabns.engines.batch.lookups_script`.
LOOKUP = re.compile(r"fabns_record \d+ (.*?)\); /bin/cat;")


def framed(results: list[HostResult]) -> str:
    """What the host prints for engine lookups run in one step (`fabns.engines.batch`)."""

    def put(tag: str, text: str) -> str:
        return f"{tag} {base64.b64encode(text.encode()).decode()}\n"

    records = [
        f"lookup {i}\n{put('o', r.stdout)}x {r.exited}\n{put('e', r.stderr)}"
        for i, r in enumerate(results)
    ]
    return "".join(records) + f"end {len(results)}\n"


@dataclass
class FakeConnection:
    host: str = "web1"
    config: Any = None


@dataclass
class FakeHost(HostSession):
    """A host session whose steps are answered by `answer` instead of a host."""

    uid: int = 0
    name_: str = "root"
    probe: dict[str, Any] = field(default_factory=report)
    lookups: dict[str, HostResult] = field(default_factory=dict)
    ran: list[tuple[str, str]] = field(default_factory=list)
    on_run: Callable[[str], HostResult | None] | None = None

    def __post_init__(self) -> None:
        HostSession.__init__(self, FakeConnection())

    def run(self, script: str, elevation: Elevation = NO_ELEVATION) -> HostResult:
        self.ran.append((script, elevation.mode))
        if self.on_run is not None and (custom := self.on_run(script)) is not None:
            return custom
        if script.startswith("id -u; id -un;"):
            paths = "\n".join(TOOLS[t] for t in HOST_TOOLS)
            return HostResult(0, f"{self.uid}\n{self.name_}\n{paths}\n", "")
        if script.startswith("getent passwd"):
            return HostResult(0, "alice:x:1001:1001::/home/alice:/bin/sh\n", "")
        if " -c " in script and "python3" in script:
            return HostResult(0, json.dumps(self.probe) + "\n", "")
        if lookups := LOOKUP.findall(script):  # engine lookups in one step: answer each
            answers = [self.run(shlex.split(lookup)[0], elevation) for lookup in lookups]
            return HostResult(0, framed(answers), "")
        for needle, result in self.lookups.items():
            if needle in script:
                return result
        return HostResult(1, "", f"fake host: no answer for {script[:80]!r}")
