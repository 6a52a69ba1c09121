"""A record whose id was just generated is checked by one EXISTS, and loses no guarantee when that id is taken.

For a create that generates its id, the write script replaces the lease
lookup, the type checks of the record's own keys and the field guards with
one ``EXISTS`` of those keys (the ``new`` check). When one of them exists
after all (a colliding id, another writer's lease, a stray key of the wrong
type), the script refuses with ``present`` and the record is planned again as
any save of a given id is: the outcome is the same as without the shortcut.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, errors, keys
from tests.roundtrips import count_round_trips

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")


class Gadget(ActiveRecord):
    name = attributes.Unicode(index=True)
    size = attributes.Integer(index=True)
    serial = attributes.Unicode(unique=True, null=True)
    blob = attributes.ByteStream()


def _script_args(trips: Any) -> list[bytes]:
    """The ARGV of the write script calls a block sent."""
    calls = [c for c in trips.commands() if c[0].upper() in (b"EVALSHA", b"EVAL")]
    args: list[bytes] = []
    for call in calls:
        nkeys = int(call[2])
        args += call[3 + nkeys:]
    return args


def _index_members(conn: redis_py.Redis, name: str, size: int) -> tuple[set[bytes], set[bytes]]:
    prefix = Gadget._meta.prefix
    return (conn.smembers(keys.eq_index_key(prefix, "name", name)),
            conn.smembers(keys.eq_index_key(prefix, "size", str(size))))


def _generating(monkeypatch: pytest.MonkeyPatch, *ids: uuid.UUID) -> None:
    """Make the primary key hand out ``ids``, in order (as if uuid1 had returned them)."""
    handed = iter(ids)
    monkeypatch.setattr(type(Gadget._meta.fields["id"]), "generate", lambda self: next(handed))


@pytest.mark.one_partition
def test_a_generated_id_is_checked_by_new_alone_in_one_round_trip(repocket_connection: redis_py.Redis) -> None:
    Gadget.objects.create(name="warm-up", size=0)  # (the server learns the script)
    with count_round_trips() as trips:
        gadget = Gadget.objects.create(name="lamp", size=3, serial="s-1")
    assert trips.count == 1
    args = _script_args(trips)
    assert b"new" in args and b"absent" not in args and b"guard" not in args
    assert Gadget.objects.get(id=gadget.id).name == "lamp"
    assert gadget.id.bytes in {uuid.UUID(m.decode()).bytes for m in _index_members(repocket_connection, "lamp", 3)[0]}


def test_a_given_id_is_guarded_as_before(repocket_connection: redis_py.Redis) -> None:
    with count_round_trips() as trips:
        Gadget(id=uuid.uuid1(), name="lamp", size=3).save()
    args = _script_args(trips)
    assert b"new" not in args and args.count(b"absent") >= 2  # name and size (and serial)


@pytest.mark.one_partition
def test_a_generated_id_that_is_taken_overwrites_it_as_a_save_of_that_id_would(
        repocket_connection: redis_py.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stored record's index entries go: none is left pointing at values it no longer has."""
    old = Gadget.objects.create(name="old", size=1, serial="s-old", blob=b"old bytes")
    _generating(monkeypatch, old.id)
    with count_round_trips() as trips:
        new = Gadget.objects.create(name="new", size=2, serial="s-new")
    assert new.id == old.id
    assert trips.count >= 2  # refused as present, then planned as any save of a given id
    pk = str(old.id).encode()
    assert _index_members(repocket_connection, "old", 1) == (set(), set())
    assert _index_members(repocket_connection, "new", 2) == ({pk}, {pk})
    unique = repocket_connection.hgetall(keys.unique_key(Gadget._meta.prefix, "serial"))
    assert unique == {b"s-new": pk}
    assert Gadget.objects.count() == 1
    stored = Gadget.objects.get(id=old.id)
    assert (stored.name, stored.size, stored.serial, stored.blob) == ("new", 2, "s-new", b"")


@pytest.mark.one_partition
def test_one_taken_id_in_a_bulk_create_leaves_every_index_exact(
        repocket_connection: redis_py.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    old = Gadget.objects.create(name="old", size=1)
    others = [uuid.uuid1() for _ in range(4)]
    _generating(monkeypatch, others[0], others[1], old.id, others[2], others[3])
    made = Gadget.objects.bulk_create([Gadget(name=f"g{i}", size=i) for i in range(5)])
    assert [g.id for g in made] == [others[0], others[1], old.id, others[2], others[3]]
    assert Gadget.objects.count() == 5
    assert _index_members(repocket_connection, "old", 1) == (set(), {str(others[1]).encode()})
    for i, gadget in enumerate(made):
        assert Gadget.objects.get(name=f"g{i}").id == gadget.id
        assert Gadget.objects.get(size=i).id == gadget.id


@pytest.mark.one_partition
def test_another_writers_lease_on_a_generated_id_is_waited_for(
        repocket_connection: redis_py.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    pk = uuid.uuid1()
    lease = keys.lease_key(Gadget._meta.prefix, str(pk))
    repocket_connection.set(lease, "someone-else", px=200)
    _generating(monkeypatch, pk)
    gadget = Gadget.objects.create(name="lamp", size=3)
    assert gadget.id == pk and Gadget.objects.get(id=pk).name == "lamp"
    assert repocket_connection.exists(lease) == 0


@pytest.mark.parametrize("stray", ["hash", "stream"])
def test_a_stray_key_of_the_wrong_type_under_a_generated_id_is_refused_and_nothing_is_written(
        repocket_connection: redis_py.Redis, monkeypatch: pytest.MonkeyPatch, stray: str) -> None:
    pk = uuid.uuid1()
    record = Gadget._meta.key(str(pk))
    key = record if stray == "hash" else keys.stream_key(record, "blob")
    repocket_connection.rpush(key, "not repocket's")
    before = sorted(repocket_connection.keys("*"))
    _generating(monkeypatch, pk)
    with pytest.raises(errors.CorruptRecordError, match="is a Redis list"):
        Gadget.objects.create(name="lamp", size=3, blob=b"x")
    assert sorted(repocket_connection.keys("*")) == before
