"""Hostile strings pass through every way in exactly, or are refused before anything runs.

Hypothesis properties against the real harness (sshd on 127.0.0.1, busybox containers), for
each way in (nsenter, setns), as root in the "plain" container and, for commands and the
environment, also as alice in her subordinate-id user-namespace container ("alice-subid"):

1. command text: ``printf`` of ``shlex.quote(s)`` prints exactly ``s``, by ``run`` and by
   ``sudo(user="app")`` (checked byte for byte, and as ``Result.stdout``); text with a NUL
   byte raises `InvalidArgument` and runs nothing;
2. ``env=``: every value is seen inside exactly (by the shell and in the environment of a
   child process); invalid names and NUL bytes raise `InvalidArgument` and run nothing;
3. ``cd()``: the path is literal -- ``pwd`` inside prints exactly the path that was given;
4. ``put()``/``get()``: any file name, any bytes, round-trip exactly;
5. ``container=``/``uid=`` (and ``sudo(user=)``): a clean `NamespaceError` or success, and no
   side effect anywhere;
6. lone surrogates (what `os.fsdecode` makes of undecodable bytes) in commands, env values,
   cd paths and file names: either exactly the original bytes arrive inside, or
   `InvalidArgument` is raised before anything runs.

Every example batches many strings into one remote command where the API allows it (cd()
and the name lookups cannot be batched). Nothing written by an injected command may appear
on the host or in a container (`PWNED`); whether a refused call ran anything is seen from the
host through ``/proc/PID/root`` (`RAN`).

``FABNS_HYPOTHESIS_EXAMPLES=N`` sets every property's number of examples (the defaults check
about 7,500 strings, in two to three minutes on a 2-core machine when every property holds);
``FABNS_HYPOTHESIS_SHRINK=0`` reports a failure as found instead of shrinking it first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import operator
import os
import random
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from support import method, way_options  # noqa: F401

from fabns import Config, InvalidArgument, NamespaceConnection, NamespaceError

# ------------------------------------------------------------------------------- settings


def examples(default: int) -> int:
    """``default``, or the number of examples FABNS_HYPOTHESIS_EXAMPLES asks for."""
    return int(os.environ.get("FABNS_HYPOTHESIS_EXAMPLES") or default)


def remote(default: int) -> settings:
    """Settings for a property whose examples run real commands over SSH.

    Shrinking a failure to a minimal example re-runs commands, up to Hypothesis's own limit
    of five minutes a property; FABNS_HYPOTHESIS_SHRINK=0 reports the first failure found.
    """
    phases = list(Phase)
    if os.environ.get("FABNS_HYPOTHESIS_SHRINK") == "0":
        phases = [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(
        max_examples=examples(default),
        deadline=None,
        phases=phases,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# ------------------------------------------------------------------- the hostile alphabet

#: Left behind by an injected command that ran (looked for on the host and in containers).
PWNED = "fabns-hyp-pwned"
#: Touched first by every command that must not run; seen from the host via /proc/PID/root.
RAN = "/tmp/fabns-hyp-ran"

#: Characters that mean something to a shell, a quoting layer or a path.
SHELL_CHARACTERS = tuple(" '\"\\$`();&|<>*?[]{}~#!%^=,:@+\n\t\r\v\f")
#: Beyond ASCII: accents, CJK, Hebrew and Arabic (right-to-left), RTL override and mark,
#: emoji (one a ZWJ sequence), BOM, no-break space, line separator, non-ASCII digits
#: (Arabic-Indic three, superscript two, fullwidth one), an ANSI escape, DEL, and control
#: bytes (\x1f starts fabns's own marker lines).
UNICODE_TEXT = (
    "\u00e9", "\u00df", "\u65e5\u672c\u8a9e", "\u05e2\u05d1\u05e8\u05d9\u05ea",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u202e", "\u200f", "\U0001f642",
    "\U0001f469\u200d\U0001f4bb", "\ufeff", "\u00a0", "\u2028", "\u0663", "\u00b2", "\uff11",
    "\x1b[31m", "\x7f", "\x1f", "\x01",
)  # fmt: skip
#: Attempts to run something ({p}: where it would leave PWNED) or to look like an option.
INJECTIONS = (
    "$(touch {p})", "`touch {p}`", ";touch {p};", "|touch {p}", "&&touch {p}", "\ntouch {p}\n",
    "'$(touch {p})'", '"`touch {p}`"', "$((6*7))", "${HOME}", "$IFS", "\\", "~root", "-n",
    "-e", "--", "-rf",
)  # fmt: skip


def hostile_text(*, component: bool = False, max_pieces: int = 12) -> st.SearchStrategy[str]:
    """Text made of hostile pieces: shell characters, non-ASCII text, injections, anything.

    Never a NUL byte. ``component``: no "/" either (one path component), and the
    injections write PWNED relative to the shell's directory.
    """
    mark = PWNED if component else f"/tmp/{PWNED}"
    anything = st.characters(codec="utf-8", exclude_characters="\0/" if component else "\0")
    pieces = st.one_of(
        st.sampled_from(SHELL_CHARACTERS),
        st.sampled_from(UNICODE_TEXT),
        st.sampled_from([i.replace("{p}", mark) for i in INJECTIONS]),
        st.text(anything, min_size=1, max_size=8),
    )
    text = st.lists(pieces, max_size=max_pieces).map("".join)
    return st.one_of(text, text.map(lambda s: "-" + s))  # and as an option would start


def long_text(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A piece of ``text`` repeated to between 1 and 8 KiB of UTF-8."""
    return st.builds(
        lambda piece, size: piece * max(1, size // len(piece.encode())),
        text.filter(bool),
        st.integers(1024, 8192),
    )


def batch(
    text: st.SearchStrategy[str], *, min_size: int, max_size: int
) -> st.SearchStrategy[list[str]]:
    """``min_size`` to ``max_size`` strings of ``text``, plus at most one long one."""
    return st.builds(
        operator.add,
        st.lists(text, min_size=min_size, max_size=max_size),
        st.lists(long_text(text), max_size=1),
    )


#: One lone surrogate: U+DC80..U+DCFF is what os.fsdecode makes of an undecodable byte
#: (it stands for that byte); any other surrogate stands for no bytes at all.
SURROGATE = st.one_of(
    st.integers(0x80, 0xFF).map(lambda b: os.fsdecode(bytes([b]))),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)


def with_surrogates(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``text`` with one to three lone surrogates in the middle."""
    middle = st.lists(SURROGATE, min_size=1, max_size=3).map("".join)
    return st.builds(lambda a, s, b: a + s + b, text, middle, text)


TEXT = hostile_text()
#: One path component: no "/" and no NUL, not "." or "..", at most NAME_MAX (255) bytes.
NAME = hostile_text(component=True).filter(
    lambda n: n not in ("", ".", "..") and len(n.encode()) <= 255
)
#: Text with a NUL byte somewhere (no argv element or environment entry can hold one).
WITH_NUL = st.builds(lambda a, b: a + "\0" + b, TEXT, TEXT)
#: Any text at all, NUL and lone surrogates included: for names fabns looks up.
ANY_TEXT = st.one_of(TEXT, WITH_NUL, with_surrogates(TEXT), st.text())
#: User names and ids: any text, numbers in other scripts too (str.isdigit() is true for
#: superscript two, Arabic-Indic one and fullwidth one), and the container's own names
#: with something before or after them.
USER_TEXT = st.one_of(
    ANY_TEXT,
    st.text(st.sampled_from("0123456789+- \n\u00b2\u0661\uff11"), min_size=1, max_size=5),
    st.builds(
        lambda before, name, after: before + name + after,
        st.sampled_from(["", " ", "-", "\n"]),
        st.sampled_from(["root", "app", "alice", "nobody", "0", "1002"]),
        st.sampled_from(["", " ", ":", "\n", "\0", f"$(touch /tmp/{PWNED})"]),
    ),
)

#: Environment names whose value the container's /bin/sh (busybox ash, a POSIX sh) or the
#: login replaces, so no value passed for them can be seen inside: every POSIX sh sets IFS,
#: PWD, PPID and OPTIND itself at start-up, ash increments SHLVL and computes RANDOM,
#: EPOCHSECONDS and EPOCHREALTIME on every use; PATH, HOME, SHELL, USER and LOGNAME are the
#: login's and OLDPWD is cd's. (Measured with busybox ash: PS1, ENV, CDPATH, LINENO,
#: SECONDS, _, LANG and the like arrive unchanged.)
SET_INSIDE = frozenset(
    {"IFS", "PWD", "PPID", "OPTIND", "SHLVL", "RANDOM", "EPOCHSECONDS", "EPOCHREALTIME"}
    | {"PATH", "HOME", "SHELL", "USER", "LOGNAME", "OLDPWD"}
)
VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: BASH* and LD_* change the host-side tools (bash's start-up, the loader of nsenter).
ENV_NAME = st.from_regex(VALID_NAME, fullmatch=True).filter(
    lambda n: n not in SET_INSIDE and not n.startswith(("BASH", "LD_"))
)
BAD_ENV_NAME = st.one_of(
    st.sampled_from(["", "A B", "1X", "A=B", "=", "A-B", "A.B", "A\nB", "$A", "\u00c9", "\uff21"]),
    st.text(max_size=12).filter(lambda n: not VALID_NAME.fullmatch(n)),
)
ENVIRONMENT = st.builds(
    lambda env, extra: {**env, **extra},
    st.dictionaries(ENV_NAME, TEXT, min_size=10, max_size=20),
    st.dictionaries(ENV_NAME, long_text(TEXT), max_size=1),
)
#: An environment that must be refused: one bad name, or one value with a NUL byte.
BAD_ENVIRONMENT = st.builds(
    lambda good, bad: {**good, **bad},
    st.dictionaries(ENV_NAME, TEXT, max_size=3),
    st.one_of(
        st.dictionaries(BAD_ENV_NAME, TEXT, min_size=1, max_size=1),
        st.dictionaries(ENV_NAME, WITH_NUL, min_size=1, max_size=1),
    ),
)

#: File contents: small arbitrary bytes, or up to 64 KiB of random bytes (from a seed).
CONTENT = st.one_of(
    st.binary(max_size=256),
    st.builds(
        lambda seed, size: random.Random(seed).randbytes(size),
        st.integers(0, 2**32 - 1),
        st.integers(257, 65536),
    ),
)


def original_bytes(text: str) -> bytes | None:
    """The bytes ``text`` stands for (os.fsencode), or None if it stands for none."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


#: 8 KiB of what grows most when quoted or escaped on the way in: single quotes and
#: backslashes (shell words), control characters and astral emoji (JSON escapes).
EXTREMES = {
    "quotes": "'" * 8192,
    "backslashes": "\\" * 8192,
    "controls": "\x01" * 8192,
    "emoji": "\U0001f642" * 2048,
}


# ----------------------------------------------------------------------------- fixtures

Target = tuple[str, str]  # (SSH user, harness container key)
ROOT_PLAIN: Target = ("root", "plain")
ALICE_SUBID: Target = ("alice", "alice-subid")
BOTH_TARGETS = pytest.mark.parametrize(
    "target", [ROOT_PLAIN, ALICE_SUBID], ids=["root-plain", "alice-subid"]
)
#: Container engines by name (none runs on the harness host without the `beds` fixture).
ENGINES = ("auto", "machined", "lxc", "podman", "docker")


def config() -> Config:
    """Like the other behaviour tests, plus the system python3 for the setns helper (root's
    python3 is a pyenv shim that costs ~90 ms a command; the helper is the same)."""
    overrides: dict[str, Any] = {"run": {"in_stream": False}}
    if os.access("/usr/bin/python3", os.X_OK):
        overrides["fabns"] = {"python": "/usr/bin/python3"}
    return Config(overrides=overrides)


class Pool:
    """The harness as these properties use it: ``pool(method, target)`` is one connection per
    way in and target for the whole module; what the host sees of the containers' files."""

    def __init__(self, harness: Any, containers: Any) -> None:
        self.harness = harness
        self.containers = containers
        self.made: dict[tuple[str, Target], NamespaceConnection] = {}
        self.dirs: set[bytes] = set()

    def __repr__(self) -> str:  # Hypothesis prints it with every falsifying example
        return "pool"

    def __call__(self, method: str, target: Target = ROOT_PLAIN) -> NamespaceConnection:
        if (method, target) not in self.made:
            user, key = target
            pid = self.containers[key].leader_pid  # skips where the machine cannot have it
            self.made[method, target] = self.fresh(user, pid=pid, method=method)
        return self.made[method, target]

    def fresh(self, user: str = "root", **kwargs: Any) -> NamespaceConnection:
        """A new connection (the caller closes it)."""
        ssh = self.harness.sshd.connection_kwargs(user)
        return NamespaceConnection(**ssh, config=config(), **way_options(kwargs))

    def close(self) -> None:
        """Close the connections; remove the directories and marks made in the containers."""
        for conn in self.made.values():
            conn.close()
        for place in self.dirs:
            shutil.rmtree(place, ignore_errors=True)
        for key in self.harness.containers:
            self.reset_ran(key)

    def inside(self, key: str, path: str | bytes) -> bytes:
        """``path`` in container ``key``, as the host sees it (through /proc/PID/root)."""
        root = f"/proc/{self.harness.containers[key].leader_pid}/root"
        return os.fsencode(root) + os.fsencode(path)

    def mark_places(self, mark: str) -> list[bytes]:
        """Where a command could have left ``mark``: as an absolute path, or relative to any
        home or / -- on the host and in every harness container."""
        name = mark.rsplit("/", 1)[-1]
        paths = [mark] + [f"{d}/{name}" for d in ("", "/tmp", "/root", "/home/alice", "/home/app")]
        places = [os.fsencode(p) for p in paths]
        for key in self.harness.containers:
            places += [self.inside(key, p) for p in paths]
        return places

    def pwned(self) -> list[str]:
        """Every place an injected command wrote PWNED (none, unless a string was run)."""
        return [os.fsdecode(p) for p in self.mark_places(PWNED) if os.path.lexists(p)]

    def reset_ran(self, key: str = "plain") -> None:
        if os.path.lexists(self.inside(key, RAN)):
            os.unlink(self.inside(key, RAN))

    def ran(self, key: str = "plain") -> bool:
        """Whether a command touched RAN inside container ``key`` since `reset_ran`."""
        return os.path.lexists(self.inside(key, RAN))

    def fresh_dir(self, path: str) -> bytes:
        """An empty directory ``path`` in the plain container, made from the host."""
        place = self.inside("plain", path)
        shutil.rmtree(place, ignore_errors=True)
        os.mkdir(place)
        self.dirs.add(place)
        return place


@pytest.fixture(scope="module")
def pool(harness: Any, containers: Any) -> Iterator[Pool]:
    made = Pool(harness, containers)
    for place in made.mark_places(PWNED) + made.mark_places(RAN):
        if os.path.lexists(place):  # left by an earlier, failed run
            os.unlink(place)
    yield made
    made.close()


# ------------------------------------------------------------------------------ helpers


def unhex(dump: str) -> bytes:
    """The bytes of ``od -An -v -tx1`` output."""
    return bytes.fromhex("".join(dump.split()))


def printf_words(strings: list[str]) -> str:
    """A command printing each string followed by a NUL byte."""
    return "printf '%s\\0' " + " ".join(shlex.quote(s) for s in strings)


def printed_bytes(call: Callable[..., Any], command: str, **kwargs: Any) -> bytes:
    """What ``command`` wrote on stdout, byte for byte (hex-encoded inside, then decoded)."""
    return unhex(call(f"{{ {command}; }} | od -An -v -tx1", hide=True, **kwargs).stdout)


def env_seen(call: Callable[..., Any], env: dict[str, str]) -> tuple[dict[str, bytes], ...]:
    """Each variable of ``env`` as the shell expands it and as a child process inherits it.

    The command touches RAN first (so a refusal can be checked for having run nothing).
    """
    names = list(env)
    expand = "printf '%s\\0' " + " ".join(f'"${name}"' for name in names)
    out = call(
        f"touch {RAN}; {expand} | od -An -v -tx1; echo --; od -An -v -tx1 /proc/self/environ",
        env=env,
        hide=True,
    ).stdout
    expanded, _, environ = out.partition("--\n")
    values = unhex(expanded).split(b"\0")[:-1]
    entries = [entry.partition(b"=") for entry in unhex(environ).split(b"\0")]
    inherited = {os.fsdecode(name): value for name, _, value in entries}
    return dict(zip(names, values, strict=False)), {n: inherited.get(n, b"<unset>") for n in names}


def sudo_as_app(c: NamespaceConnection) -> Callable[..., Any]:
    return functools.partial(c.sudo, user="app")


# --------------------------------------------------------------------- 1. command text


@BOTH_TARGETS
@remote(20)
@given(strings=batch(TEXT, min_size=10, max_size=30))
def test_command_text_arrives_exactly(pool, method, target, strings):
    c = pool(method, target)
    expected = b"".join(s.encode() + b"\0" for s in strings)
    assert printed_bytes(c.run, printf_words(strings)) == expected
    assert printed_bytes(sudo_as_app(c), printf_words(strings)) == expected
    assert pool.pwned() == []


@remote(15)
@given(strings=batch(TEXT, min_size=10, max_size=30))
@example(strings=["x" + "\u00e9" * 600])  # an odd start puts a 2-byte character across byte 1000
def test_command_output_is_the_text(pool, method, strings):
    """The same, as ``Result.stdout``: what the command printed, decoded as a whole."""
    c = pool(method)
    stdout = c.run(printf_words(strings), hide=True).stdout
    assert stdout == "".join(s + "\0" for s in strings)


@BOTH_TARGETS
@remote(10)
@given(strings=st.lists(WITH_NUL, min_size=5, max_size=15))
def test_nul_in_a_command_is_refused_before_anything_runs(pool, method, target, strings):
    c = pool(method, target)
    pool.reset_ran(target[1])
    for s in strings:
        for call in (c.run, sudo_as_app(c)):
            with pytest.raises(InvalidArgument):
                call(f"touch {RAN}; printf %s {shlex.quote(s)}", hide=True)
    assert not pool.ran(target[1])


@BOTH_TARGETS
@pytest.mark.parametrize("text", list(EXTREMES.values()), ids=list(EXTREMES))
def test_longest_text_arrives_exactly(pool, method, target, text):
    """Always tried (Hypothesis rarely builds them): as command text and as an env value."""
    c = pool(method, target)
    assert printed_bytes(c.run, printf_words([text])) == text.encode() + b"\0"
    assert env_seen(c.run, {"FABNS_LONG": text}) == ({"FABNS_LONG": text.encode()},) * 2


# ---------------------------------------------------------------------- 2. environment


@BOTH_TARGETS
@remote(20)
@given(env=ENVIRONMENT)
def test_env_values_arrive_exactly(pool, method, target, env):
    c = pool(method, target)
    expected = {name: value.encode() for name, value in env.items()}
    expanded, inherited = env_seen(c.run, env)
    assert expanded == expected, "as the shell expands them"
    assert inherited == expected, "as a child process inherits them"
    assert pool.pwned() == []


@BOTH_TARGETS
@remote(20)
@given(envs=st.lists(BAD_ENVIRONMENT, min_size=5, max_size=15))
def test_invalid_env_is_refused_before_anything_runs(pool, method, target, envs):
    c = pool(method, target)
    pool.reset_ran(target[1])
    for env in envs:
        with pytest.raises(InvalidArgument):
            c.run(f"touch {RAN}", env=env, hide=True)
    assert not pool.ran(target[1])


# --------------------------------------------------------------------------- 3. cd()


@remote(8)
@given(names=st.lists(NAME, min_size=3, max_size=6, unique=True))
def test_cd_paths_are_literal(pool, method, names):
    c = pool(method)
    base = "/tmp/fabns-hyp-cd"
    paths = [f"{base}/{name}" for name in names]
    pool.fresh_dir(base)
    c.run("mkdir -p -- " + " ".join(shlex.quote(p) for p in paths), hide=True)
    for path in paths:
        with c.cd(path):
            result = c.run("pwd", hide=True, warn=True)
        assert (result.exited, result.stdout) == (0, path + "\n"), result.command
    assert pool.pwned() == []


# ------------------------------------------------------------------------ 4. put / get


@remote(10)
@given(files=st.dictionaries(NAME, CONTENT, min_size=5, max_size=15))
def test_put_get_round_trip(pool, method, files):
    c = pool(method)
    base = "/tmp/fabns-hyp-files"
    pool.fresh_dir(base)
    for name, data in files.items():
        path = f"{base}/{name}"
        assert c.put(io.BytesIO(data), path).remote == path
        back = io.BytesIO()
        c.get(path, back)
        assert back.getvalue() == data, path
    # busybox ls prints non-printable bytes as "?" even into a pipe; find prints them as they are
    listing = printed_bytes(c.run, f"cd {base} && find . -mindepth 1 -maxdepth 1 -print0")
    assert sorted(listing.split(b"\0")[:-1]) == sorted(b"./" + n.encode() for n in files)
    assert pool.pwned() == []


# ------------------------------------------------------------- 5. container and user names


def enter(pool: Pool, **kwargs: Any) -> None:
    """Make a connection with ``kwargs`` and run ``true``: a NamespaceError or success."""
    try:
        conn = pool.fresh(**kwargs)
    except NamespaceError:
        return
    try:
        conn.run("true", hide=True)
    except NamespaceError:
        pass
    finally:
        conn.close()


@remote(8)
@given(
    lookups=st.lists(st.tuples(ANY_TEXT, st.sampled_from(ENGINES)), min_size=1, max_size=2),
    users=st.lists(USER_TEXT, min_size=5, max_size=20),
)
def test_container_and_user_names_fail_cleanly(pool, method, lookups, users):
    for name, engine in lookups:
        enter(pool, container=name, engine=engine, method=method)
    enter(pool, pid=pool.containers["plain"].leader_pid, uid=users[0], method=method)
    c = pool(method)
    for user in users:
        with contextlib.suppress(NamespaceError):
            c.sudo("true", user=user, hide=True)
    assert pool.pwned() == []


# ------------------------------------------------------------- 6. undecodable (surrogates)


def refused_or_exact(pool: Pool, attempt: Callable[[], object], expected: object) -> None:
    """``attempt()`` returns what was seen inside: it is ``expected``, or it raised
    InvalidArgument without running anything (its command touches RAN first)."""
    pool.reset_ran()
    try:
        seen = attempt()
    except InvalidArgument:
        assert not pool.ran(), "refused, but after running"
        return
    assert seen == expected


def must_refuse(pool: Pool, attempt: Callable[[], object]) -> None:
    """``attempt()`` passes text that stands for no bytes: InvalidArgument, nothing ran."""
    pool.reset_ran()
    with pytest.raises(InvalidArgument):
        attempt()
    assert not pool.ran()


@remote(10)
@given(strings=st.lists(with_surrogates(TEXT), min_size=3, max_size=10))
def test_undecodable_command_text(pool, method, strings):
    c = pool(method)
    good = [s for s in strings if original_bytes(s) is not None]
    for s in strings:
        if s not in good:
            must_refuse(pool, lambda s=s: c.run(f"touch {RAN}; printf %s {shlex.quote(s)}"))
    if good:
        expected = b"".join(os.fsencode(s) + b"\0" for s in good)
        command = f"touch {RAN}; {printf_words(good)}"
        refused_or_exact(pool, lambda: printed_bytes(c.run, command), expected)


@remote(10)
@given(env=st.dictionaries(ENV_NAME, with_surrogates(TEXT), min_size=1, max_size=8))
def test_undecodable_env_values(pool, method, env):
    c = pool(method)
    good = {n: v for n, v in env.items() if original_bytes(v) is not None}
    for name, value in env.items():
        if name not in good:
            must_refuse(pool, lambda n=name, v=value: c.run(f"touch {RAN}", env={n: v}))
    if good:
        expected = {n: os.fsencode(v) for n, v in good.items()}
        # as the shell expands them, and as a child process inherits them
        refused_or_exact(pool, lambda: env_seen(c.run, good), (expected, expected))


#: Plain words around the surrogates: hostile cd paths are property 3's business.
WORD = st.text("abcXYZ019_-. ", min_size=1, max_size=6)


@remote(10)
@given(names=st.lists(with_surrogates(WORD), min_size=1, max_size=3, unique=True))
def test_undecodable_cd_paths(pool, method, names):
    c = pool(method)
    base = "/tmp/fabns-hyp-cd-bytes"
    pool.fresh_dir(base)
    for name in names:
        path = f"{base}/{name}"

        def pwd(path: str = path) -> bytes:
            with c.cd(path):
                return printed_bytes(c.run, f"touch {RAN}; pwd")

        raw = original_bytes(path)
        if raw is None:
            must_refuse(pool, pwd)
            continue
        os.makedirs(pool.inside("plain", raw), exist_ok=True)  # from the host: those bytes
        refused_or_exact(pool, pwd, raw + b"\n")


@remote(10)
@given(files=st.dictionaries(with_surrogates(WORD), CONTENT, min_size=1, max_size=5))
def test_undecodable_file_names(pool, method, files):
    c = pool(method)
    base = "/tmp/fabns-hyp-files-bytes"
    host_dir = pool.fresh_dir(base)
    for name, data in files.items():
        path = f"{base}/{name}"
        raw = original_bytes(name)
        if raw is None:
            with pytest.raises(InvalidArgument):
                c.put(io.BytesIO(data), path)
            assert os.listdir(host_dir) == [], "refused, but something was written"
            continue
        try:
            c.put(io.BytesIO(data), path)
        except InvalidArgument:
            assert os.listdir(host_dir) == [], "refused, but something was written"
            continue
        assert os.listdir(host_dir) == [raw], "the name inside is not the original bytes"
        back = io.BytesIO()
        c.get(path, back)
        assert back.getvalue() == data
        os.unlink(host_dir + b"/" + raw)
