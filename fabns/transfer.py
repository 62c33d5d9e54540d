"""Files into and out of the target: SFTP served from inside it.

`open_sftp` starts the helper in ``sftp`` mode: it enters the target like a
command would (verified leader, namespaces, root, the container user's
credentials) and then serves SFTP on the channel, so paramiko's
`~paramiko.sftp_client.SFTPClient` sees the container's filesystem. Nothing
needs to be installed in the container. `put` and `get` keep Fabric's
signatures and results, and are atomic: data goes to a temporary file next to
the destination and is renamed over it only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

import paramiko
from fabric.transfer import Result
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from fabns.errors import NamespaceError, TransferFailed, UnknownUser
from fabns.failures import from_exit, from_marker
from fabns.helper import helper_command
from fabns.markers import MarkerFilter
from fabns.ways.setns import entry_request

if TYPE_CHECKING:
    from fabns.connection import NamespaceConnection

#: Temporary files start with this; the helper removes any left when a session ends.
TEMP_PREFIX = ".fabns-tmp-"
Progress = Callable[[int, int], object]


def open_sftp(connection: NamespaceConnection) -> paramiko.SFTPClient:
    """An SFTP client whose paths are the target's, as the connection's user."""
    leader = connection.target
    request = {
        **entry_request("sftp", leader, connection.fabns_nonce, connection.credentials()),
        "temp_prefix": TEMP_PREFIX,
    }
    command = helper_command(connection.python, request)
    channel = connection.host_session.start(command, connection.elevation)
    markers = MarkerFilter(connection.fabns_nonce)
    # Only the helper's marker lines come before ``ok``; read them a byte at a
    # time so that nothing of the SFTP stream after it is consumed here.
    while not markers.done:
        byte = channel.recv(1)
        if not byte:
            break
        markers.feed(byte)
    if not markers.entered:
        stderr = b""
        while chunk := channel.recv_stderr(65536):
            stderr += chunk
        exited = channel.recv_exit_status()
        channel.close()
        if markers.error is not None:
            raise from_marker(markers.error, leader.describe(), "sftp")
        text = stderr.decode("utf-8", "replace")
        raise from_exit(exited, text, leader.describe(), "sftp")
    channel.settimeout(None)
    return paramiko.SFTPClient(channel)


def _failure(action: str, path: str, where: str, error: BaseException) -> TransferFailed:
    number = getattr(error, "errno", None)
    text = str(error)
    if number is None and "[errno " in text:
        digits = text.rsplit("[errno ", 1)[1].split("]", 1)[0]
        number = int(digits) if digits.isdigit() else None
    reason = os.strerror(number) if number else text
    return TransferFailed(number or errno.EIO, f"{action} {path!r} in {where}: {reason}", path)


def _remote_path(connection: NamespaceConnection, path: str) -> str:
    """Absolute path inside: relative to ``cd()``, else to the user's home (``~`` too)."""
    home = connection.credentials().home
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    trailing = "/" if path.endswith("/") and path != "/" else ""
    if not path.startswith("/"):
        base = connection.literal_cwd or home
        if base == "~" or base.startswith("~/"):
            base = home + base[1:]
        path = posixpath.join(base, path)
    return posixpath.normpath(path) + trailing


KEEP = 0xFFFFFFFF


def _commit(
    sftp: paramiko.SFTPClient,
    handle: bytes,
    target: str,
    name: str,
    mode: int | None,
    uid: int | None,
    gid: int | None,
) -> str:
    """The helper's ``commit@fabns`` request: owner and mode set on the open
    temporary file's handle, then renamed over ``target`` -- one round trip.

    A symlink at ``target`` is replaced, never followed (a directory there
    receives the file under ``name``). Uses paramiko's request plumbing
    (``_request``), which has no public form for vendor extensions. Returns
    the final absolute path.
    """
    kind, message = sftp._request(
        CMD_EXTENDED,
        "commit@fabns",
        handle,
        target,
        name,
        KEEP if mode is None else mode,
        KEEP if uid is None else uid,
        KEEP if gid is None else gid,
    )
    if kind != CMD_EXTENDED_REPLY:
        raise TransferFailed(errno.EIO, "unexpected reply to commit@fabns", target)
    return str(message.get_text())


def put(
    connection: NamespaceConnection,
    local: str | os.PathLike[str] | IO[bytes],
    remote: str | None = None,
    preserve_mode: bool = True,
    *,
    mode: int | None = None,
    owner: int | str | None = None,
    group: int | str | None = None,
    progress: Progress | None = None,
) -> Result:
    """Upload ``local`` to ``remote`` inside the target, atomically."""
    where = connection.describe_target()
    is_file_like = hasattr(local, "read")
    if is_file_like and not remote:
        raise TransferFailed(errno.EINVAL, "a file-like local needs an explicit remote path")
    local_path = "" if is_file_like else os.path.abspath(os.fspath(local))  # type: ignore[arg-type]
    if not is_file_like and not os.path.isfile(local_path):
        raise TransferFailed(errno.ENOENT, f"local file {local_path!r} does not exist", local_path)
    sftp = connection.sftp()
    orig_remote = remote
    name = posixpath.basename(local_path)
    target = _remote_path(connection, remote or name)
    if target.endswith("/"):
        if not name:
            raise TransferFailed(errno.EISDIR, f"{target!r} is a directory in {where}", target)
        target = posixpath.join(target, name)
    directory, base = posixpath.split(target)
    temp = posixpath.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(4)}-{base}"[:255])
    if mode is None and preserve_mode and local_path:
        mode = stat.S_IMODE(os.stat(local_path).st_mode)
    uid, gid = _ownership(connection, owner, group)
    try:
        with sftp.open(temp, "wxb") as remote_file:  # exclusive: never an existing file or link
            if is_file_like:
                _upload(remote_file, local, temp, None, progress)  # type: ignore[arg-type]
            else:
                with open(local_path, "rb") as source:
                    size = os.fstat(source.fileno()).st_size
                    _upload(remote_file, source, temp, size, progress)
            target = _commit(sftp, remote_file.handle, target, name, mode, uid, gid)
    except BaseException as error:
        with contextlib.suppress(Exception):
            sftp.remove(temp)
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
        connection=connection,
    )


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
    connection: NamespaceConnection, owner: int | str | None, group: int | str | None
) -> tuple[int | None, int | None]:
    book = connection.target.book
    uid = gid = None
    if owner is not None:
        account = book.account(owner)
        if account is None and not (isinstance(owner, int) or str(owner).isdigit()):
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
    """Permissions for a downloaded file: the remote ones without setuid, setgid
    or sticky bits (the container chose them), or the umask's default."""
    if preserve_mode and remote_mode is not None:
        return stat.S_IMODE(remote_mode) & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def get(
    connection: NamespaceConnection,
    remote: str,
    local: str | os.PathLike[str] | IO[bytes] | None = None,
    preserve_mode: bool = True,
    *,
    progress: Progress | None = None,
) -> Result:
    """Download ``remote`` from inside the target to ``local``, atomically."""
    where = connection.describe_target()
    if not remote:
        raise TransferFailed(errno.EINVAL, "get() needs a remote path")
    sftp = connection.sftp()
    source = _remote_path(connection, remote)
    try:
        info = sftp.stat(source)
    except OSError as error:
        raise _failure("cannot read", source, where, error) from error
    is_file_like = local is not None and hasattr(local, "write")
    if is_file_like:
        try:
            sftp.getfo(source, local, callback=progress)
        except (OSError, paramiko.SSHException) as error:
            raise _failure("cannot read", source, where, error) from error
        return Result(local, local, source, remote, connection)
    tokens = {
        "host": connection.host,
        "user": connection.user,
        "port": connection.port,
        "dirname": posixpath.dirname(source),
        "basename": posixpath.basename(source),
        "target": connection.target_label(),
    }
    orig_local = local
    path = os.fspath(local) if local is not None else ""  # type: ignore[arg-type]
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
            sftp.getfo(source, sink, callback=progress)
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


__all__ = ["TEMP_PREFIX", "get", "open_sftp", "put"]
