"""Integrity under concurrency: dirty tracking, unique constraints, optimistic locking, atomic counters.

Every race test runs real threads (or spawned processes) against the test
server, released together by a barrier, and ends by asserting that
``Model.objects.check()`` finds nothing wrong.
"""

from __future__ import annotations

import decimal
import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from repocket import errors, store
from tests.functional import integrity_models as im
from tests.functional.integrity_models import (
    Account,
    Ledger,
    Page,
    Profile,
    Ticket,
    Vault,
    Wide,
    run_threads,
)
from tests.roundtrips import count_round_trips

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")

#: Races run in this module, by kind (each race test prints its line; run with -s to see them).
RACES: dict[str, int] = {}


def assert_clean(*models: type[Any]) -> None:
    """check() of every model finds nothing: ids, indexes, unique claims and records agree."""
    for model in models:
        report = model.objects.check()
        assert len(report) == 0 and report.ok, report




def count_race(name: str) -> None:
    """Count one race run and print the running total."""
    RACES[name] = RACES.get(name, 0) + 1
    print(f"\n[integrity] race run: {name} (races so far: {sum(RACES.values())})")


@pytest.fixture
def conn(repocket_connection: redis_py.Redis) -> Iterator[redis_py.Redis]:
    """repocket configured on a flushed database."""
    yield repocket_connection


# -- dirty tracking ------------------------------------------------------------------------


def test_two_copies_changing_different_attributes_both_keep_their_change(conn: redis_py.Redis) -> None:
    """Two loaded copies each change a different attribute and save: both changes survive."""
    original = Profile.create(name="ann", bio="old bio", age=30)
    first = Profile.objects.get(id=original.id)
    second = Profile.objects.get(id=original.id)
    first.bio = "new bio"
    first.save()
    second.age = 31
    second.save()
    stored = Profile.objects.get(id=original.id)
    assert (stored.name, stored.bio, stored.age) == ("ann", "new bio", 31)
    assert Profile.objects.filter(age=31) == [stored]
    assert Profile.objects.filter(age=30) == []
    assert_clean(Profile)


def test_bytestream_and_hash_changes_from_two_copies_both_survive(conn: redis_py.Redis) -> None:
    """One copy appends to a ByteStream, another changes a hash attribute: both survive."""
    original = Profile.create(name="bob", bio="b", age=1, avatar=b"abc")
    first = Profile.objects.get(id=original.id)
    second = Profile.objects.get(id=original.id)
    first.append_avatar(b"def")
    second.name = "bobby"
    second.save()
    stored = Profile.objects.get(id=original.id)
    assert (stored.name, stored.avatar) == ("bobby", b"abcdef")
    assert_clean(Profile)


def test_save_force_writes_every_attribute(conn: redis_py.Redis) -> None:
    """save(force=True) writes every attribute, overwriting another copy's change."""
    original = Profile.create(name="cy", bio="old", age=5)
    first = Profile.objects.get(id=original.id)
    second = Profile.objects.get(id=original.id)
    first.bio = "first's bio"
    first.age = 6
    first.save()
    second.name = "cyril"
    second.save(force=True)
    stored = Profile.objects.get(id=original.id)
    assert (stored.name, stored.bio, stored.age) == ("cyril", "old", 5)
    assert Profile.objects.filter(age=5) == [stored]
    assert Profile.objects.filter(age=6) == []
    assert_clean(Profile)


def test_unchanged_save_writes_no_attribute(conn: redis_py.Redis) -> None:
    """save() of an unchanged loaded copy does not overwrite another writer's newer value."""
    original = Profile.create(name="di", bio="x", age=1)
    stale = Profile.objects.get(id=original.id)
    original.bio = "newer"
    original.save()
    stale.save()
    assert Profile.objects.get(id=original.id).bio == "newer"
    assert_clean(Profile)


@pytest.mark.slow
def test_eight_threads_updating_their_own_attribute_all_keep_their_updates(
    conn: redis_py.Redis, redis_url: str
) -> None:
    """8 threads each load, set their own attribute and save, 150 times: every attribute ends at 150."""
    record = Wide.create()
    rounds = 150

    def writer(i: int, client: redis_py.Redis) -> int:
        field = im.WIDE_FIELDS[i]
        for value in range(1, rounds + 1):
            copy = Wide.objects.using(client).get(id=record.id)
            setattr(copy, field, value)
            copy.save(connection=client)
        return rounds

    results = run_threads(8, writer, redis_url)
    count_race("dirty tracking, 8 threads")
    assert results == [rounds] * 8
    stored = Wide.objects.get(id=record.id)
    assert [stored[f] for f in im.WIDE_FIELDS] == [rounds] * 8
    assert Wide.objects.filter(f0=rounds, f6=rounds) == [stored]
    assert_clean(Wide)


@pytest.mark.slow
def test_readers_never_see_a_hash_and_bytestream_from_different_saves(
    conn: redis_py.Redis, redis_url: str
) -> None:
    """While one thread saves name and ByteStream together, readers always see a matching pair."""
    record = Profile.create(name="v0", bio="", age=0, avatar=b"v0")
    saves = 300

    def work(i: int, client: redis_py.Redis) -> int:
        if i == 0:
            for n in range(1, saves + 1):
                record.name, record.age, record.avatar = f"v{n}", n, f"v{n}".encode()
                record.save(connection=client)
            return saves
        reads = 0
        while True:
            seen = Profile.objects.using(client).get(id=record.id)
            assert seen.avatar == seen.name.encode() and seen.name == f"v{seen.age}", seen
            reads += 1
            if seen.age == saves:
                return reads

    results = run_threads(4, work, redis_url)
    count_race("snapshot reads, 1 writer + 3 readers")
    assert all(isinstance(r, int) for r in results), results
    print(f"[integrity] snapshot reads while saving: {sum(results[1:])}")
    assert_clean(Profile)


# -- unique constraints ----------------------------------------------------------------------


def test_unique_value_taken_raises_naming_model_field_and_value(conn: redis_py.Redis) -> None:
    """Creating a second record with a taken unique value raises UniqueConstraintError naming all three."""
    Account.create(email="a@example.org")
    with pytest.raises(errors.UniqueConstraintError) as info:
        Account.create(email="a@example.org")
    exc = info.value
    assert exc.model == Account._meta.label
    assert exc.field == "email"
    assert exc.value == "a@example.org"
    assert "Account" in str(exc) and "email" in str(exc) and "a@example.org" in str(exc)
    assert Account.objects.count() == 1
    assert_clean(Account)


def test_unique_integer_error_carries_the_value(conn: redis_py.Redis) -> None:
    """UniqueConstraintError on an Integer attribute carries the value itself and names it."""
    Ticket.create(number=7, holder="a")
    with pytest.raises(errors.UniqueConstraintError) as info:
        Ticket.create(number=7, holder="b")
    assert info.value.field == "number"
    assert info.value.value == 7
    assert "7" in str(info.value)
    assert [t.holder for t in Ticket.objects.all()] == ["a"]
    assert_clean(Ticket)


@pytest.mark.slow
def test_sixteen_threads_racing_for_one_unique_value_exactly_one_wins(
    conn: redis_py.Redis, redis_url: str
) -> None:
    """16 threads create the same unique value at once: one succeeds, 15 fail, none of theirs is written."""
    for round_number in range(5):
        conn.flushdb()
        email = f"race{round_number}@example.org"

        def create(i: int, client: redis_py.Redis, email: str = email) -> Any:
            return Account.create(connection=client, email=email, note=f"thread {i}")

        results = run_threads(16, create, redis_url)
        count_race("unique, 16 threads")
        winners = [r for r in results if isinstance(r, Account)]
        losers = [r for r in results if isinstance(r, errors.UniqueConstraintError)]
        assert len(winners) == 1, results
        assert len(losers) == 15, results
        for exc in losers:
            assert (exc.model, exc.field, exc.value) == (Account._meta.label, "email", email)
        winner = winners[0]
        assert im.ids_in_database(conn) == {str(winner.id)}
        assert Account.objects.get(email=email) == winner
        assert Account.objects.count() == 1
        assert_clean(Account)


@pytest.mark.slow
def test_four_processes_racing_for_one_unique_value_exactly_one_wins(
    conn: redis_py.Redis, redis_url: str
) -> None:
    """4 spawned processes create the same unique value at once: exactly one wins, nothing else is written."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    email = "proc@example.org"
    procs = [
        ctx.Process(target=im.claim_email, args=(redis_url, email, f"proc {i}", barrier, results))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    count_race("unique, 4 processes")
    ok = [o for o in outcomes if o[0] == "ok"]
    taken = [o for o in outcomes if o[0] == "taken"]
    assert len(ok) == 1 and len(taken) == 3, outcomes
    for _, _, model, field, value, _ in taken:
        assert (model, field, value) == (Account._meta.label, "email", email)
    winner = Account.objects.get(email=email)
    assert str(winner.id) == ok[0][2]
    assert winner.note == ok[0][1]
    assert im.ids_in_database(conn) == {ok[0][2]}
    assert_clean(Account)


def test_changing_a_unique_value_frees_the_old_one(conn: redis_py.Redis) -> None:
    """After a record changes its unique value, another record can take the old value."""
    first = Account.create(email="old@example.org")
    first.email = "new@example.org"
    first.save()
    second = Account.create(email="old@example.org")
    with pytest.raises(errors.UniqueConstraintError):
        Account.create(email="new@example.org")
    assert Account.objects.get(email="old@example.org") == second
    assert Account.objects.get(email="new@example.org") == first
    assert_clean(Account)


def test_deleting_a_record_frees_its_unique_value(conn: redis_py.Redis) -> None:
    """After a record is deleted, another record can take its unique value."""
    first = Account.create(email="gone@example.org")
    first.delete()
    second = Account.create(email="gone@example.org")
    assert Account.objects.get(email="gone@example.org") == second
    assert_clean(Account)


def test_a_failed_unique_update_writes_nothing(conn: redis_py.Redis) -> None:
    """Updating a record to a taken unique value fails and leaves the record as it was."""
    Account.create(email="one@example.org")
    two = Account.create(email="two@example.org", note="keep")
    before = conn.hgetall(two._key())
    two.email = "one@example.org"
    two.note = "changed"
    with pytest.raises(errors.UniqueConstraintError):
        two.save()
    assert conn.hgetall(two._key()) == before
    assert Account.objects.get(email="two@example.org").note == "keep"
    assert_clean(Account)


@pytest.mark.slow
def test_threads_swapping_unique_values_never_share_one(conn: redis_py.Redis, redis_url: str) -> None:
    """Threads moving records between a few unique values never leave two records holding one."""
    records = [Ticket.create(number=i, holder=f"h{i}") for i in range(4)]

    def mover(i: int, client: redis_py.Redis) -> int:
        moved = 0
        for step in range(60):
            copy = Ticket.objects.using(client).get(id=records[i].id)
            copy.number = 100 + (i + step) % 6
            try:
                copy.save(connection=client)
                moved += 1
            except errors.UniqueConstraintError:
                pass
        return moved

    results = run_threads(4, mover, redis_url)
    count_race("unique swaps, 4 threads")
    assert all(isinstance(r, int) for r in results), results
    numbers = [t.number for t in Ticket.objects.all()]
    assert len(numbers) == 4 and len(set(numbers)) == 4
    assert_clean(Ticket)


# -- optimistic locking --------------------------------------------------------------------


def test_stale_versioned_save_raises_conflict_and_writes_nothing(conn: redis_py.Redis) -> None:
    """save() of a stale copy of a versioned record raises ConflictError and writes nothing."""
    record = Ledger.create(label="a", balance=0)
    fresh = Ledger.objects.get(id=record.id)
    stale = Ledger.objects.get(id=record.id)
    fresh.balance = 10
    fresh.save()
    before = conn.hgetall(record._key())
    stale.label = "stale label"
    with pytest.raises(errors.ConflictError):
        stale.save()
    assert conn.hgetall(record._key()) == before
    stored = Ledger.objects.get(id=record.id)
    assert (stored.label, stored.balance) == ("a", 10)
    assert_clean(Ledger)


def test_refresh_then_save_succeeds(conn: redis_py.Redis) -> None:
    """After a conflict, refresh() reloads the record and the next save succeeds."""
    record = Ledger.create(label="a", balance=0)
    stale = Ledger.objects.get(id=record.id)
    record.balance = 5
    record.save()
    stale.label = "b"
    with pytest.raises(errors.ConflictError):
        stale.save()
    stale.refresh()
    assert (stale.label, stale.balance) == ("a", 5)
    stale.label = "b"
    stale.save()
    stored = Ledger.objects.get(id=record.id)
    assert (stored.label, stored.balance) == ("b", 5)
    assert_clean(Ledger)


def test_stale_versioned_delete_raises_conflict(conn: redis_py.Redis) -> None:
    """delete() of a stale copy of a versioned record raises ConflictError and the record stays."""
    record = Ledger.create(label="a", balance=0)
    stale = Ledger.objects.get(id=record.id)
    record.balance = 1
    record.save()
    with pytest.raises(errors.ConflictError):
        stale.delete()
    assert Ledger.objects.get(id=record.id).balance == 1
    assert_clean(Ledger)


def test_two_fresh_creates_of_one_versioned_id_conflict(conn: redis_py.Redis) -> None:
    """A second never-loaded instance saved under an existing versioned id raises ConflictError."""
    record = Ledger.create(label="a", balance=3)
    twin = Ledger(id=record.id, label="twin", balance=4)
    with pytest.raises(errors.ConflictError):
        twin.save()
    stored = Ledger.objects.get(id=record.id)
    assert (stored.label, stored.balance) == ("a", 3)
    assert_clean(Ledger)


@pytest.mark.slow
def test_two_writers_racing_read_modify_write_lose_no_update(conn: redis_py.Redis, redis_url: str) -> None:
    """Two threads do 500 read-modify-write increments each, retrying on conflict: the total is exact."""
    record = Ledger.create(label="race", balance=0)
    per_thread = 500
    conflicts = [0, 0]

    def writer(i: int, client: redis_py.Redis) -> int:
        copy = Ledger.objects.using(client).get(id=record.id)
        done = 0
        while done < per_thread:
            copy.balance += 1
            try:
                copy.save(connection=client)
            except errors.ConflictError:
                conflicts[i] += 1
                copy.refresh(connection=client)
                continue
            done += 1
        return done

    results = run_threads(2, writer, redis_url)
    count_race("versioned read-modify-write, 2 threads")
    assert results == [per_thread, per_thread]
    stored = Ledger.objects.get(id=record.id)
    assert stored.balance == 2 * per_thread
    assert int(conn.hget(record._key(), "_version")) == 1 + 2 * per_thread
    assert Ledger.objects.filter(balance=2 * per_thread) == [stored]
    print(f"\n[integrity] versioned race: {sum(conflicts)} conflicts retried")
    assert_clean(Ledger)


# -- atomic counters ---------------------------------------------------------------------------


@pytest.mark.slow
def test_thirty_two_threads_incrementing_one_counter_end_exact(conn: redis_py.Redis, redis_url: str) -> None:
    """32 threads x 500 incr("views") end at exactly 16,000, and the index says so too."""
    page = Page.create(title="hot")

    def bump(i: int, client: redis_py.Redis) -> int:
        copy = Page.objects.using(client).get(id=page.id)
        for _ in range(500):
            copy.incr("views", connection=client)
        return copy.views

    results = run_threads(32, bump, redis_url)
    count_race("incr Integer, 32 threads")
    assert all(isinstance(r, int) and 0 < r <= 16_000 for r in results), results
    assert max(results) == 16_000
    stored = Page.objects.get(id=page.id)
    assert stored.views == 16_000
    assert Page.objects.filter(views=16_000) == [stored]
    assert Page.objects.filter(views=0) == []
    assert Page.objects.filter(views__gte=15_999) == [stored]
    assert_clean(Page)


@pytest.mark.slow
def test_float_increments_from_threads_are_exact(conn: redis_py.Redis, redis_url: str) -> None:
    """4 threads x 50 incr("rating", 0.1) end at the float that 200 sequential additions give."""
    page = Page.create(title="f")

    def bump(i: int, client: redis_py.Redis) -> None:
        for _ in range(50):
            page.incr("rating", 0.1, connection=client)

    results = run_threads(4, bump, redis_url)
    count_race("incr Float, 4 threads")
    assert results == [None] * 4
    expected = 0.0
    for _ in range(200):
        expected += 0.1
    stored = Page.objects.get(id=page.id)
    assert stored.rating == expected
    assert Page.objects.filter(rating=expected) == [stored]
    assert_clean(Page)


@pytest.mark.slow
def test_decimal_increments_from_threads_are_exact(conn: redis_py.Redis, redis_url: str) -> None:
    """4 threads x 50 incr("total", Decimal("0.1")) end at exactly Decimal("20.0")."""
    page = Page.create(title="d")

    def bump(i: int, client: redis_py.Redis) -> None:
        for _ in range(50):
            page.incr("total", decimal.Decimal("0.1"), connection=client)

    results = run_threads(4, bump, redis_url)
    count_race("incr Decimal, 4 threads")
    assert results == [None] * 4
    stored = Page.objects.get(id=page.id)
    assert str(stored.total) == "20.0"
    assert Page.objects.filter(total=decimal.Decimal("20")) == [stored]
    assert_clean(Page)


@pytest.mark.slow
def test_mixed_incr_and_decr_from_threads_sum_exactly(conn: redis_py.Redis, redis_url: str) -> None:
    """Threads adding 3 and threads subtracting 2 (Integer, unindexed too) end at the exact sum."""
    page = Page.create(title="mix", views=1000, plain=-5)

    def work(i: int, client: redis_py.Redis) -> None:
        for _ in range(200):
            if i % 2:
                page.incr("views", 3, connection=client)
                page.incr("plain", 3, connection=client)
            else:
                page.decr("views", 2, connection=client)
                page.decr("plain", 2, connection=client)

    results = run_threads(6, work, redis_url)
    count_race("incr/decr Integer, 6 threads")
    assert results == [None] * 6
    stored = Page.objects.get(id=page.id)
    assert stored.views == 1000 + 3 * 600 - 2 * 600
    assert stored.plain == -5 + 3 * 600 - 2 * 600
    assert_clean(Page)


def test_incr_returns_the_new_value_and_keeps_the_index(conn: redis_py.Redis) -> None:
    """incr/decr return the stored result, update the instance, and move the index entries."""
    page = Page.create(title="p", views=5)
    assert page.incr("views", 10) == 15
    assert page.views == 15
    assert page.decr("views") == 14
    assert Page.objects.filter(views=14) == [page]
    assert Page.objects.filter(views=5) == []
    assert Page.objects.filter(views=15) == []
    assert_clean(Page)


def test_incr_writes_only_the_counter(conn: redis_py.Redis) -> None:
    """incr on a copy with unsaved changes writes only the counter, not the other changes."""
    page = Page.create(title="before", views=1)
    copy = Page.objects.get(id=page.id)
    copy.title = "unsaved"
    copy.incr("views")
    stored = Page.objects.get(id=page.id)
    assert (stored.title, stored.views) == ("before", 2)
    assert_clean(Page)


def test_incr_past_two_to_the_53_is_exact(conn: redis_py.Redis) -> None:
    """incr of an Integer beyond 2**53 keeps every digit and the index finds the exact value."""
    page = Page.create(title="big", views=2**53 - 1)
    assert page.incr("views", 2) == 2**53 + 1
    page.incr("views", 2**60)
    stored = Page.objects.get(id=page.id)
    assert stored.views == 2**53 + 1 + 2**60
    assert Page.objects.filter(views=2**53 + 1 + 2**60) == [stored]
    assert_clean(Page)


def test_incr_on_a_non_number_raises_validation_error(conn: redis_py.Redis) -> None:
    """incr on a Unicode attribute, or by a non-number, raises ValidationError and writes nothing."""
    page = Page.create(title="t", views=1)
    before = conn.hgetall(page._key())
    with pytest.raises(errors.ValidationError):
        page.incr("title")
    with pytest.raises(errors.ValidationError):
        page.incr("views", "lots")
    with pytest.raises(errors.ValidationError):
        page.incr("views", 1.5)
    with pytest.raises(errors.UnknownFieldError):
        page.incr("nope")
    assert conn.hgetall(page._key()) == before
    assert_clean(Page)


def test_incr_on_null_raises_validation_error(conn: redis_py.Redis) -> None:
    """incr on a number attribute holding None raises ValidationError and writes nothing."""
    page = Page.create(title="n", maybe=None)
    with pytest.raises(errors.ValidationError):
        page.incr("maybe")
    assert Page.objects.get(id=page.id).maybe is None
    assert_clean(Page)


@pytest.mark.parametrize("name", ["views", "plain", "rating", "total"])
def test_incr_of_a_field_missing_from_the_hash_starts_from_the_default(conn: redis_py.Redis, name: str) -> None:
    """A counter the stored hash lacks (declared after the record was written) counts up from its default."""
    page = Page.create(title="old", views=5, plain=5, rating=5.0, total=decimal.Decimal("5"))
    conn.hdel(page._key(), name)
    Page.objects.check(repair=True)  # as if written before the attribute (and its index) existed
    empty = Page._meta.fields[name].get_default()
    assert page.incr(name, 2) == empty + 2
    assert getattr(Page.objects.get(id=page.id), name) == empty + 2
    assert_clean(Page)


@pytest.mark.parametrize("action", ["save", "delete"])
def test_a_field_missing_from_the_hash_leaves_no_stale_index_entry(conn: redis_py.Redis, action: str) -> None:
    """A loaded record lacking an indexed field reads as its default; saving or deleting it drops that entry."""
    page = Page.create(title="old", views=5)
    conn.hdel(page._key(), "views")
    Page.objects.check(repair=True)  # as if written before the attribute (and its index) existed
    loaded = Page.objects.get(id=page.id)
    assert loaded.views == 0 and Page.objects.filter(views=0) == [loaded]
    if action == "save":
        loaded.views = 9
        loaded.save()
        assert Page.objects.filter(views=9) == [loaded]
    else:
        loaded.delete()
    assert Page.objects.filter(views=0) == []
    assert_clean(Page)


def test_decr_by_none_raises_validation_error(conn: redis_py.Redis) -> None:
    """decr by None raises ValidationError (like incr) and writes nothing."""
    page = Page.create(title="d", views=3)
    with pytest.raises(errors.ValidationError):
        page.decr("views", None)
    assert Page.objects.get(id=page.id).views == 3


@pytest.mark.parametrize("name", ["views", "plain", "rating", "total"])
def test_incr_on_a_deleted_record_raises_does_not_exist(conn: redis_py.Redis, name: str) -> None:
    """incr on a record deleted meanwhile raises DoesNotExist and recreates nothing."""
    page = Page.create(title="gone")
    copy = Page.objects.get(id=page.id)
    page.delete()
    with pytest.raises(Page.DoesNotExist):
        copy.incr(name, 1)
    assert conn.exists(page._key()) == 0
    assert im.ids_in_database(conn) == set()
    assert_clean(Page)


@pytest.mark.one_partition
def test_incr_of_a_unique_integer_respects_the_constraint(conn: redis_py.Redis) -> None:
    """incr that would take another record's unique value raises UniqueConstraintError, writing nothing."""
    one = Ticket.create(number=1, holder="one")
    Ticket.create(number=2, holder="two")
    with pytest.raises(errors.UniqueConstraintError):
        one.incr("number")
    assert Ticket.objects.get(id=one.id).number == 1
    assert one.incr("number", 5) == 6
    assert Ticket.objects.get(number=6) == Ticket.objects.get(id=one.id)
    Ticket.create(number=1, holder="new one")
    assert_clean(Ticket)


def test_versioned_incr_bumps_the_version(conn: redis_py.Redis) -> None:
    """incr on a versioned record bumps its version, so an older copy's save then conflicts."""
    record = Ledger.create(label="v", balance=0)
    stale = Ledger.objects.get(id=record.id)
    record.incr("balance", 3)
    stale.label = "late"
    with pytest.raises(errors.ConflictError):
        stale.save()
    assert Ledger.objects.get(id=record.id).balance == 3
    assert_clean(Ledger)


# -- secrets ------------------------------------------------------------------------------------


def test_secret_attributes_are_masked_in_repr_and_simple_dict(conn: redis_py.Redis) -> None:
    """secret=True values are masked in repr() and to_dict(simple=True), shown with reveal=True."""
    vault = Vault.create(owner="ann", token="tok-9f8e7d", pin=4321)
    for record in (vault, Vault.objects.get(id=vault.id)):
        text = repr(record)
        assert "tok-9f8e7d" not in text and "4321" not in text
        assert "ann" in text
        simple = record.to_dict(simple=True)
        assert simple["token"] == "***" and simple["pin"] == "***"
        assert simple["owner"] == "ann"
        revealed = record.to_dict(simple=True, reveal=True)
        assert revealed["token"] == "tok-9f8e7d" and revealed["pin"] == 4321
        assert record.token == "tok-9f8e7d"
    assert_clean(Vault)



SECRET_TOKEN = "tok-S3CRET-9f8e7d"


def _error_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def _assert_secret_free(exc: BaseException, *secrets: str) -> None:
    """No secret in the message, repr, args or attributes of ``exc`` or of anything it chains to."""
    for link in _error_chain(exc):
        for text in (str(link), repr(link), repr(link.args), repr(getattr(link, "__dict__", {}))):
            for secret in secrets:
                assert secret not in text, (type(link).__name__, text)


@pytest.mark.parametrize(
    ("field", "stored"),
    [
        ("token", b'{"type": "Unicode", "value": 12345678, "module": "repocket.attributes"}'),
        ("token", b'{"type": "Unicode", "value": "' + SECRET_TOKEN.encode() + b'" "module": "repocket.attributes"}'),
        ("token", b'{"type": "Unicode", "value": "' + SECRET_TOKEN.encode() + b'"'),
        ("token", SECRET_TOKEN.encode()),
        ("token", b'{"type": "Unicode", "value": "' + SECRET_TOKEN.encode() + b'", "module": "repocket.attributes",'
                  b' "x": 1}'),
        ("pin", b'{"type": "Integer", "value": "12345678", "module": "repocket.attributes"}'),
        ("pin", b'{"type": "Integer", "value": 12345678.5, "module": "repocket.attributes"}'),
        ("pin", b'{"type": "Integer", "value": 12345678, "module": "repocket.attributes"'),
    ],
    ids=["number-for-text", "bad-json-quoted", "truncated", "raw", "extra-member", "text-for-int",
         "float-for-int", "int-truncated"],
)
@pytest.mark.envelope_only  # the bytes of the envelope format
def test_a_corrupt_secret_field_never_shows_its_value(conn: redis_py.Redis, field: str, stored: bytes) -> None:
    """A corrupt secret field raises CorruptRecordError whose message, repr and chain never hold the value."""
    vault = Vault.create(owner="ann", token="placeholder", pin=1)
    conn.hset(vault._key(), field, stored)
    secrets = (SECRET_TOKEN, "12345678")
    with pytest.raises(errors.CorruptRecordError) as info:
        Vault.objects.get(id=vault.id)
    assert (info.value.key, info.value.field) == (vault._key(), field)
    _assert_secret_free(info.value, *secrets)
    for _, message in Vault.objects.check().corrupt_records:
        assert SECRET_TOKEN not in message and "12345678" not in message
    if field == "pin":  # the write path decodes the stored value too
        with pytest.raises(errors.CorruptRecordError) as info:
            vault.incr("pin", 2**60)
        _assert_secret_free(info.value, *secrets)


def test_an_increment_error_on_a_secret_never_shows_the_values(conn: redis_py.Redis) -> None:
    """incr of a secret attribute that holds None says so without showing the amount."""
    vault = Vault.create(owner="ann", token="t", pin=None)
    with pytest.raises(errors.ValidationError) as info:
        vault.incr("pin", 987654321)
    assert "987654321" not in str(info.value)


# -- bulk clashes, deletes by id, partial writes -----------------------------------------------------


def test_a_unique_clash_inside_one_batch_names_both_records_and_writes_nothing(conn: redis_py.Redis) -> None:
    """bulk_create of two records sharing a unique value says both hold it in the batch, and writes none."""
    first, second = Account(email="same@example.org"), Account(email="same@example.org")
    with pytest.raises(errors.UniqueConstraintError) as info:
        Account.objects.bulk_create([first, second])
    message = str(info.value)
    assert str(first.id) in message and str(second.id) in message
    assert "same batch" in message and "nothing was written" in message
    assert "already used" not in message
    assert (info.value.field, info.value.value) == ("email", "same@example.org")
    assert im.ids_in_database(conn) == set()


def test_deleting_a_never_loaded_versioned_record_by_id_deletes_it(conn: redis_py.Redis) -> None:
    """Ledger(id=x).delete() claims no version: it deletes the record and its index entries."""
    record = Ledger.create(label="a", balance=5)
    record.balance = 6
    record.save()
    assert Ledger(id=record.id).delete() == 1
    assert not conn.exists(record._key())
    assert Ledger.objects.filter(balance=6) == [] and Ledger.objects.filter(balance=0) == []
    assert im.ids_in_database(conn) == set()
    assert_clean(Ledger)


@pytest.mark.one_partition  # (one script call per partition)
def test_save_with_fields_writes_only_those_attributes(conn: redis_py.Redis) -> None:
    """save_instances(fields=...) writes only the named attributes (and their indexes) of existing records."""
    records = [Profile.create(name=f"n{i}", bio="old", age=i, avatar=b"a") for i in range(3)]
    copies = [Profile.objects.get(id=r.id) for r in records]
    for copy in copies:
        copy.name, copy.bio, copy.avatar = copy.name + "!", "new", b"b"
    with count_round_trips() as trips:
        store.save_instances(conn, Profile._meta, copies, fields=["name", "avatar"])
    assert trips.count == 1
    for record in records:
        stored = Profile.objects.get(id=record.id)
        assert (stored.name, stored.bio, stored.avatar) == (record.name + "!", "old", b"b")
        assert Profile.objects.filter(name=record.name + "!") == [stored]
    assert_clean(Profile)


def test_save_with_fields_and_force_writes_them_even_when_unchanged_locally(conn: redis_py.Redis) -> None:
    """fields=... with force=True writes the named attributes as the instance holds them, changed or not."""
    record = Profile.create(name="mine", bio="mine", age=1)
    copy = Profile.objects.get(id=record.id)
    other = Profile.objects.get(id=record.id)
    other.name, other.bio = "theirs", "theirs"
    other.save()
    store.save_instances(conn, Profile._meta, [copy], force=True, fields=["name"])
    stored = Profile.objects.get(id=record.id)
    assert (stored.name, stored.bio) == ("mine", "theirs")
    assert Profile.objects.filter(name="mine") == [stored] and Profile.objects.filter(name="theirs") == []
    assert_clean(Profile)


def test_save_with_fields_of_instances_never_loaded_keeps_the_other_attributes(conn: redis_py.Redis) -> None:
    """Profile(id=x, name=...) saved with fields=["name"] changes only the name, and moves its index entry."""
    record = Profile.create(name="old", bio="kept", age=7)
    store.save_instances(conn, Profile._meta, [Profile(id=record.id, name="new")], fields=["name"])
    stored = Profile.objects.get(id=record.id)
    assert (stored.name, stored.bio, stored.age) == ("new", "kept", 7)
    assert Profile.objects.filter(name="old") == [] and Profile.objects.filter(name="new") == [stored]
    assert_clean(Profile)


@pytest.mark.one_partition  # (all or nothing per partition: tests/functional/test_partitions.py)
def test_save_with_fields_of_a_missing_record_raises_and_writes_nothing(conn: redis_py.Redis) -> None:
    """A batch saved with fields=... where one record is gone raises DoesNotExist naming it, writing nothing."""
    records = [Profile.create(name=f"n{i}", age=i) for i in range(3)]
    copies = [Profile.objects.get(id=r.id) for r in records]
    records[1].delete()
    for copy in copies:
        copy.name = "changed"
    before = im.key_contents(conn)
    with pytest.raises(Profile.DoesNotExist) as info:
        store.save_instances(conn, Profile._meta, copies, fields=["name"])
    assert records[1]._key() in str(info.value)
    assert im.key_contents(conn) == before


def _deferred_copy(record: Profile, *deferred: str) -> Profile:
    """A loaded copy of ``record`` without the attributes ``deferred``, as only()/defer() load it."""
    copy = Profile.objects.get(id=record.id)
    for name in deferred:
        del copy._data[name]
        copy._stored.pop(name.encode(), None)  # type: ignore[union-attr]
        copy._stored_streams.pop(name, None)
    copy._deferred = frozenset(deferred)
    return copy


@pytest.mark.parametrize("force", [False, True])
def test_deferred_attributes_are_never_written(conn: redis_py.Redis, force: bool) -> None:
    """A copy loaded without age and avatar writes its name only, even with force=True."""
    record = Profile.create(name="a", bio="b", age=3, avatar=b"pic")
    copy = _deferred_copy(record, "age", "avatar")
    copy.name = "z"
    store.save_instances(conn, Profile._meta, [copy], force=force)
    stored = Profile.objects.get(id=record.id)
    assert (stored.name, stored.bio, stored.age, stored.avatar) == ("z", "b", 3, b"pic")
    assert Profile.objects.filter(age=3) == [stored]
    assert_clean(Profile)


def test_a_deferred_copy_of_a_deleted_record_raises_does_not_exist(conn: redis_py.Redis) -> None:
    """A copy loaded without some attributes cannot write its record anew: DoesNotExist, nothing written."""
    record = Profile.create(name="a", age=3)
    copy = _deferred_copy(record, "age")
    record.delete()
    copy.name = "z"
    with pytest.raises(Profile.DoesNotExist):
        store.save_instances(conn, Profile._meta, [copy])
    assert im.ids_in_database(conn) == set()
