"""The Django-style QuerySet API on a real Redis.

get_or_create, update_or_create, in_bulk, bulk_update, latest/earliest,
reverse, none, distinct, only/defer, ordering by pk, first/last, values
across a Pointer, exists, and aggregate (Count, Sum, Avg, Min, Max).
Expected answers are computed here in plain Python, independently of repocket;
round trips are counted with ``tests.roundtrips.count_round_trips``.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, Avg, Count, Max, Min, Sum, attributes, errors
from repocket.plan import select
from tests.roundtrips import count_round_trips

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)

# -- models ----------------------------------------------------------------------------------


class Account(ActiveRecord):
    email = attributes.Unicode(unique=True)
    name = attributes.Unicode(null=True)
    age = attributes.Integer(null=True)
    nick = attributes.Unicode(null=True)


class Person(ActiveRecord):
    name = attributes.Unicode(index=True)
    age = attributes.Integer(index=True, null=True)
    note = attributes.Unicode(null=True)
    city = attributes.Unicode(null=True)
    handle = attributes.Unicode(unique=True, null=True)


class Event(ActiveRecord):
    when = attributes.DateTime(index=True, null=True)
    n = attributes.Integer(index=True, null=True)
    m = attributes.Integer(null=True)
    label = attributes.Unicode(null=True)


class Author(ActiveRecord):
    name = attributes.Unicode(index=True)
    born = attributes.Integer(null=True)


class Book(ActiveRecord):
    title = attributes.Unicode(index=True)
    pages = attributes.Integer(null=True)
    author = attributes.Pointer(Author, null=True)


class Plain(ActiveRecord):
    k = attributes.Integer(null=True)
    word = attributes.Unicode(null=True)


class Doc(ActiveRecord):
    a = attributes.Unicode(null=True)
    b = attributes.Integer(index=True, null=True)
    c = attributes.Unicode(null=True)
    body = attributes.ByteStream()


class Stat(ActiveRecord):
    i = attributes.Integer(null=True)
    f = attributes.Float(null=True)
    d = attributes.Decimal(null=True)
    ii = attributes.Integer(index=True, null=True)
    fi = attributes.Float(index=True, null=True)
    di = attributes.Decimal(index=True, null=True)
    t = attributes.DateTime(null=True)
    ti = attributes.DateTime(index=True, null=True)
    word = attributes.Unicode(null=True)
    wi = attributes.Unicode(index=True, null=True)


# -- helpers ---------------------------------------------------------------------------------


def _warm(conn: Any) -> None:
    """Load the write script on the server, so counted writes never pay for SCRIPT LOAD."""
    Plain.create(k=-1).delete()


def _raw_set(conn: Any, record: ActiveRecord, name: str, value: Any) -> None:
    """Change one attribute in Redis behind repocket's back (a raw HSET in the model's format)."""
    meta = record._meta
    conn.hset(meta.key(record.pk), name, meta.format.encode(meta.fields[name], value))


def _stored(model: type[ActiveRecord], pk: Any) -> ActiveRecord:
    return model.objects.get(pk=pk)


def _count_of(trips: Any, name: bytes) -> int:
    return sum(1 for n in trips.names() if n == name)


def _client(redis_url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(redis_url, decode_responses=False)


# -- get_or_create ----------------------------------------------------------------------------


def test_get_or_create_creates_then_gets(repocket_connection: Any) -> None:
    """get_or_create creates a missing record (created=True), then returns the same one (created=False)."""
    made, created = Account.objects.get_or_create(email="a@x", name="Ann")
    assert created is True
    assert made.pk is not None and _stored(Account, made.pk).name == "Ann"
    again, created_again = Account.objects.get_or_create(email="a@x", name="Ann")
    assert created_again is False
    assert again.pk == made.pk
    assert Account.objects.count() == 1


def test_get_or_create_uses_defaults_only_when_creating(repocket_connection: Any) -> None:
    """defaults are written on create and ignored (not applied) when the record exists."""
    made, created = Account.objects.get_or_create(email="d@x", defaults={"name": "first", "age": 3})
    assert created and (made.name, made.age) == ("first", 3)
    assert (_stored(Account, made.pk).name, _stored(Account, made.pk).age) == ("first", 3)
    got, created = Account.objects.get_or_create(email="d@x", defaults={"name": "second", "age": 9})
    assert not created and got.pk == made.pk
    assert (got.name, got.age) == ("first", 3)
    assert _stored(Account, made.pk).name == "first"


def test_get_or_create_defaults_override_lookup_values(repocket_connection: Any) -> None:
    """As in Django, a value in defaults wins over the same plain lookup when creating."""
    made, created = Account.objects.get_or_create(email="o@x", name="lookup", defaults={"name": "default"})
    assert created and _stored(Account, made.pk).name == "default"


def test_get_or_create_lookups_with_dunder_are_not_create_values(repocket_connection: Any) -> None:
    """Lookups such as name__startswith are not used to build the record; field__exact is."""
    made, created = Account.objects.get_or_create(
        email__exact="e@x", name__startswith="zz", defaults={"age": 4})
    assert created
    stored = _stored(Account, made.pk)
    assert stored.email == "e@x"
    assert stored.name == Account().name  # the default: the startswith value is not stored
    assert not stored.name.startswith("zz")
    assert stored.age == 4


def test_get_or_create_finds_by_non_exact_lookup(repocket_connection: Any) -> None:
    """An existing record matching a non-exact lookup is returned, not duplicated."""
    existing = Account.create(email="find@x", name="zebra")
    got, created = Account.objects.get_or_create(name__startswith="zeb", defaults={"email": "other@x"})
    assert not created and got.pk == existing.pk
    assert Account.objects.count() == 1


def test_get_or_create_on_a_filtered_queryset(repocket_connection: Any) -> None:
    """On a QuerySet the lookups combine with its filters; a non-matching record is not returned."""
    Person.create(name="Bo", age=1)
    got, created = Person.objects.filter(age=2).get_or_create(name="Bo", defaults={"age": 2})
    assert created and got.age == 2
    assert sorted(p.age for p in Person.objects.filter(name="Bo")) == [1, 2]


def test_get_or_create_raises_multiple_objects_returned(repocket_connection: Any) -> None:
    """When several records match, get_or_create raises MultipleObjectsReturned and creates nothing."""
    Person.create(name="twin", age=1)
    Person.create(name="twin", age=2)
    with pytest.raises(Person.MultipleObjectsReturned):
        Person.objects.get_or_create(name="twin")
    assert Person.objects.count() == 2


def test_get_or_create_unique_clash_on_another_value_raises(repocket_connection: Any) -> None:
    """A create that clashes on a unique value that is not the lookup raises UniqueConstraintError."""
    Person.create(name="holder", handle="h1")
    with pytest.raises(errors.UniqueConstraintError):
        Person.objects.get_or_create(name="newcomer", defaults={"handle": "h1"})
    assert Person.objects.filter(name="newcomer").count() == 0


def _race(n: int, redis_url: str, call: Any) -> list[Any]:
    """Run ``call(client, i)`` in ``n`` threads released together; each thread has its own client."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    failures: list[BaseException] = []
    clients = [_client(redis_url) for _ in range(n)]

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=20)
            results[i] = call(clients[i], i)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()
    assert not failures, failures
    return results


@pytest.mark.parametrize("round_number", range(3))
def test_get_or_create_is_race_free_on_a_unique_field(repocket_connection: Any, redis_url: str,
                                                      round_number: int) -> None:
    """16 concurrent get_or_create on a unique email: one record, one created=True, one id for all."""
    _warm(repocket_connection)
    email = f"race{round_number}@y"
    results = _race(16, redis_url, lambda client, i: Account.objects.using(client).get_or_create(
        email=email, defaults={"age": i}))
    assert Account.objects.filter(email=email).count() == 1
    assert len(Account.objects.all()) == 1
    assert sum(1 for _, created in results if created) == 1
    assert len({obj.pk for obj, _ in results}) == 1
    assert Account.objects.check().ok


def test_get_or_create_race_through_the_global_pool(repocket_connection: Any) -> None:
    """The same race through repocket's global (thread-safe) pool gives one record."""
    _warm(repocket_connection)
    barrier = threading.Barrier(16)
    results: list[Any] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait(timeout=20)
        found = Account.objects.get_or_create(email="pool@y")
        with lock:
            results.append(found)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 16
    assert len(Account.objects.all()) == 1
    assert [created for _, created in results].count(True) == 1
    assert len({obj.pk for obj, _ in results}) == 1


# -- update_or_create --------------------------------------------------------------------------


def test_update_or_create_creates_with_defaults(repocket_connection: Any) -> None:
    """With no match, update_or_create creates the record from lookups and defaults."""
    made, created = Account.objects.update_or_create(email="u@x", defaults={"name": "N", "age": 1})
    assert created
    stored = _stored(Account, made.pk)
    assert (stored.email, stored.name, stored.age) == ("u@x", "N", 1)


def test_update_or_create_updates_existing(repocket_connection: Any) -> None:
    """With a match, update_or_create sets defaults on it and saves (created=False, same id)."""
    existing = Account.create(email="u@x", name="old", age=1)
    got, created = Account.objects.update_or_create(email="u@x", defaults={"name": "new"})
    assert not created and got.pk == existing.pk
    assert got.name == "new"
    stored = _stored(Account, existing.pk)
    assert (stored.name, stored.age) == ("new", 1)
    assert Account.objects.count() == 1


def test_update_or_create_uses_create_defaults_only_on_create(repocket_connection: Any) -> None:
    """create_defaults replace defaults when creating; defaults are what an update applies."""
    made, created = Account.objects.update_or_create(
        email="c@x", defaults={"name": "updated"}, create_defaults={"name": "created", "age": 7})
    assert created
    assert (_stored(Account, made.pk).name, _stored(Account, made.pk).age) == ("created", 7)
    got, created = Account.objects.update_or_create(
        email="c@x", defaults={"name": "updated"}, create_defaults={"name": "created", "age": 0})
    assert not created and got.pk == made.pk
    stored = _stored(Account, made.pk)
    assert (stored.name, stored.age) == ("updated", 7)


def test_update_or_create_writes_only_changed_fields(repocket_connection: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The update writes only the defaults: a field changed behind repocket's back after the read survives."""
    existing = Account.create(email="w@x", name="n", age=1, nick="before")
    original_get = select.get  # the read step of update_or_create's plan

    def get_then_interfere(q: Any, args: Any, lookups: Any) -> Any:
        found = yield from original_get(q, args, lookups)
        _raw_set(repocket_connection, existing, "nick", "behind")
        return found

    monkeypatch.setattr(select, "get", get_then_interfere)
    got, created = Account.objects.update_or_create(email="w@x", defaults={"age": 2})
    monkeypatch.undo()
    assert not created
    stored = _stored(Account, existing.pk)
    assert stored.age == 2
    assert stored.nick == "behind"


@pytest.mark.one_partition
def test_update_or_create_sends_only_changed_field_in_the_write(repocket_connection: Any) -> None:
    """The write command of an update names the changed field and not the unchanged ones."""
    _warm(repocket_connection)
    Account.create(email="cmd@x", name="unchanged-name", age=1, nick="unchanged-nick")
    with count_round_trips() as trips:
        Account.objects.update_or_create(email="cmd@x", defaults={"age": 2})
    writes = [c for c in trips.commands() if c[0].upper() in (b"EVALSHA", b"EVAL")]
    assert len(writes) == 1
    args = writes[0]
    assert b"age" in args
    assert not any(b"unchanged" in arg for arg in args)


def test_update_or_create_unknown_default_raises(repocket_connection: Any) -> None:
    """An unknown name in defaults raises UnknownFieldError."""
    Account.create(email="k@x")
    with pytest.raises(errors.UnknownFieldError):
        Account.objects.update_or_create(email="k@x", defaults={"nope": 1})


@pytest.mark.parametrize("round_number", range(2))
def test_update_or_create_is_race_free_on_a_unique_field(repocket_connection: Any, redis_url: str,
                                                         round_number: int) -> None:
    """16 concurrent update_or_create on one unique email: one record, one creator, indexes exact."""
    _warm(repocket_connection)
    email = f"urace{round_number}@y"
    results = _race(16, redis_url, lambda client, i: Account.objects.using(client).update_or_create(
        email=email, defaults={"age": i}))
    records = list(Account.objects.all())
    assert len(records) == 1
    assert sum(1 for _, created in results if created) == 1
    assert {obj.pk for obj, _ in results} == {records[0].pk}
    assert records[0].age in range(16)
    assert Account.objects.check().ok


@pytest.mark.parametrize("round_number", range(2))
def test_update_or_create_race_on_indexed_fields(repocket_connection: Any, redis_url: str,
                                                 round_number: int) -> None:
    """16 concurrent update_or_create writing indexed fields of one unique record: one record, indexes exact."""
    _warm(repocket_connection)
    handle = f"hr{round_number}"
    results = _race(16, redis_url, lambda client, i: Person.objects.using(client).update_or_create(
        handle=handle, defaults={"age": i, "name": f"n{i}"}))
    records = list(Person.objects.all())
    assert len(records) == 1
    assert sum(1 for _, created in results if created) == 1
    assert records[0].name == f"n{records[0].age}"
    assert Person.objects.filter(age=records[0].age).count() == 1
    assert Person.objects.filter(name=records[0].name).count() == 1
    assert Person.objects.check().ok


def test_get_or_create_by_pk(repocket_connection: Any) -> None:
    """get_or_create(pk=...) creates the record with that id, then gets it."""
    pk = uuid.uuid4()
    made, created = Account.objects.get_or_create(pk=pk, defaults={"email": "pk@x"})
    assert created and made.pk == pk
    assert _stored(Account, pk).email == "pk@x"
    got, created = Account.objects.get_or_create(pk=str(pk))
    assert not created and got.pk == pk
    assert Account.objects.count() == 1


# -- in_bulk -----------------------------------------------------------------------------------


@pytest.fixture
def people(repocket_connection: Any) -> list[Person]:
    return [Person.create(name=f"p{i}", age=i % 3, handle=f"h{i}") for i in range(6)]


def test_in_bulk_by_pk_keys_by_uuid(people: list[Person]) -> None:
    """in_bulk(ids) returns {UUID: record} for ids given as str or UUID."""
    wanted = [str(people[0].pk), people[1].pk, str(people[2].pk).upper()]
    found = Person.objects.in_bulk(wanted)
    assert set(found) == {people[0].pk, people[1].pk, people[2].pk}
    assert all(isinstance(key, uuid.UUID) for key in found)
    assert all(found[key].pk == key for key in found)
    assert found[people[1].pk].name == "p1"


def test_in_bulk_leaves_out_missing_ids(people: list[Person]) -> None:
    """Ids with no record are left out of the dict."""
    ghost = uuid.uuid4()
    found = Person.objects.in_bulk([people[0].pk, ghost])
    assert set(found) == {people[0].pk}


def test_in_bulk_empty_list_costs_nothing(people: list[Person]) -> None:
    """in_bulk([]) is {} with no round trip."""
    with count_round_trips() as trips:
        assert Person.objects.in_bulk([]) == {}
        assert Person.objects.filter(name="p1").in_bulk([]) == {}
    assert trips.count == 0


def test_in_bulk_by_pk_is_one_round_trip(people: list[Person]) -> None:
    """in_bulk by pk reads every id in one round trip."""
    ids = [p.pk for p in people] + [uuid.uuid4()]
    with count_round_trips() as trips:
        found = Person.objects.in_bulk(ids)
    assert len(found) == 6
    assert trips.count == 1


def test_in_bulk_without_ids_returns_all(people: list[Person]) -> None:
    """in_bulk() with no id list returns every matching record keyed by pk."""
    assert set(Person.objects.in_bulk()) == {p.pk for p in people}
    assert set(Person.objects.filter(age=0).in_bulk()) == {p.pk for p in people if p.age == 0}


def test_in_bulk_by_unique_field(people: list[Person]) -> None:
    """field_name of a unique attribute keys the dict by that attribute's value."""
    found = Person.objects.in_bulk(["h1", "h4", "missing"], field_name="handle")
    assert set(found) == {"h1", "h4"}
    assert found["h4"].pk == people[4].pk


def test_in_bulk_non_unique_field_raises(people: list[Person]) -> None:
    """A field_name that is not unique (even if indexed) raises ValidationError."""
    with pytest.raises(errors.ValidationError):
        Person.objects.in_bulk(["p1"], field_name="name")
    with pytest.raises(errors.UnknownFieldError):
        Person.objects.in_bulk(["p1"], field_name="nope")


def test_in_bulk_on_filtered_queryset(people: list[Person]) -> None:
    """On a filtered queryset only the matching records are returned."""
    ids = [p.pk for p in people]
    found = Person.objects.filter(age=1).in_bulk(ids)
    assert set(found) == {p.pk for p in people if p.age == 1}
    excluded = Person.objects.exclude(age=1).in_bulk(ids)
    assert set(excluded) == {p.pk for p in people if p.age != 1}
    by_handle = Person.objects.filter(age=2).in_bulk(["h2", "h3", "h5"], field_name="handle")
    assert set(by_handle) == {"h2", "h5"}


def test_in_bulk_bad_id_raises(people: list[Person]) -> None:
    """An id that is not a UUID raises ValidationError."""
    with pytest.raises(errors.ValidationError):
        Person.objects.in_bulk(["not-a-uuid"])


def test_in_bulk_on_sliced_queryset_raises(people: list[Person]) -> None:
    """in_bulk on a sliced query raises TypeError, as in Django."""
    with pytest.raises(TypeError):
        Person.objects.all()[:2].in_bulk([people[0].pk])


# -- bulk_update -------------------------------------------------------------------------------


def test_bulk_update_writes_only_named_fields(repocket_connection: Any) -> None:
    """Only named fields are written: a field changed behind the back survives, an unnamed local change is not saved."""
    p = Person.create(name="a", age=1, note="note", city="city")
    loaded = _stored(Person, p.pk)
    _raw_set(repocket_connection, p, "note", "behind")
    loaded.age = 2
    loaded.city = "unsaved"
    assert Person.objects.bulk_update([loaded], ["age"]) == 1
    stored = _stored(Person, p.pk)
    assert stored.age == 2
    assert stored.note == "behind"
    assert stored.city == "city"
    assert stored.name == "a"


def test_bulk_update_keeps_indexes_exact(repocket_connection: Any) -> None:
    """After bulk_update, filters by the new value find the records, by the old value do not; check() is clean."""
    people = [Person.create(name=f"n{i}", age=1, handle=f"u{i}") for i in range(5)]
    for i, p in enumerate(people[:3]):
        p.age = 50
        p.name = f"renamed{i}"
        p.handle = f"v{i}"
    assert Person.objects.bulk_update(people[:3], ["age", "name", "handle"], batch_size=2) == 3
    assert {p.pk for p in Person.objects.filter(age=50)} == {p.pk for p in people[:3]}
    assert {p.pk for p in Person.objects.filter(age=1)} == {p.pk for p in people[3:]}
    assert {p.pk for p in Person.objects.filter(age__gte=10)} == {p.pk for p in people[:3]}
    assert Person.objects.filter(name="n0").count() == 0
    assert Person.objects.filter(name="renamed1").get().pk == people[1].pk
    assert Person.objects.filter(name__startswith="renamed").count() == 3
    assert set(Person.objects.in_bulk(["v0", "u0"], field_name="handle")) == {"v0"}
    assert Person.objects.check().ok
    # the old handle is free again
    Person.create(name="reuse", handle="u0")


def test_bulk_update_with_fresh_instances(repocket_connection: Any) -> None:
    """Instances built with an existing id (never loaded) write just the named fields, indexes exact."""
    people = [Person.create(name=f"f{i}", age=i, note="keep") for i in range(3)]
    fresh = [Person(id=p.pk, age=100 + i) for i, p in enumerate(people)]
    assert Person.objects.bulk_update(fresh, ["age"]) == 3
    for i, p in enumerate(people):
        stored = _stored(Person, p.pk)
        assert (stored.name, stored.age, stored.note) == (f"f{i}", 100 + i, "keep")
    assert Person.objects.filter(age=0).count() == 0
    assert Person.objects.filter(age__gte=100).count() == 3
    assert Person.objects.check().ok


def test_bulk_update_writes_named_field_even_if_unchanged_locally(repocket_connection: Any) -> None:
    """A named field is written with the instance's value even when only Redis changed it since loading."""
    p = Person.create(name="same", age=1, note="mine")
    loaded = _stored(Person, p.pk)
    _raw_set(repocket_connection, p, "note", "theirs")
    Person.objects.bulk_update([loaded], ["note"])
    assert _stored(Person, p.pk).note == "mine"


@pytest.mark.one_partition
def test_bulk_update_missing_record_raises_and_writes_nothing(repocket_connection: Any) -> None:
    """A missing record raises DoesNotExist; nothing of its batch is written, and it is not recreated."""
    a, b, c = (Person.create(name=f"m{i}", age=1) for i in range(3))
    b_copy = _stored(Person, b.pk)
    b.delete()
    for p in (a, b_copy, c):
        p.age = 9
    with pytest.raises(Person.DoesNotExist):
        Person.objects.bulk_update([a, b_copy, c], ["age"])
    assert _stored(Person, a.pk).age == 1
    assert _stored(Person, c.pk).age == 1
    assert Person.objects.count() == 2
    assert Person.objects.filter(age=9).count() == 0
    with pytest.raises(Person.DoesNotExist):
        _stored(Person, b.pk)
    assert Person.objects.check().ok


def test_bulk_update_refuses_pk_unknown_and_bad_arguments(repocket_connection: Any) -> None:
    """The primary key or an unknown field raises, as do no fields, a string, unsaved or repeated records."""
    p = Person.create(name="x", age=1)
    with pytest.raises(errors.ValidationError):
        Person.objects.bulk_update([p], ["pk"])
    with pytest.raises(errors.ValidationError):
        Person.objects.bulk_update([p], ["id"])
    with pytest.raises(errors.UnknownFieldError):
        Person.objects.bulk_update([p], ["nope"])
    with pytest.raises(ValueError):
        Person.objects.bulk_update([p], [])
    with pytest.raises(ValueError):
        Person.objects.bulk_update([p], "age")
    with pytest.raises(ValueError):
        Person.objects.bulk_update([Person(name="unsaved")], ["age"])
    with pytest.raises(ValueError):
        Person.objects.bulk_update([p, _stored(Person, p.pk)], ["age"])
    with pytest.raises(TypeError):
        Person.objects.bulk_update([Plain.create(k=1)], ["k"])
    with pytest.raises(ValueError):
        Person.objects.bulk_update([p], ["age"], batch_size=0)


def test_bulk_update_refuses_none_in_non_null_field(repocket_connection: Any) -> None:
    """A None in a named non-null field raises ValidationError and writes nothing."""
    p = Person.create(name="x", age=1)
    p.name = None
    p.age = 2
    with pytest.raises(errors.ValidationError):
        Person.objects.bulk_update([p], ["name", "age"])
    assert _stored(Person, p.pk).age == 1


def test_bulk_update_unique_clash_writes_nothing(repocket_connection: Any) -> None:
    """A unique value already held by another record raises UniqueConstraintError; the batch writes nothing."""
    Person.create(name="holder", handle="taken")
    a = Person.create(name="a", age=1, handle="a")
    b = Person.create(name="b", age=1, handle="b")
    a.age = 2
    b.handle = "taken"
    with pytest.raises(errors.UniqueConstraintError):
        Person.objects.bulk_update([a, b], ["age", "handle"])
    assert _stored(Person, a.pk).age == 1
    assert _stored(Person, b.pk).handle == "b"
    assert Person.objects.check().ok


@pytest.mark.one_partition
def test_bulk_update_is_one_script_call_per_batch(repocket_connection: Any) -> None:
    """bulk_update sends one atomic script call (EVALSHA) per batch."""
    _warm(repocket_connection)
    people = [Person.create(name=f"b{i}", age=0) for i in range(5)]
    for p in people:
        p.age = 7
    with count_round_trips() as trips:
        assert Person.objects.bulk_update(people, ["age"], batch_size=2) == 5
    assert _count_of(trips, b"EVALSHA") == 3
    assert trips.count == 3
    for p in people:
        p.age = 8
    with count_round_trips() as trips:
        Person.objects.filter(age=7).bulk_update(people, ["age"])
    assert _count_of(trips, b"EVALSHA") == 1
    assert Person.objects.filter(age=8).count() == 5


def test_bulk_update_empty_list(repocket_connection: Any) -> None:
    """bulk_update of no records returns 0 with no round trip."""
    with count_round_trips() as trips:
        assert Person.objects.bulk_update([], ["age"]) == 0
    assert trips.count == 0


# -- latest / earliest -------------------------------------------------------------------------


@pytest.fixture
def events(repocket_connection: Any) -> list[Event]:
    offsets = [5, -3, 12, 0, 7]
    return [Event.create(when=T0 + dt.timedelta(hours=h), n=h * 10, m=-h, label=f"e{h}") for h in offsets]


def test_latest_and_earliest_by_datetime(events: list[Event]) -> None:
    """latest/earliest give the max/min record by the field."""
    assert Event.objects.latest("when").pk == max(events, key=lambda e: e.when).pk
    assert Event.objects.earliest("when").pk == min(events, key=lambda e: e.when).pk
    assert Event.objects.latest("m").pk == max(events, key=lambda e: e.m).pk  # unindexed
    assert Event.objects.earliest("m").pk == min(events, key=lambda e: e.m).pk


def test_latest_with_descending_name_is_earliest(events: list[Event]) -> None:
    """latest("-x") is earliest("x") and earliest("-x") is latest("x")."""
    assert Event.objects.latest("-n").pk == Event.objects.earliest("n").pk == min(events, key=lambda e: e.n).pk
    assert Event.objects.earliest("-n").pk == max(events, key=lambda e: e.n).pk


def test_latest_with_several_fields(repocket_connection: Any) -> None:
    """latest(a, b) breaks ties on a by b."""
    Event.create(n=1, m=1, label="x")
    top = Event.create(n=1, m=5, label="y")
    Event.create(n=0, m=9, label="z")
    assert Event.objects.latest("n", "m").pk == top.pk
    assert Event.objects.earliest("-n", "m").label == "x"


def test_latest_on_filtered_queryset(events: list[Event]) -> None:
    """latest on a filtered queryset picks among the matches only."""
    matching = [e for e in events if e.n < 60]
    assert Event.objects.filter(n__lt=60).latest("when").pk == max(matching, key=lambda e: e.when).pk


def test_latest_and_earliest_raise_on_empty(repocket_connection: Any) -> None:
    """With no record, latest and earliest raise the model's DoesNotExist."""
    with pytest.raises(Event.DoesNotExist):
        Event.objects.latest("when")
    with pytest.raises(Event.DoesNotExist):
        Event.objects.earliest("n")
    Event.create(n=1, m=1)
    with pytest.raises(Event.DoesNotExist):
        Event.objects.filter(m=2).latest("m")
    with pytest.raises(Event.DoesNotExist):
        Event.objects.none().earliest("n")


def test_latest_on_indexed_filter_with_no_match_raises_does_not_exist(repocket_connection: Any) -> None:
    """latest()/first() on an indexed filter matching nothing give DoesNotExist/None, not a crash."""
    Event.create(n=1, m=1)
    assert Event.objects.filter(n=2).order_by("n").first() is None
    with pytest.raises(Event.DoesNotExist):
        Event.objects.filter(n=2).latest("n")


def test_latest_without_fields_raises_type_error(events: list[Event]) -> None:
    """latest() and earliest() without fields raise TypeError."""
    with pytest.raises(TypeError):
        Event.objects.latest()
    with pytest.raises(TypeError):
        Event.objects.all().earliest()


# -- reverse -----------------------------------------------------------------------------------


def test_reverse_flips_single_key_order(events: list[Event]) -> None:
    """reverse() of order_by("n") is descending n."""
    forward = [e.n for e in Event.objects.order_by("n")]
    assert forward == sorted(e.n for e in events)
    assert [e.n for e in Event.objects.order_by("n").reverse()] == forward[::-1]
    assert [e.m for e in Event.objects.order_by("-m").reverse()] == sorted(e.m for e in events)


def test_reverse_flips_multi_key_order(repocket_connection: Any) -> None:
    """reverse() of order_by("n", "-m") equals order_by("-n", "m")."""
    for n in (1, 2, 1, 3, 2):
        for m in (5, 1):
            Event.create(n=n, m=m * n, label=f"{n}-{m}")
    reversed_rows = [(e.n, e.m) for e in Event.objects.order_by("n", "-m").reverse()]
    expected = sorted(((e.n, e.m) for e in Event.objects.all()), key=lambda r: (-r[0], r[1]))
    assert reversed_rows == expected
    assert reversed_rows == [(e.n, e.m) for e in Event.objects.order_by("-n", "m")]
    assert [(e.n, e.m) for e in Event.objects.order_by("n", "-m").reverse().reverse()] == expected[::-1]


def test_reverse_unordered_is_descending_pk(events: list[Event]) -> None:
    """reverse() on an unordered query gives descending primary key (str(id)) order."""
    expected = sorted((str(e.pk) for e in events), reverse=True)
    assert [str(e.pk) for e in Event.objects.reverse()] == expected
    assert [str(e.pk) for e in Event.objects.all().reverse()] == expected
    assert [str(e.pk) for e in Event.objects.reverse().reverse()] == expected[::-1]


def test_reverse_then_slice(events: list[Event]) -> None:
    """reverse() composes with slicing: the first two of the reversed order."""
    expected = sorted((e.n for e in events), reverse=True)[:2]
    assert [e.n for e in Event.objects.order_by("n").reverse()[:2]] == expected


def test_reverse_of_sliced_query_raises(events: list[Event]) -> None:
    """reverse() of a sliced query raises TypeError."""
    with pytest.raises(TypeError):
        Event.objects.order_by("n")[:2].reverse()


# -- none --------------------------------------------------------------------------------------


def test_none_costs_zero_round_trips(events: list[Event]) -> None:
    """none() evaluates, counts, exists, updates, deletes and aggregates without a round trip."""
    with count_round_trips() as trips:
        empty = Event.objects.none()
        assert list(empty) == []
        assert len(Event.objects.none()) == 0
        assert Event.objects.none().count() == 0
        assert Event.objects.none().exists() is False
        assert Event.objects.none().update(label="x") == 0
        assert Event.objects.none().delete() == 0
        assert Event.objects.none().aggregate(Count("pk"), Sum("n"), Min("when"), Max("n"), Avg("m")) == {
            "pk__count": 0, "n__sum": None, "when__min": None, "n__max": None, "m__avg": None}
        assert Event.objects.filter(n=0).none().filter(label="e0").count() == 0
        assert Event.objects.all().none().first() is None
        assert Event.objects.none().last() is None
        assert Event.objects.none().values_list("n", flat=True) == []
        assert Event.objects.none().values("n") == []
        assert Event.objects.none().in_bulk([events[0].pk]) == {}
        assert Event.objects.none().in_bulk() == {}
        assert not Event.objects.none()
    assert trips.count == 0
    assert Event.objects.count() == 5
    assert Event.objects.filter(label="x").count() == 0


def test_none_get_raises_does_not_exist(events: list[Event]) -> None:
    """get() on none() raises DoesNotExist even for an existing pk."""
    with pytest.raises(Event.DoesNotExist):
        Event.objects.none().get(pk=events[0].pk)


# -- distinct ----------------------------------------------------------------------------------


@pytest.fixture
def words(repocket_connection: Any) -> list[tuple[str, int]]:
    rows = [("b", 1), ("a", 1), ("b", 1), ("c", 2), ("a", 2), ("b", 1), ("a", 1)]
    for word, k in rows:
        Plain.create(word=word, k=k)
    return rows


def _first_occurrences(rows: list[Any]) -> list[Any]:
    out: list[Any] = []
    for row in rows:
        if row not in out:
            out.append(row)
    return out


def test_distinct_values_list_flat(words: Any) -> None:
    """distinct().values_list(f, flat=True) drops repeats, keeping first occurrences in order."""
    plain = Plain.objects.order_by("pk").values_list("word", flat=True)
    assert len(plain) == 7
    distinct = Plain.objects.order_by("pk").distinct().values_list("word", flat=True)
    assert distinct == _first_occurrences(plain)
    assert sorted(distinct) == ["a", "b", "c"]
    assert Plain.objects.distinct().order_by("-word").values_list("word", flat=True) == ["c", "b", "a"]


def test_distinct_values_list_tuples(words: Any) -> None:
    """distinct().values_list(a, b) drops repeated tuples, first occurrences in order."""
    plain = Plain.objects.order_by("pk").values_list("word", "k")
    distinct = Plain.objects.order_by("pk").distinct().values_list("word", "k")
    assert distinct == _first_occurrences(plain)
    assert sorted(distinct) == sorted(set(words))


def test_distinct_values(words: Any) -> None:
    """distinct().values(a) gives one dict per distinct value, first occurrences in order."""
    plain = Plain.objects.order_by("pk").values("word")
    distinct = Plain.objects.order_by("pk").distinct().values("word")
    assert distinct == _first_occurrences(plain)
    assert sorted(row["word"] for row in distinct) == ["a", "b", "c"]
    assert Plain.objects.filter(k=2).distinct().order_by("word").values("k") == [{"k": 2}]


def test_distinct_records_are_all_records(words: Any) -> None:
    """distinct() leaves records (all distinct already) as they are."""
    assert len(Plain.objects.distinct()) == 7


# -- only / defer ------------------------------------------------------------------------------


@pytest.fixture
def docs(repocket_connection: Any) -> list[Doc]:
    return [Doc.create(a=f"a{i}", b=i, c=f"c{i}", body=b"body%d" % i) for i in range(4)]


def test_only_fetches_with_hmget(docs: list[Doc]) -> None:
    """only() reads the records with HMGET of those fields and the pk, never HGETALL."""
    with count_round_trips() as trips:
        loaded = list(Doc.objects.only("a"))
    assert b"HMGET" in trips.names()
    assert b"HGETALL" not in trips.names()
    assert b"GET" not in trips.names()  # the ByteStream is not read
    hmgets = [c for c in trips.commands() if c[0].upper() == b"HMGET"]
    assert all(set(c[2:]) == {b"id", b"a"} for c in hmgets)
    assert {d.a for d in loaded} == {d.a for d in docs}
    assert all(d._data.keys() == {"id", "a"} for d in loaded)


def test_defer_fetches_all_but_those(docs: list[Doc]) -> None:
    """defer() reads every other field with HMGET; the deferred ones are not fetched."""
    with count_round_trips() as trips:
        loaded = list(Doc.objects.defer("c", "body"))
    assert b"HGETALL" not in trips.names()
    hmgets = [c for c in trips.commands() if c[0].upper() == b"HMGET"]
    assert hmgets and all(set(c[2:]) == {b"id", b"a", b"b"} for c in hmgets)
    assert all("c" not in d._data and "body" not in d._data for d in loaded)
    assert Doc.objects.only("a", "c").defer("c").get(b=1)._data.keys() == {"id", "a", "b"}


def test_reading_a_deferred_attribute_fetches_it(docs: list[Doc]) -> None:
    """A deferred attribute is fetched on first read (one round trip) and holds the stored value."""
    loaded = Doc.objects.only("a").get(pk=docs[2].pk)
    with count_round_trips() as trips:
        assert loaded.c == "c2"
        assert loaded.b == 2
        assert loaded.body == b"body2"
    assert trips.count == 1
    assert loaded == _stored(Doc, docs[2].pk)


def test_repr_shows_deferred(docs: list[Doc]) -> None:
    """repr() shows <deferred> for attributes not loaded, and loads nothing."""
    loaded = Doc.objects.only("a").get(pk=docs[0].pk)
    with count_round_trips() as trips:
        text = repr(loaded)
    assert trips.count == 0
    assert "c=<deferred>" in text and "b=<deferred>" in text
    assert "a='a0'" in text


def test_save_after_only_never_overwrites_deferred_fields(repocket_connection: Any, docs: list[Doc]) -> None:
    """Saving an only() instance writes what changed; deferred fields changed behind the back survive."""
    loaded = Doc.objects.only("a").get(pk=docs[1].pk)
    _raw_set(repocket_connection, docs[1], "c", "behind")
    repocket_connection.set(Doc._meta.key(docs[1].pk) + ":field:body", b"behind-body")
    loaded.a = "changed"
    loaded.save()
    stored = _stored(Doc, docs[1].pk)
    assert stored.a == "changed"
    assert stored.c == "behind"
    assert stored.b == 1
    assert stored.body == b"behind-body"
    loaded.save(force=True)
    assert _stored(Doc, docs[1].pk).c == "behind"
    assert Doc.objects.check().ok


def test_save_after_only_updates_indexes(docs: list[Doc]) -> None:
    """Setting a deferred indexed attribute on an only() instance and saving keeps the index exact."""
    loaded = Doc.objects.only("a").get(pk=docs[3].pk)
    loaded.b = 99
    loaded.save()
    assert Doc.objects.filter(b=99).get().pk == docs[3].pk
    assert Doc.objects.filter(b=3).count() == 0
    stored = _stored(Doc, docs[3].pk)
    assert (stored.a, stored.c) == ("a3", "c3")
    assert Doc.objects.check().ok


def test_filters_on_deferred_fields_still_work(docs: list[Doc]) -> None:
    """only("a").filter(b=...) and filters on unindexed deferred fields match correctly."""
    assert [d.a for d in Doc.objects.only("a").filter(b=1)] == ["a1"]
    assert [d.a for d in Doc.objects.only("a").filter(c="c2")] == ["a2"]
    assert sorted(d.a for d in Doc.objects.only("a").exclude(c="c2")) == ["a0", "a1", "a3"]
    assert [d.a for d in Doc.objects.only("a").order_by("-c")][0] == "a3"
    assert Doc.objects.defer("c").filter(c__startswith="c").count() == 4


def test_update_and_delete_through_only(docs: list[Doc]) -> None:
    """update() and delete() on an only() queryset write/delete correctly and keep indexes exact."""
    assert Doc.objects.only("a").filter(b__lt=2).update(c="upd") == 2
    assert sorted(Doc.objects.values_list("a", "b", "c")) == [
        ("a0", 0, "upd"), ("a1", 1, "upd"), ("a2", 2, "c2"), ("a3", 3, "c3")]
    assert Doc.objects.only("a").update(b=7) == 4
    assert Doc.objects.filter(b=7).count() == 4 and Doc.objects.filter(b=0).count() == 0
    assert Doc.objects.only("a").filter(a="a3").delete() == 1
    assert Doc.objects.count() == 3
    assert Doc.objects.filter(b=7).count() == 3
    assert Doc.objects.check().ok


def test_values_of_an_only_queryset_is_not_n_plus_one(docs: list[Doc]) -> None:
    """values("c") on an only("a") queryset costs a constant number of round trips, not one per record."""
    with count_round_trips() as trips:
        rows = Doc.objects.only("a").values("c")
    assert sorted(row["c"] for row in rows) == ["c0", "c1", "c2", "c3"]
    assert trips.count <= 3, trips.names()


def test_defer_pk_raises(docs: list[Doc]) -> None:
    """defer("pk") (or the pk's name) raises ValidationError; unknown names raise UnknownFieldError."""
    with pytest.raises(errors.ValidationError):
        Doc.objects.defer("pk")
    with pytest.raises(errors.ValidationError):
        Doc.objects.all().defer("id")
    with pytest.raises(errors.UnknownFieldError):
        Doc.objects.only("nope")
    with pytest.raises(errors.UnknownFieldError):
        Doc.objects.defer("nope")


def test_only_with_a_pointer_loads_the_target(repocket_connection: Any) -> None:
    """only() of a Pointer loads the target record; the other fields are deferred."""
    author = Author.create(name="Tolkien", born=1892)
    Book.create(title="LOTR", pages=1000, author=author)
    book = Book.objects.only("author").get(title="LOTR")
    assert "pages" not in book._data
    assert book.author.name == "Tolkien"
    assert book.pages == 1000


@pytest.mark.needs_server("opens its own redis.Redis to another database of the server's host and port")
def test_deferred_attribute_read_uses_the_query_connection(repocket_connection: Any) -> None:
    """A record loaded with using(client).only() fetches its deferred attributes through that client."""
    kwargs = {k: v for k, v in repocket_connection.connection_pool.connection_kwargs.items()
              if k in ("host", "port", "username", "password")}
    kwargs["db"] = 1 if repocket_connection.connection_pool.connection_kwargs.get("db", 0) != 1 else 2
    other = redis_py.Redis(**kwargs)
    try:
        other.flushdb()
        record = Doc.create(a="x", b=1, c="other-db", connection=other)
        loaded = Doc.objects.using(other).only("a").get(pk=record.pk)
        assert loaded.c == "other-db"
    finally:
        other.flushdb()
        other.close()


# -- order_by pk / first / last ----------------------------------------------------------------


@pytest.fixture
def plains(repocket_connection: Any) -> list[Plain]:
    records = [Plain(k=i, word=f"w{i % 5}") for i in range(200)]
    Plain.objects.bulk_create(records)
    return records


def test_order_by_pk(plains: list[Plain]) -> None:
    """order_by("pk") orders by the UUID (== str(id) order); "-pk" reverses it."""
    by_uuid = sorted(p.pk for p in plains)
    assert [p.pk for p in Plain.objects.order_by("pk")] == by_uuid
    assert [str(p.pk) for p in Plain.objects.order_by("pk")] == sorted(str(p.pk) for p in plains)
    assert [p.pk for p in Plain.objects.order_by("-pk")] == by_uuid[::-1]
    assert [p.pk for p in Plain.objects.order_by("id")[3:6]] == by_uuid[3:6]
    filtered = sorted(p.pk for p in plains if p.word == "w2")
    assert [p.pk for p in Plain.objects.filter(word="w2").order_by("-pk")] == filtered[::-1]
    assert [p.pk for p in Plain.objects.filter(word="w2").order_by("pk")[1:3]] == filtered[1:3]


def test_order_by_field_then_pk(plains: list[Plain]) -> None:
    """order_by("word", "-pk") breaks ties on word by descending UUID."""
    expected = sorted(plains, key=lambda p: (p.word, -p.pk.int))
    assert [p.pk for p in Plain.objects.order_by("word", "-pk")] == [p.pk for p in expected]


def test_first_and_last_without_ordering_use_pk(plains: list[Plain]) -> None:
    """first() gives the smallest id, last() the largest, on all records and on a filter."""
    assert Plain.objects.first().pk == min(p.pk for p in plains)
    assert Plain.objects.last().pk == max(p.pk for p in plains)
    assert str(Plain.objects.all().first().pk) == min(str(p.pk) for p in plains)
    assert str(Plain.objects.all().last().pk) == max(str(p.pk) for p in plains)
    w3 = [p.pk for p in plains if p.word == "w3"]
    assert Plain.objects.filter(word="w3").first().pk == min(w3)
    assert Plain.objects.filter(word="w3").last().pk == max(w3)
    assert Plain.objects.filter(word="none").first() is None
    assert Plain.objects.filter(word="none").last() is None


def test_first_and_last_follow_ordering(plains: list[Plain]) -> None:
    """With an ordering, first() and last() follow it."""
    assert Plain.objects.order_by("-k").first().k == 199
    assert Plain.objects.order_by("-k").last().k == 0
    assert Plain.objects.order_by("k").reverse().first().k == 199


@pytest.mark.one_partition
def test_first_on_large_model_loads_one_record(plains: list[Plain]) -> None:
    """first()/last() on an unfiltered 200-record model load a single record."""
    with count_round_trips() as trips:
        Plain.objects.first()
    assert _count_of(trips, b"HGETALL") + _count_of(trips, b"HMGET") == 1
    with count_round_trips() as trips:
        Plain.objects.last()
    assert _count_of(trips, b"HGETALL") + _count_of(trips, b"HMGET") == 1
    with count_round_trips() as trips:
        Plain.objects.order_by("pk")[5]
    assert _count_of(trips, b"HGETALL") + _count_of(trips, b"HMGET") == 1


# -- values across a Pointer -------------------------------------------------------------------


@pytest.fixture
def library(repocket_connection: Any) -> dict[str, Any]:
    tolkien = Author.create(name="Tolkien", born=1892)
    le_guin = Author.create(name="Le Guin", born=1929)
    books = [
        Book.create(title="Hobbit", pages=310, author=tolkien),
        Book.create(title="Earthsea", pages=200, author=le_guin),
        Book.create(title="Anon", pages=50, author=None),
        Book.create(title="LOTR", pages=1000, author=tolkien),
    ]
    return {"tolkien": tolkien, "le_guin": le_guin, "books": books}


def test_values_list_across_a_pointer(library: dict[str, Any]) -> None:
    """values_list("author__name") follows the Pointer; None when the pointer is None."""
    rows = Book.objects.order_by("title").values_list("title", "author__name", "pages")
    assert rows == [("Anon", None, 50), ("Earthsea", "Le Guin", 200), ("Hobbit", "Tolkien", 310),
                    ("LOTR", "Tolkien", 1000)]
    assert Book.objects.order_by("title").values_list("author__born", flat=True) == [None, 1929, 1892, 1892]
    assert sorted(Book.objects.filter(author__name="Tolkien").values_list("title", flat=True)) == ["Hobbit", "LOTR"]


def test_values_across_a_pointer(library: dict[str, Any]) -> None:
    """values("author__name") gives dicts keyed by the path, mixed with plain fields and the pointer's id."""
    rows = Book.objects.order_by("title").values("title", "author__name", "author")
    tolkien, le_guin = library["tolkien"], library["le_guin"]
    assert rows == [
        {"title": "Anon", "author__name": None, "author": None},
        {"title": "Earthsea", "author__name": "Le Guin", "author": le_guin.pk},
        {"title": "Hobbit", "author__name": "Tolkien", "author": tolkien.pk},
        {"title": "LOTR", "author__name": "Tolkien", "author": tolkien.pk},
    ]
    assert Book.objects.order_by("title").distinct().values_list("author__name", flat=True) == [
        None, "Le Guin", "Tolkien"]


def test_values_across_a_deleted_target_gives_none(library: dict[str, Any]) -> None:
    """A Pointer whose (null=True) target was deleted gives None for its fields."""
    library["le_guin"].delete()
    assert Book.objects.filter(title="Earthsea").values_list("author__name", flat=True) == [None]


def test_values_unknown_path_raises(library: dict[str, Any]) -> None:
    """An unknown path, a path through a non-Pointer or an unknown target field raises UnknownFieldError."""
    for path in ("nope", "author__nope", "title__name", "nope__name", "author__name__x"):
        with pytest.raises(errors.UnknownFieldError):
            Book.objects.values_list(path)
        with pytest.raises(errors.UnknownFieldError):
            Book.objects.values(path)


def test_values_across_a_pointer_by_pk(library: dict[str, Any]) -> None:
    """values_list("author__pk") gives the target's id, as filter(author__pk=...) accepts the path."""
    tolkien = library["tolkien"]
    assert Book.objects.filter(author__pk=tolkien.pk).count() == 2
    assert Book.objects.filter(title="Hobbit").values_list("author__pk", flat=True) == [tolkien.pk]


# -- exists ------------------------------------------------------------------------------------


@pytest.mark.one_partition
def test_exists_on_unindexed_filter_stops_at_first_match(plains: list[Plain]) -> None:
    """exists() with an unindexed filter whose first record (by id) matches loads only a few records."""
    first = min(plains, key=lambda p: str(p.pk))
    first.k = -7
    first.save()
    with count_round_trips() as trips:
        assert Plain.objects.filter(k=-7).exists() is True
    loaded = _count_of(trips, b"HGETALL") + _count_of(trips, b"HMGET")
    assert loaded < 10
    assert trips.count < 10


def test_exists_answers_correctly(plains: list[Plain]) -> None:
    """exists() is True when some record matches (even the last one) and False otherwise."""
    last = max(plains, key=lambda p: str(p.pk))
    last.k = -9
    last.save()
    assert Plain.objects.filter(k=-9).exists() is True
    assert Plain.objects.filter(k=-10).exists() is False
    assert Plain.objects.filter(k=-9).exclude(word=last.word).exists() is False
    assert Plain.objects.exclude(k__gte=0).exists() is True
    assert Plain.objects.order_by("-k").filter(k__lt=0).exists() is True
    assert Plain.objects.filter(k__gte=0)[199:].exists() is False
    assert Plain.objects.filter(k__gte=0)[198:].exists() is True


def test_exists_on_empty_model(repocket_connection: Any) -> None:
    """exists() on a model with no record is False."""
    assert Plain.objects.exists() is False
    assert Plain.objects.filter(k=1).exists() is False


# -- aggregate ---------------------------------------------------------------------------------

INTS = st.one_of(st.none(), st.integers(-(2**64), 2**64), st.integers(-1000, 1000))
FLOATS = st.one_of(st.none(), st.integers(-4_000_000, 4_000_000).map(lambda n: n / 4))
DECIMALS = st.one_of(st.none(), st.decimals(min_value=-10**9, max_value=10**9, places=3,
                                            allow_nan=False, allow_infinity=False))


def _expected(values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"count": 0, "sum": None, "avg": None, "min": None, "max": None}
    start: Any = Decimal(0) if isinstance(present[0], Decimal) else 0
    total = sum(present, start)
    return {"count": len(present), "sum": total, "avg": total / len(present),
            "min": min(present), "max": max(present)}


def _check_aggregates(query: Any, rows: list[tuple[Any, Any, Any]]) -> None:
    for position, (plain, indexed) in enumerate((("i", "ii"), ("f", "fi"), ("d", "di"))):
        values = [row[position] for row in rows]
        want = _expected(values)
        for name in (plain, indexed):
            got = query.aggregate(Count(name), Sum(name), Avg(name), Min(name), Max(name))
            assert got == {f"{name}__count": want["count"], f"{name}__sum": want["sum"],
                           f"{name}__avg": want["avg"], f"{name}__min": want["min"],
                           f"{name}__max": want["max"]}, name
            if want["count"]:
                if name in ("d", "di"):
                    assert isinstance(got[f"{name}__avg"], Decimal)
                    assert isinstance(got[f"{name}__sum"], Decimal)
                else:
                    assert isinstance(got[f"{name}__avg"], float)
                if name in ("i", "ii"):
                    assert type(got[f"{name}__sum"]) is int
                    assert type(got[f"{name}__min"]) is int and type(got[f"{name}__max"]) is int
            # Min/Max alone (the index path when unfiltered and indexed)
            assert query.aggregate(lo=Min(name), hi=Max(name)) == {"lo": want["min"], "hi": want["max"]}
            assert query.aggregate(Count(name)) == {f"{name}__count": want["count"]}
    assert query.aggregate(Count("pk")) == {"pk__count": len(rows)}


@settings(max_examples=30)
@given(rows=st.lists(st.tuples(INTS, FLOATS, DECIMALS), max_size=12))
def test_aggregates_match_python(repocket_connection: Any, rows: list[tuple[Any, Any, Any]]) -> None:
    """Count/Sum/Avg/Min/Max over Integer, Float and Decimal (indexed or not) equal Python's, None left out."""
    Stat.objects.all().delete()
    Stat.objects.bulk_create([Stat(i=i, ii=i, f=f, fi=f, d=d, di=d) for i, f, d in rows])
    _check_aggregates(Stat.objects, rows)
    _check_aggregates(Stat.objects.all(), rows)


@settings(max_examples=30)
@given(rows=st.lists(st.tuples(INTS, FLOATS, DECIMALS), max_size=12), threshold=st.integers(-1000, 1000))
def test_filtered_aggregates_match_python(repocket_connection: Any, rows: list[tuple[Any, Any, Any]],
                                          threshold: int) -> None:
    """Aggregates of a filtered query (indexed and unindexed filters) are computed over the matches only."""
    Stat.objects.all().delete()
    Stat.objects.bulk_create([Stat(i=i, ii=i, f=f, fi=f, d=d, di=d) for i, f, d in rows])
    matching = [row for row in rows if row[0] is not None and row[0] >= threshold]
    _check_aggregates(Stat.objects.filter(ii__gte=threshold), matching)
    _check_aggregates(Stat.objects.filter(i__gte=threshold), matching)
    not_matching = [row for row in rows if not (row[0] is not None and row[0] >= threshold)]
    _check_aggregates(Stat.objects.exclude(i__gte=threshold), not_matching)


def test_aggregate_names(repocket_connection: Any) -> None:
    """Positional aggregates are keyed "<field>__<function>", keyword ones by their given name."""
    Stat.create(i=1, f=2.0)
    Stat.create(i=3, f=4.0)
    got = Stat.objects.aggregate(Sum("i"), Avg("f"), Count("pk"), top=Max("i"), bottom=Min("f"))
    assert got == {"i__sum": 4, "f__avg": 3.0, "pk__count": 2, "top": 3, "bottom": 2.0}
    assert Stat.objects.aggregate() == {}


def test_aggregate_empty_model(repocket_connection: Any) -> None:
    """With no record, Count is 0 and the rest None (index path and record path alike)."""
    for name in ("i", "ii", "f", "fi", "d", "di", "t", "ti"):
        got = Stat.objects.aggregate(Count(name), Min(name), Max(name))
        assert got == {f"{name}__count": 0, f"{name}__min": None, f"{name}__max": None}, name
    for name in ("i", "ii", "f", "fi", "d", "di"):
        assert Stat.objects.aggregate(s=Sum(name), a=Avg(name)) == {"s": None, "a": None}
    assert Stat.objects.aggregate(Count("pk")) == {"pk__count": 0}
    Stat.create(**{name: None for name in ("i", "ii", "f", "fi", "d", "di", "t", "ti")})
    assert Stat.objects.aggregate(Count("ii"), Max("ii"), Sum("i"), Count("pk")) == {
        "ii__count": 0, "ii__max": None, "i__sum": None, "pk__count": 1}


def test_aggregate_min_max_of_indexed_int_float_is_one_round_trip(repocket_connection: Any) -> None:
    """Min/Max of an indexed Integer/Float of an unfiltered query cost one round trip, all together."""
    values = [5, -3, 12, 0, 7]
    Stat.objects.bulk_create([Stat(ii=v, fi=v / 2) for v in values])
    for aggs, want in (
        ({"lo": Min("ii")}, {"lo": -3}),
        ({"hi": Max("ii")}, {"hi": 12}),
        ({"lo": Min("fi")}, {"lo": -1.5}),
        ({"hi": Max("fi")}, {"hi": 6.0}),
        ({"a": Min("ii"), "b": Max("ii"), "c": Min("fi"), "d": Max("fi"), "e": Count("pk")},
         {"a": -3, "b": 12, "c": -1.5, "d": 6.0, "e": 5}),
    ):
        with count_round_trips() as trips:
            got = Stat.objects.aggregate(**aggs)
        assert got == want
        assert trips.count == 1, aggs


def test_aggregate_count_pk_and_indexed_field_is_one_round_trip(repocket_connection: Any) -> None:
    """Count("pk") and Count of an indexed field (non-null values) cost one round trip."""
    Stat.objects.bulk_create([Stat(ii=v, wi=w) for v, w in ((1, "a"), (None, "b"), (3, None), (None, None))])
    for agg, want in ((Count("pk"), 4), (Count("ii"), 2), (Count("wi"), 2), (Count("ti"), 0)):
        with count_round_trips() as trips:
            assert Stat.objects.aggregate(x=agg) == {"x": want}
        assert trips.count == 1, agg
    with count_round_trips() as trips:
        assert Stat.objects.aggregate(Count("pk"), Count("ii"), Count("wi")) == {
            "pk__count": 4, "ii__count": 2, "wi__count": 2}
    assert trips.count == 1


@pytest.mark.parametrize("agg", [Min("ti"), Max("ti"), Min("di"), Max("di")], ids=repr)
def test_aggregate_min_max_of_indexed_datetime_and_decimal_round_trips(repocket_connection: Any,
                                                                       agg: Any) -> None:
    """Min/Max of an indexed DateTime or Decimal on an unfiltered query cost at most two round trips."""
    times = [T0 + dt.timedelta(days=d) for d in (3, -2, 0)]
    decimals = [Decimal("2.5"), Decimal("-1.5"), Decimal("7")]
    Stat.objects.bulk_create([Stat(ti=t, di=d) for t, d in zip(times, decimals)])
    want = {"Min": min, "Max": max}[agg.function](times if agg.field == "ti" else decimals)
    with count_round_trips() as trips:
        got = Stat.objects.aggregate(x=agg)["x"]
    assert got == want
    assert trips.count <= 2, trips.names()


def test_aggregate_min_max_exact_for_indexed_datetime_and_decimal(repocket_connection: Any) -> None:
    """Min/Max of indexed DateTime/Decimal sharing a score give the exact extreme value."""
    times = [T0 + dt.timedelta(days=d, microseconds=u) for d, u in ((3, 1), (-2, 0), (3, 2), (0, 5))]
    decimals = [Decimal("12345678901234567890.123456789"), Decimal("12345678901234567890.123456788"),
                Decimal("-1.5"), Decimal("-1.49999999999999999999")]
    Stat.objects.bulk_create([Stat(ti=t, t=t, di=d, d=d) for t, d in zip(times, decimals)])
    got = Stat.objects.aggregate(a=Min("ti"), b=Max("ti"), c=Min("di"), d=Max("di"),
                                 e=Min("t"), f=Max("t"), g=Min("d"), h=Max("d"))
    assert got == {"a": min(times), "b": max(times), "c": min(decimals), "d": max(decimals),
                   "e": min(times), "f": max(times), "g": min(decimals), "h": max(decimals)}
    assert str(got["d"]) == "12345678901234567890.123456789"
    assert str(got["c"]) == "-1.5"


def test_aggregate_float_nan_and_infinities(repocket_connection: Any) -> None:
    """NaN is left out of Min/Max (indexed or not); infinities are the extremes; Count counts NaN."""
    for v in (math.nan, 1.0, math.inf, -math.inf, None):
        Stat.create(f=v, fi=v)
    for name in ("f", "fi"):
        got = Stat.objects.aggregate(lo=Min(name), hi=Max(name), n=Count(name))
        assert got == {"lo": -math.inf, "hi": math.inf, "n": 4}, name
    Stat.objects.all().delete()
    Stat.create(f=math.nan, fi=math.nan)
    assert Stat.objects.aggregate(a=Min("f"), b=Max("fi")) == {"a": None, "b": None}


def test_aggregate_of_sliced_and_ordered_query(repocket_connection: Any) -> None:
    """A slice aggregates only its records; an order alone changes nothing."""
    values = [9, 1, 5, 3, 7]
    for v in values:
        Stat.create(i=v, ii=v)
    assert Stat.objects.order_by("i")[:3].aggregate(Sum("i")) == {"i__sum": 9}
    assert Stat.objects.order_by("-ii")[:2].aggregate(Sum("ii"), Min("ii")) == {"ii__sum": 16, "ii__min": 7}
    assert Stat.objects.order_by("-i").aggregate(Sum("i")) == {"i__sum": 25}


def test_aggregate_on_evaluated_queryset_uses_its_records(repocket_connection: Any) -> None:
    """An evaluated queryset aggregates its cached records without another round trip."""
    for v in (1, 2, 3):
        Stat.create(i=v)
    query = Stat.objects.filter(i__gte=2)
    list(query)
    with count_round_trips() as trips:
        assert query.aggregate(Sum("i"), Count("pk")) == {"i__sum": 5, "pk__count": 2}
    assert trips.count == 0


def test_aggregate_refuses_bad_arguments(repocket_connection: Any) -> None:
    """Sum/Avg of a Unicode field raise ValidationError; unknown fields and non-aggregates raise too."""
    Stat.create(word="x")
    with pytest.raises(errors.ValidationError):
        Stat.objects.aggregate(Sum("word"))
    with pytest.raises(errors.ValidationError):
        Stat.objects.aggregate(Avg("word"))
    with pytest.raises(errors.ValidationError):
        Stat.objects.filter(word="x").aggregate(total=Sum("wi"))
    with pytest.raises(errors.UnknownFieldError):
        Stat.objects.aggregate(Count("nope"))
    with pytest.raises(TypeError):
        Stat.objects.aggregate(x="i")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Sum("")


def test_aggregate_min_max_of_unicode(repocket_connection: Any) -> None:
    """Min/Max of a Unicode field (indexed or not) give the smallest/largest string."""
    for w in ("pear", "apple", None, "zoo"):
        Stat.create(word=w, wi=w)
    for name in ("word", "wi"):
        assert Stat.objects.aggregate(lo=Min(name), hi=Max(name)) == {"lo": "apple", "hi": "zoo"}


def test_avg_types(repocket_connection: Any) -> None:
    """Avg of ints is a float (true division), of Decimals a Decimal."""
    Stat.create(i=1, d=Decimal("1.5"))
    Stat.create(i=2, d=Decimal("2"))
    got = Stat.objects.aggregate(Avg("i"), Avg("d"))
    assert got == {"i__avg": 1.5, "d__avg": Decimal("1.75")}
    assert type(got["i__avg"]) is float and type(got["d__avg"]) is Decimal
