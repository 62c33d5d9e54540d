"""A verified namespace leader: what fabns knows about the process it enters.

An engine (``fabns.engines``) turns what the user named into a PID; the probe
here turns a PID into a `Leader` -- start time, namespace inodes, the
container's environment, users and id maps -- read on the host by the pushed
helper and, for the container's own files, from *inside* the target. Every
later command re-checks the start time and inodes before it enters, so a PID
that died or was reused is caught instead of entered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from fabns.accounts import AccountBook, IdMap, parse_group, parse_passwd
from fabns.remote.protocol import NS_TYPES


@dataclass(frozen=True)
class Leader:
    """A namespace leader on a remote host, as resolved and verified.

    :param host: the SSH host it lives on.
    :param pid: its PID as the host sees it.
    :param start_time: field 22 of ``/proc/PID/stat``: with the PID, the identity of the process.
    :param namespaces: inode of each ``/proc/PID/ns/*``.
    :param own_namespaces: the same for the process that will enter.
    :param engine: what found it (``"pid"``, ...).
    :param name: the container name, when there is one.
    :param owner: the host user owning the container (``owner=``), if any.
    """

    host: str
    pid: int
    start_time: str
    namespaces: Mapping[str, int] = field(repr=False)
    own_namespaces: Mapping[str, int] = field(repr=False)
    environment: Mapping[str, str] = field(repr=False)
    book: AccountBook = field(repr=False)
    setgroups: str | None = None
    userns_owner: int | None = None
    elevated: bool = False
    engine: str = "pid"
    name: str | None = None
    owner: str | None = None
    owner_uid: int | None = None
    owner_home: str = "/"
    tools: Mapping[str, str | None] = field(default_factory=dict, repr=False)
    comm: str = ""

    @property
    def differing(self) -> tuple[str, ...]:
        """Namespace types where the leader differs from the entering process."""
        return tuple(
            ns
            for ns in NS_TYPES
            if ns in self.namespaces and self.namespaces[ns] != self.own_namespaces.get(ns)
        )

    @property
    def new_userns(self) -> bool:
        return "user" in self.differing

    def describe(self) -> str:
        what = f"{self.engine} {self.name!r} (PID {self.pid})" if self.name else f"PID {self.pid}"
        return f"{what} on {self.host}"


def parse_environ(text: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in (text or "").split("\0"):
        if "=" in entry:
            key, _, value = entry.partition("=")
            if key:
                env[key] = value
    return env


def leader_from_probe(host: str, pid: int, report: Mapping[str, object], elevated: bool) -> Leader:
    """Build a `Leader` from the helper's probe report (already checked for errors)."""
    target = report["target"]
    assert isinstance(target, dict)
    inside = target.get("inside") or {}
    files = inside.get("files") or {}
    environ = target.get("environ")
    if environ is None:
        environ = inside.get("environ")
    where = f"PID {pid} on {host}"
    book = AccountBook(
        accounts=parse_passwd(files.get("/etc/passwd")),
        groups=parse_group(files.get("/etc/group")),
        uid_map=IdMap.parse(target.get("uid_map")),
        gid_map=IdMap.parse(target.get("gid_map")),
        where=where,
        problems={str(k): str(v) for k, v in (inside.get("file_errors") or {}).items()},
    )
    tools = report.get("tools") or {}
    assert isinstance(tools, dict)
    own = report.get("self_ns") or {}
    assert isinstance(own, dict)
    return Leader(
        host=host,
        pid=pid,
        start_time=str(target["start_time"]),
        namespaces={str(k): int(v) for k, v in target["ns"].items()},
        own_namespaces={str(k): int(v) for k, v in own.items()},
        environment=parse_environ(environ),
        book=book,
        setgroups=target.get("setgroups"),
        userns_owner=target.get("userns_owner"),
        elevated=elevated,
        tools=tools,
        comm=str(target.get("comm", "")),
    )


def decode_report(stdout: str) -> dict[str, object] | None:
    """The probe's JSON line, or None when stdout holds none."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None
