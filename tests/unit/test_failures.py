"""The one failure table: what the host side said -> which fabns exception."""

from __future__ import annotations

import errno

import pytest

from fabns import (
    ElevationRequired,
    EntryFailed,
    HelperError,
    PermissionDenied,
    TargetChanged,
    ToolMissing,
    UnknownUser,
)
from fabns.failures import from_exit, from_marker, tool_failure
from fabns.markers import EntryError


@pytest.mark.parametrize(
    "step,number,kind",
    [
        ("gone", errno.ESRCH, TargetChanged),
        ("changed", 0, TargetChanged),
        ("setns", errno.EPERM, PermissionDenied),
        ("open", errno.EACCES, PermissionDenied),
        ("setuid", errno.EINVAL, UnknownUser),
        ("setgid", errno.EINVAL, UnknownUser),
        ("exec", errno.ENOENT, ToolMissing),
        ("setns", errno.EINVAL, HelperError),
        ("chroot", errno.ENOENT, HelperError),
    ],
)
def test_markers(step, number, kind):
    error = from_marker(EntryError(step, number, "detail"), "PID 4 on web1", "setns")
    assert type(error) is kind
    assert "PID 4 on web1" in str(error)


@pytest.mark.parametrize(
    "exited,text,kind",
    [
        (1, "sudo: a password is required", ElevationRequired),
        (1, "nsenter: cannot open /proc/4/ns/mnt: Permission denied", PermissionDenied),
        (127, "sh: 1: exec: /usr/bin/nsenter: not found", ToolMissing),
        (125, "", EntryFailed),
    ],
)
def test_exits_without_a_marker(exited, text, kind):
    assert type(from_exit(exited, text, "PID 4 on web1", "nsenter")) is kind


def test_tool_failures_only_from_the_tools_own_first_line():
    prefix = "nsenter: "
    assert tool_failure(1, "nsenter: failed to execute /bin/sh: No such file", prefix, "x", "m")
    assert tool_failure(0, "nsenter: whatever", prefix, "x", "m") is None
    assert tool_failure(1, "make: *** Error 1\nnsenter: x", prefix, "x", "m") is None
    assert tool_failure(1, "nsenter: x", None, "x", "m") is None
