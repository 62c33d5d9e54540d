"""The example deploy tasks work against real containers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import connect  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import deploy  # noqa: E402


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
