"""What the client and the helper both know: markers, exit codes, names, limits.

The client imports these constants (``fabns.markers``, ``fabns.transfer``,
``fabns.target``); the helper gets them as the first part of its program. So
importing this module must cost nothing: no side effects, nothing loaded.
"""

import os

#: Every marker line starts with this (``\\x1f`` is the unit separator byte);
#: see `fabns.markers` for the lines and what the client does with them.
MARKER_PREFIX = "\x1ffabns:"
MARKER_PREFIX_BYTES = MARKER_PREFIX.encode("ascii")
#: The kinds of marker line.
MARKER_PASSWORD = "pw"
MARKER_PID = "pid"
MARKER_OK = "ok"
MARKER_ERROR = "err"
MARKER_KINDS = (MARKER_PASSWORD, MARKER_PID, MARKER_OK, MARKER_ERROR)

#: Exit status of a helper (or guard) that failed before the command ran.
EXIT_SETUP_FAILED = 125

#: The SFTP extension that sets owner and mode through a handle, then renames.
COMMIT_EXTENSION = "commit@fabns"
#: commit@fabns: "leave this attribute as it is".
KEEP = 0xFFFFFFFF
#: Temporary files of a transfer start with this; the helper removes any it
#: created that are still there when its SFTP session ends.
TEMP_PREFIX = ".fabns-tmp-"

#: Most we read of one file the container controls (and of an environ).
MAX_FILE_BYTES = 1 << 20
#: Deadline for the probe child that reads inside the container.
PROBE_SECONDS = 10

# user first (it is entered on its own pass), mnt last: after it, paths are the target's.
NS_TYPES = ("user", "cgroup", "ipc", "uts", "net", "pid", "time", "mnt")
#: setns(2) nstype of each namespace type.
CLONE_FLAGS = {
    "user": 0x10000000,
    "cgroup": 0x02000000,
    "ipc": 0x08000000,
    "uts": 0x04000000,
    "net": 0x40000000,
    "pid": 0x20000000,
    "time": 0x00000080,
    "mnt": 0x00020000,
}
#: ioctl(2) requests on a namespace descriptor.
NS_GET_PARENT = 0xB702
NS_GET_OWNER_UID = 0xB704

#: Mode name -> its ``do_*`` function; the module that implements a mode adds
#: it, so an assembled program serves exactly the modes it contains.
MODES = {}


class Failure(Exception):
    """A setup step failed; carries the step, errno and detail for the client."""

    def __init__(self, step, err=0, detail=""):
        Exception.__init__(self, step)
        self.step = step
        self.err = err or 0
        self.detail = str(detail)


def marker(nonce, kind, *fields):
    """Write one marker line on fd 1, unbuffered."""
    text = MARKER_PREFIX + "%s:%s" % (kind, nonce)
    for field in fields:
        text += ":" + str(field).replace("\n", " ").replace("\r", " ").replace("\x1f", " ")
    os.write(1, (text + "\n").encode("utf-8", "replace"))


# An SFTP status for a failed system call carries its errno in the status's
# language-tag field, as "errno=N" (SFTP v3 has no field for it; the tag is free).
STATUS_ERRNO_TAG = "errno="


# -- the serve mode's frames ----------------------------------------------------
# After its ``ok`` marker, a ``serve`` helper reads and writes frames: a header
# (kind: 1 byte, stream: 4 bytes, payload length: 4 bytes, big-endian), then
# the payload. Stream 0 is the session itself. Only the helper writes frames to
# the client: what a command prints is always the payload of an output frame.
FRAME_HEADER = ">BII"
FRAME_HEADER_SIZE = 9
#: Largest payload of one frame.
FRAME_MAX = 1 << 18
#: Bytes of output one stream may have in flight before the client credits
#: them back (and of input, the other way round): per stream, so one slow
#: reader never stalls another.
STREAM_WINDOW = 1 << 20
# client -> helper
FRAME_OPEN = 1  # JSON: argv, env, cwd, uid, gid, groups, pty {cols, rows}, sftp
FRAME_STDIN = 2  # bytes for the command's stdin
FRAME_EOF = 3  # close the command's stdin
FRAME_SIGNAL = 4  # ASCII signal number, for the command's process group
FRAME_WINCH = 5  # ASCII "cols rows"
FRAME_CREDIT = 6  # ASCII count of output bytes the client has taken
# helper -> client
FRAME_STARTED = 16  # JSON: pid (the command runs)
FRAME_FAILED = 17  # JSON: step, errno, detail (it never ran)
FRAME_STDOUT = 18
FRAME_STDERR = 19
FRAME_STDIN_CREDIT = 20  # ASCII count of stdin bytes written to the command
FRAME_EXIT = 21  # JSON: status or signal, and lost (why the helper ended it)
FRAME_GONE = 22  # stream 0, JSON: detail -- the leader exited; the helper ends
