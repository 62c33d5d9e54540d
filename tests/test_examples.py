"""Every example in examples/ runs against real containers, as a user runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import connect  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(EXAMPLES))

import fabfile  # noqa: E402

from fabns.testing import build_rootfs, chroot_limitation  # noqa: E402

#: The two root containers of the harness the examples deploy to.
KEYS = ("plain", "rootns")


@pytest.fixture
def home(harness, tmp_path) -> Iterator[Path]:
    """A HOME whose ~/.ssh/config names the harness sshd ``fabns-example``, as a user's would.

    The containers' /srv/app is removed afterwards.
    """
    sshd = harness.sshd
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        f"Host fabns-example\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    )
    yield tmp_path
    for key in KEYS:
        shutil.rmtree(harness.containers[key].inside("/srv/app"), ignore_errors=True)


def run(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=home,
        env={"HOME": str(home), "PATH": f"{BIN}:/usr/bin:/bin"},
    )  # fmt: skip


def target(harness, key: str) -> str:
    return f"fabns-example/pid:{harness.containers[key].leader_pid}"


def live(harness, key: str) -> str:
    return harness.containers[key].inside("/srv/app/RELEASE").read_text().strip()


def test_the_fabfile_tasks_called_with_a_connection(harness, connect, home, capsys):
    c = connect("root", "plain")
    name = harness.containers["plain"].name
    assert fabfile.status(c) == f"{name}: release none"
    assert fabfile.release(c, "1.2.3", "[app]\n") == f"{name}: release 1.2.3"
    out = c.run(
        "cat /srv/app/current/settings.ini; stat -c %a /srv/app/current/settings.ini", hide=True
    )
    assert out.stdout == "[app]\n640\n"
    assert not Path("/srv/app/RELEASE").exists()  # the host was not touched
    assert capsys.readouterr().out.endswith(f"{name}: release 1.2.3\n")


def test_the_fabfile_with_fabns(harness, home):
    hosts = ",".join(target(harness, key) for key in KEYS)
    fab = [str(BIN / "fabns"), "-r", str(EXAMPLES), "-H", hosts]
    result = run(home, *fab, "release", "--version", "1.2.3")
    assert result.returncode == 0, result.stderr
    names = [harness.containers[key].name for key in KEYS]
    assert result.stdout == "".join(f"{n}: release 1.2.3\n" for n in names)
    assert [live(harness, key) for key in KEYS] == ["1.2.3", "1.2.3"]
    parallel = run(home, *fab, "--parallel", "2", "status")
    assert parallel.returncode == 0, parallel.stderr
    assert sorted(parallel.stdout.splitlines()) == sorted(
        f"[fabns-example/pid:{harness.containers[k].leader_pid}] {n}: release 1.2.3"
        for k, n in zip(KEYS, names, strict=True)
    )


def test_the_invoke_tasks_with_groups(harness, home):
    (home / ".fabric.yaml").write_text(
        "fabns:\n  groups:\n    web: [" + ", ".join(target(harness, k) for k in KEYS) + "]\n"
    )
    inv = [str(BIN / "inv"), "-r", str(EXAMPLES)]
    result = run(home, *inv, "release", "--hosts", "@web", "--version", "2.0")
    assert result.returncode == 0, result.stderr
    assert [live(harness, key) for key in KEYS] == ["2.0", "2.0"]
    assert result.stdout.splitlines() == [
        f"root@127.0.0.1:{harness.sshd.port}/pid:{harness.containers[k].leader_pid}: release 2.0"
        for k in KEYS
    ]
    bad = f"fabns-example/pid:{4194000}"
    partly = run(home, *inv, "status", "--hosts", f"@web,{bad}")
    assert partly.returncode == 1
    assert len(partly.stdout.splitlines()) == 2
    assert "TargetNotFound: no process 4194000" in partly.stderr
    assert partly.stderr.endswith(f"failed in 1: root@127.0.0.1:{harness.sshd.port}/pid:4194000\n")


def test_the_adhoc_rollout_script(harness, home):
    script = [sys.executable, str(EXAMPLES / "deploy.py")]
    hosts = [target(harness, key) for key in KEYS]
    result = run(home, *script, "3.0", *hosts)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("canary root@127.0.0.1:")
    assert [live(harness, key) for key in KEYS] == ["3.0", "3.0"]
    bad = run(home, *script, "3.1", *hosts, "fabns-example/pid:4194000")
    assert bad.returncode == 1
    assert "failed in 1 of 3: root@127.0.0.1:" in bad.stderr
    assert [live(harness, key) for key in KEYS] == ["3.1", "3.1"]


@pytest.mark.parametrize("rootfs", ["busybox", "tarball"])
def test_the_example_tests_pass_with_the_plugin(tmp_path, rootfs):
    """examples/test_deploy.py, as a user runs it: its own pytest, sshd and containers."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "fabns.testing.plugin",
            str(EXAMPLES / "test_deploy.py")]  # fmt: skip
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
