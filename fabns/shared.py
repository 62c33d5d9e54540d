"""One SSH client for several connections to the same host: `SharedTransport`.

`NamespaceConnection.share_transport` puts connections on one of these; the
SSH connection is made by whichever member opens first, and closed only when
the last member that opened it closes.
"""

from __future__ import annotations

import threading

import paramiko


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


__all__ = ["SharedTransport"]
