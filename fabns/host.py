"""Commands fabns runs on the host itself: probes, kills, and host privilege.

Not for user commands (those go through `fabns.runner.NamespaceRemote`);
these are fabns's own short host-side steps, run over a fresh SSH channel on
the connection's one transport.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from invoke.watchers import FailingResponder

from fabns.quoting import quote

if TYPE_CHECKING:
    from fabric import Connection

#: The prompt fabns gives ``sudo -S`` so its responder cannot mistake anything else for it.
SUDO_PROMPT = "[fabns] sudo password on host: "


@dataclass(frozen=True)
class HostResult:
    exited: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Elevation:
    """How fabns becomes root on the host to enter a target.

    ``mode`` is ``"none"`` (already root, or entering a namespace the SSH user
    owns), ``"sudo"`` (``sudo -n``) or ``"sudo-password"`` (``sudo -S`` with the
    password from Fabric's ``sudo.password`` config, written to sudo's stdin
    -- never on a command line).
    """

    mode: str = "none"
    password: str | None = None

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def wrap(self, command: str) -> str:
        """Run the host shell ``command`` with this privilege."""
        if self.mode == "none":
            return command
        if self.mode == "sudo":
            return f"sudo -n -- /bin/sh -c {quote(command)}"
        return f"sudo -S -p {quote(SUDO_PROMPT)} -- /bin/sh -c {quote(command)}"

    def watchers(self) -> list[Any]:
        """Responders that answer sudo's prompt during a user command."""
        if self.mode != "sudo-password":
            return []
        return [
            FailingResponder(
                pattern=re.escape(SUDO_PROMPT),
                response=f"{self.password}\n",
                sentinel="Sorry, try again.\n",
            )
        ]


def start_on_host(connection: Connection, command: str, elevation: Elevation) -> Any:
    """Open a channel running ``command`` with ``elevation``; sudo's password goes first
    on its stdin. Returns the paramiko channel."""
    channel = connection.create_session()
    channel.exec_command(elevation.wrap(command))
    if elevation.mode == "sudo-password":
        channel.sendall(f"{elevation.password}\n".encode())
    return channel


def run_on_host(
    connection: Connection, command: str, elevation: Elevation = Elevation()
) -> HostResult:
    """Run a short fabns step on the host and collect its output."""
    channel = start_on_host(connection, command, elevation)
    try:
        channel.shutdown_write()
        err_chunks: list[bytes] = []

        def drain_stderr() -> None:
            while chunk := channel.recv_stderr(65536):
                err_chunks.append(chunk)

        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        out_chunks = []
        while chunk := channel.recv(65536):
            out_chunks.append(chunk)
        reader.join()
        exited = channel.recv_exit_status()
    finally:
        channel.close()
    return HostResult(
        exited,
        b"".join(out_chunks).decode("utf-8", "replace"),
        b"".join(err_chunks).decode("utf-8", "replace"),
    )
