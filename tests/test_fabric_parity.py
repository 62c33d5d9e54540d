"""Fabric-style code behaves as it does with plain Fabric: results, file objects, paths."""

from __future__ import annotations

import io

from support import connect, method  # noqa: F401


def test_shell_returns_a_result_without_a_command(connect, method, capfd):
    c = connect("root", "plain", method=method)
    result = c.shell(in_stream=io.StringIO("echo in-shell-$((6 * 7)); exit 3\n"))
    assert result.command is None  # as fabric.Connection.shell()
    assert result.exited == 3 and result.connection is c
    assert "in-shell-42" in capfd.readouterr().out


class TestPutOfFileObjects:
    def test_a_freshly_written_buffer_is_sent_from_its_start(self, connect, method):
        c = connect("root", "plain", method=method)
        buffer = io.BytesIO()
        buffer.write(b"written, position at the end\n")
        c.put(buffer, "/tmp/fabns-parity-fresh")
        assert buffer.tell() == len(b"written, position at the end\n")  # left as it was
        out = c.run("cat /tmp/fabns-parity-fresh; rm /tmp/fabns-parity-fresh", hide=True)
        assert out.stdout == "written, position at the end\n"

    def test_the_position_is_restored_and_the_whole_object_sent(self, connect, method):
        c = connect("root", "plain", method=method)
        buffer = io.BytesIO(b"0123456789")
        buffer.seek(4)
        c.put(buffer, "/tmp/fabns-parity-seek")
        assert buffer.tell() == 4
        assert c.run("cat /tmp/fabns-parity-seek", hide=True).stdout == "0123456789"
        c.run("rm /tmp/fabns-parity-seek")


def test_relative_paths_follow_sftp_chdir_then_cd_then_home(connect, method, tmp_path):
    c = connect("root", "plain", method=method, uid="alice")
    c.run("mkdir -p /tmp/fabns-parity-dir")
    try:
        assert c.put(io.BytesIO(b"home"), "rel.txt").remote == "/home/alice/rel.txt"
        with c.cd("/tmp"):
            assert c.put(io.BytesIO(b"cd"), "rel.txt").remote == "/tmp/rel.txt"
            c.sftp().chdir("/tmp/fabns-parity-dir")  # as in Fabric, chdir() wins over cd()
            assert c.put(io.BytesIO(b"chdir"), "rel.txt").remote == "/tmp/fabns-parity-dir/rel.txt"
            got = c.get("rel.txt", str(tmp_path / "back.txt"))
            assert got.remote == "/tmp/fabns-parity-dir/rel.txt"
            assert (tmp_path / "back.txt").read_bytes() == b"chdir"
            c.sftp().chdir(None)  # back to cd()
            assert c.put(io.BytesIO(b"cd"), "rel.txt").remote == "/tmp/rel.txt"
        out = c.run("cat ~/rel.txt /tmp/rel.txt /tmp/fabns-parity-dir/rel.txt", hide=True)
        assert out.stdout == "homecdchdir"
    finally:
        c.run("rm -rf ~/rel.txt /tmp/rel.txt /tmp/fabns-parity-dir")
