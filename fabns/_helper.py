"""fabns remote helper: enter the namespaces of a process with setns(2).

This one file is sent over the SSH channel (``python3 -c``) and run on the
remote host; it is never written to disk there. It imports nothing from fabns
and uses only the standard library of Python 3.6 or newer (``ctypes`` stands
in for ``os.setns``, which Python only has from 3.12 on).

It is called with one argument, a base64 JSON request, and has two modes:

``probe``
    Report what the client needs to know about a target PID: whether it
    exists, its start time and namespace inodes, our own namespaces, the
    target's user-namespace facts, its environment, the tools on the host,
    and files read from *inside* the target (``/etc/passwd``...). The report
    is one JSON line on stdout.

``exec``
    Verify that the PID is still the leader that was resolved (same start
    time, same namespace inodes), enter its namespaces, root and cgroups,
    switch to the requested credentials and exec the command with exactly
    the environment given. Progress is reported with marker lines on
    stdout (see ``marker``) so the client can tell "entered, your command
    runs now" from "failed at step X with errno Y".

Security: the process is made non-dumpable before it opens anything of the
target, so root inside the container cannot ptrace it while it holds host
file descriptors; every descriptor except stdio is closed before the exec,
and no host environment variable reaches the command.
"""

import base64
import ctypes
import encodings.idna  # noqa: F401
import errno
import fcntl
import json
import os
import pwd
import signal
import struct
import sys

# After chroot() the host's standard library is out of reach, and Debian's
# python3 imports some modules lazily (os.execvpe -> warnings). Load them now.
import warnings  # noqa: F401

CLONE = {
    "user": 0x10000000,
    "cgroup": 0x02000000,
    "ipc": 0x08000000,
    "uts": 0x04000000,
    "net": 0x40000000,
    "pid": 0x20000000,
    "time": 0x00000080,
    "mnt": 0x00020000,
}
# user first (it is entered on its own pass), mnt last: after it, paths are the target's.
ORDER = ["user", "cgroup", "ipc", "uts", "net", "pid", "time", "mnt"]
NS_GET_OWNER_UID = 0xB704
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1
EXIT_SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class Failure(Exception):
    """A setup step failed; carries the step, errno and detail for the client."""

    def __init__(self, step, err=0, detail=""):
        Exception.__init__(self, step)
        self.step = step
        self.err = err or 0
        self.detail = str(detail)


def marker(nonce, kind, *fields):
    """Write one marker line on fd 1, unbuffered."""
    text = "\x1ffabns:%s:%s" % (kind, nonce)
    for field in fields:
        text += ":" + str(field).replace("\n", " ").replace("\r", " ")
    os.write(1, (text + "\n").encode("utf-8", "replace"))


def setns(fd, nstype):
    if hasattr(os, "setns"):
        try:
            os.setns(fd, nstype)  # novermin (guarded by hasattr)
        except OSError as e:
            return e.errno
        return 0
    if _libc.setns(fd, nstype) != 0:
        return ctypes.get_errno()
    return 0


def set_non_dumpable():
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise Failure("prctl", ctypes.get_errno(), "PR_SET_DUMPABLE")


def stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (after the parenthesised comm, which may hold spaces)."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()


def die_with_parent():
    """SIGKILL this process if the helper parent dies (e.g. killed on the host).

    Set after the credential switch, which clears it, and checked against a
    parent that died before it was set.
    """
    parent = os.getppid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(EXIT_SETUP_FAILED)


def start_time(pid):
    """Field 22 of /proc/PID/stat; a zombie counts as gone (ValueError)."""
    fields = stat_fields(pid)
    if fields[0] in ("Z", "X"):
        raise ValueError("process %d has exited" % pid)
    return fields[19]


def own_ns():
    result = {}
    for name in ORDER:
        try:
            result[name] = os.stat("/proc/self/ns/" + name).st_ino
        except OSError:
            pass
    return result


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def owner_uid(fd):
    buf = fcntl.ioctl(fd, NS_GET_OWNER_UID, b"\0" * 4)
    return struct.unpack("I", buf)[0]


def setgroups_allowed(path):
    text = read_text(path)
    return text is None or text.strip() == "allow"


class Target(object):
    """File descriptors of a target's namespaces and root, opened while the host is visible."""

    def __init__(self, pid):
        self.pid = pid
        self.base = "/proc/%d" % pid
        self.ns = {}
        self.root = None

    def gone(self):
        try:
            start_time(self.pid)
        except (OSError, ValueError, IndexError):
            return True
        return False

    def open(self):
        if self.gone():
            raise Failure("gone", errno.ESRCH, "process %d has exited" % self.pid)
        for name in ORDER:
            path = "%s/ns/%s" % (self.base, name)
            try:
                self.ns[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                if e.errno == errno.ENOENT and os.path.isdir(self.base):
                    continue  # this kernel has no such namespace type
                if e.errno in (errno.ENOENT, errno.ESRCH) or self.gone():
                    raise Failure("gone", e.errno, "process %d has exited" % self.pid)
                raise Failure("open", e.errno, path)
        try:
            self.root = os.open(self.base + "/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ESRCH) or self.gone():
                raise Failure("gone", e.errno, "process %d has exited" % self.pid)
            raise Failure("open", e.errno, self.base + "/root")

    def inodes(self):
        return dict((name, os.fstat(fd).st_ino) for name, fd in self.ns.items())

    def verify(self, expected_start, expected_ns):
        """Fail unless the PID is still the process that was resolved.

        Checked after the descriptors are open, so they cannot belong to a
        process that took over the PID in between.
        """
        try:
            started = start_time(self.pid)
        except (OSError, ValueError, IndexError):
            raise Failure("gone", errno.ESRCH, "process %d has exited" % self.pid)
        if expected_start is not None and started != str(expected_start):
            raise Failure("changed", 0, "process %d was restarted or the PID reused" % self.pid)
        if expected_ns:
            have = self.inodes()
            for name, ino in sorted(expected_ns.items()):
                if have.get(name) != ino:
                    raise Failure(
                        "changed", 0, "namespace %s of process %d changed" % (name, self.pid)
                    )

    def close(self):
        for fd in list(self.ns.values()) + [self.root]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.ns = {}
        self.root = None


def join_cgroups(pid):
    """Move ourselves into the target's cgroups where the host lets us; best effort."""
    mounts = []
    for line in (read_text("/proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            mounts.append((parts[2], parts[1], set(parts[3].split(","))))
    joined = []
    for line in (read_text("/proc/%d/cgroup" % pid) or "").splitlines():
        try:
            _, controllers, path = line.split(":", 2)
        except ValueError:
            continue
        for fstype, mountpoint, options in mounts:
            if controllers == "" and fstype == "cgroup2":
                pass
            elif controllers and fstype == "cgroup" and set(controllers.split(",")) <= options:
                pass
            else:
                continue
            try:
                with open(mountpoint + path + "/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
                joined.append(mountpoint + path)
            except (OSError, IOError):
                pass
            break
    return joined


def enter(target, request):
    """Enter every namespace of the target that differs from ours (two passes, like nsenter).

    Returns True when a different user namespace was entered.
    """
    mine = own_ns()
    fds = dict(target.ns)
    for name in list(fds):
        if os.fstat(fds[name]).st_ino == mine.get(name):
            del fds[name]  # ours already; setns into our own userns is EINVAL
    new_userns = "user" in fds
    if new_userns and os.geteuid() == 0 and setgroups_allowed("/proc/self/setgroups"):
        # Supplementary groups that would otherwise leak in from the host:
        # none if root owns the target userns, else the owner's own groups.
        owner = owner_uid(fds["user"])
        try:
            if owner == 0:
                os.setgroups([])
            else:
                entry = pwd.getpwuid(owner)
                os.initgroups(entry.pw_name, entry.pw_gid)
        except (OSError, KeyError):
            pass
    failed = []
    # Pass 1: everything but the user namespace, while we still hold our own
    # capabilities (root entering a userns container). EPERM is expected when
    # the capabilities we need only exist inside the target userns.
    for name in ORDER:
        if name == "user" or name not in fds:
            continue
        err = setns(fds[name], CLONE[name])
        if err == errno.EPERM and new_userns:
            failed.append(name)
        elif err:
            raise Failure("setns", err, name)
    if new_userns:
        err = setns(fds["user"], CLONE["user"])
        if err:
            raise Failure("setns", err, "user")
        # Pass 2: what needed the target's capabilities. EPERM here means the
        # namespace belongs to an ancestor userns (e.g. the host time namespace
        # that LXC shares): we could only have joined it in pass 1.
        for name in failed:
            err = setns(fds[name], CLONE[name])
            if err and err != errno.EPERM:
                raise Failure("setns", err, name)
    return new_userns


def switch_credentials(uid, gid, groups):
    """setgroups, then setgid, then setuid; groups=None keeps what we have.

    Where the user namespace has setgroups=deny (an unprivileged
    --map-root-user namespace) the kernel forbids setgroups; that is not an
    error, the set stays what the namespace owner had.
    """
    if groups is not None and setgroups_allowed("/proc/self/setgroups"):
        try:
            os.setgroups(groups)
        except OSError as e:
            raise Failure("setgroups", e.errno, ",".join(map(str, groups)))
    if gid is not None:
        try:
            os.setresgid(gid, gid, gid)
        except OSError as e:
            raise Failure("setgid", e.errno, gid)
    if uid is not None:
        try:
            os.setresuid(uid, uid, uid)
        except OSError as e:
            raise Failure("setuid", e.errno, uid)


def inherited_fds():
    """Descriptors above stdio that we were started with (the listing's own is gone by now)."""
    try:
        listed = [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2]
    except OSError:
        return []
    alive = []
    for fd in listed:
        try:
            os.fstat(fd)
            alive.append(fd)
        except OSError:
            pass
    return alive


def close_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def wait_and_relay(child, nonce):
    """Parent side: forward signals to the child, then exit as it did."""

    def relay(signum, frame):
        try:
            os.kill(child, signum)
        except OSError:
            pass

    for sig in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGCONT,
        signal.SIGWINCH,
    ):
        signal.signal(sig, relay)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except OSError as e:
            if e.errno != errno.EINTR:
                raise
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def enter_and_fork(request):
    """Verify, enter, fork, set up the child; the parent never returns from here."""
    nonce = request["nonce"]
    pid = int(request["pid"])
    inherited = inherited_fds()
    target = Target(pid)
    try:
        set_non_dumpable()
        target.open()
        target.verify(request.get("start_time"), request.get("ns"))
        marker(nonce, "pid", os.getpid())
        if request.get("cgroups", True):
            join_cgroups(pid)
        new_userns = enter(target, request)
    except Failure as f:
        target.close()
        marker(nonce, "err", f.step, f.err, f.detail)
        sys.exit(EXIT_SETUP_FAILED)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        target.close()
        close_fds(inherited)
        wait_and_relay(child, nonce)
    uid = request.get("uid")
    gid = request.get("gid")
    if new_userns:
        uid = 0 if uid is None else uid
        gid = 0 if gid is None else gid
    groups = request.get("groups")
    if groups is None and (uid is not None or gid is not None):
        groups = []
    try:
        os.fchdir(target.root)
        os.chroot(".")
    except OSError as e:
        raise Failure("chroot", e.errno, "/proc/%d/root" % pid)
    finally:
        target.close()
    switch_credentials(uid, gid, groups)
    try:
        os.chdir(request.get("cwd") or "/")
    except OSError:
        os.chdir("/")
    close_fds(inherited)


def do_exec(request):
    nonce = request["nonce"]
    try:
        enter_and_fork(request)
        env = dict((str(k), str(v)) for k, v in request.get("env", {}).items())
        argv = [str(a) for a in request["argv"]]
        if not os.access(argv[0], os.X_OK):
            fallback = request.get("fallback_shell")
            if fallback and argv[0] != fallback and os.access(fallback, os.X_OK):
                argv[0] = fallback
            else:
                raise Failure("exec", errno.ENOENT, argv[0])
        die_with_parent()
        marker(nonce, "ok")
        os.execve(argv[0], argv, env)
    except Failure as f:
        marker(nonce, "err", f.step, f.err, f.detail)
    except OSError as e:
        marker(nonce, "err", "exec", e.errno, e.filename or "")
    except Exception as e:  # a bad request: still a structured error, never a traceback
        marker(nonce, "err", "exec", errno.EINVAL, "%s: %s" % (type(e).__name__, e))
    os._exit(EXIT_SETUP_FAILED)


def do_sftp(request):
    """Enter like exec, then serve SFTP on stdin/stdout from inside the target."""
    nonce = request["nonce"]
    try:
        enter_and_fork(request)
    except Failure as f:
        marker(nonce, "err", f.step, f.err, f.detail)
        os._exit(EXIT_SETUP_FAILED)
    marker(nonce, "ok")
    server = SftpServer(0, 1, request.get("temp_prefix", ".fabns-"))
    try:
        server.serve()
    finally:
        server.cleanup()
    os._exit(0)


class SftpServer(object):
    """A small SFTP version 3 server, run inside the target after entering.

    It speaks to the client over two descriptors (stdin/stdout of the SSH
    channel), so paramiko's SFTPClient -- and through it Fabric's put/get --
    sees the container's filesystem with the container user's rights, with
    nothing installed in the container. Files opened for writing whose name
    starts with the temporary prefix are removed if the session ends before
    they were renamed into place.
    """

    OK, EOF_, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE = 0, 1, 2, 3, 4, 5
    OP_UNSUPPORTED = 8
    #: commit@fabns: "leave this attribute as it is".
    KEEP = 0xFFFFFFFF

    def __init__(self, rfd, wfd, temp_prefix):
        self.reader = os.fdopen(os.dup(rfd), "rb", 1 << 18)
        self.wfd = wfd
        self.temp_prefix = temp_prefix
        self.handles = {}
        self.next_handle = 0
        self.temporaries = set()
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
    def string(b):
        if not isinstance(b, bytes):
            b = b.encode("utf-8", "surrogateescape")
        return struct.pack(">I", len(b)) + b

    @staticmethod
    def take_u32(buf, pos):
        return struct.unpack(">I", buf[pos : pos + 4])[0], pos + 4

    @staticmethod
    def take_u64(buf, pos):
        return struct.unpack(">Q", buf[pos : pos + 8])[0], pos + 8

    def take_string(self, buf, pos):
        n, pos = self.take_u32(buf, pos)
        return buf[pos : pos + n], pos + n

    def take_path(self, buf, pos):
        raw, pos = self.take_string(buf, pos)
        return raw.decode("utf-8", "surrogateescape"), pos

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

    def status(self, rid, code, message=""):
        self.send(101, struct.pack(">II", rid, code) + self.string(message) + self.string(""))

    def error(self, rid, e):
        code = {
            errno.ENOENT: self.NO_SUCH_FILE,
            errno.EACCES: self.PERMISSION_DENIED,
            errno.EPERM: self.PERMISSION_DENIED,
        }.get(e.errno, self.FAILURE)
        self.status(rid, code, "%s [errno %s]" % (e.strerror or "error", e.errno))

    def handle_reply(self, rid, obj):
        self.next_handle += 1
        key = str(self.next_handle).encode()
        self.handles[key] = obj
        self.send(102, struct.pack(">I", rid) + self.string(key))

    # -- main loop ------------------------------------------------------------
    def serve(self):
        while True:
            head = self.read_exact(5)
            if head is None:
                return
            length, ptype = struct.unpack(">IB", head)
            body = self.read_exact(length - 1)
            if body is None:
                return
            if ptype == 1:  # INIT
                self.send(
                    2,
                    struct.pack(">I", 3)
                    + self.string("posix-rename@openssh.com")
                    + self.string("1")
                    + self.string("fsync@openssh.com")
                    + self.string("1"),
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
            except (struct.error, KeyError, ValueError, IndexError) as e:
                self.status(
                    rid,
                    self.BAD_MESSAGE if not isinstance(e, KeyError) else self.FAILURE,
                    "bad request: %s" % e,
                )

    def cleanup(self):
        for obj in list(self.handles.values()):
            if isinstance(obj, tuple):
                try:
                    os.close(obj[0])
                except OSError:
                    pass
        for path in self.temporaries:
            try:
                os.unlink(path)
            except OSError:
                pass

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
        fd = os.open(path, flags | os.O_CLOEXEC, attrs.get("mode", 0o666) & 0o7777)
        if pflags & 8 and os.path.basename(path).startswith(self.temp_prefix):
            self.temporaries.add(os.path.abspath(path))
        self.handle_reply(rid, (fd, path))

    def op_close(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        obj = self.handles.pop(key)
        if isinstance(obj, tuple):
            os.close(obj[0])
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
        data = os.pread(self.handles[key][0], min(length, 1 << 20), offset)
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
        fd = self.handles[key][0]
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
        self.reply_attrs(rid, os.fstat(self.handles[key][0]))

    def apply_attrs(self, target, attrs):
        if "size" in attrs:
            os.truncate(target, attrs["size"])
        if "uid" in attrs:
            os.chown(target, attrs["uid"], attrs["gid"])
        if "mode" in attrs:
            os.chmod(target, attrs["mode"] & 0o7777)
        if "atime" in attrs:
            os.utime(target, (attrs["atime"], attrs["mtime"]))

    def op_setstat(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        attrs, pos = self.take_attrs(b, pos)
        self.apply_attrs(path, attrs)
        self.status(rid, self.OK)

    def op_fsetstat(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        attrs, pos = self.take_attrs(b, pos)
        self.apply_attrs(self.handles[key][0], attrs)
        self.status(rid, self.OK)

    def op_opendir(self, rid, b, pos):
        path, pos = self.take_path(b, pos)
        names = os.listdir(path)
        self.handle_reply(rid, [path, [".", ".."] + names])

    def op_readdir(self, rid, b, pos):
        key, pos = self.take_string(b, pos)
        path, names = self.handles[key]
        if not names:
            self.status(rid, self.EOF_, "end of directory")
            return
        batch, self.handles[key][1] = names[:100], names[100:]
        out = b""
        count = 0
        for name in batch:
            try:
                st = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            out += self.string(name) + self.string(name) + self.pack_attrs(st)
            count += 1
        self.send(104, struct.pack(">II", rid, count) + out)

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
        real = os.path.realpath(path or ".")
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
            self.temporaries.discard(os.path.abspath(old))
            self.status(rid, self.OK)
        elif name == b"commit@fabns":
            self.commit(rid, b, pos)
        elif name == b"fsync@openssh.com":
            key, pos = self.take_string(b, pos)
            os.fsync(self.handles[key][0])
            self.status(rid, self.OK)
        else:
            self.status(rid, self.OP_UNSUPPORTED, "unsupported extension")

    def commit(self, rid, b, pos):
        """commit@fabns: set mode/owner of a finished temporary file and rename it into place.

        One round trip instead of four (stat, chmod, chown, rename). A target that
        is a directory receives the file under ``name``; mode KEEP copies the mode
        of the file being replaced (if any); uid/gid KEEP leave ownership alone.
        """
        temp, pos = self.take_path(b, pos)
        target, pos = self.take_path(b, pos)
        name, pos = self.take_path(b, pos)
        mode, pos = self.take_u32(b, pos)
        uid, pos = self.take_u32(b, pos)
        gid, pos = self.take_u32(b, pos)
        if os.path.isdir(target):
            target = os.path.join(target, name)
        if mode == self.KEEP:
            try:
                mode = os.stat(target).st_mode & 0o7777
            except OSError:
                mode = self.KEEP
        if mode != self.KEEP:
            os.chmod(temp, mode)
        if uid != self.KEEP or gid != self.KEEP:
            os.chown(temp, -1 if uid == self.KEEP else uid, -1 if gid == self.KEEP else gid)
            if mode != self.KEEP:
                os.chmod(temp, mode)  # chown clears setuid/setgid bits
        os.rename(temp, target)
        self.temporaries.discard(os.path.abspath(temp))
        self.send(201, struct.pack(">I", rid) + self.string(os.path.abspath(target)))


def which(name):
    for directory in (
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def look_inside(target, paths):
    """Fork a child that enters the target and reads ``paths`` there."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(rfd)
        result = {}
        try:
            enter(target, {})
            os.fchdir(target.root)
            os.chroot(".")
            result["files"] = dict((p, read_text(p)) for p in paths)
            result["environ"] = read_text("/proc/1/environ")
        except Failure as f:
            result["error"] = {"step": f.step, "errno": f.err, "detail": f.detail}
        except OSError as e:
            result["error"] = {"step": "chroot", "errno": e.errno, "detail": ""}
        data = json.dumps(result).encode("utf-8")
        while data:
            data = data[os.write(wfd, data) :]
        os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    os.waitpid(child, 0)
    try:
        return json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        return {"error": {"step": "inside", "errno": 0, "detail": "child died"}}


def do_probe(request):
    pid = int(request["pid"])
    report = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "self_ns": own_ns(),
        "tools": dict((t, which(t)) for t in request.get("tools", [])),
    }
    base = "/proc/%d" % pid
    target = {"exists": os.path.isdir(base)}
    report["target"] = target
    if target["exists"]:
        try:
            target["start_time"] = start_time(pid)
        except (OSError, ValueError, IndexError):
            target["exists"] = False
    if target["exists"]:
        target["comm"] = (read_text(base + "/comm") or "").strip()
        target["setgroups"] = (read_text(base + "/setgroups") or "").strip() or None
        target["uid_map"] = read_text(base + "/uid_map")
        target["gid_map"] = read_text(base + "/gid_map")
        environ = None
        try:
            with open(base + "/environ", "rb") as f:
                environ = f.read().decode("utf-8", "surrogateescape")
        except OSError as e:
            target["environ_errno"] = e.errno
        target["environ"] = environ
        t = Target(pid)
        try:
            set_non_dumpable()
            t.open()
            target["ns"] = t.inodes()
            if "user" in t.ns and t.inodes()["user"] != report["self_ns"].get("user"):
                try:
                    target["userns_owner"] = owner_uid(t.ns["user"])
                except OSError:
                    target["userns_owner"] = None
            target["inside"] = look_inside(t, request.get("files", []))
        except Failure as f:
            target["error"] = {"step": f.step, "errno": f.err, "detail": f.detail}
        finally:
            t.close()
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


def main(argv):
    try:
        request = json.loads(base64.b64decode(argv[1]).decode("utf-8"))
    except (IndexError, ValueError) as e:
        sys.stderr.write("fabns helper: bad request: %s\n" % e)
        return 2
    if request.get("mode") == "probe":
        return do_probe(request)
    if request.get("mode") == "exec":
        return do_exec(request)
    if request.get("mode") == "sftp":
        return do_sftp(request)
    sys.stderr.write("fabns helper: unknown mode\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
