"""The host session: everything fabns itself runs on the remote host.

One place opens host channels (each with a timeout), knows the SSH account,
finds tools, decides and applies host privilege, and runs engine lookups.
Every host step runs with a fixed environment (`FIXED_ENV`) and programs
found by absolute path in fixed directories (`TOOL_DIRS`): nothing of the SSH
session's environment, and nothing a container controls, chooses what runs on
the host. User commands go through `fabns.runner.NamespaceRemote`; this module
only gives them their privilege wrapper.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fabns.errors import ElevationRequired, HelperError, HostTimeout, UnknownUser
from fabns.markers import PRINTF_PREFIX
from fabns.quoting import exact_bytes, join, quote
from fabns.remote.protocol import MARKER_PASSWORD

#: Where host programs are looked up, in order; never the SSH session's PATH.
TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
#: The whole environment of every host step (and of the host side of every way in).
FIXED_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8")
ENV = "/usr/bin/env"
SH = "/bin/sh"
BASE64 = "/usr/bin/base64"
#: Programs fabns may run on the host, found once per connection.
HOST_TOOLS = (
    "sudo", "nsenter", "lxc-attach", "lxc-ls", "machinectl", "podman", "docker", "runuser",
    "systemd-run", "stty", "readlink", "setpriv",
)  # fmt: skip
#: Seconds a host step (probe, lookup, kill) may take before `HostTimeout`.
HOST_STEP_TIMEOUT = 60.0
#: sudo's prompt is empty: fabns never looks for it; the host side asks with a marker instead.
SUDO_PROMPT = ""


def owner_session_env(uid: int, home: str) -> list[str]:
    """``env`` argv prefix giving a host user's tools that user's session: home,
    runtime directory and session bus (what a login through pam_systemd sets)."""
    return [
        ENV,
        f"HOME={home}",
        f"XDG_RUNTIME_DIR=/run/user/{uid}",
        f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus",
    ]


def fixed_argv(script: str) -> list[str]:
    """argv that runs the POSIX shell ``script`` with nothing but `FIXED_ENV`."""
    return [ENV, "-i", *FIXED_ENV, SH, "-c", script]


def ssh_command(line: str) -> bytes:
    """The bytes to send as the SSH channel's command, whatever the login shell.

    sshd hands the command to the SSH account's login shell, and fish or csh
    quote differently from POSIX sh: a container's value ending in a backslash
    would end a quoted word there. So the login shell only ever sees a fixed
    line -- no backslash, no quote inside a word -- and one base64 word (letters,
    digits, ``+/=``); a fixed-environment ``/bin/sh`` decodes ``line`` and runs it.
    """
    encoded = base64.b64encode(exact_bytes(line)).decode("ascii")
    decode = f'eval "$(printf %s "$1" | {BASE64} -d)"'
    return f"exec {ENV} -i {' '.join(FIXED_ENV)} {SH} -c '{decode}' fabns {encoded}".encode()


@dataclass(frozen=True)
class HostResult:
    exited: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class HostFacts:
    """The SSH account and the host's tools, asked in one round trip."""

    uid: int
    name: str
    #: Absolute path of each of `HOST_TOOLS`, or None where the host lacks it.
    tools: dict[str, str | None]


@dataclass(frozen=True)
class Elevation:
    """How fabns becomes root on the host to enter a target.

    ``mode`` is ``"none"`` (already root, or entering a namespace the SSH user
    owns), ``"sudo"`` (``sudo -n``: no password needed) or ``"sudo-password"``
    (``sudo -k -S`` reading Fabric's ``sudo.password`` from stdin -- never from
    a command line). The password is only ever written to that sudo: for host
    steps right away, for user commands when the host side asks for it with a
    ``pw`` marker, before the target is entered; never while anything of the
    container runs.
    """

    mode: str = "none"
    sudo: str = "/usr/bin/sudo"
    stty: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def argv(self, script: str) -> list[str]:
        """argv that runs the host shell ``script`` with this privilege and the fixed env."""
        inner = fixed_argv(script)
        if self.mode == "none":
            return inner
        if self.mode == "sudo":
            return [self.sudo, "-n", "--", *inner]
        # -k: always read the password (a cached timestamp would leave it on stdin)
        return [self.sudo, "-k", "-S", "-p", SUDO_PROMPT, "--", *inner]

    def wrap(self, script: str, *, args: Sequence[str] = (), ask: str | None = None) -> str:
        """The command line for the SSH channel.

        :param args: the script's ``"$@"`` (quoted once, here).
        :param ask: the marker nonce of a user command. With a password, the
            host side then turns off the terminal's echo (if stdin is one),
            prints a ``pw`` marker and only then reads the password; the client
            sends it when it sees that marker. Echo is restored before entering.
        """
        positional = ["fabns", *args] if args else []
        if self.mode != "sudo-password" or ask is None:
            return "exec " + join([*self.argv(script), *positional])
        if self.stty:
            stty = quote(self.stty)
            script = f"[ -t 0 ] && {stty} echo; {script}"
            echo_off = f"[ -t 0 ] && {stty} -echo"
        else:  # on a terminal the password would be echoed: refuse, before anything
            echo_off = (
                "[ -t 0 ] && { echo 'sudo: fabns cannot turn terminal echo off "
                "(no stty on the host) to send the password' >&2; exit 125; }"
            )
        return (
            f"{echo_off}; printf '{PRINTF_PREFIX}{MARKER_PASSWORD}:{ask}\\n'; "
            f"exec {join([*self.argv(script), *positional])}"
        )


class HostSession:
    """fabns's own steps on one SSH host: facts, privilege, short commands.

    :param connection: anything with Fabric's ``create_session()``, ``host``
        and ``config`` (a `fabric.Connection`).
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._facts: HostFacts | None = None
        self._accounts: dict[str, tuple[int, str]] = {}
        self._elevation: Elevation | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.connection.host)

    @property
    def timeout(self) -> float:
        try:
            return float(self.connection.config.fabns.host_timeout)
        except (AttributeError, KeyError, TypeError, ValueError):
            return HOST_STEP_TIMEOUT

    # -- facts ---------------------------------------------------------------------

    def facts(self) -> HostFacts:
        """The SSH account and the tools, asked once."""
        if self._facts is None:
            lookups = "; ".join(
                f"p=; for d in {' '.join(TOOL_DIRS)}; do "
                f'[ -f "$d/{tool}" ] && [ -x "$d/{tool}" ] && {{ p="$d/{tool}"; break; }}; done; '
                'printf "%s\\n" "$p"'
                for tool in HOST_TOOLS
            )
            # and the account's passwd entry: its own lookups (engines) need its home
            result = self.run(f'id -u; id -un; {lookups}; getent passwd "$(id -u)"; exit 0')
            lines = result.stdout.split("\n")
            if result.exited != 0 or len(lines) < 2 + len(HOST_TOOLS) or not lines[0].isdigit():
                raise HelperError(
                    f"could not ask {self.name} who the SSH user is: {result.stderr.strip()}",
                    step="facts",
                )
            tools = {t: (lines[2 + i].strip() or None) for i, t in enumerate(HOST_TOOLS)}
            self._facts = HostFacts(int(lines[0]), lines[1].strip(), tools)
            fields = [*lines, ""][2 + len(HOST_TOOLS)].split(":")
            if len(fields) == 7 and (fields[0], fields[2]) == (self._facts.name, lines[0]):
                self._accounts[fields[0]] = (self._facts.uid, fields[5])
        return self._facts

    def tool(self, name: str) -> str | None:
        """Absolute path of host program ``name`` (one of `HOST_TOOLS`), None if missing."""
        return self.facts().tools.get(name)

    def account(self, user: str) -> tuple[int, str]:
        """Host uid and home directory of ``user`` (an ``owner=``), asked once;
        `UnknownUser` if there is none."""
        if user not in self._accounts:
            result = self.run(f"getent passwd -- {quote(user)}")
            fields = result.stdout.strip().split(":")
            if result.exited != 0 or len(fields) < 7 or not fields[2].isdigit():
                raise UnknownUser(f"no user {user!r} on {self.name} (owner=)")
            self._accounts[user] = (int(fields[2]), fields[5])
        return self._accounts[user]

    # -- privilege -----------------------------------------------------------------

    def elevation(self) -> Elevation:
        """How to become root here: none for root, else sudo (checked once).

        ``sudo -n`` is tried first; only when sudo wants a password is
        Fabric's ``sudo.password`` used, and it is checked here, so a wrong
        password fails now (`ElevationRequired`) and never as a retry later.
        """
        with self._lock:
            if self._elevation is None:
                self._elevation = self._find_elevation()
            return self._elevation

    def _find_elevation(self) -> Elevation:
        facts = self.facts()
        if facts.uid == 0:
            return Elevation()
        sudo = facts.tools.get("sudo")
        if sudo is None:
            raise ElevationRequired(
                f"this needs root on {self.name}, {facts.name} is not root and sudo is not "
                "installed there"
            )
        stty = facts.tools.get("stty")
        if self.run("exit 0", Elevation("sudo", sudo)).exited == 0:
            return Elevation("sudo", sudo, stty)
        password = self.connection.config.sudo.password
        if not password:
            raise ElevationRequired(
                f"this needs root on {self.name}: sudo wants a password for {facts.name} "
                "(set sudo.password, or --prompt-for-sudo-password)"
            )
        elevation = Elevation("sudo-password", sudo, stty, str(password))
        if self.run("exit 0", elevation).exited != 0:
            raise ElevationRequired(f"sudo on {self.name} refused the password of {facts.name}")
        return elevation

    def use_password(self, password: str) -> None:
        """``sudo(password=...)``: a password for host sudo, used only where sudo wants one."""
        current = self.elevation()
        if current.mode == "sudo-password":
            self._elevation = Elevation("sudo-password", current.sudo, current.stty, password)

    # -- running -------------------------------------------------------------------

    def start(self, script: str, elevation: Elevation = Elevation()) -> Any:
        """Open a channel running ``script`` with ``elevation``; returns the channel.

        With a password, it is the first line on the channel's stdin, which
        ``sudo -k -S`` consumes before ``script`` starts.
        """
        channel = self.connection.create_session()
        channel.settimeout(self.timeout)
        channel.exec_command(ssh_command(elevation.wrap(script)))
        if elevation.mode == "sudo-password":
            channel.sendall(f"{elevation.password}\n".encode())
        return channel

    def run(self, script: str, elevation: Elevation = Elevation()) -> HostResult:
        """Run a short fabns step on the host (stdin empty) and collect its output."""
        channel = self.start(f"exec </dev/null; {script}", elevation)
        err_chunks: list[bytes] = []
        out_chunks: list[bytes] = []

        def drain_stderr() -> None:
            try:
                while chunk := channel.recv_stderr(65536):
                    err_chunks.append(chunk)
            except TimeoutError:
                pass

        reader = threading.Thread(target=drain_stderr, daemon=True)
        try:
            channel.shutdown_write()
            reader.start()
            while chunk := channel.recv(65536):
                out_chunks.append(chunk)
            reader.join(self.timeout)
            exited = channel.recv_exit_status()
        except TimeoutError as error:
            raise HostTimeout(
                f"a fabns step on {self.name} took over {self.timeout:.0f} s "
                f"(fabns.host_timeout): {script[:120]!r}"
            ) from error
        finally:
            channel.close()
            if reader.is_alive():
                reader.join(1.0)
        return HostResult(
            exited,
            b"".join(out_chunks).decode("utf-8", "replace"),
            b"".join(err_chunks).decode("utf-8", "replace"),
        )

    def run_as_root(self, script: str) -> HostResult:
        """`run` with host privilege (none needed for root)."""
        return self.run(script, self.elevation())


__all__ = [
    "FIXED_ENV",
    "HOST_TOOLS",
    "Elevation",
    "HostFacts",
    "HostResult",
    "HostSession",
    "fixed_argv",
]
