"""``python -m benchmarks --cluster`` (``make bench-cluster``): repocket on a local Redis Cluster.

A :class:`~repocket.topology.LocalCluster` (3 primaries, 3 replicas, on
loopback) is started; repocket is pointed at it with ``configure.cluster()``,
and the minimal program (:class:`benchmarks.minimal.Minimal`, plain values,
one set per indexed value, MULTI/EXEC pipelines) runs on a
``redis.cluster.RedisCluster`` client under the hash-tagged prefix
``{bench-minimal:0}``, so that its keys share one slot too, as repocket's do.
Both run the same operations on the benchmark's ``Person`` (passed in by
``benchmarks.__main__``), best of ``--reps`` runs (the sides taking turns), and the ratio of their times is
printed with the targets of issue 10: get and create one by one at most 1.3
times the hand-written program, an indexed filter and filter + order_by at
most 1.5 times. With ``--page`` (the default after a full run) the table goes
into ``docs/performance.rst`` between ``.. begin cluster`` and ``.. end cluster``.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster

from benchmarks.common import RunInfo, fill, rst_table, tidy, timed, write_block
from benchmarks.minimal import Minimal
from repocket import ActiveRecord, configure
from repocket.topology import LocalCluster

__all__ = ["BEGIN", "END", "N", "TARGETS", "main", "measure", "render", "write_cluster"]

#: Records loaded; creates, gets and deletes timed one by one.
N = 5000
ONE_BY_ONE = 1000
#: The largest acceptable repocket / hand-written ratio (None: measured, no target).
TARGETS: dict[str, float | None] = {
    "bulk create": None, "create one by one": 1.3, "get by id": 1.3, "count": None,
    "filter (~25%)": 1.5, "filter + order_by": 1.5,
}
BEGIN = ".. begin cluster"
BEGIN_LINE = f"{BEGIN}: written by make bench-cluster, benchmarks/cluster.py"
END = ".. end cluster"
CITIES = ("London", "Paris", "Berlin", "Rome")


def _rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"name": f"p{rng.randrange(10**9)}", "age": rng.randrange(90), "city": rng.choice(CITIES),
             "bio": "x" * 40, "score": rng.random(), "tag": f"t{rng.randrange(N // 100)}"} for _ in range(count)]


def _best(reps: int, fn: Callable[[], Any]) -> float:
    return min(timed(fn)[0] for _ in range(reps))


def _pair(reps: int, rp: Callable[[], Any], mn: Callable[[], Any]) -> tuple[float, float]:
    """Best seconds of each side over ``reps`` runs, the two taking turns (and turns at going first).

    The two sides' runs are adjacent in time, so a burst of load on a shared
    machine slows both rather than one of them.
    """
    best = [math.inf, math.inf]
    for rep in range(reps):
        for side in ((0, 1), (1, 0))[rep % 2]:
            best[side] = min(best[side], timed((rp, mn)[side])[0])
    return best[0], best[1]


def main(person: type[ActiveRecord], reps: int, page: Path | None) -> int:
    """Run both sides on a fresh local cluster, print the table and, with ``page``, write it there."""
    load_at_start = os.getloadavg()[0]
    with LocalCluster() as topology:
        client = configure.cluster(url=topology.url)
        hand = Minimal(RedisCluster.from_url(topology.url, decode_responses=True), "{bench-minimal:0}")
        try:
            partitions = person._meta.partitions  # (read while the cluster layout is configured)
            rows = measure(person, hand, reps)
            single = measure(_one_partition(person), hand, reps)
            info = RunInfo.measure(client.get_redis_connection(client.get_primaries()[0]), load_at_start)
        finally:
            configure.reset()
    text = render(rows, info, single, partitions)
    print(text)
    if page is not None:
        page.write_text(write_cluster(page.read_text(encoding="utf-8"), text), encoding="utf-8")
        print(f"wrote the cluster results into {page}", file=sys.stderr)
    return 0


def measure(person: type[ActiveRecord], hand: Minimal, reps: int) -> list[tuple[str, float, float]]:
    """``(operation, repocket µs, hand-written µs)`` per record (per call for get and count)."""
    out: list[tuple[str, float, float]] = []
    rows = _rows(N, 1)

    def loaded() -> None:  # both sides hold the same N records before each run
        for primary in hand.r.get_primaries():
            hand.r.get_redis_connection(primary).flushall()

    loaded()
    rp_bulk = _best(1, lambda: person.objects.bulk_create([person(**row) for row in rows], batch_size=500))
    mn_bulk = _best(1, lambda: hand.bulk_create(rows))
    out.append(("bulk create", rp_bulk / N * 1e6, mn_bulk / N * 1e6))
    extra = _rows(ONE_BY_ONE, 2)  # each side creates them all, in 10 runs of 100, taking turns
    chunk, rp_rows, mn_rows = ONE_BY_ONE // 10, iter(extra), iter(extra)
    rp_one, mn_one = _pair(10, lambda: [person.objects.create(**next(rp_rows)) for _ in range(chunk)],
                           lambda: [hand.create(next(mn_rows)) for _ in range(chunk)])
    out.append(("create one by one", rp_one / chunk * 1e6, mn_one / chunk * 1e6))
    rp_ids = [str(p.id) for p in person.objects.filter(city="London")][:ONE_BY_ONE]
    mn_ids = list(hand.r.smembers(hand.set_key("city", "London")))[:ONE_BY_ONE]
    calls = min(len(rp_ids), len(mn_ids))
    rp_get, mn_get = _pair(reps, lambda: [person.objects.get(id=pk) for pk in rp_ids[:calls]],
                           lambda: [hand.get(pk) for pk in mn_ids[:calls]])
    out.append(("get by id", rp_get / calls * 1e6, mn_get / calls * 1e6))
    rp_count, mn_count = _pair(reps, lambda: [person.objects.count() for _ in range(200)],
                               lambda: [hand.count() for _ in range(200)])
    out.append(("count", rp_count / 200 * 1e6, mn_count / 200 * 1e6))
    matches = person.objects.filter(city="Paris").count()
    rp_filter, mn_filter = _pair(reps, lambda: list(person.objects.filter(city="Paris")),
                                 lambda: hand.filter_eq("city", "Paris"))
    out.append(("filter (~25%)", rp_filter / matches * 1e6, mn_filter / matches * 1e6))
    tagged = max(person.objects.filter(tag="t7").count(), 1)
    rp_ordered, mn_ordered = _pair(3 * reps, lambda: list(person.objects.filter(tag="t7").order_by("name")),
                                   lambda: hand.filter_eq_ordered("tag", "t7", "name"))  # (a short query: more runs)
    out.append(("filter + order_by", rp_ordered / tagged * 1e6, mn_ordered / tagged * 1e6))
    if sorted(p.name for p in person.objects.filter(city="Paris")) != sorted(
            r["name"] for r in hand.filter_eq("city", "Paris")):
        raise RuntimeError("the two sides disagree on filter(city='Paris')")
    return out


def _one_partition(person: type[ActiveRecord]) -> type[ActiveRecord]:
    """The benchmark's model declared with ``partitions = 1``, under another name (its own keys)."""
    meta = person._meta
    attrs: dict[str, Any] = {name: copy.copy(attr) for name, attr in meta.fields.items() if name != meta.pk}
    attrs.update(__module__=person.__module__, Meta=type("Meta", (), {"namespace": meta.namespace, "partitions": 1}))
    return type(f"{person.__name__}One", (ActiveRecord,), attrs)


def render(rows: list[tuple[str, float, float]], info: RunInfo,
           single: list[tuple[str, float, float]] | None = None, partitions: int = 16) -> str:
    """The results as reStructuredText: the run's facts, the table, the missed targets.

    ``single``: the same operations on a model of one partition, shown beside.
    """
    table = [("operation", f"repocket µs ({partitions} partitions)", "hand-written µs", "ratio", "target",
              "repocket µs (1 partition)", "ratio (1 partition)")]
    missed = []
    for number, (name, ours, theirs) in enumerate(rows):
        ratio = ours / theirs
        target = TARGETS.get(name)
        one, one_theirs = (single[number][1], single[number][2]) if single else (math.nan, math.nan)
        table.append((name, f"{ours:.1f}", f"{theirs:.1f}", f"{ratio:.2f}", "—" if target is None else f"≤{target}",
                      f"{one:.1f}", f"{one / one_theirs:.2f}"))
        if target is not None and ratio > target:
            missed.append(f"- {name} ({ratio:.2f}, target ≤{target})")
    facts = (f"Measured on {info.date}, {info.machine}, {info.python}, redis-server {info.redis_server}, "
             f"load average {info.load}; a local cluster of 3 primaries and 3 replicas, N = {N:,} records, "
             f"µs per record (per call for get by id and count), best of the runs. The hand-written program "
             f"keeps its keys in one slot; repocket's model spreads over {partitions} partitions (the default), "
             f"and again over 1 (each ratio against the hand-written program measured beside it).")
    parts = [fill(facts), "", rst_table(table)]
    if missed:
        parts += ["", "Missed targets:", "", *missed]
    return tidy("\n".join(parts))


def write_cluster(page: str, text: str) -> str:
    """``page`` with its cluster block replaced by ``text`` (ValueError when the markers are missing)."""
    return write_block(page, BEGIN, BEGIN_LINE, END, text)
