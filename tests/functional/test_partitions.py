"""A model spread over several partitions (``Meta.partitions = P``, SPEC §6): layout, scatter and gather.

Each model here has a one-partition twin holding the same records, and every
query is checked against the twin: on a standalone server (P = 4) and on the
real 3-primary cluster (where models default to 16 partitions). Round trips
are counted: a query over P partitions costs those of one partition's plan,
because :func:`repocket.plan.scatter.gather` sends their rounds together.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster
from redis.crc import key_slot

from repocket import ActiveRecord, Count, Max, Min, attributes, configure, errors, keys, options
from repocket.options import partition_of
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")

UTC = datetime.timezone.utc


class Team(ActiveRecord):
    name = attributes.Unicode(index=True)

    class Meta:
        partitions = 4


def _player(name: str, partitions: int) -> type[ActiveRecord]:
    """The players' model, declared over ``partitions`` (fresh attributes for each declaration)."""
    return type(name, (ActiveRecord,), {
        "__module__": __name__,
        "name": attributes.Unicode(index=True, null=True),
        "level": attributes.Integer(index=True, null=True),
        "score": attributes.Float(index=True),
        "joined": attributes.DateTime(index=True, null=True),
        "notes": attributes.Unicode(),
        "team": attributes.Pointer(Team, index=True, null=True),
        "avatar": attributes.ByteStream(),
        "Meta": type("Meta", (), {"partitions": partitions}),
    })


Player: Any = _player("Player", 4)
#: The twin of Player on one partition: what every query must match.
OnePlayer: Any = _player("OnePlayer", 1)


NAMES = [None, "ada", "bob", "cy", "ada lovelace", "zed"]


def _fill(count: int = 80) -> tuple[list[Player], list[OnePlayer]]:
    teams = Team.objects.bulk_create([Team(name=f"t{i}") for i in range(3)])
    spread, one = [], []
    for i in range(count):
        values = dict(name=NAMES[i % len(NAMES)], level=None if i % 7 == 0 else i % 9, score=float(i % 11) / 2,
                      joined=datetime.datetime(2026, 1, 1 + i % 28, tzinfo=UTC) if i % 5 else None,
                      notes=f"n{i}", team=teams[i % 3] if i % 4 else None, avatar=b"x" * (i % 3))
        spread.append(Player(**values))
        one.append(OnePlayer(**values))
    Player.objects.bulk_create(spread)
    OnePlayer.objects.bulk_create(one)
    return spread, one


def _same(spread: Any, one: Any) -> None:
    """The spread query and its twin give the same records (by notes), in the same order of values."""
    assert [p.notes for p in spread] == [p.notes for p in one]


QUERIES = [
    lambda m: m.objects.all().order_by("notes"),
    lambda m: m.objects.filter(level=3).order_by("-notes"),
    lambda m: m.objects.filter(level__gte=4).order_by("level", "notes")[5:17],
    lambda m: m.objects.filter(name__startswith="ada").order_by("-score", "notes")[:7],
    lambda m: m.objects.exclude(level__isnull=True).order_by("-joined", "notes")[3:40],
    lambda m: m.objects.filter(team__name="t1").order_by("notes"),
    lambda m: m.objects.filter(notes__contains="1").order_by("name", "notes")[2:9],
    lambda m: m.objects.order_by("score", "notes")[70:90],
]


@pytest.fixture
def standalone(repocket_connection: redis_py.Redis) -> Iterator[redis_py.Redis]:
    yield repocket_connection


def test_a_record_lives_in_the_partition_its_id_hashes_to(standalone: redis_py.Redis) -> None:
    player = Player.objects.create(score=1.0, notes="a", avatar=b"pic")
    part = partition_of(player.pk, 4)
    prefix = keys.cluster_prefix(Player._meta.standalone_prefix, part)
    assert player._key() == f"{prefix}:{player.pk}"
    stored = {k.decode() for k in standalone.scan_iter(match="*Player*")}
    assert stored and all(k.startswith(prefix + ":") for k in stored)  # hash, stream, id set, indexes
    assert len({key_slot(k.encode()) for k in stored}) == 1
    assert Player._meta.partition(part).ids_key in stored


@settings(max_examples=200)
@given(st.uuids(), st.integers(0, 14), st.integers(1, 100))
def test_the_partition_is_crc16_of_the_canonical_id_mod_p(pk: Any, power: int, partitions: int) -> None:
    assert partition_of(pk, 2**power) == key_slot(str(pk).encode()) % 2**power  # Redis Cluster's CRC16
    part = partition_of(pk, partitions)
    assert 0 <= part < partitions and partition_of(str(pk), partitions) == part


@pytest.mark.parametrize("number", range(len(QUERIES)))
def test_queries_give_what_one_partition_gives(standalone: redis_py.Redis, number: int) -> None:
    _fill()
    query = QUERIES[number]
    _same(query(Player), query(OnePlayer))
    assert query(Player).count() == query(OnePlayer).count()
    assert query(Player).exists() == query(OnePlayer).exists()


@settings(max_examples=40)
@given(field=st.sampled_from(["level", "score", "joined", "name", "notes"]), descending=st.booleans(),
       low=st.integers(0, 90), span=st.one_of(st.none(), st.integers(0, 30)),
       level=st.one_of(st.none(), st.integers(0, 8)))
def test_ordered_slices_are_merged_exactly(standalone: redis_py.Redis, field: str, descending: bool,
                                           low: int, span: int | None, level: int | None) -> None:
    if not Player.objects.exists():
        _fill()
    order = ("-" if descending else "") + field
    high = None if span is None else low + span

    def query(model: Any) -> Any:
        base = model.objects.all() if level is None else model.objects.filter(level=level)
        return base.order_by(order, "notes")[low:high]

    _same(query(Player), query(OnePlayer))


def test_count_first_last_values_and_aggregates(standalone: redis_py.Redis) -> None:
    _fill()
    for model_query in (lambda m: m.objects.all(), lambda m: m.objects.filter(level=2)):
        spread, one = model_query(Player), model_query(OnePlayer)
        assert spread.count() == one.count()
        assert spread.order_by("score", "notes").first().notes == one.order_by("score", "notes").first().notes
        assert spread.order_by("score", "notes").last().notes == one.order_by("score", "notes").last().notes
        assert sorted(spread.values_list("notes", flat=True)) == sorted(one.values_list("notes", flat=True))
        assert (spread.order_by("notes").values("notes", "level", "team__name")
                == one.order_by("notes").values("notes", "level", "team__name"))
    named = dict(n=Count("pk"), low=Min("level"), high=Max("joined"), top=Max("score"))
    assert Player.objects.aggregate(**named) == OnePlayer.objects.aggregate(**named)
    assert Player.objects.filter(level=3).aggregate(**named) == OnePlayer.objects.filter(level=3).aggregate(**named)
    assert Player.objects.first().pk == min(p.pk for p in Player.objects.all())
    for low, high in ((5, None), (0, 7), (70, 200), (3, 3)):
        assert Player.objects.all()[low:high].count() == OnePlayer.objects.all()[low:high].count()
        assert (Player.objects.filter(level=2)[low:high].count()
                == OnePlayer.objects.filter(level=2)[low:high].count())
        assert Player.objects.all()[low:high].exists() == OnePlayer.objects.all()[low:high].exists()


def test_update_delete_iterator_and_in_bulk(standalone: redis_py.Redis) -> None:
    spread, _ = _fill()
    assert Player.objects.filter(level=5).update(notes="five") == OnePlayer.objects.filter(level=5).update(notes="five")
    assert Player.objects.filter(notes="five").count() == OnePlayer.objects.filter(notes="five").count() > 0
    assert sorted(p.notes for p in Player.objects.iterator(chunk_size=7)) == sorted(
        p.notes for p in OnePlayer.objects.all())
    wanted = [p.pk for p in spread[:10]]
    assert set(Player.objects.in_bulk(wanted)) == set(wanted)
    assert Player.objects.filter(level__lt=3).delete() == OnePlayer.objects.filter(level__lt=3).delete()
    assert Player.objects.count() == OnePlayer.objects.count()
    report = Player.objects.check()
    assert report.ok and report.records == Player.objects.count()


def test_writes_counters_and_streams_stay_in_their_partition(standalone: redis_py.Redis) -> None:
    player = Player.objects.create(level=1, score=2.0, notes="p")
    player.incr("level", 5)
    player.incr("score", 0.5)
    player.append_avatar(b"++")
    again = Player.objects.get(player.pk)
    assert (again.level, again.score, again.avatar) == (6, 2.5, b"++")
    assert Player.objects.filter(level=6).count() == 1 and Player.objects.filter(level=1).count() == 0
    again.delete()
    left = [k.split(b"}:", 1)[1] for k in standalone.scan_iter(match="*:Player:*")]
    assert all(tail.startswith(b"_") for tail in left)  # index keys (emptied sets are gone), no record
    assert Player.objects.check().ok


def test_check_finds_and_repairs_drift_in_one_partition(standalone: redis_py.Redis) -> None:
    _fill(20)
    victim = Player.objects.filter(level=3).first()
    view = Player._meta.for_pk(victim.pk)
    standalone.srem(keys.eq_index_key(view.prefix, "level", "3"), str(victim.pk))
    standalone.sadd(keys.eq_index_key(view.prefix, "level", "8"), str(victim.pk))
    report = Player.objects.check()
    assert report.missing_entries == [(keys.eq_index_key(view.prefix, "level", "3"), str(victim.pk))]
    assert report.stale_entries == [(keys.eq_index_key(view.prefix, "level", "8"), str(victim.pk))]
    assert Player.objects.check(repair=True).repaired
    assert Player.objects.check().ok
    standalone.delete(Player._meta.partition(1).ids_key)
    assert Player.objects.reindex() == 20 and Player.objects.check().ok


def test_a_scattered_query_costs_the_round_trips_of_one_partition(standalone: redis_py.Redis) -> None:
    _fill()
    for query in QUERIES + [lambda m: m.objects.filter(level=2), lambda m: m.objects.filter(level=2)[:3]]:
        with count_round_trips() as spread:
            list(query(Player))
        with count_round_trips() as one:
            list(query(OnePlayer))
        assert spread.count <= one.count + 1, (spread.names(), one.names())
    with count_round_trips() as trips:
        assert Player.objects.filter(level=4).count() == OnePlayer.objects.filter(level=4).count()
    assert trips.count == 2  # one pipeline of P SCARDs, and the twin's SCARD
    with count_round_trips() as trips:
        Player.objects.count()
    assert trips.names() == [b"SCARD"] * 4


def test_a_batch_is_one_script_call_per_partition(standalone: redis_py.Redis) -> None:
    Player.objects.create(score=0.0, notes="warm-up")  # (loads the script: a first call also sends SCRIPT LOAD)
    players = [Player(score=1.0, notes=str(i)) for i in range(40)]
    with count_round_trips() as trips:
        Player.objects.bulk_create(players)
    assert trips.names().count(b"EVALSHA") == len({partition_of(p.pk, 4) for p in players}) == 4


def test_a_refused_batch_writes_nothing_in_the_partition_it_was_refused_in(standalone: redis_py.Redis) -> None:
    """A batch is all or nothing per partition (one script call each): a record gone in one partition
    leaves every record of that partition as it was; the partitions written before it stay written."""
    players = Player.objects.bulk_create([Player(score=1.0, notes=f"p{i}") for i in range(24)])
    copies = [Player.objects.get(p.pk) for p in players]
    gone = max(players, key=lambda p: partition_of(p.pk, 4))  # in the last partition written
    gone.delete()
    for copy in copies:
        copy.notes = "changed"
    with pytest.raises(Player.DoesNotExist, match=str(gone.pk)):
        Player.objects.bulk_update(copies, ["notes"])
    last = partition_of(gone.pk, 4)
    for player in players:
        if player.pk != gone.pk and partition_of(player.pk, 4) == last:
            assert Player.objects.get(player.pk).notes == player.notes  # not written
    earlier = [p for p in players if partition_of(p.pk, 4) < last]
    assert earlier and all(Player.objects.get(p.pk).notes == "changed" for p in earlier)
    assert Player.objects.check().ok


def test_partitions_are_checked_at_declaration() -> None:
    for bad in (0, -1, 16385, "4", 2.0, True):
        with pytest.raises(errors.RepocketActiveRecordDefinitionError, match="partitions must be an int"):
            class Bad(ActiveRecord):
                name = attributes.Unicode()

                class Meta:
                    partitions = bad


def test_a_spread_model_has_no_single_prefix() -> None:
    with pytest.raises(RuntimeError, match="spreads over 4 partitions"):
        Player._meta.prefix  # noqa: B018
    assert Player._meta.partition(2).prefix == "{repocket:tests.functional.test_partitions:Player:2}"
    assert OnePlayer._meta.prefix == "repocket:tests.functional.test_partitions:OnePlayer"
    with pytest.raises(ValueError, match="canonical UUID"):
        Player._meta.parse_key(f"{Player._meta.partition(0).prefix}:not-a-uuid")
    player = Player(score=1.0, notes="x", id="970773fa-4de1-11e5-86f4-6c4008a70392")
    wrong = (partition_of(player.pk, 4) + 1) % 4
    with pytest.raises(ValueError, match=r"expected \{repocket:tests.functional.test_partitions:Player:<partition>\}"):
        Player._meta.parse_key(f"{Player._meta.partition(wrong).prefix}:{player.pk}")  # another partition's
    assert Player._meta.parse_key(player._key()) == player.pk


# -- on the cluster: 16 partitions by default, one round trip per node --------------------------


class Event(ActiveRecord):
    kind = attributes.Unicode(index=True)
    at = attributes.Integer(index=True)


class Ticket(ActiveRecord):
    code = attributes.Unicode(index=True, unique=True)


@pytest.mark.one_partition  # (the default of 16 on a cluster: this run sets another)
def test_on_a_cluster_models_spread_over_16_partitions_on_every_primary(cluster: RedisCluster) -> None:
    assert Event._meta.partitions == options.CLUSTER_PARTITIONS == 16
    assert Ticket._meta.partitions == 16  # unique values stay unique through claims (test_unique_claims.py)
    events = Event.objects.bulk_create([Event(kind=f"k{i % 4}", at=i) for i in range(200)])
    nodes = {cluster.get_node_from_key(Event._meta.partition(n).ids_key).name for n in range(16)}
    assert len(nodes) == 3
    assert Event.objects.count() == 200
    assert [e.at for e in Event.objects.filter(kind="k1").order_by("-at")[2:6]] == [189, 185, 181, 177]
    assert Event.objects.filter(at__gte=150).count() == 50
    events[0].incr("at", 1000)
    assert Event.objects.order_by("-at").first().pk == events[0].pk
    assert Event.objects.filter(kind="k2").delete() == 50
    assert Event.objects.check().ok and Event.objects.count() == 150
    configure.reset()


def test_on_a_cluster_a_query_costs_one_round_trip_per_primary(cluster: RedisCluster, driver: str) -> None:
    Event.objects.bulk_create([Event(kind=f"k{i % 4}", at=i) for i in range(100)])
    with count_round_trips() as trips:
        assert Event.objects.count() == 100
    assert trips.count <= 3  # 16 SCARDs, in one pipeline per primary
    with count_round_trips() as trips:
        page = list(Event.objects.filter(kind="k3").order_by("at")[:5])
    assert [e.at for e in page] == [3, 7, 11, 15, 19]
    assert trips.count <= 3 * 5  # the rounds of one partition's page plan, each one pipeline per primary


# -- repartition(): moving records into the current layout ------------------------------------


def _model(partitions: int, name: str = "Mover") -> type[ActiveRecord]:
    """The same model (one name, one namespace) declared with another partition count."""
    return type(name, (ActiveRecord,), {
        "__module__": __name__, "label": attributes.Unicode(index=True), "weight": attributes.Integer(index=True),
        "team": attributes.Pointer(Team, null=True), "blob": attributes.ByteStream(),
        "Meta": type("Meta", (), {"partitions": partitions, "versioned": True}),
    })


def test_repartition_moves_records_from_the_standalone_layout_and_from_another_count(
        standalone: redis_py.Redis, driver: str) -> None:
    team = Team.objects.create(name="movers")
    old = _model(1)
    made = old.objects.bulk_create([old(label=f"l{i % 5}", weight=i, team=team if i % 2 else None,
                                        blob=b"b%d" % i) for i in range(60)])
    spread = _model(4)
    assert spread.objects.count() == 0  # its partitions are empty: the records are in the old layout
    seen: list[tuple[int, int]] = []
    assert spread.objects.repartition(progress=lambda done, total: seen.append((done, total))) == 60
    assert seen[-1] == (60, 60)
    assert spread.objects.count() == 60 and old.objects.count() == 0
    assert not list(standalone.scan_iter(match=keys.escape_glob(old._meta.standalone_prefix) + ":*"))
    for record in made:
        moved = spread.objects.get(record.pk)
        assert (moved.label, moved.weight, moved.blob) == (record.label, record.weight, record.blob)
        assert (moved.team.pk if record.team else None) == (team.pk if record.team else None)
    assert [r.weight for r in spread.objects.filter(label="l3").order_by("-weight")[:3]] == [58, 53, 48]
    assert spread.objects.check().ok
    assert spread.objects.repartition() == 0  # idempotent: nothing left there
    wider = _model(8)
    # (CRC16 mod 8 is CRC16 mod 4 for half the ids: those stay where they are)
    assert wider.objects.repartition(4) == sum(1 for r in made if partition_of(r.pk, 8) != partition_of(r.pk, 4))
    assert wider.objects.count() == 60 and wider.objects.check().ok
    assert sorted(r.weight for r in wider.objects.all()) == list(range(60))


def test_a_repartition_cut_short_resumes_and_keeps_a_record_written_since(standalone: redis_py.Redis) -> None:
    old = _model(1, "Resumer")
    made = old.objects.bulk_create([old(label="x", weight=i) for i in range(10)])
    spread = _model(4, "Resumer")
    first = made[0]
    # A run cut short after writing the first record at its new key, before deleting the old one:
    copy = spread(id=first.pk, label="x", weight=first.weight)
    copy.save()
    newer = spread.objects.get(first.pk)
    newer.weight = 1000  # written since through the new layout: it must win
    newer.save()
    assert spread.objects.repartition() == 9
    assert spread.objects.get(first.pk).weight == 1000
    assert spread.objects.count() == 10 and spread.objects.check().ok
    assert old.objects.count() == 0 and not standalone.exists(old._meta.key(first.pk))


def test_pointers_stored_before_a_repartition_lead_to_the_moved_records(standalone: redis_py.Redis) -> None:
    old_squad = _model(1, "Squad")
    holder_model = type("Holder", (ActiveRecord,), {
        "__module__": __name__, "squad": attributes.Pointer(old_squad, index=True),
        "Meta": type("Meta", (), {"partitions": 1}),
    })
    squad = old_squad.create(label="s", weight=1)
    holder = holder_model.create(squad=squad)
    new_squad = _model(4, "Squad")
    holder_model._meta.fields["squad"]._to_model = new_squad  # the program now declares Squad over 4 partitions
    assert new_squad.objects.repartition() == 1
    loaded = holder_model.objects.get(holder.pk)  # its stored pointer is the old key
    assert loaded.squad.pk == squad.pk and loaded.squad._key() == new_squad._meta.key(squad.pk) != squad._key()
    assert [h.pk for h in holder_model.objects.filter(squad=loaded.squad)] == [holder.pk]
    assert holder_model.objects.check().ok
    with pytest.raises(ValueError, match="not a key of"):
        new_squad._meta.current_key(f"repocket:elsewhere:Squad:{squad.pk}")


# -- every key a script touches is declared in KEYS (SPEC §6: one slot, routed by its keys) ----------


WRITES = {b"HSET", b"HDEL", b"HINCRBY", b"SADD", b"SREM", b"ZADD", b"ZREM", b"SET", b"DEL", b"APPEND", b"PEXPIRE"}


def _script_keys_and_writes(conn: redis_py.Redis, action: Any) -> tuple[set[bytes], set[bytes]]:
    """The KEYS of every script call ``action`` makes, and the keys the scripts wrote, seen by MONITOR."""
    declared: set[bytes] = set()
    written: set[bytes] = set()
    with conn.monitor() as monitor:
        conn.ping()  # (MONITOR is on once a command shows)
        while b"PING" not in monitor.next_command()["command"].encode().upper():
            pass
        action()
        conn.echo("done")
        while True:
            line = monitor.next_command()
            parts = [part.encode() for part in line["command"].split(" ")]
            if parts[0].upper() == b"ECHO":
                break
            if parts[0].upper() == b"EVALSHA":
                declared.update(parts[3:3 + int(parts[2])])
            elif line.get("client_type") == "lua" and parts[0].upper() in WRITES:
                written.add(parts[1])
    return declared, written


@pytest.mark.needs_server("fakeredis has no MONITOR, which this test reads every key a script writes from")
def test_every_key_a_script_writes_is_one_of_its_keys(standalone: redis_py.Redis, driver: str) -> None:
    if driver == "async":
        pytest.skip("MONITOR is read on the sync client")
    player = Player.objects.create(level=1, score=1.0, notes="k", avatar=b"a")

    def writes() -> None:
        player.incr("level", 3)  # (an indexed Integer: the sets of the old and the new value)
        player.incr("level", -1)
        stale = Player.objects.get(player.pk)
        player.incr("level", 5)
        stale.incr("level", 1)  # its value moved under it
        player.append_avatar(b"b")
        player.name = "x"
        player.save()
        player.delete()

    declared, written = _script_keys_and_writes(standalone, writes)
    assert written and written <= declared, written - declared
    assert any(b":_eq:level:" in key for key in written)


def test_an_increment_whose_value_keeps_moving_gives_up_when_its_budget_is_spent(
        standalone: redis_py.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from repocket.plan import write

    player = Player.objects.create(level=1, score=1.0, notes="m")
    stale = Player.objects.get(player.pk)
    player.incr("level", 1)  # the stale copy's value has moved
    monkeypatch.setattr(write, "WRITE_BUDGET", -1.0)  # spent before the first reply
    with pytest.raises(errors.ConflictError, match="kept changing level; nothing was incremented"):
        stale.incr("level", 1)
    assert Player.objects.get(player.pk).level == 2
    monkeypatch.undo()
    assert stale.incr("level", 1) == 3  # with a budget, it names the sets around the value it was told
