"""repocket on a real Redis Cluster (3 primaries, 3 replicas on loopback): SPEC §6, models of one partition.

``configure.cluster()`` gives every key of a one-partition model one hash tag,
so all of them share a slot: each write is one single-slot script call, and
every query runs on the node of that slot. Models land on different nodes.
Models spread over 16 partitions (the default on a cluster) are tested in
tests/functional/test_partitions.py.
"""

from __future__ import annotations

import decimal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError

from repocket import ActiveRecord, attributes, configure, errors, keys
from repocket.options import partition_of
from repocket.topology import LocalCluster
from tests.roundtrips import count_round_trips

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")


class Flight(ActiveRecord):
    code = attributes.Unicode(index=True, unique=True)
    seats = attributes.Integer(index=True)
    fare = attributes.Decimal()
    log = attributes.ByteStream()

    class Meta:
        partitions = 1


class Crew(ActiveRecord):
    name = attributes.Unicode(index=True)
    flight = attributes.Pointer(Flight, null=True)

    class Meta:
        partitions = 1  # (spread models: tests/functional/test_partitions.py)


def _slots(client: RedisCluster, model: type[ActiveRecord]) -> set[int]:
    pattern = keys.escape_glob(model._meta.prefix) + "*"
    found: set[int] = set()
    for node in client.get_primaries():
        found |= {key_slot(k) for k in client.get_redis_connection(node).scan_iter(match=pattern)}
    return found


def test_every_key_of_a_model_carries_its_hash_tag_and_shares_one_slot(cluster: RedisCluster) -> None:
    flight = Flight.objects.create(code="RP1", seats=3, fare=decimal.Decimal("9.90"), log=b"boarding")
    Crew.objects.create(name="Ada", flight=flight)
    assert Flight._meta.prefix == "{repocket:tests.functional.test_cluster:Flight:0}"
    assert flight._key() == f"{Flight._meta.prefix}:{flight.id}"
    assert len(_slots(cluster, Flight)) == 1 and len(_slots(cluster, Crew)) == 1
    configure.reset()
    assert Flight._meta.prefix == "repocket:tests.functional.test_cluster:Flight"  # standalone: SPEC §2 keys


def test_crud_queries_counters_and_streams_work_on_a_cluster(cluster: RedisCluster) -> None:
    flights = Flight.objects.bulk_create([Flight(code=f"F{i:02d}", seats=i % 5, fare=decimal.Decimal(i)) for i in
                                          range(40)])
    assert Flight.objects.count() == 40
    assert sorted(f.code for f in Flight.objects.filter(seats=3)) == [f"F{i:02d}" for i in range(40) if i % 5 == 3]
    assert [f.code for f in Flight.objects.filter(seats__in=[1, 2]).order_by("-code")[:3]] == ["F37", "F36", "F32"]
    assert Flight.objects.filter(code__startswith="F1").count() == 10
    first = flights[0]
    first.incr("seats", 10)
    first.incr("fare", decimal.Decimal("0.5"))
    first.append_log(b"+1")
    again = Flight.objects.get(id=first.id)
    assert (again.seats, again.fare, again.log) == (10, decimal.Decimal("0.5"), b"+1")
    assert Flight.objects.filter(seats=10) == [again]
    crew = Crew.objects.create(name="Grace", flight=again)
    assert Crew.objects.get(id=crew.id).flight == again
    assert Flight.objects.filter(seats=4).update(fare=decimal.Decimal(1)) == 8
    assert Flight.objects.filter(seats=4).delete() == 8
    assert Flight.objects.count() == 32
    assert Flight.objects.check().ok


def test_unique_values_are_refused_on_a_cluster(cluster: RedisCluster) -> None:
    Flight.objects.create(code="U1", seats=1, fare=decimal.Decimal(1))
    with pytest.raises(errors.UniqueConstraintError):
        Flight.objects.create(code="U1", seats=2, fare=decimal.Decimal(2))
    assert Flight.objects.count() == 1


def _move_keys(cluster: RedisCluster, key: str) -> tuple[Any, Any, Callable[[], None]]:
    """Start migrating the slot of ``key`` to another primary and move every key of it (CLUSTER SETSLOT
    MIGRATING/IMPORTING, MIGRATE); returns the old and new owners' clients and what ends the migration."""
    slot = key_slot(key.encode())
    source = cluster.get_node_from_key(key)
    target = next(node for node in cluster.get_primaries() if node.name != source.name)
    src, dst = cluster.get_redis_connection(source), cluster.get_redis_connection(target)
    src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
    dst.cluster("setslot", slot, "importing", src_id)
    src.cluster("setslot", slot, "migrating", dst_id)
    while batch := src.cluster("getkeysinslot", slot, 100):
        src.migrate(target.host, target.port, batch, 0, 5000)

    def finish() -> None:
        for node in cluster.get_primaries():
            cluster.get_redis_connection(node).cluster("setslot", slot, "node", dst_id)

    return src, dst, finish


def test_a_model_whose_slot_moves_is_followed(cluster: RedisCluster) -> None:
    """After its slot is migrated to another primary (CLUSTER SETSLOT, MIGRATE), writes and reads go on:
    the MOVED redirection is followed, and the script runs once, on the new owner."""
    flight = Flight.objects.create(code="M1", seats=1, fare=decimal.Decimal(1))
    src, dst, finish = _move_keys(cluster, flight._key())
    finish()
    flight.incr("seats", 1)
    Flight.objects.create(code="M2", seats=5, fare=decimal.Decimal(2))
    assert Flight.objects.get(id=flight.id).seats == 2
    assert sorted(f.code for f in Flight.objects.all()) == ["M1", "M2"]
    assert dst.exists(flight._key()) == 1
    with pytest.raises(MovedError):  # the old owner sends it away: the record lives on the new one only
        src.exists(flight._key())


def test_a_pipelined_read_names_the_primary_of_its_keys_slot(cluster: RedisCluster) -> None:
    """The executor routes each command of a cluster pipeline by the key it names (io/common.py ``routed``)."""
    from repocket.io.common import routed
    from repocket.plan.rounds import Command, command

    flight = Flight.objects.create(code="R1", seats=1, fare=decimal.Decimal(1))
    options = routed(cluster, Command(("HGETALL", flight._key()), flight._key()), {})
    assert options["target_nodes"] == cluster.get_node_from_key(flight._key())
    union = command("SUNION", "{a}:1", "{a}:2", key="{a}:*")  # (its key names no argument: left to redis-py)
    assert "target_nodes" not in routed(cluster, union, {})
    assert Flight.objects.get(flight.pk).code == "R1"


class Recording(ActiveRecord):
    """Spread over the cluster's default 16 partitions, with a ByteStream: each record is read in a MULTI."""

    title = attributes.Unicode(index=True)
    audio = attributes.ByteStream()


def test_records_with_bytestreams_load_from_every_partition_at_once(cluster: RedisCluster) -> None:
    """A load over many slots sends one MULTI per slot, side by side (sync: from threads; async: gathered)."""
    made = Recording.objects.bulk_create([Recording(title=f"t{i % 3}", audio=b"a" * i) for i in range(48)])
    assert len({partition_of(r.pk, 16) for r in made}) > 8
    loaded = list(Recording.objects.filter(title="t1"))
    assert sorted(r.audio for r in loaded) == sorted(b"a" * i for i in range(48) if i % 3 == 1)
    assert {r.pk: r.audio for r in Recording.objects.all()} == {r.pk: r.audio for r in made}


def test_configure_cluster_needs_one_way_to_reach_it() -> None:
    with pytest.raises(ValueError):
        configure.cluster()
    with pytest.raises(ValueError):
        configure.cluster(url="redis://127.0.0.1:7000", nodes=[("127.0.0.1", 7000)])


def test_a_write_during_a_slot_migration_is_called_again_until_the_slot_has_moved(cluster: RedisCluster) -> None:
    """While the model's slot migrates, the old owner answers ASK and the importing node TRYAGAIN (not every
    key of the call is there yet): nothing ran, so the script is called again, and once the slot has moved,
    it runs once, on the new owner."""
    flight = Flight.objects.create(code="A1", seats=1, fare=decimal.Decimal(1))
    _, dst, finish = _move_keys(cluster, flight._key())
    timer = threading.Timer(0.3, finish)
    timer.start()
    try:
        with count_round_trips() as trips:
            flight.incr("seats", 1)
    finally:
        timer.join()
    assert trips.names().count(b"ASKING") >= 1
    assert Flight.objects.get(id=flight.id).seats == 2
    assert dst.hget(flight._key(), "seats") is not None


class Roster(ActiveRecord):
    flight = attributes.Pointer(Flight)
    crew = attributes.Pointer(Crew)

    class Meta:
        partitions = 1


def test_pointers_to_models_in_different_slots_load_in_one_level(cluster: RedisCluster) -> None:
    """A record's Pointers to two models (one with a ByteStream, read in MULTI with its hash) resolve
    together, though the two models' keys live in different slots."""
    flight = Flight.objects.create(code="P1", seats=1, fare=decimal.Decimal(1), log=b"x")
    crew = Crew.objects.create(name="Ada")
    assert cluster.keyslot(flight._key()) != cluster.keyslot(crew._key())
    roster = Roster.objects.create(flight=flight, crew=crew)
    loaded = Roster.objects.get(id=roster.id)
    assert (loaded.flight.log, loaded.crew.name) == (b"x", "Ada")


class Cargo(ActiveRecord):
    """Flight's fields, spread over the cluster's default 16 partitions (its unique code through claims)."""

    code = attributes.Unicode(index=True, unique=True)
    seats = attributes.Integer(index=True)
    fare = attributes.Decimal()


@pytest.mark.slow
@pytest.mark.parametrize("model", [Flight, Cargo], ids=["one-partition", "16-partitions"])
def test_writes_go_on_when_a_primary_is_killed_and_none_that_returned_is_lost(
        redis_cluster_factory: Callable[..., LocalCluster], model: Any) -> None:
    """SIGKILL the primary of the model's slot during writes: the writes wait for its replica to take
    over; with wait_replicas=1 they raise ReplicationError until the killed node, restarted, has become
    the new primary's replica, and then go on; every write that returned is on the new primary."""
    topology = redis_cluster_factory()
    client = configure.cluster(url=topology.url, wait_replicas=1, wait_timeout=0.5, failover_timeout=30,
                               socket_timeout=5, socket_connect_timeout=1)
    done: list[Any] = []
    unknown = 0

    def write(code: str) -> None:
        nonlocal unknown
        try:
            done.append(model.objects.create(code=code, seats=1, fare=decimal.Decimal(1)))
        except errors.RedisConnectionError:
            unknown += 1  # not acknowledged: it may or may not be there

    try:
        for i in range(10):
            write(f"K{i}")
        victim = client.get_node_from_key(done[0]._key())
        topology.kill(victim.port)
        write("during")  # its replica is not primary yet: this waits for the failover
        topology.wait_until_ok(timeout=30)
        topology.restart(victim.port)  # back as the new primary's replica
        acknowledged = len(done)
        deadline = time.monotonic() + 30
        while len(done) < acknowledged + 10:
            assert time.monotonic() < deadline, f"writes did not go on after the kill ({unknown} unknown)"
            write(f"L{len(done)}-{unknown}")
        topology.wait_until_ok(timeout=30)
        stored = {f.code for f in model.objects.all()}
        assert {f.code for f in done} <= stored
        assert {f.code for f in model.objects.filter(seats=1)} == stored  # the index answers exactly
        assert model.objects.count() == len(stored)
        report = model.objects.check()
        # A spread model's write that raised may leave its unique claim (nobody holds it): check() says so,
        # and repair releases it. Nothing else may be found.
        assert report.missing_entries == [] and len(report) == len(report.stale_entries)
        assert not {token for _, token in report.stale_entries} & {f.code for f in done}  # none acknowledged
        assert not report.stale_entries or model is Cargo
        model.objects.check(repair=True)
        assert model.objects.check().ok
        assert victim.port in {port for _, port in topology.replicas()}  # it came back as a replica
    finally:
        configure.reset()


def _model_in_slots(high: int, partitions: int = 1) -> tuple[type[ActiveRecord], int]:
    """A model with a partition whose keys hash to a slot below ``high`` (so that a reshard of the first
    slots moves it), and that partition's number."""
    for i in range(100_000):
        prefix = keys.model_prefix("tests.functional.test_cluster", f"Parcel{i}")
        low = [n for n in range(partitions) if key_slot(keys.cluster_prefix(prefix, n).encode()) < high]
        if low:
            return type(f"Parcel{i}", (ActiveRecord,), {
                "__module__": __name__, "label": attributes.Unicode(index=True), "weight": attributes.Integer(),
                "Meta": type("Meta", (), {"partitions": partitions}),
            }), low[0]
    raise AssertionError("no model name hashes to the first slots")


@pytest.mark.slow
@pytest.mark.parametrize("partitions", [1, 16])
def test_a_reshard_of_500_slots_under_writes_and_reads_loses_nothing(
        redis_cluster_factory: Callable[..., LocalCluster], redis_cli: str, partitions: int) -> None:
    """``redis-cli --cluster reshard`` moves 500 slots, the model's (or one of its partitions') among them,
    while a thread writes and reads: every write that returned is there, the index answers exactly, and
    check() finds nothing."""
    topology = redis_cluster_factory()
    client = configure.cluster(url=topology.url, failover_timeout=30)
    parcel, low = _model_in_slots(500, partitions)
    first = parcel(id=next(pk for pk in (uuid.uuid4() for _ in range(10_000)) if partition_of(pk, partitions) == low),
                   label="first", weight=0)
    first.save()
    source = client.get_node_from_key(first._key())
    target = next(node for node in client.get_primaries() if node.name != source.name)
    ids = {node.port: client.get_redis_connection(node).cluster("myid") for node in (source, target)}
    written: list[Any] = [first]
    failures: list[BaseException] = []
    stop = threading.Event()

    def workload() -> None:
        n = 0
        while not stop.is_set():
            try:
                written.append(parcel.objects.create(label=f"l{n % 7}", weight=n))
                parcel.objects.filter(label=f"l{n % 7}").count()
                n += 1
            except errors.RepocketError as exc:  # nothing may fail: redirections are followed
                failures.append(exc)
                return

    worker = threading.Thread(target=workload)
    worker.start()
    try:
        time.sleep(0.3)
        moved = subprocess.run(
            [redis_cli, "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", ids[source.port],
             "--cluster-to", ids[target.port], "--cluster-slots", "500", "--cluster-yes"],
            capture_output=True, text=True, timeout=120)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
    assert failures == []
    client.nodes_manager.initialize()
    assert client.get_node_from_key(first._key()).port == target.port  # the model's slot moved
    assert len(written) > 20
    stored = {str(p.id) for p in parcel.objects.all()}
    assert stored == {str(p.id) for p in written}
    for value in range(7):
        assert {str(p.id) for p in parcel.objects.filter(label=f"l{value}")} == {
            str(p.id) for p in written if p.label == f"l{value}"}
    assert parcel.objects.check().ok
    configure.reset()
