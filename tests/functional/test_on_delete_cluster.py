"""``on_delete`` strategies on a Redis Cluster (SPEC §7): durable, idempotent deletes in steps.

The records a delete cascades to, sets to None or unlinks live in other slots,
so the delete writes an intent in its records' partition, then one call per
slot and step (repocket/plan/intents.py). These tests stop such a delete
after each of its write calls in turn, as a crashed process would, and check
that ``check()`` reports it, and that ``check(repair=True)`` or the next
delete completes it to the state an uninterrupted delete leaves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from repocket import ActiveRecord, attributes, errors, keys
from repocket.io import clients
from repocket.plan import intents, write
from repocket.plan.rounds import Eval

pytestmark = pytest.mark.sync_only  # (the cluster fixture drives the sync executor)


class Depot(ActiveRecord):
    name = attributes.Unicode(index=True)


class Truck(ActiveRecord):
    depot = attributes.Pointer(Depot, on_delete=attributes.CASCADE, related_name="trucks")
    plate = attributes.Unicode(index=True)


class Trip(ActiveRecord):
    truck = attributes.Pointer(Truck, on_delete=attributes.CASCADE, related_name="trips")
    log = attributes.ByteStream()


class Driver(ActiveRecord):
    depot = attributes.Pointer(Depot, null=True, on_delete=attributes.SET_NULL, related_name="drivers")
    name = attributes.Unicode(index=True)


class Route(ActiveRecord):
    depots = attributes.PointerList(Depot, on_delete=attributes.UNLINK, related_name="routes")
    name = attributes.Unicode(index=True)


class Permit(ActiveRecord):
    depot = attributes.Pointer(Depot, on_delete=attributes.PROTECT)


class _Crash(Exception):
    """What a process dying halfway looks like to the plan: it never gets its next reply."""


def _stopped_after(plan: Iterator[Any], calls: int) -> Iterator[Any]:
    """Forward ``plan``'s rounds, and stop it before its write call number ``calls + 1``."""
    reply, sent = None, 0
    while True:
        try:
            step = plan.send(reply)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Eval) and step.script == "write":
            if sent == calls:
                plan.close()
                raise _Crash()
            sent += 1
        reply = yield step


def _fleet() -> tuple[Depot, Depot]:
    """Two depots; the first has 2 trucks with 2 trips each, a driver and a route shared with the second."""
    doomed, kept = Depot.objects.create(name="north"), Depot.objects.create(name="south")
    for plate in ("A-1", "A-2"):
        truck = Truck.objects.create(depot=doomed, plate=plate)
        for number in range(2):
            Trip.objects.create(truck=truck, log=f"{plate} trip {number}".encode())
    Driver.objects.create(depot=doomed, name="ann")
    Route.objects.create(depots=[doomed, kept], name="coast")
    return doomed, kept


def _assert_deleted(doomed: Depot, kept: Depot, cluster: RedisCluster) -> None:
    assert not Depot.objects.filter(pk=doomed.pk).exists() and Depot.objects.filter(pk=kept.pk).exists()
    assert Truck.objects.count() == 0 and Trip.objects.count() == 0
    assert Driver.objects.get(name="ann").depot is None
    assert Route.objects.get(name="coast").depots == [Depot.objects.get(kept.pk)]
    for model in (Depot, Truck, Trip, Driver, Route):
        report = model.objects.check()
        assert report.ok, report
    assert not [key for node in cluster.get_primaries()
                for key in cluster.get_redis_connection(node).keys("*:field:log")]  # (the trips' ByteStreams)
    assert not _intents(cluster)


def _intents(cluster: RedisCluster) -> list[bytes]:
    return [key for node in cluster.get_primaries() for key in cluster.get_redis_connection(node).keys("*:_intents")
            if cluster.hlen(key)]


def test_a_delete_whose_strategies_cross_slots_does_all_they_say(cluster: RedisCluster) -> None:
    doomed, kept = _fleet()
    assert doomed.delete() == 1
    _assert_deleted(doomed, kept, cluster)


def test_a_delete_stopped_after_any_step_is_reported_and_repair_completes_it(
        cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intents, "STALE_AFTER", 0.0)  # (an intent is stale at once: the process "died")
    stop = 0
    while True:  # stopped after 0, 1, 2... write calls, until the delete needs no more
        doomed, kept = _fleet()
        try:
            clients.run(_stopped_after(write.delete(Depot._meta, [doomed]), stop), None)
            finished = True
        except _Crash:
            finished = False
            report = Depot.objects.check()
            where = keys.intents_key(Depot._meta.for_pk(doomed.pk).prefix)
            assert [key for key, _ in report.unfinished_deletes] == [where], stop
            assert not report.ok and Depot.objects.filter(pk=doomed.pk).exists()  # (the depot goes last)
            assert Depot.objects.check(repair=True).repaired
        _assert_deleted(doomed, kept, cluster)
        assert kept.delete() == 1
        Route.objects.all().delete()
        Driver.objects.all().delete()
        if finished:
            break
        stop += 1
    assert stop >= 4  # (the driver and the route, the trips, the trucks, the depot: a step each at least)


def _neighbour(of: Depot, name: str) -> Depot:
    """A new depot in the same partition as ``of``: the next delete there completes ``of``'s."""
    where = Depot._meta.for_pk(of.pk).prefix
    while True:
        pk = uuid.uuid1()
        if Depot._meta.for_pk(pk).prefix == where:
            return Depot.objects.create(id=pk, name=name)


def test_the_next_delete_completes_one_that_stopped(cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    doomed, kept = _fleet()
    with pytest.raises(_Crash):
        clients.run(_stopped_after(write.delete(Depot._meta, [doomed]), 2), None)
    assert Truck.objects.count() == 2 and _intents(cluster)
    other = _neighbour(doomed, "east")
    Truck.objects.create(depot=other, plate="E-1")
    other.delete()  # (the intent is younger than STALE_AFTER: a delete that may still run, left alone)
    assert Truck.objects.count() == 2 and _intents(cluster)
    monkeypatch.setattr(intents, "STALE_AFTER", 0.0)
    other = _neighbour(doomed, "west")
    Truck.objects.create(depot=other, plate="W-1")
    other.delete()  # completes the stopped one first
    _assert_deleted(doomed, kept, cluster)


def test_a_protected_target_is_refused_before_any_intent(cluster: RedisCluster) -> None:
    depot = Depot.objects.create(name="guarded")
    Truck.objects.create(depot=depot, plate="G-1")
    Permit.objects.create(depot=depot)
    with pytest.raises(errors.ProtectedError):
        depot.delete()
    assert Depot.objects.filter(pk=depot.pk).exists() and Truck.objects.count() == 1 and not _intents(cluster)
