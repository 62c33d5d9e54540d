"""``method="lxc-attach"``: LXC's own attach, also for containers of an unprivileged owner.

For root's containers this is ``lxc-attach -n NAME --clear-env`` with the
container's environment set explicitly (``--set-var``: data for lxc-attach to
set inside, never its own environment). For a container owned by another user
it is Consfigurator's route: ``systemd-run --user --scope --quiet -p
Delegate=yes lxc-attach ...`` run as the owner (``runuser`` when the SSH user
is someone else), so the attached process lands in a cgroup the owner may use.
The same guard as nsenter re-verifies the leader first, and every program is
run by absolute path with the fixed host environment. lxc-attach makes itself
non-dumpable while it attaches, so it is safe for user-namespaced containers.
"""

from __future__ import annotations

from typing import ClassVar

from fabns.errors import InvalidArgument
from fabns.host import ENV
from fabns.quoting import join
from fabns.ways import Call, ShellWayIn


class LxcAttach(ShellWayIn):
    """Enter with ``lxc-attach``."""

    name: ClassVar[str] = "lxc-attach"
    tools: ClassVar[tuple[str, ...]] = ("lxc-attach", "readlink")
    error_prefix: ClassVar[str | None] = "lxc-attach: "

    def attach_argv(self, call: Call) -> list[str]:
        leader = self.leader
        if not leader.name or leader.engine != "lxc":
            raise InvalidArgument(
                f'method="lxc-attach" enters LXC containers only, not {leader.describe()}'
            )
        argv = [self.tool("lxc-attach"), "-n", leader.name, "--clear-env"]
        for key, value in sorted(call.environment.items()):
            argv += ["--set-var", f"{key}={value}"]
        creds = call.credentials
        if creds.uid is not None:
            argv += ["-u", str(creds.uid)]
        if creds.gid is not None:
            argv += ["-g", str(creds.gid)]
        owner = leader.owner
        if owner is None or owner == "root":
            return argv
        uid = leader.owner_uid
        env = [
            ENV,
            f"HOME={leader.owner_home}",
            f"XDG_RUNTIME_DIR=/run/user/{uid}",
            f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus",
        ]
        scope = [self.tool("systemd-run"), "--user", "--scope", "--quiet", "-p", "Delegate=yes"]
        argv = [*env, *scope, *argv]
        if owner != self.host_user:
            argv = [self.tool("runuser"), "-u", owner, "--", *argv]
        return argv

    def command(self, call: Call) -> str:
        # from /: an owner switched to with runuser may not enter our working directory
        tool = f"{join(self.attach_argv(call))} -- {self.inner_command(call, environment=False)}"
        return "cd / && " + self.host_script(tool)
