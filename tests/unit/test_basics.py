"""Pure pieces: quoting, the marker filter, the account rules (no SSH needed).

These complement, never replace, the behaviour tests over the real sshd.
"""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabns.accounts import AccountBook, IdMap, parse_group, parse_passwd
from fabns.errors import InvalidArgument, UnknownUser
from fabns.host import Elevation
from fabns.markers import MarkerFilter
from fabns.quoting import env_assignment, join, quote, shell_path
from fabns.ways import kill_group_command

NO_NUL = st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8"))


class TestQuoting:
    @settings(max_examples=200, deadline=None)
    @given(NO_NUL)
    def test_any_string_survives_a_real_shell(self, text):
        out = subprocess.run(
            ["/bin/sh", "-c", f"printf %s {quote(text)}"], capture_output=True, check=True
        ).stdout
        assert out.decode("utf-8", "surrogateescape") == text

    @settings(max_examples=50, deadline=None)
    @given(st.lists(NO_NUL, min_size=1, max_size=5))
    def test_join_keeps_argv_boundaries(self, argv):
        out = subprocess.run(
            ["/bin/sh", "-c", "printf '%s\\0' " + join(argv)], capture_output=True, check=True
        ).stdout
        assert out.decode().split("\0")[:-1] == argv

    @pytest.mark.parametrize("bad", ["a\x00b", "\x00"])
    def test_nul_is_refused(self, bad):
        with pytest.raises(InvalidArgument, match="NUL"):
            quote(bad)

    @pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "A=B", "É", "$(x)"])
    def test_bad_variable_names(self, name):
        with pytest.raises(InvalidArgument):
            env_assignment(name, "v")


class TestMarkers:
    NONCE = "0123456789abcdef"

    @settings(max_examples=200, deadline=None)
    @given(st.binary(), st.binary(), st.lists(st.integers(1, 50), max_size=20), st.booleans())
    def test_any_split_strips_markers_and_keeps_user_bytes(self, before, after, cuts, crlf):
        nl = b"\r\n" if crlf else b"\n"
        before = before.replace(b"\x1f", b"")
        stream = (
            before
            + b"\x1ffabns:pid:"
            + self.NONCE.encode()
            + b":4242:987654"
            + nl
            + b"\x1ffabns:ok:"
            + self.NONCE.encode()
            + nl
            + after
        )
        f = MarkerFilter(self.NONCE)
        out, pos = b"", 0
        for cut in cuts:
            out += f.feed(stream[pos : pos + cut])
            pos += cut
        out += f.feed(stream[pos:]) + f.flush()
        assert out == before + after
        assert f.entered and f.host_pid == 4242 and f.host_start == "987654"
        assert f.error is None

    def test_error_marker(self):
        f = MarkerFilter(self.NONCE)
        f.feed(b"\x1ffabns:err:" + self.NONCE.encode() + b":setns:1:user\n")
        assert not f.entered
        assert f.error is not None and (f.error.step, f.error.errno, f.error.detail) == (
            "setns",
            1,
            "user",
        )

    def test_markers_after_ok_are_the_containers_output(self):
        f = MarkerFilter(self.NONCE)
        n = self.NONCE.encode()
        f.feed(b"\x1ffabns:pid:" + n + b":4242:99\n\x1ffabns:ok:" + n + b"\n")
        forged = (
            b"\x1ffabns:pid:" + n + b":777:1\n\x1ffabns:err:" + n + b":changed:0:x\n"
            b"\x1ffabns:pw:" + n + b"\n"
        )
        assert f.feed(forged) + f.flush() == forged
        assert (f.host_pid, f.host_start, f.error) == (4242, "99", None)
        assert not f.password_requested

    @pytest.mark.parametrize("fields", [b"1:5", b"0:5", b"12:", b"x:5", b"12:y"])
    def test_pid_marker_never_names_init_or_garbage(self, fields):
        f = MarkerFilter(self.NONCE)
        f.feed(b"\x1ffabns:pid:" + self.NONCE.encode() + b":" + fields + b"\n")
        assert f.host_pid is None and f.host_start is None

    def test_password_request_marker(self):
        f = MarkerFilter(self.NONCE)
        out = f.feed(b"motd\n\x1ffabns:pw:" + self.NONCE.encode() + b"\n")
        assert out == b"motd\n" and f.password_requested and not f.done

    def test_other_nonce_is_user_output(self):
        f = MarkerFilter(self.NONCE)
        forged = b"\x1ffabns:ok:ffffffffffffffff\n"
        assert f.feed(forged) + f.flush() == forged
        assert not f.entered


PASSWD = """root:x:0:0:root:/root:/bin/sh
alice:x:1001:1001:alice:/home/alice:/bin/sh
app:x:1002:1002:app user:/home/app:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
broken line
"""
GROUP = "root:x:0:\nwheel:x:10:app\nstaff:x:50:app,alice\nalice:x:1001:\napp:x:1002:\n"


def book(uid_map: str = "0 0 4294967295", gid_map: str = "0 0 4294967295") -> AccountBook:
    return AccountBook(
        parse_passwd(PASSWD), parse_group(GROUP), IdMap.parse(uid_map), IdMap.parse(gid_map), "t"
    )


class TestAccounts:
    def test_default_is_root_with_roots_groups(self):
        creds = book().credentials(None, None, default_root=True)
        assert (creds.uid, creds.gid, creds.groups) == (0, 0, (0,))
        assert creds.login_environment()["HOME"] == "/root"

    def test_named_user_gets_initgroups(self):
        creds = book().credentials("app", None, default_root=True)
        assert (creds.uid, creds.gid, creds.groups) == (1002, 1002, (1002, 10, 50))
        assert creds.shell == "/bin/bash"
        env = creds.login_environment()
        assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["USER"] == "app"

    def test_gid_override_goes_first(self):
        creds = book().credentials("app", "staff", default_root=True)
        assert creds.gid == 50 and creds.groups is not None and creds.groups[0] == 50

    def test_nologin_shell_falls_back_to_sh(self):
        assert book().credentials("nobody", None, default_root=True).shell == "/bin/sh"

    def test_unmapped_uid(self):
        with pytest.raises(UnknownUser, match="not mapped"):
            book(uid_map="0 1001 1").credentials("alice", None, default_root=True)

    def test_unmapped_groups_are_dropped(self):
        creds = book(gid_map="0 100000 1001\n1002 101002 1").credentials(
            "app", None, default_root=True
        )
        assert creds.groups == (1002, 10, 50)
        creds = book(gid_map="1002 5 1").credentials(1002, 1002, default_root=True)
        assert creds.groups == (1002,)

    def test_unknown_names(self):
        with pytest.raises(UnknownUser):
            book().credentials("ghost", None, default_root=True)
        with pytest.raises(UnknownUser):
            book().credentials(None, "ghosts", default_root=True)


class TestHostScripts:
    def test_kill_checks_start_time_and_group(self):
        script = kill_group_command(4242, "987654", "KILL")
        assert "fabns_stat 4242 ||" in script and '[ "$start" = 987654 ]' in script
        assert '[ "$pgrp" -gt 1 ]' in script

    @pytest.mark.parametrize("pid,start", [(1, "5"), (0, "5"), (12, "5; reboot"), (12, "")])
    def test_kill_refuses_init_and_bad_start_times(self, pid, start):
        with pytest.raises(ValueError):
            kill_group_command(pid, start, "KILL")

    @pytest.mark.parametrize(
        "path,word",
        [
            ("/srv/my app", "'/srv/my app'"),
            ("/tmp/$(touch x)", "'/tmp/$(touch x)'"),
            ("~", "~"),
            ("~/my app", "~/'my app'"),
            ("-rf", "./-rf"),
            ("~bob/x", "'~bob/x'"),
        ],
    )
    def test_cd_paths_are_literal(self, path, word):
        assert shell_path(path) == word

    def test_elevation_never_shows_the_password(self):
        elevation = Elevation("sudo-password", "/usr/bin/sudo", None, "s3cret")
        assert "s3cret" not in repr(elevation)
        assert "s3cret" not in elevation.wrap("true", ask="n0nce")


class TestNumericUser:
    def test_uid_without_passwd_entry_gets_nogroup_not_root(self):
        creds = book().credentials(4321, None, default_root=True)
        assert (creds.uid, creds.gid, creds.groups) == (4321, 65534, ())

    def test_unmapped_nogroup_says_to_pass_gid(self):
        with pytest.raises(UnknownUser, match="pass gid="):
            book(gid_map="0 0 1000").credentials(999, None, default_root=True)

    def test_unreadable_passwd_is_named(self):
        damaged = AccountBook(
            [], [], IdMap.parse("0 0 10"), IdMap.parse("0 0 10"), "t",
            problems={"/etc/passwd": "not a regular file"},
        )  # fmt: skip
        with pytest.raises(UnknownUser, match="not a regular file"):
            damaged.credentials("app", None, default_root=True)
