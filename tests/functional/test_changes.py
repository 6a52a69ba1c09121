"""Change streams and history (SPEC §8): every write appends its change in the same script call.

Checked against a real redis-server, through both executors: what each
operation records (op, revision, new and previous stored values, server time,
actor), that a refused write records nothing, trimming and
ChangesTrimmedError, consumer groups with a consumer that dies, history, and
8 concurrent writers whose changes are exactly their successful writes.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
import redis as redis_py

import repocket
from repocket import ActiveRecord, attributes, errors
from repocket.changes import Change, position

pytestmark = pytest.mark.usefixtures("driver")


class Order(ActiveRecord):
    number = attributes.Integer(index=True)
    status = attributes.Unicode(index=True)
    code = attributes.Unicode(unique=True, null=True)
    notes = attributes.ByteStream()

    class Meta:
        changes = True
        history = 3


class Line(ActiveRecord):
    order = attributes.Pointer(Order, on_delete=attributes.CASCADE, related_name="lines")
    quantity = attributes.Integer()

    class Meta:
        changes = True


class Tick(ActiveRecord):
    n = attributes.Integer()

    class Meta:
        changes = {"maxlen": 5}


class Ping(ActiveRecord):
    n = attributes.Integer()

    class Meta:
        changes = {"max_age": 0.3}


class Quiet(ActiveRecord):
    n = attributes.Integer()


def _envelope(value: Any, kind: str) -> Any:
    return Order._meta.format.encode(Order._meta.fields[kind], value)


def test_each_write_records_its_change_with_server_time_and_actor(repocket_connection: redis_py.Redis) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    with repocket.actor("user:42"):
        order = Order.objects.create(number=1, status="new")
    order.status = "paid"
    order.save()
    order.incr("number", 4)
    order.append_notes(b"shipped")
    order.delete()
    changes = Order.objects.changes()
    assert [(c.op, c.revision) for c in changes] == [("create", 1), ("update", 2), ("incr", 3), ("append", 4),
                                                     ("delete", 5)]
    created, updated, incremented, appended, deleted = changes
    assert created.actor == "user:42" and updated.actor == "" and created.id == str(order.pk)
    assert created.key == order._key() and created.previous == {}
    assert {k: v for k, v in created.values().items() if k != "code"} == {  # (plain: a None is no field)
        "id": order.pk, "number": 1, "status": "new"}
    assert updated.fields == {"status": _envelope("paid", "status")}
    assert updated.previous == {"status": _envelope("new", "status")}
    assert updated.values() == {"status": "paid"} and updated.values(previous=True) == {"status": "new"}
    assert incremented.values() == {"number": 5} and incremented.values(previous=True) == {"number": 1}
    assert appended.appended == {"notes": b"shipped"} and appended.fields == {}
    assert deleted.fields == {} and deleted.values(previous=True)["status"] == "paid"
    after = datetime.datetime.now(datetime.timezone.utc)
    assert all(before - datetime.timedelta(seconds=1) <= c.at <= after + datetime.timedelta(seconds=1)
               for c in changes)
    assert [c.stream_id for c in changes] == sorted(c.stream_id for c in changes)


def test_a_refused_or_empty_write_records_nothing(repocket_connection: redis_py.Redis) -> None:
    Order.objects.create(number=1, status="a", code="taken")
    other = Order.objects.create(number=2, status="b")
    other.code = "taken"
    with pytest.raises(errors.UniqueConstraintError):
        other.save()
    other.code = None
    other.save()  # nothing changed: nothing recorded
    assert [c.op for c in Order.objects.changes()] == ["create", "create"]
    stale = Order.objects.get(other.pk)
    other.delete()
    with pytest.raises(Order.DoesNotExist):
        stale.incr("number")  # (the record is gone: refused, so not recorded)
    with pytest.raises(Order.DoesNotExist):
        stale.append_notes(b"late")
    assert [c.op for c in Order.objects.changes()] == ["create", "create", "delete"]


def test_a_cascade_records_every_record_it_deletes(repocket_connection: redis_py.Redis) -> None:
    order = Order.objects.create(number=1, status="a")
    lines = [Line.objects.create(order=order, quantity=q) for q in (1, 2)]
    order.delete()
    assert sorted((c.op, c.id) for c in Line.objects.changes() if c.op == "delete") == sorted(
        ("delete", str(line.pk)) for line in lines)
    assert Order.objects.changes()[-1].op == "delete"


def test_trimming_keeps_the_newest_and_a_read_from_before_it_raises(repocket_connection: redis_py.Redis) -> None:
    tick = Tick.objects.create(n=0)
    for n in range(1, 8):
        tick.n = n
        tick.save()
    kept = Tick.objects.changes()
    assert [c.revision for c in kept] == [4, 5, 6, 7, 8]
    with pytest.raises(errors.ChangesTrimmedError) as raised:
        Tick.objects.changes(since="0")
    assert raised.value.trimmed < kept[0].stream_id
    assert Tick.objects.changes(since=raised.value.trimmed) == kept  # (from the trim point: nothing missed)
    assert Tick.objects.changes(since=kept[1].stream_id) == kept[2:]
    ping = Ping.objects.create(n=0)
    first = Ping.objects.changes()[0]
    time.sleep(0.4)
    ping.n = 1
    ping.save()
    with pytest.raises(errors.ChangesTrimmedError):
        Ping.objects.changes(since="0")
    assert [c.revision for c in Ping.objects.changes(since=first.stream_id)] == [2]


def test_a_limit_cuts_between_ids_and_reading_on_misses_nothing(repocket_connection: redis_py.Redis) -> None:
    records = [Line.objects.create(order=Order.objects.create(number=n, status="s"), quantity=n) for n in range(7)]
    seen: list[Change] = []
    since: Any = None
    while True:
        batch = Line.objects.changes(since=since, limit=3)
        if not batch:
            break
        seen += batch
        since = position(batch, since) if Line._meta.partitioned else batch[-1].stream_id
    assert sorted(c.id for c in seen) == sorted(str(r.pk) for r in records)


def test_a_model_without_changes_refuses_to_read_them() -> None:
    with pytest.raises(errors.ValidationError, match="declare Meta.changes"):
        Quiet.objects.changes()
    with pytest.raises(repocket.RepocketActiveRecordDefinitionError, match="changes must be"):
        type("Bad", (ActiveRecord,), {"__module__": __name__, "Meta": type("Meta", (), {"changes": {"size": 3}})})


@pytest.mark.sync_only  # (threads drive the sync executor)
def test_eight_writers_changes_equal_their_successful_writes(repocket_connection: redis_py.Redis) -> None:
    orders = [Order.objects.create(number=0, status="s") for _ in range(3)]
    done: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def writer(number: int) -> None:
        for step in range(15):
            order = orders[(number + step) % 3]
            try:
                if step % 3 == 0:
                    fresh = Order.objects.get(order.pk)
                    fresh.status = f"w{number}-{step}"
                    fresh.save()
                else:
                    Order.objects.get(order.pk).incr("number")
            except errors.ConflictError:
                continue
            with lock:
                done[str(order.pk)] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_record: dict[str, list[int]] = defaultdict(list)
    for change in Order.objects.changes():
        by_record[change.id].append(change.revision)
    for order in orders:
        revisions = by_record[str(order.pk)]
        assert revisions == list(range(1, len(revisions) + 1))  # no gap, no repeat
        assert len(revisions) == 1 + done[str(order.pk)]  # the create, then every successful write
    assert sum(Order.objects.get(o.pk).number for o in orders) == sum(
        1 for c in Order.objects.changes() if c.op == "incr")


def test_a_consumer_that_dies_has_its_changes_claimed_by_another(repocket_connection: redis_py.Redis) -> None:
    for n in range(4):
        Tick.objects.create(n=n)
    dying = Tick.objects.follow(group="search", consumer="worker-1", block=0.1)
    taken = dying.read()
    assert [c.op for c in taken] == ["create"] * 4  # ... and worker-1 dies before acknowledging them
    survivor = Tick.objects.follow(group="search", consumer="worker-2", block=0.1, claim_after=0.2)
    assert survivor.read() == []  # (not idle long enough yet: nothing new either)
    time.sleep(0.3)
    claimed = survivor.read()
    assert sorted(c.stream_id for c in claimed) == sorted(c.stream_id for c in taken)
    assert survivor.ack(*claimed) == 4
    Tick.objects.create(n=9)
    fresh = survivor.read()
    assert [c.revision for c in fresh] == [1] and survivor.ack(*fresh) == 1
    assert repocket_connection.xpending(Tick._meta.changes_key, "search")["pending"] == 0


def test_history_keeps_the_last_versions_newest_first(repocket_connection: redis_py.Redis) -> None:
    order = Order.objects.create(number=1, status="new")
    for status in ("paid", "packed", "sent"):
        order.status = status
        with repocket.actor(f"clerk-{status}"):
            order.save()
    versions = order.history()
    assert [(v.status, v.version_info.revision, v.version_info.actor) for v in versions] == [
        ("sent", 4, "clerk-sent"), ("packed", 3, "clerk-packed"), ("paid", 2, "clerk-paid")]
    assert Order.objects.as_of(order.pk, 3).status == "packed"
    with pytest.raises(Order.DoesNotExist):
        Order.objects.as_of(order.pk, 1)  # (Meta.history = 3: gone)
    with pytest.raises(errors.ValidationError, match="past version"):
        versions[1].save()
    assert Order.objects.get(order.pk).version_info is None


@pytest.mark.sync_only  # (runs asyncio itself)
def test_the_actor_is_per_thread_and_per_task(repocket_connection: redis_py.Redis) -> None:
    def in_thread(name: str) -> None:
        with repocket.actor(name):
            time.sleep(0.01)
            Order.objects.create(number=1, status="t")

    threads = [threading.Thread(target=in_thread, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def in_task(name: str) -> None:
        with repocket.actor(name):
            await asyncio.sleep(0.01)
            await Order.objects.acreate(number=2, status="a")

    async def both() -> None:
        await asyncio.gather(in_task("a1"), in_task("a2"))

    asyncio.run(both())
    by_actor = {c.actor: c.values()["number"] for c in Order.objects.changes()}
    assert by_actor == {"t0": 1, "t1": 1, "t2": 1, "t3": 1, "a1": 2, "a2": 2}


def _replayed(changes: list[Change]) -> dict[str, dict[str, bytes]]:
    """The records the change entries describe: each id's fields after its last change."""
    records: dict[str, dict[str, bytes]] = {}
    for change in changes:
        if change.op == "delete":
            records.pop(change.id, None)
            continue
        fields = records.setdefault(change.id, {})
        for name in set(change.fields) | set(change.previous):
            if name in change.fields:
                fields[name] = change.fields[name]
            else:
                fields.pop(name, None)
    return records


@pytest.mark.sync_only  # (threads drive the sync executor)
def test_a_server_killed_mid_workload_keeps_each_write_with_its_change(tmp_path: Any) -> None:
    from repocket.server import RedisServer

    server = RedisServer(path=tmp_path / "aof", extra_args=["--appendfsync", "always"]).start()
    try:
        client = redis_py.Redis.from_url(server.url)
        acknowledged: dict[str, int] = defaultdict(int)
        lock = threading.Lock()

        def worker(number: int) -> None:
            for step in range(10_000):
                try:
                    order = Order.objects.using(client).create(number=step, status=f"w{number}")
                    with lock:
                        acknowledged[str(order.pk)] += 1
                    order.status = "updated"
                    order.save(connection=client)
                    with lock:
                        acknowledged[str(order.pk)] += 1
                except (errors.RedisConnectionError, redis_py.ConnectionError):
                    return

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        server.kill()  # SIGKILL: no chance to flush anything more
        for thread in threads:
            thread.join()
        server.start()
        client = redis_py.Redis.from_url(server.url)
        changes = Order.objects.using(client).changes()
        assert len(acknowledged) > 10
        by_id: dict[str, int] = defaultdict(int)
        for change in changes:
            by_id[change.id] += 1
        for pk, count in acknowledged.items():
            assert by_id[pk] >= count  # every acknowledged write has its change (an unacknowledged one may too)
        stored = {}
        for pk in by_id:
            raw = client.hgetall(Order._meta.for_pk(pk).key(pk))
            stored[pk] = {name.decode(): value for name, value in raw.items() if not name.startswith(b"_")}
        assert _replayed(changes) == {pk: fields for pk, fields in stored.items() if fields}  # no change lacks its write
        revisions = client.hgetall(f"{Order._meta.prefix}:_revisions") if not Order._meta.partitioned else None
        if revisions is not None:
            assert {k.decode(): int(v) for k, v in revisions.items()} == dict(by_id)
    finally:
        server.stop()


@pytest.mark.sync_only  # (the cluster fixture drives the sync executor)
def test_on_a_cluster_each_partition_has_its_stream_and_reads_merge_them(cluster: Any) -> None:
    orders = [Order.objects.create(number=n, status="c") for n in range(12)]
    for order in orders:
        assert cluster.keyslot(Order._meta.for_pk(order.pk).changes_key) == cluster.keyslot(order._key())
    changes = Order.objects.changes()
    assert sorted(c.id for c in changes) == sorted(str(o.pk) for o in orders)
    assert len({c.partition for c in changes}) > 1
    assert [(int(c.stream_id.split("-")[0])) for c in changes] == sorted(int(c.stream_id.split("-")[0])
                                                                         for c in changes)  # merged by time
    orders[0].status = "moved on"
    orders[0].save()
    assert [c.op for c in Order.objects.changes(since=position(changes))] == ["update"]
    feed = Order.objects.follow(group="audit", consumer="c1", block=0.05)
    got: list[Change] = []
    while len(got) < 13:
        batch = feed.read()
        got += batch
        feed.ack(*batch)
    assert sorted(c.stream_id for c in got) == sorted(c.stream_id for c in Order.objects.changes())
    assert feed.read() == []
    assert [v.status for v in orders[0].history()] == ["moved on", "c"]


def test_bulk_writes_record_a_change_per_record(repocket_connection: redis_py.Redis) -> None:
    made = Order.objects.bulk_create([Order(number=n, status="bulk") for n in range(3)])
    Order.objects.filter(status="bulk").update(status="done")
    Order.objects.filter(number__gte=1).delete()
    by_id: dict[str, list[str]] = defaultdict(list)
    for change in Order.objects.changes():
        by_id[change.id].append(change.op)
    assert by_id == {str(made[0].pk): ["create", "update"], str(made[1].pk): ["create", "update", "delete"],
                     str(made[2].pk): ["create", "update", "delete"]}


def test_a_corrupt_revision_counter_refuses_the_write_before_anything_is_written(
        repocket_connection: redis_py.Redis) -> None:
    order = Order.objects.create(number=1, status="new")
    repocket_connection.hset(f"{Order._meta.for_pk(order.pk).prefix}:_revisions", str(order.pk), "not a number")
    order.status = "paid"
    with pytest.raises(errors.CorruptRecordError, match="_revisions.*not a plain non-negative integer"):
        order.save()  # (HINCRBY would fail after the record's writes: refused in the check phase instead)
    assert Order.objects.get(order.pk).status == "new" and len(Order.objects.changes()) == 1
