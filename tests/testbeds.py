"""Real container engines for tests: machined + nspawn, LXC, Podman, a user's systemd.

CI infrastructure of the fabns test suite, not shipped with the package. Where
`fabns.testing` makes bare ``unshare`` containers, this module starts the
engines whose *names* fabns resolves to leader PIDs, for real, on a host
without systemd as PID 1 (the workarounds are those measured in the team's
test-infrastructure notes):

- `SystemBus` and `Machined`: a D-Bus system bus and ``systemd-machined``
  started by hand; ``machinectl show NAME -p Leader`` works once a leader sits
  in a ``*.scope`` cgroup and is registered with ``RegisterMachine``.
- `NspawnMachine`: ``systemd-nspawn --keep-unit --register=yes``.
- `LxcContainer`: privileged (root) or unprivileged (owned by `TEST_USER`).
- `DelegatedCgroup` and `UserManager`: a cgroup subtree handed to a user, as
  systemd's ``Delegate=yes`` would, and a real ``systemd --user`` inside it,
  so ``lxc-attach`` and ``systemd-run --user --scope`` work for that user.
- `PodmanContainer`: rootful or rootless, image imported from a busybox rootfs.
- `EngineBeds`: all of the above at once, plus an sshd whose sessions start
  inside the user's delegated cgroup.

Every piece is stopped by the PIDs it started, never by name, and removes what
it created (cgroups, run directories, storage) so the machine is left as
found. A piece that cannot start raises `HarnessError` with the reason and its
logs. Needs root and what ``scripts/install.sh`` installs.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from fabns.testing import SSHServer, build_rootfs
from fabns.testing.base import (
    TEST_USER,
    TIMEOUT,
    HarnessError,
    require_root,
)
from fabns.testing.base import account as _account
from fabns.testing.base import descendants as _descendants
from fabns.testing.base import is_running as _is_running
from fabns.testing.base import reap as _reap
from fabns.testing.base import spawn as _spawn
from fabns.testing.base import start_time as _start_time
from fabns.testing.base import subordinate_start as _subordinate_start
from fabns.testing.base import tail as _tail
from fabns.testing.base import terminate as _terminate

__all__ = [
    "BUS_SOCKET",
    "PODMAN_IMAGE",
    "DelegatedCgroup",
    "EngineBeds",
    "LxcContainer",
    "Machined",
    "NspawnMachine",
    "PodmanContainer",
    "SystemBus",
    "UserManager",
]

#: The system bus socket every D-Bus client (busctl, machinectl, nspawn) uses.
BUS_SOCKET = Path("/run/dbus/system_bus_socket")
#: Exists while the host "runs systemd" (``sd_booted()``); machinectl and ``systemd --user``
#: insist on it.
SYSTEMD_RUN = Path("/run/systemd/system")
MACHINED = "/lib/systemd/systemd-machined"
USER_MANAGER = "/lib/systemd/systemd"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The image `PodmanContainer` imports from a busybox rootfs.
PODMAN_IMAGE = "localhost/fabns-busybox"
#: The leader's program in nspawn and podman containers: busybox sh that exits on TERM.
LOOP = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done'
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INSTALL_HINT = "run scripts/install.sh as root to prepare this machine"
_MACHINE1 = (
    "org.freedesktop.machine1",
    "/org/freedesktop/machine1",
    "org.freedesktop.machine1.Manager",
)


# --------------------------------------------------------------------------------- commands


def _user_argv(owner: str, argv: Sequence[str]) -> list[str]:
    """``argv`` as ``owner`` with a clean login-like environment (``XDG_RUNTIME_DIR`` too)."""
    account = _account(owner)
    env = [
        f"HOME={account.pw_dir}",
        f"USER={owner}",
        f"LOGNAME={owner}",
        f"PATH={_PATH}",
        "LANG=C.UTF-8",
    ]
    if account.pw_uid == 0:
        return ["env", "-i", *env, *argv]
    env.append(f"XDG_RUNTIME_DIR={_runtime_dir(account)}")
    setpriv = ["setpriv", f"--reuid={owner}", f"--regid={account.pw_gid}", "--init-groups"]
    return [*setpriv, "env", "-i", *env, *argv]


def _runtime_dir(account: pwd.struct_passwd) -> Path:
    return Path(f"/run/user/{account.pw_uid}")


def _call(
    argv: Sequence[str],
    what: str,
    *,
    check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run a short command and return it; `HarnessError` with its output if it fails."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd="/",
            env={"PATH": _PATH, "LANG": "C.UTF-8", "HOME": "/root"},
        )
    except OSError as error:
        raise HarnessError(f"{what}: cannot run {argv[0]}: {error}; {_INSTALL_HINT}") from error
    except subprocess.TimeoutExpired as error:
        raise HarnessError(f"{what}: {shlex.join(argv)} hung for {timeout:.0f}s") from error
    if check and done.returncode != 0:
        raise HarnessError(
            f"{what}: {shlex.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done


def _wait_for(what: str, ready: Callable[[], bool], log: Path | None = None) -> None:
    """Poll ``ready()`` until it is true; `HarnessError` (with ``log``) after `TIMEOUT`."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            tail = f":\n{_tail(log)}" if log is not None else ""
            raise HarnessError(f"{what} within {TIMEOUT:.0f}s{tail}")
        time.sleep(0.005)


def _stop_popen(process: subprocess.Popen[bytes] | None, pid: int, start: int | None) -> None:
    """TERM (then KILL) our child ``pid`` and the processes below it, and reap it."""
    procs: dict[int, int | None] = {pid: start}
    if _is_running(pid, start):
        procs.update({child: _start_time(child) for child in _descendants(pid)})
    _terminate(procs, grace=3.0)
    _reap(process)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    return int(data[data.rindex(b")") + 2 :].split()[1])


def _socket_served(path: Path) -> bool:
    """Whether something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class _Errors:
    """Collects failures while stopping many pieces; raises them together at the end."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @contextlib.contextmanager
    def collect(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            self.found.append(f"{what}: {error}")

    def raise_any(self, what: str) -> None:
        if self.found:
            raise HarnessError(f"{what} failed:\n  " + "\n  ".join(self.found))


# --------------------------------------------------------------------------------- cgroups


def _cgroup_mounts() -> dict[Path, str]:
    """Mount point -> type (``cgroup`` or ``cgroup2``) of every cgroup hierarchy."""
    found: dict[Path, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            kind = right.split()[0]
            point = Path(left.split()[4])
            if kind in ("cgroup", "cgroup2") and (point / "cgroup.procs").exists():
                found.setdefault(point, kind)
    return found


def _hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, name=systemd, cgroup2)."""
    return list(_cgroup_mounts())


def _machine_hierarchies() -> list[Path]:
    """Where machined looks for a unit: cgroup2 (root or ``unified/``) and name=systemd."""
    mounts = _cgroup_mounts()
    found = [point for point, kind in mounts.items() if kind == "cgroup2"]
    return found + [point for point in mounts if point == CGROUP_ROOT / "systemd"]


def _cgroup_procs(top: Path) -> set[int]:
    """Every PID in cgroup ``top`` and below."""
    pids: set[int] = set()
    if not top.is_dir():
        return pids
    for parent, _dirs, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                text = Path(parent, "cgroup.procs").read_text()
                pids.update(int(pid) for pid in text.split())
    return pids


def _remove_cgroup(top: Path) -> None:
    """Remove cgroup ``top`` and every cgroup below it (they must hold no process)."""
    if not top.is_dir():
        return
    dirs = [Path(parent) for parent, _, _ in os.walk(top)]
    deadline = time.monotonic() + TIMEOUT
    for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        while True:
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as error:
                # EBUSY while an exiting task is still being released
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise HarnessError(
                        f"cannot remove cgroup {path}: {error}; "
                        f"processes in it: {sorted(_cgroup_procs(path))}"
                    ) from error
                time.sleep(0.01)


def _enter_argv(cgroups: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """``argv`` started by a shell that first moves itself into ``cgroups`` (as root)."""
    moves = " ".join(shlex.quote(str(group / "cgroup.procs")) for group in cgroups)
    script = f'for f in {moves}; do echo $$ > "$f" || exit 125; done; exec "$@"'
    return ["sh", "-c", script, "sh", *argv]


def _kill_cgroups(tops: Sequence[Path]) -> None:
    """TERM, then KILL, every process in ``tops`` and below, until they are empty."""
    deadline = time.monotonic() + TIMEOUT
    sig = signal.SIGTERM
    term_sent = time.monotonic()
    while True:
        pids = {pid for top in tops for pid in _cgroup_procs(top) if _is_running(pid)}
        if not pids:
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"processes {sorted(pids)} survived in {[str(t) for t in tops]}")
        if sig == signal.SIGTERM and time.monotonic() - term_sent > 1.0:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.02)


@dataclass
class DelegatedCgroup:
    """A cgroup ``name`` in every hierarchy, handed to ``user`` (systemd's ``Delegate=yes``).

    Processes started in it (`wrap`, `enter`) may create and move processes into
    cgroups below it as ``user``, which unprivileged LXC and ``systemd --user`` need
    (cgroup2 only lets a user move processes whose common ancestor cgroup the
    user may write).
    """

    user: str
    name: str
    #: The cgroup in each hierarchy.
    groups: list[Path]

    @classmethod
    def create(cls, user: str, name: str) -> DelegatedCgroup:
        """Create cgroup ``name`` at the top of each hierarchy, owned by ``user``.

        An empty one left by an earlier run is adopted; one holding processes is refused.
        """
        require_root()
        account = _account(user)
        delegated = cls(user=user, name=name, groups=[])
        try:
            for point in _hierarchies():
                group = point / name
                if _cgroup_procs(group):
                    raise HarnessError(
                        f"cgroup {group} is in use (processes {sorted(_cgroup_procs(group))}): "
                        "are other engine beds running?"
                    )
                group.mkdir(exist_ok=True)
                delegated.groups.append(group)
                if (point / "cpuset.cpus").exists():  # v1 cpuset: a new child has no CPUs
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (group / knob).write_text((point / knob).read_text())
                    (group / "cgroup.clone_children").write_text("1")
                for path in [group, *group.iterdir()]:
                    if path.is_dir() or path.name.startswith(("cgroup.", "tasks", "notify_")):
                        os.chown(path, account.pw_uid, account.pw_gid)
        except OSError as error:
            delegated.stop()
            raise HarnessError(f"cannot delegate cgroup {name} to {user}: {error}") from error
        except BaseException:
            delegated.stop()
            raise
        # deliberately no controller in cgroup2's subtree_control: with hugetlb there crun
        # refuses the "hybrid" layout
        return delegated

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` to run as root: it moves itself into this cgroup, then execs ``argv``."""
        return _enter_argv(self.groups, argv)

    def enter(self, pid: int) -> None:
        """Move process ``pid`` (not its existing children) into this cgroup."""
        for group in self.groups:
            (group / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        """Every process in this cgroup and below, in any hierarchy."""
        return {pid for group in self.groups for pid in _cgroup_procs(group)}

    def stop(self) -> None:
        """Kill whatever still runs in it, then remove it (and everything below)."""
        _kill_cgroups(self.groups)
        errors = _Errors()
        for group in self.groups:
            with errors.collect(f"cgroup {group}"):
                _remove_cgroup(group)
        errors.raise_any(f"removing cgroup {self.name}")


# --------------------------------------------------------------------------------- leftovers

_Kind = Literal["tree", "dir", "file", "cgroup"]


class _Leftovers:
    """Paths tools create on first use, removed when their last user is done.

    A path that existed when its first user came along is never touched.
    """

    def __init__(self) -> None:
        self._users: dict[Path, set[str]] = {}
        self._absent: dict[Path, _Kind] = {}
        self._held: dict[str, list[Path]] = {}

    def acquire(self, token: str, paths: Sequence[tuple[Path, _Kind]]) -> None:
        """``token`` starts using ``paths`` (parents before children)."""
        held = self._held.setdefault(token, [])
        for path, kind in paths:
            users = self._users.setdefault(path, set())
            if not users:
                if os.path.lexists(path):
                    self._absent.pop(path, None)
                else:
                    self._absent[path] = kind
            if token not in users:
                users.add(token)
                held.append(path)

    def absent_before(self, path: Path) -> bool:
        """Whether ``path`` did not exist before its current users came along."""
        return path in self._absent

    def keep(self, path: Path) -> None:
        """Never remove ``path``: someone else has come to rely on it."""
        self._absent.pop(path, None)

    def last_user(self, token: str, path: Path) -> bool:
        """Whether nobody but ``token`` uses ``path``."""
        return self._users.get(path, set()) <= {token}

    def release(self, token: str) -> None:
        """``token`` is done; remove what nobody uses any more and did not exist before."""
        errors = _Errors()
        for path in reversed(self._held.pop(token, [])):
            users = self._users.get(path, set())
            users.discard(token)
            if users:
                continue
            self._users.pop(path, None)
            kind = self._absent.pop(path, None)
            if kind is not None:
                with errors.collect(f"removing {path}"):
                    _remove(path, kind)
        errors.raise_any("cleaning up")


def _remove(path: Path, kind: _Kind) -> None:
    if kind == "cgroup":
        _remove_cgroup(path)
    elif kind == "dir":
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    elif kind == "file":
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir() and not path.is_symlink():
        _unmount_below(path)
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _unmount_below(path: Path) -> None:
    """Unmount whatever is mounted at or below ``path`` (deepest first)."""
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point == str(path) or point.startswith(f"{path}/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        _call(["umount", "-l", point], f"unmounting {point}", check=False)


_LEFTOVERS = _Leftovers()


def _cgroups_named(name: str) -> list[tuple[Path, _Kind]]:
    return [(point / name, "cgroup") for point in _hierarchies()]


def _home_paths(owner: str, *relative: str) -> list[tuple[Path, _Kind]]:
    """``owner``'s home and runtime paths: parents as "dir", the tool's own as "tree"."""
    account = _account(owner)
    home = Path(account.pw_dir)
    paths: list[tuple[Path, _Kind]] = []
    for rel in relative:
        parts = Path(rel).parts
        base = _runtime_dir(account) if parts[0] == "RUNTIME" else home / parts[0]
        if parts[0] != "RUNTIME":
            paths.append((base, "dir" if len(parts) > 1 else "tree"))
        for depth, part in enumerate(parts[1:], start=2):
            base = base / part
            paths.append((base, "dir" if depth < len(parts) else "tree"))
    return paths


# --------------------------------------------------------------------------------- run dirs


def _make_dirs(path: Path, mode: int = 0o755) -> list[Path]:
    """``mkdir -p path``; returns the directories it created, topmost first."""
    missing: list[Path] = []
    for candidate in [path, *path.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        directory.mkdir(mode=mode)
    return list(reversed(missing))


def _ensure_runtime_dir(owner: str, token: str) -> None:
    """``/run/user/UID`` for ``owner`` (what pam_systemd makes), removed with ``token``."""
    account = _account(owner)
    runtime = _runtime_dir(account)
    _LEFTOVERS.acquire(token, [(runtime, "tree")])
    if not runtime.is_dir():
        runtime.mkdir(mode=0o700, parents=True)
        os.chown(runtime, account.pw_uid, account.pw_gid)


# --------------------------------------------------------------------------------- D-Bus


@dataclass
class SystemBus:
    """A D-Bus system bus (``dbus-daemon --system``) on `BUS_SOCKET`, started by hand.

    While it runs, do not run apt: its hooks would D-Bus-activate packagekitd and
    polkitd, which die with this bus.
    """

    pid: int
    directory: Path
    _start_time: int | None = field(default=None, repr=False)
    _token: str = field(default="", repr=False)
    _stopped: bool = field(default=False, repr=False)

    @staticmethod
    def served() -> bool:
        """Whether some system bus answers on `BUS_SOCKET`."""
        return _socket_served(BUS_SOCKET)

    @classmethod
    def start(cls, directory: Path) -> SystemBus:
        """Start the system bus (logs in ``directory``); `HarnessError` if one already runs."""
        require_root()
        if cls.served():
            raise HarnessError(f"a system bus already answers on {BUS_SOCKET}")
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        token = f"dbus:{id(directory)}:{time.monotonic_ns()}"
        run = BUS_SOCKET.parent
        _LEFTOVERS.acquire(token, [(run, "tree")])
        run.mkdir(parents=True, exist_ok=True)
        # a bus that died leaves its pid file behind, and dbus-daemon then refuses to start
        for stale in (run / "pid", BUS_SOCKET):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        log, pid_file = directory / "dbus.log", directory / "dbus.pid"
        with open(log, "wb") as out, open(pid_file, "wb") as pid_out:
            try:
                done = subprocess.run(
                    ["dbus-daemon", "--system", "--fork", "--print-pid"],
                    stdin=subprocess.DEVNULL,
                    stdout=pid_out,
                    stderr=out,
                    env={"PATH": _PATH, "LANG": "C.UTF-8"},
                    cwd="/",
                    timeout=TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                _LEFTOVERS.release(token)
                raise HarnessError(f"dbus-daemon: {error}; {_INSTALL_HINT}") from error
        text = pid_file.read_text().strip()
        if done.returncode != 0 or not text.isdigit():
            _LEFTOVERS.release(token)
            raise HarnessError(f"dbus-daemon --system exited {done.returncode}:\n{_tail(log)}")
        pid = int(text)
        bus = cls(pid=pid, directory=directory, _start_time=_start_time(pid), _token=token)
        try:
            _wait_for("the system bus did not answer", cls.served, log)
        except BaseException:
            bus.stop()
            raise
        return bus

    def stop(self) -> None:
        """Kill the bus (and whatever it activated) by PID; remove its socket and pid file."""
        if self._stopped:
            return
        procs: dict[int, int | None] = {self.pid: self._start_time}
        if _is_running(self.pid, self._start_time):
            procs.update({child: _start_time(child) for child in _descendants(self.pid)})
            _terminate(procs)
        for stale in (BUS_SOCKET.parent / "pid", BUS_SOCKET):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        self._stopped = True
        _LEFTOVERS.release(self._token)


# --------------------------------------------------------------------------------- machined


@dataclass
class Machined:
    """``systemd-machined`` started by hand, on our own `SystemBus` if none answers.

    It also creates ``/run/systemd/system`` (machinectl refuses to work unless the
    host looks booted with systemd) and removes it again on `stop` if it made it.
    """

    pid: int
    directory: Path
    #: The bus it started (None if another system bus was already there).
    bus: SystemBus | None
    #: Registered machine -> the scope cgroups `register` made for it.
    machines: dict[str, list[Path]] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _start_time: int | None = field(default=None, repr=False)
    _token: str = field(default="", repr=False)
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, directory: Path) -> Machined:
        """Start machined (and a system bus if needed); wait until it owns its bus name."""
        require_root()
        if not os.access(MACHINED, os.X_OK):
            raise HarnessError(
                f"{MACHINED} is missing (package systemd-container); {_INSTALL_HINT}"
            )
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        bus = None if SystemBus.served() else SystemBus.start(directory)
        if _busctl_status("org.freedesktop.machine1"):
            if bus is not None:
                bus.stop()
            raise HarnessError("org.freedesktop.machine1 is already served by another machined")
        token = f"machined:{time.monotonic_ns()}"
        _LEFTOVERS.acquire(
            token,
            [
                (Path("/run/systemd"), "dir"),
                (SYSTEMD_RUN, "tree"),
                (Path("/run/systemd/machines"), "tree"),
                (Path("/run/systemd/userdb"), "tree"),
                (Path("/run/systemd/userdb/io.systemd.Machine"), "file"),
                *[(point / "machine.slice", "cgroup") for point in _machine_hierarchies()],
            ],
        )
        for path in (SYSTEMD_RUN, Path("/run/systemd/machines")):
            path.mkdir(parents=True, exist_ok=True)
        log = directory / "machined.log"
        log.write_bytes(b"")
        process = _spawn([MACHINED], log)
        machined = cls(
            pid=process.pid,
            directory=directory,
            bus=bus,
            _process=process,
            _start_time=_start_time(process.pid),
            _token=token,
        )
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    raise HarnessError(
                        f"systemd-machined exited {process.returncode}:\n{_tail(log)}"
                    )
                return _busctl_status("org.freedesktop.machine1")

            _wait_for("systemd-machined did not own org.freedesktop.machine1", ready, log)
        except BaseException:
            machined.stop()
            raise
        return machined

    def register(self, name: str, leader_pid: int, root: Path) -> None:
        """Register a running leader as machine ``name`` (class container, service fabns-test).

        The leader is first moved into ``machine.slice/machine-NAME.scope`` on cgroup2 and
        name=systemd: machined derives the unit from there (else ENXIO).
        """
        scopes = [
            point / "machine.slice" / f"machine-{name}.scope" for point in _machine_hierarchies()
        ]
        for scope in scopes:
            scope.mkdir(parents=True, exist_ok=True)  # machine.slice: removed by `stop`
            (scope / "cgroup.procs").write_text(str(leader_pid))
        self.machines[name] = scopes
        _call(
            ["busctl", "call", *_MACHINE1, "RegisterMachine", "sayssus", name, "0",
             "fabns-test", "container", str(leader_pid), str(root)],
            f"registering machine {name}",
        )  # fmt: skip

    def unregister(self, name: str) -> None:
        """Forget machine ``name`` (it stays "running" otherwise); remove the cgroups we made."""
        done = _call(["busctl", "call", *_MACHINE1, "UnregisterMachine", "s", name],
                     f"unregistering machine {name}", check=False)  # fmt: skip
        if done.returncode != 0 and "No machine" not in done.stderr:
            raise HarnessError(f"unregistering machine {name}: {done.stderr.strip()}")
        for scope in self.machines.pop(name, []):
            _evict(scope)
            _remove_cgroup(scope)

    def processes(self) -> dict[str, int]:
        """PIDs of ``machined`` and of the ``dbus`` daemon if it started one."""
        found = {"machined": self.pid}
        if self.bus is not None:
            found["dbus"] = self.bus.pid
        return found

    def names(self) -> list[str]:
        """Names of the machines machined knows."""
        done = _call(["machinectl", "list", "--no-legend", "--no-pager"], "machinectl list")
        return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        """Unregister our machines, stop machined and the bus it started, remove run dirs."""
        if self._stopped:
            return
        errors = _Errors()
        for name in list(self.machines):
            with errors.collect(f"unregistering {name}"):
                self.unregister(name)
        with errors.collect("stopping systemd-machined"):
            _stop_popen(self._process, self.pid, self._start_time)
        if self.bus is not None:
            with errors.collect("stopping the system bus"):
                self.bus.stop()
        with errors.collect("removing run directories"):
            _LEFTOVERS.release(self._token)
        self._stopped = True
        errors.raise_any("stopping machined")


def _busctl_status(name: str) -> bool:
    if not SystemBus.served():
        return False
    return _call(["busctl", "status", name], "busctl status", check=False).returncode == 0


def _evict(group: Path) -> None:
    """Move the processes still in cgroup ``group`` to the root of its hierarchy."""
    point = next((p for p in _hierarchies() if group.is_relative_to(p)), None)
    if point is None:
        return
    for pid in _cgroup_procs(group):
        with contextlib.suppress(OSError):
            (point / "cgroup.procs").write_text(str(pid))


# --------------------------------------------------------------------------------- nspawn


def _free_subid_base(count: int = 65536) -> int:
    """A multiple of 65536 whose range overlaps no /etc/subuid or /etc/subgid range."""
    taken: list[tuple[int, int]] = []
    for database in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(OSError):
            for line in Path(database).read_text().splitlines():
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    taken.append((int(parts[1]), int(parts[1]) + int(parts[2])))
    base = 4 * 65536
    while any(start < base + count and base < end for start, end in taken):
        base += 65536
    return base


@dataclass
class NspawnMachine:
    """A busybox machine run by ``systemd-nspawn --keep-unit --register=yes``.

    nspawn registers itself with `Machined` (its unit: a ``*.scope`` cgroup we put it
    in first). Leader: busybox ``sh`` with ``FABNS_CTR=<name>``, hostname = `name`,
    private network. ``private_users`` adds a user namespace (``--private-users`` with a
    sub-id range no user has, rootfs chowned to it).
    """

    name: str
    leader_pid: int
    nspawn_pid: int
    private_users: bool
    directory: Path
    machined: Machined
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _start_times: tuple[int | None, int | None] = field(default=(None, None), repr=False)
    _scopes: list[Path] = field(default_factory=list, repr=False)
    _token: str = field(default="", repr=False)
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls, machined: Machined, directory: Path, name: str, private_users: bool = False
    ) -> NspawnMachine:
        """Start machine ``name`` (files in ``directory/name``); wait until registered."""
        require_root()
        home = Path(directory).resolve() / name
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o755)
        if name in machined.names():
            raise HarnessError(f"machined already knows a machine {name!r}")
        rootfs = home / "rootfs"
        if not (rootfs / "bin/busybox").exists():
            build_rootfs(rootfs, name)
        options = ["--private-network", f"--setenv=FABNS_CTR={name}"]
        if private_users:
            base = _free_subid_base()
            options += [f"--private-users={base}:65536", "--private-users-ownership=chown"]
        token = f"nspawn:{name}"
        _LEFTOVERS.acquire(token, [(Path("/run/systemd/nspawn"), "tree")])
        scopes = [
            point / "machine.slice" / f"nspawn-{name}.scope" for point in _machine_hierarchies()
        ]
        for scope in scopes:
            scope.mkdir(parents=True, exist_ok=True)
        argv = [
            "systemd-nspawn", "--keep-unit", "--register=yes", "--console=passive", "-q",
            "-M", name, "-D", str(rootfs), *options, "/bin/sh", "-c", LOOP,
        ]  # fmt: skip
        log = home / "nspawn.log"
        log.write_bytes(b"")
        process = _spawn(_enter_argv(scopes, argv), log)
        machine = cls(
            name=name,
            leader_pid=0,
            nspawn_pid=process.pid,
            private_users=private_users,
            directory=home,
            machined=machined,
            _process=process,
            _scopes=scopes,
            _token=token,
        )
        try:
            machine.leader_pid = machine._wait_registered(log)
        except BaseException:
            machine.stop()
            raise
        machine._start_times = (_start_time(process.pid), _start_time(machine.leader_pid))
        return machine

    def processes(self) -> dict[str, int]:
        """PIDs of ``nspawn`` and of the container's ``leader``."""
        return {"nspawn": self.nspawn_pid, "leader": self.leader_pid}

    def _wait_registered(self, log: Path) -> int:
        leader = 0

        def ready() -> bool:
            nonlocal leader
            if self._process is not None and self._process.poll() is not None:
                raise HarnessError(
                    f"systemd-nspawn {self.name} exited {self._process.returncode}:\n{_tail(log)}"
                )
            done = _call(["machinectl", "show", self.name, "-p", "Leader", "--value"],
                         "machinectl show", check=False)  # fmt: skip
            if done.returncode != 0 or not done.stdout.strip().isdigit():
                return False
            leader = int(done.stdout)
            return any(_comm(child) == "sleep" for child in _children(leader))

        _wait_for(f"nspawn machine {self.name} did not register and run", ready, log)
        return leader

    def stop(self) -> None:
        """Stop nspawn (its container dies with it), unregister, remove its cgroups."""
        if self._stopped:
            return
        errors = _Errors()
        nspawn_start, _ = self._start_times
        with errors.collect(f"stopping nspawn {self.name}"):
            _stop_popen(self._process, self.nspawn_pid, nspawn_start)
        with errors.collect(f"unregistering {self.name}"):
            if self.name in self.machined.names():
                self.machined.unregister(self.name)
        for scope in self._scopes:
            with errors.collect(f"removing {scope}"):
                _kill_cgroups([scope])
                _remove_cgroup(scope)
        with errors.collect("removing nspawn run files"):
            _LEFTOVERS.release(self._token)
        self._stopped = True
        errors.raise_any(f"stopping nspawn machine {self.name}")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# --------------------------------------------------------------------------------- LXC

_INITTAB = "::sysinit:/bin/hostname -F /etc/hostname\n::shutdown:/bin/umount -a -r\n"


def _lxc_config(name: str, rootfs: Path, ids: tuple[int, int] | None) -> str:
    """A hand-made config: busybox init as PID 1, no network, no AppArmor, ``FABNS_CTR``."""
    config = f"""\
# written by fabns.testbeds
lxc.uts.name = {name}
lxc.rootfs.path = dir:{rootfs}
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.init.cmd = /sbin/init
lxc.signal.halt = SIGUSR1
lxc.signal.reboot = SIGTERM
lxc.autodev = 1
lxc.tty.max = 1
lxc.pty.max = 8
lxc.mount.auto = cgroup:mixed proc:mixed sys:ro
lxc.environment = FABNS_CTR={name}
"""
    if ids is not None:
        config += f"lxc.idmap = u 0 {ids[0]} 65536\nlxc.idmap = g 0 {ids[1]} 65536\n"
    return config


def _find_cgroups(names: Sequence[str], depth: int = 4) -> list[Path]:
    """Cgroups called one of ``names`` anywhere down to ``depth`` levels in any hierarchy."""
    found: list[Path] = []
    for point in _hierarchies():
        for parent, dirs, _ in os.walk(point):
            level = len(Path(parent).relative_to(point).parts)
            found += [Path(parent, d) for d in dirs if d in names]
            if level + 1 >= depth:
                dirs.clear()
    return found


@dataclass
class LxcContainer:
    """An LXC container with a busybox rootfs and busybox init as its leader.

    Owned by root, it is privileged and lives in the system lxcpath (`lxcpath` None);
    owned by another user, it is unprivileged (``lxc.idmap`` onto the owner's
    /etc/subuid range, rootfs chowned to it) in ``~owner/.local/share/lxc``, started in
    ``delegation`` if given (as on a systemd host) or in no cgroup of its own.
    Hostname = `name`; init's environment has ``FABNS_CTR=<name>``; no network.
    """

    name: str
    owner: str
    #: ``-P`` for the lxc tools; None means the system default (root's containers).
    lxcpath: Path | None
    #: Holds ``rootfs/`` and ``lxc.log``.
    directory: Path
    delegation: DelegatedCgroup | None = None
    _config_dir: Path = field(default=Path("/"), repr=False)
    _procs: dict[str, tuple[int, int | None]] = field(default_factory=dict, repr=False)
    _token: str = field(default="", repr=False)
    _running: bool = field(default=False, repr=False)
    _destroyed: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls,
        directory: Path,
        name: str,
        owner: str = "root",
        *,
        delegation: DelegatedCgroup | None = None,
    ) -> LxcContainer:
        """Create container ``name`` (rootfs in ``directory/name``), start it, wait for it."""
        require_root()
        account = _account(owner)
        privileged = account.pw_uid == 0
        home = Path(directory).resolve() / name
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o755)
        token = f"lxc:{owner}:{name}"
        if privileged:
            lxcpath = None
            system = _call(["lxc-config", "lxc.lxcpath"], "lxc-config").stdout.strip()
            config_dir = Path(system or "/var/lib/lxc") / name
            paths: list[tuple[Path, _Kind]] = [(Path("/run/lxc"), "tree")]
            paths += _cgroups_named("lxc.pivot")
        else:
            lxcpath = Path(account.pw_dir) / ".local/share/lxc"
            config_dir = lxcpath / name
            paths = _home_paths(owner, ".local/share/lxc", ".cache/lxc", "RUNTIME/lxc")
        if config_dir.exists():
            raise HarnessError(
                f"LXC container {name} of {owner} exists already ({config_dir}); remove it with "
                f"lxc-destroy -n {name}" + (f" -P {lxcpath}" if lxcpath else "")
            )
        if not privileged:
            _ensure_runtime_dir(owner, token)
        _LEFTOVERS.acquire(token, paths)
        container = cls(
            name=name,
            owner=owner,
            lxcpath=lxcpath,
            directory=home,
            delegation=delegation,
            _config_dir=config_dir,
            _token=token,
        )
        try:
            ids = None
            if not privileged:
                ids = (
                    _subordinate_start(owner, "/etc/subuid"),
                    _subordinate_start(owner, "/etc/subgid"),
                )
            rootfs = home / "rootfs"
            if not (rootfs / "bin/busybox").exists():
                build_rootfs(rootfs, name, ids)
            inittab = rootfs / "etc/inittab"
            inittab.write_text(_INITTAB)
            inittab.chmod(0o644)
            if ids is not None:
                os.chown(inittab, *ids)
            for made in _make_dirs(config_dir):
                if not privileged:
                    os.chown(made, account.pw_uid, account.pw_gid)
            config_dir.chmod(0o755)
            (config_dir / "config").write_text(_lxc_config(name, rootfs, ids))
            log = home / "lxc.log"
            log.write_bytes(b"")
            if not privileged:
                for path in (config_dir / "config", log):
                    os.chown(path, account.pw_uid, account.pw_gid)
            container._start()
        except BaseException:
            with contextlib.suppress(Exception):
                container.destroy()
            raise
        return container

    def _tool(self, tool: str, *args: str) -> list[str]:
        """argv for lxc tool ``tool`` on this container, run as its owner."""
        where = ["-P", str(self.lxcpath)] if self.lxcpath is not None else []
        return _user_argv(self.owner, [tool, "-n", self.name, *where, *args])

    def _start(self) -> None:
        log = self.directory / "lxc.log"
        argv = self._tool("lxc-start", "-d", "-o", str(log), "-l", "WARN")
        if self.delegation is not None:
            argv = self.delegation.wrap(argv)
        try:
            _call(argv, f"lxc-start {self.name}")
        except HarnessError as error:
            raise HarnessError(f"{error}\nlxc log:\n{_tail(log)}") from None
        _call(self._tool("lxc-wait", "-s", "RUNNING", "-t", str(int(TIMEOUT))), "lxc-wait")
        self._running = True
        leader = self.leader_pid
        self._procs = {"leader": (leader, _start_time(leader))}
        monitor = _parent(leader)  # "[lxc monitor] LXCPATH NAME", orphaned by lxc-start -d
        if monitor > 1 and "lxc" in _comm(monitor):
            self._procs["monitor"] = (monitor, _start_time(monitor))

    @property
    def leader_pid(self) -> int:
        """PID of the container's init as the host sees it (asks ``lxc-info`` each time)."""
        done = _call(self._tool("lxc-info", "-pH"), f"lxc-info {self.name}")
        if not done.stdout.strip().isdigit():
            raise HarnessError(f"LXC container {self.name} is not running: {done.stdout!r}")
        return int(done.stdout)

    def processes(self) -> dict[str, int]:
        """PIDs of the current run's ``leader`` and LXC ``monitor``."""
        return {label: pid for label, (pid, _) in self._procs.items()}

    def restart(self) -> None:
        """Stop and start again: same config and rootfs, new leader PID."""
        self.stop()
        self._start()

    def stop(self) -> None:
        """Kill the container (``lxc-stop -k``), wait until leader and monitor are gone."""
        if not self._running:
            return
        done = _call(self._tool("lxc-stop", "-k"), f"lxc-stop {self.name}", check=False)
        procs = dict(self._procs.values())
        if done.returncode != 0 and any(_is_running(pid, start) for pid, start in procs.items()):
            raise HarnessError(f"lxc-stop -k {self.name} exited {done.returncode}: {done.stderr}")
        _terminate(procs, grace=TIMEOUT)
        self._running = False
        for group in _find_cgroups([f"lxc.payload.{self.name}", f"lxc.monitor.{self.name}"]):
            _remove_cgroup(group)

    def destroy(self) -> None:
        """Stop, then remove the container's config, rootfs and whatever LXC left behind."""
        if self._destroyed:
            return
        errors = _Errors()
        with errors.collect(f"stopping {self.name}"):
            self.stop()
        with errors.collect(f"removing {self.name}"):
            shutil.rmtree(self._config_dir, ignore_errors=True)
            shutil.rmtree(self.directory / "rootfs", ignore_errors=True)
            if self._config_dir.exists():
                raise HarnessError(f"{self._config_dir} could not be removed")
        with errors.collect("cleaning up LXC files"):
            _LEFTOVERS.release(self._token)
        self._destroyed = True
        errors.raise_any(f"destroying LXC container {self.name}")


# --------------------------------------------------------------------------------- user manager

#: What other tools keep in a user's runtime dir (each cleans up its own).
_RUNTIME_OF_OTHERS = frozenset({"containers", "libpod", "runc", "lxc"})


@dataclass
class UserManager:
    """A real ``systemd --user`` for ``delegation.user``, running inside ``delegation``.

    What ``user@UID.service`` gives on a systemd host: ``/run/user/UID``, the
    manager's private socket and the socket-activated user bus (``/run/user/UID/bus``),
    so ``systemctl --user`` and ``systemd-run --user --scope`` work for sessions that
    run inside the delegated cgroup.
    """

    user: str
    pid: int
    runtime_dir: Path
    delegation: DelegatedCgroup
    directory: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _start_time: int | None = field(default=None, repr=False)
    _token: str = field(default="", repr=False)
    _runtime_before: frozenset[str] = field(default=frozenset(), repr=False)
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, directory: Path, delegation: DelegatedCgroup) -> UserManager:
        """Start the manager (log in ``directory``); wait for its private socket and bus."""
        require_root()
        user = delegation.user
        account = _account(user)
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        runtime = _runtime_dir(account)
        token = f"user-manager:{user}"
        _ensure_runtime_dir(user, token)
        _LEFTOVERS.acquire(
            token,
            [
                (Path("/run/systemd"), "dir"),
                (SYSTEMD_RUN, "tree"),  # sd_booted(): systemd --user refuses to run without
                *_home_paths(user, ".config/systemd", ".local/share/systemd"),
            ],
        )
        # its units put sockets and folders into the runtime dir (bus, systemd/, gnupg/,
        # dbus-1/, ...; which depends on the packages installed): whatever is new goes
        before = frozenset(os.listdir(runtime))
        SYSTEMD_RUN.mkdir(parents=True, exist_ok=True)
        if _socket_served(runtime / "systemd/private"):
            _LEFTOVERS.release(token)
            raise HarnessError(f"a user manager for {user} already runs ({runtime}/systemd)")
        log = directory / f"user-manager-{user}.log"
        log.write_bytes(b"")
        argv = _user_argv(user, [USER_MANAGER, "--user"])
        process = _spawn(delegation.wrap(argv), log)
        manager = cls(
            user=user,
            pid=process.pid,
            runtime_dir=runtime,
            delegation=delegation,
            directory=directory,
            _process=process,
            _start_time=_start_time(process.pid),
            _token=token,
            _runtime_before=before,
        )

        def ready() -> bool:
            if process.poll() is not None:
                raise HarnessError(f"systemd --user exited {process.returncode}:\n{_tail(log)}")
            return _socket_served(runtime / "systemd/private") and (runtime / "bus").exists()

        try:
            _wait_for(f"systemd --user for {user} did not come up", ready, log)
        except BaseException:
            manager.stop()
            raise
        return manager

    def processes(self) -> dict[str, int]:
        """PID of the ``manager``."""
        return {"manager": self.pid}

    @property
    def bus_socket(self) -> Path:
        """The user bus (``DBUS_SESSION_BUS_ADDRESS=unix:path=...``)."""
        return self.runtime_dir / "bus"

    def stop(self) -> None:
        """Stop the manager (it stops its own units) by PID; remove the files it made."""
        if self._stopped:
            return
        errors = _Errors()
        with errors.collect("stopping systemd --user"):
            _stop_popen(self._process, self.pid, self._start_time)
        with errors.collect("removing the user manager's files"):
            with contextlib.suppress(FileNotFoundError):
                for entry in set(os.listdir(self.runtime_dir)) - self._runtime_before:
                    if entry not in _RUNTIME_OF_OTHERS:
                        _remove(self.runtime_dir / entry, "tree")
            _LEFTOVERS.release(self._token)
        self._stopped = True
        errors.raise_any(f"stopping the user manager of {self.user}")


# --------------------------------------------------------------------------------- podman

#: Owner -> names of the podman containers this process runs (for shared cleanup).
_PODMAN_LIVE: dict[str, set[str]] = {}
#: Owner -> images this process imported into that owner's storage.
_PODMAN_IMPORTED: dict[str, set[str]] = {}


def _podman_storage(owner: str) -> Path:
    """Where podman keeps ``owner``'s images and containers."""
    account = _account(owner)
    if account.pw_uid == 0:
        return Path("/var/lib/containers")
    return Path(account.pw_dir) / ".local/share/containers"


def _podman_paths(owner: str) -> list[tuple[Path, _Kind]]:
    """What podman creates on first use, in ``owner``'s storage."""
    account = _account(owner)
    if account.pw_uid == 0:
        paths: list[tuple[Path, _Kind]] = [
            (Path(p), "tree")
            for p in ("/var/lib/containers", "/run/containers", "/run/libpod", "/run/runc")
        ]
        paths.append((Path("/etc/cni/net.d/cni.lock"), "file"))
        return paths + _cgroups_named("libpod_parent")
    return _home_paths(
        owner,
        ".local/share/containers",
        ".config/cni",
        ".config/containers",
        ".cache/containers",
        "RUNTIME/containers",
        "RUNTIME/libpod",
        "RUNTIME/runc",
    )


@dataclass
class PodmanContainer:
    """A podman container (rootful, or rootless for a non-root owner) from a busybox image.

    The image (`PODMAN_IMAGE`) is imported from a busybox rootfs tarball if the
    owner's storage lacks it. The container runs ``--network none``, hostname =
    `name`, ``FABNS_CTR=<name>``, busybox ``sh`` as leader. Needs the podman
    settings ``scripts/install.sh`` writes (runc, cgroupfs, pinned ulimits).
    """

    name: str
    owner: str
    image: str
    directory: Path
    _procs: dict[str, tuple[int, int | None]] = field(default_factory=dict, repr=False)
    _token: str = field(default="", repr=False)
    _running: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls, directory: Path, name: str, owner: str = "root", image: str = PODMAN_IMAGE
    ) -> PodmanContainer:
        """Run container ``name`` (files in ``directory/name``) and wait until its leader runs."""
        require_root()
        account = _account(owner)
        home = Path(directory).resolve() / name
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o755)
        token = f"podman:{owner}:{name}"
        if account.pw_uid != 0:
            _ensure_runtime_dir(owner, token)
        _LEFTOVERS.acquire(token, _podman_paths(owner))
        container = cls(name=name, owner=owner, image=image, directory=home, _token=token)
        live = _PODMAN_LIVE.setdefault(owner, set())
        live.add(name)
        try:
            if container._podman("container", "exists", name).returncode == 0:
                raise HarnessError(
                    f"a podman container {name} of {owner} exists already; remove it with "
                    f"podman rm -f {name}"
                )
            if container._podman("image", "exists", image).returncode != 0:
                container._import()
            container._run()
        except BaseException:
            with contextlib.suppress(Exception):
                container.stop()
            raise
        return container

    def _podman(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return _call(_user_argv(self.owner, ["podman", *args]), f"podman {args[0]}", check=check)

    def _import(self) -> None:
        rootfs = self.directory / "image-rootfs"
        build_rootfs(rootfs, "fabns-busybox")
        tarball = self.directory / "image.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        tarball.chmod(0o644)
        self._podman("import", "-q", str(tarball), f"{self.image}:latest", check=True)
        _PODMAN_IMPORTED.setdefault(self.owner, set()).add(self.image)
        tarball.unlink()
        shutil.rmtree(rootfs)

    def _run(self) -> None:
        self._podman(
            "run", "-d", "-q", "--name", self.name, "--hostname", self.name, "--network", "none",
            "-e", f"FABNS_CTR={self.name}", self.image, "sh", "-c", LOOP, check=True,
        )  # fmt: skip
        self._running = True
        self._wait_leader()

    def _wait_leader(self) -> None:
        found: list[int] = []

        def ready() -> bool:
            done = self._podman("inspect", "-f", "{{.State.Pid}} {{.State.ConmonPid}}", self.name)
            pids = done.stdout.split()
            if done.returncode != 0 or len(pids) != 2 or pids[0] == "0":
                return False
            found[:] = [int(pids[0]), int(pids[1])]
            return any(_comm(child) == "sleep" for child in _children(found[0]))

        _wait_for(f"podman container {self.name} did not run its leader", ready)
        leader, conmon = found
        self._procs = {
            "leader": (leader, _start_time(leader)),
            "conmon": (conmon, _start_time(conmon)),
        }

    @property
    def leader_pid(self) -> int:
        """PID of the container's leader on the host (asks ``podman inspect`` each time)."""
        done = self._podman("inspect", "-f", "{{.State.Pid}}", self.name, check=True)
        pid = done.stdout.strip()
        if not pid.isdigit() or pid == "0":
            raise HarnessError(f"podman container {self.name} is not running ({pid!r})")
        return int(pid)

    def processes(self) -> dict[str, int]:
        """PIDs of the current run's ``leader`` and ``conmon``."""
        return {label: pid for label, (pid, _) in self._procs.items()}

    def restart(self) -> None:
        """``podman restart -t 0``: the same container with a new leader PID."""
        old = dict(self._procs.values())
        self._podman("restart", "-t", "0", self.name, check=True)
        _terminate(old)  # the old leader and conmon are gone, or going: wait for it
        self._wait_leader()

    def stop(self) -> None:
        """``podman rm -f -t 0``; the owner's last container also removes the image we
        imported, storage we created and the rootless pause process."""
        errors = _Errors()
        if self._running:
            with errors.collect(f"removing {self.name}"):
                self._podman("rm", "-f", "-t", "0", self.name, check=True)
                _terminate(dict(self._procs.values()))
            self._running = False
        live = _PODMAN_LIVE.get(self.owner, set())
        if self.name in live:
            live.discard(self.name)
            if not live:
                with errors.collect(f"cleaning up {self.owner}'s podman storage"):
                    self._last_cleanup()
            with errors.collect("removing podman's files"):
                _LEFTOVERS.release(self._token)
        errors.raise_any(f"stopping podman container {self.name}")

    def _last_cleanup(self) -> None:
        for image in sorted(_PODMAN_IMPORTED.pop(self.owner, set())):
            self._podman("rmi", image, check=True)
        others = self._podman("ps", "-aq").stdout.split()
        others += self._podman("images", "-q").stdout.split()
        storage = _podman_storage(self.owner)
        if _LEFTOVERS.absent_before(storage) and _LEFTOVERS.last_user(self._token, storage):
            if others:  # made by someone else since: the storage is theirs now too
                for path, _ in _podman_paths(self.owner):
                    _LEFTOVERS.keep(path)
            else:  # unmounts and forgets what podman set up, before the files go
                self._podman("system", "reset", "-f", check=True)
        account = _account(self.owner)
        if account.pw_uid == 0 or self._podman("ps", "-q").stdout.strip():
            return  # rootful, or someone else's containers still need the pause process
        pause_file = _runtime_dir(account) / "libpod/tmp/pause.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pause_file.read_text())
            if _comm(pid) == "catatonit" and os.stat(f"/proc/{pid}").st_uid == account.pw_uid:
                _terminate({pid: _start_time(pid)})


# --------------------------------------------------------------------------------- all of it

#: The delegated cgroup `EngineBeds` hands to `TEST_USER`.
DELEGATED_CGROUP = "fabns-alice"
#: `EngineBeds` keys -> container / machine names.
MACHINE_NAMES = {"n1": "fabns-n1", "n2": "fabns-n2"}
LXC_NAMES = {"p1": ("fabns-p1", "root"), "u1": ("fabns-u1", TEST_USER)}
PODMAN_NAMES = {"pod1": ("fabns-pod1", "root"), "apod": ("fabns-apod", TEST_USER)}

_Piece = (
    DelegatedCgroup | Machined | NspawnMachine | LxcContainer | UserManager | SSHServer
    | PodmanContainer
)  # fmt: skip
_P = TypeVar("_P", bound=_Piece)


@dataclass
class EngineBeds:
    """Every engine at once: machined with nspawn machines, LXC, podman, ``systemd --user``.

    ``machines``: ``"n1"`` (plain) and ``"n2"`` (private users); ``lxc``: ``"p1"``
    (privileged) and ``"u1"`` (`TEST_USER`'s, unprivileged, in ``delegation``);
    ``podman``: ``"pod1"`` (rootful) and ``"apod"`` (rootless, `TEST_USER`'s).
    `alice_sshd` is an sshd for `TEST_USER` whose sessions start inside
    ``delegation``: only from there do ``lxc-attach`` into u1 and
    ``systemd-run --user --scope`` work (from the root cgroup they fail with
    "Permission denied" and "Job failed").
    """

    directory: Path
    machined: Machined
    machines: dict[str, NspawnMachine]
    lxc: dict[str, LxcContainer]
    podman: dict[str, PodmanContainer]
    delegation: DelegatedCgroup
    user_manager: UserManager
    alice_sshd: SSHServer | None
    #: Seconds each step of `start` took, and the ``"total"``.
    timings: dict[str, float] = field(default_factory=dict)
    _remove_directory: bool = field(default=True, repr=False)
    _pieces: list[_Piece] = field(default_factory=list, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, directory: Path | None = None) -> EngineBeds:
        """Start everything in ``directory`` (default: a new temp dir); undo it all on failure."""
        require_root()
        created = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="fabns-beds-", dir="/tmp"))
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # the unprivileged containers' root filesystems live below it
        pieces: list[_Piece] = []
        timings: dict[str, float] = {}
        clock = [time.monotonic()]

        def add(what: str, piece: _P) -> _P:
            pieces.append(piece)
            clock.append(time.monotonic())
            timings[what] = round(clock[-1] - clock[-2], 3)
            return piece

        try:
            delegation = add("delegate", DelegatedCgroup.create(TEST_USER, DELEGATED_CGROUP))
            machined = add("machined", Machined.start(directory / "machined"))
            machines = {
                key: add(
                    key,
                    NspawnMachine.start(machined, directory / "nspawn", name, key == "n2"),
                )
                for key, name in MACHINE_NAMES.items()
            }
            name, owner = LXC_NAMES["p1"]
            lxc = {"p1": add("p1", LxcContainer.start(directory / "lxc", name, owner))}
            manager = add("user manager", UserManager.start(directory / "user", delegation))
            sshd = add("alice sshd", SSHServer.start(directory / "sshd", users=(TEST_USER,)))
            delegation.enter(sshd.pid)  # so its sessions start in alice's cgroup
            name, owner = LXC_NAMES["u1"]
            lxc["u1"] = add(
                "u1", LxcContainer.start(directory / "lxc", name, owner, delegation=delegation)
            )
            podman = {
                key: add(key, PodmanContainer.start(directory / "podman", name, owner))
                for key, (name, owner) in PODMAN_NAMES.items()
            }
        except BaseException:
            with contextlib.suppress(Exception):
                _stop_pieces(pieces)
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        timings["total"] = round(clock[-1] - clock[0], 3)
        return cls(
            directory=directory,
            machined=machined,
            machines=machines,
            lxc=lxc,
            podman=podman,
            delegation=delegation,
            user_manager=manager,
            alice_sshd=sshd,
            timings=timings,
            _remove_directory=created,
            _pieces=pieces,
        )

    def processes(self) -> dict[str, int]:
        """Every long-lived process started for the beds: ``"<piece> <role>"`` -> PID."""
        found = {f"machined {label}": pid for label, pid in self.machined.processes().items()}
        found.update({"user manager": self.user_manager.pid})
        if self.alice_sshd is not None:
            found["alice sshd"] = self.alice_sshd.pid
        for group in (self.machines, self.lxc, self.podman):
            for key, piece in group.items():
                found.update({f"{key} {label}": pid for label, pid in piece.processes().items()})
        return found

    def stop(self) -> None:
        """Stop everything by PID, last started first; remove every cgroup, run dir and file."""
        if self._stopped:
            return
        try:
            _stop_pieces(self._pieces)
        finally:
            self._stopped = True
            if self._remove_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> EngineBeds:
        """Stop everything and start it all again; this object is updated in place."""
        self.stop()
        new = EngineBeds.start(None if self._remove_directory else self.directory)
        self.__dict__.update(new.__dict__)
        return self

    def __enter__(self) -> EngineBeds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_pieces(pieces: list[_Piece]) -> None:
    """Stop ``pieces`` last first, each even when another fails; then raise the failures."""
    errors = _Errors()
    for piece in reversed(pieces):
        with errors.collect(type(piece).__name__):
            if isinstance(piece, LxcContainer):
                piece.destroy()
            else:
                piece.stop()
    errors.raise_any("stopping the engine beds")
