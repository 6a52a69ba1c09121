"""Expiry (SPEC §7): ``Meta.ttl``, ``expire()``, ``persist()`` and ``ttl()``, with real time on a real server.

A record past its deadline must be gone at once from every read (get, every
query, count, exists, slices, reverse accessors, check), its ByteStreams with
it, and never counted; a save keeps its deadline unless it sets a new one.
TTLs are short (a fraction of a second) and sleeps bounded.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, errors
from repocket.plan.expiry import GRACE_MS
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")

#: The lifetime (seconds) of the records the tests let expire.
SHORT = 0.4


class Session(ActiveRecord):
    """Every save gives the record SHORT seconds more."""

    user = attributes.Unicode(index=True)
    number = attributes.Integer(index=True)
    token = attributes.Unicode(unique=True, null=True)
    log = attributes.ByteStream()

    class Meta:
        ttl = SHORT


class Cache(ActiveRecord):
    """Records expire only when expire() says."""

    name = attributes.Unicode(index=True)
    body = attributes.ByteStream()

    class Meta:
        ttl = None


class Visit(ActiveRecord):
    session = attributes.Pointer(Session, null=True, related_name="visits")
    page = attributes.Unicode()


class Forever(ActiveRecord):
    name = attributes.Unicode()


class Step(ActiveRecord):
    """Expiring referrers: reverse accessors must not return them once expired."""

    owner = attributes.Pointer(Forever, related_name="steps")
    order = attributes.Integer(index=True)

    class Meta:
        ttl = None


def _past(seconds: float = SHORT) -> None:
    time.sleep(seconds + 0.05)


def _clean(*models: Any) -> None:
    for model in models:
        report = model.objects.check()
        assert report.ok, report


def test_a_record_is_gone_everywhere_at_its_deadline(repocket_connection: redis_py.Redis) -> None:
    doomed = Session.objects.create(user="ada", number=1, log=b"first line")
    kept = Session.objects.create(user="ada", number=2)
    kept.expire(60)
    Visit.objects.create(session=doomed, page="/")
    assert Session.objects.filter(user="ada").count() == 2
    _past()
    with pytest.raises(Session.DoesNotExist):
        Session.objects.get(doomed.pk)
    assert [s.number for s in Session.objects.all()] == [2]
    assert [s.number for s in Session.objects.filter(user="ada")] == [2]
    assert Session.objects.count() == 1 and Session.objects.filter(user="ada").count() == 1
    assert Session.objects.filter(number=1).count() == 0 and not Session.objects.filter(number=1).exists()
    assert [s.number for s in Session.objects.order_by("number")[:1]] == [2]
    assert [s.number for s in Session.objects.order_by("-number")[1:]] == []
    assert Session.objects.in_bulk([doomed.pk, kept.pk]).keys() == {kept.pk}
    assert Session.objects.aggregate(attributes_max=_max("number")) == {"attributes_max": 2}
    assert Visit.objects.get(page="/").session is None  # (null=True: a pointer to an expired record)
    assert list(doomed.visits.all()) != [] and Session.objects.filter(pk=doomed.pk).count() == 0
    _clean(Session)


def _max(field: str) -> Any:
    from repocket import Max

    return Max(field)


def test_byte_streams_expire_with_their_record(repocket_connection: redis_py.Redis) -> None:
    session = Session.objects.create(user="s", number=1, log=b"a")
    session.append_log(b"b")
    stream = f"{session._key()}:field:log"
    assert 0 < repocket_connection.pttl(stream) - GRACE_MS <= SHORT * 1000
    assert abs(repocket_connection.pttl(stream) - repocket_connection.pttl(session._key())) < 50
    cache = Cache.objects.create(name="c", body=b"x")
    cache.expire(30)
    cache.body = b"new bytes"  # (a SET clears a string's TTL: the save gives it the record's again)
    cache.save()
    assert abs(repocket_connection.pttl(f"{cache._key()}:field:body") - repocket_connection.pttl(cache._key())) < 50
    _past()
    with pytest.raises(Session.DoesNotExist):
        session.append_log(b"c")


def test_a_save_keeps_the_deadline_unless_it_sets_one(repocket_connection: redis_py.Redis) -> None:
    cache = Cache.objects.create(name="c")
    assert cache.ttl() is None
    cache.expire(30)
    assert 29 < cache.ttl() <= 30
    cache.name = "renamed"
    cache.save()  # Meta.ttl = None: the deadline stays
    assert 29 < Cache.objects.get(cache.pk).ttl() <= 30
    cache.persist()
    assert cache.ttl() is None and repocket_connection.pttl(cache._key()) == -1
    session = Session.objects.create(user="s", number=1)
    time.sleep(SHORT / 2)
    session.number = 2
    session.save()  # Meta.ttl: a new deadline from now
    assert session.ttl() > SHORT * 0.8
    fresh = Session(user="t", number=3)
    fresh.expire(30)  # (not saved: its first save sets it)
    fresh.save()
    assert 29 < fresh.ttl() <= 30
    with pytest.raises(errors.ValidationError, match="declare Meta.ttl"):
        Forever.objects.create(name="f").expire(5)
    with pytest.raises(errors.ValidationError, match="number of seconds"):
        cache.expire("soon")
    assert Forever.objects.create(name="g").ttl() is None


def test_count_stays_one_round_trip(repocket_connection: redis_py.Redis) -> None:
    for number in range(5):
        Session.objects.create(user="c", number=number)
    Session.objects.create(user="d", number=9).expire(60)
    _past()
    for query, expected in ((Session.objects.all(), 1), (Session.objects.filter(user="c"), 0),
                            (Session.objects.filter(user="d"), 1)):
        with count_round_trips() as trips:
            assert query.count() == expected
        assert trips.count == 1


def test_a_write_to_an_expired_record_purges_it_first(repocket_connection: redis_py.Redis) -> None:
    session = Session.objects.create(user="w", number=1, token="secret-1", log=b"old")
    _past()
    assert repocket_connection.exists(session._key())  # (its values stay for the purge, during the grace)
    taker = Session.objects.create(user="x", number=2, token="secret-1")  # the unique value is free again
    assert taker.token == "secret-1"
    with pytest.raises(Session.DoesNotExist):
        session.incr("number")
    session.number = 5
    with pytest.raises(errors.UniqueConstraintError):
        session.save()  # (its token is taker's now)
    session.token = "secret-2"
    session.save()  # purged (its old entries with it), then written whole, as new
    assert Session.objects.get(session.pk).number == 5 and Session.objects.get(session.pk).log == b"old"
    assert Session.objects.filter(number=1).count() == 0
    _clean(Session)


def test_purge_expired_frees_the_records_and_their_entries(repocket_connection: redis_py.Redis) -> None:
    for number in range(7):
        Session.objects.create(user="p", number=number, log=b"bytes")
    Session.objects.create(user="q", number=100).expire(60)
    _past()
    assert Session.objects.purge_expired(limit=5) == 5
    assert Session.objects.purge_expired() == 2 and Session.objects.purge_expired() == 0
    left = {key.decode() for key in repocket_connection.keys(f"{Session._meta.prefix}*")}
    assert not any(":_eq:user:p" in key or key.endswith(":field:log") for key in left)
    assert Session.objects.count() == 1
    _clean(Session)


def test_check_reports_nothing_for_expired_records_and_repair_purges_them(
        repocket_connection: redis_py.Redis) -> None:
    for number in range(3):
        Session.objects.create(user="k", number=number)
    _past()
    report = Session.objects.check()
    assert report.ok, report
    Session.objects.check(repair=True)
    assert not repocket_connection.exists(f"{Session._meta.prefix}:_eq:user:k")
    assert repocket_connection.zcard(Session._meta.expiry_key) == 0


def test_the_grace_over_leaves_entries_that_are_never_returned(repocket_connection: redis_py.Redis) -> None:
    session = Session.objects.create(user="g", number=1)
    _past()
    repocket_connection.delete(session._key())  # (what Redis does when the grace is over, unpurged)
    assert Session.objects.filter(user="g").count() == 0 and list(Session.objects.filter(user="g")) == []
    assert Session.objects.check().ok
    Session.objects.check(repair=True)
    assert not repocket_connection.exists(f"{Session._meta.prefix}:_eq:user:g")


@pytest.mark.sync_only  # (threads drive the sync executor)
def test_queries_running_while_records_expire_return_only_live_ones(repocket_connection: redis_py.Redis) -> None:
    for number in range(60):
        record = Cache.objects.create(name="live" if number % 2 else "dying")
        if not number % 2:
            record.expire(0.05 + number * 0.005)  # (deadlines spread over 0.35 s)
    deadlines = {}
    for record in Cache.objects.filter(name="dying"):  # (by the clock the server shares with us, at most)
        deadlines[record.pk] = time.time() + record.ttl() + 0.002
    stop = threading.Event()
    seen: list[Any] = []
    late: list[Any] = []

    def reader() -> None:
        while not stop.is_set():
            started = time.time()
            found = list(Cache.objects.filter(name__in=["live", "dying"]))
            count = Cache.objects.filter(name="dying").count()
            late.extend(c.pk for c in found if c.name == "dying" and started > deadlines[c.pk])
            seen.append((time.monotonic(), [c.name for c in found], count))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert len(seen) > 10
    assert late == []  # no read returned a record it started after the deadline of
    for _, names, _ in seen:
        assert names.count("live") == 30  # a live record is never missed
    assert seen[-1][2] == 0 and seen[-1][1].count("dying") == 0  # (the last reads: all gone)
    counts = [dying for _, _, dying in sorted(seen)]
    assert counts[0] >= counts[-1]


def test_reading_a_record_costs_no_extra_round_trip(repocket_connection: redis_py.Redis) -> None:
    session = Session.objects.create(user="r", number=1)
    with count_round_trips() as trips:
        Session.objects.get(session.pk)
    assert trips.count == 1


def test_reverse_accessors_and_prefetch_leave_expired_referrers_out(repocket_connection: redis_py.Redis) -> None:
    owner = Forever.objects.create(name="o")
    for order in range(4):
        step = Step.objects.create(owner=owner, order=order)
        if order % 2:
            step.expire(SHORT)
    assert owner.steps.count() == 4
    _past()
    assert sorted(s.order for s in owner.steps.all()) == [0, 2] and owner.steps.count() == 2
    assert [s.order for s in owner.steps.order_by("-order")[:1]] == [2]
    loaded = Forever.objects.filter(pk=owner.pk).prefetch_related("steps").first()
    assert sorted(s.order for s in loaded.steps.all()) == [0, 2]
    _clean(Step, Forever)


def test_a_strategy_that_needs_a_delete_is_refused_towards_an_expiring_model(
        repocket_connection: redis_py.Redis) -> None:
    from repocket.errors import RepocketActiveRecordDefinitionError

    for strategy in (attributes.PROTECT, attributes.CASCADE):
        with pytest.raises(RepocketActiveRecordDefinitionError, match=f"on_delete={strategy} cannot run"):
            type("Bad" + strategy.title(), (ActiveRecord,), {
                "__module__": __name__, "session": attributes.Pointer(Session, index=True, on_delete=strategy)})
    with pytest.raises(RepocketActiveRecordDefinitionError, match="on_delete=UNLINK cannot run"):
        type("BadList", (ActiveRecord,), {
            "__module__": __name__, "sessions": attributes.PointerList(Session, on_delete=attributes.UNLINK)})
    kept = type("NullOnExpiry", (ActiveRecord,), {"__module__": __name__, "session": attributes.Pointer(
        Session, null=True, index=True, on_delete=attributes.SET_NULL)})
    assert kept._meta.fields["session"].on_delete == attributes.SET_NULL
    Session.objects.create(user="z", number=1).delete()  # (the refused models were not registered)


def _crate(**meta: Any) -> Any:
    """One model as a program declares it before, during and after a move (tests/functional/test_moving.py)."""
    return type("Crate", (ActiveRecord,), {"__module__": __name__, "label": attributes.Unicode(index=True),
                                           "Meta": type("Meta", (), {"ttl": None, **meta})})


def test_a_move_keeps_each_deadline_and_purges_the_expired(repocket_connection: redis_py.Redis) -> None:
    old = _crate()
    kept, forever, doomed = (old.objects.create(label=label) for label in ("kept", "forever", "doomed"))
    kept.expire(60)
    doomed.expire(SHORT)
    _past()
    new = _crate(partitions=4, moving_from="standalone")
    assert new.objects.repartition() == 2
    assert 58 < new.objects.get(kept.pk).ttl() <= 60 and new.objects.get(forever.pk).ttl() is None
    assert not repocket_connection.exists(old._meta.key(doomed.pk))  # (purged, not moved)
    assert repocket_connection.scard(old._meta.ids_key) == 0 and repocket_connection.zcard(old._meta.expiry_key) == 0
    assert new.objects.count() == 2 and new.objects.filter(label="doomed").count() == 0
    _clean(_crate(partitions=4))


@pytest.mark.sync_only  # (the cluster fixture drives the sync executor)
def test_on_a_cluster_each_partition_keeps_its_deadlines(cluster: Any) -> None:
    made = [Session.objects.create(user="c", number=number, log=b"x") for number in range(12)]
    for session in made[:4]:
        session.expire(60)
    assert Session.objects.count() == 12
    _past()
    assert Session.objects.count() == 4 and Session.objects.filter(user="c").count() == 4
    assert sorted(s.number for s in Session.objects.filter(user="c")) == [0, 1, 2, 3]
    assert [s.number for s in Session.objects.order_by("-number")[:2]] == [3, 2]
    with pytest.raises(Session.DoesNotExist):
        Session.objects.get(made[5].pk)
    for query in (Session.objects.all(), Session.objects.filter(user="c")):
        with count_round_trips() as trips:
            assert query.count() == 4
        assert trips.count <= 3  # (16 partitions' count scripts in one pipeline: a request per primary)
    report = Session.objects.check()
    assert report.ok and len(report.expired) == 8, report
    assert Session.objects.purge_expired() == 8
    assert Session.objects.check().expired == [] and Session.objects.count() == 4
