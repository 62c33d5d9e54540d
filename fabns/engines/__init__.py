"""Engines: what turns the user's target into a leader PID.

One table, ``{engine: finder}``. A finder takes the connection and the name
and returns a PID; the connection then probes and verifies it. Engines for
containers by name (machined, LXC, Podman, Docker) are not built yet and
raise `fabns.errors.NotImplementedYet`.
"""

from __future__ import annotations

#: Engines accepted by ``engine=``; only ``"pid"`` targets are built so far.
KNOWN_ENGINES = ("auto", "pid", "machined", "lxc", "podman", "docker")
