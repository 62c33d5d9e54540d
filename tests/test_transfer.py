"""put(), get() and sftp() see the container's filesystem, over the real sshd."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time

import pytest
from fabric.transfer import Result
from support import ALL_TARGETS, METHODS, connect, method  # noqa: F401

from fabns import TransferFailed, UnknownUser

HOSTILE_NAMES = [
    "with space.txt",
    "quote'single.txt",
    'quote"double.txt',
    "new\nline.txt",
    "-leading-dash.txt",
    "ünïcødé ✓.txt",
    "$(touch pwned).txt",
]


def digest(path: os.PathLike[str] | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def leftovers(c, directory: str) -> list[str]:
    return [n for n in c.sftp().listdir(directory) if n.startswith(".fabns-tmp-")]


class TestRoundTrip:
    @pytest.mark.parametrize("size", [0, 1, 65537, 3 * 1024 * 1024 + 7])
    def test_binary_round_trip(self, connect, method, size, tmp_path):
        c = connect("root", "plain", method=method)
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(size))
        result = c.put(str(src), "/tmp/data.bin")
        assert isinstance(result, Result) and result.remote == "/tmp/data.bin"
        inside = c.run("sha256sum /tmp/data.bin", hide=True).stdout.split()[0]
        assert inside == digest(src)
        back = c.get("/tmp/data.bin", str(tmp_path / "back.bin"))
        assert back.local == str(tmp_path / "back.bin")
        assert digest(tmp_path / "back.bin") == digest(src)

    def test_large_file_streams(self, connect, tmp_path):
        c = connect("root", "plain", method="setns")
        src = tmp_path / "large.bin"
        with open(src, "wb") as f:
            for _ in range(100):
                f.write(os.urandom(1024 * 1024))
        seen: list[int] = []
        c.put(str(src), "/root/large.bin", progress=lambda done, total: seen.append(done))
        assert seen and seen[-1] == 100 * 1024 * 1024
        c.get("/root/large.bin", str(tmp_path / "large.back"))
        assert digest(tmp_path / "large.back") == digest(src)
        c.run("rm /root/large.bin")

    @pytest.mark.parametrize("user,key", ALL_TARGETS)
    def test_path_only_in_the_containers_tmpfs(self, connect, method, user, key, tmp_path):
        c = connect(user, key, method=method)
        name = f"fabns-put-only-inside-{method}-{key}"
        c.put(io.BytesIO(b"inside\n"), f"/tmp/{name}")
        assert not os.path.exists(f"/tmp/{name}")
        assert c.run(f"cat /tmp/{name}", hide=True).stdout == "inside\n"
        sink = io.BytesIO()
        c.get(f"/tmp/{name}", sink)
        assert sink.getvalue() == b"inside\n"

    def test_relative_paths_use_home_and_cd(self, connect, method):
        c = connect("root", "plain", method=method, uid="alice")
        assert c.put(io.BytesIO(b"a"), "rel.txt").remote == "/home/alice/rel.txt"
        with c.cd("/tmp"):
            assert c.put(io.BytesIO(b"b"), "rel.txt").remote == "/tmp/rel.txt"
        assert c.run("cat ~/rel.txt /tmp/rel.txt", hide=True).stdout == "ab"

    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    def test_hostile_file_names(self, connect, method, name, tmp_path):
        c = connect("root", "plain", method=method)
        src = tmp_path / "x"
        src.write_bytes(name.encode())
        c.put(str(src), f"/tmp/{name}")
        c.get(f"/tmp/{name}", str(tmp_path / "y"))
        assert (tmp_path / "y").read_bytes() == name.encode()
        assert not os.path.exists("/tmp/pwned") and not os.path.exists("pwned")


class TestModesAndOwners:
    def test_mode_is_preserved_or_set(self, connect, method, tmp_path):
        c = connect("root", "plain", method=method)
        src = tmp_path / "script.sh"
        src.write_text("#!/bin/sh\necho run\n")
        src.chmod(0o750)
        c.put(str(src), "/tmp/script.sh")
        assert c.run("stat -c %a /tmp/script.sh; /tmp/script.sh", hide=True).stdout == "750\nrun\n"
        c.put(str(src), "/tmp/script.sh", mode=0o600)
        assert c.run("stat -c %a /tmp/script.sh", hide=True).stdout == "600\n"
        c.get("/tmp/script.sh", str(tmp_path / "got"))
        assert stat.S_IMODE((tmp_path / "got").stat().st_mode) == 0o600

    @pytest.mark.parametrize("user,key", [("root", "rootns"), ("alice", "alice-subid")])
    def test_owner_ids_are_the_containers(self, connect, method, user, key):
        c = connect(user, key, method=method)
        if key == "rootns":  # only 0 is mapped in a --map-root-user namespace
            with pytest.raises(UnknownUser, match="not mapped"):
                c.put(io.BytesIO(b"x"), "/tmp/owned", owner="alice", group="staff")
            assert c.run("ls -a /tmp", hide=True).stdout.count(".fabns-tmp-") == 0
            assert c.run("test -e /tmp/owned", warn=True, hide=True).exited == 1
            return
        c.put(io.BytesIO(b"x"), "/tmp/owned", owner="alice", group="staff")
        assert c.run("stat -c '%u %g' /tmp/owned", hide=True).stdout == "1001 50\n"
        c.put(io.BytesIO(b"y"), "/tmp/by-root")
        assert c.run("stat -c '%u %g' /tmp/by-root", hide=True).stdout == "0 0\n"

    def test_default_owner_is_the_connection_user(self, connect, method):
        c = connect("root", "plain", method=method, uid="app")
        c.put(io.BytesIO(b"x"), "/tmp/app-file")
        assert c.run("stat -c '%U %G' /tmp/app-file", hide=True).stdout == "app app\n"

    def test_unknown_owner(self, connect, method):
        c = connect("root", "plain", method=method)
        with pytest.raises(UnknownUser):
            c.put(io.BytesIO(b"x"), "/tmp/nobody-file", owner="ghost")


class TestFailures:
    def test_interrupted_upload_leaves_old_file_and_no_temp(self, connect, method):
        c = connect("root", "plain", method=method)
        c.put(io.BytesIO(b"old contents\n"), "/tmp/keep.conf")

        class Exploding(io.RawIOBase):
            sent = 0

            def readable(self) -> bool:
                return True

            def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
                if self.sent > 200_000:
                    raise OSError("disk on fire")
                buffer[: len(buffer)] = b"n" * len(buffer)
                self.sent += len(buffer)
                return len(buffer)

        with pytest.raises(TransferFailed):
            c.put(io.BufferedReader(Exploding()), "/tmp/keep.conf")
        assert c.run("cat /tmp/keep.conf", hide=True).stdout == "old contents\n"
        assert leftovers(c, "/tmp") == []

    def test_connection_dropped_mid_upload_leaves_no_temp(self, connect, method):
        c = connect("root", "plain", method=method)
        sftp = c.sftp()
        f = sftp.open("/tmp/.fabns-tmp-dropped", "wb")
        f.write(b"partial")
        f.flush()
        c.close()  # the helper sees EOF and removes what it did not rename
        c2 = connect("root", "plain", method=method)
        deadline = time.monotonic() + 5
        while leftovers(c2, "/tmp") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(c2, "/tmp") == []

    def test_missing_source(self, connect, method, tmp_path):
        c = connect("root", "plain", method=method)
        with pytest.raises(TransferFailed, match="does not exist"):
            c.put(str(tmp_path / "nope"), "/tmp/nope")
        with pytest.raises(TransferFailed, match="/tmp/no-such-file") as info:
            c.get("/tmp/no-such-file", str(tmp_path / "x"))
        assert isinstance(info.value, FileNotFoundError | OSError)
        assert not (tmp_path / "x").exists()

    def test_missing_destination_directory(self, connect, method):
        c = connect("root", "plain", method=method)
        with pytest.raises(TransferFailed, match="/no/such/dir/file"):
            c.put(io.BytesIO(b"x"), "/no/such/dir/file")

    def test_permission_denied_inside(self, connect, method):
        c = connect("root", "plain", method=method, uid="alice")
        with pytest.raises(TransferFailed, match="Permission denied") as info:
            c.put(io.BytesIO(b"x"), "/etc/passwd")
        assert info.value.filename == "/etc/passwd"
        assert "root:x:0:0" in c.run("cat /etc/passwd", hide=True).stdout

    def test_disk_full(self, connect, method, tmp_path):
        c = connect("root", "plain", method=method)
        c.run("mkdir -p /mnt/small && mount -t tmpfs -o size=256k small /mnt/small", hide=True)
        try:
            c.put(io.BytesIO(b"old\n"), "/mnt/small/file")
            with pytest.raises(TransferFailed, match="No space left"):
                c.put(io.BytesIO(os.urandom(1024 * 1024)), "/mnt/small/file")
            assert c.run("cat /mnt/small/file", hide=True).stdout == "old\n"
            assert leftovers(c, "/mnt/small") == []
        finally:
            c.run("umount /mnt/small", hide=True, warn=True)
