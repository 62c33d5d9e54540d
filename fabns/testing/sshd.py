"""A throw-away OpenSSH ``sshd`` on 127.0.0.1: `SSHServer`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fabns.testing.base import (
    INSTALL_HINT,
    NOPASSWD_USER,
    SUDO_USER,
    TEST_USER,
    TIMEOUT,
    HarnessError,
    account,
    descendants,
    is_running,
    reap,
    require_root,
    run,
    spawn,
    start_time,
    tail,
    terminate,
)

__all__ = ["SSHD", "SSHServer"]

SSHD = "/usr/sbin/sshd"


@dataclass
class SSHServer:
    """A throw-away OpenSSH ``sshd`` on 127.0.0.1, key-only, with its own keys and config.

    One client key (`client_key`) logs in as every user given to `start`;
    `known_hosts` holds the server's host key for OpenSSH clients and paramiko.
    """

    #: Holds the config, keys, authorized keys and ``sshd.log``.
    directory: Path
    port: int
    #: PID of the listening sshd (our child while this process started it).
    pid: int
    #: Private key accepted for every user.
    client_key: Path
    known_hosts: Path
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _start_time: int | None = field(default=None, repr=False, compare=False)
    _stopped: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def start(
        cls,
        directory: Path,
        users: Sequence[str] = ("root", TEST_USER, SUDO_USER, NOPASSWD_USER),
        wrapper: Sequence[str] = (),
    ) -> SSHServer:
        """Start sshd on a free port of 127.0.0.1, files in ``directory``; wait until it listens.

        Every user in ``users`` may log in with `client_key`; each non-root user
        gets ``XDG_RUNTIME_DIR=/run/user/UID`` (created, as pam_systemd would).
        ``wrapper`` is an argv prefix that must end by exec'ing its arguments
        (e.g. ``unshare --mount ...`` to give the sshd a host that looks different).
        """
        require_root()
        if not os.access(SSHD, os.X_OK):
            raise HarnessError(f"{SSHD} is missing; {INSTALL_HINT}")
        directory = Path(directory).resolve()
        auth = directory / "auth"
        auth.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        auth.chmod(0o755)
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
        host_key, client_key = directory / "host_ed25519", directory / "id_ed25519"
        for key, comment in ((host_key, "fabns-test-host"), (client_key, "fabns-test-client")):
            if not key.exists():
                run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                    "ssh key generation",
                )
        public = (directory / "id_ed25519.pub").read_bytes()
        match_blocks = []
        for user in users:
            entry = account(user)
            _check_unlocked(user)
            authorized = auth / user
            authorized.write_bytes(public)
            os.chown(authorized, entry.pw_uid, entry.pw_gid)
            authorized.chmod(0o644)
            if entry.pw_uid != 0:
                runtime = Path(f"/run/user/{entry.pw_uid}")
                runtime.mkdir(parents=True, exist_ok=True)
                os.chown(runtime, entry.pw_uid, entry.pw_gid)
                runtime.chmod(0o700)
                match_blocks.append(
                    f"Match User {user}\n  SetEnv XDG_RUNTIME_DIR=/run/user/{entry.pw_uid}\n"
                )
        log = directory / "sshd.log"
        config = directory / "sshd_config"
        # a port freed by the kernel can be taken again before sshd binds it: try a few
        for _attempt in range(5):
            port = _free_port()
            config.write_text(_sshd_config(directory, port) + "".join(match_blocks))
            run([SSHD, "-t", "-f", str(config)], "sshd -t (config check)")
            log.write_bytes(b"")
            process = spawn([*wrapper, SSHD, "-D", "-f", str(config), "-E", str(log)], log)
            server = cls(
                directory=directory,
                port=port,
                pid=process.pid,
                client_key=client_key,
                known_hosts=directory / "known_hosts",
                _process=process,
                _start_time=start_time(process.pid),
            )
            if server._wait_listening(log):
                break
            server.stop()
            if "Address already in use" not in tail(log):
                raise HarnessError(f"sshd exited before it listened on port {port}:\n{tail(log)}")
        else:
            raise HarnessError(f"sshd found no free port in 5 tries:\n{tail(log)}")
        host_line = (directory / "host_ed25519.pub").read_text().split()
        server.known_hosts.write_text(f"[127.0.0.1]:{port} {host_line[0]} {host_line[1]}\n")
        return server

    def _wait_listening(self, log: Path) -> bool:
        """True once the port accepts connections; False if sshd exited; raise on timeout."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                return False
            if _port_open(self.port):
                return True
            time.sleep(0.005)
        self.stop()
        raise HarnessError(
            f"sshd (PID {self.pid}) did not listen on 127.0.0.1:{self.port} "
            f"within {TIMEOUT:.0f}s:\n{tail(log)}"
        )

    @property
    def host_public_key(self) -> str:
        """The server's host key as ``"ssh-ed25519 AAAA..."`` (what ``known_hosts`` lists)."""
        return " ".join((self.directory / "host_ed25519.pub").read_text().split()[:2])

    def connect_kwargs(self) -> dict[str, object]:
        """Arguments for paramiko's ``SSHClient.connect`` (Fabric's ``connect_kwargs``)."""
        return {
            "key_filename": str(self.client_key),
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": TIMEOUT,
        }

    def connection_kwargs(self, user: str) -> dict[str, object]:
        """Everything ``fabric.Connection(**kwargs)`` needs to log in here as ``user``.

        Fabric 3 accepts any host key (paramiko's ``AutoAddPolicy``, no
        known_hosts loaded); compare ``client.get_transport().get_remote_server_key()``
        with `host_public_key` to be sure which server answered.
        """
        return {
            "host": self.host,
            "port": self.port,
            "user": user,
            "connect_kwargs": self.connect_kwargs(),
        }

    def ssh_argv(self, user: str) -> list[str]:
        """OpenSSH client argv (without the remote command) for logging in as ``user``."""
        return [
            "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            f"{user}@{self.host}",
        ]  # fmt: skip

    def stop(self) -> None:
        """Stop the listener and every session it forked (they outlive the listener)."""
        if self._stopped:
            return
        procs: dict[int, int | None] = {self.pid: self._start_time}
        if is_running(self.pid, self._start_time):
            # collect first: once the listener is gone its sessions hang off PID 1
            procs.update({pid: start_time(pid) for pid in descendants(self.pid)})
        terminate(procs)
        reap(self._process)
        self._stopped = True


def _check_unlocked(user: str) -> None:
    """sshd with ``UsePAM no`` refuses keys for accounts whose password starts with ``!``."""
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        name, _, rest = line.partition(":")
        if name == user and rest.startswith("!"):
            raise HarnessError(
                f"account {user!r} is locked ('!' in /etc/shadow), so sshd refuses its key; "
                f"unlock it with: usermod -p '*' {user}  (or {INSTALL_HINT})"
            )


def _sshd_config(directory: Path, port: int) -> str:
    # every path absolute: sshd re-executes itself, and relative paths then break sessions
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_ed25519
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/auth/%u
# the files live under /tmp (mode 1777), which StrictModes rejects
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_* FABNS_*
PermitUserEnvironment no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
LogLevel INFO
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
