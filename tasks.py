"""Developer tasks: ``inv test``, ``lint``, ``bench``, ``soak``, ``harness-up``, ``-down``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from invoke import Context, task

ROOT = Path(__file__).resolve().parent
STATE = ROOT / ".harness" / "state.json"
PY = sys.executable


@task
def lint(c: Context) -> None:
    """ruff check, ruff format --check, mypy (fabns and the engine test beds)."""
    with c.cd(str(ROOT)):
        c.run(f"{PY} -m ruff check fabns tests bench examples tasks.py")
        c.run(f"{PY} -m ruff format --check fabns tests bench examples tasks.py")
        c.run(f"{PY} -m mypy fabns tests/testbeds.py")


@task(help={"k": "only tests matching this expression", "x": "stop at the first failure"})
def test(c: Context, k: str = "", x: bool = False) -> None:
    """Lint, then the whole test suite against a real sshd and real containers."""
    lint(c)
    args = ["-q"]
    if k:
        args += ["-k", repr(k)]
    if x:
        args.append("-x")
    with c.cd(str(ROOT)):
        c.run(f"{PY} -m pytest {' '.join(args)}", pty=False)


@task(
    help={
        "rounds": "commands per latency measurement (median, p95)",
        "threads": "threads on one connection for the throughput figure",
        "gib": "GiB of command output (0: skip)",
        "resolves": "fresh connections for name vs PID resolve (0: skip)",
        "mib": "size of the large transfer in MiB (0: skip transfers)",
        "small": "number of small files to transfer",
        "groups": "containers for the group figures (0: skip)",
        "users": "accounts to measure, comma-separated (root, alice)",
    }
)
def bench(
    c: Context,
    rounds: int = 200,
    threads: int = 16,
    gib: float = 1,
    resolves: int = 20,
    mib: int = 256,
    small: int = 1000,
    groups: int = 32,
    users: str = "root,alice",
) -> None:
    """Per command, threads, big output, resolve, transfers: fabns vs Fabric, OpenSSH, Mitogen."""
    options = (
        f"--rounds {rounds} --threads {threads} --gib {gib} --resolves {resolves} "
        f"--mib {mib} --small {small} --groups {groups} --users {users}"
    )
    with c.cd(str(ROOT)):
        c.run(f"{PY} bench/run.py {options}", pty=False)


@task(help={"commands": "commands per thread (CI runs 25)"})
def soak(c: Context, commands: int = 500) -> None:
    """The soak test at full length: 8 threads of commands and transfers, nothing may grow."""
    with c.cd(str(ROOT)):
        c.run(
            f"{PY} -m pytest -q -m soak tests/test_soak.py",
            env={"FABNS_SOAK_COMMANDS": str(commands)},
            pty=False,
        )


@task(name="harness-up")
def harness_up(c: Context) -> None:
    """Start the test sshd and containers and leave them running (state in .harness/)."""
    from fabns.testing import Harness

    harness = Harness.start()
    STATE.parent.mkdir(exist_ok=True)
    STATE.write_text(json.dumps(harness.describe(), indent=2))
    print(json.dumps(harness.describe(), indent=2))


@task(name="harness-down")
def harness_down(c: Context) -> None:
    """Stop what harness-up started, by PID."""
    from fabns.testing import Harness

    if not STATE.exists():
        print("nothing to stop")
        return
    Harness.stop_described(json.loads(STATE.read_text()))
    STATE.unlink()
