"""``fabns`` as ``fab`` plus containers: Fabric's own `Program` and `Executor`, subclassed.

Everything ``fab`` does works the same (task loading, config files, ``-H``,
``-i``, ``-S``, ``--prompt-for-sudo-password``, ``-- command``); what changes:

- ``-H`` takes targets -- ``[user@]host[:port]/container``, ``.../pid:N`` or
  ``@group`` (``fabns.groups.group`` in the config) -- and tasks get a
  `~fabns.NamespaceConnection` for each (Fabric's ``ConnectionCall`` always
  makes a plain ``Connection``: fabric#2320). ``--container``, ``--pid``,
  ``--engine``, ``--method``, ``--owner``, ``--ns-user``, ``--ns-group`` and
  ``--persistent`` apply to every target.
- Targets on one host share one SSH transport, and each target keeps one
  connection for all the tasks of the run.
- A target that fails -- cannot connect, cannot be entered, a command exits
  non-zero -- is reported on one line and the others go on (``--fail-fast``
  stops instead); a summary names the failed targets and the exit status is 1.
- ``--parallel N`` runs each task on up to N targets at once, their output
  prefixed with ``[target]``. ``-- command`` output is always prefixed.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import paramiko
from fabric import Executor
from fabric.exceptions import NothingToDo
from fabric.main import Fab
from fabric.tasks import ConnectionCall
from invoke.exceptions import CommandTimedOut, Exit, Failure, UnexpectedExit
from invoke.parser.argument import Argument
from invoke.runners import Runner
from invoke.tasks import Call, Task
from invoke.util import debug

from fabns import __version__
from fabns.config import Config, check_config
from fabns.connection import NamespaceConnection
from fabns.errors import InvalidArgument, NamespaceError
from fabns.group import connection_for, expand_targets, share_transports
from fabns.quoting import join
from fabns.spec import TargetSpec

#: ``fabns`` flags that set a `NamespaceConnection` option for every target.
TARGET_FLAGS = {
    "container": "container",
    "pid": "pid",
    "engine": "engine",
    "owner": "owner",
    "method": "method",
    "ns-user": "uid",
    "ns-group": "gid",
    "persistent": "persistent",
}

#: What goes after ``fabns --help``'s options.
EXAMPLES = """\
Targets (-H, comma-separated): [user@]host[:port]/container, [user@]host[:port]/pid:N,
or @name for the list fabns.groups.name in the config (fabric.yaml).

Subcommands (given first):
  fabns shell TARGET [options]      an interactive login shell inside the target
  fabns cp SRC DST [options]        copy a file into or out of a container
                                    (host/container:path on one side), atomically
  fabns demo                        end-to-end demo on this machine (root)

examples:
  fabns -H web1/app,web2/app deploy              task 'deploy' of ./fabfile.py in each
  fabns -H @web --parallel 4 deploy              a configured group, 4 targets at once
  fabns -H web1/app -- uname -a                  one command (prefixed by target)
  fabns -H web1 --container app --engine lxc -- id
  fabns -H admin@web1:2222/pid:4242 --ns-user www -- whoami
  fabns shell root@web1/app                      see fabns shell --help
  fabns cp ./app.conf web1/app:/etc/app/app.conf
"""


def target_label(c: NamespaceConnection, address: str = "", *, user: bool = False) -> str:
    """How output and reports name a target: ``host[:port]/container`` (or ``/pid:N``).

    ``address`` is ``host[:port]`` as the user wrote it (default: the
    connection's host, and its port unless 22); with ``user``, ``user@`` goes in
    front (for targets that differ only by it).
    """
    spec = c.target_spec
    if not address:
        host = c.original_host or c.host
        address = host if c.port == 22 else f"{host}:{c.port}"
    name = spec.container if spec.container is not None else f"pid:{spec.pid}"
    return f"{c.user}@{address}/{name}" if user else f"{address}/{name}"


def unique_labels(
    connections: list[NamespaceConnection], addresses: dict[int, str] | None = None
) -> dict[int, str]:
    """`target_label` of each connection (by ``id``), with the user where labels collide.

    ``addresses`` maps a connection's ``id`` to its ``host[:port]`` as written.
    """
    addresses = addresses or {}
    plain = [target_label(c, addresses.get(id(c), "")) for c in connections]
    labels = {}
    for c, label in zip(connections, plain, strict=True):
        if plain.count(label) > 1:
            label = target_label(c, addresses.get(id(c), ""), user=True)
        labels[id(c)] = label
    counts, numbered = Counter(labels.values()), Counter[str]()
    for key, label in list(labels.items()):  # the same target twice (other uid=...)
        if counts[label] > 1:
            numbered[label] += 1
            labels[key] = f"{label}#{numbered[label]}"
    return labels


def describe_failure(error: BaseException) -> tuple[str, str]:
    """(a short reason for the summary, a line for the report) of one target's failure."""
    if isinstance(error, UnexpectedExit):
        return (
            f"exit {error.result.exited}",
            f"{error.result.command!r} exited {error.result.exited}",
        )
    if isinstance(error, CommandTimedOut):
        return "timed out", f"{error.result.command!r} timed out after {error.timeout} s"
    name = type(error).__name__
    return name, f"{name}: {error}" if str(error) else name


#: Failures that are the world's, not the task's: reported without a traceback.
EXPECTED_FAILURES = (NamespaceError, paramiko.SSHException, OSError, Failure, Exit, EOFError)


class TargetOutput:
    """Output of several targets, each line prefixed with ``[target] ``.

    While `installed`, ``sys.stdout`` and ``sys.stderr`` send what is written
    for a target to that target's `stream`: from a thread that `bind` s it
    (``print()`` in a task), or from an Invoke runner whose context is a
    connection that `bind_context` named -- the runner writes from threads of
    its own, and a ``run.out_stream`` would defeat ``hide=``. The rest goes
    straight on. A partial line waits for its end, or for `finish`.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        self.real = {"out": sys.stdout, "err": sys.stderr}
        self._streams: dict[tuple[str, str], _TargetStream] = {}
        self._contexts: dict[int, str] = {}

    def bind_context(self, context: object, label: str) -> None:
        """What runners of ``context`` (a connection) write is ``label``'s."""
        self._contexts[id(context)] = label

    def label_here(self) -> str | None:
        """The target the current write is for: the thread's, or its runner's, or None."""
        label: str | None = getattr(self.local, "label", None)
        if label is not None:
            return label
        # two frames up: Runner.write_our_output, or the code that called print()
        frame: FrameType | None = sys._getframe(2)
        for _ in range(6):
            if frame is None:
                break
            runner = frame.f_locals.get("self")
            if isinstance(runner, Runner):
                return self._contexts.get(id(runner.context))
            frame = frame.f_back
        return None

    def stream(self, label: str, key: str) -> _TargetStream:
        """Target ``label``'s ``"out"`` or ``"err"`` stream."""
        with self.lock:
            if (label, key) not in self._streams:
                self._streams[label, key] = _TargetStream(self, label, key)
            return self._streams[label, key]

    def bind(self, label: str | None) -> None:
        """What this thread writes to ``sys.stdout``/``sys.stderr`` is ``label``'s."""
        self.local.label = label

    def finish(self, label: str) -> None:
        """End ``label``'s partial lines."""
        for key in ("out", "err"):
            self.stream(label, key).finish()

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved = sys.stdout, sys.stderr
        sys.stdout = _ThreadRouter(self, "out")
        sys.stderr = _ThreadRouter(self, "err")
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


class _TargetStream:
    def __init__(self, output: TargetOutput, label: str, key: str) -> None:
        self.output = output
        self.label = label
        self.real = output.real[key]
        self.partial = ""

    def write(self, text: str) -> int:
        with self.output.lock:
            *lines, self.partial = (self.partial + text).split("\n")
            if lines:
                self.real.write("".join(f"[{self.label}] {line}\n" for line in lines))
        return len(text)

    def finish(self) -> None:
        if self.partial:
            self.write("\n")
        self.flush()

    def flush(self) -> None:
        with self.output.lock:
            self.real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _ThreadRouter:
    def __init__(self, output: TargetOutput, key: str) -> None:
        self.output = output
        self.key = key
        self.real = output.real[key]

    def write(self, text: str) -> int:
        label = self.output.label_here()
        if label is not None:
            return self.output.stream(label, self.key).write(text)
        with self.output.lock:
            return self.real.write(text)

    def flush(self) -> None:
        self.real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class NamespaceConnectionCall(ConnectionCall):  # type: ignore[misc]
    """Fabric's `~fabric.tasks.ConnectionCall`, whose context is a `NamespaceConnection`.

    ``init_kwargs`` are `connection_for` keyword arguments: ``host`` may be a
    whole target string (``"web1/app"``), the rest target options and
    `fabric.Connection` arguments.

    .. versionadded:: 0.2
    """

    def make_context(self, config: Any) -> NamespaceConnection:
        kwargs = dict(self.init_kwargs)
        kwargs["config"] = config
        return connection_for(kwargs)


@dataclass
class _Failure:
    label: str
    task: str
    reason: str


class NamespaceExecutor(Executor):  # type: ignore[misc]
    """Fabric's `~fabric.executor.Executor` for targets inside containers.

    Host strings become `NamespaceConnectionCall` s (``@group`` expanded from
    the config); each target gets one connection for the whole run, targets
    on one host share a transport, and a failing target is reported and left
    out of later tasks instead of ending the run.

    .. versionadded:: 0.2
    """

    _connections: dict[str, NamespaceConnection]
    _failures: list[_Failure]
    _failed: set[str]
    _started: set[str]
    _labels: dict[int, str]
    _addresses: dict[int, str]
    _command: Task[Any] | None = None

    def core_value(self, name: str, default: Any = None) -> Any:
        """The value of core flag ``name`` (``default`` without a parsed command line)."""
        if not self.core:
            return default
        args = self.core[0].args
        return args[name].value if name in args else default

    def target_options(self) -> dict[str, Any]:
        """`NamespaceConnection` options from ``--container``, ``--pid``... (only those given)."""
        options = {}
        for flag, option in TARGET_FLAGS.items():
            value = self.core_value(flag)
            if value not in (None, False):
                if option in ("uid", "gid") and value.isascii() and value.isdecimal():
                    value = int(value)
                options[option] = value
        return options

    def normalize_hosts(self, hosts: Any) -> list[dict[str, Any]]:
        """Targets (strings, specs, mappings, ``@group``) as `connection_for` keyword arguments.

        Flags are defaults: what a target names itself wins.
        """
        options = self.target_options()
        result = []
        for value in expand_targets(hosts or [], self.config):
            if isinstance(value, Mapping):
                result.append({**options, **value})
            elif isinstance(value, TargetSpec):
                result.append({**options, **value.connection_kwargs()})
            elif isinstance(value, str):
                result.append({**options, "host": value.strip()})
            else:
                raise InvalidArgument(f"not a target: {value!r}")
        return result

    def parameterize(self, call: Call, connection_init_kwargs: dict[str, Any]) -> Call:
        return call.clone(
            into=NamespaceConnectionCall, with_={"init_kwargs": connection_init_kwargs}
        )

    def expand_calls(self, calls: list[Any], apply_hosts: bool = True) -> list[Any]:
        # Fabric's expansion, with our own anonymous task for ``-- command``
        remainder = self.core.remainder if self.core else ""
        if not remainder:
            return list(super().expand_calls(calls, apply_hosts))
        self.core.remainder = ""
        try:
            expanded = list(super().expand_calls(calls, apply_hosts))
        finally:
            self.core.remainder = remainder
        if not apply_hosts:
            return expanded
        hosts = self.core_value("hosts")
        if not hosts:
            raise NothingToDo("Was told to run a command, but not given any hosts to run it on!")

        def command(c: NamespaceConnection) -> Any:
            return c.run(remainder, in_stream=False)

        self._command = Task(body=command, name="--")
        anonymous = Call(self._command)
        for init_kwargs in self.normalize_hosts(hosts.split(",")):
            expanded.append(self.parameterize(anonymous, init_kwargs))
        return expanded

    def execute(self, *tasks: Any) -> dict[Any, Any]:
        """Run ``tasks`` on every target; `invoke.Exit` (status 1) if any target failed."""
        calls = self.normalize(tasks)
        direct = list(calls)
        expanded = self.expand_calls(calls)
        self._connections, self._failures, self._failed, self._started = {}, [], set(), set()
        self._addresses = {}
        results: dict[Any, Any] = {}
        try:
            for call in expanded:  # every target is checked before anything runs
                if isinstance(call, NamespaceConnectionCall):
                    self._connection(call)
            share_transports(self._connections.values())
            self._labels = unique_labels(list(self._connections.values()), self._addresses)
            for batch in _batches(expanded):
                if self._failures and self.core_value("fail-fast"):
                    break
                results.update(self._run_batch(batch, direct))
        finally:
            for c in self._connections.values():
                c.close()
        if self._failures:
            self._report()
            raise Exit(code=1)
        return results

    def _connection(self, call: NamespaceConnectionCall) -> NamespaceConnection:
        key = repr(sorted(call.init_kwargs.items(), key=lambda item: item[0]))
        if key not in self._connections:
            c = self._connections[key] = call.make_context(self.config)
            host = call.init_kwargs.get("host")
            if isinstance(host, str):  # label it as written: an ssh_config alias, a port
                self._addresses[id(c)] = host.partition("/")[0].rpartition("@")[2]
        return self._connections[key]

    def _load_config(self, call: Call) -> None:
        # what Invoke's Executor does before each call
        self.config.load_collection(self.collection.configuration(call.called_as))
        self.config.load_shell_env()

    def _run_batch(self, batch: list[Any], direct: list[Any]) -> dict[Any, Any]:
        first = batch[0]
        self._load_config(first)
        if not isinstance(first, NamespaceConnectionCall):
            debug(f"Executing {first!r}")
            result = first.task(first.make_context(self.config), *first.args, **first.kwargs)
            if first in direct and first.autoprint:
                print(result)
            return {first.task: result}
        anonymous = first.task is self._command
        parallel = max(1, int(self.core_value("parallel") or 1))
        prefix = anonymous or parallel > 1
        todo = []
        for call in batch:
            c = self._connection(call)
            label = self._labels[id(c)]
            if label not in self._failed:
                todo.append((call, c, label))
        output = TargetOutput()
        results: dict[Any, Any] = {}
        stop = threading.Event()

        def one(call: Any, c: NamespaceConnection, label: str) -> None:
            if stop.is_set():
                return
            self._started.add(label)
            c.config = self.config
            if prefix:
                output.bind(label)
                output.bind_context(c, label)
            try:
                debug(f"Executing {call!r} on {label}")
                result = call.task(c, *call.args, **call.kwargs)
                results[call.task] = result
                if call in direct and call.autoprint:
                    print(result)
            except Exception as error:
                self._fail(label, "" if anonymous else call.called_as or call.task.name, error)
                if self.core_value("fail-fast"):
                    stop.set()
            finally:
                if prefix:
                    output.bind(None)
                    output.finish(label)

        with output.installed() if prefix else _nothing():
            if parallel == 1:
                for item in todo:
                    one(*item)
            else:
                pool = ThreadPoolExecutor(parallel, thread_name_prefix="fabns-target")
                try:
                    for future in [pool.submit(one, *item) for item in todo]:
                        future.result()
                except BaseException:  # Ctrl-C: start nothing more; closing ends the rest
                    stop.set()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                pool.shutdown()
        return results

    def _fail(self, label: str, task: str, error: BaseException) -> None:
        reason, line = describe_failure(error)
        where = f"{task}: " if task else ""
        stderr = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
        with _report_lock:
            print(f"[{label}] fabns: {where}{line}", file=stderr, flush=True)
            if not isinstance(error, EXPECTED_FAILURES):
                text = "".join(traceback.format_exception(error))
                stderr.write("".join(f"[{label}] {row}\n" for row in text.splitlines()))
            self._failures.append(_Failure(label, task, reason))
            self._failed.add(label)

    def _report(self) -> None:
        failed = sorted({f.label for f in self._failures})
        total = len(self._labels)
        details = ", ".join(
            f"{f.label} ({f.task + ': ' if f.task else ''}{f.reason})" for f in self._failures
        )
        print(f"fabns: {len(failed)} of {total} targets failed: {details}", file=sys.stderr)
        skipped = sorted(set(self._labels.values()) - self._started)
        if self.core_value("fail-fast") and skipped:
            print(
                "fabns: stopped at the first failure (--fail-fast); "
                f"not run on {', '.join(skipped)}",
                file=sys.stderr,
            )


_report_lock = threading.Lock()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _batches(calls: list[Any]) -> Iterator[list[Any]]:
    """Consecutive calls of one task (with the same arguments) on several targets."""
    batch: list[Any] = []
    for call in calls:
        if (
            batch
            and isinstance(call, NamespaceConnectionCall)
            and isinstance(batch[-1], NamespaceConnectionCall)
            and call.task is batch[-1].task
            and call.args == batch[-1].args
            and call.kwargs == batch[-1].kwargs
        ):
            batch.append(call)
            continue
        if batch:
            yield batch
        batch = [call]
    if batch:
        yield batch


class NamespaceFab(Fab):  # type: ignore[misc]
    """Fabric's ``fab`` program (`fabric.main.Fab`) with targets inside containers.

    .. versionadded:: 0.2
    """

    def core_args(self) -> list[Argument]:
        args = []
        for arg in super().core_args():
            if "hosts" in arg.names:
                arg.help = (
                    "Comma-separated targets: [user@]host[:port]/container, "
                    "[user@]host[:port]/pid:N or @group (fabns.groups in the config)."
                )
            args.append(arg)
        return [
            *args,
            Argument(names=("container",), help="Container name for targets that give none."),
            Argument(
                names=("pid",), kind=int, help="Host PID whose namespaces a bare host means."
            ),
            Argument(
                names=("engine",),
                help="How to find containers by name: auto (default), machined, lxc, podman, "
                "docker.",
            ),
            Argument(
                names=("method",), help="Way in: auto (default), nsenter, setns, lxc-attach."
            ),
            Argument(names=("owner",), help="Host user owning the containers (unprivileged)."),
            Argument(names=("ns-user",), help="User inside the targets (name or uid)."),
            Argument(names=("ns-group",), help="Group inside the targets (name or gid)."),
            Argument(
                names=("persistent",),
                kind=bool,
                help="Enter each target once and run every command through that session.",
            ),
            Argument(
                names=("parallel",),
                kind=int,
                default=1,
                help="Run each task on up to N targets at once (output prefixed by target).",
            ),
            Argument(
                names=("fail-fast",),
                kind=bool,
                help="Stop at the first target that fails (default: the others go on).",
            ),
        ]

    def load_collection(self) -> None:
        super().load_collection()
        if self._remainder_only:
            # no fabfile needed for ``-- command``; fabric.yaml (groups...) still loads
            self.config.set_project_location(os.getcwd())
            self.config.load_project()

    def parse_core(self, *args: Any, **kwargs: Any) -> None:
        super().parse_core(*args, **kwargs)
        if "--" in self.argv:
            # one word is a shell command line (as in fab); more are argv, each word quoted
            words = self.argv[self.argv.index("--") + 1 :]
            self.core.remainder = words[0] if len(words) == 1 else join(words)
        parallel = self.args.parallel.value
        if parallel is not None and parallel < 1:
            raise Exit(f"fabns: --parallel must be at least 1, not {parallel}", code=2)

    def update_config(self) -> None:
        super().update_config()
        check_config(self.config)
        if (self.args.parallel.value or 1) > 1:
            # concurrent targets cannot share the terminal's stdin
            self.config._overrides.setdefault("run", {})["in_stream"] = False
            self.config.merge()

    def print_version(self) -> None:
        super().print_version()
        from fabric import __version__ as fabric

        print(f"Fabric {fabric}")

    def print_help(self) -> None:
        super().print_help()
        print()
        print(EXAMPLES.rstrip())

    def run(self, argv: Any = None, exit: bool = True) -> None:
        try:
            super().run(argv, exit)
        except (NamespaceError, NothingToDo) as error:
            print(f"fabns: {error}", file=sys.stderr)
            if exit:
                sys.exit(2)
            raise


def make_program() -> NamespaceFab:
    """The ``fabns`` program: `NamespaceFab` with `NamespaceExecutor` and `fabns.Config`."""
    return NamespaceFab(
        name="fabns",
        binary="fabns",
        version=__version__,
        executor_class=NamespaceExecutor,
        config_class=Config,
    )


__all__ = [
    "NamespaceConnectionCall",
    "NamespaceExecutor",
    "NamespaceFab",
    "TargetOutput",
    "make_program",
    "target_label",
]
