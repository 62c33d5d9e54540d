"""``method="nsenter"``: util-linux nsenter(1) on the host.

The host side is a short POSIX shell script with the fixed host environment:
it re-verifies the leader (start time and every namespace inode), reports
``pid`` and ``ok``, and only then execs ``/usr/bin/nsenter`` (absolute) with
the flags for exactly the namespaces that differ, ``--preserve-credentials``
where the target userns denies setgroups, and ``-S/-G`` for the credentials.
nsenter runs with nothing but the fixed environment. Inside, a fixed script
exports the container's environment (passed as arguments), changes to the
user's home and runs the command with the user's shell.

Safe where: entering namespaces *without* a new user namespace (root into a
plain container). When it joins a user namespace, util-linux forks into the
target PID namespace as the entering uid, dumpable and holding fds, before it
switches credentials: container root can ptrace that window. ``method="auto"``
therefore never picks nsenter for a target in another user namespace.
"""

from __future__ import annotations

from typing import ClassVar

from fabns.quoting import join
from fabns.ways.base import Call, HostCommand, ShellWayIn

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
    tools: ClassVar[tuple[str, ...]] = ("nsenter", "readlink", "setpriv")
    error_prefix: ClassVar[str | None] = "nsenter: "

    def nsenter_argv(self, call: Call) -> list[str]:
        leader = self.leader
        argv = [self.tool("nsenter"), "-t", str(leader.pid)]
        argv += [FLAGS[ns] for ns in leader.differing if ns in FLAGS]
        argv.append("-r")
        if leader.new_userns and leader.setgroups == "deny":
            argv.append("--preserve-credentials")
            if self.host_user == "root" or leader.elevated:
                # nsenter would keep host root's groups (0 among them) inside:
                # drop them first, as setgroups is denied in there
                argv = [self.tool("setpriv"), "--clear-groups", *argv]
        creds = call.credentials
        if creds.uid is not None:
            argv += ["-S", str(creds.uid)]
        if creds.gid is not None:
            argv += ["-G", str(creds.gid)]
        return argv

    def command(self, call: Call) -> HostCommand:
        tool = f"{join(self.nsenter_argv(call))} -- {self.inner_command()}"
        return HostCommand(self.host_script(tool), self.inner_args(call))
