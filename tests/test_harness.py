"""The test harness itself (fabns.testing): real sshd, real containers, real sudo.

If these fail, every behaviour test would fail for reasons that are not fabns'.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from fabric import Config, Connection
from invoke.exceptions import UnexpectedExit
from support import connect  # noqa: F401

from fabns.testing import (
    NOPASSWD_USER,
    SUDO_PASSWORD,
    SUDO_USER,
    TEST_USER,
    Container,
    Harness,
    HarnessError,
    SSHServer,
    build_rootfs,
    chroot_limitation,
)
from fabns.testing.rootfs import import_rootfs, resolve_inside

USERS = ("root", TEST_USER, SUDO_USER, NOPASSWD_USER)
CONTAINER_KEYS = ("plain", "rootns", "alice-maproot", "alice-subid")
Login = Callable[[str], Connection]


@pytest.fixture
def login(sshd: SSHServer) -> Iterator[Login]:
    """Factory: ``login(user)`` -> an open Fabric Connection to the harness sshd."""
    made: list[Connection] = []

    def factory(user: str) -> Connection:
        # in_stream=False: Fabric would otherwise read pytest's (captured) stdin
        config = Config(overrides={"run": {"in_stream": False}})
        conn = Connection(**sshd.connection_kwargs(user), config=config)
        made.append(conn)
        conn.open()
        return conn

    yield factory
    for conn in made:
        conn.close()


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A 0755 directory under /tmp, so unprivileged owners' containers can live in it."""
    path = Path(tempfile.mkdtemp(prefix="fabns-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


class TestSSHServer:
    @pytest.mark.parametrize("user", USERS)
    def test_every_user_logs_in_with_the_client_key(self, login, user):
        assert login(user).run("id -un", hide=True).stdout == f"{user}\n"

    def test_fabric_talks_to_our_sshd(self, login, sshd):
        key = login("root").client.get_transport().get_remote_server_key()
        assert f"{key.get_name()} {key.get_base64()}" == sshd.host_public_key

    def test_known_hosts_satisfies_a_strict_paramiko_client(self, sshd):
        client = paramiko.SSHClient()
        client.load_host_keys(str(sshd.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(sshd.host, sshd.port, username=TEST_USER, **sshd.connect_kwargs())
            _, stdout, _ = client.exec_command("hostname")
            assert stdout.read().decode().strip() == os.uname().nodename
        finally:
            client.close()

    def test_known_hosts_satisfies_a_strict_openssh_client(self, sshd):
        out = subprocess.run(
            [*sshd.ssh_argv(TEST_USER), "echo ok"], capture_output=True, text=True, timeout=30
        )
        assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr

    @pytest.mark.parametrize("user", (TEST_USER, SUDO_USER, NOPASSWD_USER))
    def test_users_get_a_runtime_dir_like_pam_systemd_gives(self, login, user):
        uid = pwd.getpwnam(user).pw_uid
        out = login(user).run(
            'echo "$XDG_RUNTIME_DIR"; stat -c %U:%a "$XDG_RUNTIME_DIR"', hide=True
        )
        assert out.stdout == f"/run/user/{uid}\n{user}:700\n"

    def test_password_login_is_refused(self, sshd):
        transport = paramiko.Transport((sshd.host, sshd.port))
        try:
            with pytest.raises(paramiko.AuthenticationException):
                transport.connect(username=SUDO_USER, password=SUDO_PASSWORD)
        finally:
            transport.close()

    def test_stop_ends_established_sessions_and_their_commands(self, scratch):
        server = SSHServer.start(scratch / "sshd", users=("root",))
        try:
            conn = Connection(**server.connection_kwargs("root"))
            conn.open()
            conn.client.exec_command("exec sleep 300")
            deadline = time.monotonic() + 10
            while not (below := _descendants(server.pid)) or not any(
                _comm(pid) == "sleep" for pid in below
            ):
                assert time.monotonic() < deadline, "the remote sleep never started"
                time.sleep(0.01)
        finally:
            server.stop()
        try:
            assert not running(server.pid)
            assert [pid for pid in below if running(pid)] == []
        finally:
            conn.close()
        server.stop()  # idempotent

    def test_start_reports_why_sshd_cannot_start(self, scratch):
        with pytest.raises(HarnessError, match="no user 'fabns-no-such-user'"):
            SSHServer.start(scratch / "sshd", users=("fabns-no-such-user",))


class TestContainers:
    @pytest.mark.parametrize("key", CONTAINER_KEYS)
    def test_leader_runs_in_its_own_namespaces(self, containers, key):
        ctr = containers[key]
        assert running(ctr.leader_pid) and running(ctr.unshare_pid)
        for kind in ("pid", "mnt", "uts", "ipc", "net", "cgroup", "time"):
            assert ns(ctr.leader_pid, kind) != ns("self", kind), kind
        user_ns_differs = ns(ctr.leader_pid, "user") != ns("self", "user")
        assert user_ns_differs == (ctr.mode != "plain")

    @pytest.mark.parametrize("key", CONTAINER_KEYS)
    def test_root_enters_with_nsenter_over_ssh(self, login, containers, key):
        ctr = containers[key]
        out = login("root").run(f"nsenter -t {ctr.leader_pid} -a hostname", hide=True)
        assert out.stdout == f"{ctr.name}\n"

    def test_alice_enters_her_subid_container_over_ssh(self, login, containers):
        ctr = containers["alice-subid"]
        out = login(TEST_USER).run(f"nsenter -t {ctr.leader_pid} -a sh -c 'hostname; id -u'")
        assert out.stdout == f"{ctr.name}\n0\n"

    def test_names_and_modes(self, containers):
        expected = {
            "plain": ("fabns-plain", "plain", "root"),
            "rootns": ("fabns-rootns", "maproot", "root"),
            "alice-maproot": ("fabns-amap", "maproot", TEST_USER),
            "alice-subid": ("fabns-asub", "subid", TEST_USER),
        }
        for key, (name, mode, owner) in expected.items():
            c = containers[key]
            assert (c.name, c.mode, c.owner) == (name, mode, owner)

    def test_id_maps(self, containers):
        alice = pwd.getpwnam(TEST_USER)

        def maps(key: str) -> tuple[list[str], list[str], str]:
            pid = containers[key].leader_pid
            return (
                Path(f"/proc/{pid}/uid_map").read_text().split(),
                Path(f"/proc/{pid}/gid_map").read_text().split(),
                Path(f"/proc/{pid}/setgroups").read_text().strip(),
            )

        assert maps("plain") == (["0", "0", "4294967295"], ["0", "0", "4294967295"], "allow")
        assert maps("rootns") == (["0", "0", "1"], ["0", "0", "1"], "deny")
        assert maps("alice-maproot") == (
            ["0", str(alice.pw_uid), "1"],
            ["0", str(alice.pw_gid), "1"],
            "deny",
        )
        assert maps("alice-subid") == (
            ["0", "100000", "65536"],
            ["0", "100000", "65536"],
            "allow",
        )

    def test_leaders_run_as_the_owners_ids_on_the_host(self, containers):
        alice = pwd.getpwnam(TEST_USER).pw_uid
        expected = {"plain": 0, "rootns": 0, "alice-maproot": alice, "alice-subid": 100000}
        for key, uid in expected.items():
            assert host_uid(containers[key].leader_pid) == uid

    @pytest.mark.parametrize("key", CONTAINER_KEYS)
    def test_leader_environment_is_clean(self, containers, key):
        ctr = containers[key]
        raw = Path(f"/proc/{ctr.leader_pid}/environ").read_bytes()
        env = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
        assert env == {
            "PATH": "/bin:/sbin:/usr/bin:/usr/sbin",
            "HOME": "/root",
            "container": "fabns",
            "FABNS_CTR": ctr.name,
            "FABNS_SPACED": "a b  c",
        }

    @pytest.mark.parametrize("key", CONTAINER_KEYS)
    def test_tmp_is_a_tmpfs_only_the_container_sees(self, containers, key):
        ctr = containers[key]
        mounts = Path(f"/proc/{ctr.leader_pid}/mountinfo").read_text().splitlines()
        tmp = [line for line in mounts if line.split()[4] == "/tmp"]
        assert len(tmp) == 1 and " - tmpfs " in tmp[0]
        root = os.readlink(f"/proc/{ctr.leader_pid}/root")
        if chroot_limitation():  # no pivot_root in a chroot: the leader is chrooted instead
            assert root.endswith(str(ctr.rootfs))
        else:
            assert root == "/"  # pivot_root'ed
        assert Path(f"/proc/{ctr.leader_pid}/root/etc/hostname").read_text() == f"{ctr.name}\n"

    def test_rootfs_ownership_follows_the_mapping(self, containers):
        def owner(key: str, path: str) -> tuple[int, int]:
            st = os.lstat(containers[key].rootfs / path)
            return st.st_uid, st.st_gid

        alice = pwd.getpwnam(TEST_USER)
        assert owner("plain", "bin/busybox") == (0, 0)
        assert owner("plain", "home/alice") == (1001, 1001)
        assert owner("alice-maproot", "bin/busybox") == (alice.pw_uid, alice.pw_gid)
        assert owner("alice-subid", "bin/sh") == (100000, 100000)
        assert owner("alice-subid", "home/app") == (101002, 101002)
        assert oct(os.stat(containers["plain"].rootfs / "var/tmp").st_mode & 0o7777) == "0o1777"

    @pytest.mark.parametrize(
        "mode, owner", [("plain", "root"), ("maproot", TEST_USER), ("subid", TEST_USER)]
    )
    def test_restart_gives_a_new_leader_and_stop_leaves_nothing(self, scratch, mode, owner):
        if mode != "plain" and chroot_limitation():
            pytest.skip(str(chroot_limitation()))
        ctr = Container.start(scratch, "fabns-t-restart", mode, owner)
        try:
            old = (ctr.leader_pid, ctr.unshare_pid)
            old_pidns = ns(ctr.leader_pid, "pid")
            (ctr.rootfs / "root/kept").write_text("kept")
            assert ctr.restart() is ctr
            assert ctr.leader_pid not in old and ctr.unshare_pid not in old
            assert not running(old[0]) and not running(old[1])
            assert not Path(f"/proc/{old[0]}").exists()  # reaped by unshare, not a zombie
            assert running(ctr.leader_pid) and ns(ctr.leader_pid, "pid") != old_pidns
            assert Path(f"/proc/{ctr.leader_pid}/root/root/kept").read_text() == "kept"
        finally:
            ctr.stop()
        assert not running(ctr.leader_pid) and not running(ctr.unshare_pid)
        assert not Path(f"/proc/{ctr.leader_pid}").exists()
        ctr.stop()  # idempotent

    def test_unprivileged_owner_needs_a_traversable_directory(self, tmp_path):
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        with pytest.raises(HarnessError, match="not traversable"):
            Container.start(private, "fabns-t-private", "subid", TEST_USER)

    @pytest.mark.parametrize(
        "mode, owner, match",
        [("plain", TEST_USER, "needs root"), ("chroot", "root", "unknown container mode")],
    )
    def test_bad_requests_are_harness_errors(self, scratch, mode, owner, match):
        with pytest.raises(HarnessError, match=match):
            Container.start(scratch, "fabns-t-bad", mode, owner)


MARKER = "made from the tarball\n"


def image_tree(directory: Path) -> Path:
    """A busybox root filesystem with a marker file and a setuid file, as a user's image."""
    tree = build_rootfs(directory / "image-tree", "fabns-image")
    (tree / "etc/fabns-marker").write_text(MARKER)
    (tree / "bin/fabns-setuid").write_bytes(b"#!/bin/sh\n")
    (tree / "bin/fabns-setuid").chmod(0o4755)
    os.link(tree / "etc/fabns-marker", tree / "etc/fabns-marker-link")
    return tree


def tarball(directory: Path, suffix: str = ".tar.gz") -> Path:
    """`image_tree` packed like ``mmdebstrap`` packs one (members ``./...``)."""
    archive = directory / f"image{suffix}"
    mode = {".tar": "w", ".tar.gz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}[suffix]
    with tarfile.open(archive, mode) as tar:
        tar.add(image_tree(directory), arcname=".")
    return archive


def hostile_tarball(directory: Path, members: list[tuple[str, str, str]]) -> Path:
    """A .tar of ``(name, kind, content or link target)``: kind file, sym, hard, chr or fifo."""
    types = {
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    archive = directory / "hostile.tar"
    with tarfile.open(archive, "w") as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value.encode()))
            else:
                info.type, info.linkname = types[kind], value
                tar.addfile(info)
    return archive


class TestOwnRootfs:
    @pytest.mark.parametrize(
        "mode, owner", [("plain", "root"), ("maproot", TEST_USER), ("subid", TEST_USER)]
    )
    def test_a_container_from_a_tarball(self, scratch, connect, mode, owner):
        if mode != "plain" and chroot_limitation():
            pytest.skip(str(chroot_limitation()))
        archive = tarball(scratch)
        ctr = Container.start(scratch, "fabns-t-tar", mode, owner, rootfs=archive)
        try:
            assert ctr.image == archive
            c = connect(owner, pid=ctr.leader_pid)
            out = c.run(
                "cat /etc/fabns-marker; hostname; stat -c '%u %a' /bin/fabns-setuid /home/app",
                hide=True,
            )
            assert (
                out.stdout
                == f"{MARKER}fabns-t-tar\n0 4755\n{0 if mode == 'maproot' else 1002} 755\n"
            )
            raw = Path(f"/proc/{ctr.leader_pid}/environ").read_bytes()
            env = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
            assert env == {
                "PATH": "/bin:/sbin:/usr/bin:/usr/sbin",
                "HOME": "/root",
                "container": "fabns",
                "FABNS_CTR": "fabns-t-tar",
                "FABNS_SPACED": "a b  c",
            }
        finally:
            ctr.stop()
        base = {"plain": 0, "maproot": pwd.getpwnam(owner).pw_uid, "subid": 100000}[mode]
        marker = os.lstat(ctr.rootfs / "etc/fabns-marker")
        assert (marker.st_uid, marker.st_nlink) == (base, 2)  # shifted once, still one inode
        app = os.lstat(ctr.rootfs / "home/app").st_uid
        assert app == (base + 1002 if mode == "subid" else base if mode == "maproot" else 1002)
        assert oct(os.lstat(ctr.rootfs / "bin/fabns-setuid").st_mode & 0o7777) == "0o4755"

    def test_restart_keeps_the_image_and_what_was_written(self, scratch, connect):
        archive = tarball(scratch, ".tar")
        ctr = Container.start(scratch, "fabns-t-tar", rootfs=archive, env={"APP": "x y"})
        try:
            connect("root", pid=ctr.leader_pid).run("echo kept > /root/kept")
            ctr.restart()
            assert (ctr.image, ctr.env) == (archive, {"APP": "x y"})
            out = connect("root", pid=ctr.leader_pid).run(
                "cat /root/kept /etc/fabns-marker; echo $APP", hide=True
            )
            assert out.stdout == f"kept\n{MARKER}x y\n"
            assert Container.from_description(ctr.describe()).image == archive
        finally:
            ctr.stop()

    @pytest.mark.parametrize("source", [".tar", ".tar.gz", ".tar.bz2", ".tar.xz", "directory"])
    def test_import_keeps_links_modes_and_ownership(self, scratch, source):
        image = image_tree(scratch) if source == "directory" else tarball(scratch, source)
        rootfs = import_rootfs(image, scratch / "out")
        assert (rootfs / "etc/fabns-marker").read_text() == MARKER
        assert os.readlink(rootfs / "bin/sh") == "/bin/busybox"  # absolute: the container's own
        assert resolve_inside(rootfs, "/usr/bin/env") == rootfs / "bin/busybox"
        assert (
            os.lstat(rootfs / "etc/fabns-marker").st_ino
            == os.lstat(rootfs / "etc/fabns-marker-link").st_ino
        )
        assert oct(os.lstat(rootfs / "bin/fabns-setuid").st_mode & 0o7777) == "0o4755"
        assert os.lstat(rootfs / "home/alice").st_uid == 1001
        assert oct(os.lstat(rootfs / "tmp").st_mode & 0o7777) == "0o1777"

    def test_zstd_archives_are_read_where_tarfile_can(self, scratch):
        plain = tarball(scratch, ".tar")
        archive = scratch / "image.tar.zst"
        if "zst" in tarfile.TarFile.OPEN_METH:  # Python 3.14+: it writes zstd too
            with tarfile.open(plain) as source, tarfile.open(archive, "w:zst") as target:
                for member in source.getmembers():
                    data = source.extractfile(member) if member.isfile() else None
                    target.addfile(member, data)
            assert (import_rootfs(archive, scratch / "out") / "etc/fabns-marker").exists()
        else:  # what a zstd frame looks like to a tarfile that cannot read zstd
            archive.write_bytes(b"\x28\xb5\x2f\xfd" + plain.read_bytes()[:4096])
            with pytest.raises(HarnessError, match="cannot read zstd"):
                import_rootfs(archive, scratch / "out")

    def test_an_archive_with_a_dotdot_member_is_refused(self, scratch):
        archive = hostile_tarball(scratch, [("bin/sh", "file", "x"), ("../evil", "file", "x")])
        with pytest.raises(HarnessError, match=r"refusing member '\.\./evil'"):
            Container.start(scratch / "containers", "fabns-t-evil", rootfs=archive)
        assert not (scratch / "containers/fabns-t-evil/evil").exists()
        assert not (scratch / "containers/fabns-t-evil/rootfs").exists()  # never reused

    @pytest.mark.parametrize(
        "members, match",
        [
            ([("/fabns-t-absolute", "file", "x")], "absolute path"),
            ([("etc/../../x", "file", "x")], "'..' in its path"),
            ([("escape", "sym", "../outside")], "points outside the root filesystem"),
            ([("etc", "sym", "../../../../etc"), ("etc/passwd", "file", "x")], "points outside"),
            ([("etc", "sym", "/tmp"), ("etc/fabns-t-planted", "file", "x")], "symbolic link etc"),
            ([("etc", "sym", "/tmp"), ("etc/fabns-t-planted", "fifo", "")], "symbolic link etc"),
            ([("x", "hard", "../outside")], "outside the archive"),
            ([("l", "sym", "/etc/shadow"), ("h", "hard", "l")], "hard link to the symbolic link"),
        ],
    )
    def test_hostile_archives_are_refused(self, scratch, members, match):
        archive = hostile_tarball(scratch, members)
        with pytest.raises(HarnessError, match=match):
            import_rootfs(archive, scratch / "out")
        assert sorted(os.listdir(scratch)) == ["hostile.tar", "out"]
        assert not Path("/fabns-t-absolute").exists() and not Path("/tmp/fabns-t-planted").exists()

    def test_device_nodes_are_skipped_and_later_entries_replace_links(self, scratch):
        archive = hostile_tarball(
            scratch,
            [
                ("dev/mem", "chr", ""),
                ("dev/mem-link", "hard", "dev/mem"),
                ("run/initctl", "fifo", ""),
                ("etc/passwd", "sym", "/etc/shadow"),
                ("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\n"),
            ],
        )
        rootfs = import_rootfs(archive, scratch / "out")
        assert os.listdir(rootfs / "dev") == []
        assert (rootfs / "run/initctl").is_fifo()
        assert not (rootfs / "etc/passwd").is_symlink()
        assert (rootfs / "etc/passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"

    def test_ids_a_user_namespace_cannot_map_are_refused(self, scratch):
        archive = scratch / "big-ids.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("file")
            info.uid = 70000
            tar.addfile(info, io.BytesIO(b""))
        with pytest.raises(HarnessError, match="70000:0, which a user namespace"):
            import_rootfs(archive, scratch / "out", (100000, 100000))

    def test_what_the_leader_needs_is_named_when_missing(self, scratch):
        archive = hostile_tarball(scratch, [("etc/hostname", "file", "empty\n")])
        with pytest.raises(HarnessError, match=r"has no /bin/sh and no env in .* and no sleep"):
            Container.start(scratch, "fabns-t-empty", rootfs=archive)
        assert not (scratch / "fabns-t-empty/rootfs").exists()


class TestSudo:
    def test_nopasswd_user(self, login):
        assert login(NOPASSWD_USER).run("sudo -n id -un", hide=True).stdout == "root\n"

    def test_password_user_needs_the_password_every_time(self, login):
        c = login(SUDO_USER)
        assert c.run("sudo -n true", hide=True, warn=True).failed
        out = c.run("sudo -S -p '' id -un", in_stream=io.StringIO(f"{SUDO_PASSWORD}\n"), hide=True)
        assert out.stdout == "root\n"
        # timestamp_timeout=0: no cached credential makes a later -n succeed
        assert c.run("sudo -n true", hide=True, warn=True).failed

    def test_password_user_with_fabric_sudo(self, login):
        assert login(SUDO_USER).sudo("id -un", password=SUDO_PASSWORD, hide=True).stdout == (
            "root\n"
        )

    def test_wrong_password_is_refused(self, login):
        with pytest.raises(UnexpectedExit):
            login(SUDO_USER).run("sudo -S -p '' true", in_stream=io.StringIO("wrong\n"), hide=True)

    def test_unprivileged_user_is_refused(self, login):
        assert login(TEST_USER).run("sudo -n true", hide=True, warn=True).failed
        policy = login("root").run(f"sudo -l -U {TEST_USER}", hide=True, warn=True).stdout
        assert f"User {TEST_USER} is not allowed to run sudo" in policy

    def test_sudoers_policy(self, login):
        root = login("root")
        assert "(ALL : ALL) ALL" in root.run(f"sudo -l -U {SUDO_USER}", hide=True).stdout
        assert "NOPASSWD: ALL" in root.run(f"sudo -l -U {NOPASSWD_USER}", hide=True).stdout


class TestHarness:
    def test_start_describe_stop_described(self):
        started = time.monotonic()
        harness = Harness.start()
        elapsed = time.monotonic() - started
        try:
            state = json.loads(json.dumps(harness.describe()))
            pids = [harness.sshd.pid] + [
                pid for c in harness.containers.values() for pid in (c.leader_pid, c.unshare_pid)
            ]
            assert all(running(pid) for pid in pids)
            assert elapsed < 5, f"Harness.start took {elapsed:.2f}s"
        except BaseException:
            harness.stop()
            raise
        Harness.stop_described(state)
        # stopped from the description alone: our Popen objects only need reaping
        harness.stop()
        assert [pid for pid in pids if running(pid)] == []
        assert not harness.directory.exists()


def _descendants(pid: int) -> list[int]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
