"""One SSH client for several connections to the same host: `SharedTransport`.

`NamespaceConnection.share_transport` puts connections on one of these; the
SSH connection is made by whichever member opens first, and closed only when
the last member that opened it closes. Members with the same host settings
also share one `~fabns.host.HostSession` (the SSH account, its tools and
privilege are asked once per host, not once per container).
"""

from __future__ import annotations

import threading
from typing import Any

import paramiko

from fabns.host import HostFacts, HostSession


class SharedTransport:
    """An SSH client several connections use, and who holds it open.

    :param client: the `paramiko.SSHClient` the members use.

    .. versionadded:: 0.2
    """

    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client
        #: Serialises opening and closing, so one handshake serves every member.
        self.lock = threading.RLock()
        self._holders: set[int] = set()
        self._host_session: HostSession | None = None
        self._host_settings: tuple[Any, ...] = ()

    def active_transport(self) -> paramiko.Transport | None:
        """The client's transport if it is connected, else None."""
        transport = self.client.get_transport()
        return transport if transport is not None and transport.is_active() else None

    def hold(self, member: object) -> None:
        """``member`` uses the transport (it opened, or adopted it)."""
        self._holders.add(id(member))

    def release(self, member: object) -> bool:
        """``member`` is done with it; True if nobody else holds it (close it now)."""
        self._holders.discard(id(member))
        return not self._holders

    def host_session(self, host: str, config: Any) -> HostSession | None:
        """The members' one `HostSession`, for a member with ``host`` and ``config``.

        None if that member's host settings (host, sudo password, host step
        timeout) differ from those of the first member that asked: it keeps
        its own.
        """
        settings = (host, config.sudo.password, config.fabns.host_timeout)
        with self.lock:
            if self._host_session is None:
                self._host_session = _SharedHostSession(_SharedHost(self, host, config))
                self._host_settings = settings
            return self._host_session if settings == self._host_settings else None

    def open_session(self) -> paramiko.Channel:
        """A new session channel on the shared transport (which a member has opened)."""
        transport = self.active_transport()
        if transport is None:
            raise paramiko.SSHException("the shared SSH connection is not open")
        return transport.open_session()


class _SharedHostSession(HostSession):
    """A `HostSession` several threads may start with: the facts are asked once."""

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self._facts_lock = threading.Lock()

    def facts(self) -> HostFacts:
        with self._facts_lock:
            return super().facts()


class _SharedHost:
    """What a `HostSession` uses of its connection, for the members of a `SharedTransport`."""

    def __init__(self, shared: SharedTransport, host: str, config: Any) -> None:
        self.shared = shared
        self.host = host
        self.config = config

    def create_session(self) -> paramiko.Channel:
        return self.shared.open_session()


__all__ = ["SharedTransport"]
