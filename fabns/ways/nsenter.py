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

from fabns.quoting import env_assignment, join
from fabns.ways import Call, ShellWayIn

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


class Nsenter(ShellWayIn):
    """Enter with ``nsenter -t PID`` and explicit namespace flags."""

    name: ClassVar[str] = "nsenter"
    tools: ClassVar[tuple[str, ...]] = ("nsenter",)

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

    def command(self, call: Call) -> str:
        env = " ".join(env_assignment(k, v) for k, v in sorted(call.environment.items()))
        return self.host_script(
            f"env -i {env} {join(self.nsenter_argv(call))} -- {self.inner_command(call)}"
        )
