"""What every piece of the harness shares: its error, the test users, processes by PID.

Processes are always named by PID *and* start time (`start_time`), so a PID
the kernel gave to someone else meanwhile is never signalled. Everything a
piece starts goes through `spawn`; short setup commands through `run`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "NOPASSWD_USER",
    "SEARCH_PATH",
    "SUDO_PASSWORD",
    "SUDO_USER",
    "TEST_USER",
    "TIMEOUT",
    "HarnessError",
    "account",
    "descendants",
    "is_running",
    "proc_stat",
    "reap",
    "require_root",
    "run",
    "send_signal",
    "spawn",
    "start_time",
    "subordinate_start",
    "tail",
    "terminate",
    "wait_gone",
]

#: Unprivileged user without sudo; owns the user-namespaced containers.
TEST_USER = "alice"
#: User who may sudo with `SUDO_PASSWORD`.
SUDO_USER = "bob"
#: User who may sudo without a password.
NOPASSWD_USER = "carol"
#: `SUDO_USER`'s login password.
SUDO_PASSWORD = "fabns-test-password"

#: Seconds any piece may take to come up, or to go away, before `HarnessError`.
TIMEOUT = 10.0
#: PATH of every process the harness starts.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Appended to errors about what this machine lacks.
INSTALL_HINT = "run scripts/install.sh as root to prepare this machine"


class HarnessError(RuntimeError):
    """A piece of the test harness could not start or stop; the message says why."""


def require_root() -> None:
    """Raise `HarnessError` unless this process runs as root."""
    if os.geteuid() != 0:
        raise HarnessError(
            f"the fabns test harness must run as root (euid is {os.geteuid()}): it starts "
            "sshd, creates namespaces and chowns container root filesystems"
        )


# --------------------------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, starttime)`` of ``pid`` from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (tells a reused PID apart)."""
    found = proc_stat(pid)
    return None if found is None else found[2]


def is_running(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` exists, is not a zombie and (if given) started at ``start_time``."""
    found = proc_stat(pid)
    if found is None or found[0] in ("Z", "X", "x"):
        return False
    return start_time is None or found[2] == start_time


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the parent tree, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = proc_stat(int(entry))
            if found is not None:
                children.setdefault(found[1], []).append(int(entry))
    result: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            result.append(child)
            todo.append(child)
    return result


def send_signal(pid: int, sig: int, start_time: int | None) -> None:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start_time``."""
    if is_running(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(procs: Mapping[int, int | None], timeout: float) -> list[int]:
    """Wait until none of ``procs`` (PID -> start time) runs; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid, start in procs.items() if is_running(pid, start)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.005)


def terminate(procs: Mapping[int, int | None], grace: float = 1.0) -> None:
    """SIGTERM ``procs`` (PID -> start time), then SIGKILL what is left after ``grace`` s."""
    for pid, start in procs.items():
        send_signal(pid, signal.SIGTERM, start)
    left = wait_gone(procs, grace)
    for pid in left:
        send_signal(pid, signal.SIGKILL, procs[pid])
    left = wait_gone({pid: procs[pid] for pid in left}, TIMEOUT)
    if left:
        raise HarnessError(f"processes {left} survived SIGKILL for {TIMEOUT:.0f}s")


def reap(process: subprocess.Popen[bytes] | None) -> None:
    """Collect the exit status of our own child so it does not stay a zombie."""
    if process is not None:
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired as error:
            raise HarnessError(f"PID {process.pid} did not exit after SIGKILL") from error


def run(argv: Sequence[str], what: str) -> str:
    """Run a short setup command; `HarnessError` with its output if it fails."""
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise HarnessError(f"{what}: cannot run {argv[0]}: {error}; {INSTALL_HINT}") from error
    if done.returncode != 0:
        raise HarnessError(
            f"{what}: {' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def spawn(
    argv: Sequence[str],
    log: Path,
    account: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, output to ``log``, optionally as ``account``."""
    env = {"PATH": SEARCH_PATH, "LANG": "C.UTF-8", "HOME": "/root", "USER": "root"}
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    with open(log, "ab") as out:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd="/",
                env=env,
                start_new_session=True,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
            )
        except OSError as error:
            raise HarnessError(f"cannot start {argv[0]}: {error}; {INSTALL_HINT}") from error


def tail(path: Path, limit: int = 4000) -> str:
    """The end of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return text[-limit:] if text.strip() else "(log is empty)"


# --------------------------------------------------------------------------------- accounts


def account(user: str) -> pwd.struct_passwd:
    """``user``'s passwd entry on this machine; `HarnessError` if there is none."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise HarnessError(f"no user {user!r} on this machine; {INSTALL_HINT}") from None


def subordinate_start(user: str, database: str) -> int:
    """First id of ``user``'s range in /etc/subuid or /etc/subgid (``database``)."""
    entry = account(user)
    try:
        lines = Path(database).read_text().splitlines()
    except OSError as error:
        raise HarnessError(f"cannot read {database}: {error}; {INSTALL_HINT}") from error
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(entry.pw_uid)) and parts[1].isdigit():
            if int(parts[2]) < 65536:
                raise HarnessError(f"{database}: {user}'s range {line!r} has under 65536 ids")
            return int(parts[1])
    raise HarnessError(f"{user} has no range in {database}; {INSTALL_HINT}")
