"""Files into and out of the target: SFTP served from inside it.

`~fabns.session.TargetSession.sftp_channel` starts the helper in ``sftp`` mode:
it enters the target like a command would (verified leader, namespaces, root,
the container user's credentials) and serves SFTP on the channel, so
`TargetSFTPClient` -- paramiko's client, plus the helper's one vendor request
-- sees the container's filesystem with nothing installed in it.
`NamespaceTransfer` is Fabric's `~fabric.transfer.Transfer` for such a
connection: `put` and `get` keep Fabric's signatures and results, and are
atomic: data goes to a temporary file next to the destination and is renamed
over it only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Callable, Iterator
from typing import IO, Any

import paramiko
from fabric.transfer import Result, Transfer
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY, SFTP_OK

from fabns.accounts import AccountBook, is_number
from fabns.errors import NamespaceError, TransferFailed, UnknownUser
from fabns.quoting import check_text, exact_bytes
from fabns.remote.protocol import COMMIT_EXTENSION, KEEP, STATUS_ERRNO_TAG, TEMP_PREFIX
from fabns.session import TargetSession

Progress = Callable[[int, int], object]


class TargetSFTPClient(paramiko.SFTPClient):  # type: ignore[misc]
    """paramiko's SFTP client for the fabns helper's server inside a target.

    The one place that speaks the helper's vendor request (`commit`) and reads
    the errno the helper puts in a failed status (its language tag,
    ``errno=N``), so no caller parses error text.

    .. versionadded:: 0.2
    """

    def commit(
        self,
        handle: bytes,
        target: bytes,
        name: bytes,
        mode: int | None,
        uid: int | None,
        gid: int | None,
    ) -> str:
        """``commit@fabns``: owner and mode set on the open temporary file's
        ``handle``, then renamed over ``target`` -- one round trip.

        A symlink at ``target`` is replaced, never followed (a directory there
        receives the file under ``name``). Returns the final absolute path.
        """
        kind, message = self._request(
            CMD_EXTENDED,
            COMMIT_EXTENSION,
            handle,
            target,
            name,
            KEEP if mode is None else mode,
            KEEP if uid is None else uid,
            KEEP if gid is None else gid,
        )
        if kind != CMD_EXTENDED_REPLY:
            raise TransferFailed(errno.EIO, f"unexpected reply to {COMMIT_EXTENSION}")
        return bytes(message.get_string()).decode("utf-8", "surrogateescape")

    def _convert_status(self, msg: Any) -> None:
        code = msg.get_int()
        text = msg.get_text()
        tag = msg.get_text() if msg.get_remainder() else ""
        if code == SFTP_OK:
            return
        number = tag[len(STATUS_ERRNO_TAG) :] if tag.startswith(STATUS_ERRNO_TAG) else ""
        if is_number(number):
            raise OSError(int(number), text)
        msg.rewind()
        msg.get_int()  # the request id, read again: paramiko's own mapping
        super()._convert_status(msg)


def _failure(action: str, path: str, where: str, error: BaseException) -> TransferFailed:
    number = getattr(error, "errno", None)
    reason = os.strerror(number) if number else str(error)
    return TransferFailed(number or errno.EIO, f"{action} {path!r} in {where}: {reason}", path)


class NamespaceTransfer(Transfer):  # type: ignore[misc]
    """Fabric's `~fabric.transfer.Transfer` for a `NamespaceConnection`.

    Uses of its connection: ``sftp()`` (as Fabric's does), ``host``/``user``/
    ``port``, ``literal_cwd`` and ``target_session``.

    .. versionadded:: 0.2
    """

    _client: Any = None

    @property
    def session(self) -> TargetSession:
        session: TargetSession = self.connection.target_session
        return session

    @property
    def sftp(self) -> Any:
        """The SFTP client of the transfer under way (see `NamespaceConnection.transfer_sftp`)."""
        return self._client if self._client is not None else self.connection.sftp()

    @contextlib.contextmanager
    def _client_for_transfer(self) -> Iterator[None]:
        opener = getattr(self.connection, "transfer_sftp", None)
        if opener is None:
            yield
            return
        with opener() as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    def remote_path(self, path: str) -> str:
        """Absolute path inside for ``path``.

        Relative paths resolve against ``sftp().chdir()`` if you changed it (as
        in Fabric), else ``cd()``, else the user's home; ``~`` is the home.
        """
        check_text(path, "a remote path")
        home = self.session.credentials().home
        if path == "~" or path.startswith("~/"):
            path = home + path[1:]
        trailing = "/" if path.endswith("/") and path != "/" else ""
        if not path.startswith("/"):
            shared = getattr(self.connection, "_sftp", None)  # sftp().chdir(), if any
            cwd = shared.getcwd() if shared is not None else None
            base = cwd or self.connection.literal_cwd or home
            if base == "~" or base.startswith("~/"):
                base = home + base[1:]
            path = posixpath.join(base, path)
        return str(posixpath.normpath(path)) + trailing

    def put(self, *args: Any, **kwargs: Any) -> Result:
        """Upload ``local`` to ``remote`` inside the target, atomically (see `_put`)."""
        with self._client_for_transfer():
            return self._put(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Result:
        """Download ``remote`` from inside the target to ``local``, atomically (see `_get`)."""
        with self._client_for_transfer():
            return self._get(*args, **kwargs)

    def _put(
        self,
        local: str | os.PathLike[str] | IO[bytes],
        remote: str | None = None,
        preserve_mode: bool = True,
        *,
        mode: int | None = None,
        owner: int | str | None = None,
        group: int | str | None = None,
        progress: Progress | None = None,
    ) -> Result:
        """Upload ``local`` to ``remote`` inside the target, atomically.

        A file-like ``local`` is sent from its start, and its position is left
        as it was (as in Fabric).
        """
        session = self.session
        where = session.describe()
        is_file_like = hasattr(local, "read")
        if is_file_like and not remote:
            raise TransferFailed(errno.EINVAL, "a file-like local needs an explicit remote path")
        local_path = "" if is_file_like else os.path.abspath(os.fspath(local))  # type: ignore[arg-type]
        if not is_file_like and not os.path.isfile(local_path):
            raise TransferFailed(
                errno.ENOENT, f"local file {local_path!r} does not exist", local_path
            )
        sftp = self.sftp
        orig_remote = remote
        name = posixpath.basename(local_path)
        target = self.remote_path(remote or name)
        if target.endswith("/"):
            if not name:
                raise TransferFailed(errno.EISDIR, f"{target!r} is a directory in {where}", target)
            target = posixpath.join(target, name)
        directory, base = posixpath.split(target)
        temp = posixpath.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(4)}-{base}"[:255])
        if mode is None and preserve_mode and local_path:
            mode = stat.S_IMODE(os.stat(local_path).st_mode)
        uid, gid = _ownership(session.leader.book, owner, group)
        try:
            # exclusive: never an existing file or a planted link
            with sftp.open(exact_bytes(temp), "wxb") as remote_file:
                if is_file_like:
                    _upload_from_start(remote_file, local, temp, progress)  # type: ignore[arg-type]
                else:
                    with open(local_path, "rb") as source:
                        size = os.fstat(source.fileno()).st_size
                        _upload(remote_file, source, temp, size, progress)
                target = sftp.commit(
                    remote_file.handle, exact_bytes(target), exact_bytes(name), mode, uid, gid
                )
        except BaseException as error:
            with contextlib.suppress(Exception):
                sftp.remove(exact_bytes(temp))
            if isinstance(error, NamespaceError | KeyboardInterrupt | SystemExit):
                raise
            if isinstance(error, OSError | paramiko.SSHException):
                raise _failure("cannot write", target, where, error) from error
            raise
        return Result(
            local=local if is_file_like else local_path,
            orig_local=local,
            remote=target,
            orig_remote=orig_remote,
            connection=self.connection,
        )

    def _get(
        self,
        remote: str,
        local: str | os.PathLike[str] | IO[bytes] | None = None,
        preserve_mode: bool = True,
        *,
        progress: Progress | None = None,
    ) -> Result:
        """Download ``remote`` from inside the target to ``local``, atomically.

        ``local`` may use Fabric's ``{host}``, ``{user}``, ``{port}``,
        ``{dirname}``, ``{basename}``, and ``{target}`` (the container name or
        ``pid-N``).
        """
        session = self.session
        where = session.describe()
        if not remote:
            raise TransferFailed(errno.EINVAL, "get() needs a remote path")
        sftp = self.sftp
        source = self.remote_path(remote)
        raw = exact_bytes(source)
        try:
            info = sftp.stat(raw)
        except OSError as error:
            raise _failure("cannot read", source, where, error) from error
        connection = self.connection
        if local is not None and hasattr(local, "write"):
            try:
                sftp.getfo(raw, local, callback=progress)
            except (OSError, paramiko.SSHException) as error:
                raise _failure("cannot read", source, where, error) from error
            return Result(local, local, source, remote, connection)
        tokens = {
            "host": connection.host,
            "user": connection.user,
            "port": connection.port,
            "dirname": posixpath.dirname(source),
            "basename": posixpath.basename(source),
            "target": session.spec.label,
        }
        orig_local = local
        path = os.fspath(local) if local is not None else ""
        path = path.format(**tokens) if path else ""
        if not path or path.endswith(os.sep) or os.path.isdir(path):
            path = os.path.join(path, posixpath.basename(source))
        path = os.path.abspath(path)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = os.path.join(os.path.dirname(path), f"{TEMP_PREFIX}{secrets.token_hex(4)}")
        try:
            # exclusive and private until complete; never through a planted link
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as sink:
                sftp.getfo(raw, sink, callback=progress)
                os.fchmod(sink.fileno(), _local_mode(info.st_mode, preserve_mode))
            os.replace(temp, path)
        except BaseException as error:
            if os.path.exists(temp):
                os.unlink(temp)
            if isinstance(error, OSError | paramiko.SSHException) and not isinstance(
                error, NamespaceError
            ):
                raise _failure("cannot read", source, where, error) from error
            raise
        return Result(path, orig_local, source, remote, connection)


def _upload_from_start(
    remote: paramiko.SFTPFile, source: IO[bytes], path: str, progress: Progress | None
) -> None:
    position = source.tell()
    try:
        source.seek(0)
        _upload(remote, source, path, None, progress)
    finally:
        source.seek(position)


def _upload(
    remote: paramiko.SFTPFile,
    source: IO[bytes],
    path: str,
    size: int | None,
    progress: Progress | None,
) -> None:
    """Stream ``source`` into the open ``remote`` file with pipelined writes, then confirm.

    paramiko drops the status of pipelined writes, so the final FSTAT is what
    reports a failed write (the helper repeats the first write error there).
    """
    sent = 0
    remote.set_pipelined(True)
    while chunk := source.read(32768):
        remote.write(chunk)
        sent += len(chunk)
        if progress is not None:
            progress(sent, size if size is not None else sent)
    remote.flush()
    written = remote.stat().st_size
    if written != sent:
        raise TransferFailed(errno.EIO, f"short write: {written} of {sent} bytes", path)


def _ownership(
    book: AccountBook, owner: int | str | None, group: int | str | None
) -> tuple[int | None, int | None]:
    uid = gid = None
    if owner is not None:
        account = book.account(owner)
        if account is None and not (isinstance(owner, int) or is_number(str(owner))):
            raise UnknownUser(f"no user {owner!r} in /etc/passwd of {book.where}")
        uid = account.uid if account is not None else int(owner)
        if group is None and account is not None:
            gid = account.gid
    if group is not None:
        gid = book.group_id(group)
    if uid is not None and uid not in book.uid_map:
        raise UnknownUser(f"owner uid {uid} is not mapped in the user namespace of {book.where}")
    if gid is not None and gid not in book.gid_map:
        raise UnknownUser(f"group gid {gid} is not mapped in the user namespace of {book.where}")
    return uid, gid


def _local_mode(remote_mode: int | None, preserve_mode: bool) -> int:
    """Permissions for a downloaded file: the remote ones (the container chose
    them) without setuid, setgid or sticky bits and within the umask, or the
    umask's default."""
    umask = os.umask(0o022)
    os.umask(umask)
    if preserve_mode and remote_mode is not None:
        return stat.S_IMODE(remote_mode) & 0o777 & ~umask
    return 0o666 & ~umask


__all__ = ["TEMP_PREFIX", "NamespaceTransfer", "TargetSFTPClient"]
