"""Attacks from inside a container: the trust boundary, tested with real exploits.

Threat model: fabns enters containers as host root, and the container's root
is hostile. It controls its files, its processes' environments and argv,
everything it prints, and it can race fabns and ptrace inside. The rule these
tests hold fabns to: nothing the container controls is interpreted by host-side
code. Host steps run with a fixed environment and absolute tool paths; only
host-side code, before the container's first instruction, speaks the marker
protocol (`fabns.markers`); what the client does on the host (signal a process
group, retry, send a sudo password) depends only on what the host side said.

Each class is one attack; its docstring says what the container does and what
must hold. Every exploit is real: a shared object whose constructor leaves a
file on the host, a decoy host process the forged markers point at, a lying
``lxc-ls``, a racing symlink planter. A test fails because the exploit
worked (the marker file exists, the decoy died, the password arrived), and
says so.

Everything runs over the real sshd against real containers, for every way in
that applies. Containers with a hostile environment or root filesystem are
started here (``Container.start(env=..., prepare=...)``) and stopped here; the
harness's shared containers only get uniquely named files in their ``/tmp``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import CommandTimedOut, UnexpectedExit
from support import connect, host_processes, method, replacing, way_options  # noqa: F401

import fabns.host
from fabns import (
    Config,
    NamespaceConnection,
    NamespaceError,
    PermissionDenied,
    TargetChanged,
    TransferFailed,
    UnknownUser,
)
from fabns.testing import (
    NOPASSWD_USER,
    SUDO_PASSWORD,
    SUDO_USER,
    TEST_USER,
    Container,
    SSHServer,
)

#: A clean search path for finding the real host tools the fakes stand in for.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: How long a probe of a hostile container may take before the test calls it a hang.
PROBE_BUDGET = 30.0
#: How much the client's resident memory may grow while probing a hostile container.
MEMORY_BUDGET = 200 * 1024 * 1024
PREFIX = "\x1ffabns:"

# A shared object whose constructor appends "VECTOR /proc/self/exe" to MARKER: loaded by
# any host program, it leaves proof on the host. la_version makes it a valid LD_AUDIT module.
MARKER_SO = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void fabns_attack_marker(void) {
    char exe[512] = {0};
    if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) strcpy(exe, "?");
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return;
    write(fd, VECTOR " ", strlen(VECTOR) + 1);
    write(fd, exe, strlen(exe));
    write(fd, "\n", 1);
    close(fd);
}

unsigned int la_version(unsigned int version) { return version; }
"""
#: Libraries of host tools (nsenter, sudo, lxc-attach, python3) that LD_LIBRARY_PATH can
#: replace: each shim is a filter of the real one (so the tool still works) plus the marker.
SHIMMED_LIBRARIES = ("libpcre2-8.so.0", "libselinux.so.1", "libz.so.1")
#: Host programs a user's ``env={"PATH": ...}`` must never make fabns run from that PATH.
FAKED_TOOLS = (
    "nsenter", "sudo", "env", "sh", "bash", "dash", "python3", "readlink", "cat", "kill",
    "id", "printf", "lxc-attach", "lxc-ls", "runuser", "systemd-run", "setsid", "stat",
)  # fmt: skip


# ----------------------------------------------------------------------------- the host side


@dataclass
class Payloads:
    """Host files a hostile container points at, and the directory where they report.

    `fired` lists what ran: one file per attack vector in `markers`
    (world-writable, so a payload loaded by any user's process can report).
    """

    root: Path
    markers: Path
    #: The leader environment of the hostile containers: every variable that could
    #: make a host program run code, each pointing at a payload here, plus FOO=bar.
    env: dict[str, str]
    #: A directory of fake host tools (nsenter, sudo, env, sh, python3, ...).
    fake_bin: Path

    def reset(self) -> None:
        for entry in self.markers.iterdir():
            entry.unlink()

    def fired(self) -> dict[str, str]:
        """Vector -> what it recorded (which host program loaded it); empty if nothing ran."""
        return {entry.name: entry.read_text() for entry in sorted(self.markers.iterdir())}


def _compile(source: Path, output: Path, marker: Path, vector: str, *flags: str) -> None:
    argv = [
        "gcc", "-shared", "-fPIC", "-O1", "-o", str(output), f'-DMARKER="{marker}"',
        f'-DVECTOR="{vector}"', *flags, str(source),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"gcc failed (scripts/install.sh installs gcc):\n{done.stderr}"
    output.chmod(0o755)


def _real_library(soname: str) -> str | None:
    """Absolute path of the host's ``soname`` (from the ld.so cache), or None."""
    listing = subprocess.run(
        ["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=False
    ).stdout
    for line in listing.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ", 1)[0] == soname and path.startswith("/"):
            return path
    return None


def _python_home_farm(home: Path, sitecustomize: str) -> None:
    """A PYTHONHOME for the host's python3s: their stdlib, symlinked, with our sitecustomize."""
    pythons = {"/usr/bin/python3", shutil.which("python3") or "/usr/bin/python3"}
    for python in sorted(pythons):
        if not os.access(python, os.X_OK):
            continue
        done = subprocess.run(
            [python, "-c", "import sys, sysconfig; print(sys.version_info[1]); "
             "print(sysconfig.get_path('stdlib'))"],
            capture_output=True, text=True, check=False, env={"PATH": HOST_PATH},
        )  # fmt: skip
        if done.returncode != 0:
            continue
        minor, stdlib = done.stdout.split("\n")[:2]
        lib = home / "lib" / f"python3.{minor}"
        if lib.exists():
            continue
        lib.mkdir(parents=True)
        for entry in Path(stdlib).iterdir():
            if entry.name != "sitecustomize.py":
                (lib / entry.name).symlink_to(entry)
        (lib / "sitecustomize.py").write_text(sitecustomize)


def _build_payloads(root: Path) -> Payloads:
    markers = root / "markers"
    markers.mkdir()
    markers.chmod(0o1777)
    source = root / "marker.c"
    source.write_text(MARKER_SO)

    def mark(vector: str) -> Path:
        return markers / vector

    def so(name: str, vector: str, *flags: str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _compile(source, path, mark(vector), vector, *flags)
        return path

    preload = so("preload.so", "LD_PRELOAD")
    audit = so("audit.so", "LD_AUDIT")
    for soname in SHIMMED_LIBRARIES:
        real = _real_library(soname)
        if real is not None:
            so(
                f"libdir/{soname}", "LD_LIBRARY_PATH",
                f"-Wl,-soname,libfabns-shim-{soname}", f"-Wl,--filter={real}",
            )  # fmt: skip
    gconv = root / "gconv"
    so("gconv/FABNS.so", "GCONV_PATH")
    (gconv / "gconv-modules").write_text(
        "module\tINTERNAL\tFABNS//\tFABNS\t1\nmodule\tFABNS//\tINTERNAL\tFABNS\t1\n"
    )

    def shell_payload(vector: str) -> Path:
        path = root / f"{vector.lower()}.sh"
        path.write_text(f'echo "{vector} $0" >> {mark(vector)}\n')
        return path

    def python_payload(vector: str) -> str:
        return (
            "import sys\n"
            f"with open({str(mark(vector))!r}, 'a') as f:\n"
            f"    f.write({vector!r} + ' ' + sys.executable + '\\n')\n"
        )

    pythonpath = root / "pythonpath"
    pythonpath.mkdir()
    for module in ("sitecustomize.py", "usercustomize.py"):
        (pythonpath / module).write_text(python_payload("PYTHONPATH"))
    startup = root / "startup.py"
    startup.write_text(python_payload("PYTHONSTARTUP"))
    python_home = root / "pythonhome"
    _python_home_farm(python_home, python_payload("PYTHONHOME"))

    fake_bin = root / "fake-bin"
    fake_bin.mkdir()
    for tool in FAKED_TOOLS:
        real = shutil.which(tool, path=HOST_PATH)
        run_real = f'exec {real} "$@"' if real else "exit 127"
        script = fake_bin / tool
        script.write_text(f'#!/bin/sh\necho "$0 $*" >> {mark("PATH-" + tool)}\n{run_real}\n')
        script.chmod(0o755)

    env = {
        "FOO": "bar",
        "LD_PRELOAD": str(preload),
        "LD_AUDIT": str(audit),
        "LD_LIBRARY_PATH": str(root / "libdir"),
        "GCONV_PATH": str(gconv),
        "BASH_ENV": str(shell_payload("BASH_ENV")),
        "ENV": str(shell_payload("ENV")),
        # bash imports SHELLOPTS: xtrace expands PS4, command substitution included
        "SHELLOPTS": "xtrace",
        "PS4": f"$(echo SHELLOPTS >> {mark('SHELLOPTS')})",
        "PYTHONPATH": str(pythonpath),
        "PYTHONSTARTUP": str(startup),
        "PYTHONHOME": str(python_home),
    }
    return Payloads(root=root, markers=markers, env=env, fake_bin=fake_bin)


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """A 0755 directory under /tmp: payloads and alice's containers must be reachable by
    every user (pytest's own temp dirs are root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fabns-attacks-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def payloads(world: Path) -> Payloads:
    root = world / "payloads"
    root.mkdir()
    root.chmod(0o755)
    return _build_payloads(root)


@pytest.fixture
def clean_markers(payloads: Payloads) -> Payloads:
    payloads.reset()
    return payloads


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's own root-owned containers live."""
    return tmp_path_factory.mktemp("attack-containers")


@contextlib.contextmanager
def started(
    directory: Path, name: str, mode: str = "plain", owner: str = "root", **kwargs: Any
) -> Iterator[Container]:
    """A container of this module's, stopped (by PID) when the block ends."""
    ctr = Container.start(directory, name, mode, owner, **kwargs)
    try:
        yield ctr
    finally:
        ctr.stop()


def open_connection(server: SSHServer, user: str = "root", **kwargs: Any) -> NamespaceConnection:
    overrides: dict[str, Any] = {"run": {"in_stream": False}}
    for key, value in kwargs.pop("overrides", {}).items():
        overrides.setdefault(key, {}).update(value)
    config = Config(overrides=overrides)
    return NamespaceConnection(
        **server.connection_kwargs(user), config=config, **way_options(kwargs)
    )


def read_inside(ctr: Container, path: str) -> bytes | None:
    """A regular file's bytes as the container sees it; None if missing. Never follows a
    symlink the container planted (through /proc/PID/root it would resolve on the host)."""
    try:
        fd = os.open(ctr.inside(path), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def exists_inside(ctr: Container, path: str) -> bool:
    """Whether anything (a file, a link) is at ``path`` as the container sees it."""
    return os.path.lexists(ctr.inside(path))


def _unique(stem: str, directory: str = "/tmp") -> str:
    return f"{directory}/fabns-{stem}-{secrets.token_hex(4)}"


# ----------------------------------------------------------------------------- 1: environment


def timed_out(call: Callable[[], Any]) -> None:
    """Run a command that outlives its ``timeout`` (warn=True): here only the host-side kill
    matters, so a timeout reported as a failed Result (see test_forged_pid_...) is fine."""
    with contextlib.suppress(CommandTimedOut):
        result = call()
        assert result.failed, result


@pytest.fixture(scope="module")
def hostile_env_containers(scratch: Path, world: Path, payloads: Payloads) -> Iterator[dict]:
    """Containers whose leader's environment is `Payloads.env`: root's plain one and alice's
    own (--map-root-user, in a directory alice can reach)."""
    alice_dir = world / "containers"
    alice_dir.mkdir()
    alice_dir.chmod(0o755)
    with (
        started(scratch, "fabns-hostile-env", env=payloads.env) as plain,
        started(alice_dir, "fabns-hostile-aenv", "maproot", TEST_USER, env=payloads.env) as own,
    ):
        yield {"root": plain, NOPASSWD_USER: plain, TEST_USER: own}


class TestHostEnvironmentInjection:
    """The container sets LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH, GCONV_PATH, BASH_ENV, ENV,
    SHELLOPTS+PS4, PYTHONPATH, PYTHONSTARTUP and PYTHONHOME in its leader's environment,
    each pointing at a host payload that leaves a marker file when a host program loads it.

    That environment is the *command's* (inside, after entering), never that of a host step:
    no marker appears, whichever way in and whoever enters (root; carol through sudo -n;
    alice into her own container), and the command still sees the container's variables.
    """

    @pytest.mark.parametrize("user", ["root", NOPASSWD_USER, TEST_USER])
    def test_container_environment_never_reaches_host_programs(
        self, connect, method, user, hostile_env_containers, clean_markers
    ):
        ctr = hostile_env_containers[user]
        c = connect(user, pid=ctr.leader_pid, method=method)
        assert c.run('echo "$FOO"', hide=True).stdout == "bar\n"
        if user != TEST_USER:  # alice's --map-root-user namespace maps only root
            assert c.sudo('echo "$FOO $(id -un)"', user="app", hide=True).stdout == "bar app\n"
            c.put(io.BytesIO(b"data"), "/tmp/env-roundtrip")
            sink = io.BytesIO()
            c.get("/tmp/env-roundtrip", sink)
            assert sink.getvalue() == b"data"
        timed_out(lambda: c.run("sleep 30", hide=True, timeout=1, warn=True))  # the host kill
        assert clean_markers.fired() == {}, "host programs ran with the container's environment"

    @pytest.mark.parametrize("user", ["root", NOPASSWD_USER])
    def test_users_path_is_only_the_commands(self, connect, method, user, clean_markers):
        """``env={"PATH": dir}`` where dir holds fake nsenter, sudo, env, sh, python3...:
        none of them runs on the host; inside, the command sees PATH=dir."""
        fake = str(clean_markers.fake_bin)
        c = connect(user, "plain", method=method)
        assert c.run('echo "$PATH"', env={"PATH": fake}, hide=True).stdout == f"{fake}\n"
        out = c.sudo('echo "$PATH"', user="app", env={"PATH": fake}, hide=True).stdout
        assert out == f"{fake}\n"
        timed_out(
            lambda: c.run("/bin/sleep 30", env={"PATH": fake}, hide=True, timeout=1, warn=True)
        )
        assert clean_markers.fired() == {}, "fake host tools ran from the user's PATH"


# ----------------------------------------------------------------------------- 2: markers


@dataclass
class Decoy:
    """A host process in a session and process group of its own, that nothing may signal."""

    process: subprocess.Popen[bytes]
    start_time: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        return _start_time(self.pid) == self.start_time


def _start_time(pid: int) -> str | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()[19]


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    process = subprocess.Popen(
        ["/bin/sleep", "600"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        start = _start_time(process.pid)
        assert start is not None and process.pid > 1
        yield Decoy(process, start)
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def forger(scratch: Path) -> Iterator[Container]:
    """A container of its own: its /bin/sh gets replaced by the tests."""
    with started(scratch, "fabns-forger") as ctr:
        yield ctr


@contextlib.contextmanager
def forging_shell(ctr: Container, forged: bytes) -> Iterator[None]:
    """Make the container's /bin/sh print ``forged`` first, then exec busybox sh."""
    sh = ctr.rootfs / "bin/sh"
    data = ctr.rootfs / "etc/fabns-forged"
    data.write_bytes(forged)
    sh.unlink()
    sh.write_text(
        '#!/bin/busybox sh\n/bin/busybox cat /etc/fabns-forged\nexec /bin/busybox sh "$@"\n'
    )
    sh.chmod(0o755)
    try:
        yield
    finally:
        sh.unlink()
        sh.symlink_to("/bin/busybox")
        data.unlink()


def forged_lines(kind: str, nonce: str, decoy: Decoy) -> list[str]:
    """The lines the container's /bin/sh prints before every command, for attack ``kind``."""
    pid_lines = [
        f"{PREFIX}pid:{nonce}:{decoy.pid}:{decoy.start_time}\n",  # today's format
        f"{PREFIX}pid:{nonce}:{decoy.pid}\n",  # the older one
    ]
    ok = f"{PREFIX}ok:{nonce}\n"
    changed = f"{PREFIX}err:{nonce}:changed:0:x\n"
    gone = f"{PREFIX}err:{nonce}:gone:3:x\n"
    return {
        "pid-ok": [*pid_lines, ok, changed, gone],
        "err-changed": [changed],
        "err-gone": [gone],
        "pw-pid-ok": [f"{PREFIX}pw:{nonce}\n", *pid_lines, ok],
    }[kind]


class TestForgedMarkers:
    """The container's /bin/sh (which runs every command) first prints marker lines with
    the connection's real nonce: ``pid`` naming a decoy host process (its own session and
    process group), ``ok``, ``err ... changed`` and ``err ... gone``.

    Markers come only from the host side, before the container's first instruction:
    a timeout kills the command, never the decoy; a forged ``err`` is not a
    TargetChanged and never causes a re-run; the forged lines reach the user's stdout
    as the container's output.
    """

    @pytest.mark.parametrize("warn", [False, True])
    @pytest.mark.parametrize("kind", ["pid-ok", "pw-pid-ok"])
    def test_forged_pid_never_gets_a_host_process_killed(
        self, connect, method, forger, decoy, kind, warn
    ):
        c = connect("root", pid=forger.leader_pid, method=method)
        runs = _unique("runs")
        lines = forged_lines(kind, c.fabns_nonce, decoy)
        with forging_shell(forger, "".join(lines).encode()):
            try:
                outcome = c.run(f"echo run >> {runs}; sleep 30", hide=True, timeout=1, warn=warn)
            except CommandTimedOut as timed_out:
                outcome = timed_out.result
        assert decoy.alive(), "fabns signalled the process group a forged pid marker named"
        assert read_inside(forger, runs) == b"run\n", "the command ran other than once"
        for line in lines:
            assert line in outcome.stdout, f"forged {line!r} was taken for a marker"

    @pytest.mark.parametrize("warn", [False, True])
    @pytest.mark.parametrize("kind", ["err-changed", "err-gone"])
    def test_forged_error_is_output_not_a_changed_target(
        self, connect, method, forger, decoy, kind, warn
    ):
        c = connect("root", pid=forger.leader_pid, method=method)
        runs = _unique("runs")
        lines = forged_lines(kind, c.fabns_nonce, decoy)
        with forging_shell(forger, "".join(lines).encode()):
            try:
                result = c.run(f"echo run >> {runs}; echo done", hide=True, warn=warn)
            except TargetChanged as error:
                pytest.fail(f"a forged err marker was believed: {error!r}")
        assert (result.exited, result.stdout.endswith("done\n")) == (0, True)
        assert read_inside(forger, runs) == b"run\n", "the command ran other than once"
        for line in lines:
            assert line in result.stdout
        assert decoy.alive()


# ----------------------------------------------------------------------------- 3: sudo password


def _password_free(*texts: object) -> None:
    for text in texts:
        assert SUDO_PASSWORD not in str(text), f"the sudo password leaked into {text!r}"


class TestSudoPasswordPhishing:
    """bob (sudo with a password) enters root's container, so fabns needs sudo on the host.
    The command prints fabns's own host sudo prompt, sudo's usual prompt and a forged
    ``pw`` marker, then reads stdin into a file.

    The password goes to the host's sudo and nowhere else: not into the container's
    stdin (with in_stream=False, a piped in_stream, or a pty), not into the result, the
    connection's repr or an exception message; piped input reaches the command intact.
    """

    @staticmethod
    def phishing_command(nonce: str) -> str:
        prompt = getattr(fabns.host, "SUDO_PROMPT", "[fabns] sudo password on host: ")
        quoted = prompt.replace("'", "'\\''")
        return (
            f"printf '%s' '{quoted}'; printf '%s' '{quoted}' >&2; "
            f"printf '\\037fabns:pw:{nonce}\\n'; "
            "printf '[sudo] password for bob: '; printf '[sudo] password for bob: ' >&2"
        )

    def bob(self, connect: Any, method: str) -> NamespaceConnection:
        overrides = {"sudo": {"password": SUDO_PASSWORD}}
        return connect(SUDO_USER, "plain", overrides, method=method)

    @pytest.mark.parametrize("pty", [False, True])
    def test_prompt_inside_gets_no_password(self, connect, method, harness, pty):
        c = self.bob(connect, method)
        got = _unique("phished")
        command = f"{self.phishing_command(c.fabns_nonce)}; IFS= read -r -t 3 line; "
        command += f"printf '%s\\n' \"$line\" > {got}"
        try:
            result = c.run(command, hide=True, pty=pty, warn=True, in_stream=False)
        except Exception as error:
            _password_free(error, repr(error))
            raise
        received = read_inside(harness.containers["plain"], got)
        assert received is not None, f"the command did not run: {result!r}"
        _password_free(received.decode(errors="replace"))
        _password_free(result.stdout, result.stderr, repr(c))
        assert c.run(f"cat {got}", hide=True).stdout == received.decode()

    def test_piped_stdin_arrives_intact(self, connect, method, harness):
        c = self.bob(connect, method)
        got = _unique("piped")
        command = f"{self.phishing_command(c.fabns_nonce)}; cat > {got}"
        try:
            result = c.run(command, hide=True, in_stream=io.StringIO("piped data\n"))
        except Exception as error:
            _password_free(error, repr(error))
            raise
        assert read_inside(harness.containers["plain"], got) == b"piped data\n"
        _password_free(result.stdout, result.stderr, repr(c))

    def test_wrong_password_is_not_repeated(self, connect, method):
        wrong = f"not-the-password-{secrets.token_hex(4)}"
        c = connect(SUDO_USER, "plain", {"sudo": {"password": wrong}}, method=method)
        with pytest.raises(NamespaceError) as caught:
            c.run("true", hide=True)
        for text in (str(caught.value), repr(caught.value), repr(c)):
            assert wrong not in text


# ----------------------------------------------------------------------------- 4: owner lookups

LIAR = """#!/bin/sh
# whatever container is asked for, answer with the PID in {pidfile}
pid=$(cat {pidfile})
case "${{0##*/}}" in
  lxc-ls) printf 'NAME PID\\nweb  %s\\n' "$pid" ;;
  *) printf '%s\\n' "$pid" ;;
esac
"""


@pytest.fixture(scope="module")
def liar(world: Path) -> Iterator[tuple[SSHServer, Path]]:
    """An sshd whose host has a lxc-ls and a podman that lie: they name the PID written
    in the returned file, whatever is asked."""
    pidfile = world / "liar-pid"
    pidfile.write_text("0\n")  # each test names its target first
    pidfile.chmod(0o644)
    script = world / "liar.sh"
    script.write_text(LIAR.format(pidfile=pidfile))
    script.chmod(0o755)
    programs = {
        path: str(script) for path in ("/usr/bin/lxc-ls", "/usr/bin/podman") if Path(path).exists()
    }
    if not programs:
        pytest.skip("neither lxc-ls nor podman is installed (scripts/install.sh installs both)")
    server = SSHServer.start(world / "liar-sshd", users=("root",), wrapper=replacing(programs))
    try:
        yield server, pidfile
    finally:
        server.stop()


class TestLyingOwnerLookup:
    """With ``owner="alice"`` the lookup runs as alice, so its answer is alice's word.
    Her lxc-ls (or podman) names the leader of a container that is root's -- no user
    namespace at all, or one root owns.

    fabns refuses it (PermissionDenied, or a NamespaceError saying the leader is not
    alice's) and runs nothing there.
    """

    @pytest.mark.parametrize("key", ["plain", "rootns"])
    @pytest.mark.parametrize("engine", ["lxc", "podman"])
    def test_leader_not_owned_by_the_owner_is_refused(self, liar, containers, method, engine, key):
        server, pidfile = liar
        tool = "/usr/bin/lxc-ls" if engine == "lxc" else "/usr/bin/podman"
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed")
        ctr = containers[key]
        pidfile.write_text(f"{ctr.leader_pid}\n")
        touched = _unique(f"lied-{engine}")
        c = open_connection(server, container="web", engine=engine, owner=TEST_USER, method=method)
        error: NamespaceError | None = None
        with c:
            try:
                c.run(f"touch {touched}", hide=True)
            except NamespaceError as refused:
                error = refused
        entered = exists_inside(ctr, touched)
        assert not entered, "fabns entered a container alice does not own"
        assert isinstance(error, PermissionDenied) or TEST_USER in str(error), repr(error)


# ----------------------------------------------------------------------------- 5: probe limits


def _fifo_passwd(rootfs: Path) -> None:
    (rootfs / "etc/passwd").unlink()
    os.mkfifo(rootfs / "etc/passwd", 0o644)


def _zero_group(rootfs: Path) -> None:
    (rootfs / "etc/group").unlink()
    (rootfs / "etc/group").symlink_to("/dev/zero")


def _huge_passwd(rootfs: Path) -> None:
    # root first, app only at the very end: 50 MiB of plausible accounts in between
    with open(rootfs / "etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
        block = "".join(f"u{i}:x:{10000 + i}:{10000 + i}::/home/u:/bin/sh\n" for i in range(4096))
        for _ in range(50 * 1024 * 1024 // len(block) + 1):
            f.write(block)
        f.write("app:x:1002:1002:app user:/home/app:/bin/sh\n")


HOSTILE_FILES = {
    "fifo-passwd": (_fifo_passwd, "/etc/passwd"),
    "zero-group": (_zero_group, "/etc/group"),
    "huge-passwd": (_huge_passwd, "/etc/passwd"),
}


@pytest.fixture(scope="module")
def hostile_files(scratch: Path) -> Iterator[dict[str, Container]]:
    with contextlib.ExitStack() as stack:
        for key in HOSTILE_FILES:  # removed once stopped: pytest keeps old temp dirs
            stack.callback(shutil.rmtree, scratch / f"fabns-{key}", ignore_errors=True)
        yield {
            key: stack.enter_context(started(scratch, f"fabns-{key}", prepare=prepare))
            for key, (prepare, _) in HOSTILE_FILES.items()
        }


@pytest.fixture(scope="module")
def limited_sshd(world: Path) -> Iterator[SSHServer]:
    """An sshd whose sessions may map at most 4 GiB: a probe that reads /dev/zero into
    memory fails there instead of taking this machine's memory."""
    wrapper = ["prlimit", f"--as={4 << 30}", "--"]
    server = SSHServer.start(world / "limited-sshd", users=("root",), wrapper=wrapper)
    try:
        yield server
    finally:
        server.stop()


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


class Bounded:
    """A call run in a thread with a deadline, so that a hang fails the test, not the suite."""

    def __init__(self, call: Callable[[], Any], budget: float = PROBE_BUDGET) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()
        self.thread.join(budget)

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.value = call()
        except BaseException as error:
            self.error = error

    @property
    def hung(self) -> bool:
        return self.thread.is_alive()


def _release_fifo(ctr: Container) -> None:
    """Give anything blocked opening the container's /etc/passwd FIFO an end of file."""
    path = ctr.rootfs / "etc/passwd"
    if not stat.S_ISFIFO(os.lstat(path).st_mode):
        return
    for _ in range(16):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as error:
            if error.errno == errno.ENXIO:  # no reader left
                return
            raise
        time.sleep(0.05)


class TestProbeLimits:
    """The container's /etc/passwd is a FIFO, or 50 MiB; its /etc/group is a symlink to
    /dev/zero. fabns reads them to find users.

    A command still returns in bounded time (as root, the default user, or with a
    NamespaceError); a user looked up by name raises UnknownUser naming the file's
    problem; the client's memory stays bounded.
    """

    @pytest.mark.parametrize("key", list(HOSTILE_FILES))
    def test_hostile_account_files(self, limited_sshd, hostile_files, method, key):
        ctr = hostile_files[key]
        path = HOSTILE_FILES[key][1]
        c = open_connection(limited_sshd, pid=ctr.leader_pid, method=method)
        calls: list[Bounded] = []
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
            rss_before = _memory_kib("VmRSS") * 1024
            # the uid without reading /etc/passwd: busybox `id` itself would block on
            # the container's own FIFO, which is the container's business, not fabns's
            uid = "awk '/^Uid:/{print $2}' /proc/self/status"
            calls.append(Bounded(lambda: c.run(uid, hide=True)))
            default = calls[-1]
            assert not default.hung, f"run({uid!r}) still hangs after {PROBE_BUDGET:.0f}s"
            if default.error is not None:
                assert isinstance(default.error, NamespaceError), repr(default.error)
            else:
                assert default.value.stdout == "0\n"
            calls.append(Bounded(lambda: c.sudo("id", user="app", hide=True)))
            by_name = calls[-1]
            assert not by_name.hung, f"sudo(user='app') still hangs after {PROBE_BUDGET:.0f}s"
            assert isinstance(by_name.error, UnknownUser), (
                f"expected UnknownUser naming {path}, got {by_name.error or by_name.value!r}"
            )
            assert path in str(by_name.error)
            grown = _memory_kib("VmHWM") * 1024 - rss_before
            assert grown < MEMORY_BUDGET, f"the client grew by {grown >> 20} MiB"
        finally:
            _release_fifo(ctr)
            c.close()
            for call in calls:
                call.thread.join(10)


# ----------------------------------------------------------------------------- 6: transfers


@pytest.fixture(scope="module")
def files_ctr(scratch: Path) -> Iterator[Container]:
    """A container of its own for planted links and files."""
    with started(scratch, "fabns-files") as ctr:
        yield ctr


def _plant_file(ctr: Container, path: str, data: bytes, mode: int = 0o644) -> Path:
    """A new file in the container's root filesystem (not its /tmp tmpfs), made from the
    host without following anything the container may have left at that path."""
    host = ctr.rootfs / path.lstrip("/")
    with contextlib.suppress(FileNotFoundError):
        host.unlink()
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        os.fchown(f.fileno(), 0, 0)  # before chmod: chown clears setuid and setgid bits
        os.fchmod(f.fileno(), mode)
    return host


def _state(path: Path) -> tuple[bytes, int, int, int]:
    """Contents, mode, owner and group of a planted file (never through a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        return f.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


RACER = r"""
import os, sys
directory, target = sys.argv[1], sys.argv[2]
while True:
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".fabns-tmp-") and not entry.is_symlink():
                    path = os.path.join(directory, entry.name)
                    try:
                        os.unlink(path)
                        os.symlink(target, path)
                    except OSError:
                        pass
    except OSError:
        pass
"""


@contextlib.contextmanager
def symlink_racer(ctr: Container, directory: str, target: str) -> Iterator[None]:
    """The container swaps every new ``.fabns-tmp-*`` file in ``directory`` for a symlink
    to ``target`` as fast as it can."""
    process = subprocess.Popen(
        [sys.executable, "-c", RACER, str(ctr.inside(directory)), target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.kill()
        process.wait()


#: Where the transfer tests plant their links: on the rootfs like /etc (not the /tmp tmpfs),
#: so a rename that followed a link into /etc would work rather than fail with EXDEV.
RENAME_DIR = "/var/tmp"


class TestTransfers:
    """put() and get() as root into a container whose root plants symlinks where fabns
    writes (in /var/tmp, the same filesystem as /etc), races its temporary files, and
    offers setuid files.

    A put never writes (data, mode or owner) through a link the container planted: a
    symlinked destination is replaced by the file; get() never makes a local setuid or
    setgid file.
    """

    def test_put_replaces_a_symlinked_destination(self, connect, method, files_ctr):
        important = _plant_file(files_ctr, "/etc/important", b"original\n")
        dest = _unique("dest", RENAME_DIR)
        os.symlink("/etc/important", files_ctr.inside(dest))
        c = connect("root", pid=files_ctr.leader_pid, method=method)
        c.put(io.BytesIO(b"new"), dest)
        assert stat.S_ISREG(os.lstat(files_ctr.inside(dest)).st_mode)
        assert read_inside(files_ctr, dest) == b"new"
        assert _state(important) == (b"original\n", 0o644, 0, 0)

    @pytest.mark.parametrize("local", ["file", "file-like"])
    def test_put_replaces_a_symlink_to_a_directory(
        self, connect, method, files_ctr, tmp_path, local
    ):
        link = _unique("dir-link", RENAME_DIR)
        os.symlink("/etc", files_ctr.inside(link))
        before = sorted(os.listdir(files_ctr.rootfs / "etc"))
        source: Any = io.BytesIO(b"payload")
        if local == "file":
            source = tmp_path / f"payload-{secrets.token_hex(4)}"
            source.write_bytes(b"payload")
        c = connect("root", pid=files_ctr.leader_pid, method=method)
        c.put(str(source) if local == "file" else source, link)
        assert sorted(os.listdir(files_ctr.rootfs / "etc")) == before, "written under /etc"
        assert stat.S_ISREG(os.lstat(files_ctr.inside(link)).st_mode)
        assert read_inside(files_ctr, link) == b"payload"

    @pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6755], ids=lambda mode: f"{mode:o}")
    def test_get_never_makes_a_local_setuid_file(self, connect, method, files_ctr, tmp_path, mode):
        name = f"/usr/bin/fabns-special-{mode:o}"
        _plant_file(files_ctr, name, b"#!/bin/sh\necho root\n", mode)
        c = connect("root", pid=files_ctr.leader_pid, method=method)
        local = tmp_path / "got"
        c.get(name, str(local))
        got = stat.S_IMODE(local.stat().st_mode)
        assert got & (stat.S_ISUID | stat.S_ISGID) == 0, f"local file has mode {got:o}"

    def test_planted_temporary_names_are_never_written_through(self, connect, method, files_ctr):
        victim = _plant_file(files_ctr, "/etc/victim", b"original\n")
        before = _state(victim)
        directory = _unique("drop", RENAME_DIR)
        os.mkdir(files_ctr.inside(directory))
        for _ in range(512):  # names like the ones fabns picks
            planted = f"{directory}/.fabns-tmp-{secrets.token_hex(4)}-dest"
            os.symlink("/etc/victim", files_ctr.inside(planted))
        c = connect("root", pid=files_ctr.leader_pid, method=method)
        outcomes = []
        with symlink_racer(files_ctr, directory, "/etc/victim"):
            for _ in range(10):
                try:
                    c.put(io.BytesIO(b"new"), f"{directory}/dest", mode=0o4755, owner="app")
                    outcomes.append("ok")
                except TransferFailed as error:
                    outcomes.append(f"refused: {error}")
        assert _state(victim) == before, f"written through a planted link ({outcomes})"


# ----------------------------------------------------------------------------- 7: cd()


class TestCdPathsAreLiteral:
    """``cd()`` takes a path, not shell: spaces, ``$(...)``, backticks and ``;`` in it
    are characters of a directory name, for run(), sudo() and put()."""

    def test_spaces(self, connect, method, files_ctr):
        c = connect("root", pid=files_ctr.leader_pid, method=method)
        base = _unique("cd")
        where = f"{base}/my app"
        os.makedirs(files_ctr.inside(where))
        with c.cd(where):
            assert c.put(io.BytesIO(b"x"), "x").remote == f"{where}/x"
            assert c.run("pwd", hide=True).stdout == f"{where}\n"
            assert c.sudo("pwd", user="app", hide=True).stdout == f"{where}\n"
        with c.cd(base), c.cd("my app"):
            assert c.run("pwd", hide=True).stdout == f"{where}\n"
            assert c.put(io.BytesIO(b"y"), "y").remote == f"{where}/y"
        assert read_inside(files_ctr, f"{where}/x") == b"x"
        assert read_inside(files_ctr, f"{where}/y") == b"y"

    @pytest.mark.parametrize(
        "template",
        [
            "/tmp/$(>{pwned})",
            "/tmp/`>{pwned}`",
            "/tmp/x;>{pwned}",
            "/tmp&&>{pwned}",
            "/tmp/x\n>{pwned}",
            "/tmp/x; touch {pwned}",
        ],
        ids=["command-substitution", "backticks", "semicolon", "and", "newline", "spaced"],
    )
    def test_shell_syntax_is_not_run(self, connect, method, files_ctr, template):
        c = connect("root", pid=files_ctr.leader_pid, method=method)
        pwned = _unique("pwned")
        raised: UnexpectedExit | None = None
        with c.cd(template.format(pwned=pwned)):
            plain = c.run("true", hide=True, warn=True)
            as_app = c.sudo("true", user="app", hide=True, warn=True)
            try:
                c.run("true", hide=True)
            except UnexpectedExit as error:
                raised = error
        pwned_exists = exists_inside(files_ctr, pwned)
        assert not pwned_exists, "the cd() path was run as shell"
        assert plain.failed and as_app.failed, "cd into a directory that does not exist worked"
        assert raised is not None


# ----------------------------------------------------------------------------- 8: numeric uid


class TestNumericUidWithoutAccount:
    """uid=4321 has no entry in the container's /etc/passwd (a container without a user
    namespace, so every id exists). Its group must not default to root's: it is
    65534 (nogroup), and 0 is not among its groups."""

    def test_connection_uid(self, connect, method):
        c = connect("root", "plain", method=method, uid=4321)
        assert c.run("id -u; id -g", hide=True).stdout == "4321\n65534\n"
        assert "0" not in c.run("id -G", hide=True).stdout.split()

    def test_sudo_user(self, connect, method):
        c = connect("root", "plain", method=method)
        assert c.sudo("id -u; id -g", user=4321, hide=True).stdout == "4321\n65534\n"
        assert "0" not in c.sudo("id -G", user=4321, hide=True).stdout.split()


# ----------------------------------------------------------------------------- 9: engines


class TestEngineBeds:
    """The same rules with a real engine (LXC, privileged ``fabns-p1``), where the way in
    may be lxc-attach. Uses the shared beds: run under ``flock /tmp/fabns-beds.lock``."""

    @pytest.mark.parametrize("way", ["lxc-attach", "nsenter", "setns"])
    def test_pty_output_is_only_the_commands(self, sshd, beds, way):
        with open_connection(sshd, container="fabns-p1", engine="lxc", method=way) as c:
            result = c.run("tty >/dev/null; echo hi; exit 3", pty=True, warn=True, hide=True)
        assert "\x1ffabns" not in result.stdout + result.stderr, "a marker reached the output"
        assert result.exited == 3
        # lxc-attach gives the command a pty of its own inside ours (as `ssh -t host
        # lxc-attach` does), and each pty turns "\n" into "\r\n"
        assert re.sub(r"\r+\n", "\n", result.stdout) == "hi\n"

    @pytest.mark.parametrize("way", ["lxc-attach", "nsenter", "setns"])
    def test_users_path_is_only_the_commands(self, sshd, beds, way, clean_markers):
        fake = str(clean_markers.fake_bin)
        with open_connection(sshd, container="fabns-p1", engine="lxc", method=way) as c:
            assert c.run('echo "$PATH"', env={"PATH": fake}, hide=True).stdout == f"{fake}\n"
        assert clean_markers.fired() == {}, "fake host tools ran from the user's PATH"


class TestAutoPicksNoRacyWayIn:
    """nsenter joins a user namespace dumpable, before switching credentials: never by default."""

    @pytest.mark.parametrize(
        "user,key,expected",
        [
            ("root", "plain", "nsenter"),
            ("root", "rootns", "setns"),
            ("alice", "alice-maproot", "setns"),
            ("alice", "alice-subid", "setns"),
        ],
    )
    def test_auto(self, connect, user, key, expected):
        c = connect(user, key)
        assert c.run("true", hide=True).ok
        assert c.method_name == expected
        assert ("user" in c.target.differing) == (expected == "setns")


class TestHostGroupsNeverLeak:
    """Container root makes a user namespace of its own (setgroups denied there);
    host root enters a process in it. Host root's groups (0 among them) must not
    come along: with them the command could read root-group files in any mount
    the container can see."""

    @pytest.mark.parametrize("method", ["setns", "nsenter"])
    def test_nested_user_namespace(self, connect, harness, method):
        outer = connect("root", "alice-subid", method="setns")
        needle = f"sleep 7{secrets.randbelow(10**6):06d}"
        outer.run(f"unshare -r {needle} </dev/null >/dev/null 2>&1 &", hide=True)
        deadline = time.monotonic() + 10
        while not host_processes(needle) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = host_processes(needle)
        assert found, "the nested namespace did not start"
        pid = int(found[0].split(":")[0])
        try:
            c = connect("root", "alice-subid", pid=pid, method=method)
            status = c.run("cat /proc/self/status", hide=True).stdout
            groups = status.split("Groups:")[1].split("\n")[0].split()
            assert groups == [], f"{method} kept groups {groups} from the host"
        finally:
            os.kill(pid, signal.SIGKILL)


class TestNonPosixLoginShell:
    """sshd runs the command line with the SSH account's login shell. dave's is fish,
    where a backslash escapes inside single quotes: a container value ending in one
    would end a quoted word, and ``(cmd)`` is fish's command substitution."""

    def test_fish_never_parses_container_bytes(self, world):
        pwned = world / "fish-pwned"
        env = {"AAA1": "x\\", "AAA2": f"(touch {pwned})", "AAA3": "y\\"}
        base = world / "dave"
        base.mkdir()
        base.chmod(0o755)
        server = SSHServer.start(base / "sshd", users=("dave",))
        try:
            with started(base, "fabns-fish", mode="maproot", owner="dave", env=env) as ctr:
                for method in ("nsenter", "setns"):
                    c = open_connection(server, "dave", pid=ctr.leader_pid, method=method)
                    with c:
                        out = c.run('printf \'%s|\' "$AAA1" "$AAA2" "$AAA3"', hide=True)
                    assert out.stdout == f"x\\|(touch {pwned})|y\\|", method
                    assert not pwned.exists(), f"fish ran container bytes via {method}"
        finally:
            server.stop()
