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

Every engine is asked at once: the lookups run in one host step
(`fabns.engines.batch`), or two for an unprivileged SSH user -- the
unprivileged ones, then those that need host privilege.
"""

from __future__ import annotations

from fabns.engines.base import AUTO_ORDER, KNOWN_ENGINES, Engine, Found, Lookup
from fabns.engines.batch import run_lookups
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
from fabns.host import Elevation, HostFacts, HostResult, HostSession

#: Every engine, by ``engine=`` name.
ENGINES: dict[str, type[Engine]] = {e.name: e for e in (Machined, Lxc, Podman, Docker)}


def engines() -> dict[str, type[Engine]]:
    """Every engine, by ``engine=`` name."""
    return dict(ENGINES)


class _Asking:
    """What one engine is asked, in order, and what came of it.

    An unprivileged SSH user's own containers come first; root's are asked
    only if the user has none of that name.
    """

    def __init__(self, engine: type[Engine], askers: list[tuple[str | None, str]]) -> None:
        self.engine = engine
        self.askers = askers
        self.lookup: Lookup | None = None
        self.hit: Found | None = None
        self.notes: list[str] = []
        self.failed: list[EngineUnavailable] = []

    def next(self, host: HostSession, name: str) -> Lookup | None:
        """The lookup to run next for this engine, None once it is done."""
        if self.lookup is None and self.askers and self.hit is None:
            who, _ = self.askers[0]
            self.lookup = self.engine(host, who).lookup(name)
        return self.lookup

    def answered(self, result: HostResult) -> None:
        assert self.lookup is not None
        lookup, (_, label) = self.lookup, self.askers.pop(0)
        self.lookup = None
        try:
            self.hit = lookup.engine.answer(lookup, result)
        except EngineUnavailable as error:
            self.notes.append(f"{(label + ': ') if label else ''}unavailable: {error}")
            self.failed.append(error)
            return
        if self.hit is None and label:
            self.notes.append(f"{label}: not found")

    def not_asked(self, error: ElevationRequired) -> None:
        _, label = self.askers.pop(0)
        self.lookup = None
        self.notes.append(f"{label or 'root'}: not asked, needs root ({error})")


def _askers(
    engine: type[Engine], facts: HostFacts, owner: str | None
) -> list[tuple[str | None, str]]:
    """Whose containers ``engine`` is asked for, in order: (owner or None for root's, label)."""
    if owner is not None:
        return [(owner, f"as {owner}")]
    if facts.uid == 0 or not engine.per_user:
        return [(None, "")]
    return [(facts.name, f"as {facts.name}"), (None, "root's")]


def _ask_all(host: HostSession, name: str, asking: list[_Asking]) -> None:
    """Ask every engine in as few host steps as there are kinds of lookup to run:
    all unprivileged lookups in one step, then all that need host privilege in one."""
    while ready := [(a, lookup) for a in asking if (lookup := a.next(host, name)) is not None]:
        batch = [(a, lookup) for a, lookup in ready if not lookup.elevated] or ready
        try:
            elevation = host.elevation() if batch[0][1].elevated else Elevation()
            results = run_lookups(host, [lookup.script for _, lookup in batch], elevation)
        except ElevationRequired as error:
            for a, _ in batch:
                a.not_asked(error)
            continue
        for (a, _), result in zip(batch, results, strict=True):
            a.answered(result)


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
    facts = host.facts()
    asking = [_Asking(ENGINES[n], _askers(ENGINES[n], facts, owner)) for n in names]
    _ask_all(host, name, asking)
    hits: list[Found] = []
    report: list[str] = []
    for engine_name, each in zip(names, asking, strict=True):
        if each.hit is not None:
            hits.append(each.hit)
        elif engine != "auto" and each.failed:
            raise each.failed[0]  # the one engine asked for could not answer
        else:
            report.append(f"  {engine_name}: {'; '.join(each.notes) or 'not found'}")
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
    "Lookup",
    "engines",
    "find_leader",
]
