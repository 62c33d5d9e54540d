"""Real infrastructure for tests: a throw-away sshd and containers, and a pytest plugin.

Everything here runs real programs on this machine, as root: OpenSSH's
``sshd`` on 127.0.0.1 with its own keys and config, and long-lived
``unshare`` + ``pivot_root`` containers on a busybox-static root filesystem
or on your own (a directory or a tar archive, e.g. from ``mmdebstrap``),
with or without a user namespace, owned by root or by an unprivileged user.
Nothing is mocked, so what passes here passes against a real host.

`Harness` starts the whole set the fabns test suite uses; `SSHServer`,
`Container` and `build_rootfs` are the pieces, for tests of your own deploy
tasks. Every piece is stopped by the PIDs it started, never by name.

The pieces live in submodules by concern: `fabns.testing.base` (the error,
the test users, processes by PID), `.sshd`, `.rootfs` (busybox, and importing
your own tree safely), `.containers` and `.harness`. `fabns.testing.plugin` is
a pytest plugin with fixtures for all of them, loaded only on request
(``pytest -p fabns.testing.plugin``); it needs pytest (``pip install
fabns[testing]``), the rest of this package does not.

The machine needs what ``scripts/install.sh`` sets up: the packages
openssh-server, busybox-static, uidmap and sudo, and the test users
`TEST_USER`, `SUDO_USER` and `NOPASSWD_USER` with their subordinate id ranges.
A piece that cannot start raises `HarnessError` saying why.

.. versionadded:: 0.1
"""

from __future__ import annotations

from fabns.testing.base import (
    NOPASSWD_USER,
    SUDO_PASSWORD,
    SUDO_USER,
    TEST_USER,
    TIMEOUT,
    HarnessError,
    require_root,
)
from fabns.testing.containers import MODES, Container, chroot_limitation
from fabns.testing.harness import STANDARD_CONTAINERS, Harness
from fabns.testing.rootfs import BUSYBOX, build_rootfs
from fabns.testing.sshd import SSHD, SSHServer

__all__ = [
    "BUSYBOX",
    "MODES",
    "NOPASSWD_USER",
    "SSHD",
    "STANDARD_CONTAINERS",
    "SUDO_PASSWORD",
    "SUDO_USER",
    "TEST_USER",
    "TIMEOUT",
    "Container",
    "Harness",
    "HarnessError",
    "SSHServer",
    "build_rootfs",
    "chroot_limitation",
    "require_root",
]
