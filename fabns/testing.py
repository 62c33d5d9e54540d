"""Real infrastructure for tests: a throw-away sshd and busybox containers.

Everything here runs real programs on this machine, as root: OpenSSH's
``sshd`` on 127.0.0.1 with its own keys and config, and long-lived
``unshare`` + ``pivot_root`` containers on a busybox-static root filesystem,
with or without a user namespace, owned by root or by an unprivileged user.
Nothing is mocked, so what passes here passes against a real host.

`Harness` starts the whole set the fabns test suite uses; `SSHServer`,
`Container` and `build_rootfs` are the pieces, for tests of your own deploy
tasks. Every piece is stopped by the PIDs it started, never by name.

The machine needs what ``scripts/install.sh`` sets up: the packages
openssh-server, busybox-static, uidmap and sudo, and the test users
`TEST_USER`, `SUDO_USER` and `NOPASSWD_USER` with their subordinate id ranges.
A piece that cannot start raises `HarnessError` saying why.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NOPASSWD_USER",
    "SUDO_PASSWORD",
    "SUDO_USER",
    "TEST_USER",
    "Container",
    "Harness",
    "HarnessError",
    "SSHServer",
    "build_rootfs",
    "require_root",
]

#: Unprivileged user without sudo; owns the user-namespaced containers.
TEST_USER = "alice"
#: User who may sudo with `SUDO_PASSWORD`.
SUDO_USER = "bob"
#: User who may sudo without a password.
NOPASSWD_USER = "carol"
#: `SUDO_USER`'s login password.
SUDO_PASSWORD = "fabns-test-password"

#: Container modes: no user namespace; ``--map-root-user``; the owner's subordinate ids.
MODES = ("plain", "maproot", "subid")

SSHD = "/usr/sbin/sshd"
BUSYBOX = "/bin/busybox"
#: Seconds any piece may take to come up, or to go away, before `HarnessError`.
TIMEOUT = 10.0
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INSTALL_HINT = "run scripts/install.sh as root to prepare this machine"


class HarnessError(RuntimeError):
    """A piece of the test harness could not start or stop; the message says why."""


def require_root() -> None:
    """Raise `HarnessError` unless this process runs as root."""
    if os.geteuid() != 0:
        raise HarnessError(
            f"the fabns test harness must run as root (euid is {os.geteuid()}): it starts "
            "sshd, creates namespaces and chowns container root filesystems"
        )


# --------------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, starttime)`` of ``pid`` from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (tells a reused PID apart)."""
    found = _proc_stat(pid)
    return None if found is None else found[2]


def _is_running(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` exists, is not a zombie and (if given) started at ``start_time``."""
    found = _proc_stat(pid)
    if found is None or found[0] in ("Z", "X", "x"):
        return False
    return start_time is None or found[2] == start_time


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the parent tree, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _proc_stat(int(entry))
            if found is not None:
                children.setdefault(found[1], []).append(int(entry))
    result: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            result.append(child)
            todo.append(child)
    return result


def _signal(pid: int, sig: int, start_time: int | None) -> None:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start_time``."""
    if _is_running(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(procs: Mapping[int, int | None], timeout: float) -> list[int]:
    """Wait until none of ``procs`` (PID -> start time) runs; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid, start in procs.items() if _is_running(pid, start)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.005)


def _terminate(procs: Mapping[int, int | None], grace: float = 1.0) -> None:
    """SIGTERM ``procs`` (PID -> start time), then SIGKILL what is left after ``grace`` s."""
    for pid, start in procs.items():
        _signal(pid, signal.SIGTERM, start)
    left = _wait_gone(procs, grace)
    for pid in left:
        _signal(pid, signal.SIGKILL, procs[pid])
    left = _wait_gone({pid: procs[pid] for pid in left}, TIMEOUT)
    if left:
        raise HarnessError(f"processes {left} survived SIGKILL for {TIMEOUT:.0f}s")


def _reap(process: subprocess.Popen[bytes] | None) -> None:
    """Collect the exit status of our own child so it does not stay a zombie."""
    if process is not None:
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired as error:
            raise HarnessError(f"PID {process.pid} did not exit after SIGKILL") from error


def _run(argv: Sequence[str], what: str) -> str:
    """Run a short setup command; `HarnessError` with its output if it fails."""
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise HarnessError(f"{what}: cannot run {argv[0]}: {error}; {_INSTALL_HINT}") from error
    if done.returncode != 0:
        raise HarnessError(
            f"{what}: {' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _tail(path: Path, limit: int = 4000) -> str:
    """The end of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return text[-limit:] if text.strip() else "(log is empty)"


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise HarnessError(f"no user {user!r} on this machine; {_INSTALL_HINT}") from None


def _subordinate_start(user: str, database: str) -> int:
    """First id of ``user``'s range in /etc/subuid or /etc/subgid (``database``)."""
    account = _account(user)
    try:
        lines = Path(database).read_text().splitlines()
    except OSError as error:
        raise HarnessError(f"cannot read {database}: {error}; {_INSTALL_HINT}") from error
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(account.pw_uid)) and parts[1].isdigit():
            if int(parts[2]) < 65536:
                raise HarnessError(f"{database}: {user}'s range {line!r} has under 65536 ids")
            return int(parts[1])
    raise HarnessError(f"{user} has no range in {database}; {_INSTALL_HINT}")


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


# --------------------------------------------------------------------------------- sshd


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
            raise HarnessError(f"{SSHD} is missing; {_INSTALL_HINT}")
        directory = Path(directory).resolve()
        auth = directory / "auth"
        auth.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        auth.chmod(0o755)
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
        host_key, client_key = directory / "host_ed25519", directory / "id_ed25519"
        for key, comment in ((host_key, "fabns-test-host"), (client_key, "fabns-test-client")):
            if not key.exists():
                _run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                    "ssh key generation",
                )
        public = (directory / "id_ed25519.pub").read_bytes()
        match_blocks = []
        for user in users:
            account = _account(user)
            _check_unlocked(user)
            authorized = auth / user
            authorized.write_bytes(public)
            os.chown(authorized, account.pw_uid, account.pw_gid)
            authorized.chmod(0o644)
            if account.pw_uid != 0:
                runtime = Path(f"/run/user/{account.pw_uid}")
                runtime.mkdir(parents=True, exist_ok=True)
                os.chown(runtime, account.pw_uid, account.pw_gid)
                runtime.chmod(0o700)
                match_blocks.append(
                    f"Match User {user}\n  SetEnv XDG_RUNTIME_DIR=/run/user/{account.pw_uid}\n"
                )
        log = directory / "sshd.log"
        config = directory / "sshd_config"
        # a port freed by the kernel can be taken again before sshd binds it: try a few
        for _attempt in range(5):
            port = _free_port()
            config.write_text(_sshd_config(directory, port) + "".join(match_blocks))
            _run([SSHD, "-t", "-f", str(config)], "sshd -t (config check)")
            log.write_bytes(b"")
            process = _spawn([*wrapper, SSHD, "-D", "-f", str(config), "-E", str(log)], log)
            server = cls(
                directory=directory,
                port=port,
                pid=process.pid,
                client_key=client_key,
                known_hosts=directory / "known_hosts",
                _process=process,
                _start_time=_start_time(process.pid),
            )
            if server._wait_listening(log):
                break
            server.stop()
            if "Address already in use" not in _tail(log):
                raise HarnessError(f"sshd exited before it listened on port {port}:\n{_tail(log)}")
        else:
            raise HarnessError(f"sshd found no free port in 5 tries:\n{_tail(log)}")
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
            f"within {TIMEOUT:.0f}s:\n{_tail(log)}"
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
        if _is_running(self.pid, self._start_time):
            # collect first: once the listener is gone its sessions hang off PID 1
            procs.update({pid: _start_time(pid) for pid in _descendants(self.pid)})
        _terminate(procs)
        _reap(self._process)
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
                f"unlock it with: usermod -p '*' {user}  (or {_INSTALL_HINT})"
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


def _spawn(
    argv: Sequence[str],
    log: Path,
    account: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, output to ``log``, optionally as ``account``."""
    env = {"PATH": _SEARCH_PATH, "LANG": "C.UTF-8", "HOME": "/root", "USER": "root"}
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    with open(log, "ab") as out:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd="/",
                env=env,
                start_new_session=True,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
            )
        except OSError as error:
            raise HarnessError(f"cannot start {argv[0]}: {error}; {_INSTALL_HINT}") from error


# --------------------------------------------------------------------------------- rootfs

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
alice:x:1001:1001:alice:/home/alice:/bin/sh
app:x:1002:1002:app user:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP = """\
root:x:0:
wheel:x:10:app
staff:x:50:app,alice
alice:x:1001:
app:x:1002:
nogroup:x:65534:
"""
#: Directories of the rootfs: path -> (mode, inside uid, inside gid).
_DIRECTORIES = {
    "bin": (0o755, 0, 0),
    "sbin": (0o755, 0, 0),
    "usr": (0o755, 0, 0),
    "usr/bin": (0o755, 0, 0),
    "usr/sbin": (0o755, 0, 0),
    "etc": (0o755, 0, 0),
    "proc": (0o555, 0, 0),
    "sys": (0o555, 0, 0),
    "dev": (0o755, 0, 0),
    "run": (0o755, 0, 0),
    "tmp": (0o1777, 0, 0),
    "var": (0o755, 0, 0),
    "var/tmp": (0o1777, 0, 0),
    "root": (0o700, 0, 0),
    "home": (0o755, 0, 0),
    "home/alice": (0o755, 1001, 1001),
    "home/app": (0o755, 1002, 1002),
}


@functools.cache
def _busybox_applets() -> tuple[str, ...]:
    """Applet paths (``bin/sh``, ``usr/bin/awk``, ...) of the host's static busybox."""
    if not os.access(BUSYBOX, os.X_OK):
        raise HarnessError(f"{BUSYBOX} is missing (package busybox-static); {_INSTALL_HINT}")
    return tuple(_run([BUSYBOX, "--list-full"], "busybox --list-full").split())


def build_rootfs(
    directory: Path,
    hostname: str,
    owner: tuple[int, int] | None = None,
    *,
    single_owner: bool = False,
) -> Path:
    """Build a busybox-static root filesystem in ``directory`` and return it.

    It holds busybox and its applets (``/bin/sh``, ...), ``/etc/hostname``, and
    ``/etc/passwd`` and ``/etc/group`` with root, alice (1001), app (1002, in
    wheel and staff) and nobody; ``/home/alice`` and ``/home/app`` belong to their
    users, ``/tmp`` and ``/var/tmp`` are 1777.

    :param owner:
        ``(uid, gid)`` that inside id 0 maps to, for a user namespace: every
        file is chowned to ``owner + inside id``. None keeps host ids.
    :param single_owner:
        chown every file to ``owner`` itself (for ``--map-root-user``, which
        maps nothing but 0).
    """
    rootfs = Path(directory)
    rootfs.mkdir(parents=True, exist_ok=True)
    rootfs.chmod(0o755)
    for name, (mode, _, _) in _DIRECTORIES.items():
        (rootfs / name).mkdir(exist_ok=True)
        (rootfs / name).chmod(mode)
    if not os.access(BUSYBOX, os.X_OK):
        raise HarnessError(f"{BUSYBOX} is missing (package busybox-static); {_INSTALL_HINT}")
    shutil.copyfile(BUSYBOX, rootfs / "bin/busybox")
    (rootfs / "bin/busybox").chmod(0o755)
    for applet in _busybox_applets():  # what ``busybox --install -s`` does, without chroot
        link = rootfs / applet
        if link.parent.is_dir() and not os.path.lexists(link):
            link.symlink_to("/bin/busybox")
    for name, text in (("hostname", f"{hostname}\n"), ("passwd", _PASSWD), ("group", _GROUP)):
        (rootfs / "etc" / name).write_text(text)
        (rootfs / "etc" / name).chmod(0o644)  # whatever the umask: every user inside reads them
    base_uid, base_gid = owner if owner is not None else (0, 0)

    def host_ids(uid: int, gid: int) -> tuple[int, int]:
        return (base_uid, base_gid) if single_owner else (base_uid + uid, base_gid + gid)

    for path in _walk(rootfs):
        os.lchown(path, *host_ids(0, 0))
    for name, (mode, uid, gid) in _DIRECTORIES.items():
        os.chown(rootfs / name, *host_ids(uid, gid))
        (rootfs / name).chmod(mode)
    return rootfs


def _walk(top: Path) -> Iterable[str]:
    yield str(top)
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            yield os.path.join(parent, name)


# --------------------------------------------------------------------------------- containers

_NAMESPACES = (
    "--fork", "--kill-child", "--pid", "--mount", "--uts", "--ipc", "--net", "--cgroup",
    "--time", "--propagation", "unchanged",
)  # fmt: skip

# Runs as PID 1 of the new namespaces with the host's tools until pivot_root (or chroot, where
# the host's "/" is no mount point), then execs the rootfs' busybox sh with a clean
# environment; that sh stays PID 1 (the leader).
_INNER = r"""
set -e
R=$1; H=$2; shift 2
hostname "$H"
# "/" is not a mount point when the host itself runs in a chroot: then neither
# --propagation private nor pivot_root work, and the leader is chrooted instead.
mount --make-rprivate / 2>/dev/null || true
mount --bind "$R" "$R"
mount --make-private "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys" 2>/dev/null || true
mount -t tmpfs -o mode=755,size=1m dev "$R/dev"
for d in null zero full random urandom tty; do
  : > "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"
done
ln -s /proc/self/fd "$R/dev/fd"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
cd "$R"; mkdir -p .oldroot
if pivot_root . .oldroot 2>/dev/null; then
  cd /; umount -l /.oldroot; rmdir /.oldroot; C=
else
  rmdir .oldroot; C="chroot ."
fi
# the remaining arguments are the caller's extra NAME=value entries (Container.start env=)
exec $C env -i PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root container=fabns FABNS_CTR="$H" \
  'FABNS_SPACED=a b  c' "$@" \
  /bin/sh -c 'ip link set lo up; trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done'
"""


@dataclass
class Container:
    """A long-lived busybox container: ``unshare`` into new namespaces, ``pivot_root``.

    Its leader (PID 1 inside, `leader_pid` on the host) is busybox ``sh``
    with hostname `name` and the environment ``PATH``, ``HOME=/root``,
    ``container=fabns``, ``FABNS_CTR=<name>`` and ``FABNS_SPACED='a b  c'``
    (plus `env`); ``/tmp`` is a tmpfs only the container sees.
    """

    #: Also the hostname inside.
    name: str
    #: ``"plain"``: no user namespace (root only); ``"maproot"``: ``unshare
    #: --map-root-user``, inside 0 = the owner; ``"subid"``: inside 0..65535 = the
    #: owner's /etc/subuid and /etc/subgid range (newuidmap).
    mode: str
    #: User who runs ``unshare`` and owns the user namespace.
    owner: str
    rootfs: Path
    #: PID 1 of the container, as the host sees it.
    leader_pid: int
    #: The ``unshare`` process (the leader's parent).
    unshare_pid: int
    #: Holds ``rootfs/`` and ``console.log``.
    directory: Path
    #: Extra variables in the leader's environment (given to `start`), e.g. a hostile
    #: container's ``LD_PRELOAD``; kept by `restart`.
    env: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _start_times: tuple[int | None, int | None] = field(
        default=(None, None), repr=False, compare=False
    )
    _stopped: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def start(
        cls,
        directory: Path,
        name: str,
        mode: str = "plain",
        owner: str = "root",
        *,
        env: Mapping[str, str] | None = None,
        prepare: Callable[[Path], None] | None = None,
    ) -> Container:
        """Start container ``name`` in ``directory/name`` and wait until its leader runs.

        The root filesystem is built on first start and reused by later ones,
        so files written inside survive `restart`.

        :param env:
            extra ``NAME: value`` entries for the leader's environment (added to,
            or replacing, the standard ones above); passed as single argv words,
            never through a shell. Everything fabns reads as "the container's
            environment" then holds them -- e.g. a hostile ``LD_PRELOAD``.
        :param prepare:
            called with the rootfs path right after it is built (first start
            only), before the leader starts: replace ``/bin/sh``, make
            ``/etc/passwd`` a FIFO, ... Runs as root on the host; host ids. If
            it raises, the half-prepared rootfs is removed again.
        """
        require_root()
        if mode not in MODES:
            raise HarnessError(f"unknown container mode {mode!r}; choose from {MODES}")
        extra_env = _check_env(env or {})
        account = _account(owner)
        privileged = account.pw_uid == 0
        if mode == "plain" and not privileged:
            raise HarnessError(f"mode 'plain' needs root, not {owner!r}: use maproot or subid")
        home = Path(directory).resolve() / name
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o755)
        if not privileged:
            _check_traversable(home, owner)
        userns: list[str] = []
        ids: tuple[int, int] | None = None
        if mode == "maproot":
            userns = ["--user", "--map-root-user"]
            ids = None if privileged else (account.pw_uid, account.pw_gid)
        elif mode == "subid":
            uid = _subordinate_start(owner, "/etc/subuid")
            gid = _subordinate_start(owner, "/etc/subgid")
            # util-linux 2.38 wants outer,inner,count
            userns = [
                "--user", f"--map-users={uid},0,65536", f"--map-groups={gid},0,65536",
                "--setuid", "0", "--setgid", "0",
            ]  # fmt: skip
            ids = (uid, gid)
        rootfs = home / "rootfs"
        if not (rootfs / "bin/busybox").exists():
            build_rootfs(rootfs, name, ids, single_owner=mode == "maproot")
            if prepare is not None:
                try:
                    prepare(rootfs)
                except BaseException:
                    shutil.rmtree(rootfs, ignore_errors=True)  # never reused unprepared
                    raise
        log = home / "console.log"
        log.write_bytes(b"")
        argv = ["unshare", *userns, *_NAMESPACES, "--", "/bin/sh", "-c", _INNER, "sh"]
        assignments = [f"{key}={value}" for key, value in extra_env.items()]
        process = _spawn(
            [*argv, str(rootfs), name, *assignments], log, None if privileged else account
        )
        try:
            leader = _wait_leader(process, log, name)
        except BaseException:
            _signal(process.pid, signal.SIGKILL, None)
            _reap(process)
            raise
        return cls(
            name=name,
            mode=mode,
            owner=owner,
            rootfs=rootfs,
            leader_pid=leader,
            unshare_pid=process.pid,
            directory=home,
            env=extra_env,
            _process=process,
            _start_times=(_start_time(process.pid), _start_time(leader)),
        )

    def stop(self) -> None:
        """Kill the container and wait until its leader and ``unshare`` are gone.

        The leader is killed first, so ``unshare`` reaps it at once: afterwards
        ``/proc/<leader_pid>`` no longer exists (no zombie waiting for PID 1).
        Safe to call twice.
        """
        if self._stopped:
            return
        unshare_start, leader_start = self._start_times
        _signal(self.leader_pid, signal.SIGKILL, leader_start)
        deadline = time.monotonic() + TIMEOUT
        while (found := _proc_stat(self.leader_pid)) is not None and found[2] == leader_start:
            if found[0] == "Z" and found[1] != self.unshare_pid:
                break  # orphaned (unshare died first): PID 1 of the host reaps it, eventually
            if time.monotonic() > deadline:
                raise HarnessError(f"container {self.name}: leader {self.leader_pid} survived")
            time.sleep(0.002)
        # unshare exits once its child is gone; it blocks SIGTERM, so SIGKILL if it lingers
        # (with --kill-child that would also have killed the leader)
        if self._process is None or self._process.poll() is None:
            _signal(self.unshare_pid, signal.SIGKILL, unshare_start)
        _reap(self._process)
        if _wait_gone({self.unshare_pid: unshare_start}, TIMEOUT):
            raise HarnessError(f"container {self.name}: unshare {self.unshare_pid} survived")
        self._stopped = True

    def restart(self) -> Container:
        """Stop and start again with the same name, rootfs, mode and owner; returns ``self``.

        The leader gets a new PID (and new namespaces); this object is updated
        in place so whoever holds it (e.g. `Harness`) still stops the new one.
        """
        self.stop()
        new = Container.start(
            self.directory.parent, self.name, self.mode, self.owner, env=self.env
        )
        self.__dict__.update(new.__dict__)
        return self

    def inside(self, path: str) -> Path:
        """Host path of ``path`` as the container sees it (its mounts, its ``/tmp``).

        ``/proc/<leader>/root/<path>``: only while the leader runs. Absolute
        symlinks found *below* it resolve against the host's root, not the
        container's -- use ``os.lstat``/``os.readlink`` on what the container
        may have planted, never ``open`` through it.
        """
        return Path(f"/proc/{self.leader_pid}/root") / path.lstrip("/")

    def describe(self) -> dict[str, object]:
        """JSON-able state, enough for `stop_described`."""
        return {
            "name": self.name,
            "mode": self.mode,
            "owner": self.owner,
            "rootfs": str(self.rootfs),
            "leader_pid": self.leader_pid,
            "unshare_pid": self.unshare_pid,
            "directory": str(self.directory),
            "start_times": list(self._start_times),
            "env": dict(self.env),
        }

    @classmethod
    def from_description(cls, state: Mapping[str, Any]) -> Container:
        """The container `describe` described (possibly started by another process)."""
        unshare_start, leader_start = state["start_times"]
        return cls(
            name=state["name"],
            mode=state["mode"],
            owner=state["owner"],
            rootfs=Path(state["rootfs"]),
            leader_pid=int(state["leader_pid"]),
            unshare_pid=int(state["unshare_pid"]),
            directory=Path(state["directory"]),
            env=dict(state.get("env") or {}),
            _start_times=(unshare_start, leader_start),
        )


def _check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Extra leader environment: valid names, no NUL (no argv word can hold one)."""
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise HarnessError(f"not an environment variable name: {key!r}")
        if "\0" in str(value):
            raise HarnessError(f"environment value of {key} holds a NUL byte: {value!r}")
        checked[str(key)] = str(value)
    return checked


def _check_traversable(path: Path, user: str) -> None:
    """An unprivileged owner (and its sub-ids) must be able to reach the rootfs."""
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise HarnessError(
                f"{parent} is not traversable by others (mode "
                f"{stat.filemode(parent.stat().st_mode)}), so {user}'s container cannot reach "
                f"its root filesystem below it; use a directory like Harness does (mode 0755)"
            )


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _wait_leader(process: subprocess.Popen[bytes], log: Path, name: str) -> int:
    """The leader's PID once it exec'd the rootfs shell and that started its ``sleep``."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        # unshare may also have a short-lived newuidmap helper child: look at all of them
        for leader in _children(process.pid):
            if any(_comm(child) == "sleep" for child in _children(leader)):
                return leader
        if process.poll() is not None:
            raise HarnessError(
                f"container {name}: unshare exited {process.returncode} before the leader "
                f"was ready; console:\n{_tail(log)}"
            )
        time.sleep(0.002)
    raise HarnessError(
        f"container {name}: leader not ready within {TIMEOUT:.0f}s; console:\n{_tail(log)}"
    )


# --------------------------------------------------------------------------------- harness

#: The standard containers: key -> (name and hostname, mode, owner).
STANDARD_CONTAINERS = {
    "plain": ("fabns-plain", "plain", "root"),
    "rootns": ("fabns-rootns", "maproot", "root"),
    "alice-maproot": ("fabns-amap", "maproot", TEST_USER),
    "alice-subid": ("fabns-asub", "subid", TEST_USER),
}


def chroot_limitation() -> str | None:
    """Why user namespaces cannot be made here, when this process runs in a chroot.

    The kernel refuses ``unshare(CLONE_NEWUSER)`` (EPERM) and ``pivot_root``
    to a process whose root is not its mount namespace's root -- a chroot, as
    in a bootstrap or image-build environment. Seen from inside such a chroot,
    no mount in ``/proc/self/mountinfo`` has the mount point ``/``. Returns
    None on a normal machine.
    """
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if len(line.split()) > 4]
    except OSError:
        return None
    if "/" in points:
        return None
    return (
        "this process runs in a chroot (its root is no mount point), where the kernel "
        "refuses user namespaces and pivot_root; user-namespaced containers need a real root"
    )


@dataclass
class Harness:
    """Everything the behaviour tests need: one sshd and the standard containers.

    ``containers`` maps the keys of `STANDARD_CONTAINERS` (``"plain"``,
    ``"rootns"``, ``"alice-maproot"``, ``"alice-subid"``) to running `Container` s.
    """

    sshd: SSHServer
    containers: dict[str, Container]
    #: A 0755 directory holding the sshd's files and the containers.
    directory: Path
    #: Standard containers that cannot exist on this machine, with the reason (see
    #: `chroot_limitation`); empty on a normal machine.
    unavailable: dict[str, str] = field(default_factory=dict)
    _remove_directory: bool = field(default=True, repr=False, compare=False)

    @classmethod
    def start(cls, directory: Path | None = None) -> Harness:
        """Start the sshd and the standard containers in ``directory`` (default: a new temp dir).

        If any piece fails, what was started is stopped again before `HarnessError` is raised.
        """
        require_root()
        created = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="fabns-harness-", dir="/tmp"))
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # the unprivileged owners' containers live below it
        sshd: SSHServer | None = None
        containers: dict[str, Container] = {}
        try:
            sshd = SSHServer.start(directory / "sshd")
            (directory / "containers").mkdir(exist_ok=True)
            (directory / "containers").chmod(0o755)
            limitation = chroot_limitation()
            unavailable: dict[str, str] = {}
            for key, (name, mode, owner) in STANDARD_CONTAINERS.items():
                if mode != "plain" and limitation:
                    unavailable[key] = limitation
                    continue
                containers[key] = Container.start(directory / "containers", name, mode, owner)
        except BaseException:
            _stop_all(sshd, containers.values())
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(
            sshd=sshd,
            containers=containers,
            directory=directory,
            unavailable=unavailable,
            _remove_directory=created,
        )

    def stop(self) -> None:
        """Stop every container and the sshd (by PID), then remove the directory if it made it."""
        _stop_all(self.sshd, self.containers.values())
        if self._remove_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, object]:
        """JSON-able state (ports, PIDs, paths), enough for `stop_described` in another process."""
        sshd = self.sshd
        return {
            "directory": str(self.directory),
            "remove_directory": self._remove_directory,
            "sshd": {
                "directory": str(sshd.directory),
                "host": sshd.host,
                "port": sshd.port,
                "pid": sshd.pid,
                "start_time": sshd._start_time,
                "client_key": str(sshd.client_key),
                "known_hosts": str(sshd.known_hosts),
            },
            "containers": {key: ctr.describe() for key, ctr in self.containers.items()},
        }

    @classmethod
    def from_description(cls, state: Mapping[str, Any]) -> Harness:
        """The harness `describe` described, e.g. one started by ``inv harness-up``."""
        s = state["sshd"]
        sshd = SSHServer(
            directory=Path(s["directory"]),
            port=int(s["port"]),
            pid=int(s["pid"]),
            client_key=Path(s["client_key"]),
            known_hosts=Path(s["known_hosts"]),
            host=s["host"],
            _start_time=s["start_time"],
        )
        containers = {
            key: Container.from_description(ctr) for key, ctr in state["containers"].items()
        }
        return cls(
            sshd=sshd,
            containers=containers,
            directory=Path(state["directory"]),
            _remove_directory=bool(state["remove_directory"]),
        )

    @classmethod
    def stop_described(cls, state: Mapping[str, Any]) -> None:
        """Stop a harness from its `describe` output (PIDs are checked against start times)."""
        cls.from_description(state).stop()


def _stop_all(sshd: SSHServer | None, containers: Iterable[Container]) -> None:
    """Stop everything, even when one piece fails; then raise the first failure."""
    errors: list[BaseException] = []
    pieces: list[Container | SSHServer] = [*containers, *([sshd] if sshd is not None else [])]
    for piece in pieces:
        try:
            piece.stop()
        except Exception as error:
            errors.append(error)
    if errors:
        raise HarnessError(f"stopping the harness failed: {errors}") from errors[0]
