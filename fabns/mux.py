"""The client side of a persistent session: many streams over one helper channel.

`Mux` owns the SSH channel of a ``serve`` helper (`fabns.remote.serve`),
already entered; one reader thread takes its frames apart and hands each
stream's bytes to that stream. `MuxStream` looks like the part of a paramiko
``Channel`` that Fabric's runner and paramiko's SFTP client use (``recv``,
``recv_stderr``, ``sendall``, ``shutdown_write``, ``exit_status_ready``,
``recv_exit_status``, ``resize_pty``, ``close``), so both run over it
unchanged.

Flow control is per stream: the helper sends at most `STREAM_WINDOW` bytes of
output that the client has not taken yet, and the client as much stdin; the
reader thread therefore never blocks on one slow stream, and nothing holds a
whole output in memory. The helper alone writes frames: a command's output
is only ever a frame's payload.
"""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import socket
import struct
import threading
import time
from typing import Any

from fabns.errors import InvalidArgument, SessionLost
from fabns.remote.protocol import (
    FRAME_CREDIT,
    FRAME_EOF,
    FRAME_EXIT,
    FRAME_FAILED,
    FRAME_GONE,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAX,
    FRAME_OPEN,
    FRAME_SIGNAL,
    FRAME_STARTED,
    FRAME_STDERR,
    FRAME_STDIN,
    FRAME_STDIN_CREDIT,
    FRAME_STDOUT,
    FRAME_WINCH,
    STREAM_WINDOW,
)

#: The client credits output back once it has taken this much of it.
CREDIT_STEP = STREAM_WINDOW // 4
#: Exit status reported for a command ended by a signal (as paramiko reports it).
SIGNALLED = -1


def _header(kind: int, sid: int, size: int) -> bytes:
    return struct.pack(FRAME_HEADER, kind, sid, size)


class MuxStream:
    """One command (or SFTP session) on a `Mux`, shaped like a paramiko channel.

    ``started`` is set when the helper said the command runs (``failure`` is
    then None) or that it never ran (``failure`` is ``(step, errno, detail)``).
    ``lost`` says why a stream ended without the command's own exit: ``"gone"``
    (the leader exited), ``"session"`` (the channel broke), ``"failed"``.

    .. versionadded:: 0.3
    """

    def __init__(self, mux: Mux, sid: int) -> None:
        self.mux = mux
        self.sid = sid
        self._cond = threading.Condition()
        self._out: collections.deque[bytes] = collections.deque()
        self._err: collections.deque[bytes] = collections.deque()
        self._out_eof = False
        self._taken = 0
        self._stdin_credit = STREAM_WINDOW
        self._exit: dict[str, Any] | None = None
        self._timeout: float | None = None
        self.started = threading.Event()
        self.exited = threading.Event()
        self.failure: tuple[str, int, str] | None = None
        self.pid: int | None = None
        #: close() kills a command still running; an SFTP session instead gets
        #: EOF, so it removes its temporary files itself.
        self.kill_on_close = True
        self._closed = False

    def __repr__(self) -> str:
        return f"<MuxStream {self.sid} on {self.mux.label}>"

    # -- fed by the reader thread -------------------------------------------------------

    def _feed(self, kind: int, payload: bytes) -> None:
        with self._cond:
            if kind == FRAME_STDOUT:
                self._out.append(payload)
            elif kind == FRAME_STDERR:
                self._err.append(payload)
            elif kind == FRAME_STDIN_CREDIT:
                self._stdin_credit += int(payload)
            elif kind == FRAME_STARTED:
                self.pid = json.loads(payload).get("pid")
                self.started.set()
            elif kind == FRAME_FAILED:
                step, number, detail = json.loads(payload.decode("utf-8", "replace"))
                self.failure = (str(step), int(number), str(detail))
                self.started.set()
            elif kind == FRAME_EXIT:
                self._end(json.loads(payload.decode("utf-8", "replace")))
            self._cond.notify_all()

    def _end(self, result: dict[str, Any]) -> None:
        """The stream is over (called with the lock held)."""
        if self._exit is None:
            self._exit = result
        self._out_eof = True
        self.started.set()
        self.exited.set()
        self._cond.notify_all()

    def _lose(self, why: str) -> None:
        with self._cond:
            self._end({"lost": why})

    # -- what the runner and the SFTP client call ---------------------------------

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def get_name(self) -> str:
        return repr(self)

    def _take(self, queue: collections.deque[bytes], size: int) -> bytes:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._cond:
            while not queue and not self._out_eof:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no data from {self!r} in {self._timeout} s")
                self._cond.wait(remaining)
            if not queue:
                return b""
            chunk = queue.popleft()
            if len(chunk) > size:
                queue.appendleft(chunk[size:])
                chunk = chunk[:size]
            self._taken += len(chunk)
            credit = self._taken if self._taken >= CREDIT_STEP else 0
            if credit:
                self._taken = 0
        if credit and not self._out_eof:
            self.mux.send(FRAME_CREDIT, self.sid, str(credit).encode())
        return chunk

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes of stdout (the pty's output with a pty); b"" at the end."""
        return self._take(self._out, size)

    def recv_stderr(self, size: int) -> bytes:
        """Up to ``size`` bytes of stderr; b"" at the end."""
        return self._take(self._err, size)

    def sendall(self, data: bytes | str) -> None:
        """Write ``data`` to the command's stdin, as the helper has room for it."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data)
        while view:
            with self._cond:
                while self._stdin_credit <= 0 and not self.exited.is_set():
                    self._cond.wait()
                if self.exited.is_set():
                    return  # it is over: like a closed pipe, the rest is dropped
                size = min(len(view), self._stdin_credit, FRAME_MAX)
                self._stdin_credit -= size
            self.mux.send(FRAME_STDIN, self.sid, bytes(view[:size]))
            view = view[size:]

    def send(self, data: bytes | str) -> int:
        self.sendall(data)
        return len(data)

    def shutdown_write(self) -> None:
        """Close the command's stdin."""
        if not self.exited.is_set():
            self.mux.send(FRAME_EOF, self.sid)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the command's process group (by the helper, its parent)."""
        if not self.exited.is_set():
            self.mux.send(FRAME_SIGNAL, self.sid, str(int(signum)).encode())

    def resize_pty(self, width: int = 80, height: int = 24, *_: Any) -> None:
        if not self.exited.is_set():
            self.mux.send(FRAME_WINCH, self.sid, f"{int(width)} {int(height)}".encode())

    def exit_status_ready(self) -> bool:
        return self.exited.is_set()

    def wait_exit(self, timeout: float | None = None) -> bool:
        return self.exited.wait(timeout)

    @property
    def result(self) -> dict[str, Any]:
        """The helper's word on how it ended (after `exited`)."""
        return dict(self._exit or {})

    def recv_exit_status(self) -> int:
        """The exit status; -1 for a command ended by a signal (as paramiko says)."""
        self.exited.wait()
        result = self._exit or {}
        if "status" in result:
            return int(result["status"])
        return SIGNALLED

    @property
    def closed(self) -> bool:
        """True once closed here, or once the helper or the channel ended it."""
        return self._closed or self.exited.is_set()

    def close(self) -> None:
        """Done with it: a command still running is killed (its process group), and
        whoever still reads it gets the end at once. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.exited.is_set():
            with contextlib.suppress(SessionLost):
                if self.failure is None and self.kill_on_close:
                    self.signal(signal.SIGKILL)
                self.mux.send(FRAME_EOF, self.sid)
            self._lose("closed")
        self.mux.forget(self)


class Mux:
    """Streams over one entered ``serve`` helper's channel.

    :param channel: the helper's channel, after its ``ok`` marker.
    :param label: what to call it in messages.

    ``gone`` is set when the helper said the leader exited; ``broken`` says
    why the channel is no longer usable (None while it is).

    .. versionadded:: 0.3
    """

    def __init__(self, channel: Any, label: str) -> None:
        self.channel = channel
        self.label = label
        self.gone: str | None = None
        self.broken: str | None = None
        self._streams: dict[int, MuxStream] = {}
        self._next = 1
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        channel.settimeout(None)
        self._reader = threading.Thread(
            target=self._read_frames, name=f"fabns-mux {label}", daemon=True
        )
        self._reader.start()

    def __repr__(self) -> str:
        return f"<Mux {self.label}{' broken' if self.broken else ''}>"

    @property
    def usable(self) -> bool:
        return self.broken is None and self.gone is None

    # -- writing -----------------------------------------------------------------------

    def send(self, kind: int, sid: int, payload: bytes = b"") -> None:
        if self.broken is not None:
            raise SessionLost(f"the fabns session on {self.label} is closed: {self.broken}")
        frame = _header(kind, sid, len(payload)) + payload
        try:
            with self._write_lock:
                self.channel.sendall(frame)
        except (OSError, EOFError) as error:
            self._break(f"writing to it failed: {error}")
            raise SessionLost(f"the fabns session on {self.label} broke: {error}") from error

    def open(self, request: dict[str, Any]) -> MuxStream:
        """Start a stream (``request`` as `fabns.remote.serve` takes it).

        The stream exists once this returns; `MuxStream.started` says when the
        helper has answered. `SessionLost` if the channel is already broken
        (then nothing was sent, and nothing ran).
        """
        with self._lock:
            if not self.usable:
                raise SessionLost(
                    f"the fabns session on {self.label} is closed: {self.broken or self.gone}"
                )
            sid = self._next
            self._next += 1
            stream = MuxStream(self, sid)
            self._streams[sid] = stream
        data = json.dumps(request).encode("utf-8", "surrogateescape")
        if len(data) > FRAME_MAX:
            self.forget(stream)
            raise InvalidArgument(
                f"the command and its environment take {len(data)} bytes; a persistent "
                f"session takes at most {FRAME_MAX}"
            )
        self.send(FRAME_OPEN, sid, data)
        return stream

    def forget(self, stream: MuxStream) -> None:
        with self._lock:
            self._streams.pop(stream.sid, None)

    # -- reading -----------------------------------------------------------------------

    def _read_frames(self) -> None:
        buffer = bytearray()
        why = "the helper closed the channel"
        try:
            while True:
                data = self.channel.recv(1 << 18)
                if not data:
                    break
                buffer += data
                while len(buffer) >= FRAME_HEADER_SIZE:
                    kind, sid, size = struct.unpack_from(FRAME_HEADER, buffer)
                    if size > FRAME_MAX:
                        raise ValueError(f"a frame of {size} bytes")
                    if len(buffer) < FRAME_HEADER_SIZE + size:
                        break
                    payload = bytes(buffer[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + size])
                    del buffer[: FRAME_HEADER_SIZE + size]
                    self._dispatch(kind, sid, payload)
        except Exception as error:  # whatever broke, every stream must hear it
            why = f"{type(error).__name__}: {error}"
        self._break(why)

    def _dispatch(self, kind: int, sid: int, payload: bytes) -> None:
        if kind == FRAME_GONE:
            self.gone = str(json.loads(payload.decode("utf-8", "replace")).get("detail"))
            return
        with self._lock:
            stream = self._streams.get(sid)
        if stream is None:
            return
        stream._feed(kind, payload)
        if kind == FRAME_EXIT:
            self.forget(stream)

    def _break(self, why: str) -> None:
        with self._lock:
            if self.broken is None:
                self.broken = why
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream._lose("gone" if self.gone else "session")

    def close(self) -> None:
        """End the session: the helper kills what still runs and exits. Idempotent."""
        self._break("closed")
        with contextlib.suppress(Exception):
            self.channel.close()
        if self._reader is not threading.current_thread():
            self._reader.join(5)


def set_nodelay(transport: Any) -> None:
    """TCP_NODELAY on a paramiko transport's socket (paramiko never sets it)."""
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = ["Mux", "MuxStream", "set_nodelay"]
