"""An ad-hoc rollout across containers on several hosts: copy this and adapt.

    python examples/deploy.py 1.2.3 web1/app web1/worker web2/app web3/app

Releases ``1.2.3`` in the first container (the canary) and, if that worked,
in all the others at once -- each with the ``release`` task of `fabfile.py`.
Targets are ``[user@]host[:port]/container`` (or ``/pid:N``, or ``@group``
from ``fabns.groups`` in ``fabric.yaml``); SSH settings come from
``~/.ssh/config`` as for ``fab``. Containers on one host share one SSH
connection. Exits 1 if any container failed, naming it.
"""

from __future__ import annotations

import argparse
import sys

from fabfile import release
from fabric.exceptions import GroupException

from fabns import ThreadingNamespaceGroup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version")
    parser.add_argument("targets", nargs="+", help="host/container, host/pid:N or @group")
    parser.add_argument("--parallel", type=int, default=8, help="containers at once (8)")
    args = parser.parse_args(argv)

    with ThreadingNamespaceGroup(*args.targets, workers=args.parallel) as group:
        canary, rest = group[0], group[1:]
        try:
            print(f"canary {canary.target_spec}: {release(canary, args.version)}")
        except Exception as error:
            print(f"canary {canary.target_spec} failed, stopping: {error}", file=sys.stderr)
            return 1
        try:
            others = ThreadingNamespaceGroup(*rest, workers=args.parallel)
            results = others.each(release, args.version)
        except GroupException as error:
            results = error.result
        for c, outcome in results.items():
            print(f"{c.target_spec}: {outcome}")
        if results.failed:
            names = ", ".join(str(c.target_spec) for c in results.failed)
            print(f"failed in {len(results.failed)} of {len(group)}: {names}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
