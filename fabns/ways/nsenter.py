"""``method="nsenter"``: util-linux nsenter(1) on the host.

The host side is a short POSIX shell script: it re-verifies the leader (start
time and every namespace inode) and only then execs ``nsenter`` with the
flags for exactly the namespaces that differ, ``--preserve-credentials``
where the target userns denies setgroups, ``-S/-G`` for the credentials, and
an environment cleared with ``env -i`` down to the container's own. Inside,
a fixed script reports that it entered, changes to the user's home and runs
the command with the user's shell.
"""

from __future__ import annotations

from typing import ClassVar

from fabns.markers import PREFIX
from fabns.quoting import env_assignment, join, quote
from fabns.ways import Call, WayIn

FLAGS = {
    "user": "-U",
    "cgroup": "-C",
    "ipc": "-i",
    "uts": "-u",
    "net": "-n",
    "pid": "-p",
    "time": "-T",
    "mnt": "-m",
}
_MARK = "\\037" + PREFIX[1:].decode()


class Nsenter(WayIn):
    """Enter with ``nsenter -t PID`` and explicit namespace flags."""

    name: ClassVar[str] = "nsenter"
    tools: ClassVar[tuple[str, ...]] = ("nsenter",)
    #: Exit status of the host script when the leader fails verification.
    exit_changed: ClassVar[int] = 125

    def guard(self) -> str:
        """Shell that exits with an ``err`` marker unless the leader is unchanged."""
        leader = self.leader
        pid = int(leader.pid)
        names = sorted(leader.namespaces)
        links = " ".join(f"/proc/{pid}/ns/{n}" for n in names)
        expected = " ".join(f"{n}:[{leader.namespaces[n]}]" for n in names)
        fail = f"printf '{_MARK}err:{self.nonce}:%s:%s:%s\\n'"
        gone = quote(f"process {pid} has exited")
        return (
            f"s=$(cat /proc/{pid}/stat 2>/dev/null) || "
            f"{{ {fail} gone 3 {gone}; exit {self.exit_changed}; }}; "
            f"s=${{s##*) }}; set -- $s; case $1 in Z|X) {fail} gone 3 {gone}; "
            f"exit {self.exit_changed};; esac; "
            f'[ "${{20}}" = {quote(leader.start_time)} ] || '
            f"{{ {fail} changed 0 {quote(f'process {pid} was restarted or the PID reused')}; "
            f"exit {self.exit_changed}; }}; "
            f'set -- $(readlink {links} 2>/dev/null); [ "$*" = {quote(expected)} ] || '
            f"{{ {fail} changed 0 {quote(f'the namespaces of process {pid} changed')}; "
            f"exit {self.exit_changed}; }}"
        )

    def nsenter_argv(self, call: Call) -> list[str]:
        leader = self.leader
        argv = ["nsenter", "-t", str(leader.pid)]
        argv += [FLAGS[ns] for ns in leader.differing if ns in FLAGS]
        argv.append("-r")
        if leader.new_userns and leader.setgroups == "deny":
            argv.append("--preserve-credentials")
        creds = call.credentials
        if creds.uid is not None:
            argv += ["-S", str(creds.uid)]
        if creds.gid is not None:
            argv += ["-G", str(creds.gid)]
        return argv

    def inner_script(self) -> str:
        """Runs inside the target: report entry, go home, run the command."""
        return (
            f"printf '{_MARK}ok:{self.nonce}\\n'; "
            'cd -- "$2" 2>/dev/null || cd /; '
            's=$1; [ -x "$s" ] || s=/bin/sh; exec "$s" -c "$3"'
        )

    def command(self, call: Call) -> str:
        env = " ".join(env_assignment(k, v) for k, v in sorted(call.environment.items()))
        inner = join(["/bin/sh", "-c", self.inner_script(), "fabns"])
        inner += " " + join([call.shell, call.credentials.home, call.command])
        return (
            f"{self.guard()}; printf '{_MARK}pid:{self.nonce}:%s\\n' $$; "
            f"exec env -i {env} {join(self.nsenter_argv(call))} -- {inner}"
        )
