"""fabns remote helper: enter the namespaces of a process with setns(2).

This one file is sent over the SSH channel (``python3 -c``) and run on the
remote host; it is never written to disk there. It imports nothing from fabns
and uses only the standard library of Python 3.6 or newer (``ctypes`` stands
in for ``os.setns``, which Python only has from 3.12 on).

It is called with one argument, a base64 JSON request, and has three modes:

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

``sftp``
    Enter like ``exec``, then serve SFTP on stdin/stdout (``SftpServer``).

Threat model: the helper runs as host root (or as the unprivileged owner of
the container) and the container's root is hostile. It controls every file
in the container, can race and ptrace inside its namespaces. So: the process
is non-dumpable (re-asserted after every credential change) while it holds
host file descriptors; every descriptor except stdio is closed before
anything of the container runs or is read; files the container controls are
read with size caps, without following a final symlink, never from a FIFO or
device, under a deadline, and only ever passed on as data; nothing read after
the chroot decides anything; no host environment variable reaches the
command.
"""

import base64
import ctypes
import encodings.idna  # noqa: F401
import errno
import fcntl
import json
import os
import pwd
import select
import signal
import stat
import struct
import sys
import time

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
NS_GET_PARENT = 0xB702
NS_GET_OWNER_UID = 0xB704
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1
EXIT_SETUP_FAILED = 125

#: Most we read of one file the container controls (and of an environ).
MAX_FILE_BYTES = 1 << 20
#: What the probe child may put in its report, all files together (JSON-escaped
#: binary grows up to 6x, so this is counted after escaping).
REPORT_BUDGET = 6 << 20
#: Most the probe parent reads from the child's pipe.
MAX_REPORT_BYTES = 8 << 20
#: Deadline for the probe child that reads inside the container.
PROBE_SECONDS = 10
#: How a file the container controls is opened: no final symlink, no waiting
#: on a FIFO's writer, no controlling terminal.
SAFE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)


class Failure(Exception):
    """A setup step failed; carries the step, errno and detail for the client."""

    def __init__(self, step, err=0, detail=""):
        Exception.__init__(self, step)
        self.step = step
        self.err = err or 0
        self.detail = str(detail)


class TooLarge(Exception):
    """A file was longer than the cap we read it with."""


def marker(nonce, kind, *fields):
    """Write one marker line on fd 1, unbuffered."""
    text = "\x1ffabns:%s:%s" % (kind, nonce)
    for field in fields:
        text += ":" + str(field).replace("\n", " ").replace("\r", " ").replace("\x1f", " ")
    os.write(1, (text + "\n").encode("utf-8", "replace"))


def exact(value):
    """The bytes of a request string: lone surrogates (``\\udcXX``) are the original bytes.

    Passing bytes to the os functions keeps a host Python 3.6 under a C locale
    (ASCII filesystem encoding) from refusing or mangling non-ASCII.
    """
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def shown(value):
    """Printable form of bytes for an error detail."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


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
    """No ptrace, no /proc/PID/fd for anyone but host root.

    The kernel resets this on every credential change (to fs.suid_dumpable,
    which may be 1), so it is re-asserted after each one, until execve.
    """
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise Failure("prctl", ctypes.get_errno(), "PR_SET_DUMPABLE")


# -- reading files ------------------------------------------------------------


def read_fd(fd, cap):
    """At most ``cap`` bytes from ``fd``; TooLarge if there are more (reads cap+1 to tell)."""
    chunks = []
    total = 0
    while total <= cap:
        chunk = os.read(fd, min(65536, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > cap:
        raise TooLarge()
    return b"".join(chunks)


def read_host(path, dir_fd=None, cap=MAX_FILE_BYTES):
    """A file of the host kernel (procfs, cgroupfs) as text: (text, None) or (None, errno)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        return None, e.errno
    try:
        return read_fd(fd, cap).decode("utf-8", "surrogateescape"), None
    except TooLarge:
        return None, errno.EFBIG
    except OSError as e:
        return None, e.errno
    finally:
        os.close(fd)


def read_text(path, dir_fd=None):
    return read_host(path, dir_fd)[0]


def read_inside(path, cap=MAX_FILE_BYTES):
    """A file the container controls: (text, None) or (None, short reason).

    Only a regular file is read, never through a final symlink, and never
    more than ``cap`` bytes. lstat first so that a FIFO or device node is
    not even opened (opening a device can have effects); the fstat after
    opening makes sure it is still that same regular file.
    """
    raw = exact(path)
    try:
        before = os.lstat(raw)
    except OSError as e:
        return None, os.strerror(e.errno)
    if stat.S_ISLNK(before.st_mode):
        return None, "symbolic link"
    if not stat.S_ISREG(before.st_mode):
        return None, "not a regular file"
    try:
        fd = os.open(raw, SAFE_OPEN)
    except OSError as e:
        return None, "symbolic link" if e.errno == errno.ELOOP else os.strerror(e.errno)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            return None, "replaced while being opened"
        try:
            data = read_fd(fd, cap)
        except TooLarge:
            return None, "too large (over %d bytes)" % cap
        return data.decode("utf-8", "surrogateescape"), None
    except OSError as e:
        return None, os.strerror(e.errno)
    finally:
        os.close(fd)


# -- processes and namespaces -------------------------------------------------


def stat_fields(path, dir_fd=None):
    """Fields 3.. of a /proc/PID/stat (after the parenthesised comm, which may hold spaces)."""
    data, err = read_host(path, dir_fd)
    if data is None:
        raise OSError(err, os.strerror(err), path)
    return data[data.rindex(")") + 2 :].split()


def start_time(pid):
    """Field 22 of /proc/PID/stat; a zombie counts as gone (ValueError)."""
    fields = stat_fields("/proc/%d/stat" % pid)
    if fields[0] in ("Z", "X"):
        raise ValueError("process %d has exited" % pid)
    return fields[19]


def own_start_time():
    """Field 22 of /proc/self/stat: with our PID, what the client checks before signalling."""
    return stat_fields("/proc/self/stat")[19]


def die_with_parent():
    """SIGKILL this process if the helper parent dies (e.g. killed on the host).

    Set after the credential switch, which clears it, and checked against a
    parent that died before it was set.
    """
    parent = os.getppid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(EXIT_SETUP_FAILED)


def own_ns():
    result = {}
    for name in ORDER:
        try:
            result[name] = os.stat("/proc/self/ns/" + name).st_ino
        except OSError:
            pass
    return result


def owner_uid(fd):
    buf = fcntl.ioctl(fd, NS_GET_OWNER_UID, b"\0" * 4)
    return struct.unpack("I", buf)[0]


def userns_facts(fd, own_ino):
    """Who owns the user namespace ``fd``, and whether it descends from ours.

    ``owners``: the owner uid of the namespace, then of its parent, and so
    on up to (not including) our own user namespace, or as far as the kernel
    lets us walk (EPERM above our own, ENOTTY on old kernels). The client
    checks an ``owner=`` lookup against this.
    """
    own = own_ino is not None and os.fstat(fd).st_ino == own_ino
    owners = []
    reaches_own = False
    opened = []
    current = fd
    try:
        for _ in range(64):  # user namespaces nest at most 32 deep
            if own_ino is not None and os.fstat(current).st_ino == own_ino:
                reaches_own = True
                break
            try:
                owners.append(owner_uid(current))
                current = fcntl.ioctl(current, NS_GET_PARENT)
            except (OSError, IOError) as e:
                if e.errno in (errno.EPERM, errno.ENOTTY):
                    break
                raise
            opened.append(current)
    finally:
        close_fds(opened)
    return {"own": own, "owners": owners, "reaches_own": reaches_own}


def setgroups_allowed(text):
    """Contents of a setgroups file; a kernel without one allows setgroups."""
    return text is None or text.strip() == "allow"


class Target(object):
    """File descriptors of a target's namespaces and root, opened while the host is visible.

    Everything is opened through one descriptor of the target's /proc/PID
    directory: if the process dies, that descriptor stops working rather
    than pointing at a process that reuses the PID.
    """

    def __init__(self, pid):
        self.pid = pid
        self.base = "/proc/%d" % pid
        self.dir = None
        self.ns = {}
        self.root = None
        # setgroups of the target's user namespace and of ours, read on the
        # host before entering: after the chroot, /proc is the container's.
        self.setgroups = None
        self.own_setgroups = None

    def gone(self):
        try:
            if self.dir is None:
                start_time(self.pid)
            else:
                fields = stat_fields("stat", self.dir)
                if fields[0] in ("Z", "X"):
                    return True
        except (OSError, ValueError, IndexError):
            return True
        return False

    def _gone_or(self, e, path):
        if e.errno in (errno.ENOENT, errno.ESRCH) or self.gone():
            return Failure("gone", e.errno, "process %d has exited" % self.pid)
        return Failure("open", e.errno, path)

    def open_dir(self):
        """The /proc/PID descriptor alone: enough to read the target's procfs files."""
        if self.dir is None:
            try:
                self.dir = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise self._gone_or(e, self.base)
        if self.gone():
            raise Failure("gone", errno.ESRCH, "process %d has exited" % self.pid)

    def open(self):
        self.open_dir()
        for name in ORDER:
            try:
                self.ns[name] = os.open("ns/" + name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dir)
            except OSError as e:
                if e.errno == errno.ENOENT and not self.gone():
                    continue  # this kernel has no such namespace type
                raise self._gone_or(e, "%s/ns/%s" % (self.base, name))
        try:
            self.root = os.open(
                "root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.dir
            )
        except OSError as e:
            raise self._gone_or(e, self.base + "/root")
        self.setgroups = read_text("setgroups", self.dir)
        self.own_setgroups = read_text("/proc/self/setgroups")

    def inodes(self):
        return dict((name, os.fstat(fd).st_ino) for name, fd in self.ns.items())

    def verify(self, expected_start, expected_ns):
        """Fail unless the PID is still the process that was resolved.

        Checked after the descriptors are open, so they cannot belong to a
        process that took over the PID in between.
        """
        try:
            fields = stat_fields("stat", self.dir)
            if fields[0] in ("Z", "X"):
                raise ValueError("exited")
            started = fields[19]
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
        close_fds([fd for fd in list(self.ns.values()) + [self.root, self.dir] if fd is not None])
        self.ns = {}
        self.root = None
        self.dir = None


def join_cgroups(pid):
    """Move ourselves into the target's cgroups where the host lets us; best effort.

    /proc/PID/cgroup is the host kernel's, but the container names the
    cgroups below its own, and a name may hold a newline: every line must
    be ``ID:CONTROLLERS:/PATH`` or we join nothing.
    """
    mounts = []
    # the host's own mount table (ours, not the container's); it can be long
    for line in (read_host("/proc/self/mounts", cap=16 << 20)[0] or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            mounts.append((parts[2], parts[1], set(parts[3].split(","))))
    wanted = []
    for line in (read_text("/proc/%d/cgroup" % pid) or "").splitlines():
        try:
            hierarchy, controllers, path = line.split(":", 2)
        except ValueError:
            return []
        if not hierarchy.isdigit() or not path.startswith("/"):
            return []
        wanted.append((controllers, path))
    joined = []
    for controllers, path in wanted:
        for fstype, mountpoint, options in mounts:
            if controllers == "" and fstype == "cgroup2":
                pass
            elif controllers and fstype == "cgroup" and set(controllers.split(",")) <= options:
                pass
            else:
                continue
            try:
                fd = os.open(
                    exact(mountpoint + path + "/cgroup.procs"),
                    os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                )
                try:
                    os.write(fd, str(os.getpid()).encode())
                finally:
                    os.close(fd)
                joined.append(mountpoint + path)
            except OSError:
                pass
            break
    return joined


def enter(target):
    """Enter every namespace of the target that differs from ours (two passes, like nsenter).

    Returns True when a different user namespace was entered.
    """
    mine = own_ns()
    fds = dict(target.ns)
    for name in list(fds):
        if os.fstat(fds[name]).st_ino == mine.get(name):
            del fds[name]  # ours already; setns into our own userns is EINVAL
    new_userns = "user" in fds
    if new_userns and os.geteuid() == 0 and setgroups_allowed(target.own_setgroups):
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
        set_non_dumpable()
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
        # New credentials: the kernel may have made us dumpable again, and
        # the container's root now has CAP_SYS_PTRACE over them.
        set_non_dumpable()
        # Pass 2: what needed the target's capabilities. EPERM here means the
        # namespace belongs to an ancestor userns (e.g. the host time namespace
        # that LXC shares): we could only have joined it in pass 1.
        for name in failed:
            err = setns(fds[name], CLONE[name])
            if err and err != errno.EPERM:
                raise Failure("setns", err, name)
    return new_userns


def switch_credentials(uid, gid, groups, may_setgroups):
    """setgroups, then setgid, then setuid; groups=None keeps what we have.

    ``may_setgroups`` was decided on the host before entering (the target's
    /proc/PID/setgroups): where the user namespace has setgroups=deny (an
    unprivileged --map-root-user namespace) the kernel forbids setgroups;
    that is not an error, the set stays what the namespace owner had.
    """
    if groups is not None and may_setgroups:
        try:
            os.setgroups(groups)
        except OSError as e:
            raise Failure("setgroups", e.errno, ",".join(map(str, groups)))
        set_non_dumpable()
    if gid is not None:
        try:
            os.setresgid(gid, gid, gid)
        except OSError as e:
            raise Failure("setgid", e.errno, gid)
        set_non_dumpable()
    if uid is not None:
        try:
            os.setresuid(uid, uid, uid)
        except OSError as e:
            raise Failure("setuid", e.errno, uid)
        set_non_dumpable()


def inherited_fds():
    """Descriptors above stdio that we hold now (the listing's own is gone by now).

    Read from the host's /proc: call it before entering the mount namespace.
    """
    try:
        listed = [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2]
    except (OSError, ValueError):
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
    try:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
    except Exception:
        os._exit(EXIT_SETUP_FAILED)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def enter_and_fork(request):
    """Verify, enter, fork, set up the child; the parent never returns from here.

    All markers are written here or by the caller before anything of the
    container runs: ``pid`` (ours, with our start time) once the target is
    verified, then ``ok`` right before execve or ``err``.
    """
    nonce = request["nonce"]
    pid = int(request["pid"])
    inherited = inherited_fds()
    target = Target(pid)
    try:
        set_non_dumpable()
        me = own_start_time()
        target.open()
        target.verify(request.get("start_time"), request.get("ns"))
        marker(nonce, "pid", os.getpid(), me)
        if request.get("cgroups", True):
            join_cgroups(pid)
        new_userns = enter(target)
    except Failure as f:
        target.close()
        marker(nonce, "err", f.step, f.err, f.detail)
        os._exit(EXIT_SETUP_FAILED)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        target.close()
        close_fds(inherited)
        wait_and_relay(child, nonce)
    # The setgroups rule of the namespace we are now in, as read on the host.
    may_setgroups = setgroups_allowed(target.setgroups if new_userns else target.own_setgroups)
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
    switch_credentials(uid, gid, groups, may_setgroups)
    try:
        os.chdir(exact(request.get("cwd") or "/"))
    except OSError:
        os.chdir(b"/")
    close_fds(inherited)


def do_exec(request):
    nonce = request.get("nonce", "")
    try:
        enter_and_fork(request)
        # Exact bytes: what the client sent, whatever the host's locale.
        if not isinstance(request.get("argv"), list) or not request["argv"]:
            raise Failure("exec", errno.EINVAL, "argv must be a non-empty list")
        if not isinstance(request.get("env") or {}, dict):
            raise Failure("exec", errno.EINVAL, "env must be an object")
        env = dict((exact(k), exact(v)) for k, v in (request.get("env") or {}).items())
        argv = [exact(a) for a in request["argv"]]
        # What execve would refuse, refused now: after the ok marker it is too late.
        for key, value in env.items():
            if not key or b"=" in key or b"\0" in key or b"\0" in value:
                raise Failure("exec", errno.EINVAL, "bad environment variable %r" % shown(key))
        if any(b"\0" in arg for arg in argv):
            raise Failure("exec", errno.EINVAL, "NUL byte in argv")
        if not os.access(argv[0], os.X_OK):
            fallback = request.get("fallback_shell")
            fallback = exact(fallback) if fallback else None
            if fallback and argv[0] != fallback and os.access(fallback, os.X_OK):
                argv[0] = fallback
            else:
                raise Failure("exec", errno.ENOENT, shown(argv[0]))
        die_with_parent()
        # Python ignores these; an ignored signal would survive execve.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        marker(nonce, "ok")
        os.execve(argv[0], argv, env)
    except Failure as f:
        marker(nonce, "err", f.step, f.err, f.detail)
    except OSError as e:
        marker(nonce, "err", "exec", e.errno, shown(e.filename or ""))
    except Exception as e:  # a bad request: still a structured error, never a traceback
        marker(nonce, "err", "exec", errno.EINVAL, "%s: %s" % (type(e).__name__, e))
    os._exit(EXIT_SETUP_FAILED)


def do_sftp(request):
    """Enter like exec, then serve SFTP on stdin/stdout from inside the target."""
    nonce = request.get("nonce", "")
    try:
        enter_and_fork(request)
        server = SftpServer(0, 1, exact(request.get("temp_prefix", ".fabns-")))
    except Failure as f:
        marker(nonce, "err", f.step, f.err, f.detail)
        os._exit(EXIT_SETUP_FAILED)
    except OSError as e:
        marker(nonce, "err", "sftp", e.errno, shown(e.filename or ""))
        os._exit(EXIT_SETUP_FAILED)
    except Exception as e:
        marker(nonce, "err", "sftp", errno.EINVAL, "%s: %s" % (type(e).__name__, e))
        os._exit(EXIT_SETUP_FAILED)
    marker(nonce, "ok")
    try:
        server.serve()
    except Exception:
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
    #: commit@fabns: "leave this attribute as it is".
    KEEP = 0xFFFFFFFF
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
        elif name == b"commit@fabns":
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
        if uid != self.KEEP or gid != self.KEEP:
            os.fchown(fd, -1 if uid == self.KEEP else uid, -1 if gid == self.KEEP else gid)
        replaced = lstat_or_none(target)
        if replaced is not None and stat.S_ISDIR(replaced.st_mode):
            target = os.path.join(target, name)
            replaced = lstat_or_none(target)
        if mode == self.KEEP and replaced is not None and stat.S_ISREG(replaced.st_mode):
            mode = replaced.st_mode & 0o7777
        if mode != self.KEEP:
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


# -- probe ----------------------------------------------------------------------


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


def error_report(step, err, detail):
    return {"error": {"step": step, "errno": err or 0, "detail": str(detail)}}


def probe_child(target, paths, rfd, wfd, host_fds):
    """In the forked child: enter, chroot, close every host descriptor, read ``paths``.

    Never returns. The alarm bounds everything (a hostile FUSE mount, say).
    """
    try:
        os.close(rfd)
        signal.alarm(PROBE_SECONDS)
        try:
            enter(target)
            try:
                os.fchdir(target.root)
                os.chroot(".")
            except OSError as e:
                raise Failure("chroot", e.errno, "%s/root" % target.base)
            # Nothing of the host stays reachable, not even through a magic
            # link such as /proc/self/fd/N: only stdio and the result pipe.
            close_fds([fd for fd in host_fds if fd != wfd])
            target.ns, target.root, target.dir = {}, None, None
            files, errors = {}, {}
            budget = [REPORT_BUDGET]

            def fetch(path):
                text, why = read_inside(path)
                if text is not None:
                    cost = len(json.dumps(text))
                    if cost > budget[0]:
                        return None, "too large (over the probe's report budget)"
                    budget[0] -= cost
                return text, why

            for path in paths:
                files[path], why = fetch(path)
                if why is not None:
                    errors[path] = why
            result = {"files": files, "file_errors": errors}
            result["environ"], why = fetch("/proc/1/environ")
            if why is not None:
                result["environ_error"] = why
        except Failure as f:
            result = error_report(f.step, f.err, f.detail)
        except Exception as e:
            result = error_report(
                "inside", getattr(e, "errno", 0), "%s: %s" % (type(e).__name__, e)
            )
        data = json.dumps(result).encode("utf-8")
        while data:
            data = data[os.write(wfd, data) :]
    finally:
        os._exit(0)


def reap(child, seconds):
    """Wait for ``child`` at most ``seconds``, then SIGKILL it and wait a little more.

    Returns the wait status, or None if it would not die (we do not hang on it).
    """
    deadline = time.monotonic() + seconds
    killed = False
    while True:
        try:
            done, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() >= deadline:
            if killed:
                return None
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
            killed = True
            deadline = time.monotonic() + 5
        time.sleep(0.005)


def look_inside(target, paths):
    """Fork a child that enters the target and reads ``paths`` there, under a deadline."""
    host_fds = inherited_fds()  # from the host's /proc: after entering it is the container's
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        probe_child(target, paths, rfd, wfd, host_fds)
    os.close(wfd)
    chunks = []
    total = 0
    problem = None
    deadline = time.monotonic() + PROBE_SECONDS
    poller = select.poll()  # not select(): no FD_SETSIZE limit
    poller.register(rfd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                problem = "timeout"
                break
            if not poller.poll(max(1, int(left * 1000))):
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_REPORT_BYTES:
                problem = "too large"
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        status = reap(child, 0 if problem else 2)
    if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
        problem = "timeout"
    if problem == "timeout":
        return error_report(
            "inside",
            errno.ETIMEDOUT,
            "reading the container's files took over %d s" % PROBE_SECONDS,
        )
    if problem == "too large":
        return error_report(
            "inside", errno.EFBIG, "the report from inside is over %d bytes" % MAX_REPORT_BYTES
        )
    try:
        result = json.loads(b"".join(chunks).decode("utf-8"))
        if isinstance(result, dict):
            return result
    except Exception:
        pass
    return error_report("inside", 0, "child died")


def probe_target(pid, target, report, paths):
    t = Target(pid)
    try:
        set_non_dumpable()
        # Everything below is read through one /proc/PID descriptor: all of
        # it belongs to the process whose start time is reported.
        t.open_dir()
        fields = stat_fields("stat", t.dir)
        target["start_time"] = fields[19]
        target["comm"] = (read_text("comm", t.dir) or "").strip()
        target["setgroups"] = (read_text("setgroups", t.dir) or "").strip() or None
        target["uid_map"] = read_text("uid_map", t.dir)
        target["gid_map"] = read_text("gid_map", t.dir)
        # The host's view of the environment: the kernel's, but the container
        # wrote it; capped like a file. Too large is reported, never truncated.
        environ, err = read_host("environ", t.dir)
        if err is not None:
            target["environ_errno"] = err
        target["environ"] = environ
        t.open()
        target["ns"] = t.inodes()
        own_user = report["self_ns"].get("user")
        if "user" in t.ns:
            if target["ns"]["user"] != own_user:
                try:
                    target["userns_owner"] = owner_uid(t.ns["user"])
                except (OSError, IOError):
                    target["userns_owner"] = None
            try:
                target["userns"] = userns_facts(t.ns["user"], own_user)
            except (OSError, IOError):
                target["userns"] = None  # unknown: the client refuses an owner= lookup
        target["inside"] = look_inside(t, paths)
    except Failure as f:
        if f.step == "gone" and "start_time" not in target:
            target["exists"] = False
        else:
            target["error"] = error_report(f.step, f.err, f.detail)["error"]
    except (OSError, ValueError, IndexError):
        if "start_time" in target:
            raise
        target["exists"] = False  # no readable stat: as good as gone
    finally:
        t.close()


def do_probe(request):
    report = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "self_ns": own_ns(),
    }
    try:
        report["tools"] = dict((t, which(t)) for t in request.get("tools", []))
        pid = int(request["pid"])
        target = {"exists": os.path.isdir("/proc/%d" % pid)}
        report["target"] = target
        if target["exists"]:
            probe_target(pid, target, report, [str(p) for p in request.get("files", [])])
    except Exception as e:  # a structured error, never a traceback
        failed = error_report("probe", getattr(e, "errno", 0), "%s: %s" % (type(e).__name__, e))
        report.setdefault("target", {"exists": False}).update(failed)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


def main(argv):
    try:
        # surrogateescape: raw bytes survive as the same lone surrogates that
        # json's "\udcXX" escapes give, and go back out as the original bytes.
        request = json.loads(base64.b64decode(argv[1]).decode("utf-8", "surrogateescape"))
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
    except Exception as e:
        sys.stderr.write("fabns helper: bad request: %s\n" % e)
        return 2
    mode = request.get("mode")
    if mode == "probe":
        return do_probe(request)
    if mode == "exec":
        return do_exec(request)
    if mode == "sftp":
        return do_sftp(request)
    sys.stderr.write("fabns helper: unknown mode\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
