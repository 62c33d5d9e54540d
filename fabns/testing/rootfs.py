"""Root filesystems for containers: busybox-static (`build_rootfs`) or your own (`import_rootfs`).

`import_rootfs` copies a directory or unpacks a tar archive -- e.g. one made by
``mmdebstrap bookworm rootfs.tar`` -- and shifts its ownership for a user
namespace the way `build_rootfs` lays out its own files. Archives are unpacked
member by member with checks, never trusted: a member with an absolute path or
``..``, a link that climbs out of the tree, and anything that would be written
through a symbolic link already unpacked are refused with `HarnessError`;
device nodes are skipped (a container gets its own ``/dev``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fabns.testing.base import INSTALL_HINT, HarnessError, run

__all__ = [
    "BUSYBOX",
    "MOUNT_POINTS",
    "build_rootfs",
    "copy_tree",
    "extract_archive",
    "import_rootfs",
    "resolve_inside",
    "shift_ownership",
]

BUSYBOX = "/bin/busybox"
#: Directories every root filesystem needs: the container mounts its own proc, sysfs,
#: /dev and /tmp on them.
MOUNT_POINTS = ("proc", "sys", "dev", "tmp")
#: How many ids a user namespace of the ``subid`` mode maps (inside 0..65535).
MAPPED_IDS = 65536

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
        raise HarnessError(f"{BUSYBOX} is missing (package busybox-static); {INSTALL_HINT}")
    return tuple(run([BUSYBOX, "--list-full"], "busybox --list-full").split())


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
        raise HarnessError(f"{BUSYBOX} is missing (package busybox-static); {INSTALL_HINT}")
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


# --------------------------------------------------------------------------------- your own


def import_rootfs(
    source: Path,
    directory: Path,
    owner: tuple[int, int] | None = None,
    *,
    single_owner: bool = False,
) -> Path:
    """Make a root filesystem in ``directory`` from ``source`` and return it.

    ``source`` is a directory, copied as it is (ownership, modes, symbolic and
    hard links), or a tar archive (``.tar``, ``.tar.gz``, ``.tar.bz2``,
    ``.tar.xz``, and ``.tar.zst`` where Python's tarfile reads zstd), unpacked
    by `extract_archive`. Device nodes and sockets are skipped in both. Mount
    points missing from the tree (`MOUNT_POINTS`) are created.

    :param owner:
        ``(uid, gid)`` that inside id 0 maps to, for a user namespace: every
        file owned by inside id N is chowned to ``owner + N`` (`shift_ownership`).
        None keeps the ids of the source.
    :param single_owner:
        chown every file to ``owner`` itself (root's ids if None), for
        ``--map-root-user``, which maps nothing but 0.
    """
    source, rootfs = Path(source), Path(directory)
    if os.path.lexists(rootfs) and (
        rootfs.is_symlink() or not rootfs.is_dir() or any(rootfs.iterdir())
    ):
        raise HarnessError(f"{rootfs} must be a new or empty directory for a root filesystem")
    rootfs.mkdir(parents=True, exist_ok=True)
    rootfs.chmod(0o755)
    if source.is_dir():
        copy_tree(source, rootfs)
    elif source.is_file():
        extract_archive(source, rootfs)
    else:
        raise HarnessError(f"root filesystem {source}: no such directory or tar archive")
    for name in MOUNT_POINTS:
        point = rootfs / name
        if not os.path.lexists(point):
            point.mkdir()
            point.chmod(_DIRECTORIES[name][0])
        elif point.is_symlink() or not point.is_dir():
            raise HarnessError(
                f"root filesystem {source}: /{name} is not a directory (the container mounts "
                "its own there)"
            )
    shift_ownership(rootfs, owner, single_owner=single_owner)
    return rootfs


# What tarfile is told after our own checks: unpack as is (setuid bits, links to absolute
# paths -- normal in a root filesystem). Pythons before 3.11.4 have no filters and do that.
_AS_IS: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}


def extract_archive(archive: Path, directory: Path) -> None:
    """Unpack the tar archive ``archive`` into the existing ``directory``, member by member.

    Refused with `HarnessError` (and nothing of that member written): an
    absolute path or one with ``..``; a symbolic link whose target climbs above
    the tree's root (an absolute target means the tree's own root, as inside
    the container); a hard link to a path outside the archive or to a
    symbolic link; a member whose path goes through a symbolic link already
    unpacked, or that would replace a directory. Device nodes are skipped.
    Ownership is numeric, modes are kept (setuid included). A member that
    replaces an earlier one (a later entry for the same path) removes it first,
    so nothing is ever written through a link.
    """
    archive, directory = Path(archive), Path(directory)
    with _open_archive(archive) as tar:
        members = _checked_members(tar, directory, archive)
        tar.extractall(directory, members=members, numeric_owner=True, **_AS_IS)


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as error:
        hint = ""
        if archive.name.endswith((".zst", ".tzst")) and "zst" not in tarfile.TarFile.OPEN_METH:
            hint = (
                "; this Python's tarfile cannot read zstd (Python 3.14 can): unpack it with "
                "zstd -d first, or pass a directory"
            )
        raise HarnessError(f"cannot read {archive} as a tar archive: {error}{hint}") from error


def _checked_members(
    tar: tarfile.TarFile, directory: Path, archive: Path
) -> Iterator[tarfile.TarInfo]:
    """Each member that may be unpacked, checked right before tarfile unpacks it.

    (``extractall`` takes its members one at a time, so each check sees what the
    members before it put on disk.)
    """
    for member in tar:
        if _check_member(member, directory, archive):
            yield member


def _check_member(member: tarfile.TarInfo, directory: Path, archive: Path) -> bool:
    """Whether to unpack ``member`` (False: skip it); `HarnessError` to refuse the archive."""

    def refuse(why: str) -> HarnessError:
        return HarnessError(f"{archive}: refusing member {member.name!r}: {why}")

    if member.name.startswith("/"):
        raise refuse("absolute path")
    parts = _parts(member.name)
    if ".." in parts:
        raise refuse("'..' in its path")
    kinds = (member.isreg(), member.isdir(), member.issym(), member.islnk(), member.isfifo())
    if not any(kinds):
        return False  # device nodes (and unknown types) are skipped
    _check_no_link_on_the_way(directory, parts[:-1], refuse)
    base = [] if member.linkname.startswith("/") else parts[:-1]
    if member.issym() and _climbs_out(base, member.linkname):
        raise refuse(f"symbolic link to {member.linkname!r} points outside the root filesystem")
    if member.islnk():
        linked = _parts(member.linkname)
        if member.linkname.startswith("/") or ".." in linked:
            raise refuse(f"hard link to {member.linkname!r} outside the archive")
        if linked == parts:
            raise refuse("hard link to itself")
        _check_no_link_on_the_way(directory, linked[:-1], refuse)
        try:
            mode = os.lstat(directory.joinpath(*linked)).st_mode
        except FileNotFoundError:
            return False  # to a member that was skipped: a device node
        if stat.S_ISLNK(mode):
            raise refuse(f"hard link to the symbolic link {member.linkname!r}")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            return False  # nothing else can be hard-linked
    target = directory.joinpath(*parts)
    if parts and os.path.lexists(target):
        if target.is_symlink() or not target.is_dir():
            target.unlink()  # an earlier entry for the same path: replaced, never written through
        elif not member.isdir():
            raise refuse("it would replace a directory")
    return True


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _climbs_out(base: list[str], link: str) -> bool:
    """Whether ``link``, read in the directory ``base`` (parts below the root), leaves it."""
    depth = len(base)
    for part in _parts(link):
        depth += -1 if part == ".." else 1
        if depth < 0:
            return True
    return False


def _check_no_link_on_the_way(
    directory: Path, parents: list[str], refuse: Callable[[str], HarnessError]
) -> None:
    """Refuse a path below ``directory`` whose existing parents are not all real directories."""
    path = directory
    for part in parents:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return  # tarfile creates the rest as real directories
        if stat.S_ISLNK(mode):
            raise refuse(f"its path goes through the symbolic link {path.relative_to(directory)}")
        if not stat.S_ISDIR(mode):
            raise refuse(f"its path goes through the non-directory {path.relative_to(directory)}")


def copy_tree(source: Path, directory: Path) -> None:
    """Copy the tree ``source`` into the existing, empty ``directory``, as root.

    Keeps ownership (numeric), modes (setuid included), modification times,
    symbolic links as they are and hard links as links; skips device nodes and
    sockets. Nothing is followed: a symbolic link is copied, never its target.
    """
    source, directory = Path(source), Path(directory)
    _copy_attributes(os.stat(source), directory)
    copied: dict[tuple[int, int], Path] = {}  # (device, inode) -> first copy, for hard links
    for parent, dirs, files in os.walk(source):
        below = Path(parent).relative_to(source)
        for name in sorted(dirs + files):
            src, dst = Path(parent) / name, directory / below / name
            st = os.lstat(src)
            if stat.S_ISDIR(st.st_mode):
                dst.mkdir(mode=0o700)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1 and (st.st_dev, st.st_ino) in copied:
                    os.link(copied[st.st_dev, st.st_ino], dst)
                    continue
                shutil.copyfile(src, dst, follow_symlinks=False)
                copied[st.st_dev, st.st_ino] = dst
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(dst)
            else:
                continue  # device nodes and sockets
            _copy_attributes(st, dst)


def _copy_attributes(st: os.stat_result, path: Path) -> None:
    os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def shift_ownership(
    directory: Path, owner: tuple[int, int] | None, *, single_owner: bool = False
) -> None:
    """Chown the tree ``directory`` for a user namespace whose inside 0 is ``owner``.

    A file of inside ids (U, G) gets ``owner + (U, G)``; with ``single_owner``
    every file gets ``owner`` itself (root's ids if None). Ids of 65536 and
    above cannot be mapped and raise `HarnessError`. Setuid and setgid bits,
    which a chown clears, are set again. Nothing to do for ``owner=None``
    without ``single_owner``.
    """
    if owner is None and not single_owner:
        return
    base_uid, base_gid = owner if owner is not None else (0, 0)
    seen: set[tuple[int, int]] = set()  # hard links: shift each inode once
    for path in _walk(Path(directory)):
        st = os.lstat(path)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        if single_owner:
            ids = (base_uid, base_gid)
        elif st.st_uid >= MAPPED_IDS or st.st_gid >= MAPPED_IDS:
            raise HarnessError(
                f"{path} belongs to {st.st_uid}:{st.st_gid}, which a user namespace of "
                f"{MAPPED_IDS} ids cannot map"
            )
        else:
            ids = (base_uid + st.st_uid, base_gid + st.st_gid)
        os.lchown(path, *ids)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))


def resolve_inside(rootfs: Path, path: str) -> Path | None:
    """Host path of the file ``path`` names inside ``rootfs``, or None if there is none.

    Symbolic links are followed as the container would follow them: an
    absolute target starts again at ``rootfs``, and ``..`` never climbs above
    it. For looking into a tree that is not running (a container's own view,
    while it runs, is `Container.inside`).
    """
    todo = _parts(path)
    resolved: list[str] = []
    hops = 40  # like the kernel's ELOOP limit
    while todo:
        part = todo.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = Path(rootfs).joinpath(*resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            todo = _parts(target) + todo
        else:
            resolved.append(part)
    return Path(rootfs).joinpath(*resolved)
