"""repocket behind Redis Sentinel: a real primary, its replica and sentinels on loopback (SPEC §6).

``configure.connection_pool(sentinels=..., service_name=...)`` sends every
command to the primary the sentinels name, sync and async. After ``SENTINEL
FAILOVER`` writes go on: the old primary's connections are dropped when it
refuses a write as a replica, and the write is sent to the new primary. With
``wait_replicas=1`` no write that returned is lost: each was on a replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, configure, errors
from repocket.topology import LocalSentinel

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")

#: How long writes may keep failing after a failover before they must go on.
FAILOVER_BOUND = 30.0


class Ticket(ActiveRecord):
    seat = attributes.Unicode(index=True)
    sold = attributes.Integer(index=True)


def _client(address: tuple[str, int]) -> redis_py.Redis:
    return redis_py.Redis(host=address[0], port=address[1], socket_timeout=5)


@pytest.fixture
def sentinel_group(redis_sentinel: LocalSentinel) -> Iterator[LocalSentinel]:
    """The session's Sentinel group, its primary flushed; repocket pointed at it, then reset."""
    _client(redis_sentinel.primary_address()).flushall()
    yield redis_sentinel
    configure.reset()


def _configure(group: LocalSentinel, **options: Any) -> None:
    configure.connection_pool(sentinels=group.sentinels, service_name=group.service_name,
                              socket_timeout=5, **options)


def test_crud_goes_to_the_primary_sentinel_names(sentinel_group: LocalSentinel) -> None:
    _configure(sentinel_group)
    ticket = Ticket.objects.create(seat="A1", sold=0)
    ticket.incr("sold", 2)
    assert Ticket.objects.get(id=ticket.id).sold == 2
    assert [t.seat for t in Ticket.objects.filter(sold=2)] == ["A1"]
    primary = _client(sentinel_group.primary_address())
    assert primary.exists(ticket._key()) == 1
    ticket.delete()
    assert Ticket.objects.count() == 0 and primary.exists(ticket._key()) == 0


def test_with_wait_replicas_a_write_that_returned_is_on_the_replica(sentinel_group: LocalSentinel) -> None:
    _configure(sentinel_group, wait_replicas=1, wait_timeout=2)
    tickets = Ticket.objects.bulk_create([Ticket(seat=f"B{i}", sold=i) for i in range(20)])
    primary = sentinel_group.primary_address()
    replicas = [s for s in sentinel_group.servers if s.port != primary[1]]
    assert replicas
    for server in replicas:
        replica = _client(("127.0.0.1", server.port))  # (no WAIT here: the writes were waited for already)
        assert all(replica.exists(t._key()) for t in tickets)


def test_writes_go_on_after_a_failover_and_none_that_returned_is_lost(
        redis_sentinel_factory: Callable[..., LocalSentinel]) -> None:
    """Writes before, during and after SENTINEL FAILOVER: each either returned or raised, and with
    wait_replicas=1 every one that returned is on the new primary, with its index entries."""
    group = redis_sentinel_factory(sentinels=3)
    _configure(group, wait_replicas=1, wait_timeout=1, failover_timeout=FAILOVER_BOUND)
    done: list[Ticket] = []
    refused = 0

    def write(seat: str) -> None:
        nonlocal refused
        try:
            done.append(Ticket.objects.create(seat=seat, sold=1))
        except (errors.ReplicationError, errors.RedisConnectionError):
            refused += 1  # not acknowledged: it may or may not be there, nothing is promised

    for i in range(20):
        write(f"before-{i}")
    old = group.primary_address()
    new = group.failover()
    assert new != old
    deadline = time.monotonic() + FAILOVER_BOUND
    after = 0
    while after < 20:  # writes must go on: 20 more acknowledged within the bound
        assert time.monotonic() < deadline, f"writes did not go on after the failover ({refused} refused)"
        count = len(done)
        write(f"after-{after}-{refused}")
        after += len(done) - count
    assert group.primary_address() == new
    primary = _client(new)
    for ticket in done:
        assert primary.exists(ticket._key()) == 1, ticket
    found = {t.seat for t in Ticket.objects.filter(sold=1)}
    assert {t.seat for t in done} <= found


def test_a_write_that_missed_its_replicas_after_a_failover_sends_the_next_one_to_the_new_primary(
        redis_sentinel_factory: Callable[..., LocalSentinel]) -> None:
    """Right after SENTINEL FAILOVER the pool's idle connections still lead to the old primary, which
    has no replica left: the write raises ReplicationError, and the pool asks Sentinel again, so the
    next write goes to the new primary (where it raises too until a replica has joined it)."""
    group = redis_sentinel_factory()
    _configure(group, wait_replicas=1, wait_timeout=0.2)
    Ticket.objects.create(seat="warm-up", sold=0).incr("sold")  # connections open to the old primary
    old = group.primary_address()
    new = group.failover()
    with pytest.raises(errors.ReplicationError):
        Ticket.objects.create(seat="first", sold=1)
    second = Ticket(seat="second", sold=2)
    try:
        second.save()
    except errors.ReplicationError:
        pass  # the new primary has no replica until the old one joins it
    assert _client(new).exists(second._key()) == 1
    assert _client(old).exists(second._key()) == 0


@pytest.mark.slow
def test_a_write_refused_by_the_demoted_primary_is_sent_to_the_new_one(
        redis_sentinel_factory: Callable[..., LocalSentinel]) -> None:
    """Once Sentinel has made the old primary a replica, a write on a connection still open to it is
    refused (READONLY) before the script wrote anything; it is sent again and lands on the new primary."""
    group = redis_sentinel_factory()
    _configure(group)
    Ticket.objects.create(seat="warm-up", sold=0)  # an idle connection to the old primary stays in the pool
    old = group.primary_address()
    new = group.failover()
    deadline = time.monotonic() + FAILOVER_BOUND
    while _client(old).info("replication")["role"] != "slave":  # Sentinel reconfigures it some seconds later
        assert time.monotonic() < deadline, "the old primary was not made a replica"
        time.sleep(0.2)
    ticket = Ticket.objects.create(seat="after", sold=3)
    assert _client(new).exists(ticket._key()) == 1
    assert Ticket.objects.get(id=ticket.id).sold == 3
