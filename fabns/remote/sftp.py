"""The ``sftp`` mode: enter like ``exec``, then serve SFTP from inside the target."""

import errno
import fcntl
import os
import stat
import struct

from .enter import enter_and_fork, exact, shown
from .protocol import (
    COMMIT_EXTENSION,
    EXIT_SETUP_FAILED,
    KEEP,
    MARKER_ERROR,
    MARKER_OK,
    MODES,
    STATUS_ERRNO_TAG,
    Failure,
    marker,
)


def do_sftp(request):
    """Enter like exec, then serve SFTP on stdin/stdout from inside the target."""
    nonce = request.get("nonce", "")
    try:
        enter_and_fork(request)
        server = SftpServer(0, 1, exact(request.get("temp_prefix", ".fabns-")))
    except Failure as f:
        marker(nonce, MARKER_ERROR, f.step, f.err, f.detail)
        os._exit(EXIT_SETUP_FAILED)
    except OSError as e:
        marker(nonce, MARKER_ERROR, "sftp", e.errno, shown(e.filename or ""))
        os._exit(EXIT_SETUP_FAILED)
    except BaseException as e:
        marker(nonce, MARKER_ERROR, "sftp", errno.EINVAL, "%s: %s" % (type(e).__name__, e))
        os._exit(EXIT_SETUP_FAILED)
    marker(nonce, MARKER_OK)
    try:
        server.serve()
    except BaseException:
        pass  # the channel broke: nobody left to tell
    finally:
        server.cleanup()
    os._exit(0)


class OpenFile(object):
    """An SFTP file handle: the descriptor and the path it was opened as."""

    __slots__ = ("fd", "path")

    def __init__(self, fd, path):
        self.fd = fd
        self.path = path


class OpenDir(object):
    """An SFTP directory handle: names still to send, then a scandir iterator."""

    __slots__ = ("path", "pending", "entries")

    def __init__(self, path):
        self.path = path
        self.pending = [b".", b".."]
        self.entries = os.scandir(path)

    def close(self):
        close = getattr(self.entries, "close", None)
        if close is not None:
            close()


class SftpServer(object):
    """A small SFTP version 3 server, run inside the target after entering.

    It speaks to the client over two descriptors (stdin/stdout of the SSH
    channel), so paramiko's SFTPClient -- and through it Fabric's put/get --
    sees the container's filesystem with the container user's rights, with
    nothing installed in the container. Paths are bytes throughout, exactly
    as sent. Files created under the temporary prefix are always new files
    (O_EXCL, no symlink followed) and are removed if the session ends before
    they were renamed into place.
    """

    OK, EOF_, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE = 0, 1, 2, 3, 4, 5
    OP_UNSUPPORTED = 8
    #: Longest packet we accept (paramiko sends 32 KiB writes).
    MAX_PACKET = 4 << 20

    def __init__(self, rfd, wfd, temp_prefix):
        self.reader = os.fdopen(os.dup(rfd), "rb", 1 << 18)
        self.wfd = wfd
        self.temp_prefix = temp_prefix
        self.handles = {}
        self.next_handle = 0
        # absolute path -> (st_dev, st_ino) of temporaries we created
        self.temporaries = {}
        self.write_errors = {}
        self.handlers = {
            3: self.op_open,
            4: self.op_close,
            5: self.op_read,
            6: self.op_write,
            7: self.op_lstat,
            8: self.op_fstat,
            9: self.op_setstat,
            10: self.op_fsetstat,
            11: self.op_opendir,
            12: self.op_readdir,
            13: self.op_remove,
            14: self.op_mkdir,
            15: self.op_rmdir,
            16: self.op_realpath,
            17: self.op_stat,
            18: self.op_rename,
            19: self.op_readlink,
            20: self.op_symlink,
            200: self.op_extended,
        }

    # -- wire format ----------------------------------------------------------
    def read_exact(self, n):
        data = self.reader.read(n)
        return data if len(data) == n else None

    def send(self, ptype, payload):
        self.write_all(memoryview(struct.pack(">IB", len(payload) + 1, ptype) + payload))

    def write_all(self, view):
        while view:
            view = view[os.write(self.wfd, view) :]

    @staticmethod
    def string(value):
        raw = exact(value)
        return struct.pack(">I", len(raw)) + raw

    @staticmethod
    def take_u32(buf, pos):
        return struct.unpack(">I", buf[pos : pos + 4])[0], pos + 4

    @staticmethod
    def take_u64(buf, pos):
        return struct.unpack(">Q", buf[pos : pos + 8])[0], pos + 8

    def take_string(self, buf, pos):
        n, pos = self.take_u32(buf, pos)
        if pos + n > len(buf):
            raise ValueError("truncated string")
        return bytes(buf[pos : pos + n]), pos + n

    def take_path(self, buf, pos):
        """A path: bytes, exactly as sent (no decoding, whatever the locale)."""
        return self.take_string(buf, pos)

    def take_attrs(self, buf, pos):
        flags, pos = self.take_u32(buf, pos)
        attrs = {}
        if flags & 1:
            attrs["size"], pos = self.take_u64(buf, pos)
        if flags & 2:
            attrs["uid"], pos = self.take_u32(buf, pos)
            attrs["gid"], pos = self.take_u32(buf, pos)
        if flags & 4:
            attrs["mode"], pos = self.take_u32(buf, pos)
        if flags & 8:
            attrs["atime"], pos = self.take_u32(buf, pos)
            attrs["mtime"], pos = self.take_u32(buf, pos)
        if flags & 0x80000000:
            count, pos = self.take_u32(buf, pos)
            for _ in range(count):
                _, pos = self.take_string(buf, pos)
                _, pos = self.take_string(buf, pos)
        return attrs, pos

    @staticmethod
    def pack_attrs(st):
        return struct.pack(
            ">IQIIIII",
            1 | 2 | 4 | 8,
            st.st_size,
            st.st_uid,
            st.st_gid,
            st.st_mode,
            int(st.st_atime) & 0xFFFFFFFF,
            int(st.st_mtime) & 0xFFFFFFFF,
        )

    def status(self, rid, code, message="", number=None):
        tag = "" if number is None else STATUS_ERRNO_TAG + str(number)
        self.send(101, struct.pack(">II", rid, code) + self.string(message) + self.string(tag))

    def error(self, rid, e):
        code = {
            errno.ENOENT: self.NO_SUCH_FILE,
            errno.EACCES: self.PERMISSION_DENIED,
            errno.EPERM: self.PERMISSION_DENIED,
        }.get(e.errno, self.FAILURE)
        self.status(rid, code, e.strerror or "error", e.errno)

    def handle_reply(self, rid, obj):
        self.next_handle += 1
        key = str(self.next_handle).encode()
        self.handles[key] = obj
        self.send(102, struct.pack(">I", rid) + self.string(key))

    def file_of(self, key):
        obj = self.handles.get(key)
        if not isinstance(obj, OpenFile):
            raise OSError(errno.EBADF, "invalid file handle")
        return obj

    # -- main loop ------------------------------------------------------------
    def serve(self):
        while True:
            head = self.read_exact(5)
            if head is None:
                return
            length, ptype = struct.unpack(">IB", head)
            if length < 5 or length > self.MAX_PACKET:
                return  # not SFTP (every request has at least a u32): end the session
            body = self.read_exact(length - 1)
            if body is None:
                return
            if ptype == 1:  # INIT
                self.send(
                    2,
                    struct.pack(">I", 3)
                    + self.string(b"posix-rename@openssh.com")
                    + self.string(b"1")
                    + self.string(b"fsync@openssh.com")
                    + self.string(b"1"),
                )
                continue
            rid = struct.unpack(">I", body[:4])[0]
            handler = self.handlers.get(ptype)
            if handler is None:
                self.status(rid, self.OP_UNSUPPORTED, "unsupported")
                continue
            try:
                handler(rid, body, 4)
            except (OSError, IOError) as e:
                self.error(rid, e)
            except (struct.error, ValueError, IndexError, KeyError) as e:
                self.status(rid, self.BAD_MESSAGE, "bad request: %s" % e)
            except Exception as e:
                self.status(rid, self.FAILURE, "%s: %s" % (type(e).__name__, e))

    def cleanup(self):
        for obj in list(self.handles.values()):
            try:
                if isinstance(obj, OpenFile):
                    os.close(obj.fd)
                elif isinstance(obj, OpenDir):
                    obj.close()
            except OSError:
                pass
        self.handles = {}
        for path, ident in self.temporaries.items():
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == ident:  # still ours, not a file put there since
                    os.unlink(path)
            except OSError:
                pass
        self.temporaries = {}

    # -- operations -----------------------------------------------------------
    def op_open(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        pflags, pos = self.take_u32(b, pos)
        attrs, pos = self.take_attrs(b, pos)
        flags = 0
        if pflags & 1 and pflags & 2:
            flags = os.O_RDWR
        elif pflags & 2:
            flags = os.O_WRONLY
        else:
            flags = os.O_RDONLY
        if pflags & 4:
            flags |= os.O_APPEND
        if pflags & 8:
            flags |= os.O_CREAT
        if pflags & 0x10:
            flags |= os.O_TRUNC
        if pflags & 0x20:
            flags |= os.O_EXCL
        temporary = bool(pflags & 8) and os.path.basename(path).startswith(self.temp_prefix)
        if temporary:
            # A temporary is always a new file of ours: never write through a
            # symlink, never into a file someone put there.
            flags |= os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        # O_NONBLOCK: a FIFO must not stall the session; only regular files are served.
        fd = os.open(
            path,
            flags | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY,
            attrs.get("mode", 0o666) & 0o7777,
        )
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, "is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except Exception:
            os.close(fd)
            raise
        if temporary:
            self.temporaries[os.path.abspath(path)] = (st.st_dev, st.st_ino)
        self.handle_reply(rid, OpenFile(fd, path))

    def op_close(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        obj = self.handles.pop(key, None)
        if obj is None:
            raise OSError(errno.EBADF, "invalid handle")
        if isinstance(obj, OpenFile):
            os.close(obj.fd)
        else:
            obj.close()
        failed = self.write_errors.pop(key, None)
        if failed is not None:
            # Pipelining clients may never read a failed WRITE's status:
            # report the first write error again when the file is closed.
            raise failed
        self.status(rid, self.OK)

    def op_read(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        offset, pos = self.take_u64(b, pos)
        length, pos = self.take_u32(b, pos)
        data = os.pread(self.file_of(key).fd, min(length, 1 << 20), offset)
        if not data and length:
            self.status(rid, self.EOF_, "end of file")
            return
        # header and data in one writev: no copy of the data
        header = struct.pack(">IBII", len(data) + 9, 103, rid, len(data))
        sent = os.writev(self.wfd, [header, data])
        if sent < len(header) + len(data):
            self.write_all(memoryview(header + data)[sent:])

    def op_write(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        offset, pos = self.take_u64(b, pos)
        data, pos = self.take_string(b, pos)
        fd = self.file_of(key).fd
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            self.write_errors.setdefault(key, e)
            raise
        self.status(rid, self.OK)

    def reply_attrs(self, rid, st):
        self.send(105, struct.pack(">I", rid) + self.pack_attrs(st))

    def op_lstat(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        self.reply_attrs(rid, os.lstat(path))

    def op_stat(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        self.reply_attrs(rid, os.stat(path))

    def op_fstat(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        if key in self.write_errors:
            raise self.write_errors[key]
        self.reply_attrs(rid, os.fstat(self.file_of(key).fd))

    def op_setstat(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        attrs, pos = self.take_attrs(b, pos)
        if "size" in attrs:
            os.truncate(path, attrs["size"])
        if "uid" in attrs:
            os.chown(path, attrs["uid"], attrs["gid"])
        if "mode" in attrs:
            os.chmod(path, attrs["mode"] & 0o7777)
        if "atime" in attrs:
            os.utime(path, (attrs["atime"], attrs["mtime"]))
        self.status(rid, self.OK)

    def op_fsetstat(self, rid, b, pos):
        """Attributes through the open descriptor: whatever the path now names."""
        key, pos = self.take_string(b, pos)
        attrs, pos = self.take_attrs(b, pos)
        fd = self.file_of(key).fd
        if "size" in attrs:
            os.ftruncate(fd, attrs["size"])
        if "uid" in attrs:
            os.fchown(fd, attrs["uid"], attrs["gid"])
        if "mode" in attrs:
            os.fchmod(fd, attrs["mode"] & 0o7777)  # after fchown, which clears setuid/setgid
        if "atime" in attrs:
            os.utime(fd, (attrs["atime"], attrs["mtime"]))
        self.status(rid, self.OK)

    def op_opendir(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        self.handle_reply(rid, OpenDir(path))

    def op_readdir(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        handle = self.handles.get(key)
        if not isinstance(handle, OpenDir):
            raise OSError(errno.EBADF, "invalid directory handle")
        out = []
        while len(out) < 100 and handle.pending:
            name = handle.pending.pop(0)
            try:
                out.append((name, os.lstat(os.path.join(handle.path, name))))
            except OSError:
                pass
        while len(out) < 100:
            entry = next(handle.entries, None)
            if entry is None:
                break
            try:
                out.append((entry.name, entry.stat(follow_symlinks=False)))
            except OSError:
                pass
        if not out:
            self.status(rid, self.EOF_, "end of directory")
            return
        body = b"".join(self.string(n) + self.string(n) + self.pack_attrs(st) for n, st in out)
        self.send(104, struct.pack(">II", rid, len(out)) + body)

    def op_remove(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        os.unlink(path)
        self.status(rid, self.OK)

    def op_mkdir(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        attrs, pos = self.take_attrs(b, pos)
        os.mkdir(path, attrs.get("mode", 0o777) & 0o7777)
        self.status(rid, self.OK)

    def op_rmdir(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        os.rmdir(path)
        self.status(rid, self.OK)

    def op_realpath(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        real = os.path.realpath(path or b".")
        self.send(
            104,
            struct.pack(">II", rid, 1)
            + self.string(real)
            + self.string(real)
            + struct.pack(">I", 0),
        )

    def op_rename(self, rid, b, pos):
        old, pos = self.take_path(b, pos)
        new, pos = self.take_path(b, pos)
        if os.path.lexists(new):
            self.status(rid, self.FAILURE, "destination exists")
            return
        os.rename(old, new)
        self.status(rid, self.OK)

    def op_readlink(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        target = os.readlink(path)
        self.send(
            104,
            struct.pack(">II", rid, 1)
            + self.string(target)
            + self.string(target)
            + struct.pack(">I", 0),
        )

    def op_symlink(self, rid, b, pos):
        # OpenSSH's argument order (target first) is what paramiko sends
        target, pos = self.take_path(b, pos)
        link, pos = self.take_path(b, pos)
        os.symlink(target, link)
        self.status(rid, self.OK)

    def op_extended(self, rid, b, pos):
        name, pos = self.take_string(b, pos)
        if name == b"posix-rename@openssh.com":
            old, pos = self.take_path(b, pos)
            new, pos = self.take_path(b, pos)
            os.rename(old, new)
            self.temporaries.pop(os.path.abspath(old), None)
            self.status(rid, self.OK)
        elif name == COMMIT_EXTENSION.encode("ascii"):
            self.commit(rid, b, pos)
        elif name == b"fsync@openssh.com":
            key, pos = self.take_string(b, pos)
            os.fsync(self.file_of(key).fd)
            self.status(rid, self.OK)
        else:
            self.status(rid, self.OP_UNSUPPORTED, "unsupported extension")

    def commit(self, rid, b, pos):
        """commit@fabns: owner and mode through the open handle, then rename into place.

        Request (after the extension name): string HANDLE, string TARGET,
        string NAME, u32 MODE, u32 UID, u32 GID (KEEP = 0xFFFFFFFF: leave as
        is). One round trip instead of four. Ownership and mode go through
        the descriptor, so they land on our file whatever the container did
        to the path. A TARGET that is a directory (lstat: a symlink to one is
        replaced, not followed) receives the file under NAME; mode KEEP copies
        the mode of the regular file being replaced, if any. The temporary is
        renamed only if its path still names our file. Reply: EXTENDED_REPLY
        with the absolute final path. The handle stays open (CLOSE it after).
        """
        key, pos = self.take_string(b, pos)
        target, pos = self.take_path(b, pos)
        name, pos = self.take_path(b, pos)
        mode, pos = self.take_u32(b, pos)
        uid, pos = self.take_u32(b, pos)
        gid, pos = self.take_u32(b, pos)
        handle = self.file_of(key)
        if key in self.write_errors:
            raise self.write_errors[key]  # never put a file with a failed write in place
        fd = handle.fd
        if uid != KEEP or gid != KEEP:
            os.fchown(fd, -1 if uid == KEEP else uid, -1 if gid == KEEP else gid)
        replaced = lstat_or_none(target)
        if replaced is not None and stat.S_ISDIR(replaced.st_mode):
            target = os.path.join(target, name)
            replaced = lstat_or_none(target)
        if mode == KEEP and replaced is not None and stat.S_ISREG(replaced.st_mode):
            mode = replaced.st_mode & 0o7777
        if mode != KEEP:
            os.fchmod(fd, mode & 0o7777)  # after fchown, which clears setuid/setgid
        ours = os.fstat(fd)
        there = lstat_or_none(handle.path)
        if there is None or (there.st_dev, there.st_ino) != (ours.st_dev, ours.st_ino):
            raise OSError(errno.EEXIST, "the temporary file was replaced")
        os.rename(handle.path, target)
        self.temporaries.pop(os.path.abspath(handle.path), None)
        self.send(201, struct.pack(">I", rid) + self.string(os.path.abspath(target)))


def lstat_or_none(path):
    try:
        return os.lstat(path)
    except OSError:
        return None


MODES["sftp"] = do_sftp
