"""`TargetSpec`: the one parser of target strings, and the one validator of target options."""

from __future__ import annotations

import pytest

from fabns import InvalidArgument
from fabns.spec import TargetSpec


class TestParse:
    @pytest.mark.parametrize(
        "text,expected",
        [
            ("web1/app", dict(host="web1", container="app")),
            ("root@web1/app", dict(host="web1", user="root", container="app")),
            ("admin@web1:2222/app", dict(host="web1", user="admin", port=2222, container="app")),
            ("web1/pid:4242", dict(host="web1", pid=4242)),
            ("a@b@web1/x", dict(host="web1", user="a@b", container="x")),
        ],
    )
    def test_targets(self, text, expected):
        spec = TargetSpec.parse(text)
        for key, value in expected.items():
            assert getattr(spec, key) == value
        assert str(spec) == text

    def test_options_fill_in_and_the_string_wins(self):
        assert TargetSpec.parse("web1", pid=7).pid == 7
        spec = TargetSpec.parse("web1/app", pid=7, method="setns", uid="www")
        assert (spec.pid, spec.container, spec.method, spec.uid) == (None, "app", "setns", "www")

    @pytest.mark.parametrize(
        "text",
        ["", "/app", "web1", "web1/", "web1/pid:", "web1/pid:x", "web1:ssh/app", "web1:0/app"],
    )
    def test_bad_strings(self, text):
        with pytest.raises(InvalidArgument):
            TargetSpec.parse(text)

    def test_unknown_option(self):
        with pytest.raises(InvalidArgument, match="unknown target options"):
            TargetSpec.parse("web1/app", colour="red")


class TestValidate:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {},
            {"pid": 1, "container": "x"},
            {"pid": 0},
            {"pid": True},
            {"pid": "12"},
            {"pid": 1, "method": "teleport"},
            {"container": "x", "engine": "kubernetes"},
            {"container": "a\x00b"},
            {"pid": 1, "engine": "lxc"},
            {"container": "x", "owner": "-rf"},
            {"pid": 1, "uid": -1},
            {"pid": 1, "port": 70000},
        ],
    )
    def test_refused(self, kwargs):
        with pytest.raises(InvalidArgument):
            TargetSpec(**kwargs)

    def test_labels(self):
        assert TargetSpec(container="web").label == "web"
        assert TargetSpec(pid=42).label == "pid-42"
        assert TargetSpec(pid=42).key == "pid=42"

    def test_replace_validates_again(self):
        with pytest.raises(InvalidArgument):
            TargetSpec(pid=4).replace(pid=-1)
