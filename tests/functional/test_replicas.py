"""``repocket.replicas.Replica`` (SPEC §8): a model's changes applied to a second real redis-server.

The replica must end identical to the primary (every record's hash and
ByteStreams, and exact indexes) after replays, out-of-order delivery, a gap
and a resync past the trimming; a callback replica sees each revision once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, errors
from repocket.changes import Change
from repocket.replicas import Replica
from repocket.server import RedisServer

pytestmark = pytest.mark.usefixtures("driver")


class Shop(ActiveRecord):
    name = attributes.Unicode(index=True)

    class Meta:
        changes = True


class Parcel(ActiveRecord):
    shop = attributes.Pointer(Shop, null=True)
    weight = attributes.Integer(index=True)
    label = attributes.Unicode(unique=True, null=True)
    log = attributes.ByteStream()

    class Meta:
        changes = True


class Beep(ActiveRecord):
    n = attributes.Integer(index=True)

    class Meta:
        changes = {"maxlen": 3}


@pytest.fixture(scope="module")
def second_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def target(second_server: RedisServer) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(second_server.url)
    client.flushall()
    yield client
    client.close()


def _same(primary: redis_py.Redis, target: redis_py.Redis, *models: Any) -> None:
    """Every record of ``models`` holds the same fields and ByteStreams on both, and the target's indexes are exact."""
    for model in models:
        prefix = model._meta.prefix
        records = {key for key in primary.keys(f"{prefix}:*") if key.count(b":") == prefix.count(":") + 1
                   and b":_" not in key}
        assert records == {key for key in target.keys(f"{prefix}:*") if key.count(b":") == prefix.count(":") + 1
                           and b":_" not in key}
        for key in records:
            mine, theirs = primary.hgetall(key), target.hgetall(key)
            mine.pop(b"_version", None)
            theirs.pop(b"_version", None)
            assert mine == theirs, key
            for name in model._meta.streams:
                assert primary.get(key + f":field:{name}".encode()) == target.get(key + f":field:{name}".encode())
        report = model.objects.using(target).check()
        assert report.ok, report


def _workload() -> tuple[Shop, list[Parcel]]:
    shop = Shop.objects.create(name="north")
    parcels = [Parcel.objects.create(shop=shop, weight=n, label=f"p{n}", log=b"in") for n in range(4)]
    parcels[0].weight = 10
    parcels[0].save()
    parcels[1].incr("weight", 5)
    parcels[2].append_log(b" out")
    parcels[3].delete()
    parcels[1].label = None
    parcels[1].save()
    return shop, parcels


def test_a_replica_ends_identical_to_the_primary(repocket_connection: redis_py.Redis,
                                                 target: redis_py.Redis) -> None:
    _workload()
    replicas = [Replica(Shop, target=target), Replica(Parcel, target=target)]
    for replica in replicas:
        assert replica.sync() > 0
    _same(repocket_connection, target, Shop, Parcel)
    assert [replica.sync() for replica in replicas] == [0, 0]  # (nothing new)
    assert Parcel.objects.using(target).filter(weight=6).count() == 1  # (its indexes answer queries)


def test_replays_and_out_of_order_delivery_change_nothing(repocket_connection: redis_py.Redis,
                                                          target: redis_py.Redis) -> None:
    _workload()
    shops, parcels = Replica(Shop, target=target), Replica(Parcel, target=target)
    shops.sync()
    changes = Parcel.objects.changes()
    shuffled = changes[:]
    random.Random(7).shuffle(shuffled)
    for change in shuffled + changes:  # out of order, then every change replayed
        parcels.apply(change)
    _same(repocket_connection, target, Shop, Parcel)
    assert parcels.gaps and parcels.skipped >= len(changes)
    again = Replica(Parcel, target=target)  # (the revisions applied are kept in the target)
    assert [again.apply(change) for change in changes] == [False] * len(changes)


def test_a_replica_behind_the_trimming_is_resynced(repocket_connection: redis_py.Redis,
                                                   target: redis_py.Redis) -> None:
    beeps = [Beep.objects.create(n=n) for n in range(3)]
    replica = Replica(Beep, target=target)
    replica.sync()
    for beep in beeps:
        beep.n += 10
        beep.save()
    beeps[0].delete()
    with pytest.raises(errors.ChangesTrimmedError):
        replica.sync()
    assert replica.resync() == 2
    _same(repocket_connection, target, Beep)
    Beep.objects.create(n=99)
    assert replica.sync() == 1
    _same(repocket_connection, target, Beep)


def test_a_callback_replica_sees_each_revision_once(repocket_connection: redis_py.Redis) -> None:
    seen: list[tuple[str, int]] = []

    def record(change: Change) -> None:
        seen.append((change.id, change.revision))

    _, parcels = _workload()
    replica = Replica(Parcel, callback=record)
    replica.sync()
    replica.sync()
    for change in Parcel.objects.changes():
        replica.apply(change)
    assert sorted(seen) == sorted((c.id, c.revision) for c in Parcel.objects.changes())
    assert len(seen) == len(set(seen))


@pytest.mark.sync_only  # (the CLI drives the sync executor)
def test_repocket_replicate_runs_a_replica_with_progress_and_lag(
        repocket_connection: redis_py.Redis, target: redis_py.Redis, second_server: RedisServer, redis_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from repocket.cli import main

    _workload()
    for model in ("Shop", "Parcel"):
        assert main(["--url", redis_url, "replicate", f"tests.functional.test_replicas.{model}",
                     "--to", second_server.url, "--once"]) == 0
    out = capsys.readouterr().out
    assert "Parcel: applied 9, skipped 0, gaps 0, lag " in out and out.strip().endswith("s")
    _same(repocket_connection, target, Shop, Parcel)
