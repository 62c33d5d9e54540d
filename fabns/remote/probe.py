"""The ``probe`` mode: what the client needs to know about a target PID.

Read on the host through one ``/proc/PID`` descriptor, then, in a forked child
that enters the target and closes every host descriptor, from *inside* it
(``/etc/passwd``...), under a deadline. The report is one JSON line on stdout.
"""

import errno
import fcntl
import json
import os
import select
import signal
import stat
import sys
import time

from .enter import (
    Target,
    TooLarge,
    close_fds,
    enter,
    exact,
    inherited_fds,
    own_ns,
    owner_uid,
    read_fd,
    read_host,
    read_text,
    set_non_dumpable,
    stat_fields,
)
from .protocol import MAX_FILE_BYTES, MODES, NS_GET_PARENT, PROBE_SECONDS, Failure

#: What the probe child may put in its report, all files together (JSON-escaped
#: binary grows up to 6x, so this is counted after escaping).
REPORT_BUDGET = 6 << 20
#: Most the probe parent reads from the child's pipe.
MAX_REPORT_BYTES = 8 << 20
#: How a file the container controls is opened: no final symlink, no waiting
#: on a FIFO's writer, no controlling terminal.
SAFE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


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


MODES["probe"] = do_probe
