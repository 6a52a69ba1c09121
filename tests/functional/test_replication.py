"""``wait_replicas``: every write is followed by WAIT on its own connection, and too few replicas raise.

On the test server, which has no replica, ``WAIT 1`` answers 0 once its
timeout is up: the write is applied on the primary and ReplicationError says
it is not on a replica. The Sentinel tests (tests/functional/test_sentinel.py)
check the case with a real replica.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, configure, errors
from tests.roundtrips import count_round_trips

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")


class Parcel(ActiveRecord):
    label = attributes.Unicode(index=True)
    weight = attributes.Integer()


@pytest.fixture
def waiting(repocket_connection: redis_py.Redis, redis_url: str) -> Iterator[redis_py.Redis]:
    """The global pool with ``wait_replicas=1`` and a short timeout; the plain settings again afterwards."""
    Parcel.objects.create(label="warm-up", weight=0).incr("weight")  # (the server learns the scripts first)
    configure.connection_pool(url=redis_url, wait_replicas=1, wait_timeout=0.05)
    yield repocket_connection
    configure.connection_pool(url=redis_url)


def _names(trips: object) -> list[bytes]:
    return [name for name in trips.names() if name in (b"EVALSHA", b"WAIT")]  # type: ignore[attr-defined]


def test_a_write_is_followed_by_wait_on_the_same_request_stream(waiting: redis_py.Redis) -> None:
    with count_round_trips() as trips, pytest.raises(errors.ReplicationError):
        Parcel.objects.create(label="a", weight=1)
    assert _names(trips) == [b"EVALSHA", b"WAIT"]
    assert [int(c[1]) for c in trips.commands() if c[0] == b"WAIT"] == [1]


def test_a_write_no_replica_confirmed_raises_but_is_on_the_primary(waiting: redis_py.Redis, redis_url: str) -> None:
    """The message says what happened: applied on the primary, 0 of 1 replicas, and the key."""
    with pytest.raises(errors.ReplicationError, match=r"applied on the primary, but 0 of the 1 replicas") as info:
        Parcel.objects.create(label="b", weight=2)
    assert "test_replication.Parcel" in str(info.value)
    assert isinstance(info.value, errors.RedisConnectionError)
    configure.connection_pool(url=redis_url)
    assert [p.weight for p in Parcel.objects.filter(label="b")] == [2]


@pytest.mark.parametrize("write", ["save", "delete", "incr", "bulk_create", "update"])
def test_every_kind_of_write_waits(waiting: redis_py.Redis, redis_url: str, write: str) -> None:
    configure.connection_pool(url=redis_url)
    parcel = Parcel.objects.create(label="c", weight=3)
    configure.connection_pool(url=redis_url, wait_replicas=1, wait_timeout=0.05)
    actions = {
        "save": lambda: (setattr(parcel, "weight", 4), parcel.save()),
        "delete": parcel.delete,
        "incr": lambda: parcel.incr("weight", 1),
        "bulk_create": lambda: Parcel.objects.bulk_create([Parcel(label="d", weight=i) for i in range(3)]),
        "update": lambda: Parcel.objects.filter(label="c").update(weight=9),
    }
    with count_round_trips() as trips, pytest.raises(errors.ReplicationError):
        actions[write]()
    names = _names(trips)
    assert names and names[-1] == b"WAIT" and names.count(b"WAIT") == names.count(b"EVALSHA")


def test_without_wait_replicas_no_wait_is_sent(repocket_connection: redis_py.Redis) -> None:
    with count_round_trips() as trips:
        Parcel.objects.create(label="e", weight=5).delete()
    assert b"WAIT" not in trips.names()


@pytest.mark.parametrize("options", [{"wait_replicas": -1}, {"wait_replicas": 1.5}, {"wait_replicas": True},
                                     {"wait_timeout": 0}, {"failover_timeout": -1},
                                     {"wait_replicas": 1, "wait_timeout": 2, "socket_timeout": 1},
                                     {"sentinels": [("127.0.0.1", 26379)]},
                                     {"sentinels": [("127.0.0.1", 26379)], "service_name": "m",
                                      "url": "redis://127.0.0.1:6379"}])
def test_bad_write_settings_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        configure.connection_pool(**options)  # type: ignore[arg-type]
