"""``python -m benchmarks`` (``make bench``): repocket against two hand-written redis-py programs.

One real ``redis-server`` is started (:class:`repocket.server.RedisServer`: a free
loopback port, no persistence, ``CONFIG`` left enabled for ``CONFIG RESETSTAT``)
and stopped at the end, also on Ctrl-C or an error. In one process, on that
server, repocket and two baselines do the same work on the same records::

    class Person(ActiveRecord):
        name = Unicode(index=True)     # unique per record
        age = Integer(index=True)      # uniform in 0..99
        city = Unicode(index=True)     # one of 4 cities
        bio = Unicode()                # ~90 characters
        score = Float()
        tag = Unicode(index=True)      # "t<i // 100>": every tag is held by exactly 100 records

The two yardsticks:

minimal (:mod:`benchmarks.minimal`, ``minimal:bench:Person``)
    what a careful user writes without an ORM: each record a hash of plain
    values (typed back on read with ``int()``/``float()``), the id set, one set
    per value of each indexed field, one sorted set of ages for the range
    filter; MULTI/EXEC pipelines for writes, SMEMBERS or ZRANGEBYSCORE and a
    pipeline of HGETALL for filters, SCARD for count.
same layout (:mod:`benchmarks.handwritten`, ``handwritten:bench:Person``)
    repocket's own layout written by hand: the same JSON envelopes and the same
    index sets, byte for byte, and the same round trips as the minimal program.

Before timing anything the benchmark writes one record on each side with the
same id and checks that the same-layout program wrote every key, type and value
repocket wrote, that the minimal program wrote the plain values, that all three
read it back as the same values, and that every delete leaves no key behind;
sync and async. While timing, every query's first run is checked too: the three
sides return as many records, with the same values, in the same order.

At each model size N (default 10,000 and 100,000; the database is flushed
between sizes) it times, in this order:

=======================  =========================================================
bulk create              N records in 10 chunks, ``bulk_create(batch_size=500)``;
                         building the instances from plain dicts is included
get by id                ``Person.objects.get(id=...)``: 10 runs of 500 random ids
count                    ``Person.objects.count()``: 10 runs of 300 calls
filter                   ``list(filter(city=...))``: ~25% of N, materialised
filter + order_by        ``list(filter(city=...).order_by("age"))``
range filter             ``list(filter(age__range=(20, 29)))``: ~10% of N
fixed-size filter        ``list(filter(tag="t7"))``: 100 records at every N, and
                         the same ``.order_by("age")``; 30 runs each
create one by one        ``Person.create(**row)`` for min(N, 10,000) more records,
                         in 10 chunks; at N = 100,000 a sample of 10,000 creates
                         into a model that already holds 100,000 records
delete one by one        ``record.delete()`` of those records (the instances
                         ``create`` returned; the baselines have id and values
                         in hand too), 10 chunks
async get by id          ``await Person.objects.aget(id=...)``: 10 runs of 500
                         random ids, each run through ``asyncio.gather``
async indexed filter     ``[p async for p in filter(tag=...)]``: 10 runs of 50
                         queries of 100 records each (a different tag each)
async create one by one  ``await Person.acreate(**row)`` for min(N, 10,000) more
                         records in 10 chunks, each through ``asyncio.gather``
delete (bulk)            ``filter(tag=...).delete()`` of those records, 10 chunks
=======================  =========================================================

The async rows run repocket's asyncio API against :class:`AsyncHandWritten` and
:class:`AsyncMinimal` (the same programs on ``redis.asyncio``), all on one event
loop kept for the whole run, with at most :data:`CONCURRENCY` operations in
flight on each side (an ``asyncio.Semaphore``).

Every timing is ``time.perf_counter`` around the whole operation, after a
``gc.collect()``; the three sides take turns (which goes first rotates) and the
best (minimum) of the repetitions (``--reps``, default 5, for the filters) is
kept. Writes cannot repeat on the same data, so their repetitions are the
chunks. The table gives µs per record (per call for get by id and count) and,
against each baseline, the ratio repocket / baseline of the best times;
``paired`` is the median of each repetition's own ratio (the sides ran back to
back), which moves less when other processes load the machine. The growth lines
give t(largest N) / t(smallest N) of the fixed-size filters for every side: the
baselines' growth is what the machine and Redis add by themselves.

Server time per write: around each run of every write operation the benchmark
sends ``CONFIG RESETSTAT`` and reads ``INFO commandstats`` afterwards (neither
is timed). For repocket it prints the ``EVALSHA`` calls per record, µs per call
(``usec_per_call``) and µs per record; for the baselines the µs per record spent
in ``EXEC`` (which runs their MULTI/EXEC pipelines, where all their writes are).

Memory (:mod:`benchmarks.memory`): bytes per record of a six-field model in five
layouts (minimal; plain values with repocket's indexes; the same layout by hand;
repocket's envelope format; repocket's ``Meta.format = "plain"``, "n/a" when this
repocket lacks it), each alone in a flushed database, on a server configured
like the embedded one (``hash-max-ziplist-value`` 256) and on one with Redis's
default (64).

The default run takes 4 to 6 minutes on 2 cores; ``--quick`` (N = 1,000, fewer
runs of the fixed-size and async filters, 500 records in the memory layouts) about
25 seconds.

A full run (no ``--quick``, ``--sizes``, ``--profile`` or ``--scale``) also
writes the results into ``docs/performance.rst``: only the part between its two
marker comments, ``.. begin results`` and ``.. end results``, is replaced (the
rest of the page is prose kept by hand). That part is :data:`RESULTS` filled in
by :func:`render_results`: date, machine, Python and redis-server versions, load
average, the two tables of ratios, the targets missed, the growth table, the
server time per write and the memory tables. ``--page PATH`` writes another
page (also after a shorter run), ``--no-page`` none.

``--scale`` runs :mod:`benchmarks.scale` instead (``make bench-scale``): how the
time of fixed-size queries grows with the model (10,000, 100,000 and 1,000,000
records by default, ``--scale-sizes`` to choose); with the default sizes it
writes its part of the page, between ``.. begin scale`` and ``.. end scale``.

``--cluster`` runs :mod:`benchmarks.cluster` instead (``make bench-cluster``):
repocket and the minimal program on a local Redis Cluster of 3 primaries and 3
replicas; it writes its part of the page, between ``.. begin cluster`` and
``.. end cluster``.

``--lua-stages`` runs :mod:`benchmarks.lua_stages` instead: the server time of
the write script's stages (reading the plan, the checks, the writes), from
replayed create calls.

``--profile OP`` runs repocket's side of one operation under cProfile at the
first size (default 10,000) and prints the top 15 functions by cumulative and by
own time instead of the table. OP is one of bulk_create, get (2,000 gets), count
(1,000 calls), filter, filter_order, range, fixed (100 queries), fixed_order
(10 queries), create_one (5,000 creates) or delete (5,000 records).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import gc
import os
import platform
import pstats
import random
import statistics
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from benchmarks import changes, cluster, lua_stages, memory, scale
from benchmarks.common import (
    RunInfo,
    cpu_model,
    fill,
    package_version,
    rst_table,
    snapshot,
    tidy,
    timed,
    write_block,
)
from benchmarks.handwritten import AsyncHandWritten, HandWritten
from benchmarks.minimal import AsyncMinimal, Minimal
from repocket import ActiveRecord, attributes, configure
from repocket.server import RedisServer

__all__ = ["RESULTS", "Result", "Row", "RunInfo", "ServerRow", "main", "render_results", "write_results"]

CITIES = ("Lisbon", "Nairobi", "Osaka", "Quito")
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
WORDS = ("redis", "python", "hash", "index", "record", "query", "pipeline", "script", "atomic", "model")
RANGE = (20, 29)  # ages are uniform in 0..99: ~10% of N
FIXED_TAG = "t7"  # every "t<k>" is held by exactly 100 records
HAND_PREFIX = "handwritten:bench:Person"
MINIMAL_PREFIX = "minimal:bench:Person"
CHUNKS = 10
GET_RUNS, GET_PER_RUN = 10, 500
COUNT_RUNS, COUNT_PER_RUN = 10, 300
FIXED_RUNS = 30
BATCH = 500
#: The most operations each side has in flight in the async rows.
CONCURRENCY = 64
ASYNC_FILTER_RUNS, ASYNC_FILTER_PER_RUN = 10, 50
#: The runs of the fixed-size and async filters in a ``--quick`` run (else FIXED_RUNS, ASYNC_FILTER_RUNS).
QUICK_RUNS = 6
#: The records of the memory layouts in a ``--quick`` run (a full run has :data:`memory.RECORDS`).
QUICK_MEMORY_RECORDS = 500

#: The sides of every duel: repocket first, then the baselines.
SIDES = ("rp", "mn", "hw")
#: The baselines, by side, as the table names them.
BASELINES = {"mn": "minimal", "hw": "same layout"}
#: The largest acceptable ratio repocket / minimal, by operation (none for a bulk delete).
TARGETS = {
    "bulk create": 1.8,
    "get by id": 1.25,
    "count": 1.2,
    "filter (~25%)": 1.5,
    "filter + order_by": 1.5,
    "range filter (~10%)": 1.5,
    "create one by one": 1.25,
    "delete one by one": 1.2,
    "async get by id": 1.25,
    "async indexed filter": 1.5,
    "async create one by one": 1.25,
}
#: The largest acceptable ratio repocket / same layout, for every operation.
SAME_LAYOUT_TARGET = 1.15
#: The largest acceptable t(100,000) / t(10,000) of the fixed-size filter (no order_by).
GROWTH_TARGET = 1.2
#: The order of the table's rows at each N (the run deletes in bulk last).
ORDER = (
    "bulk create", "get by id", "count", "filter (~25%)", "filter + order_by", "range filter (~10%)",
    "filter (100 results)", "filter + order_by (100 results)", "create one by one", "delete one by one",
    "delete (bulk)", "async get by id", "async indexed filter", "async create one by one",
)  # fmt: skip
#: The fields compared between the sides (ids differ: each side assigns its own).
VALUES = ("name", "age", "city", "bio", "score", "tag")
T = TypeVar("T")
OPERATIONS = (
    "bulk_create", "get", "count", "filter", "filter_order", "range", "fixed", "fixed_order", "create_one", "delete",
)


class Person(ActiveRecord):
    """The benchmark's record."""

    class Meta:
        namespace = "bench"

    name = attributes.Unicode(index=True)
    age = attributes.Integer(index=True)
    city = attributes.Unicode(index=True)
    bio = attributes.Unicode()
    score = attributes.Float()
    tag = attributes.Unicode(index=True)


# -- data -------------------------------------------------------------------------------


def make_rows(n: int, seed: int, tag: Callable[[int], str] | None = None) -> list[dict[str, Any]]:
    """``n`` records as plain dicts, the same for every side (ids are assigned when saved)."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({
            "name": f"{rnd.choice(FIRST)} {rnd.choice(LAST)} {seed}-{i:06d}",
            "age": rnd.randrange(100),
            "city": CITIES[rnd.randrange(len(CITIES))],
            "bio": " ".join(rnd.choice(WORDS) for _ in range(12)),
            "score": round(rnd.uniform(0, 100), 3),
            "tag": tag(i) if tag else f"t{i // 100}",
        })  # fmt: skip
    return rows


def split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    """``items`` in ``parts`` consecutive chunks of (nearly) equal size."""
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def values_of(records: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Each record's :data:`VALUES` (a repocket instance or a baseline's dict alike)."""
    return [tuple(record[name] for name in VALUES) for record in records]


# -- timing ------------------------------------------------------------------------------


@dataclass
class Result:
    """What one duel measured: best µs per unit of each side, and the paired ratios."""

    #: Best µs per unit, by side ("rp", "mn", "hw").
    us: dict[str, float]
    #: By baseline: repocket / that baseline of each run, the sides' runs being adjacent in time.
    pairs: dict[str, list[float]]
    #: By side: each run's result (with ``keep``) or its size.
    results: dict[str, list[Any]] = field(default_factory=dict)

    def per(self, size: int) -> Result:
        """The same, per ``size`` units (for timings taken per query)."""
        return Result({side: us / size for side, us in self.us.items()}, self.pairs, self.results)


@dataclass
class Row:
    """One line of the table."""

    operation: str
    n: int
    unit: str
    result: Result
    note: str = ""
    #: In the docs page's tables (the fixed-size filters are there as growth instead).
    on_page: bool = True

    def ratio(self, side: str) -> float:
        """Best repocket time / best time of baseline ``side``."""
        return self.result.us["rp"] / self.result.us[side]

    def paired(self, side: str) -> float:
        """The median of the runs' own ratios to ``side``: less sensitive to load that comes and goes."""
        return statistics.median(self.result.pairs[side])

    def target(self, side: str) -> float | None:
        """The largest acceptable :meth:`ratio` to ``side`` (None: no target)."""
        if not self.on_page:
            return None
        return TARGETS.get(self.operation) if side == "mn" else SAME_LAYOUT_TARGET


@dataclass
class ServerRow:
    """Server time of one write operation, from ``INFO commandstats``, summed over its runs."""

    operation: str
    n: int
    #: By side: records written, calls and µs of the commands that hold the writes
    #: (EVALSHA for repocket, EXEC for the baselines).
    records: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)

    def per_record(self, side: str) -> float:
        return self.usec.get(side, 0) / max(self.records.get(side, 0), 1)

    def per_call(self, side: str) -> float:
        return self.usec.get(side, 0) / max(self.calls.get(side, 0), 1)

    def calls_per_record(self, side: str) -> float:
        return self.calls.get(side, 0) / max(self.records.get(side, 0), 1)


class CommandStats:
    """``CONFIG RESETSTAT`` before each side's run and ``INFO commandstats`` after it, into a :class:`ServerRow`."""

    #: The commands that hold each side's writes.
    COMMANDS = {"rp": ("evalsha", "eval"), "mn": ("exec",), "hw": ("exec",)}

    def __init__(self, conn: redis.Redis, row: ServerRow) -> None:
        self.conn = conn
        self.row = row

    def before(self, side: str) -> None:
        self.conn.config_resetstat()

    def after(self, side: str, units: int) -> None:
        stats = self.conn.info("commandstats")
        row = self.row
        row.records[side] = row.records.get(side, 0) + units
        for command in self.COMMANDS[side]:
            entry = stats.get(f"cmdstat_{command}")
            if entry:
                row.calls[side] = row.calls.get(side, 0) + int(entry["calls"])
                row.usec[side] = row.usec.get(side, 0) + int(entry["usec"])


def _size(result: Any) -> int:
    return result if isinstance(result, int) else len(result)


def duel(
    sides: dict[str, Callable[[int], Any]],
    runs: int,
    per_run: Callable[[int, Any], int],
    keep: bool = False,
    check: Callable[[str, int, Any], None] | None = None,
    stats: CommandStats | None = None,
) -> Result:
    """Run every side ``runs`` times, rotating who goes first; best µs per unit each.

    ``sides[side](i)`` does run ``i`` (repocket is ``"rp"``, the others are the
    baselines); ``per_run(i, result)`` is how many units it did; ``check(side, i,
    result)`` sees every result (untimed). Keeps the results of every run (with
    ``keep``) or their sizes (without: results are dropped at once, so they do not
    weigh on the garbage collector). With ``stats``, the server's command
    statistics are reset before each run and read after it.
    """
    names = list(sides)
    best = dict.fromkeys(names, float("inf"))
    results: dict[str, list[Any]] = {side: [] for side in names}
    pairs: dict[str, list[float]] = {side: [] for side in names if side != "rp"}
    for i in range(runs):
        turn = i % len(names)
        took = {}
        for side in names[turn:] + names[:turn]:
            if stats is not None:
                stats.before(side)
            seconds, result = timed(lambda fn=sides[side], i=i: fn(i))
            units = per_run(i, result)
            if stats is not None:
                stats.after(side, units)
            if check is not None:
                check(side, i, result)
            took[side] = seconds * 1e6 / units
            best[side] = min(best[side], took[side])
            results[side].append(result if keep else _size(result))
            del result
        for side in pairs:
            pairs[side].append(took["rp"] / took[side])
    return Result(best, pairs, results)


async def bounded(step: Callable[[Any], Awaitable[T]], items: Iterable[Any], limit: int = CONCURRENCY) -> list[T]:
    """``step(item)`` for every item, through ``asyncio.gather``, at most ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Any) -> T:
        async with gate:
            return await step(item)

    return await asyncio.gather(*(one(item) for item in items))


def same_sizes(what: str, outcome: Result) -> int:
    """Check every side returned as many records each run (same work); return the first size."""
    sizes = {side: [_size(r) for r in results] for side, results in outcome.results.items()}
    if any(found != sizes["rp"] for found in sizes.values()):
        raise RuntimeError(f"{what}: the sides returned other numbers of records: {sizes}")
    return sizes["rp"][0]


def same_values(what: str, found: dict[str, list[tuple[Any, ...]]], order: str | None = None,
                in_order: bool = False) -> None:
    """Check every side returned the same records' values (``in_order``: in the same order).

    With ``order``, each side's records must also be sorted by that field.
    """
    if order is not None:
        at = VALUES.index(order)
        for side, records in found.items():
            column = [record[at] for record in records]
            if column != sorted(column):
                raise RuntimeError(f"{what}: the {side} side's records are not ordered by {order}")
    theirs = found["rp"] if in_order else sorted(found["rp"])
    for side, records in found.items():
        if (records if in_order else sorted(records)) != theirs:
            raise RuntimeError(f"{what}: the {side} side returned other values than repocket")


# -- the benchmark ---------------------------------------------------------------------


class Bench:
    """Every side on one server; ``run(n)`` times every operation at model size ``n``."""

    def __init__(self, conn: redis.Redis, hand: HandWritten, minimal: Minimal, reps: int,
                 log: Callable[[str], None], async_hand: AsyncHandWritten, async_minimal: AsyncMinimal,
                 loop: asyncio.AbstractEventLoop, quick: bool = False) -> None:
        self.conn = conn
        #: Runs of the fixed-size filters and of the async filter (fewer in a ``--quick`` smoke run).
        self.fixed_runs = QUICK_RUNS if quick else FIXED_RUNS
        self.async_filter_runs = QUICK_RUNS if quick else ASYNC_FILTER_RUNS
        self.hw = hand
        self.mn = minimal
        self.ahw = async_hand
        self.amn = async_minimal
        self.loop = loop
        self.reps = reps
        self.log = log
        self.rows: list[Row] = []
        self.server: list[ServerRow] = []
        #: Fixed-size filters: best seconds per query, per N, per side.
        self.fixed: Fixed = {}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        us = row.result.us
        self.log(f"  {row.operation:<31} N={row.n:>7,}  µs/{row.unit}: repocket {us['rp']:8.1f}"
                 f"  minimal {us['mn']:8.1f}  same layout {us['hw']:8.1f}"
                 f"  ratios {row.ratio('mn'):5.2f} / {row.ratio('hw'):5.2f}")

    def stats(self, operation: str, n: int) -> CommandStats:
        """A :class:`CommandStats` filling a new server row of ``operation``."""
        row = ServerRow(operation, n)
        self.server.append(row)
        return CommandStats(self.conn, row)

    def counts(self, what: str, expected: int) -> None:
        found = {"rp": Person.objects.count(), "mn": self.mn.count(), "hw": self.hw.count()}
        if set(found.values()) != {expected}:
            raise RuntimeError(f"{what}: expected {expected} records on each side, found {found}")

    def run(self, n: int) -> None:
        self.conn.flushdb()
        hw, mn = self.hw, self.mn
        rows = make_rows(n, seed=n)
        chunks = split(rows, CHUNKS)
        first_row, first_server = len(self.rows), len(self.server)

        # bulk create: the chunks are the repetitions
        outcome = duel({
            "rp": lambda i: Person.objects.bulk_create([Person(**row) for row in chunks[i]], batch_size=BATCH),
            "mn": lambda i: mn.bulk_create(chunks[i]),
            "hw": lambda i: hw.bulk_create(chunks[i]),
        }, len(chunks), lambda i, result: len(chunks[i]), keep=True, stats=self.stats("bulk create", n))
        self.add(Row("bulk create", n, "record", outcome))
        ids = {side: [record.id if side == "rp" else record for result in results for record in result]
               for side, results in outcome.results.items()}
        outcome.results = {}
        self.counts("bulk create", n)

        # get by id: a different slice of random ids each run (the k-th id of each side is the same row)
        sample = split(random.Random(1).sample(range(n), min(n, GET_RUNS * GET_PER_RUN)), GET_RUNS)
        outcome = duel({
            "rp": lambda i: [Person.objects.get(id=ids["rp"][k]) for k in sample[i]],
            "mn": lambda i: [mn.get(ids["mn"][k]) for k in sample[i]],
            "hw": lambda i: [hw.get(ids["hw"][k]) for k in sample[i]],
        }, len(sample), lambda i, result: len(result), keep=True)
        if any(record is None for side in ("mn", "hw") for result in outcome.results[side] for record in result):
            raise RuntimeError("get by id: a baseline missed a record")
        for i in range(len(sample)):
            same_values("get by id", {side: values_of(results[i]) for side, results in outcome.results.items()},
                        in_order=True)
        outcome.results = {}
        self.add(Row("get by id", n, "call", outcome))

        # count
        outcome = duel({
            "rp": lambda i: [Person.objects.count() for _ in range(COUNT_PER_RUN)],
            "mn": lambda i: [mn.count() for _ in range(COUNT_PER_RUN)],
            "hw": lambda i: [hw.count() for _ in range(COUNT_PER_RUN)],
        }, COUNT_RUNS, lambda i, result: COUNT_PER_RUN, keep=True)
        if {c for results in outcome.results.values() for result in results for c in result} != {n}:
            raise RuntimeError("count: wrong answer")
        self.add(Row("count", n, "call", outcome))

        # indexed equality filter, materialised (~25%)
        city = CITIES[0]
        self.query_row("filter (~25%)", n, {
            "rp": lambda i: list(Person.objects.filter(city=city)),
            "mn": lambda i: mn.filter_eq("city", city),
            "hw": lambda i: hw.filter_eq("city", city),
        })

        # filter + order_by
        self.query_row("filter + order_by", n, {
            "rp": lambda i: list(Person.objects.filter(city=city).order_by("age")),
            "mn": lambda i: mn.filter_eq_ordered("city", city, "age"),
            "hw": lambda i: hw.filter_eq_ordered("city", city, "age"),
        }, order="age")

        # range filter on an integer (~10%)
        low, high = RANGE
        self.query_row("range filter (~10%)", n, {
            "rp": lambda i: list(Person.objects.filter(age__range=(low, high))),
            "mn": lambda i: mn.filter_range("age", low, high),
            "hw": lambda i: hw.filter_range("age", low, high),
        })

        # indexed filters with a fixed result size (100 records at every N)
        self.fixed_row("filter", n, {
            "rp": lambda i: list(Person.objects.filter(tag=FIXED_TAG)),
            "mn": lambda i: mn.filter_eq("tag", FIXED_TAG),
            "hw": lambda i: hw.filter_eq("tag", FIXED_TAG),
        })
        self.fixed_row("filter + order_by", n, {
            "rp": lambda i: list(Person.objects.filter(tag=FIXED_TAG).order_by("age")),
            "mn": lambda i: mn.filter_eq_ordered("tag", FIXED_TAG, "age"),
            "hw": lambda i: hw.filter_eq_ordered("tag", FIXED_TAG, "age"),
        }, order="age")

        # create one by one: more records (a 10,000 sample at large N), chunks as repetitions
        extra = min(n, 10_000)
        per_chunk = -(-extra // CHUNKS)
        more = make_rows(extra, seed=n + 1, tag=lambda i: f"x{i // per_chunk}")
        more_chunks = split(more, CHUNKS)
        outcome = duel({
            "rp": lambda i: [Person.create(**row) for row in more_chunks[i]],
            "mn": lambda i: [mn.create(row) for row in more_chunks[i]],
            "hw": lambda i: [hw.create(row) for row in more_chunks[i]],
        }, len(more_chunks), lambda i, result: len(result), keep=True, stats=self.stats("create one by one", n))
        made = outcome.results
        outcome.results = {}
        note = f"{extra:,} creates into a model of {n:,}" if extra < n else ""
        self.add(Row("create one by one", n, "record", outcome, note))
        self.counts("create one by one", n + extra)

        # delete one by one: the records just created, each side with its records in hand
        outcome = duel({
            "rp": lambda i: sum(record.delete() for record in made["rp"][i]),
            "mn": lambda i: sum(mn.delete(pk, row) for pk, row in zip(made["mn"][i], more_chunks[i])),
            "hw": lambda i: sum(hw.delete(pk, row) for pk, row in zip(made["hw"][i], more_chunks[i])),
        }, len(more_chunks), lambda i, result: len(more_chunks[i]), keep=True,
            stats=self.stats("delete one by one", n))
        if any(results != [len(chunk) for chunk in more_chunks] for results in outcome.results.values()):
            raise RuntimeError(f"delete one by one: the sides deleted {outcome.results}")
        made = {}
        note = f"{extra:,} deletes from a model of {n + extra:,}" if extra < n else ""
        self.add(Row("delete one by one", n, "record", outcome, note))
        self.counts("delete one by one", n)

        tags = self.run_async(n, ids, sample)

        # delete (bulk): filter().delete() of the async creates, chunks as repetitions
        outcome = duel({
            "rp": lambda i: Person.objects.filter(tag=tags[i]).delete(),
            "mn": lambda i: mn.delete_where("tag", tags[i]),
            "hw": lambda i: hw.delete_where("tag", tags[i]),
        }, len(tags), lambda i, result: result, keep=True, stats=self.stats("delete (bulk)", n))
        if len({tuple(results) for results in outcome.results.values()}) != 1 or sum(outcome.results["rp"]) != extra:
            raise RuntimeError(f"delete (bulk): the sides deleted {outcome.results}")
        self.add(Row("delete (bulk)", n, "record", outcome))
        self.counts("delete (bulk)", n)
        self.conn.flushdb()

        def rank(item: Row | ServerRow) -> int:
            return next((k for k, name in enumerate(ORDER) if item.operation == name), len(ORDER))

        self.rows[first_row:] = sorted(self.rows[first_row:], key=rank)
        self.server[first_server:] = sorted(self.server[first_server:], key=rank)

    def run_async(self, n: int, ids: dict[str, Sequence[Any]], sample: Sequence[Sequence[int]]) -> list[str]:
        """The async rows at model size ``n``: ``CONCURRENCY`` operations in flight on each side.

        Returns the tags of the records the async creates added, one per chunk.
        """
        ahw, amn, run = self.ahw, self.amn, self.loop.run_until_complete

        async def warm_up() -> None:  # every side opens its CONCURRENCY connections before timing
            await bounded(lambda _: configure.get_async_connection().ping(), range(CONCURRENCY))
            await bounded(lambda _: amn.r.ping(), range(CONCURRENCY))
            await bounded(lambda _: ahw.r.ping(), range(CONCURRENCY))

        run(warm_up())

        # async get by id: the same ids as the sync row
        outcome = duel({
            "rp": lambda i: run(bounded(lambda k: Person.objects.aget(id=ids["rp"][k]), sample[i])),
            "mn": lambda i: run(bounded(lambda k: amn.get(ids["mn"][k]), sample[i])),
            "hw": lambda i: run(bounded(lambda k: ahw.get(ids["hw"][k]), sample[i])),
        }, len(sample), lambda i, result: len(result), keep=True)
        if any(record is None for side in ("mn", "hw") for result in outcome.results[side] for record in result):
            raise RuntimeError("async get by id: a baseline missed a record")
        for i in range(len(sample)):
            same_values("async get by id",
                        {side: values_of(results[i]) for side, results in outcome.results.items()}, in_order=True)
        outcome.results = {}
        self.add(Row("async get by id", n, "call", outcome))

        # async indexed filter: queries of 100 records each, a random tag each
        picks = random.Random(2).choices(range(n // 100), k=self.async_filter_runs * ASYNC_FILTER_PER_RUN)
        tags = split([f"t{k}" for k in picks], self.async_filter_runs)

        async def rp_filter(tag: str) -> int:
            return len([record async for record in Person.objects.filter(tag=tag)])

        async def mn_filter(tag: str) -> int:
            return len(await amn.filter_eq("tag", tag))

        async def hw_filter(tag: str) -> int:
            return len(await ahw.filter_eq("tag", tag))

        outcome = duel({
            "rp": lambda i: run(bounded(rp_filter, tags[i])),
            "mn": lambda i: run(bounded(mn_filter, tags[i])),
            "hw": lambda i: run(bounded(hw_filter, tags[i])),
        }, len(tags), lambda i, result: sum(result), keep=True)
        sizes = {side: results for side, results in outcome.results.items()}
        if any(found != sizes["rp"] for found in sizes.values()) or {s for r in sizes["rp"] for s in r} != {100}:
            raise RuntimeError("async indexed filter: the sides returned other numbers of records")
        self.add(Row("async indexed filter", n, "record", outcome))

        # async create one by one: more records, each chunk gathered
        extra = min(n, 10_000)
        per_chunk = -(-extra // CHUNKS)
        chunks = split(make_rows(extra, seed=n + 2, tag=lambda i: f"y{i // per_chunk}"), CHUNKS)
        outcome = duel({
            "rp": lambda i: len(run(bounded(lambda row: Person.acreate(**row), chunks[i]))),
            "mn": lambda i: len(run(bounded(amn.create, chunks[i]))),
            "hw": lambda i: len(run(bounded(ahw.create, chunks[i]))),
        }, len(chunks), lambda i, result: result, stats=self.stats("async create one by one", n))
        self.counts("async create one by one", n + extra)
        note = f"{extra:,} creates into a model of {n:,}" if extra < n else ""
        self.add(Row("async create one by one", n, "record", outcome, note))
        return [f"y{i}" for i in range(len(chunks))]

    def query_row(self, name: str, n: int, sides: dict[str, Callable[[int], list[Any]]],
                  order: str | None = None) -> None:
        found: dict[str, list[tuple[Any, ...]]] = {}

        def check(side: str, i: int, result: list[Any]) -> None:
            if i == 0:
                found[side] = values_of(result)

        outcome = duel(sides, self.reps, lambda i, result: len(result), check=check)
        same_sizes(name, outcome)
        same_values(name, found, order)
        self.add(Row(name, n, "record", outcome))

    def fixed_row(self, name: str, n: int, sides: dict[str, Callable[[int], list[Any]]],
                  order: str | None = None) -> None:
        found: dict[str, list[tuple[Any, ...]]] = {}

        def check(side: str, i: int, result: list[Any]) -> None:
            if i == 0:
                found[side] = values_of(result)

        outcome = duel(sides, self.fixed_runs, lambda i, result: 1, check=check)
        size = same_sizes(name, outcome)
        same_values(name, found, order)
        self.fixed.setdefault(name, {})[n] = {side: us / 1e6 for side, us in outcome.us.items()}
        self.add(Row(f"{name} ({size} results)", n, "record", outcome.per(size), on_page=False))


# -- layout checks -----------------------------------------------------------------------


def verify_layouts(conn: redis.Redis, hw: HandWritten, ahw: AsyncHandWritten, mn: Minimal, amn: AsyncMinimal,
                   loop: asyncio.AbstractEventLoop) -> None:
    """The same-layout program writes repocket's keys and bytes, the minimal one plain values;
    all read the same values and delete every key; sync and async."""
    conn.flushdb()
    row = make_rows(1, seed=7)[0]
    pk = uuid.uuid1()
    record = Person(id=pk, **row)
    record.save()
    hw.create(row, pk=str(pk))
    mn.create(row, pk=str(pk))
    ours, theirs = snapshot(conn, Person._meta.prefix), snapshot(conn, hw.prefix)
    if ours != theirs:
        raise RuntimeError(f"the hand-written layout differs from repocket's:\n{ours}\n{theirs}")
    plain = {name.encode(): (repr(value) if isinstance(value, float) else str(value)).encode()
             for name, value in row.items()}
    if conn.hgetall(f"{mn.prefix}:{pk}") != plain:
        raise RuntimeError(f"the minimal program did not write the plain values {plain}")
    expected = Person.objects.get(id=pk).to_dict(simple=True)
    if hw.get(str(pk)) != expected or mn.get(str(pk)) != expected:
        raise RuntimeError("a baseline's read gives other values than repocket's")
    Person.objects.filter(tag=row["tag"]).delete()
    hw.delete_where("tag", row["tag"])
    mn.delete_where("tag", row["tag"])
    if conn.dbsize():
        raise RuntimeError(f"keys left after deleting: {conn.keys('*')}")

    # the same record again, written by the async API and by the async baselines
    run = loop.run_until_complete
    run(Person.acreate(id=pk, **row))
    run(ahw.create(row, pk=str(pk)))
    run(amn.create(row, pk=str(pk)))
    async_ours, async_theirs = snapshot(conn, Person._meta.prefix), snapshot(conn, ahw.prefix)
    if async_ours != ours or async_theirs != theirs or conn.hgetall(f"{mn.prefix}:{pk}") != plain:
        raise RuntimeError(f"the async writes differ from the sync ones:\n{async_ours}\n{async_theirs}")
    expected = run(Person.objects.aget(id=pk)).to_dict(simple=True)
    if run(ahw.get(str(pk))) != expected or run(amn.get(str(pk))) != expected:
        raise RuntimeError("an async baseline's read gives other values than repocket's aget")
    run(Person.objects.filter(tag=row["tag"]).adelete())
    hw.delete(str(pk), row)
    mn.delete(str(pk), row)
    if conn.dbsize():
        raise RuntimeError(f"keys left after deleting: {conn.keys('*')}")


# -- output ------------------------------------------------------------------------------


def header(conn: redis.Redis, server: RedisServer, load_at_start: float) -> str:
    info = conn.info("server")
    from redis.utils import HIREDIS_AVAILABLE

    return "\n".join([
        f"date:          {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine:       {platform.platform()}; {cpu_model()}; {os.cpu_count()} CPUs",
        f"python:        {platform.python_implementation()} {platform.python_version()}",
        f"redis-server:  {info['redis_version']} (127.0.0.1:{server.port}, no persistence)",
        f"load average:  {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (1 min)",
        f"libraries:     repocket {package_version('repocket')}, redis-py {package_version('redis')}"
        f" (hiredis {'on' if HIREDIS_AVAILABLE else 'off'}), orjson {package_version('orjson')}",
    ])  # fmt: skip


def _verdict(row: Row, side: str) -> str:
    target = row.target(side)
    return "" if target is None else f"≤{target} {'ok' if row.ratio(side) <= target else 'MISSED'}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        f"{'':<49}{'µs per record or call':^30}   {'repocket / minimal':<26}{'repocket / same layout'}",
        f"{'operation':<32} {'N':>8}  {'per':<6} {'repocket':>9} {'minimal':>9} {'same lay.':>9}"
        f"   {'ratio':>5} {'paired':>6} {'target':<12} {'ratio':>5} {'paired':>6} target",
        "-" * 122,
    ]
    notes = []
    for row in rows:
        mark = ""
        if row.note:
            if row.note not in notes:
                notes.append(row.note)
            mark = "*" * (notes.index(row.note) + 1)
        us = row.result.us
        lines.append(
            f"{row.operation + mark:<32} {row.n:>8,}  {row.unit:<6} {us['rp']:>9.1f} {us['mn']:>9.1f}"
            f" {us['hw']:>9.1f}   {row.ratio('mn'):>5.2f} {row.paired('mn'):>6.2f} {_verdict(row, 'mn'):<12}"
            f" {row.ratio('hw'):>5.2f} {row.paired('hw'):>6.2f} {_verdict(row, 'hw')}".rstrip()
        )
    lines += [f"{'*' * (i + 1)} {note}" for i, note in enumerate(notes)]
    return "\n".join(lines)


def server_table(rows: Sequence[ServerRow]) -> str:
    lines = [
        "Server time per write (INFO commandstats; CONFIG RESETSTAT before each run): repocket's EVALSHA,",
        "the baselines' EXEC (their MULTI/EXEC pipelines hold all their writes), in µs:",
        f"{'operation':<26} {'N':>8}  {'EVALSHA/record':>14} {'µs/call':>8} {'µs/record':>9}"
        f"   {'minimal µs/record':>17} {'same layout µs/record':>21}",
        "-" * 113,
    ]
    for row in rows:
        lines.append(
            f"{row.operation:<26} {row.n:>8,}  {row.calls_per_record('rp'):>14.3f} {row.per_call('rp'):>8.1f}"
            f" {row.per_record('rp'):>9.1f}   {row.per_record('mn'):>17.1f} {row.per_record('hw'):>21.1f}"
        )
    return "\n".join(lines)


def growth(name: str, fixed: dict[int, dict[str, float]], target: float | None) -> str:
    if len(fixed) < 2:
        return ""
    small, large = min(fixed), max(fixed)
    lines = [f"{name} with a fixed result size (tag = {FIXED_TAG!r}, 100 records), "
             f"N = {small:,} -> {large:,}:"]
    for side, label in (("rp", "repocket"), *BASELINES.items()):
        t_small, t_large = fixed[small][side], fixed[large][side]
        ratio = t_large / t_small
        verdict = ""
        if side == "rp" and target is not None:
            verdict = f"  target ≤{target}  {'ok' if ratio <= target else 'MISSED'}"
        lines.append(f"  {label:<12} {t_small * 1e3:7.2f} ms -> {t_large * 1e3:7.2f} ms   "
                     f"t({large:,})/t({small:,}) = {ratio:.2f}{verdict}")
    return "\n".join(lines)


def growth_target(name: str) -> float | None:
    """The growth target of fixed-size filter ``name`` (only the plain filter has one)."""
    return GROWTH_TARGET if name == "filter" else None


# -- the docs page -----------------------------------------------------------------------

#: The page a full run writes its results into, between :data:`BEGIN` and :data:`END`.
PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.rst"
#: The comment line that opens the results on the page (any text may follow it).
BEGIN = ".. begin results"
BEGIN_LINE = f"{BEGIN}: written by make bench, RESULTS in benchmarks/__main__.py"
#: The comment line that closes them.
END = ".. end results"
#: The results part of the page; :func:`render_results` fills in every field.
RESULTS = """\
Measured on {date}:

- machine: {machine}
- Python: {python}
- redis-server: {redis_server}
- load average (1 minute): {load}

Each cell gives repocket's time divided by a baseline's time for the same work
on the same server (1.00: as fast, 1.20: 20% slower), from the best repetition
of each side, and in parentheses the median ratio of back-to-back runs. The
target is the largest acceptable ratio.

Against the minimal program (plain values, one set per indexed value):

{table_minimal}

Against the same-layout program (repocket's envelopes and indexes, by hand):

{table_same}

{verdict}

{growth}

{server}

{memory}
"""
#: Fields of :data:`RESULTS` that hold several lines (the others hold one).
BLOCK_FIELDS = ("table_minimal", "table_same", "verdict", "growth", "server", "memory")


def page_table(rows: Sequence[Row], side: str) -> str:
    """The ratios (paired ratios) to ``side`` of every operation on the page, one column per N."""
    shown = [row for row in rows if row.on_page]
    sizes = sorted({row.n for row in shown})
    cells = {(row.operation, row.n): f"{row.ratio(side):.2f} ({row.paired(side):.2f})" for row in shown}
    targets = {row.operation: row.target(side) for row in shown}
    table = [["operation", *(f"N = {n:,}" for n in sizes), "target"]]
    for operation in dict.fromkeys(row.operation for row in shown):
        target = targets[operation]
        table.append([operation, *(cells.get((operation, n), "—") for n in sizes),
                      "—" if target is None else f"≤{target}"])  # fmt: skip
    return rst_table(table)


Fixed = dict[str, dict[int, dict[str, float]]]
"""Seconds per query of each fixed-size filter, per N, per side (:attr:`Bench.fixed`)."""


def _growths(fixed: Fixed) -> tuple[int, int, dict[str, dict[str, float]]]:
    """The smallest and largest N, and each fixed-size filter's t(largest) / t(smallest) per side."""
    sizes = sorted({n for times in fixed.values() for n in times})
    if len(sizes) < 2:
        return 0, 0, {}
    small, large = sizes[0], sizes[-1]
    growths = {
        name: {side: times[large][side] / times[small][side] for side in times[small]}
        for name, times in fixed.items()
        if small in times and large in times
    }
    return small, large, growths


def missed_targets(rows: Sequence[Row], fixed: Fixed, memory_report: memory.MemoryReport | None = None) -> list[str]:
    """Every target missed, as phrases: against each baseline, the growth, the memory."""
    missed = []
    for side, against in (("mn", "the minimal program"), ("hw", "the same-layout program")):
        for row in rows:
            target = row.target(side)
            if target is not None and row.ratio(side) > target:
                missed.append(f"{row.operation} at N = {row.n:,} against {against}"
                              f" ({row.ratio(side):.2f}, target ≤{target})")
    small, large, growths = _growths(fixed)
    for name, ratios in growths.items():
        target = growth_target(name)
        if target is not None and ratios["rp"] > target:
            missed.append(f"the growth of the fixed-size {name} from N = {small:,} to N = {large:,}"
                          f" ({ratios['rp']:.2f}, target ≤{target})")
    if memory_report is not None:
        missed += memory_report.missed()
    return missed


def page_verdict(rows: Sequence[Row], fixed: Fixed, memory_report: memory.MemoryReport | None = None) -> str:
    """The notes on the rows, then which targets were missed (or that none was)."""
    notes = list(dict.fromkeys(
        f"{row.operation.capitalize()} at N = {row.n:,}: {row.note}." for row in rows if row.note and row.on_page
    ))
    missed = missed_targets(rows, fixed, memory_report)
    parts = [fill(" ".join(notes))] if notes else []
    if missed:
        parts.append("Missed targets:")
        parts.append("\n".join(textwrap.fill(phrase, width=79, initial_indent="- ", subsequent_indent="  ",
                                               break_long_words=False, break_on_hyphens=False)
                               for phrase in missed))
    else:
        parts.append("Every target was met.")
    return "\n\n".join(parts)


def page_growth(fixed: Fixed) -> str:
    """The growth table of the fixed-size filters ("" after a run at one size)."""
    small, large, growths = _growths(fixed)
    if not growths:
        return ""
    table = [["query", "repocket", "minimal", "same layout", "target"]]
    for name, ratios in growths.items():
        target = growth_target(name)
        table.append([name, f"{ratios['rp']:.2f}", f"{ratios['mn']:.2f}", f"{ratios['hw']:.2f}",
                      "—" if target is None else f"≤{target}"])
    intro = fill(
        f"Growth of an indexed filter whose result has a fixed size (``tag='{FIXED_TAG}'``, 100 records)"
        f" from N = {small:,} to N = {large:,}: t({large:,}) / t({small:,}), where 1.00 means that"
        " its time does not depend on the model size:"
    )
    return f"{intro}\n\n{rst_table(table)}"


def page_server(rows: Sequence[ServerRow]) -> str:
    """The server time per write ("" when none was measured)."""
    if not rows:
        return ""
    table = [["operation", "N", "EVALSHA per record", "µs per call", "µs per record", "minimal µs per record",
              "same layout µs per record"]]
    for row in rows:
        table.append([row.operation, f"{row.n:,}", f"{row.calls_per_record('rp'):.3f}", f"{row.per_call('rp'):.1f}",
                      f"{row.per_record('rp'):.1f}", f"{row.per_record('mn'):.1f}", f"{row.per_record('hw'):.1f}"])
    intro = fill(
        "Server time per write, from ``INFO commandstats`` (reset by ``CONFIG RESETSTAT`` before each run):"
        " repocket's ``EVALSHA`` calls per record, µs per call and µs per record; for the baselines, the µs per"
        " record spent in ``EXEC``, which runs their ``MULTI``/``EXEC`` pipelines (all their writes):"
    )
    return f"{intro}\n\n{rst_table(table)}"


def render_results(info: RunInfo, rows: Sequence[Row], fixed: Fixed, server: Sequence[ServerRow] = (),
                   memory_report: memory.MemoryReport | None = None) -> str:
    """:data:`RESULTS` filled in, without trailing or doubled blank lines."""
    text = RESULTS.format(
        date=info.date,
        machine=info.machine,
        python=info.python,
        redis_server=info.redis_server,
        load=info.load,
        table_minimal=page_table(rows, "mn"),
        table_same=page_table(rows, "hw"),
        verdict=page_verdict(rows, fixed, memory_report),
        growth=page_growth(fixed),
        server=page_server(server),
        memory=memory.memory_page(memory_report),
    )
    return tidy(text)


def write_results(page: str, results: str) -> str:
    """``page`` with the lines between its :data:`BEGIN` and :data:`END` comments replaced by ``results``.

    Raises:
        ValueError: the page lacks either marker (nothing is written then).
    """
    return write_block(page, BEGIN, BEGIN_LINE, END, results)


# -- profiling ---------------------------------------------------------------------------


def profile(op: str, n: int, conn: redis.Redis, out: Any) -> None:
    """cProfile repocket's side of ``op`` at model size ``n``; print the top 15 functions."""
    conn.flushdb()
    rows = make_rows(n, seed=n)
    extra = min(n, 5000)
    more = make_rows(extra, seed=n + 1, tag=lambda i: "x0")
    city = CITIES[0]
    low, high = RANGE
    ids: list[Any] = []

    def setup() -> list[Any]:
        return Person.objects.bulk_create([Person(**r) for r in rows], batch_size=BATCH)

    def create_one() -> None:
        for row in more:
            Person.create(**row)

    work: dict[str, Callable[[], Any]] = {
        "bulk_create": setup,
        "get": lambda: [Person.objects.get(id=pk) for pk in ids[:2000]],
        "count": lambda: [Person.objects.count() for _ in range(1000)],
        "filter": lambda: list(Person.objects.filter(city=city)),
        "filter_order": lambda: list(Person.objects.filter(city=city).order_by("age")),
        "range": lambda: list(Person.objects.filter(age__range=(low, high))),
        "fixed": lambda: [list(Person.objects.filter(tag=FIXED_TAG)) for _ in range(100)],
        "fixed_order": lambda: [list(Person.objects.filter(tag=FIXED_TAG).order_by("age")) for _ in range(10)],
        "create_one": create_one,
        "delete": lambda: Person.objects.filter(tag="x0").delete(),
    }
    if op != "bulk_create":
        ids.extend(record.id for record in setup())
    if op == "delete":
        create_one()
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    work[op]()
    profiler.disable()
    print(f"cProfile of repocket's side of {op!r} at N = {n:,}", file=out)
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        print(f"\n--- sorted by {order} ---", file=out)
        stats.sort_stats(order).print_stats(15)
    conn.flushdb()


# -- main --------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    return [int(s.strip().replace("_", "")) for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="model sizes, comma-separated (default 10000,100000)")
    parser.add_argument("--quick", action="store_true", help="a smoke run at N = 1,000")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each filter (best kept)")
    parser.add_argument("--profile", choices=OPERATIONS, metavar="OP",
                        help=f"cProfile repocket's side of one operation: {', '.join(OPERATIONS)}")
    parser.add_argument("--scale", action="store_true",
                        help="measure how fixed-size queries grow with the model instead (benchmarks.scale)")
    parser.add_argument("--scale-sizes", default=None,
                        help=f"model sizes of --scale, comma-separated (default {','.join(map(str, scale.SIZES))})")
    parser.add_argument("--cluster", action="store_true",
                        help="repocket against a hand-written RedisCluster program on a local cluster instead")
    parser.add_argument("--lua-stages", action="store_true",
                        help="where the write script spends server time instead (benchmarks.lua_stages)")
    parser.add_argument("--page", type=Path, default=None,
                        help=f"write the results into this page (default after a full run: {PAGE})")
    parser.add_argument("--no-page", action="store_true", help="write no docs page")
    args = parser.parse_args(argv)
    if args.cluster:
        return cluster.main(Person, min(args.reps, 3), None if args.no_page else args.page or PAGE)
    if args.lua_stages:
        lua_stages.main(Person, sys.stdout, min(args.reps, 3))
        return 0
    if args.scale_sizes and not args.scale:
        args.scale = True
    if args.scale:
        full_scale = not args.scale_sizes
        page = None if args.no_page else args.page or (PAGE if full_scale else None)
        sizes = _sizes(args.scale_sizes) if args.scale_sizes else list(scale.SIZES)
        if any(n < scale.MIN_SIZE for n in sizes):
            parser.error(f"--scale sizes must be at least {scale.MIN_SIZE:,}")
        if page is not None:
            try:
                scale.write_scale(page.read_text(encoding="utf-8"), "")
            except (OSError, ValueError) as error:
                parser.error(f"cannot write the scale results into {page}: {error}")
        return scale.main(sorted(sizes), args.reps, page)

    full_run = not (args.sizes or args.quick or args.profile)
    page = None if args.no_page or args.profile else args.page or (PAGE if full_run else None)
    if page is not None:  # fail now, not after the run
        try:
            write_results(page.read_text(encoding="utf-8"), "")
        except (OSError, ValueError) as error:
            parser.error(f"cannot write the results into {page}: {error}")
    if args.sizes:
        sizes = _sizes(args.sizes)
    elif args.quick:
        sizes = [1000]
    elif args.profile:
        sizes = [10_000]
    else:
        sizes = [10_000, 100_000]
    if any(n < CHUNKS * 100 for n in sizes):
        parser.error(f"sizes must be at least {CHUNKS * 100}")

    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    server = RedisServer()
    loop = asyncio.new_event_loop()
    async_clients: list[aioredis.Redis] = []
    try:
        server.start()
        configure.connection_pool(url=server.url)
        conn = configure.get_connection()
        hand = HandWritten(redis.Redis.from_url(server.url), HAND_PREFIX, batch_size=BATCH)
        minimal = Minimal(redis.Redis.from_url(server.url, decode_responses=True), MINIMAL_PREFIX, batch_size=BATCH)
        async_clients += [aioredis.Redis.from_url(server.url), aioredis.Redis.from_url(server.url, decode_responses=True)]
        async_hand = AsyncHandWritten(async_clients[0], HAND_PREFIX, batch_size=BATCH)
        async_minimal = AsyncMinimal(async_clients[1], MINIMAL_PREFIX, batch_size=BATCH)
        log(f"redis-server pid {server.pid} on {server.url}")
        if args.profile:
            profile(args.profile, sizes[0], conn, sys.stdout)
            return 0
        verify_layouts(conn, hand, async_hand, minimal, async_minimal, loop)
        log("layouts: the same-layout program wrote repocket's keys and bytes, the minimal one plain values;"
            " all read the same values, sync and async")
        bench = Bench(conn, hand, minimal, args.reps, log, async_hand, async_minimal, loop, quick=args.quick)
        for n in sizes:
            log(f"N = {n:,}")
            bench.run(n)
        log("Meta.changes and Meta.history")
        change_rows = changes.measure(conn, args.reps)
        log("memory")
        memory_report = memory.measure_memory(log, records=QUICK_MEMORY_RECORDS if args.quick else memory.RECORDS)
        print(header(conn, server, load_at_start))
        print()
        print("µs per record (per call for get by id and count), best of the repetitions;")
        print("ratio = repocket / baseline on the same server: minimal = plain values, one set per indexed value;")
        print("same layout = repocket's envelopes and indexes by hand;")
        print("paired = the median of each repetition's own ratio (the sides run back to back).")
        print()
        print(table(bench.rows))
        for name, times in bench.fixed.items():
            lines = growth(name, times, growth_target(name))
            if lines:
                print()
                print(lines)
        print()
        print(server_table(bench.server))
        print()
        print(memory.memory_table(memory_report))
        print()
        print("What recording changes costs per write: repocket's save of a model with Meta.changes (and")
        print("Meta.history) against HSET + XADD (+ XADD of the version) in one MULTI, by hand:")
        print(changes.table(change_rows))
        missed = missed_targets(bench.rows, bench.fixed, memory_report) + changes.missed(change_rows)
        print()
        print("Missed targets:" if missed else "Every target was met.")
        for phrase in missed:
            print(f"  - {phrase}")
        print()
        print(f"total run time {time.perf_counter() - started:.0f} s")
        if page is not None:
            results = render_results(RunInfo.measure(conn, load_at_start), bench.rows, bench.fixed, bench.server,
                                     memory_report)
            page.write_text(write_results(page.read_text(encoding="utf-8"), results), encoding="utf-8")
            log(f"wrote the results into {page}")
        return 0
    finally:
        close_async(loop, async_clients)
        configure.reset()
        server.stop()


def close_async(loop: asyncio.AbstractEventLoop, clients: Sequence[aioredis.Redis]) -> None:
    """Close every side's async connections on ``loop`` (none were opened without ``clients``), then the loop."""
    async def close() -> None:
        for client in clients:
            await client.aclose()
        await configure.get_async_connection().aclose()

    try:
        if clients:
            loop.run_until_complete(close())
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
