"""Engines: one table of what turns a container name into a leader PID.

`engines` maps each ``engine=`` name to its class (one module per engine,
built on `fabns.engines.base.Engine`); `find_leader` asks one engine or, for
``engine="auto"``, every engine installed on the host, and refuses to guess
when two know the name.

Whose containers are asked: with ``owner=``, that user's (the answer is then
checked against the leader's user namespace); otherwise root's, and -- for an
unprivileged SSH user -- first the user's own (LXC, rootless Podman), then
root's only where host privilege is available. An engine that cannot be
asked is named in `ContainerNotFound`, one line each.
"""

from __future__ import annotations

from fabns.engines.base import AUTO_ORDER, KNOWN_ENGINES, Engine, Found
from fabns.engines.lxc import Lxc
from fabns.engines.machined import Machined
from fabns.engines.podman import Docker, Podman
from fabns.errors import (
    AmbiguousContainer,
    ContainerNotFound,
    ElevationRequired,
    EngineUnavailable,
    ToolMissing,
)
from fabns.host import HostSession

#: Every engine, by ``engine=`` name.
ENGINES: dict[str, type[Engine]] = {e.name: e for e in (Machined, Lxc, Podman, Docker)}


def engines() -> dict[str, type[Engine]]:
    """Every engine, by ``engine=`` name."""
    return dict(ENGINES)


def _ask(
    host: HostSession, engine: type[Engine], name: str, owner: str | None
) -> tuple[Found | None, list[str], list[EngineUnavailable]]:
    """Ask one engine for ``name``: the hit, what was not asked or found (and why),
    and the errors of lookups that failed."""
    facts = host.facts()
    notes: list[str] = []
    failed: list[EngineUnavailable] = []
    if owner is not None:
        askers: list[tuple[str | None, str]] = [(owner, f"as {owner}")]
    elif facts.uid == 0 or not engine.per_user:
        askers = [(None, "")]
    else:
        askers = [(facts.name, f"as {facts.name}"), (None, "root's")]
    for who, label in askers:
        try:
            hit = engine(host, who).find(name)
        except ElevationRequired as error:
            notes.append(f"{label or 'root'}: not asked, needs root ({error})")
            continue
        except EngineUnavailable as error:
            notes.append(f"{(label + ': ') if label else ''}unavailable: {error}")
            failed.append(error)
            continue
        if hit is not None:
            return hit, notes, failed
        if label:
            notes.append(f"{label}: not found")
    return None, notes, failed


def find_leader(host: HostSession, name: str, engine: str, owner: str | None) -> Found:
    """Resolve ``name`` with ``engine`` (or every installed one, for ``"auto"``)."""
    if engine != "auto":
        tool = ENGINES[engine].tool
        if not host.tool(tool):
            raise ToolMissing(
                f'engine="{engine}" needs {tool}, which is not installed on {host.name}'
            )
        names = [engine]
    else:
        names = [e for e in AUTO_ORDER if host.tool(ENGINES[e].tool)]
        if not names:
            raise ToolMissing(
                f"no container engine on {host.name} (looked for "
                f"{', '.join(ENGINES[e].tool for e in AUTO_ORDER)})"
            )
    hits: list[Found] = []
    report: list[str] = []
    for engine_name in names:
        hit, notes, failed = _ask(host, ENGINES[engine_name], name, owner)
        if hit is not None:
            hits.append(hit)
        elif engine != "auto" and failed:
            raise failed[0]  # the one engine asked for could not answer
        else:
            report.append(f"  {engine_name}: {'; '.join(notes) or 'not found'}")
    if len(hits) > 1:
        raise AmbiguousContainer(
            f"{name!r} on {host.name} is known to "
            + " and ".join(f"{h.engine} (PID {h.pid})" for h in hits)
            + "; pass engine= to choose"
        )
    if not hits:
        whose = f" owned by {owner}" if owner else ""
        raise ContainerNotFound(
            f"no container {name!r}{whose} on {host.name}; asked:\n" + "\n".join(report)
        )
    return hits[0]


__all__ = [
    "AUTO_ORDER",
    "ENGINES",
    "KNOWN_ENGINES",
    "Engine",
    "Found",
    "engines",
    "find_leader",
]
