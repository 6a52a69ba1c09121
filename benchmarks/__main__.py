"""``python -m benchmarks`` (``make bench``): repocket against hand-written redis-py.

One real ``redis-server`` is started (:class:`repocket.server.RedisServer`: a free
loopback port, no persistence) and stopped at the end, also on Ctrl-C or an
error. In one process, on that server, repocket and the hand-written program of
:mod:`benchmarks.handwritten` do the same work on the same records::

    class Person(ActiveRecord):
        name = Unicode(index=True)     # unique per record
        age = Integer(index=True)      # uniform in 0..99
        city = Unicode(index=True)     # one of 4 cities
        bio = Unicode()                # ~90 characters
        score = Float()
        tag = Unicode(index=True)      # "t<i // 100>": every tag is held by exactly 100 records

The two sides write the same bytes to the same layout under different key
prefixes (``repocket:bench:Person`` and ``handwritten:bench:Person``); before
timing anything the benchmark writes one record on each side with the same id
and checks that every key, type and value matches, that both read it back as
the same values, and that both deletes leave no key behind.

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
                         the same ``.order_by("age")``; 50 runs each
create one by one        ``Person.create(**row)`` for min(N, 10,000) more records,
                         in 10 chunks; at N = 100,000 a sample of 10,000 creates
                         into a model that already holds 100,000 records
delete                   ``filter(tag=...).delete()`` of those records, 10 chunks
async get by id          ``await Person.objects.aget(id=...)``: 10 runs of 500
                         random ids, each run through ``asyncio.gather``
async indexed filter     ``[p async for p in filter(tag=...)]``: 10 runs of 50
                         queries of 100 records each (a different tag each)
async create one by one  ``await Person.acreate(**row)`` for min(N, 10,000) more
                         records in 10 chunks, each through ``asyncio.gather``
=======================  =========================================================

The async rows run repocket's asyncio API against :class:`AsyncHandWritten`
(the same program on ``redis.asyncio``), both on one event loop kept for the
whole run, with at most :data:`CONCURRENCY` operations in flight on each side
(an ``asyncio.Semaphore``). The same-layout check covers their writes too.

Every timing is ``time.perf_counter`` around the whole operation, after a
``gc.collect()``; the two sides alternate (which goes first alternates too) and
the best (minimum) of the repetitions (``--reps``, default 5, for the filters)
is kept. Writes cannot repeat on the same data, so their repetitions are the
chunks. The table gives µs per record (per call for get by id and count) and
the ratio repocket / hand-written of the best times; ``paired`` is the median
of each repetition's own ratio (the two sides ran back to back), which moves
less when other processes load the machine. The growth lines give
t(largest N) / t(smallest N) of the fixed-size filters for both sides: the
hand-written program's growth is what the machine and Redis add by themselves.
The default run takes 2 to 4 minutes on 2 cores.

A full run (no ``--quick``, ``--sizes`` or ``--profile``) also writes the
results into ``docs/performance.rst``: only the part between its two marker
comments, ``.. begin results`` and ``.. end results``, is replaced (the rest of
the page is prose kept by hand). That part is :data:`RESULTS` filled in by
:func:`render_results`: date, machine, Python and redis-server versions, load
average, the table of ratios, the targets missed and the growth table.
``--page PATH`` writes another page (also after a shorter run), ``--no-page``
none.

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
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from benchmarks.handwritten import AsyncHandWritten, HandWritten
from repocket import ActiveRecord, attributes, configure, keys
from repocket.server import RedisServer

CITIES = ("Lisbon", "Nairobi", "Osaka", "Quito")
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
WORDS = ("redis", "python", "hash", "index", "record", "query", "pipeline", "script", "atomic", "model")
RANGE = (20, 29)  # ages are uniform in 0..99: ~10% of N
FIXED_TAG = "t7"  # every "t<k>" is held by exactly 100 records
HAND_PREFIX = "handwritten:bench:Person"
CHUNKS = 10
GET_RUNS, GET_PER_RUN = 10, 500
COUNT_RUNS, COUNT_PER_RUN = 10, 300
FIXED_RUNS = 50
BATCH = 500
#: The most operations each side has in flight in the async rows.
CONCURRENCY = 64
ASYNC_FILTER_RUNS, ASYNC_FILTER_PER_RUN = 10, 50

#: The largest acceptable ratio repocket / hand-written, by operation (none for delete).
TARGETS = {
    "create one by one": 1.3,
    "get by id": 1.3,
    "count": 1.3,
    "bulk create": 1.5,
    "filter (~25%)": 1.5,
    "filter + order_by": 1.5,
    "range filter (~10%)": 1.5,
    "async get by id": 1.3,
    "async create one by one": 1.3,
    "async indexed filter": 1.5,
}
#: The largest acceptable t(100,000) / t(10,000) of the fixed-size filter (no order_by).
GROWTH_TARGET = 1.2
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
    """``n`` records as plain dicts, the same for both sides (ids are assigned when saved)."""
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


# -- timing ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` (after a full collection) and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class Result:
    """What one duel measured: best µs per unit of each side, and the paired ratios."""

    repocket_us: float
    hand_us: float
    #: repocket / hand-written of each run, the two sides' runs being adjacent in time.
    pairs: list[float]
    #: Each run's result (with ``keep``) or its size.
    repocket: list[Any]
    hand: list[Any]

    def per(self, size: int) -> Result:
        """The same, per ``size`` units (for timings taken per query)."""
        return Result(self.repocket_us / size, self.hand_us / size, self.pairs, self.repocket, self.hand)


@dataclass
class Row:
    """One line of the table."""

    operation: str
    n: int
    unit: str
    result: Result
    note: str = ""
    #: In the docs page's table (the fixed-size filters are there as growth instead).
    on_page: bool = True

    @property
    def ratio(self) -> float:
        """Best repocket time / best hand-written time."""
        return self.result.repocket_us / self.result.hand_us

    @property
    def paired(self) -> float:
        """The median of the runs' own ratios: less sensitive to load that comes and goes."""
        return statistics.median(self.result.pairs)


def _size(result: Any) -> int:
    return result if isinstance(result, int) else len(result)


def duel(
    rp: Callable[[int], Any],
    hw: Callable[[int], Any],
    runs: int,
    per_run: Callable[[int, Any], int],
    keep: bool = False,
) -> Result:
    """Run both sides ``runs`` times, alternating who goes first; best µs per unit each.

    ``rp(i)``/``hw(i)`` do run ``i``; ``per_run(i, result)`` is how many units it did.
    Keeps the results of every run (with ``keep``) or their sizes (without: results
    are dropped at once, so they do not weigh on the garbage collector).
    """
    best = {"rp": float("inf"), "hw": float("inf")}
    results: dict[str, list[Any]] = {"rp": [], "hw": []}
    pairs = []
    for i in range(runs):
        order = (("rp", rp), ("hw", hw)) if i % 2 == 0 else (("hw", hw), ("rp", rp))
        took = {}
        for side, fn in order:
            seconds, result = timed(lambda fn=fn, i=i: fn(i))
            took[side] = seconds * 1e6 / per_run(i, result)
            best[side] = min(best[side], took[side])
            results[side].append(result if keep else _size(result))
            del result
        pairs.append(took["rp"] / took["hw"])
    return Result(best["rp"], best["hw"], pairs, results["rp"], results["hw"])


async def bounded(step: Callable[[Any], Awaitable[T]], items: Iterable[Any], limit: int = CONCURRENCY) -> list[T]:
    """``step(item)`` for every item, through ``asyncio.gather``, at most ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Any) -> T:
        async with gate:
            return await step(item)

    return await asyncio.gather(*(one(item) for item in items))


def same_sizes(what: str, outcome: Result) -> int:
    """Check both sides returned as many records each run (same work); return the first size."""
    rp_sizes = [_size(r) for r in outcome.repocket]
    hw_sizes = [_size(r) for r in outcome.hand]
    if rp_sizes != hw_sizes:
        raise RuntimeError(f"{what}: repocket returned {rp_sizes} records, hand-written {hw_sizes}")
    return rp_sizes[0]


# -- the benchmark ---------------------------------------------------------------------


class Bench:
    """Both sides on one server; ``run(n)`` times every operation at model size ``n``."""

    def __init__(self, conn: redis.Redis, hand: HandWritten, reps: int, log: Callable[[str], None],
                 async_hand: AsyncHandWritten, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.hw = hand
        self.ahw = async_hand
        self.loop = loop
        self.reps = reps
        self.log = log
        self.rows: list[Row] = []
        #: Fixed-size filters: best seconds per query, per N, per side.
        self.fixed: dict[str, dict[int, tuple[float, float]]] = {}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.log(f"  {row.operation:<31} N={row.n:>7,}  repocket {row.result.repocket_us:9.1f} µs/{row.unit}"
                 f"  by hand {row.result.hand_us:9.1f}  ratio {row.ratio:5.2f}  paired {row.paired:5.2f}")

    def run(self, n: int) -> None:
        self.conn.flushdb()
        hw = self.hw
        rows = make_rows(n, seed=n)
        chunks = split(rows, CHUNKS)

        # bulk create: the chunks are the repetitions
        outcome = duel(
            lambda i: Person.objects.bulk_create([Person(**row) for row in chunks[i]], batch_size=BATCH),
            lambda i: hw.bulk_create(chunks[i]),
            len(chunks), lambda i, result: len(chunks[i]), keep=True,
        )
        self.add(Row("bulk create", n, "record", outcome))
        rp_ids = [record.id for result in outcome.repocket for record in result]
        hw_ids = [pk for result in outcome.hand for pk in result]
        outcome.repocket = outcome.hand = []
        if Person.objects.count() != n or hw.count() != n:
            raise RuntimeError(f"bulk create: expected {n} records on each side")

        # get by id: a different slice of random ids each run
        sample = split(random.Random(1).sample(range(n), min(n, GET_RUNS * GET_PER_RUN)), GET_RUNS)
        outcome = duel(
            lambda i: [Person.objects.get(id=rp_ids[k]) for k in sample[i]],
            lambda i: [hw.get(hw_ids[k]) for k in sample[i]],
            len(sample), lambda i, result: len(result), keep=True,
        )
        if any(record is None for result in outcome.hand for record in result):
            raise RuntimeError("get by id: the hand-written side missed a record")
        outcome.repocket = outcome.hand = []
        self.add(Row("get by id", n, "call", outcome))

        # count
        outcome = duel(
            lambda i: [Person.objects.count() for _ in range(COUNT_PER_RUN)],
            lambda i: [hw.count() for _ in range(COUNT_PER_RUN)],
            COUNT_RUNS, lambda i, result: COUNT_PER_RUN, keep=True,
        )
        if {c for result in outcome.repocket + outcome.hand for c in result} != {n}:
            raise RuntimeError("count: wrong answer")
        self.add(Row("count", n, "call", outcome))

        # indexed equality filter, materialised (~25%)
        city = CITIES[0]
        self.query_row("filter (~25%)", n,
                       lambda i: list(Person.objects.filter(city=city)),
                       lambda i: hw.filter_eq("city", city))

        # filter + order_by
        def rp_ordered(i: int) -> list[Any]:
            return list(Person.objects.filter(city=city).order_by("age"))

        def hw_ordered(i: int) -> list[Any]:
            return hw.filter_eq_ordered("city", city, "age")

        self.query_row("filter + order_by", n, rp_ordered, hw_ordered, check_order=True)

        # range filter on an integer (~10%)
        low, high = RANGE
        self.query_row("range filter (~10%)", n,
                       lambda i: list(Person.objects.filter(age__range=(low, high))),
                       lambda i: hw.filter_range("age", low, high))

        # indexed filters with a fixed result size (100 records at every N)
        self.fixed_row("filter", n,
                       lambda i: list(Person.objects.filter(tag=FIXED_TAG)),
                       lambda i: hw.filter_eq("tag", FIXED_TAG))
        self.fixed_row("filter + order_by", n,
                       lambda i: list(Person.objects.filter(tag=FIXED_TAG).order_by("age")),
                       lambda i: hw.filter_eq_ordered("tag", FIXED_TAG, "age"))

        # create one by one: more records (a 10,000 sample at large N), chunks as repetitions
        extra = min(n, 10_000)
        per_chunk = -(-extra // CHUNKS)
        more = make_rows(extra, seed=n + 1, tag=lambda i: f"x{i // per_chunk}")
        more_chunks = split(more, CHUNKS)

        def rp_create(i: int) -> int:
            for row in more_chunks[i]:
                Person.create(**row)
            return len(more_chunks[i])

        def hw_create(i: int) -> int:
            for row in more_chunks[i]:
                hw.create(row)
            return len(more_chunks[i])

        outcome = duel(rp_create, hw_create, len(more_chunks), lambda i, result: result)
        note = f"{extra:,} creates into a model of {n:,}" if extra < n else ""
        self.add(Row("create one by one", n, "record", outcome, note))

        # delete those records (bulk: filter().delete()), chunks as repetitions
        outcome = duel(
            lambda i: Person.objects.filter(tag=f"x{i}").delete(),
            lambda i: hw.delete_where("tag", f"x{i}"),
            len(more_chunks), lambda i, result: len(more_chunks[i]), keep=True,
        )
        if outcome.repocket != outcome.hand or sum(outcome.repocket) != extra:
            raise RuntimeError(f"delete: repocket deleted {outcome.repocket}, hand-written {outcome.hand}")
        self.add(Row("delete (bulk)", n, "record", outcome))

        self.run_async(n, rp_ids, hw_ids, sample)
        self.conn.flushdb()

    def run_async(self, n: int, rp_ids: Sequence[Any], hw_ids: Sequence[str], sample: Sequence[Sequence[int]]) -> None:
        """The async rows at model size ``n``: ``CONCURRENCY`` operations in flight on each side."""
        ahw, run = self.ahw, self.loop.run_until_complete

        async def warm_up() -> None:  # both sides open their CONCURRENCY connections before timing
            await bounded(lambda _: configure.get_async_connection().ping(), range(CONCURRENCY))
            await bounded(lambda _: ahw.r.ping(), range(CONCURRENCY))

        run(warm_up())

        # async get by id: the same ids as the sync row
        outcome = duel(
            lambda i: run(bounded(lambda k: Person.objects.aget(id=rp_ids[k]), sample[i])),
            lambda i: run(bounded(lambda k: ahw.get(hw_ids[k]), sample[i])),
            len(sample), lambda i, result: len(result), keep=True,
        )
        if any(record is None for result in outcome.hand for record in result):
            raise RuntimeError("async get by id: the hand-written side missed a record")
        outcome.repocket = outcome.hand = []
        self.add(Row("async get by id", n, "call", outcome))

        # async indexed filter: queries of 100 records each, a random tag each
        picks = random.Random(2).choices(range(n // 100), k=ASYNC_FILTER_RUNS * ASYNC_FILTER_PER_RUN)
        tags = split([f"t{k}" for k in picks], ASYNC_FILTER_RUNS)

        async def rp_filter(tag: str) -> int:
            return len([record async for record in Person.objects.filter(tag=tag)])

        async def hw_filter(tag: str) -> int:
            return len(await ahw.filter_eq("tag", tag))

        outcome = duel(
            lambda i: run(bounded(rp_filter, tags[i])),
            lambda i: run(bounded(hw_filter, tags[i])),
            len(tags), lambda i, result: sum(result), keep=True,
        )
        if outcome.repocket != outcome.hand or {size for sizes in outcome.hand for size in sizes} != {100}:
            raise RuntimeError("async indexed filter: the two sides returned other numbers of records")
        self.add(Row("async indexed filter", n, "record", outcome))

        # async create one by one: more records, each chunk gathered
        extra = min(n, 10_000)
        per_chunk = -(-extra // CHUNKS)
        chunks = split(make_rows(extra, seed=n + 2, tag=lambda i: f"y{i // per_chunk}"), CHUNKS)
        outcome = duel(
            lambda i: len(run(bounded(lambda row: Person.acreate(**row), chunks[i]))),
            lambda i: len(run(bounded(ahw.create, chunks[i]))),
            len(chunks), lambda i, result: result,
        )
        if Person.objects.count() != n + extra or self.hw.count() != n + extra:
            raise RuntimeError(f"async create one by one: expected {n + extra} records on each side")
        note = f"{extra:,} creates into a model of {n:,}" if extra < n else ""
        self.add(Row("async create one by one", n, "record", outcome, note))

    def query_row(self, name: str, n: int, rp: Callable[[int], list[Any]], hw: Callable[[int], list[Any]],
                  check_order: bool = False) -> None:
        if check_order:
            for result in (rp(0), hw(0)):
                ages = [record["age"] for record in result]
                if ages != sorted(ages):
                    raise RuntimeError(f"{name}: not ordered by age")
        outcome = duel(rp, hw, self.reps, lambda i, result: len(result))
        same_sizes(name, outcome)
        self.add(Row(name, n, "record", outcome))

    def fixed_row(self, name: str, n: int, rp: Callable[[int], list[Any]], hw: Callable[[int], list[Any]]) -> None:
        outcome = duel(rp, hw, FIXED_RUNS, lambda i, result: 1)
        size = same_sizes(name, outcome)
        self.fixed.setdefault(name, {})[n] = (outcome.repocket_us / 1e6, outcome.hand_us / 1e6)
        self.add(Row(f"{name} ({size} results)", n, "record", outcome.per(size), on_page=False))


# -- same layout check -------------------------------------------------------------------


def snapshot(conn: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` (name relative to it) with its type and content."""
    out: dict[bytes, Any] = {}
    for key in conn.scan_iter(match=keys.escape_glob(prefix) + ":*", count=1000):
        kind = conn.type(key)
        if kind == b"hash":
            content: Any = conn.hgetall(key)
        elif kind == b"set":
            content = conn.smembers(key)
        elif kind == b"zset":
            content = conn.zrange(key, 0, -1, withscores=True)
        else:
            content = conn.dump(key)
        out[key[len(prefix):]] = (kind, content)
    return out


def verify_same_layout(conn: redis.Redis, hw: HandWritten, ahw: AsyncHandWritten,
                       loop: asyncio.AbstractEventLoop) -> None:
    """Both sides write the same keys and bytes, read the same values, delete every key; sync and async."""
    conn.flushdb()
    row = make_rows(1, seed=7)[0]
    pk = uuid.uuid1()
    record = Person(id=pk, **row)
    record.save()
    hw.create(row, pk=str(pk))
    ours, theirs = snapshot(conn, Person._meta.prefix), snapshot(conn, hw.prefix)
    if ours != theirs:
        raise RuntimeError(f"the hand-written layout differs from repocket's:\n{ours}\n{theirs}")
    if hw.get(str(pk)) != Person.objects.get(id=pk).to_dict(simple=True):
        raise RuntimeError("the hand-written read gives other values than repocket's")
    Person.objects.filter(tag=row["tag"]).delete()
    hw.delete_where("tag", row["tag"])
    if conn.dbsize():
        raise RuntimeError(f"keys left after deleting: {conn.keys('*')}")

    # the same record again, written by the async API and by the async hand-written program
    run = loop.run_until_complete
    run(Person.acreate(id=pk, **row))
    run(ahw.create(row, pk=str(pk)))
    async_ours, async_theirs = snapshot(conn, Person._meta.prefix), snapshot(conn, ahw.prefix)
    if async_ours != ours or async_theirs != theirs:
        raise RuntimeError(f"the async writes differ from the sync ones:\n{async_ours}\n{async_theirs}")
    if run(ahw.get(str(pk))) != run(Person.objects.aget(id=pk)).to_dict(simple=True):
        raise RuntimeError("the async hand-written read gives other values than repocket's aget")
    run(Person.objects.filter(tag=row["tag"]).adelete())
    hw.delete_where("tag", row["tag"])
    if conn.dbsize():
        raise RuntimeError(f"keys left after deleting: {conn.keys('*')}")


# -- output ------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(conn: redis.Redis, server: RedisServer, load_at_start: float) -> str:
    info = conn.info("server")
    from redis.utils import HIREDIS_AVAILABLE

    return "\n".join([
        f"date:          {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine:       {platform.platform()}; {cpu_model()}; {os.cpu_count()} CPUs",
        f"python:        {platform.python_implementation()} {platform.python_version()}",
        f"redis-server:  {info['redis_version']} (127.0.0.1:{server.port}, no persistence)",
        f"load average:  {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (1 min)",
        f"libraries:     repocket {_version('repocket')}, redis-py {_version('redis')}"
        f" (hiredis {'on' if HIREDIS_AVAILABLE else 'off'}), orjson {_version('orjson')}",
    ])  # fmt: skip


def table(rows: Sequence[Row]) -> str:
    lines = [
        f"{'operation':<32} {'N':>8}  {'per':<6} {'repocket µs':>11} {'by hand µs':>11} {'ratio':>6}"
        f" {'paired':>6}  target",
        "-" * 99,
    ]
    notes = []
    for row in rows:
        target = TARGETS.get(row.operation)
        verdict = "" if target is None else f"≤{target}  {'ok' if row.ratio <= target else 'MISSED'}"
        mark = ""
        if row.note:
            notes.append(row.note)
            mark = "*" * len(notes)
        lines.append(
            f"{row.operation + mark:<32} {row.n:>8,}  {row.unit:<6} {row.result.repocket_us:>11.1f}"
            f" {row.result.hand_us:>11.1f} {row.ratio:>6.2f} {row.paired:>6.2f}  {verdict}"
        )
    lines += [f"{'*' * (i + 1)} {note}" for i, note in enumerate(notes)]
    return "\n".join(lines)


def growth(name: str, fixed: dict[int, tuple[float, float]], target: float | None) -> str:
    if len(fixed) < 2:
        return ""
    small, large = min(fixed), max(fixed)
    lines = [f"{name} with a fixed result size (tag = {FIXED_TAG!r}, 100 records), "
             f"N = {small:,} -> {large:,}:"]
    for label, side in (("repocket", 0), ("by hand", 1)):
        t_small, t_large = fixed[small][side], fixed[large][side]
        ratio = t_large / t_small
        verdict = ""
        if side == 0 and target is not None:
            verdict = f"  target ≤{target}  {'ok' if ratio <= target else 'MISSED'}"
        lines.append(f"  {label:<9} {t_small * 1e3:7.2f} ms -> {t_large * 1e3:7.2f} ms   "
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

Each cell gives repocket's time divided by the hand-written program's time for
the same work on the same server (1.00: as fast, 1.20: 20% slower), from the
best repetition of each side, and in parentheses the median ratio of
back-to-back pairs. The target is the largest acceptable ratio.

{table}

{verdict}

{growth}
"""


@dataclass
class RunInfo:
    """Where and when the benchmark ran, as the page states it."""

    date: str
    machine: str
    python: str
    redis_server: str
    load: str

    @classmethod
    def measure(cls, conn: redis.Redis, load_at_start: float) -> RunInfo:
        """This machine and ``conn``'s server, now."""
        return cls(
            date=f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
            machine=f"{cpu_model()}, {os.cpu_count()} CPUs ({platform.system()} {platform.machine()})",
            python=f"{platform.python_implementation()} {platform.python_version()}",
            redis_server=str(conn.info("server")["redis_version"]),
            load=f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        )


def rst_table(rows: Sequence[Sequence[str]]) -> str:
    """A reStructuredText simple table; ``rows[0]`` is the header, no cell may be empty."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    border = "  ".join("=" * width for width in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return "\n".join([border, line(rows[0]), border, *map(line, rows[1:]), border])


def _fill(text: str) -> str:
    return textwrap.fill(text, width=79, break_long_words=False, break_on_hyphens=False)


def page_table(rows: Sequence[Row]) -> str:
    """The ratios (paired ratios) of every operation on the page, one column per N."""
    shown = [row for row in rows if row.on_page]
    sizes = sorted({row.n for row in shown})
    cells = {(row.operation, row.n): f"{row.ratio:.2f} ({row.paired:.2f})" for row in shown}
    table = [["operation", *(f"N = {n:,}" for n in sizes), "target"]]
    for operation in dict.fromkeys(row.operation for row in shown):
        target = TARGETS.get(operation)
        table.append([operation, *(cells.get((operation, n), "—") for n in sizes),
                      "—" if target is None else f"≤{target}"])  # fmt: skip
    return rst_table(table)


Fixed = dict[str, dict[int, tuple[float, float]]]
"""Seconds per query of each fixed-size filter, per N, per side (:attr:`Bench.fixed`)."""


def _growths(fixed: Fixed) -> tuple[int, int, dict[str, tuple[float, float]]]:
    """The smallest and largest N, and each fixed-size filter's t(largest) / t(smallest) per side."""
    sizes = sorted({n for times in fixed.values() for n in times})
    if len(sizes) < 2:
        return 0, 0, {}
    small, large = sizes[0], sizes[-1]
    growths = {
        name: (times[large][0] / times[small][0], times[large][1] / times[small][1])
        for name, times in fixed.items()
        if small in times and large in times
    }
    return small, large, growths


def page_verdict(rows: Sequence[Row], fixed: Fixed) -> str:
    """The notes on the rows, then which targets were missed (or that none was)."""
    notes = [f"{row.operation.capitalize()} at N = {row.n:,}: {row.note}." for row in rows if row.note and row.on_page]
    missed = []
    for row in rows:
        target = TARGETS.get(row.operation) if row.on_page else None
        if target is not None and row.ratio > target:
            missed.append(f"{row.operation} at N = {row.n:,} ({row.ratio:.2f}, target ≤{target})")
    small, large, growths = _growths(fixed)
    for name, (ours, _) in growths.items():
        target = growth_target(name)
        if target is not None and ours > target:
            missed.append(f"the growth of the fixed-size {name} from N = {small:,} to N = {large:,}"
                          f" ({ours:.2f}, target ≤{target})")
    verdict = "Missed targets: " + "; ".join(missed) + "." if missed else "Every target was met."
    return _fill(" ".join([*notes, verdict]))


def page_growth(fixed: Fixed) -> str:
    """The growth table of the fixed-size filters ("" after a run at one size)."""
    small, large, growths = _growths(fixed)
    if not growths:
        return ""
    table = [["query", "repocket", "by hand", "target"]]
    for name, (ours, theirs) in growths.items():
        target = growth_target(name)
        table.append([name, f"{ours:.2f}", f"{theirs:.2f}", "—" if target is None else f"≤{target}"])
    intro = _fill(
        f"Growth of an indexed filter whose result has a fixed size (``tag='{FIXED_TAG}'``, 100 records)"
        f" from N = {small:,} to N = {large:,}: t({large:,}) / t({small:,}), where 1.00 means that"
        " its time does not depend on the model size:"
    )
    return f"{intro}\n\n{rst_table(table)}"


def render_results(info: RunInfo, rows: Sequence[Row], fixed: Fixed) -> str:
    """:data:`RESULTS` filled in, without trailing or doubled blank lines."""
    text = RESULTS.format(
        date=info.date,
        machine=info.machine,
        python=info.python,
        redis_server=info.redis_server,
        load=info.load,
        table=page_table(rows),
        verdict=page_verdict(rows, fixed),
        growth=page_growth(fixed),
    )
    return "\n".join(line.rstrip() for line in text.strip().replace("\n\n\n", "\n\n").splitlines())


def write_results(page: str, results: str) -> str:
    """``page`` with the lines between its :data:`BEGIN` and :data:`END` comments replaced by ``results``.

    Raises:
        ValueError: the page lacks either marker (nothing is written then).
    """
    lines = page.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(BEGIN)), None)
    end = None if start is None else next((i for i in range(start + 1, len(lines)) if lines[i].rstrip() == END), None)
    if start is None or end is None:
        raise ValueError(f"the page has no {BEGIN!r} ... {END!r} comment lines around its results")
    return "\n".join([*lines[:start], BEGIN_LINE, "", results, "", *lines[end:]]) + "\n"


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="model sizes, comma-separated (default 10000,100000)")
    parser.add_argument("--quick", action="store_true", help="a smoke run at N = 1,000")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each filter (best kept)")
    parser.add_argument("--profile", choices=OPERATIONS, metavar="OP",
                        help=f"cProfile repocket's side of one operation: {', '.join(OPERATIONS)}")
    parser.add_argument("--page", type=Path, default=None,
                        help=f"write the results into this page (default after a full run: {PAGE})")
    parser.add_argument("--no-page", action="store_true", help="write no docs page")
    args = parser.parse_args(argv)
    full_run = not (args.sizes or args.quick or args.profile)
    page = None if args.no_page or args.profile else args.page or (PAGE if full_run else None)
    if page is not None:  # fail now, not after the run
        try:
            write_results(page.read_text(encoding="utf-8"), "")
        except (OSError, ValueError) as error:
            parser.error(f"cannot write the results into {page}: {error}")
    if args.sizes:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
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
    async_client: aioredis.Redis | None = None
    try:
        server.start()
        configure.connection_pool(url=server.url)
        conn = configure.get_connection()
        hand = HandWritten(redis.Redis.from_url(server.url), HAND_PREFIX, batch_size=BATCH)
        async_client = aioredis.Redis.from_url(server.url)
        async_hand = AsyncHandWritten(async_client, HAND_PREFIX, batch_size=BATCH)
        log(f"redis-server pid {server.pid} on {server.url}")
        if args.profile:
            profile(args.profile, sizes[0], conn, sys.stdout)
            return 0
        verify_same_layout(conn, hand, async_hand, loop)
        log("same layout: repocket and the hand-written program wrote identical keys and bytes, sync and async")
        bench = Bench(conn, hand, args.reps, log, async_hand, loop)
        for n in sizes:
            log(f"N = {n:,}")
            bench.run(n)
        print(header(conn, server, load_at_start))
        print()
        print("µs per record (per call for get by id and count), best of the repetitions;")
        print("ratio = repocket / hand-written redis-py on the same server, same layout;")
        print("paired = the median of each repetition's own ratio (the two sides run back to back).")
        print()
        print(table(bench.rows))
        for name, times in bench.fixed.items():
            lines = growth(name, times, growth_target(name))
            if lines:
                print()
                print(lines)
        print()
        print(f"total run time {time.perf_counter() - started:.0f} s")
        if page is not None:
            results = render_results(RunInfo.measure(conn, load_at_start), bench.rows, bench.fixed)
            page.write_text(write_results(page.read_text(encoding="utf-8"), results), encoding="utf-8")
            log(f"wrote the results into {page}")
        return 0
    finally:
        close_async(loop, async_client)
        configure.reset()
        server.stop()


def close_async(loop: asyncio.AbstractEventLoop, client: aioredis.Redis | None) -> None:
    """Close both sides' async connections on ``loop`` (none were opened without ``client``), then the loop."""
    async def close(client: aioredis.Redis) -> None:
        await client.aclose()
        await configure.get_async_connection().aclose()

    try:
        if client is not None:
            loop.run_until_complete(close(client))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
