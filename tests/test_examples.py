"""The example deploy tasks work against real containers, and so do their example tests."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support import connect  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import deploy  # noqa: E402

from fabns.testing import build_rootfs, chroot_limitation  # noqa: E402


def test_release_and_status_inside_the_container(harness, connect):
    c = connect("root", "plain")
    assert deploy.status(c) == f"{harness.containers['plain'].name}: release none"
    assert (
        deploy.release(c, "1.2.3", b"[app]\n")
        == f"{harness.containers['plain'].name}: release 1.2.3"
    )
    assert (
        c.run(
            "cat /srv/app/current/settings.ini; stat -c %a /srv/app/current/settings.ini",
            hide=True,
        ).stdout
        == "[app]\n640\n"
    )
    assert not Path("/srv/app/RELEASE").exists()  # the host was not touched


@pytest.mark.parametrize("task", ["deploy.status"])
def test_invoke_runs_the_example_collection(harness, task, tmp_path):
    # the tasks read SSH settings like fab: give them an ssh config for the harness sshd
    sshd = harness.sshd
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host fabns-example\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(config.read_text())
    pid = harness.containers["plain"].leader_pid
    result = subprocess.run(
        [str(Path(sys.executable).parent / "inv"), "-r", str(ROOT / "examples"), task,
         "--hosts", f"fabns-example/pid:{pid}"],
        capture_output=True, text=True, timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{harness.containers['plain'].name}: release ")


@pytest.mark.parametrize("rootfs", ["busybox", "tarball"])
def test_the_example_tests_pass_with_the_plugin(tmp_path, rootfs):
    """examples/test_deploy.py, as a user runs it: its own pytest, sshd and containers."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "fabns.testing.plugin",
            str(ROOT / "examples" / "test_deploy.py")]  # fmt: skip
    if rootfs == "tarball":
        tree = build_rootfs(tmp_path / "tree", "image")
        with tarfile.open(tmp_path / "image.tar.gz", "w:gz") as tar:
            tar.add(tree, arcname=".")
        argv += ["--fabns-rootfs", str(tmp_path / "image.tar.gz")]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    image = tmp_path / "image.tar.gz" if rootfs == "tarball" else "busybox"
    assert f"\nfabns: containers from {image}\n" in result.stdout
    passed = 3 if chroot_limitation() else 4  # alice's container needs a user namespace
    assert re.search(rf"\b{passed} passed\b", result.stdout.splitlines()[-1]), result.stdout
