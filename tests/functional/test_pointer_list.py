"""``PointerList`` (SPEC §7): storage, batched loading, index-served queries, atomic edits and UNLINK.

Every scenario runs on a real standalone server, through the sync and the
asyncio executor; stored bytes are read back with redis-py, round trips are
counted, and each ends with a clean ``check()``.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")


class Person(ActiveRecord):
    name = attributes.Unicode(index=True)


class Change(ActiveRecord):
    title = attributes.Unicode()
    number = attributes.Integer(index=True)
    reviewers = attributes.PointerList(Person, related_name="reviewed", on_delete=attributes.UNLINK)
    watchers = attributes.PointerList(Person)  # DO_NOTHING


class Shelf(ActiveRecord):
    label = attributes.Unicode()


class Book(ActiveRecord):
    title = attributes.Unicode()
    shelves = attributes.PointerList(Shelf, on_delete=attributes.PROTECT)


class Tag(ActiveRecord):
    word = attributes.Unicode()


class Note(ActiveRecord):
    text = attributes.Unicode()
    tags = attributes.PointerList(Tag, on_delete=attributes.CASCADE, related_name="notes")


class Plain(ActiveRecord):
    people = attributes.PointerList(Person, related_name="plain_lists")

    class Meta:
        format = "plain"


def _clean(*models: Any) -> None:
    for model in models:
        report = model.objects.check()
        assert report.ok, report


def _evals(requests: list[bytes]) -> int:
    return sum(request.count(b"EVALSHA") for request in requests)


def _people(*names: str) -> list[Person]:
    return [Person.objects.create(name=name) for name in names]


def test_the_list_is_stored_as_an_envelope_of_hash_keys(repocket_connection: redis_py.Redis) -> None:
    ada, bob = _people("ada", "bob")
    change = Change.objects.create(title="t", number=1, reviewers=[bob, ada])
    stored = repocket_connection.hget(change._key(), "reviewers")
    assert orjson.loads(stored) == {"type": "PointerList", "value": [bob._key(), ada._key()],
                                    "module": "repocket.attributes"}
    assert orjson.loads(repocket_connection.hget(change._key(), "watchers"))["value"] == []
    plain = Plain.objects.create(people=[ada])
    assert orjson.loads(repocket_connection.hget(plain._key(), "people")) == [ada._key()]
    assert [p.name for p in Plain.objects.get(plain.pk).people] == ["ada"]
    _clean(Change, Plain)


def test_a_result_set_loads_every_list_in_one_more_round_trip(repocket_connection: redis_py.Redis) -> None:
    people = _people("a", "b", "c", "d")
    for number in range(6):
        Change.objects.create(title="t", number=number, reviewers=people[number % 3:number % 3 + 2],
                              watchers=[people[3]])
    with count_round_trips() as trips:
        changes = list(Change.objects.filter(number__gte=0))
    plain = list(Change.objects.filter(number__gte=0).only("title"))
    assert len(trips.requests) == len(_trips_without_lists(plain)) + 1  # one batched read for every target
    assert {tuple(p.name for p in c.reviewers) for c in changes} == {("a", "b"), ("b", "c"), ("c", "d")}
    assert all(c.watchers[0] is changes[0].watchers[0] for c in changes)  # each target loaded once
    _clean(Change)


def _trips_without_lists(records: list[Any]) -> list[bytes]:
    with count_round_trips() as trips:
        list(Change.objects.filter(number__gte=0).only("title", "number"))
    assert records
    return trips.requests


def test_filter_by_a_listed_record_is_served_by_the_index(repocket_connection: redis_py.Redis) -> None:
    ada, bob, cy = _people("ada", "bob", "cy")
    one = Change.objects.create(title="one", number=1, reviewers=[ada, bob])
    two = Change.objects.create(title="two", number=2, reviewers=[bob])
    Change.objects.create(title="three", number=3, reviewers=[])
    assert repocket_connection.smembers(f"{Change._meta.prefix}:_eq:reviewers:{ada.pk}") == {str(one.pk).encode()}
    assert {c.title for c in Change.objects.filter(reviewers=bob)} == {"one", "two"}
    assert {c.title for c in Change.objects.filter(reviewers=ada.pk)} == {"one"}
    assert {c.title for c in Change.objects.filter(reviewers__in=[ada, cy])} == {"one"}
    assert Change.objects.filter(reviewers=cy).count() == 0
    assert Change.objects.filter(reviewers=bob, number=2).get().title == "two"
    assert {c.title for c in Change.objects.exclude(reviewers=ada)} == {"two", "three"}
    with count_round_trips() as trips:
        assert Change.objects.filter(reviewers=bob).count() == 2
    assert len(trips.requests) == 1
    assert {c.title for c in bob.reviewed.all()} == {"one", "two"}  # the reverse accessor
    assert [c.title for c in ada.reviewed.filter(number__gte=1)] == ["one"]
    assert {c.title for c in two.reviewers[0].reviewed.all()} == {"one", "two"}
    _clean(Change)


def test_unsupported_lookups_and_orderings_are_refused_by_name(repocket_connection: redis_py.Redis) -> None:
    with pytest.raises(errors.ValidationError, match=r"Change\.reviewers: a PointerList is queried with"):
        Change.objects.filter(reviewers__gte=1)
    with pytest.raises(errors.ValidationError, match="no order"):
        Change.objects.order_by("reviewers")
    with pytest.raises(errors.ValidationError, match="Change.reviewers"):
        Change.objects.filter(reviewers="not an id")


def test_bad_values_are_refused_where_they_are_set(repocket_connection: redis_py.Redis) -> None:
    ada, = _people("ada")
    change = Change(title="t", number=1)
    with pytest.raises(errors.ValidationError, match=r"Change\.reviewers.*expected a list of distinct saved"):
        change.reviewers = ada
    with pytest.raises(errors.ValidationError, match="item 1 is in the list already"):
        change.reviewers = [ada, ada]
    with pytest.raises(errors.ValidationError, match="item 0 is a Shelf"):
        change.reviewers = [Shelf(label="s")]
    change.reviewers = [Person(name="unsaved")]
    with pytest.raises(errors.UnsavedReferenceError, match="holds an unsaved"):
        change.save()
    change.reviewers = [ada]
    change.reviewers.append(ada)  # (changed in place: checked at save)
    with pytest.raises(errors.ValidationError, match="in the list already"):
        change.save()
    assert Change.objects.count() == 0
    assert Change(title="t", number=2, reviewers=None).reviewers == []  # None: the empty list


def test_append_and_remove_change_the_stored_list_in_one_call(repocket_connection: redis_py.Redis) -> None:
    ada, bob = _people("ada", "bob")
    change = Change.objects.create(title="t", number=1, reviewers=[ada])
    with count_round_trips() as trips:
        assert change.append_reviewers(bob) is True
    assert _evals(trips.requests) == 1 and len(trips.requests) == 1
    assert change.append_reviewers(bob) is False  # held already
    assert [p.name for p in Change.objects.get(change.pk).reviewers] == ["ada", "bob"]
    assert change.remove_reviewers(ada) is True and change.remove_reviewers(ada) is False
    assert [p.name for p in change.reviewers] == ["bob"]
    assert [p.name for p in Change.objects.get(change.pk).reviewers] == ["bob"]
    assert Change.objects.filter(reviewers=ada).count() == 0 and Change.objects.filter(reviewers=bob).count() == 1
    with pytest.raises(errors.UnsavedReferenceError):
        change.append_reviewers(Person(name="new"))
    with pytest.raises(errors.ValidationError, match="cannot append 3 of type int"):
        change.append_reviewers(3)
    _clean(Change)


def test_an_edit_keeps_what_another_writer_added_meanwhile(repocket_connection: redis_py.Redis) -> None:
    ada, bob, cy = _people("ada", "bob", "cy")
    change = Change.objects.create(title="t", number=1, reviewers=[ada])
    other = Change.objects.get(change.pk)
    other.append_reviewers(bob)
    assert change.append_reviewers(cy) is True  # planned from [ada]: told of bob, and keeps him
    assert [p.name for p in change.reviewers] == ["ada", "bob", "cy"]
    assert [p.name for p in Change.objects.get(change.pk).reviewers] == ["ada", "bob", "cy"]
    _clean(Change)


@pytest.mark.sync_only  # (threads drive the sync executor)
def test_eight_writers_appending_at_once_lose_nothing(repocket_connection: redis_py.Redis) -> None:
    people = _people(*(f"p{n}" for n in range(40)))
    change = Change.objects.create(title="t", number=1)
    failures: list[BaseException] = []

    def writer(offset: int) -> None:
        mine = Change.objects.get(change.pk)
        try:
            for person in people[offset::8]:
                mine.append_reviewers(person)
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    stored = Change.objects.get(change.pk).reviewers
    assert sorted(p.name for p in stored) == sorted(p.name for p in people)
    assert all(Change.objects.filter(reviewers=p).count() == 1 for p in people)
    _clean(Change)


def test_unlink_removes_the_deleted_record_from_every_list_in_one_call(repocket_connection: redis_py.Redis) -> None:
    ada, bob = _people("ada", "bob")
    one = Change.objects.create(title="one", number=1, reviewers=[ada, bob])
    two = Change.objects.create(title="two", number=2, reviewers=[bob])
    with count_round_trips() as trips:
        assert bob.delete() == 1
    assert _evals(trips.requests) == 1
    assert [p.name for p in Change.objects.get(one.pk).reviewers] == ["ada"]
    assert Change.objects.get(two.pk).reviewers == []
    assert not repocket_connection.exists(f"{Change._meta.prefix}:_eq:reviewers:{bob.pk}")
    _clean(Change, Person)


def test_do_nothing_leaves_a_broken_entry_that_reading_names(repocket_connection: redis_py.Redis) -> None:
    ada, bob = _people("ada", "bob")
    change = Change.objects.create(title="t", number=1, watchers=[ada, bob])
    bob_key = bob._key()
    Person.objects.filter(pk=bob.pk).delete()
    loaded = Change.objects.get(change.pk)
    with pytest.raises(errors.BrokenReferenceError, match=bob_key):
        loaded.watchers  # noqa: B018 - reading raises
    assert loaded.title == "t"  # the record still loads
    report = Change.objects.check()
    assert [entry[1:] for entry in report.broken_pointers] == [("watchers", bob_key)]
    assert loaded.remove_watchers(str(bob.pk)) is True  # a broken entry goes by its id
    assert [p.name for p in Change.objects.get(change.pk).watchers] == ["ada"]
    _clean(Change)


def test_protect_through_a_list_refuses_the_delete(repocket_connection: redis_py.Redis) -> None:
    shelf = Shelf.objects.create(label="s")
    book = Book.objects.create(title="b", shelves=[shelf])
    with pytest.raises(errors.ProtectedError, match="on_delete=PROTECT") as info:
        shelf.delete()
    assert info.value.referrers == [book._key()]
    book.remove_shelves(shelf)
    assert shelf.delete() == 1
    _clean(Shelf, Book)


def test_cascade_through_a_list_deletes_the_referrers(repocket_connection: redis_py.Redis) -> None:
    red, blue = Tag.objects.create(word="red"), Tag.objects.create(word="blue")
    Note.objects.create(text="both", tags=[red, blue])
    Note.objects.create(text="blue", tags=[blue])
    Note.objects.create(text="none", tags=[])
    assert {n.text for n in red.notes.all()} == {"both"}
    red.delete()
    assert sorted(n.text for n in Note.objects.all()) == ["blue", "none"]
    _clean(Tag, Note)


def test_prefetch_related_groups_the_referrers_of_every_target(repocket_connection: redis_py.Redis) -> None:
    ada, bob = _people("ada", "bob")
    Change.objects.create(title="one", number=1, reviewers=[ada, bob])
    Change.objects.create(title="two", number=2, reviewers=[bob])
    people = list(Person.objects.filter(name__in=["ada", "bob"]).prefetch_related("reviewed"))
    with count_round_trips() as trips:
        found = {p.name: sorted(c.title for c in p.reviewed.all()) for p in people}
    assert trips.requests == [] and found == {"ada": ["one"], "bob": ["one", "two"]}


def _unlink_race(person: Person) -> int:
    """8 threads append ``person`` to new changes while it is deleted; how many changes were made."""
    stop = threading.Event()
    made = [0]
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(mine: Person) -> None:
        while not stop.is_set():
            change = Change.objects.create(title="raced", number=0)
            try:
                change.append_reviewers(mine)
            except errors.BrokenReferenceError:
                return  # the person is gone
            except BaseException as error:  # noqa: BLE001 - reported below
                failures.append(error)
                return
            with lock:
                made[0] += 1

    # (each its own instance, loaded before the race: the delete marks the main thread's one unsaved)
    threads = [threading.Thread(target=writer, args=(Person.objects.get(person.pk),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        while made[0] < 20:
            stop.wait(0.005)
        person.delete()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    return made[0]


@pytest.mark.sync_only  # (threads drive the sync executor)
def test_a_racing_append_never_leaves_a_list_naming_nothing(repocket_connection: redis_py.Redis) -> None:
    person, = _people("raced")
    assert _unlink_race(person) >= 20
    assert all(change.reviewers == [] for change in Change.objects.all())  # every entry went with its record
    assert Change.objects.filter(reviewers=person.pk).count() == 0
    _clean(Change)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=0, max_value=5), unique=True, max_size=6))
def test_any_list_round_trips_in_order(repocket_connection: redis_py.Redis, picks: list[int]) -> None:
    people = _people(*(f"pool{n}" for n in range(6)))
    change = Change.objects.create(title="p", number=7, reviewers=[people[n] for n in picks])
    loaded = Change.objects.get(change.pk)
    assert [p.pk for p in loaded.reviewers] == [people[n].pk for n in picks]
    assert {c.pk for c in Change.objects.filter(reviewers__in=[people[n] for n in picks])} >= (
        {change.pk} if picks else set())
    change.delete()
    Person.objects.filter(pk__in=[p.pk for p in people]).delete()


class Crew(ActiveRecord):
    """Spread over partitions: its lists and their index sets live in each record's partition."""

    members = attributes.PointerList(Person, related_name="crews", on_delete=attributes.UNLINK)
    name = attributes.Unicode()

    class Meta:
        partitions = 4


def test_a_spread_model_keeps_its_lists_in_each_partition(repocket_connection: redis_py.Redis) -> None:
    people = _people("a", "b", "c")
    crews = [Crew.objects.create(name=f"c{n}", members=people[:n + 1]) for n in range(3)]
    assert Crew.objects.filter(members=people[0]).count() == 3
    assert {c.name for c in Crew.objects.filter(members__in=[people[2]])} == {"c2"}
    loaded = list(Person.objects.filter(name__in=["a", "c"]).prefetch_related("crews"))
    assert {p.name: sorted(c.name for c in p.crews.all()) for p in loaded} == {"a": ["c0", "c1", "c2"],
                                                                               "c": ["c2"]}
    crews[0].append_members(people[2])
    people[0].delete()  # unlinked from every partition's records in one call
    assert sorted(tuple(p.name for p in c.members) for c in Crew.objects.all()) == [("b",), ("b", "c"), ("c",)]
    assert sorted(c.name for c in people[2].crews.all()) == ["c0", "c2"]
    _clean(Crew, Person)


@pytest.mark.sync_only
def test_on_a_cluster_lists_load_query_edit_and_prefetch(cluster: Any) -> None:
    people = _people("a", "b")
    one = Crew.objects.create(name="one", members=[people[0]])
    Crew.objects.create(name="two", members=people)
    assert Crew.objects.filter(members=people[1]).get().name == "two"
    assert one.append_members(people[1]) is True
    assert [p.name for p in Crew.objects.get(one.pk).members] == ["a", "b"]
    loaded = list(Person.objects.all().prefetch_related("crews"))  # (two round trips on a cluster)
    assert {p.name: sorted(c.name for c in p.crews.all()) for p in loaded} == {"a": ["one", "two"],
                                                                               "b": ["one", "two"]}
    assert people[0].delete() == 1  # UNLINK in steps: the lists first, then the person
    assert {c.name: [p.name for p in c.members] for c in Crew.objects.all()} == {"one": ["b"], "two": ["b"]}
    _clean(Crew, Person)


@pytest.mark.sync_only  # (threads drive the sync executor)
def test_racing_saves_of_lists_never_name_nothing_for_each_strategy(repocket_connection: redis_py.Redis) -> None:
    from tests.functional.test_on_delete import _race

    tag = Tag.objects.create(word="raced")
    made, _ = _race(tag, lambda t: Note.objects.create(text="n", tags=[t]), lambda t: t.delete())
    assert made >= 20 and Note.objects.count() == 0  # CASCADE: every note saved went with its tag
    _clean(Tag, Note)

    person, = _people("raced")
    made, _ = _race(person, lambda p: Change.objects.create(title="c", number=1, reviewers=[p]),
                    lambda p: p.delete())
    assert Change.objects.count() == made and all(c.reviewers == [] for c in Change.objects.all())  # UNLINK
    _clean(Change, Person)

    shelf = Shelf.objects.create(label="raced")

    def delete_protected(s: Any) -> None:
        with pytest.raises(errors.ProtectedError):
            s.delete()

    made, refused = _race(shelf, lambda s: Book.objects.create(title="b", shelves=[s]), delete_protected)
    assert refused == 0 and Book.objects.count() == made and Shelf.objects.filter(pk=shelf.pk).exists()
    _clean(Shelf, Book)
