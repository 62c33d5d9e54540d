"""`TargetSession.open` and the host scripts it builds, against a fake host (no SSH, no root).

What fabns decides from what the host side reports: which way in, whether an
owner's word holds, what runs on the host and with which environment. The
behaviour tests prove the same against a real sshd and real containers.
"""

from __future__ import annotations

import pytest
from fakehost import FakeHost, report

from fabns import NotALeader, PermissionDenied, TargetNotFound
from fabns.host import FIXED_ENV, HostResult
from fabns.markers import MarkerFilter
from fabns.session import TargetSession
from fabns.spec import TargetSpec

NONCE = "00ff00ff00ff00ff"


def open_session(host: FakeHost, **spec: object) -> TargetSession:
    return TargetSession.open(host, TargetSpec(**spec), NONCE, "python3")  # type: ignore[arg-type]


class TestChoosingTheWayIn:
    def test_plain_container_gets_nsenter(self):
        assert open_session(FakeHost(), pid=4242).way.name == "nsenter"

    def test_another_user_namespace_never_gets_nsenter(self):
        session = open_session(FakeHost(probe=report(userns=True)), pid=4242)
        assert session.way.name == "setns"

    def test_explicit_method_is_kept(self):
        session = open_session(FakeHost(probe=report(userns=True)), pid=4242, method="nsenter")
        assert session.way.name == "nsenter"


class TestOwnerLookups:
    LXC = {"lxc-ls": HostResult(0, "NAME PID\nweb  4242\n", "")}

    def test_leader_in_the_owners_user_namespace_is_entered(self):
        host = FakeHost(probe=report(userns=True, owners=[1001]), lookups=self.LXC)
        session = open_session(host, container="web", engine="lxc", owner="alice")
        assert (session.leader.owner, session.leader.owner_uid) == ("alice", 1001)

    @pytest.mark.parametrize(
        "probe",
        [report(userns=False), report(userns=True, owners=[0]), report(userns=True, owners=[])],
    )
    def test_a_lying_lookup_is_refused(self, probe):
        host = FakeHost(probe=probe, lookups=self.LXC)
        with pytest.raises(PermissionDenied, match="not in a user namespace of alice's"):
            open_session(host, container="web", engine="lxc", owner="alice")

    def test_root_runs_the_owners_lookup_without_sudo(self):
        host = FakeHost(probe=report(userns=True, owners=[1001]), lookups=self.LXC)
        open_session(host, container="web", engine="lxc", owner="alice")
        lookups = [(s, mode) for s, mode in host.ran if "-1fFNAME,PID" in s]
        assert lookups and all(mode == "none" and "sudo" not in s for s, mode in lookups)
        as_alice = "/usr/bin/runuser -u alice -- /usr/bin/env HOME=/home/alice"
        assert all(as_alice in s for s, _ in lookups)


class TestRefusals:
    def test_gone(self):
        probe = report()
        probe["target"]["exists"] = False
        with pytest.raises(TargetNotFound):
            open_session(FakeHost(probe=probe), pid=4242)

    def test_nothing_to_enter(self):
        probe = report()
        probe["target"]["ns"] = dict(probe["self_ns"])
        with pytest.raises(NotALeader):
            open_session(FakeHost(probe=probe), pid=4242)

    def test_permission(self):
        probe = report(error={"step": "open", "errno": 13, "detail": "/proc/4242/ns/mnt"})
        with pytest.raises(PermissionDenied):
            open_session(FakeHost(probe=probe), pid=4242)


class TestHostScripts:
    @pytest.mark.parametrize("method", ["nsenter", "setns"])
    def test_host_side_never_runs_with_the_containers_environment(self, method):
        probe = report()
        probe["target"]["environ"] = "LD_PRELOAD=/tmp/evil.so\0PATH=/evil\0"
        session = open_session(FakeHost(probe=probe), pid=4242, method=method)
        command = session.command_script("id", {"PATH": "/opt/bin"})
        wrapped = session.elevation.wrap(command.script, args=command.args, ask=NONCE)
        assert wrapped.startswith("exec /usr/bin/env -i " + " ".join(FIXED_ENV))
        assert "LD_PRELOAD" not in command.script
        if method == "nsenter":
            # the host side execs nsenter by absolute path; the variables are
            # arguments that only the inner shell exports, inside
            assert "exec /usr/bin/nsenter " in command.script
            assert "LD_PRELOAD=/tmp/evil.so" in command.args
            assert command.args.index("LD_PRELOAD=/tmp/evil.so") < command.args.index("--")

    def test_markers_come_from_the_host_side_before_entering(self):
        session = open_session(FakeHost(), pid=4242, method="nsenter")
        script = session.command_script("echo hi", {}).script
        ok = script.index(f"ok:{NONCE}")
        assert script.index(f"pid:{NONCE}") < ok < script.index("exec /usr/bin/nsenter")

    def test_entry_failure_translation(self):
        session = open_session(FakeHost(), pid=4242, method="nsenter")
        markers = MarkerFilter(NONCE)
        markers.feed(f"\x1ffabns:ok:{NONCE}\n".encode())
        text = "nsenter: reassociate to namespace 'ns/mnt' failed: Operation not permitted"
        failure = session.entry_failure(markers, 1, text)
        assert isinstance(failure, PermissionDenied)
        assert session.entry_failure(markers, 1, "grep: no such thing") is None
