"""The fabns exception tree.

Every exception fabns raises on purpose derives from `NamespaceError`, and
also from the builtin that fits, so ``except LookupError`` and friends keep
working. Messages name the host, the target and what was tried.

Command failures are *not* fabns errors: a command that runs inside the
target and exits non-zero raises Invoke's usual `~invoke.exceptions.UnexpectedExit`.
"""

from __future__ import annotations


class NamespaceError(Exception):
    """Base class of every fabns exception.

    .. versionadded:: 0.1
    """


class InvalidArgument(NamespaceError, ValueError):
    """An argument fabns cannot use: a NUL byte in a string, a bad uid, ..."""


class ConfigError(InvalidArgument):
    """The ``fabns`` configuration subtree holds an unknown key or a value fabns cannot use.

    .. versionadded:: 0.2
    """


class NotImplementedYet(NamespaceError, NotImplementedError):
    """The option is part of the API but not built yet."""


class TargetNotFound(NamespaceError, LookupError):
    """The PID or container does not exist on the host."""


class TargetChanged(NamespaceError):
    """The verified leader is gone or was replaced since it was resolved.

    Raised instead of running anything: a dead leader, a PID that was reused by
    another process, or a container restarted under the same PID with other
    namespaces.
    """


class NotALeader(NamespaceError, ValueError):
    """The PID exists but shares every namespace with the host: nothing to enter."""


class PermissionDenied(NamespaceError, PermissionError):
    """The SSH user (after elevation, if any) may not enter the target."""


class ElevationRequired(PermissionDenied):
    """Entering needs host root and there is no way to get it (no sudo, no password)."""


class ToolMissing(NamespaceError, FileNotFoundError):
    """A program fabns needs is not installed on the host (nsenter, python3, sudo)."""


class UnknownUser(NamespaceError, LookupError):
    """A user or group name/id does not exist, or is not mapped, inside the target."""


class HelperError(NamespaceError, RuntimeError):
    """The remote helper failed at a named step.

    :param step: what it was doing (``"open"``, ``"setns"``, ``"setuid"``...).
    :param errno: the OS error number, when there is one.
    :param detail: the namespace, path or id involved.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        errno: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.step = step
        self.errno = errno
        self.detail = detail


class HostTimeout(NamespaceError, TimeoutError):
    """A fabns step on the host (probe, lookup, kill) did not finish in time
    (``fabns.host_timeout``, 60 s by default)."""


class EntryFailed(NamespaceError, RuntimeError):
    """The way in (nsenter, the helper) failed before the command could start."""


class TransferFailed(NamespaceError, OSError):
    """A put() or get() failed; ``filename`` is the path (inside the target for remote
    paths), ``errno`` the reason. Nothing partial is left at the destination."""


class ContainerNotFound(TargetNotFound):
    """No container of that name (with that engine and owner) on the host."""


class ContainerStopped(TargetNotFound):
    """The container exists but is not running: it has no leader to enter."""


class AmbiguousContainer(NamespaceError, LookupError):
    """Two engines know the name; ``engine=`` must choose."""


class EngineUnavailable(NamespaceError, RuntimeError):
    """An engine's tool is installed but failed (a daemon not running, no permission)."""


class SessionLost(NamespaceError, ConnectionError):
    """A persistent session's channel broke (SSH dropped, the helper killed).

    A command that may have started is never run again: it fails with this;
    the next command opens a new session.
    """


class TargetExited(NamespaceError):
    """The target's leader exited while a command ran in it (persistent sessions).

    The command was ended; the next command resolves a ``container=`` target
    afresh (a ``pid=`` target then raises `TargetNotFound`).
    """
