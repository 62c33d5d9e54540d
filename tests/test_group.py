"""Groups of containers: one result per container, one SSH transport per host."""

from __future__ import annotations

import io
import time

import pytest
from fabric import GroupResult
from fabric.exceptions import GroupException

from fabns import (
    Config,
    InvalidArgument,
    NamespaceConnection,
    NamespaceGroup,
    TargetNotFound,
    ThreadingNamespaceGroup,
)
from fabns.group import connection_for


def targets(harness, user: str, *keys: str) -> list[str]:
    port = harness.sshd.port
    return [f"{user}@127.0.0.1:{port}/pid:{harness.containers[k].leader_pid}" for k in keys]


def options(harness, **config: dict) -> dict:
    settings = {"run": {"in_stream": False}, **config}
    return {
        "connect_kwargs": harness.sshd.connect_kwargs(),
        "config": Config(overrides=settings),
    }


@pytest.fixture(params=[NamespaceGroup, ThreadingNamespaceGroup])
def kind(request):
    return request.param


class TestResults:
    def test_one_key_per_container_on_one_host(self, harness, containers, kind):
        names = [containers["plain"].name, containers["rootns"].name]
        with kind(*targets(harness, "root", "plain", "rootns"), **options(harness)) as group:
            results = group.run("hostname", hide=True)
            assert isinstance(results, GroupResult)
            assert list(results) == list(group) and len(results) == 2
            assert [r.stdout.strip() for r in results.values()] == names
            assert [r.connection for r in results.values()] == list(group)
            assert results[group[1]].stdout.strip() == containers["rootns"].name

    def test_sudo_runs_as_the_user_inside_each(self, harness, containers, kind):
        # root enters alice's container too; inside, 1001 is mapped there
        with kind(*targets(harness, "root", "plain", "alice-subid"), **options(harness)) as group:
            results = group.sudo("id -un; hostname", user="alice", hide=True)
            assert [r.stdout.split() for r in results.values()] == [
                ["alice", containers["plain"].name],
                ["alice", containers["alice-subid"].name],
            ]

    def test_same_container_as_two_users_is_two_members(self, harness, kind):
        plain = targets(harness, "root", "plain")[0]
        with kind(plain, {"host": plain, "uid": "alice"}, **options(harness)) as group:
            results = group.run("id -un", hide=True)
            assert [r.stdout.strip() for r in results.values()] == ["root", "alice"]

    def test_a_failing_member_is_its_exception_and_the_rest_still_run(self, harness, kind):
        good, other = targets(harness, "root", "plain", "rootns")
        bad = f"root@127.0.0.1:{harness.sshd.port}/pid:4194000"
        with kind(good, bad, other, **options(harness)) as group:
            with pytest.raises(GroupException) as caught:
                group.run("true", hide=True)
            result = caught.value.result
            assert list(result) == list(group)
            assert isinstance(result[group[1]], TargetNotFound)
            assert set(result.succeeded) == {group[0], group[2]}
            assert list(result.failed) == [group[1]]

    def test_a_command_failing_in_one_container(self, harness, kind):
        with kind(*targets(harness, "root", "plain", "rootns"), **options(harness)) as group:
            with pytest.raises(GroupException) as caught:
                group.run("test $(hostname) = fabns-plain", hide=True)
            assert caught.value.result[group[0]].exited == 0
            assert caught.value.result[group[1]].result.exited == 1


class TestOneTransportPerHost:
    def test_containers_on_one_host_share_one_handshake(self, harness, kind):
        with kind(*targets(harness, "root", "plain", "rootns"), **options(harness)) as group:
            group.run("true", hide=True)
            assert group[0].transport is group[1].transport
            assert group[0].transport.is_active()
            assert group[0].client is group[1].client

    def test_host_steps_are_shared_too(self, harness, kind):
        with kind(*targets(harness, "root", "plain", "rootns"), **options(harness)) as group:
            group.run("true", hide=True)
            assert group[0].host_session is group[1].host_session
            assert group[0].host_session.facts().uid == 0

    def test_another_sudo_password_keeps_its_own_host_steps(self):
        one = NamespaceConnection("bob@web1", container="a")
        other = NamespaceConnection(
            "bob@web1", container="b", config=Config(overrides={"sudo": {"password": "x"}})
        )
        with NamespaceGroup(one, other) as group:
            assert group[0].client is group[1].client
            assert group[0].host_session is not group[1].host_session

    def test_other_ssh_users_get_their_own_transport(self, harness):
        root = targets(harness, "root", "plain", "rootns")
        alice = targets(harness, "alice", "alice-maproot", "alice-subid")
        with ThreadingNamespaceGroup(*root, *alice, **options(harness)) as group:
            results = group.run("id -u", hide=True)
            assert [r.stdout.strip() for r in results.values()] == ["0", "0", "0", "0"]
            transports = {id(c.transport) for c in group}
            assert len(transports) == 2
            assert group[0].transport is group[1].transport
            assert group[2].transport is group[3].transport

    def test_closing_one_member_leaves_the_others_connected(self, harness):
        with NamespaceGroup(*targets(harness, "root", "plain", "rootns"), **options(harness)) as g:
            g.run("true", hide=True)
            transport = g[1].transport
            g[0].close()
            assert transport.is_active() and not g[0].is_connected
            assert g[1].run("hostname", hide=True).stdout.strip() == "fabns-rootns"
            assert g[0].run("hostname", hide=True).stdout.strip() == "fabns-plain"
            assert g[0].transport is transport  # reopened onto the shared transport
        assert not transport.is_active()

    def test_a_member_used_alone_first_is_joined_later(self, harness):
        plain, rootns = targets(harness, "root", "plain", "rootns")
        kwargs = options(harness)
        first = NamespaceConnection.from_spec(plain, **kwargs)
        first.run("true", hide=True)
        with NamespaceGroup(first, rootns, **kwargs) as group:
            group.run("true", hide=True)
            assert group[1].transport is first.transport
        assert not first.is_connected

    def test_share_transport_refuses_another_host_or_user(self, harness):
        a = NamespaceConnection("web1", container="app")
        with pytest.raises(InvalidArgument, match="cannot share"):
            a.share_transport(with_=NamespaceConnection("web2", container="app"))
        with pytest.raises(InvalidArgument, match="cannot share"):
            a.share_transport(with_=NamespaceConnection("alice@web1", container="app"))


class TestTransfers:
    def test_put_to_every_container_and_get_back_per_container(
        self, harness, containers, kind, tmp_path, monkeypatch
    ):
        monkeypatch.chdir(tmp_path)
        with kind(*targets(harness, "root", "plain", "rootns"), **options(harness)) as group:
            put = group.put(io.BytesIO(b"shared\n"), "/tmp/fabns-group.txt")
            assert [r.remote for r in put.values()] == ["/tmp/fabns-group.txt"] * 2
            group.run("hostname >> /tmp/fabns-group.txt", hide=True)
            got = group.get("/tmp/fabns-group.txt")
            for c, key in zip(group, ("plain", "rootns"), strict=True):
                name = containers[key].name
                expected = tmp_path / "127.0.0.1" / f"pid-{containers[key].leader_pid}"
                assert got[c].local == str(expected / "fabns-group.txt")
                assert (expected / "fabns-group.txt").read_text() == f"shared\n{name}\n"
            group.run("rm /tmp/fabns-group.txt", hide=True)

    def test_get_into_a_template_and_not_into_one_file_object(self, harness, kind, tmp_path):
        with kind(*targets(harness, "root", "plain", "rootns"), **options(harness)) as group:
            got = group.get("/etc/hostname", f"{tmp_path}/{{target}}.hostname")
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
                f"{c.target_spec.label}.hostname" for c in group
            )
            assert len(got) == 2
            with pytest.raises(InvalidArgument):
                group.get("/etc/hostname", io.BytesIO())


class TestBuilding:
    def test_named_groups_from_the_config(self, harness, containers, kind):
        plain, rootns = targets(harness, "root", "plain", "rootns")
        groups = {"web": [plain, "@db"], "db": [{"host": rootns, "method": "setns"}]}
        with kind("@web", **options(harness, fabns={"groups": groups})) as group:
            assert [c.method for c in group] == ["auto", "setns"]
            results = group.run("hostname", hide=True)
            assert [r.stdout.strip() for r in results.values()] == [
                containers["plain"].name,
                containers["rootns"].name,
            ]

    def test_specs_and_connections_are_members_too(self, harness):
        plain, rootns = targets(harness, "root", "plain", "rootns")
        kwargs = options(harness)
        c = connection_for(plain, **kwargs)
        with NamespaceGroup.from_connections([c, connection_for(rootns, **kwargs)]) as group:
            assert group[0] is c and len(group) == 2
            assert group[0].transport is None  # lazily opened, like Fabric's

    def test_bad_groups(self):
        with pytest.raises(InvalidArgument, match="twice"):
            NamespaceGroup("web1/app", "web1/app")
        with pytest.raises(InvalidArgument, match="names no target"):
            NamespaceGroup("web1")
        with pytest.raises(InvalidArgument, match="no group 'nope'"):
            NamespaceGroup("@nope")
        loop = Config(overrides={"fabns": {"groups": {"a": ["@b"], "b": ["@a"]}}})
        with pytest.raises(InvalidArgument, match="loop: @a -> @b -> @a"):
            NamespaceGroup("@a", config=loop)
        with pytest.raises(InvalidArgument, match="workers"):
            ThreadingNamespaceGroup("web1/app", workers=0)

    def test_threads_are_bounded(self, harness):
        plain, subid = targets(harness, "root", "plain", "alice-subid")
        members = [plain, subid, {"host": plain, "uid": "alice"}, {"host": subid, "uid": 1}]
        with ThreadingNamespaceGroup(*members, workers=2, **options(harness)) as group:
            group.run("true", hide=True)  # connect and resolve first
            started = time.monotonic()
            group.run("sleep 1", hide=True)
            bounded = time.monotonic() - started
            group.workers = 4
            started = time.monotonic()
            group.run("sleep 1", hide=True)
            unbounded = time.monotonic() - started
        assert bounded >= 2.0 > unbounded  # two rounds of two, then one of four
