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


def start_time(pid):
    """Field 22 of /proc/PID/stat (after the parenthesised comm, which may hold spaces)."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()[19]


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

    def open(self):
        if not os.path.isdir(self.base):
            raise Failure("gone", errno.ESRCH, "no process %d" % self.pid)
        for name in ORDER:
            path = "%s/ns/%s" % (self.base, name)
            try:
                self.ns[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                if e.errno == errno.ENOENT and os.path.isdir(self.base):
                    continue  # this kernel has no such namespace type
                if e.errno in (errno.ENOENT, errno.ESRCH):
                    raise Failure("gone", e.errno, "no process %d" % self.pid)
                raise Failure("open", e.errno, path)
        try:
            self.root = os.open(self.base + "/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
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
    try:
        return [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2]
    except OSError:
        return []


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


def do_exec(request):
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
        return EXIT_SETUP_FAILED
    uid = request.get("uid")
    gid = request.get("gid")
    if new_userns:
        uid = 0 if uid is None else uid
        gid = 0 if gid is None else gid
    groups = request.get("groups")
    if groups is None and (uid is not None or gid is not None):
        groups = []
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        target.close()
        close_fds(inherited)
        wait_and_relay(child, nonce)
    try:
        try:
            os.fchdir(target.root)
            os.chroot(".")
        except OSError as e:
            raise Failure("chroot", e.errno, "/proc/%d/root" % pid)
        target.close()
        switch_credentials(uid, gid, groups)
        env = dict((str(k), str(v)) for k, v in request.get("env", {}).items())
        cwd = request.get("cwd") or "/"
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
        argv = [str(a) for a in request["argv"]]
        if not os.access(argv[0], os.X_OK):
            fallback = request.get("fallback_shell")
            if fallback and argv[0] != fallback and os.access(fallback, os.X_OK):
                argv[0] = fallback
            else:
                raise Failure("exec", errno.ENOENT, argv[0])
        close_fds(inherited)
        marker(nonce, "ok")
        os.execve(argv[0], argv, env)
    except Failure as f:
        marker(nonce, "err", f.step, f.err, f.detail)
    except OSError as e:
        marker(nonce, "err", "exec", e.errno, e.filename or "")
    os._exit(EXIT_SETUP_FAILED)


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
    sys.stderr.write("fabns helper: unknown mode\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
