"""Long-lived containers made with ``unshare`` + ``pivot_root``: `Container`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabns.testing.base import (
    TIMEOUT,
    HarnessError,
    account,
    proc_stat,
    reap,
    require_root,
    send_signal,
    spawn,
    start_time,
    subordinate_start,
    tail,
    wait_gone,
)
from fabns.testing.rootfs import build_rootfs, import_rootfs, resolve_inside

__all__ = ["MODES", "Container", "chroot_limitation"]

#: Container modes: no user namespace; ``--map-root-user``; the owner's subordinate ids.
MODES = ("plain", "maproot", "subid")

_NAMESPACES = (
    "--fork", "--kill-child", "--pid", "--mount", "--uts", "--ipc", "--net", "--cgroup",
    "--time", "--propagation", "unchanged",
)  # fmt: skip

# Runs as PID 1 of the new namespaces with the host's tools until pivot_root (or chroot, where
# the host's "/" is no mount point), then execs the rootfs' sh (busybox's, or your image's)
# with a clean environment; that sh stays PID 1 (the leader). The host's ip brings up the
# loopback first, for images without one of their own.
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
# its own pty instance, as LXC, machined and Podman give theirs
mkdir "$R/dev/pts"
if mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts" 2>/dev/null; then
  ln -s pts/ptmx "$R/dev/ptmx"
fi
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
ip link set lo up 2>/dev/null || true
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
    """A long-lived container: ``unshare`` into new namespaces, ``pivot_root``.

    Its root filesystem is busybox-static (`build_rootfs`) or your own
    (`start`'s ``rootfs=``). Its leader (PID 1 inside, `leader_pid` on the
    host) is that tree's ``/bin/sh`` with hostname `name` and the environment
    ``PATH``, ``HOME=/root``, ``container=fabns``, ``FABNS_CTR=<name>`` and
    ``FABNS_SPACED='a b  c'`` (plus `env`); ``/proc``, ``/sys``, a minimal
    ``/dev`` and a ``/tmp`` tmpfs are the container's own.
    """

    #: Also the hostname inside.
    name: str
    #: ``"plain"``: no user namespace (root only); ``"maproot"``: ``unshare
    #: --map-root-user``, inside 0 = the owner; ``"subid"``: inside 0..65535 = the
    #: owner's /etc/subuid and /etc/subgid range (newuidmap).
    mode: str
    #: User who runs ``unshare`` and owns the user namespace.
    owner: str
    #: The container's root filesystem on the host (``directory/rootfs``).
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
    #: The directory or tar archive `rootfs` was made from (`start`'s ``rootfs=``); None
    #: for busybox. Kept by `restart`.
    image: Path | None = None
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
        rootfs: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        prepare: Callable[[Path], None] | None = None,
    ) -> Container:
        """Start container ``name`` in ``directory/name`` and wait until its leader runs.

        The root filesystem is built on first start and reused by later ones
        (made from the same ``rootfs``), so files written inside survive `restart`.

        :param rootfs:
            your own root filesystem instead of busybox: a directory to copy or a
            tar archive (``.tar``, ``.tar.gz``, ``.tar.xz``, ...), e.g. one made by
            ``mmdebstrap bookworm rootfs.tar``. It is unpacked with checks
            (`import_rootfs`: absolute paths, ``..`` and links out of the tree are
            refused, device nodes skipped) and chowned for the mode's user
            namespace like busybox's: inside id N is the owner's base id + N, and
            for ``maproot`` everything belongs to the owner. Its ``/bin/sh``,
            ``env`` and ``sleep`` run the leader; `HarnessError` names any that is
            missing.
        :param env:
            extra ``NAME: value`` entries for the leader's environment (added to,
            or replacing, the standard ones above); passed as single argv words,
            never through a shell. Everything fabns reads as "the container's
            environment" then holds them -- e.g. a hostile ``LD_PRELOAD``.
        :param prepare:
            called with the rootfs path right after it is made (first start
            only), before the leader starts: replace ``/bin/sh``, make
            ``/etc/passwd`` a FIFO, ... Runs as root on the host; host ids. If
            it raises, the half-prepared rootfs is removed again.
        """
        require_root()
        image = None if rootfs is None else Path(rootfs).resolve()
        if mode not in MODES:
            raise HarnessError(f"unknown container mode {mode!r}; choose from {MODES}")
        extra_env = _check_env(env or {})
        entry = account(owner)
        privileged = entry.pw_uid == 0
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
            ids = None if privileged else (entry.pw_uid, entry.pw_gid)
        elif mode == "subid":
            uid = subordinate_start(owner, "/etc/subuid")
            gid = subordinate_start(owner, "/etc/subgid")
            # util-linux 2.38 wants outer,inner,count
            userns = [
                "--user", f"--map-users={uid},0,65536", f"--map-groups={gid},0,65536",
                "--setuid", "0", "--setgid", "0",
            ]  # fmt: skip
            ids = (uid, gid)
        tree = home / "rootfs"
        _make_rootfs(tree, name, ids, mode == "maproot", image, prepare)
        log = home / "console.log"
        log.write_bytes(b"")
        argv = ["unshare", *userns, *_NAMESPACES, "--", "/bin/sh", "-c", _INNER, "sh"]
        assignments = [f"{key}={value}" for key, value in extra_env.items()]
        process = spawn([*argv, str(tree), name, *assignments], log, None if privileged else entry)
        try:
            leader = _wait_leader(process, log, name)
        except BaseException:
            send_signal(process.pid, signal.SIGKILL, None)
            reap(process)
            raise
        return cls(
            name=name,
            mode=mode,
            owner=owner,
            rootfs=tree,
            leader_pid=leader,
            unshare_pid=process.pid,
            directory=home,
            env=extra_env,
            image=image,
            _process=process,
            _start_times=(start_time(process.pid), start_time(leader)),
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
        send_signal(self.leader_pid, signal.SIGKILL, leader_start)
        deadline = time.monotonic() + TIMEOUT
        while (found := proc_stat(self.leader_pid)) is not None and found[2] == leader_start:
            if found[0] == "Z" and found[1] != self.unshare_pid:
                break  # orphaned (unshare died first): PID 1 of the host reaps it, eventually
            if time.monotonic() > deadline:
                raise HarnessError(f"container {self.name}: leader {self.leader_pid} survived")
            time.sleep(0.002)
        # unshare exits once its child is gone; it blocks SIGTERM, so SIGKILL if it lingers
        # (with --kill-child that would also have killed the leader)
        if self._process is None or self._process.poll() is None:
            send_signal(self.unshare_pid, signal.SIGKILL, unshare_start)
        reap(self._process)
        if wait_gone({self.unshare_pid: unshare_start}, TIMEOUT):
            raise HarnessError(f"container {self.name}: unshare {self.unshare_pid} survived")
        self._stopped = True

    def restart(self) -> Container:
        """Stop and start again with the same name, rootfs, mode, owner and env; returns ``self``.

        The leader gets a new PID (and new namespaces); this object is updated
        in place so whoever holds it (e.g. `Harness`) still stops the new one.
        """
        self.stop()
        new = Container.start(
            self.directory.parent,
            self.name,
            self.mode,
            self.owner,
            rootfs=self.image,
            env=self.env,
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
            "image": None if self.image is None else str(self.image),
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
            image=None if state.get("image") is None else Path(state["image"]),
            _start_times=(unshare_start, leader_start),
        )


#: Beside a container's ``rootfs/`` made from an image: the image it was made from.
_IMAGE_NOTE = "rootfs.image"
#: What the leader runs from the container's root filesystem; ``env`` and ``sleep`` are
#: looked up in its PATH.
_LEADER_NEEDS = ("/bin/sh", "env", "sleep")
_LEADER_PATH = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


def _make_rootfs(
    tree: Path,
    name: str,
    ids: tuple[int, int] | None,
    single_owner: bool,
    image: Path | None,
    prepare: Callable[[Path], None] | None,
) -> None:
    """Make ``tree`` from busybox or ``image`` unless the one there was made the same way."""
    note = tree.parent / _IMAGE_NOTE
    if image is None:
        if (tree / "bin/busybox").exists() and not note.exists():
            return
        if note.exists():  # made from an image before: busybox now
            shutil.rmtree(tree, ignore_errors=True)
            note.unlink()
        build_rootfs(tree, name, ids, single_owner=single_owner)
    else:
        if note.exists() and note.read_text() == str(image) and tree.is_dir():
            return
        note.unlink(missing_ok=True)
        if os.path.lexists(tree):
            shutil.rmtree(tree)
    try:
        if image is not None:
            import_rootfs(image, tree, ids, single_owner=single_owner)
        if prepare is not None:
            prepare(tree)
        if image is not None:
            missing = _missing_for_leader(tree)
            if missing:
                raise HarnessError(
                    f"container {name}: the root filesystem from {image} has no "
                    f"{' and no '.join(missing)}; the leader runs /bin/sh, env and sleep from it"
                )
            note.write_text(str(image))
    except BaseException:
        shutil.rmtree(tree, ignore_errors=True)  # never reused unprepared
        raise


def _missing_for_leader(tree: Path) -> list[str]:
    """What of `_LEADER_NEEDS` ``tree`` lacks (as executable files, links followed inside)."""
    missing = []
    for need in _LEADER_NEEDS:
        paths = [need] if need.startswith("/") else [f"{d}/{need}" for d in _LEADER_PATH]
        if not any(_is_executable(resolve_inside(tree, path)) for path in paths):
            missing.append(need if need.startswith("/") else f"{need} in {':'.join(_LEADER_PATH)}")
    return missing


def _is_executable(path: Path | None) -> bool:
    return path is not None and path.is_file() and bool(path.stat().st_mode & 0o111)


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
                f"was ready; console:\n{tail(log)}"
            )
        time.sleep(0.002)
    raise HarnessError(
        f"container {name}: leader not ready within {TIMEOUT:.0f}s; console:\n{tail(log)}"
    )


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
