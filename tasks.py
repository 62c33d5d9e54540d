"""Developer tasks: ``inv test``, ``inv lint``, ``inv bench``, ``inv harness-up/down``."""

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
        "rounds": "commands per latency measurement",
        "mib": "size of the large transfer in MiB (0: skip transfers)",
        "small": "number of small files to transfer",
    }
)
def bench(c: Context, rounds: int = 30, mib: int = 256, small: int = 1000) -> None:
    """Per-command cost and transfer throughput: fabns vs plain Fabric vs raw OpenSSH, one run."""
    with c.cd(str(ROOT)):
        c.run(f"{PY} bench/run.py --rounds {rounds} --mib {mib} --small {small}", pty=False)


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
