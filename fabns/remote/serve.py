"""The ``serve`` mode: enter once, then run many commands over one channel.

The helper verifies and enters the target as ``exec`` does (markers ``pid``,
then ``ok``), then reads and writes frames (``protocol.FRAME_*``) on
stdin/stdout until the client goes away. Each ``OPEN`` forks a child that
takes the target's root, the requested credentials and directory, and execs
the command -- with its own pipes, or a pty it allocates *inside* the target
from the target's ``/dev/ptmx`` -- or serves SFTP (``sftp: true``).

One thread and one ``selectors`` loop (after setns into a PID namespace no
thread can be started). A command's output is read only while the client has
credit for it (`STREAM_WINDOW` per stream), so memory stays bounded and one
slow reader never stalls another; the last output of a command and its exit
status leave in one write.

Trust: only this process writes frames; what a command prints is only ever
the payload of an output frame. It signals only its own unreaped children's
process groups. It checks the leader (through the ``/proc/PID`` descriptor
opened on the host) before every command and every second: when the leader
has exited it ends every command, says ``GONE`` and exits. When the client
goes away (stdin closes) it kills every command's process group, lets SFTP
children clean up their temporary files, and exits.
"""

import array
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import stat
import struct
import termios
import time

from .enter import (
    become,
    close_fds,
    default_signals,
    die_with_parent,
    exact,
    exec_arguments,
    open_target,
    shown,
    stat_fields,
)
from .protocol import (
    EXIT_SETUP_FAILED,
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
    MARKER_ERROR,
    MARKER_OK,
    MODES,
    STREAM_WINDOW,
    TEMP_PREFIX,
    Failure,
    marker,
)
from .sftp import SftpServer

#: Seconds between two checks that the leader still lives.
LEADER_CHECK_SECONDS = 1.0
#: Seconds the helper waits for its children after the client went away.
CLOSING_SECONDS = 10.0
#: ioctl: the pty number of a pty master (only a master answers it).
TIOCGPTN = 0x80045430
#: /proc/PID/stat flags: the process is exiting.
PF_EXITING = 0x4


class Stream(object):
    """One command (or SFTP session) as the helper sees it."""

    def __init__(self, sid, op):
        self.sid = sid
        self.op = op
        self.pid = None
        self.control = None  # socket to the child until it execs
        self.control_data = b""
        self.stdin = None  # our end of its stdin (with a pty: the master)
        self.outputs = {}  # our fd -> FRAME_STDOUT / FRAME_STDERR
        self.pending = bytearray()  # stdin not yet written
        self.eof = False  # the client closed stdin
        self.credit = STREAM_WINDOW
        self.status = None  # waitpid status once reaped
        self.lost = None  # why the helper ended it
        self.pty = bool(op.get("pty"))
        self.sftp = bool(op.get("sftp"))

    def done(self):
        return self.status is not None and not self.outputs and self.control is None


class Server(object):
    def __init__(self, target, new_userns):
        self.target = target
        self.new_userns = new_userns
        self.selector = selectors.DefaultSelector()
        self.streams = {}
        self.by_pid = {}
        self.fds = {}  # our fd -> its stream
        self.masks = {}
        self.inbuf = bytearray()
        self.outbuf = []
        self.closing_since = None
        self.gone = False
        self.next_check = 0.0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        os.set_blocking(0, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.selector.register(0, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    # -- frames out ----------------------------------------------------------------

    def frame(self, kind, sid, payload=b""):
        self.outbuf.append(struct.pack(FRAME_HEADER, kind, sid, len(payload)) + payload)

    def frame_json(self, kind, sid, obj):
        self.frame(kind, sid, json.dumps(obj).encode("utf-8", "surrogateescape"))

    def flush(self):
        if not self.outbuf:
            return
        data = b"".join(self.outbuf)
        self.outbuf = []
        view = memoryview(data)
        while view:
            try:
                written = os.write(1, view)
            except InterruptedError:
                continue
            except OSError:
                self.start_closing()  # the client is gone: nobody reads any more
                return
            view = view[written:]

    # -- descriptors -------------------------------------------------------------------

    def watch(self, fd):
        """(Re)register ``fd`` for what its stream needs now."""
        stream = self.fds.get(fd)
        mask = 0
        if stream is not None:
            if fd in stream.outputs and (stream.credit > 0 or self.closing_since is not None):
                mask |= selectors.EVENT_READ
            if stream.control is not None and fd == stream.control.fileno():
                mask |= selectors.EVENT_READ
            if fd == stream.stdin and stream.pending:
                mask |= selectors.EVENT_WRITE
        current = self.masks.get(fd, 0)
        if mask == current:
            return
        if current == 0:
            self.selector.register(fd, mask)
        elif mask == 0:
            self.selector.unregister(fd)
        else:
            self.selector.modify(fd, mask)
        if mask:
            self.masks[fd] = mask
        else:
            self.masks.pop(fd, None)

    def add_fd(self, fd, stream):
        self.fds[fd] = stream
        self.watch(fd)

    def drop_fd(self, fd):
        """Forget ``fd`` as every role it had, and close it."""
        stream = self.fds.pop(fd, None)
        if self.masks.pop(fd, 0):
            self.selector.unregister(fd)
        if stream is not None:
            stream.outputs.pop(fd, None)
            if stream.stdin == fd:
                stream.stdin = None
        close_fds([fd])

    def all_fds(self):
        fds = list(self.fds) + [self.wake_r, self.wake_w]
        selector_fd = getattr(self.selector, "fileno", None)
        if selector_fd is not None:
            fds.append(selector_fd())
        return fds

    # -- the loop ----------------------------------------------------------------------

    def run(self):
        while True:
            now = time.monotonic()
            if now >= self.next_check:
                self.next_check = now + LEADER_CHECK_SECONDS
                self.check_leader()
            timeout = max(0.0, self.next_check - now)
            for key, mask in self.selector.select(timeout):
                self.handle(key.fd, mask)
            self.reap()
            self.finish()
            self.flush()
            if self.closing_since is not None:
                waited = time.monotonic() - self.closing_since
                if not self.streams or waited > 2 * CLOSING_SECONDS:
                    return  # (a process that left its group may still hold a pipe)
                if waited > CLOSING_SECONDS:
                    self.kill_all(signal.SIGKILL, sftp=True)

    def handle(self, fd, mask):
        if fd == 0:
            self.read_client()
            return
        if fd == self.wake_r:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except OSError:
                pass
            return
        stream = self.fds.get(fd)
        if stream is None:
            return
        if mask & selectors.EVENT_READ:
            if stream.control is not None and fd == stream.control.fileno():
                self.read_control(stream)
            elif fd in stream.outputs:
                self.read_output(stream, fd)
        if mask & selectors.EVENT_WRITE and self.fds.get(fd) is stream:
            self.write_input(stream)

    # -- the client --------------------------------------------------------------------

    def read_client(self):
        try:
            data = os.read(0, 1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(0)
            self.start_closing()
            return
        self.inbuf += data
        while len(self.inbuf) >= FRAME_HEADER_SIZE:
            kind, sid, size = struct.unpack_from(FRAME_HEADER, self.inbuf)
            if size > FRAME_MAX:  # only fabns's client writes here: it is broken
                self.selector.unregister(0)
                self.start_closing()
                return
            if len(self.inbuf) < FRAME_HEADER_SIZE + size:
                break
            payload = bytes(self.inbuf[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + size])
            del self.inbuf[: FRAME_HEADER_SIZE + size]
            try:
                self.dispatch(kind, sid, payload)
            except (ValueError, TypeError):
                pass  # a malformed number: only fabns's client writes here

    def dispatch(self, kind, sid, payload):
        if kind == FRAME_OPEN:
            self.open(sid, payload)
            return
        stream = self.streams.get(sid)
        if kind == FRAME_STDIN:
            if stream is None or stream.eof or stream.status is not None:
                self.frame(FRAME_STDIN_CREDIT, sid, str(len(payload)).encode())
            else:
                stream.pending += payload
                if stream.stdin is not None:
                    self.watch(stream.stdin)
        elif stream is None:
            return
        elif kind == FRAME_EOF:
            stream.eof = True
            self.close_stdin_if_drained(stream)
        elif kind == FRAME_SIGNAL:
            self.signal(stream, int(payload))
        elif kind == FRAME_WINCH:
            cols, rows = [int(n) for n in payload.split()]
            if stream.pty and stream.stdin is not None:
                try:
                    winsize = struct.pack("HHHH", rows, cols, 0, 0)
                    fcntl.ioctl(stream.stdin, termios.TIOCSWINSZ, winsize)
                except OSError:
                    pass
        elif kind == FRAME_CREDIT:
            stream.credit += int(payload)
            for fd in list(stream.outputs):
                self.watch(fd)

    # -- starting a command ------------------------------------------------------------

    def open(self, sid, payload):
        if sid == 0 or sid in self.streams:
            return
        try:
            op = json.loads(payload.decode("utf-8", "surrogateescape"))
            if not isinstance(op, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            self.frame_json(FRAME_FAILED, sid, ["open", errno.EINVAL, str(e)])
            self.frame_json(FRAME_EXIT, sid, {"lost": "failed"})
            return
        stream = Stream(sid, op)
        if self.gone or self.closing_since is not None or self.leader_gone():
            self.frame_json(FRAME_FAILED, sid, ["gone", errno.ESRCH, self.gone_detail()])
            self.frame_json(FRAME_EXIT, sid, {"lost": "gone"})
            return
        ours, theirs = [], []
        try:
            parent_control, child_control = socket.socketpair()
            ours.append(parent_control)
            theirs.append(child_control)
            stdio = None
            if not stream.pty:
                pipes = [os.pipe() for _ in range(3)]
                stdio = (pipes[0][0], pipes[1][1], pipes[2][1])
                ours += [pipes[0][1], pipes[1][0], pipes[2][0]]
                theirs += list(stdio)
            pid = os.fork()
        except OSError as e:
            close_all(ours + theirs)
            self.frame_json(FRAME_FAILED, sid, ["fork", e.errno, os.strerror(e.errno)])
            self.frame_json(FRAME_EXIT, sid, {"lost": "failed"})
            return
        if pid == 0:
            close_all(ours)
            self.child(stream, child_control, stdio)
        close_all(theirs)
        stream.pid = pid
        self.streams[sid] = stream
        self.by_pid[pid] = stream
        parent_control.setblocking(False)
        stream.control = parent_control
        self.add_fd(parent_control.fileno(), stream)
        if stdio is not None:
            stdin, stdout, stderr = ours[1:]
            for fd in (stdin, stdout, stderr):
                os.set_blocking(fd, False)
            stream.stdin = stdin
            stream.outputs[stdout] = FRAME_STDOUT
            stream.outputs[stderr] = FRAME_STDERR
            for fd in (stdin, stdout, stderr):
                self.add_fd(fd, stream)

    def child(self, stream, control, stdio):
        """In the forked child: become the caller, then exec (or serve SFTP). Never returns."""
        op = stream.op
        try:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                become(op, self.target, self.new_userns)
                self.target.close()
                if stdio is None:
                    stdio = self.open_pty(op.get("pty"), control)
                for number, fd in enumerate(stdio):
                    os.dup2(fd, number)
                keep = (0, 1, 2, control.fileno())
                close_fds([fd for fd in self.all_fds() + list(stdio) if fd not in keep])
                if stream.sftp:
                    control.close()
                    server = SftpServer(0, 1, exact(op.get("temp_prefix") or TEMP_PREFIX))
                    die_with_parent()
                    try:
                        server.serve()
                    except BaseException:
                        pass
                    finally:
                        server.cleanup()
                    os._exit(0)
                argv, env = exec_arguments(op)
                die_with_parent()
                default_signals()
                os.execve(argv[0], argv, env)
            except Failure as f:
                report = [f.step, f.err, f.detail]
            except OSError as e:
                report = ["exec", e.errno, shown(e.filename or e.strerror or "")]
            except BaseException as e:
                report = ["exec", errno.EINVAL, "%s: %s" % (type(e).__name__, e)]
            control.sendall(b"E" + json.dumps(report).encode("utf-8", "replace"))
        finally:
            os._exit(EXIT_SETUP_FAILED)

    @staticmethod
    def open_pty(size, control):
        """A pty from the target's own ``/dev/ptmx``, opened as the caller; the
        master goes to the helper, the slave becomes our controlling terminal."""
        try:
            master, slave = os.openpty()
        except OSError as e:
            raise Failure("pty", e.errno, "/dev/ptmx of the target")
        cols, rows = 80, 24
        if isinstance(size, dict):
            cols, rows = int(size.get("cols") or cols), int(size.get("rows") or rows)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        rights = array.array("i", [master])
        control.sendmsg([b"P"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights.tobytes())])
        os.close(master)
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        return (slave, slave, slave)

    def read_control(self, stream):
        size = array.array("i", [0]).itemsize
        try:
            data, ancillary, _, _ = stream.control.recvmsg(4096, socket.CMSG_SPACE(size))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        for level, kind, payload in ancillary:
            if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
                continue
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % size])
            for fd in fds:
                self.take_pty(stream, fd)
        if data:
            stream.control_data = (stream.control_data + data)[:65536]
            return
        # the child exec'd (the socket closed with it) or failed
        fd = stream.control.fileno()
        self.fds.pop(fd, None)
        if self.masks.pop(fd, 0):
            self.selector.unregister(fd)
        stream.control.close()
        stream.control = None
        report = stream.control_data.lstrip(b"P")
        if report.startswith(b"E"):
            try:
                step, err, detail = json.loads(report[1:].decode("utf-8", "replace"))
            except (ValueError, TypeError):
                step, err, detail = "exec", errno.EINVAL, "the child failed"
            self.frame_json(FRAME_FAILED, stream.sid, [str(step), int(err or 0), str(detail)])
            stream.lost = "failed"
        elif stream.pty and stream.stdin is None:
            self.frame_json(FRAME_FAILED, stream.sid, ["pty", errno.EIO, "no pty"])
            stream.lost = "failed"
            self.signal(stream, signal.SIGKILL)
        else:
            self.frame_json(FRAME_STARTED, stream.sid, {"pid": stream.pid})

    def take_pty(self, stream, fd):
        """Keep ``fd`` as ``stream``'s pty master if it is one (and none came before)."""
        try:
            st = os.fstat(fd)
            is_master = (
                stat.S_ISCHR(st.st_mode)
                and os.major(st.st_rdev) == 5
                and os.minor(st.st_rdev) == 2
                and fcntl.ioctl(fd, TIOCGPTN, b"\0\0\0\0") is not None
            )
        except OSError:
            is_master = False
        if not is_master or not stream.pty or stream.stdin is not None:
            close_fds([fd])
            return
        os.set_inheritable(fd, False)
        os.set_blocking(fd, False)
        stream.stdin = fd
        stream.outputs[fd] = FRAME_STDOUT
        self.add_fd(fd, stream)

    # -- streaming -----------------------------------------------------------------------

    def read_output(self, stream, fd):
        closing = self.closing_since is not None
        want = FRAME_MAX if closing else min(FRAME_MAX, stream.credit)
        try:
            data = os.read(fd, want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the pty's last slave closed
            data = b""
        if not data:
            if stream.pty and fd == stream.stdin:
                stream.pending = bytearray()
            self.drop_fd(fd)
            return
        if not closing:
            stream.credit -= len(data)
            self.frame(stream.outputs[fd], stream.sid, data)
            if stream.credit <= 0:
                self.watch(fd)

    def write_input(self, stream):
        fd = stream.stdin
        if fd is None or not stream.pending:
            return
        try:
            written = os.write(fd, stream.pending[:FRAME_MAX])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EPIPE: it stopped reading; what it never got is credited back
            written = len(stream.pending)
            if not stream.pty:
                self.drop_fd(fd)
        del stream.pending[:written]
        self.frame(FRAME_STDIN_CREDIT, stream.sid, str(written).encode())
        if stream.stdin is not None:
            self.watch(stream.stdin)
        self.close_stdin_if_drained(stream)

    def close_stdin_if_drained(self, stream):
        if stream.eof and not stream.pending and stream.stdin is not None and not stream.pty:
            self.drop_fd(stream.stdin)

    # -- ending ------------------------------------------------------------------------

    def signal(self, stream, signum):
        if stream.pid is not None and stream.status is None and 0 < signum < 65:
            try:
                os.killpg(stream.pid, signum)
            except OSError:
                try:  # it may not have called setsid() yet
                    os.kill(stream.pid, signum)
                except OSError:
                    pass

    def kill_all(self, signum, sftp):
        for stream in list(self.streams.values()):
            if sftp or not stream.sftp:
                self.signal(stream, signum)

    def reap(self):
        while self.by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            stream = self.by_pid.pop(pid, None)
            if stream is not None:
                stream.status = status

    def finish(self):
        for sid, stream in list(self.streams.items()):
            if not stream.done():
                continue
            if stream.stdin is not None:
                self.drop_fd(stream.stdin)
            status = stream.status
            if os.WIFSIGNALED(status):
                self.check_leader()  # killed with its PID namespace, when the leader died?
            result = {"lost": stream.lost}
            if os.WIFSIGNALED(status):
                result["signal"] = os.WTERMSIG(status)
            else:
                result["status"] = os.WEXITSTATUS(status)
            self.frame_json(FRAME_EXIT, sid, result)
            del self.streams[sid]

    def gone_detail(self):
        return "process %d has exited" % self.target.pid

    def leader_gone(self):
        """The leader exited, or is exiting (PF_EXITING: its PID namespace is being
        torn down, and the commands die before the leader is a zombie)."""
        if self.target.gone():
            return True
        try:
            flags = int(stat_fields("stat", self.target.dir)[6])
        except (OSError, ValueError, IndexError):
            return True
        return bool(flags & PF_EXITING)

    def check_leader(self):
        if self.gone or not self.leader_gone():
            return
        self.gone = True
        for stream in self.streams.values():
            if stream.lost is None:
                stream.lost = "gone"
        self.kill_all(signal.SIGKILL, sftp=True)
        self.frame_json(FRAME_GONE, 0, {"detail": self.gone_detail()})
        self.start_closing()

    def start_closing(self):
        """The client went away (or the leader did): end every command, then exit."""
        if self.closing_since is not None:
            return
        self.closing_since = time.monotonic()
        self.kill_all(signal.SIGKILL, sftp=False)
        for stream in list(self.streams.values()):
            stream.pending = bytearray()
            stream.eof = True
            if stream.sftp and stream.stdin is not None:
                self.drop_fd(stream.stdin)  # EOF: it removes its temporary files and exits
            for fd in list(stream.outputs):
                self.watch(fd)


def close_all(objects):
    """Close descriptors and sockets, ignoring errors."""
    for each in objects:
        if isinstance(each, socket.socket):
            each.close()
        else:
            close_fds([each])


def do_serve(request):
    nonce = request.get("nonce", "")
    target, new_userns, inherited = open_target(request)
    try:
        close_fds(inherited)
        die_with_parent()
        server = Server(target, new_userns)
    except Failure as f:
        marker(nonce, MARKER_ERROR, f.step, f.err, f.detail)
        os._exit(EXIT_SETUP_FAILED)
    except OSError as e:
        marker(nonce, MARKER_ERROR, "serve", e.errno, os.strerror(e.errno or errno.EIO))
        os._exit(EXIT_SETUP_FAILED)
    marker(nonce, MARKER_OK)
    server.run()
    os._exit(0)


MODES["serve"] = do_serve
