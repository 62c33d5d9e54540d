"""Entering a target: its namespaces, root, cgroups and credentials (all modes).

``Target`` holds the descriptors of a target's namespaces and root, opened
through one ``/proc/PID`` descriptor while the host is visible; ``enter`` joins
the namespaces (two passes, like nsenter); ``enter_and_fork`` verifies, enters,
forks and sets up the child for ``exec`` and ``sftp``; ``do_exec`` is the
``exec`` mode. Also here: staying non-dumpable, closing host descriptors, and
reading the host kernel's files with a size cap.
"""

import ctypes
import encodings.idna  # noqa: F401
import errno
import fcntl
import os
import pwd
import signal
import struct
import sys

# After chroot() the host's standard library is out of reach, and Debian's
# python3 imports some modules lazily (os.execvpe -> warnings). Load them now.
import warnings  # noqa: F401

from .protocol import (
    CLONE_FLAGS,
    EXIT_SETUP_FAILED,
    MARKER_ERROR,
    MARKER_OK,
    MARKER_PID,
    MAX_FILE_BYTES,
    MODES,
    NS_GET_OWNER_UID,
    NS_TYPES,
    Failure,
    marker,
)

PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


class TooLarge(Exception):
    """A file was longer than the cap we read it with."""


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
    for name in NS_TYPES:
        try:
            result[name] = os.stat("/proc/self/ns/" + name).st_ino
        except OSError:
            pass
    return result


def owner_uid(fd):
    buf = fcntl.ioctl(fd, NS_GET_OWNER_UID, b"\0" * 4)
    return struct.unpack("I", buf)[0]


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
        for name in NS_TYPES:
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
        # An owner without a host account (a namespace made inside another one)
        # gets no groups at all: never root's.
        owner = owner_uid(fds["user"])
        try:
            entry = pwd.getpwuid(owner) if owner != 0 else None
        except KeyError:
            entry = None
        try:
            if entry is None:
                os.setgroups([])
            else:
                os.initgroups(entry.pw_name, entry.pw_gid)
        except OSError as e:
            raise Failure("setgroups", e.errno, "dropping the host's groups")
        set_non_dumpable()
    failed = []
    # Pass 1: everything but the user namespace, while we still hold our own
    # capabilities (root entering a userns container). EPERM is expected when
    # the capabilities we need only exist inside the target userns.
    for name in NS_TYPES:
        if name == "user" or name not in fds:
            continue
        err = setns(fds[name], CLONE_FLAGS[name])
        if err == errno.EPERM and new_userns:
            failed.append(name)
        elif err:
            raise Failure("setns", err, name)
    if new_userns:
        err = setns(fds["user"], CLONE_FLAGS["user"])
        if err:
            raise Failure("setns", err, "user")
        # New credentials: the kernel may have made us dumpable again, and
        # the container's root now has CAP_SYS_PTRACE over them.
        set_non_dumpable()
        # Pass 2: what needed the target's capabilities. EPERM here means the
        # namespace belongs to an ancestor userns (e.g. the host time namespace
        # that LXC shares): we could only have joined it in pass 1.
        for name in failed:
            err = setns(fds[name], CLONE_FLAGS[name])
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


def open_target(request):
    """Verify the target and enter its namespaces and cgroups (not yet its root).

    Returns ``(target, new_userns, inherited)``; on failure writes the ``err``
    marker and exits. The ``pid`` marker (ours, with our start time) is written
    once the target is verified.
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
        marker(nonce, MARKER_PID, os.getpid(), me)
        if request.get("cgroups", True):
            join_cgroups(pid)
        new_userns = enter(target)
    except Failure as f:
        target.close()
        marker(nonce, MARKER_ERROR, f.step, f.err, f.detail)
        os._exit(EXIT_SETUP_FAILED)
    sys.stdout.flush()
    sys.stderr.flush()
    return target, new_userns, inherited


def become(who, target, new_userns):
    """In a child of `open_target`: the target's root, ``who``'s credentials and directory.

    ``who`` has ``uid``, ``gid``, ``groups`` and ``cwd`` (a request). Closes
    nothing of ``target`` (the caller does).
    """
    # The setgroups rule of the namespace we are now in, as read on the host.
    may_setgroups = setgroups_allowed(target.setgroups if new_userns else target.own_setgroups)
    uid = who.get("uid")
    gid = who.get("gid")
    if new_userns:
        uid = 0 if uid is None else uid
        gid = 0 if gid is None else gid
    groups = who.get("groups")
    if groups is None and (uid is not None or gid is not None):
        groups = []
    try:
        os.fchdir(target.root)
        os.chroot(".")
    except OSError as e:
        raise Failure("chroot", e.errno, "/proc/%d/root" % target.pid)
    switch_credentials(uid, gid, groups, may_setgroups)
    try:
        os.chdir(exact(who.get("cwd") or "/"))
    except OSError:
        os.chdir(b"/")


def enter_and_fork(request):
    """Verify, enter, fork, set up the child; the parent never returns from here.

    All markers are written here or by the caller before anything of the
    container runs: ``pid`` (ours, with our start time) once the target is
    verified, then ``ok`` right before execve or ``err``.
    """
    nonce = request["nonce"]
    target, new_userns, inherited = open_target(request)
    child = os.fork()
    if child:
        target.close()
        close_fds(inherited)
        wait_and_relay(child, nonce)
    try:
        become(request, target, new_userns)
    finally:
        target.close()
    close_fds(inherited)


def exec_arguments(request):
    """The checked ``(argv, env)`` of a request, as exact bytes (after `become`).

    What execve would refuse is refused here, while an error can still be
    reported; a login shell that is missing falls back to ``fallback_shell``.
    """
    if not isinstance(request.get("argv"), list) or not request["argv"]:
        raise Failure("exec", errno.EINVAL, "argv must be a non-empty list")
    if not isinstance(request.get("env") or {}, dict):
        raise Failure("exec", errno.EINVAL, "env must be an object")
    env = dict((exact(k), exact(v)) for k, v in (request.get("env") or {}).items())
    argv = [exact(a) for a in request["argv"]]
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
    return argv, env


def default_signals():
    """Python ignores these; an ignored signal would survive execve."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)


def do_exec(request):
    nonce = request.get("nonce", "")
    try:
        enter_and_fork(request)
        # Exact bytes: what the client sent, whatever the host's locale.
        argv, env = exec_arguments(request)
        die_with_parent()
        default_signals()
        marker(nonce, MARKER_OK)
        os.execve(argv[0], argv, env)
    except Failure as f:
        marker(nonce, MARKER_ERROR, f.step, f.err, f.detail)
    except OSError as e:
        marker(nonce, MARKER_ERROR, "exec", e.errno, shown(e.filename or ""))
    except BaseException as e:  # a bad request: still a structured error, never a traceback
        marker(nonce, MARKER_ERROR, "exec", errno.EINVAL, "%s: %s" % (type(e).__name__, e))
    os._exit(EXIT_SETUP_FAILED)


MODES["exec"] = do_exec
