"""Write leases: many writers on one record converge, with no ConflictError for a non-versioned model.

A guard miss gives the writer a short lease on the record (``<prefix>:_lease:<id>``),
and every other write to it waits while the lease is held (see
``repocket/lua/write.lua`` and docs/consistency.rst). Run with ``-s`` to
see how many calls each race took.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from repocket import errors, keys
from repocket.io import sync
from repocket.plan.rounds import Eval
from tests.functional.integrity_models import Ledger, Page, Profile, key_contents, run_threads
from tests.roundtrips import count_round_trips


@pytest.fixture
def conn(repocket_connection: redis_py.Redis) -> Iterator[redis_py.Redis]:
    """repocket configured on a flushed database."""
    yield repocket_connection




@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the write script's replies by kind (ok, conflict, leased, ...) during the test."""
    seen: Counter[str] = Counter()
    original = sync._script  # how the sync executor sends a script call

    def counting(client: Any, step: Eval) -> Any:
        reply = original(client, step)
        if step.script == "write":
            seen[(reply[0] if reply[0] == b"ok" else reply[2][0]).decode()] += 1
        return reply

    monkeypatch.setattr(sync, "_script", counting)
    return seen


def lease_keys(client: redis_py.Redis) -> list[bytes]:
    """Every lease key in the database."""
    return sorted(client.scan_iter(match="*:_lease:*"))


def assert_clean(*models: type[Any]) -> None:
    """check() of every model finds nothing wrong."""
    for model in models:
        report = model.objects.check()
        assert len(report) == 0, report


def race_saves(conn: redis_py.Redis, url: str, threads: int, rounds: int, replies: Counter[str]) -> None:
    """``threads`` threads each get, set both indexed fields and save one record ``rounds`` times."""
    record = Profile.create(name="start", bio="b", age=0)

    def writer(i: int, client: redis_py.Redis) -> int:
        for k in range(rounds):
            copy = Profile.objects.using(client).get(id=record.id)
            copy.name, copy.age = f"w{i}-{k}", i * 100_000 + k
            copy.save(connection=client)
        return rounds

    results = run_threads(threads, writer, url)
    print(f"\n[contention] {threads} threads x {rounds} saves: write script replies {dict(replies)}")
    assert results == [rounds] * threads, [r for r in results if not isinstance(r, int)][:3]
    stored = Profile.objects.get(id=record.id)
    writer_number, step = (int(part) for part in stored.name[1:].split("-"))
    assert stored.age == writer_number * 100_000 + step  # name and age come from one save
    assert stored.bio == "b"
    assert Profile.objects.filter(name=stored.name) == [stored]
    assert Profile.objects.filter(age=stored.age) == [stored]
    assert Profile.objects.filter(age__lt=stored.age).count() == 0
    assert lease_keys(conn) == []
    assert_clean(Profile)


@pytest.mark.slow
def test_eight_threads_saving_one_record_never_raise(conn: redis_py.Redis, redis_url: str,
                                                     replies: Counter[str]) -> None:
    """8 threads x 200 get / set indexed fields / save on one record: no exception, indexes exact."""
    race_saves(conn, redis_url, 8, 200, replies)


@pytest.mark.slow
def test_two_threads_saving_one_record_never_raise(conn: redis_py.Redis, redis_url: str,
                                                   replies: Counter[str]) -> None:
    """2 threads x 200 get / set indexed fields / save on one record: no exception, indexes exact."""
    race_saves(conn, redis_url, 2, 200, replies)


@pytest.mark.slow
def test_deletes_racing_saves_leave_the_record_consistent(conn: redis_py.Redis, redis_url: str) -> None:
    """3 savers and a deleter (by id, never loaded) on one record: no error, and check() stays empty."""
    record = Profile.create(name="start", bio="b", age=0)
    rounds = 150

    def work(i: int, client: redis_py.Redis) -> int:
        deletes = 0
        for k in range(rounds):
            if i == 0:
                deletes += Profile(id=record.id).delete(connection=client)
                continue
            try:
                copy = Profile.objects.using(client).get(id=record.id)
            except Profile.DoesNotExist:
                copy = Profile(id=record.id, bio="again")
            copy.name, copy.age = f"w{i}-{k}", i * 1000 + k
            copy.save(connection=client)
        return deletes

    results = run_threads(4, work, redis_url)
    assert all(isinstance(r, int) for r in results), results
    print(f"\n[contention] deletes racing saves: {results[0]} deletes took effect")
    survivors = list(Profile.objects.all())
    assert len(survivors) <= 1
    for stored in survivors:
        assert Profile.objects.filter(name=stored.name) == [stored]
        assert Profile.objects.filter(age=stored.age) == [stored]
    assert lease_keys(conn) == []
    assert_clean(Profile)


@pytest.mark.slow
def test_float_increments_racing_saves_lose_nothing(conn: redis_py.Redis, redis_url: str) -> None:
    """Guarded Float increments and Integer increments racing saves of another field are all kept."""
    page = Page.create(title="p", views=0, rating=0.0)

    def work(i: int, client: redis_py.Redis) -> None:
        for k in range(100):
            if i < 2:
                page.incr("rating", 1.0, connection=client)
                page.incr("views", connection=client)
            else:
                copy = Page.objects.using(client).get(id=page.id)
                copy.title = f"t{i}-{k}"
                copy.save(connection=client)

    assert run_threads(4, work, redis_url) == [None] * 4
    stored = Page.objects.get(id=page.id)
    assert (stored.rating, stored.views) == (200.0, 200)
    assert Page.objects.filter(rating=200.0) == [stored]
    assert lease_keys(conn) == []
    assert_clean(Page)


@pytest.mark.one_partition
def test_a_lease_of_another_writer_delays_writes_until_it_expires(conn: redis_py.Redis) -> None:
    """A lease left by a crashed writer holds save, delete and incr back until it expires, then they run."""
    page = Page.create(title="p", views=1)
    lease = keys.lease_key(Page._meta.prefix, str(page.id))

    def retitle() -> None:
        page.title = "q"
        page.save()

    for action in (lambda: page.incr("views"), retitle, page.delete):
        conn.set(lease, b"crashed-writer", px=300)
        started = time.monotonic()
        action()
        assert time.monotonic() - started >= 0.2
        assert not conn.exists(lease)
    assert not conn.exists(page._key())
    assert_clean(Page)


@pytest.mark.one_partition
def test_a_lease_without_expiry_is_ignored(conn: redis_py.Redis) -> None:
    """A lease key that repocket did not set (no expiry) never blocks a record's writes."""
    page = Page.create(title="p", views=1)
    lease = keys.lease_key(Page._meta.prefix, str(page.id))
    conn.set(lease, b"someone")
    started = time.monotonic()
    assert page.incr("views") == 2
    page.title = "q"
    page.save()
    assert time.monotonic() - started < 1.0
    assert Page.objects.get(id=page.id).title == "q"


@pytest.mark.one_partition
def test_check_does_not_report_a_lease(conn: redis_py.Redis) -> None:
    """check() treats a lease key as bookkeeping: a held lease is not a problem, and repair leaves it."""
    profile = Profile.create(name="n", age=1)
    lease = keys.lease_key(Profile._meta.prefix, str(profile.id))
    conn.set(lease, b"a-writer", px=5000)
    assert len(Profile.objects.check()) == 0
    assert Profile.objects.check(repair=True).ok
    assert conn.get(lease) == b"a-writer"
    assert Profile.objects.reindex() == 1


def test_a_writer_that_gives_up_releases_its_lease(conn: redis_py.Redis) -> None:
    """A guarded increment that took a lease, then met a corrupt value, leaves no lease and no change."""
    page = Page.create(title="p", rating=1.0)
    conn.hset(page._key(), "rating", b'{"type": "Float", "value": "lots", "module": "repocket.attributes"}')
    before = key_contents(conn)
    with pytest.raises(errors.CorruptRecordError):
        page.incr("rating", 1.0)
    assert lease_keys(conn) == []
    assert key_contents(conn) == before


def test_a_conflicting_save_takes_two_calls_and_leaves_no_lease(conn: redis_py.Redis, replies: Counter[str]) -> None:
    """A save whose guard misses is refused once (taking the lease) and written by its next call."""
    record = Profile.create(name="a", age=1)
    stale = Profile.objects.get(id=record.id)
    record.name = "b"
    record.save()
    replies.clear()
    stale.name = "c"
    with count_round_trips() as trips:
        stale.save()
    assert trips.count == 2
    assert dict(replies) == {"conflict": 1, "ok": 1}
    assert Profile.objects.filter(name="c") == [Profile.objects.get(id=record.id)]
    assert lease_keys(conn) == []
    assert_clean(Profile)


def test_an_uncontended_save_delete_and_incr_are_one_round_trip_each(conn: redis_py.Redis) -> None:
    """With no other writer, save (indexed change), delete and incr each take one round trip."""
    Page.create(title="warm-up").delete()  # loads the scripts
    Page.create(title="warm-up").incr("views")
    page = Page.create(title="p", views=1, rating=1.0)
    page.views, page.rating = 2, 2.0
    for action in (page.save, lambda: page.incr("views"), lambda: page.incr("rating", 0.5), page.delete):
        with count_round_trips() as trips:
            action()
        assert trips.count == 1


def test_a_float_increment_of_a_stale_instance_takes_one_more_round_trip(conn: redis_py.Redis) -> None:
    """A Float is added in Python against the stored value the instance loaded: when another
    writer changed it since, the guard misses once and the second call adds to the current value."""
    page = Page.create(title="f", rating=1.0)
    Page.objects.get(id=page.id).incr("rating", 10.0)
    page.incr("rating", 0.5)  # (the script is loaded now)
    other = Page.objects.get(id=page.id)
    other.incr("rating", 1.0)
    with count_round_trips() as trips:
        assert page.incr("rating", 0.25) == 12.75
    assert trips.count == 2
    assert Page.objects.get(id=page.id).rating == 12.75
    assert_clean(Page)


def test_a_stale_versioned_save_still_conflicts(conn: redis_py.Redis) -> None:
    """Leases do not change optimistic locking: a stale copy of a versioned record raises ConflictError."""
    record = Ledger.create(label="a", balance=1)
    stale = Ledger.objects.get(id=record.id)
    record.balance = 2
    record.save()
    stale.balance = 3
    with pytest.raises(errors.ConflictError):
        stale.save()
    assert Ledger.objects.get(id=record.id).balance == 2
    assert lease_keys(conn) == []
