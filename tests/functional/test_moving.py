"""Queries and writes while ``repartition()`` runs (``Meta.moving_from``, SPEC §6 item 6).

A model declaring ``moving_from`` reads its source layout as well as its
current one. Every query here is checked against what the records hold, in
each state a record can be in during a move: still in the source, moved, or
(a run cut short between its two steps, or a record written since through
the new declaration) in both, where the current copy wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from repocket import ActiveRecord, Count, Max, attributes, configure, errors

pytestmark = pytest.mark.usefixtures("driver")


def _model(partitions: int, moving_from: str | int | None = None, name: str = "Crate") -> Any:
    """One model (one name, one namespace) as a program declares it before, during and after a move."""
    meta: dict[str, Any] = {"partitions": partitions, "versioned": True}
    if moving_from is not None:
        meta["moving_from"] = moving_from
    return type(name, (ActiveRecord,), {
        "__module__": __name__, "label": attributes.Unicode(index=True), "weight": attributes.Integer(index=True),
        "code": attributes.Unicode(unique=True, null=True), "blob": attributes.ByteStream(),
        "Meta": type("Meta", (), meta),
    })


#: (old partition count, new partition count, Meta.moving_from): from the standalone layout, and
#: from 4 to 8 partitions, where half the records stay in a partition whose keys both layouts share.
MOVES = [(1, 4, "standalone"), (4, 8, 4), (8, 3, 8)]


class Stop(Exception):
    """Raised by a progress callback to cut a move short."""


def _cut_short(model: Any, after: int) -> None:
    """Run the model's repartition(), 10 records per batch, stopping it after ``after`` records were seen."""

    def stop(done: int, total: int) -> None:
        if done >= after:
            raise Stop

    with pytest.raises(Stop):
        model.objects.repartition(batch_size=10, progress=stop)


def _halfway(old_partitions: int, new_partitions: int, moving_from: str | int, count: int = 60) -> tuple[Any, dict]:
    """Records of the old layout, a move cut short, and 6 records also written whole through the new layout.

    Returns the new declaration and what every record holds (by id): the
    current copy's values where there is one, else the source's.
    """
    old = _model(old_partitions)
    made = old.objects.bulk_create([old(label=f"l{i % 5}", weight=i, code=f"c{i}" if i % 3 else None,
                                        blob=b"b%d" % i) for i in range(count)])
    new = _model(new_partitions, moving_from)
    _cut_short(new, count // 2)
    truth = {r.pk: {"label": r.label, "weight": r.weight, "code": r.code, "blob": r.blob} for r in made}
    plain = _model(new_partitions)  # the new layout without the move: writes there only
    client = old.objects.all()._connection or configure.get_connection()
    stranded = [r for r in made if r._meta.key(r.pk) != plain._meta.key(r.pk) and client.exists(r._meta.key(r.pk))][:6]
    assert stranded, "the cut-short move left no record in the old layout"
    for number, record in enumerate(stranded):
        weight = record.weight + 1000 if number % 2 else record.weight  # a copy that differs, and one that does not
        plain(id=record.pk, label="both", weight=weight, code=record.code, blob=b"new").save()
        truth[record.pk] = {"label": "both", "weight": weight, "code": record.code, "blob": b"new"}
    return new, truth


def _ordered(truth: dict, key: Callable[[dict], Any]) -> list[Any]:
    return [pk for pk, values in sorted(truth.items(), key=lambda item: (key(item[1]), str(item[0])))]


@pytest.mark.parametrize(("old_partitions", "new_partitions", "moving_from"), MOVES)
def test_queries_are_exact_halfway_through_a_move(repocket_connection: redis_py.Redis, old_partitions: int,
                                                  new_partitions: int, moving_from: str | int) -> None:
    new, truth = _halfway(old_partitions, new_partitions, moving_from)
    objects = new.objects
    assert objects.count() == len(truth) == len(list(objects.all())) == len(list(objects.iterator(chunk_size=7)))
    assert sorted(objects.values_list("pk", flat=True)) == sorted(truth)
    for pk, values in truth.items():
        record = objects.get(pk)
        assert {name: getattr(record, name) for name in values} == values
    by_weight = _ordered(truth, lambda v: v["weight"])
    assert [r.pk for r in objects.order_by("weight")[5:17]] == by_weight[5:17]
    assert [r.pk for r in objects.order_by("-weight")[:4]] == by_weight[::-1][:4]
    assert objects.first().pk == sorted(truth, key=str)[0] and objects.last().pk == sorted(truth, key=str)[-1]
    for label in ("l1", "both"):
        expected = {pk for pk, v in truth.items() if v["label"] == label}
        assert {r.pk for r in objects.filter(label=label)} == expected
        assert objects.filter(label=label).count() == len(expected)
        assert objects.filter(label=label).exists() == bool(expected)
        assert {r.pk for r in objects.exclude(label=label)} == set(truth) - expected
    heavy = {pk for pk, v in truth.items() if v["weight"] >= 40}
    assert {r.pk for r in objects.filter(weight__gte=40)} == heavy
    assert [r.pk for r in objects.filter(weight__gte=40).order_by("label", "-weight")[1:6]] == [
        pk for pk in _ordered({pk: truth[pk] for pk in heavy}, lambda v: (v["label"], -v["weight"]))][1:6]
    assert objects.aggregate(n=Count("pk"), top=Max("weight")) == {
        "n": len(truth), "top": max(v["weight"] for v in truth.values())}
    codes = {v["code"]: pk for pk, v in truth.items() if v["code"] is not None}
    assert {code: r.pk for code, r in objects.in_bulk(list(codes), field_name="code").items()} == codes
    assert set(objects.in_bulk(list(truth))) == set(truth)


def test_a_page_reads_further_where_the_old_layout_holds_copies_already_moved(
        repocket_connection: redis_py.Redis) -> None:
    old = _model(1, name="Crate")
    made = old.objects.bulk_create([old(label="x", weight=n) for n in range(10)])
    plain = _model(4, name="Crate")
    for record in made[:5]:  # the lightest five also written, heavier, at their current keys
        plain(id=record.pk, label="x", weight=record.weight + 100).save()
    new = _model(4, "standalone", name="Crate")
    # (the old layout's first five by weight are all shadowed: its page must read past them)
    assert [r.weight for r in new.objects.order_by("weight")[:5]] == [5, 6, 7, 8, 9]
    assert [r.weight for r in new.objects.order_by("weight")[3:7]] == [8, 9, 100, 101]


@pytest.mark.parametrize(("old_partitions", "new_partitions", "moving_from"), MOVES[:2])
def test_a_write_during_a_move_moves_its_record_first(repocket_connection: redis_py.Redis, old_partitions: int,
                                                      new_partitions: int, moving_from: str | int) -> None:
    old = _model(old_partitions)
    made = old.objects.bulk_create([old(label="x", weight=i, code=f"c{i}", blob=b"b") for i in range(30)])
    new = _model(new_partitions, moving_from)
    stays = [r for r in made if old._meta.key(r.pk) == new._meta.key(r.pk)]
    away = [r for r in made if r not in stays]
    edited, deleted, bare, counted, appended, held = away[:6]

    record = new.objects.get(edited.pk)  # read from the old layout
    record.weight = 500
    record.save()
    assert not repocket_connection.exists(old._meta.key(edited.pk))
    assert new.objects.get(edited.pk).weight == 500 and new.objects.filter(weight=500).count() == 1

    new.objects.get(deleted.pk).delete()
    new(id=bare.pk).delete()  # never loaded: its copy in the old layout goes too
    for gone in (deleted, bare):
        assert not new.objects.filter(pk=gone.pk).exists()
        with pytest.raises(new.DoesNotExist):
            new.objects.get(gone.pk)

    assert new(id=counted.pk).incr("weight", 7) == counted.weight + 7
    assert new.objects.get(counted.pk).weight == counted.weight + 7
    new.objects.get(appended.pk).append_blob(b"++")
    assert new.objects.get(appended.pk).blob == b"b++"

    with pytest.raises(errors.UniqueConstraintError, match=f"c{held.weight}"):
        new(label="y", weight=0, code=f"c{held.weight}").save()  # the value of a record not moved yet
    assert new.objects.get(held.pk).code == f"c{held.weight}"

    first, second = new.objects.get(away[6].pk), new.objects.get(away[6].pk)
    first.weight = 1
    first.save()
    second.label = "stale"
    with pytest.raises(errors.ConflictError):
        second.save()  # a versioned record changed since it was read, while it moved

    assert new.objects.filter(label="x").update(label="z") == 28  # (the one named "stale" was never saved)
    assert new.objects.count() == 28 == new.objects.filter(label="z").count()
    assert new.objects.repartition() == 0  # every record left in the old layout was written, so moved
    _settled(old, new_partitions, 28)
    assert sorted(r.label for r in _model(new_partitions).objects.all()) == ["z"] * 28


def test_a_pointer_to_a_record_not_moved_yet_leads_to_it(repocket_connection: redis_py.Redis) -> None:
    old = _model(1, name="Shelf")
    shelf = old.objects.create(label="s", weight=1)
    new = _model(4, "standalone", name="Shelf")
    holder_model = type("Box", (ActiveRecord,), {
        "__module__": __name__, "shelf": attributes.Pointer(new, index=True),
        "Meta": type("Meta", (), {"partitions": 1}),
    })
    holder = holder_model.objects.create(shelf=new.objects.get(shelf.pk))
    assert repocket_connection.exists(old._meta.key(shelf.pk))  # still in the old layout
    assert holder_model.objects.get(holder.pk).shelf.label == "s"
    assert [b.pk for b in holder_model.objects.filter(shelf__label="s")] == [holder.pk]


@settings(max_examples=25)
@given(states=st.lists(st.sampled_from(["old", "new", "both", "changed"]), min_size=1, max_size=30),
       low=st.integers(0, 12), size=st.integers(0, 12), descending=st.booleans())
def test_every_state_of_a_move_reads_as_the_records(repocket_connection: redis_py.Redis, states: list[str],
                                                    low: int, size: int, descending: bool) -> None:
    repocket_connection.flushdb()
    old, plain, new = _model(4, name="Bin"), _model(6, name="Bin"), _model(6, 4, name="Bin")
    truth: dict[Any, int] = {}
    for number, state in enumerate(states):
        record = old.objects.create(label=f"l{number % 3}", weight=number % 7)
        truth[record.pk] = record.weight
        if state != "old" and old._meta.key(record.pk) != plain._meta.key(record.pk):
            weight = number % 7 + (50 if state == "changed" else 0)
            plain(id=record.pk, label=f"l{number % 3}", weight=weight).save()
            truth[record.pk] = weight
            if state == "new":
                old(id=record.pk).delete()
    assert new.objects.count() == len(truth)
    order = "-weight" if descending else "weight"
    expected = sorted(truth, key=lambda pk: (truth[pk], str(pk)), reverse=descending)  # (ties by id, as an index)
    assert [r.pk for r in new.objects.order_by(order)[low:low + size]] == expected[low:low + size]
    assert sorted(r.weight for r in new.objects.filter(weight__lt=5)) == sorted(w for w in truth.values() if w < 5)


@pytest.mark.sync_only
@pytest.mark.parametrize(("old_partitions", "new_partitions", "moving_from"), MOVES[:2])
def test_queries_stay_exact_while_repartition_runs(repocket_connection: redis_py.Redis, old_partitions: int,
                                                   new_partitions: int, moving_from: str | int) -> None:
    _reads_during_the_move(old_partitions, new_partitions, moving_from, 600)


@pytest.mark.sync_only
def test_queries_stay_exact_while_repartition_runs_on_a_cluster(cluster: RedisCluster) -> None:
    _reads_during_the_move(4, 16, 4, 400)


def _reads_during_the_move(old_partitions: int, new_partitions: int, moving_from: str | int, count: int) -> None:
    old = _model(old_partitions, name="Pallet")
    old.objects.bulk_create([old(label=f"l{i % 4}", weight=i) for i in range(count)])
    new = _model(new_partitions, moving_from, name="Pallet")
    done, read = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def after_batch(moved: int, total: int) -> None:
        read.wait(timeout=5)  # (the next batch waits for a round of reads: they interleave, however loaded the machine)
        read.clear()

    def move() -> None:
        try:
            new.objects.repartition(batch_size=40, progress=after_batch)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)
        finally:
            done.set()

    mover = threading.Thread(target=move)
    mover.start()
    during = 0  # the rounds of reads that ended before the move did
    try:
        while not done.is_set():
            assert new.objects.count() == count
            assert new.objects.filter(label="l2").count() == count // 4
            assert [r.weight for r in new.objects.order_by("weight")[100:105]] == list(range(100, 105))
            assert new.objects.get(weight=count - 1).label == f"l{(count - 1) % 4}"
            during += not done.is_set()
            read.set()
    finally:
        mover.join()
    assert not failures
    assert during >= 3
    _settled(old, new_partitions, count)


def _settled(old: Any, new_partitions: int, count: int) -> None:
    """After the move: the new layout holds ``count`` records, checked, and the old one none elsewhere."""
    settled = _model(new_partitions, name=old.__name__)
    assert settled.objects.count() == count and settled.objects.check().ok
    # (a partition whose keys both layouts share keeps the records that are at home there)
    assert [r.pk for r in old.objects.all() if old._meta.key(r.pk) != settled._meta.key(r.pk)] == []
