"""The command line's pure parts: cp locations, target labels, output prefixes, groups."""

from __future__ import annotations

import io
import threading

import pytest

from fabns import Config, ConfigError, InvalidArgument, NamespaceConnection
from fabns.config import connection_options
from fabns.copy import Location, ProgressBar
from fabns.group import expand_targets
from fabns.program import TargetOutput, unique_labels


class TestCopyLocations:
    @pytest.mark.parametrize(
        "text, target, path",
        [
            ("web1/app:/etc/app.conf", "web1/app", "/etc/app.conf"),
            ("root@web1:2222/app:rel/x", "root@web1:2222/app", "rel/x"),
            ("web1/pid:42:/tmp/a:b", "web1/pid:42", "/tmp/a:b"),
            ("web1/app:", "web1/app", ""),
            ("/etc/app.conf", None, "/etc/app.conf"),
            ("./dir/a:b", None, "./dir/a:b"),
            ("~/x:y/z", None, "~/x:y/z"),
            ("notes.txt", None, "notes.txt"),
            ("dir/file", None, "dir/file"),
            ("web1/pid:42", None, "web1/pid:42"),
        ],
    )
    def test_locations(self, text, target, path):
        assert Location.parse(text) == Location(path, target)

    @pytest.mark.parametrize("text", ["", "web1/pid:x:/tmp"])
    def test_bad_locations(self, text):
        with pytest.raises(InvalidArgument):
            Location.parse(text)

    def test_progress_bar_only_for_large_files_unless_asked(self):
        out = io.StringIO()
        bar = ProgressBar("f", out)
        bar(10, 100)
        assert out.getvalue() == ""
        bar(2 << 20, 2 << 20)
        bar.finish()
        assert "100% 2.0 MiB/2.0 MiB" in out.getvalue() and out.getvalue().endswith("\n")


class TestTargetOutput:
    def test_each_threads_lines_carry_its_target(self):
        real_out = io.StringIO()
        output = TargetOutput()
        output.real["out"] = real_out

        def work(label: str) -> None:
            output.bind(label)
            stream = output.stream(label, "out")
            stream.write("one\ntw")
            stream.write("o\nunfinished")
            output.bind(None)
            output.finish(label)

        threads = [threading.Thread(target=work, args=(f"h{i}/app",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lines = real_out.getvalue().splitlines()
        for i in range(4):
            mine = [line for line in lines if line.startswith(f"[h{i}/app] ")]
            assert mine == [f"[h{i}/app] one", f"[h{i}/app] two", f"[h{i}/app] unfinished"]

    def test_labels_name_the_user_only_where_they_collide(self):
        a = NamespaceConnection("root@web1", container="app")
        b = NamespaceConnection("alice@web1", container="app")
        c = NamespaceConnection("web2:2222", pid=7)
        d1, d2 = NamespaceConnection("web3", pid=1), NamespaceConnection("web3", pid=1, uid=5)
        labels = unique_labels([a, b, c, d1, d2])
        assert list(labels.values()) == [
            "root@web1/app", "alice@web1/app", "web2:2222/pid:7", "root@web3/pid:1#1",
            "root@web3/pid:1#2",
        ]  # fmt: skip


class TestGroupsAndOptions:
    def test_groups_expand_recursively_and_loops_are_named(self):
        config = Config(
            overrides={"fabns": {"groups": {"a": ["x/1", "@b"], "b": "y/2, z/3", "c": ["@c"]}}}
        )
        assert expand_targets(["@a", "w/0"], config) == ["x/1", "y/2", "z/3", "w/0"]
        with pytest.raises(ConfigError, match="loop: @c -> @c"):
            expand_targets(["@c"], config)

    def test_arguments_win_and_pid_and_container_go_together(self):
        config = Config(overrides={"fabns": {"container": "app", "method": "setns"}})
        assert connection_options(config)["container"] == "app"
        options = connection_options(config, pid=3, method="nsenter")
        assert (options["pid"], options["container"], options["method"]) == (3, None, "nsenter")
