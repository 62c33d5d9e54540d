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
from fabns.host import owner_session_env
from fabns.quoting import check_env_name, join
from fabns.ways.base import Call, HostCommand, ShellWayIn


class LxcAttach(ShellWayIn):
    """Enter with ``lxc-attach``."""

    name: ClassVar[str] = "lxc-attach"
    tools: ClassVar[tuple[str, ...]] = ("lxc-attach", "readlink")
    error_prefix: ClassVar[str | None] = "lxc-attach: "

    def attach_argv(self, call: Call) -> tuple[list[str], list[str]]:
        """``lxc-attach`` and its wrappers (fixed), and its options for this call.

        The options -- the environment and credentials -- reach the host script
        as its arguments, so they are quoted once however long they are.
        """
        leader = self.leader
        if not leader.name or leader.engine != "lxc":
            raise InvalidArgument(
                f'method="lxc-attach" enters LXC containers only, not {leader.describe()}'
            )
        argv = [self.tool("lxc-attach"), "-n", leader.name, "--clear-env"]
        options: list[str] = []
        for key, value in sorted(call.environment.items()):
            options += ["--set-var", f"{check_env_name(key)}={value}"]
        creds = call.credentials
        if creds.uid is not None:
            options += ["-u", str(creds.uid)]
        if creds.gid is not None:
            options += ["-g", str(creds.gid)]
        owner = leader.owner
        if owner is None or owner == "root":
            return argv, options
        assert leader.owner_uid is not None  # set with the owner when the target resolved
        env = owner_session_env(leader.owner_uid, leader.owner_home)
        scope = [self.tool("systemd-run"), "--user", "--scope", "--quiet", "-p", "Delegate=yes"]
        argv = [*env, *scope, *argv]
        if owner != self.host_user:
            argv = [self.tool("runuser"), "-u", owner, "--", *argv]
        return argv, options

    def command(self, call: Call) -> HostCommand:
        argv, options = self.attach_argv(call)
        inside = ["--", "/bin/sh", "-c", self.INNER, "fabns"]
        # from /: an owner switched to with runuser may not enter our working directory
        tool = f'{join(argv)} "$@"'
        script = "cd / && " + self.host_script(tool)
        return HostCommand(script, (*options, *inside, *self.inner_args(call, environment=False)))
