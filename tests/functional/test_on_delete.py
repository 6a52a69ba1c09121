"""``on_delete`` strategies of a Pointer (SPEC §7): a delete and everything its strategy does, in one write call.

Every scenario runs on a real standalone server, through the sync and the
asyncio executor, and is checked against the stored keys and ``check()``;
the races run 8 writer threads that keep adding referrers against one
deleter, for each strategy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_py
from redis.cluster import RedisCluster

from repocket import ActiveRecord, attributes, errors
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")


class Project(ActiveRecord):
    name = attributes.Unicode(index=True)


class Build(ActiveRecord):
    project = attributes.Pointer(Project, on_delete=attributes.CASCADE, related_name="builds")
    number = attributes.Integer(index=True)


class Artifact(ActiveRecord):
    build = attributes.Pointer(Build, on_delete=attributes.CASCADE)
    blob = attributes.ByteStream()


DELETED: list[str] = []


class Log(ActiveRecord):
    """Deleted with its build, by a cascade: its hooks run too."""

    build = attributes.Pointer(Build, on_delete=attributes.CASCADE)
    line = attributes.Unicode()

    def before_delete(self) -> None:
        if self.line == "refuse":
            raise PermissionError("this log stays")

    def after_delete(self) -> None:
        DELETED.append(self.line)


class Vault(ActiveRecord):
    name = attributes.Unicode()


class Key(ActiveRecord):
    vault = attributes.Pointer(Vault, on_delete=attributes.PROTECT)


class Team(ActiveRecord):
    name = attributes.Unicode()


class Member(ActiveRecord):
    team = attributes.Pointer(Team, null=True, on_delete=attributes.SET_NULL)
    name = attributes.Unicode(index=True)


class Node(ActiveRecord):
    parent = attributes.Pointer("Node", null=True, on_delete=attributes.CASCADE)
    label = attributes.Unicode()


def _evals(requests: list[bytes]) -> int:
    return sum(request.count(b"EVALSHA") for request in requests)


def _clean(*models: Any) -> None:
    for model in models:
        report = model.objects.check()
        assert report.ok, report


def test_cascade_deletes_the_referrers_recursively_in_one_call(repocket_connection: redis_py.Redis) -> None:
    project, other = Project.objects.create(name="p"), Project.objects.create(name="q")
    builds = [Build.objects.create(project=project, number=n) for n in range(3)]
    kept = Build.objects.create(project=other, number=9)
    for build in builds + [kept]:
        Artifact.objects.create(build=build, blob=b"bytes of %d" % build.number)
    with count_round_trips() as trips:
        assert project.delete() == 1
    assert _evals(trips.requests) == 1  # the project, its builds and their artifacts: one script call
    assert [b.number for b in Build.objects.all()] == [9] and Artifact.objects.count() == 1
    assert Artifact.objects.get(build=kept).blob == b"bytes of 9"
    assert not repocket_connection.keys(f"*{builds[0].pk}*")  # no key names a deleted build, index or stream
    _clean(Project, Build, Artifact, Log)


def test_a_cascade_runs_the_hooks_of_the_records_it_deletes(repocket_connection: redis_py.Redis) -> None:
    DELETED.clear()
    project = Project.objects.create(name="hooked")
    build = Build.objects.create(project=project, number=1)
    Log.objects.create(build=build, line="one")
    refusing = Log.objects.create(build=build, line="refuse")
    with pytest.raises(PermissionError, match="this log stays"):
        project.delete()
    assert Project.objects.count() == Build.objects.count() == 1 and Log.objects.count() == 2  # nothing deleted
    refusing.line = "two"
    refusing.save()
    project.delete()
    assert sorted(DELETED) == ["one", "two"] and Log.objects.count() == 0


def test_protect_refuses_the_delete_and_names_the_referrers(repocket_connection: redis_py.Redis) -> None:
    vault = Vault.objects.create(name="v")
    key = Key.objects.create(vault=vault)
    with pytest.raises(errors.ProtectedError, match="on_delete=PROTECT") as info:
        vault.delete()
    assert info.value.referrers == [key._key()] and info.value.record == vault._key()
    assert Vault.objects.filter(pk=vault.pk).exists()
    key.delete()
    assert vault.delete() == 1
    _clean(Vault, Key)


def test_set_null_clears_the_pointer_and_moves_its_index_entry(repocket_connection: redis_py.Redis) -> None:
    team = Team.objects.create(name="t")
    ada, bob = Member.objects.create(team=team, name="ada"), Member.objects.create(team=None, name="bob")
    Team.objects.filter(pk=team.pk).delete()  # (a QuerySet delete follows the strategies too)
    assert {m.name: m.team for m in Member.objects.all()} == {"ada": None, "bob": None}
    assert sorted(m.name for m in Member.objects.filter(team__isnull=True)) == ["ada", "bob"]
    assert Member.objects.get(ada.pk).team is None and bob.team is None
    _clean(Team, Member)


def test_a_cycle_of_cascades_ends(repocket_connection: redis_py.Redis) -> None:
    root = Node.objects.create(label="root")
    child = Node.objects.create(parent=root, label="child")
    root.parent = child  # root -> child -> root
    root.save()
    Node.objects.create(label="alone")
    assert child.delete() == 1
    assert [n.label for n in Node.objects.all()] == ["alone"]
    _clean(Node)


def test_a_save_pointing_at_a_deleted_target_raises_and_writes_nothing(repocket_connection: redis_py.Redis) -> None:
    project = Project.objects.create(name="gone")
    stale = Project.objects.get(project.pk)
    project.delete()
    with pytest.raises(errors.BrokenReferenceError, match="deleted meanwhile"):
        Build.objects.create(project=stale, number=1)
    assert Build.objects.count() == 0 and not repocket_connection.keys("*Build*")


def _race(target: Any, make: Callable[[Any], Any], deleter: Callable[[Any], Any]) -> tuple[int, int]:
    """8 threads create referrers of ``target`` while one deletes it; (referrers made, saves refused)."""
    stop = threading.Event()
    made, refused = [0], [0]
    lock = threading.Lock()
    errors_seen: list[BaseException] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                make(target)
                with lock:
                    made[0] += 1
            except errors.BrokenReferenceError:
                with lock:
                    refused[0] += 1
                return  # the target is gone
            except BaseException as error:  # noqa: BLE001 - reported below
                errors_seen.append(error)
                return

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        while made[0] < 20:  # (let the writers get going)
            stop.wait(0.005)
        deleter(target)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors_seen == []
    return made[0], refused[0]


@pytest.mark.needs_server("fakeredis serves 8 racing writer threads in-process under the GIL: the delete starves")
@pytest.mark.sync_only  # (threads drive the sync executor)
def test_a_racing_save_never_leaves_a_pointer_to_nothing(repocket_connection: redis_py.Redis) -> None:
    project = Project.objects.create(name="raced")
    made, _ = _race(project, lambda p: Build.objects.create(project=p, number=1), lambda p: p.delete())
    assert made >= 20 and Build.objects.count() == 0  # every build saved went with its project
    _clean(Project, Build)

    team = Team.objects.create(name="raced")
    made, _ = _race(team, lambda t: Member.objects.create(team=t, name="m"), lambda t: t.delete())
    assert Member.objects.count() == made and Member.objects.filter(team__isnull=True).count() == made
    _clean(Team, Member)

    vault = Vault.objects.create(name="raced")

    def delete_protected(v: Any) -> None:
        with pytest.raises(errors.ProtectedError):
            v.delete()

    made, refused = _race(vault, lambda v: Key.objects.create(vault=v), delete_protected)
    assert refused == 0 and Key.objects.count() == made and Vault.objects.filter(pk=vault.pk).exists()
    _clean(Vault, Key)


@pytest.mark.sync_only
def test_on_a_cluster_a_delete_with_a_strategy_does_it_in_steps(cluster: RedisCluster) -> None:
    project = Project.objects.create(name="c")
    build = Build.objects.create(project=project, number=1)
    Artifact.objects.create(build=build, blob=b"bytes")
    assert project.delete() == 1  # (tests/functional/test_on_delete_cluster.py stops it halfway)
    assert Project.objects.count() == 0 and Build.objects.count() == 0 and Artifact.objects.count() == 0
    _clean(Project, Build, Artifact)


class Badge(ActiveRecord):
    """Spread over partitions, with a unique value (held by a claim) and a Pointer with a strategy aimed at it."""

    code = attributes.Unicode(unique=True)

    class Meta:
        partitions = 4


class Pin(ActiveRecord):
    badge = attributes.Pointer(Badge, on_delete=attributes.CASCADE)


def test_a_delete_with_a_strategy_releases_the_claims_of_what_it_deletes(repocket_connection: redis_py.Redis) -> None:
    lone, pinned = Badge.objects.create(code="lone"), Badge.objects.create(code="pinned")
    Pin.objects.create(badge=pinned)
    assert Badge(id=lone.pk).delete() == 1  # never loaded: its claim is read, then released
    pinned.delete()
    assert Badge.objects.count() == Pin.objects.count() == 0
    _clean(Badge)
    assert Badge.objects.create(code="lone").code == "lone"  # (free again)
