"""Many engine lookups in one host step, each one's output framed apart from the others.

``engine="auto"`` asks every installed engine; one SSH channel per lookup made
a name cost several round trips more than a PID. `run_lookups` runs them all
in one host step instead, at the same time (a lookup's time is mostly its
tool's: ``podman inspect`` alone takes 40 ms), and gives back one
`~fabns.host.HostResult` per lookup, as if each had been run alone.

A lookup's output is its tool's, and the container (its name, or whatever its
owner configured) may influence it. So nothing a lookup prints reaches the
step's output as it is: the step captures each lookup's stdout, stderr and exit
status, and prints them as base64 in lines that only the step's script writes::

    lookup 0
    o <base64 of stdout, one line of it per line>
    x <exit status>
    e <base64 of stderr>
    lookup 1
    ...
    end 2

`parse_lookups` accepts exactly that shape, for exactly the number of lookups
that were sent, and nothing else: no lookup can pass for another, add one, or
end the step early.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from fabns.errors import ElevationRequired, HelperError
from fabns.host import BASE64, Elevation, HostResult, HostSession
from fabns.quoting import quote

#: Copies the records of the stages before (``/bin``: there on merged and split ``/usr``).
CAT = "/bin/cat"

#: The step's shell functions. ``fabns_put TAG VALUE`` prints VALUE as base64, a
#: ``TAG`` line per line of it (an empty VALUE is one ``TAG`` line, with no base64
#: process). ``fabns_record INDEX SCRIPT`` runs SCRIPT (stdin from /dev/null,
#: stdout and stderr captured, fd 3 and 4 closed) and prints its framed record;
#: it writes the o and x lines to fd 3, its caller's output.
PRELUDE = (
    "set -f; "
    f'fabns_put() {{ [ -z "$2" ] || set -- "$1" "$(printf %s "$2" | {BASE64})"; '
    'printf "$1 %s\\n" $2; }; '
    "fabns_record() { printf 'lookup %s\\n' \"$1\"; "
    'fabns_e=$( { fabns_o=$( eval "$2" </dev/null 2>&4 3>&- 4>&- ); fabns_x=$?; '
    'fabns_put o "$fabns_o" >&3; printf "x %s\\n" "$fabns_x" >&3; } 4>&1 ); '
    'fabns_put e "$fabns_e"; }'
)
_STATUS = re.compile(r"x (\d{1,3})")


def lookups_script(scripts: Sequence[str]) -> str:
    """The host script that runs ``scripts`` at the same time and prints their framed
    records, in order.

    One pipeline stage per lookup: it runs its lookup (capturing the record),
    then copies the records of the stages before it, then prints its own; the
    last stage adds the ``end`` line. What a lookup prints is only ever captured.
    """
    stages = [
        f"{{ fabns_r=$(exec 3>&1; fabns_record {index} {quote(script)}); "
        f'{CAT}; printf "%s\\n" "$fabns_r"; }}'
        for index, script in enumerate(scripts)
    ]
    stages.append(f"{{ {CAT}; printf 'end {len(scripts)}\\n'; }}")
    return f"{PRELUDE}; {' | '.join(stages)}"


def parse_lookups(stdout: str, count: int) -> list[HostResult] | None:
    """The ``count`` lookups' results from the step's output, or None if it is not
    exactly what `lookups_script` prints for ``count`` lookups."""
    lines = stdout.split("\n")
    if lines[-2:] != [f"end {count}", ""]:
        return None
    lines = lines[:-2]
    results: list[HostResult] = []
    at = 0
    for index in range(count):
        if at >= len(lines) or lines[at] != f"lookup {index}":
            return None
        stdout_text, at = _decoded(lines, at + 1, "o")
        status = _STATUS.fullmatch(lines[at]) if at < len(lines) else None
        if stdout_text is None or status is None:
            return None
        stderr_text, at = _decoded(lines, at + 1, "e")
        if stderr_text is None:
            return None
        results.append(HostResult(int(status.group(1)), stdout_text, stderr_text))
    return results if at == len(lines) else None


def _decoded(lines: list[str], at: int, tag: str) -> tuple[str | None, int]:
    """The value in the ``tag`` lines from ``lines[at]`` on, and the index after them;
    None if there is no such line or they are not base64."""
    chunks = []
    while at < len(lines) and lines[at].startswith(f"{tag} "):
        chunks.append(lines[at][2:])
        at += 1
    try:
        data = base64.b64decode("".join(chunks), validate=True)
    except binascii.Error:
        return None, at
    return (data.decode("utf-8", "replace") if chunks else None), at


def run_lookups(
    host: HostSession, scripts: Sequence[str], elevation: Elevation
) -> list[HostResult]:
    """Run ``scripts`` (host shell commands) in one host step with ``elevation``.

    Raises `ElevationRequired` when sudo refused the step, `HelperError` when
    its output is not the framed answers of exactly these lookups.
    """
    step = host.run(lookups_script(scripts), elevation)
    results = parse_lookups(step.stdout, len(scripts))
    if results is not None:
        return results
    err = step.stderr.strip()
    if elevation.active and err.startswith("sudo:"):
        raise ElevationRequired(f"looking up containers on {host.name} needs root: {err}")
    raise HelperError(
        f"the container lookups on {host.name} gave no answer fabns can read "
        f"(exit {step.exited}): {err[:200]}",
        step="lookup",
    )


__all__ = ["lookups_script", "parse_lookups", "run_lookups"]
