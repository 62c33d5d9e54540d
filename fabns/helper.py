"""Build the command line that runs the pushed helper (``fabns/_helper.py``).

The helper travels inside the command itself -- compressed, base64, passed to
``python3 -c`` -- so nothing is written on the host or in the container, and
stdin stays free for the user's command.
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from collections.abc import Mapping
from importlib import resources

from fabns.quoting import join


@functools.cache
def _bootstrap() -> str:
    source = resources.files("fabns").joinpath("_helper.py").read_bytes()
    packed = base64.b64encode(zlib.compress(source, 9)).decode("ascii")
    return f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"


def encode_request(request: Mapping[str, object]) -> str:
    """The helper's single argument: base64 of the JSON request."""
    return base64.b64encode(json.dumps(request).encode("utf-8")).decode("ascii")


def helper_command(python: str, request: Mapping[str, object]) -> str:
    """Shell command that runs the helper with ``python`` on the request.

    ``-I``: no ``PYTHON*`` variables, no user site, no script directory on the
    path; ``-S``: no ``site`` import (faster; the helper needs only the stdlib).
    """
    return join([python, "-I", "-S", "-c", _bootstrap(), encode_request(request)])
