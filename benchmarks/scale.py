"""``python -m benchmarks --scale`` (``make bench-scale``): how query time grows with the model.

The model is the one of the ordered-page case, four fields, three indexed::

    class Person(ActiveRecord):
        name = Unicode(index=True)    # "<first> <last> <i:07d>", unique; 1 in 8 starts "Ada "
        tag = Unicode(index=True)     # "t<i // 100>": every tag is held by exactly 100 records
        age = Integer(index=True)     # uniform in 0..99: age=7 matches 1% of the records
        bio = Unicode()               # ~90 characters, not indexed

At each size (default 10,000, 100,000 and 1,000,000; ``--scale-sizes`` to
choose) the same records are loaded, the growing model keeping the records of
the smaller sizes, and each query of :func:`queries` is timed: the best of ``--reps`` runs
(default 5), each after a ``gc.collect()`` and of as many calls as fill
:data:`MIN_RUN` (a count takes well under a millisecond). Every query has a result of
fixed size at every model size (a page of 100 records, the 100 records of one
tag, or a count), so an ideal planner takes the same time at every size. The
growth is t(largest N) / t(smallest N), the target at most :data:`GROWTH_TARGET`;
a page at offset 1,000 of a 1% filter is full only from 110,000 records on, so
each growth is taken between the smallest and the largest size at which the
result was full (the sizes are named when they are not the first and the last).

The same server then runs the minimal program (:class:`MinimalScale`: the
hash of plain values, the id set, one set per value of each indexed field, a
lexicographic sorted set of ``name\\x00id`` and a sorted set of ages), loaded by
MULTI/EXEC pipelines of 500 records, alone in the flushed database: its times
show what the same queries cost done the simple way (``SORT ... BY
<prefix>:*->name ALPHA LIMIT`` over the 1% set; ``ZRANGEBYLEX`` for the name
prefix, then the ages read and sorted in Python), and the checks compare its
results with repocket's (the same names in the same order, the same ages, the
same counts). repocket is loaded with ``bulk_create(batch_size=500)``.

Bytes per record at each size is ``used_memory - mem_clients_normal`` once
loaded, minus the same in the empty database, divided by the records. The
server has Redis's default configuration (``hash-max-ziplist-value 64``).

With the default sizes (and no ``--no-page``), the results are written into
``docs/performance.rst`` between ``.. begin scale`` and ``.. end scale``.
"""

from __future__ import annotations

import os
import random
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import RunInfo, fill, rst_table, settled_memory, tidy, timed, write_block
from repocket import ActiveRecord, attributes, configure
from repocket.server import RedisServer

__all__ = ["GROWTH_TARGET", "SCALE", "SIZES", "MinimalScale", "ScaleReport", "main", "render_scale", "write_scale"]

SIZES = (10_000, 100_000, 1_000_000)
MIN_SIZE = 1_000
GROWTH_TARGET = 1.3
BATCH = 500
#: Rows are made this many at a time, each chunk from its own seed: the same rows at every size.
CHUNK = 10_000
#: Seconds the measuring connection waits for a reply (a FLUSHALL of a million records takes several).
FLUSH_TIMEOUT = 600
#: The shortest timed run: a query faster than this is called several times per run.
MIN_RUN = 0.05
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
WORDS = ("redis", "python", "hash", "index", "record", "query", "pipeline", "script", "atomic", "model")
FIELDS = ("name", "tag", "age", "bio")
MINIMAL_PREFIX = "minimal:scale:Person"
SIDES = {"rp": "repocket", "mn": "minimal"}


class Person(ActiveRecord):
    """The scale benchmark's record."""

    class Meta:
        namespace = "scale"

    name = attributes.Unicode(index=True)
    tag = attributes.Unicode(index=True)
    age = attributes.Integer(index=True)
    bio = attributes.Unicode()


def make_rows(start: int, stop: int) -> list[dict[str, Any]]:
    """Records ``start`` to ``stop`` (the same whatever the sizes of the run)."""
    rows: list[dict[str, Any]] = []
    for chunk in range(start // CHUNK, -(-stop // CHUNK)):
        rnd = random.Random(chunk)
        base = chunk * CHUNK
        made = [{
            "name": f"{rnd.choice(FIRST)} {rnd.choice(LAST)} {i:07d}",
            "tag": f"t{i // 100}",
            "age": rnd.randrange(100),
            "bio": " ".join(rnd.choice(WORDS) for _ in range(12)),
        } for i in range(base, base + CHUNK)]  # fmt: skip
        rows += made[max(start - base, 0):stop - base]
    return rows


# -- the minimal program -------------------------------------------------------------------


class MinimalScale:
    """The scale model kept the minimal way (see the module docstring), on a ``decode_responses=True`` client."""

    def __init__(self, client: redis.Redis, prefix: str = MINIMAL_PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self.ids_key = f"{prefix}:ids"
        self.names_key = f"{prefix}:name"  # name\x00id, score 0: prefix search and order by name
        self.ages_key = f"{prefix}:age"  # id scored by age

    def bulk_create(self, rows: Sequence[dict[str, Any]]) -> None:
        p = self.prefix
        for start in range(0, len(rows), BATCH):
            pipe = self.r.pipeline()
            for row in rows[start:start + BATCH]:
                pk = str(uuid.uuid1())
                pipe.hset(f"{p}:{pk}", mapping=row)
                pipe.sadd(self.ids_key, pk)
                for name in ("name", "tag", "age"):
                    pipe.sadd(f"{p}:{name}:{row[name]}", pk)
                pipe.zadd(self.names_key, {f"{row['name']}\x00{pk}": 0})
                pipe.zadd(self.ages_key, {pk: row["age"]})
            pipe.execute()

    def fetch(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records by id, in one pipelined round trip, typed back."""
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hgetall(f"{self.prefix}:{pk}")
        return [{"id": uuid.UUID(pk), "name": raw["name"], "tag": raw["tag"], "age": int(raw["age"]),
                 "bio": raw["bio"]} for pk, raw in zip(ids, pipe.execute()) if raw]  # fmt: skip

    def filter_eq(self, name: str, value: Any) -> list[dict[str, Any]]:
        """SMEMBERS of the value's set, then a pipeline of HGETALL."""
        return self.fetch(list(self.r.smembers(f"{self.prefix}:{name}:{value}")))

    def count_eq(self, name: str, value: Any) -> int:
        """SCARD of the value's set."""
        return int(self.r.scard(f"{self.prefix}:{name}:{value}"))

    def eq_by_name(self, name: str, value: Any, offset: int, limit: int, desc: bool = False) -> list[dict[str, Any]]:
        """The value's set sorted by the records' names in Redis (SORT BY ... ALPHA LIMIT), then fetched."""
        ids = self.r.sort(f"{self.prefix}:{name}:{value}", start=offset, num=limit, by=f"{self.prefix}:*->name",
                          alpha=True, desc=desc)
        return self.fetch(ids)

    def prefix_by_age(self, prefix: str, offset: int, limit: int, desc: bool = False) -> list[dict[str, Any]]:
        """The ids whose name starts with ``prefix`` (ZRANGEBYLEX), their ages read, sorted and sliced in Python."""
        bound = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        ids = [member.rsplit("\x00", 1)[1] for member in self.r.zrangebylex(self.names_key, f"[{prefix}", f"({bound}")]
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hget(f"{self.prefix}:{pk}", "age")
        ages = [int(age) for age in pipe.execute()]
        order = sorted(range(len(ids)), key=ages.__getitem__, reverse=desc)
        return self.fetch([ids[k] for k in order[offset:offset + limit]])


# -- the queries ---------------------------------------------------------------------------


@dataclass
class Query:
    """One timed query: repocket's and the minimal program's, and what a full result is."""

    label: str
    rp: Callable[[], Any]
    mn: Callable[[MinimalScale], Any]
    #: The size of a full result (None: a count).
    full: int | None
    #: The field the result is ordered by (None: no order).
    order: str | None = None


def queries() -> list[Query]:
    """The timed queries, in the table's order."""
    objects = Person.objects
    return [
        Query("filter(tag='t7')", lambda: list(objects.filter(tag="t7")),
              lambda m: m.filter_eq("tag", "t7"), 100),
        Query("filter(tag='t7').count()", lambda: objects.filter(tag="t7").count(),
              lambda m: m.count_eq("tag", "t7"), None),
        Query("filter(age=7).count()", lambda: objects.filter(age=7).count(),
              lambda m: m.count_eq("age", 7), None),
        Query("filter(age=7).order_by('name')[:100]", lambda: list(objects.filter(age=7).order_by("name")[:100]),
              lambda m: m.eq_by_name("age", 7, 0, 100), 100, "name"),
        Query("filter(age=7).order_by('-name')[:100]", lambda: list(objects.filter(age=7).order_by("-name")[:100]),
              lambda m: m.eq_by_name("age", 7, 0, 100, desc=True), 100, "-name"),
        Query("filter(age=7).order_by('name')[1000:1100]",
              lambda: list(objects.filter(age=7).order_by("name")[1000:1100]),
              lambda m: m.eq_by_name("age", 7, 1000, 100), 100, "name"),
        Query("filter(name__startswith='Ada ').order_by('age')[:100]",
              lambda: list(objects.filter(name__startswith="Ada ").order_by("age")[:100]),
              lambda m: m.prefix_by_age("Ada ", 0, 100), 100, "age"),
        Query("filter(name__startswith='Ada ').order_by('-age')[1000:1100]",
              lambda: list(objects.filter(name__startswith="Ada ").order_by("-age")[1000:1100]),
              lambda m: m.prefix_by_age("Ada ", 1000, 100, desc=True), 100, "-age"),
    ]  # fmt: skip


def signature(query: Query, result: Any) -> Any:
    """What both programs must agree on: a count, the ordered field's values, or every record's values."""
    if query.full is None:
        return result
    if query.order is not None:
        name = query.order.lstrip("-")
        values = [record[name] for record in result]
        if values != sorted(values, reverse=query.order.startswith("-")):
            raise RuntimeError(f"{query.label}: not ordered by {query.order}")
        return values
    return sorted(tuple(record[name] for name in FIELDS) for record in result)


# -- the report ----------------------------------------------------------------------------


@dataclass
class SideRun:
    """One program's measurements at every size."""

    #: Query label -> N -> best seconds.
    times: dict[str, dict[int, float]] = field(default_factory=dict)
    #: Query label -> N -> result size (None for a count).
    sizes: dict[str, dict[int, int | None]] = field(default_factory=dict)
    #: N -> bytes per record once loaded.
    memory: dict[int, float] = field(default_factory=dict)
    #: N -> µs per record of loading the records added to reach N.
    load: dict[int, float] = field(default_factory=dict)


@dataclass
class ScaleReport:
    """Every side's runs, and the queries' fixed result sizes."""

    sizes: list[int]
    reps: int
    hash_max_value: int
    #: Query label -> full result size (None: a count).
    full: dict[str, int | None]
    sides: dict[str, SideRun]

    def growth(self, side: str, label: str) -> tuple[float | None, int, int]:
        """t(largest) / t(smallest) of ``label`` over the sizes where its result was full; and those sizes."""
        run = self.sides[side]
        full = [n for n in self.sizes if self.full[label] is None or run.sizes[label].get(n) == self.full[label]]
        if len(full) < 2:
            return None, 0, 0
        small, large = full[0], full[-1]
        return run.times[label][large] / run.times[label][small], small, large

    def growth_cell(self, side: str, label: str) -> str:
        ratio, small, large = self.growth(side, label)
        if ratio is None:
            return "—"
        if (small, large) == (self.sizes[0], self.sizes[-1]):
            return f"{ratio:.2f}"
        return f"{ratio:.2f} ({small:,} → {large:,})"

    def time_cell(self, side: str, label: str, n: int) -> str:
        run = self.sides[side]
        seconds = run.times[label].get(n)
        if seconds is None:
            return "—"
        cell = f"{seconds * 1e3:.2f}"
        size, full = run.sizes[label].get(n), self.full[label]
        return cell if full is None or size == full else f"{cell} [{size}]"

    def missed(self) -> list[str]:
        out = []
        for label in self.full:
            ratio, small, large = self.growth("rp", label)
            if ratio is not None and ratio > GROWTH_TARGET:
                out.append(f"``{label}`` from N = {small:,} to N = {large:,} ({ratio:.2f}, target ≤{GROWTH_TARGET})")
        return out


# -- running -------------------------------------------------------------------------------


def best_time(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """The best seconds per call of ``fn`` over ``reps`` runs, and its last result.

    A run calls ``fn`` as many times as fit in :data:`MIN_RUN` seconds (judged
    from a first call), so that short queries are not lost in the timer's noise.
    """
    first, result = timed(fn)
    loops = max(1, min(1000, int(MIN_RUN / max(first, 1e-6))))

    def repeat() -> Any:
        for _ in range(loops):
            found = fn()
        return found

    best = float("inf")
    for _ in range(reps):
        took, result = timed(repeat)
        best = min(best, took / loops)
    return best, result


def _load_repocket(writer: redis.Redis, rows: Sequence[dict[str, Any]]) -> None:
    manager = Person.objects.using(writer)
    for start in range(0, len(rows), CHUNK):
        manager.bulk_create([Person(**row) for row in rows[start:start + CHUNK]], batch_size=BATCH)


def run_side(side: str, url: str, conn: redis.Redis, sizes: Sequence[int], reps: int,
             log: Callable[[str], None], expected: dict[tuple[str, int], Any]) -> SideRun:
    """Load ``side``'s program up to every size in turn and time every query at each.

    ``expected`` holds repocket's results' signatures (filled by the repocket side,
    checked by the minimal one).
    """
    writer = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        url, max_connections=1, decode_responses=side == "mn"))
    minimal = MinimalScale(redis.Redis.from_url(url, decode_responses=True))
    run = SideRun()
    try:
        conn.flushall()
        if side == "rp":  # load the scripts: the script cache survives FLUSHALL and is not the records' memory
            Person.objects.using(writer).bulk_create([Person(**make_rows(0, 1)[0])])
            conn.flushall()
        empty = settled_memory(conn, writer)
        loaded = 0
        for n in sizes:
            rows = make_rows(loaded, n)
            seconds, _ = timed(lambda rows=rows: _load_repocket(writer, rows) if side == "rp"
                               else MinimalScale(writer).bulk_create(rows))
            run.load[n] = seconds * 1e6 / len(rows)
            loaded = n
            del rows
            run.memory[n] = (settled_memory(conn, writer) - empty) / n
            log(f"  {SIDES[side]}: N = {n:,} loaded, {run.load[n]:.1f} µs and {run.memory[n]:.0f} B per record")
            for query in queries():
                best, result = best_time(query.rp if side == "rp" else lambda q=query: q.mn(minimal), reps)
                run.times.setdefault(query.label, {})[n] = best
                run.sizes.setdefault(query.label, {})[n] = None if query.full is None else len(result)
                found = signature(query, result)
                if side == "rp":
                    expected[query.label, n] = found
                elif (query.label, n) in expected and expected[query.label, n] != found:
                    raise RuntimeError(f"{query.label} at N = {n:,}: the minimal program's result differs"
                                       " from repocket's (a SORT ... ALPHA under a locale other than C?)")
                size = run.sizes[query.label][n]
                log(f"    {query.label:<58} {best * 1e3:9.2f} ms  "
                    + (f"(count {result})" if size is None else f"({size} results)"))
        conn.flushall()
        return run
    finally:
        writer.close()
        minimal.r.close()


def measure(sizes: Sequence[int], reps: int, log: Callable[[str], None]) -> tuple[ScaleReport, RunInfo]:
    load_at_start = os.getloadavg()[0]
    server = RedisServer()
    try:
        server.start()
        configure.connection_pool(url=server.url)
        conn = redis.Redis.from_url(server.url, socket_timeout=FLUSH_TIMEOUT)  # FLUSHALL of 1M records takes seconds
        hash_max = int(conn.config_get("hash-max-ziplist-value")["hash-max-ziplist-value"])
        log(f"redis-server pid {server.pid} on {server.url}")
        expected: dict[tuple[str, int], Any] = {}
        sides = {side: run_side(side, server.url, conn, sizes, reps, log, expected) for side in SIDES}
        report = ScaleReport(list(sizes), reps, hash_max, {q.label: q.full for q in queries()}, sides)
        info = RunInfo.measure(conn, load_at_start)
        conn.close()
        return report, info
    finally:
        configure.reset()
        server.stop()


# -- output --------------------------------------------------------------------------------


def scale_table(report: ScaleReport) -> str:
    """The terminal's table."""
    width = max(len(label) for label in report.full) + 1
    cells = [f"{f'N = {n:,}':>16}" for n in report.sizes]
    lines = [
        f"Scale: ms per query, best of {report.reps}; [k]: the result held k records, not a full page;",
        f"growth = t(largest N) / t(smallest N) over the sizes with a full result (hash-max-ziplist-value"
        f" {report.hash_max_value}).",
        f"{'query':<{width}} {'program':<9}{''.join(cells)}  {'growth':<24} target",
        "-" * (width + 10 + 16 * len(cells) + 35),
    ]
    for label in report.full:
        for side, name in SIDES.items():
            row = "".join(f"{report.time_cell(side, label, n):>16}" for n in report.sizes)
            verdict = ""
            ratio, _, _ = report.growth(side, label)
            if side == "rp" and ratio is not None:
                verdict = f"≤{GROWTH_TARGET} {'ok' if ratio <= GROWTH_TARGET else 'MISSED'}"
            lines.append(f"{label if side == 'rp' else '':<{width}} {name:<9}{row}  "
                         f"{report.growth_cell(side, label):<24} {verdict}".rstrip())
    for what, attr, fmt in (("bytes per record", "memory", "{:.0f}"), ("load, µs per record", "load", "{:.1f}")):
        for side, name in SIDES.items():
            values = getattr(report.sides[side], attr)
            row = "".join(f"{fmt.format(values[n]):>16}" for n in report.sizes)
            lines.append(f"{what if side == 'rp' else '':<{width}} {name:<9}{row}")
    missed = [phrase.replace("``", "") for phrase in report.missed()]
    lines += ["", "Missed targets:" if missed else "Every growth target was met."]
    lines += [f"  - {phrase}" for phrase in missed]
    return "\n".join(lines)


def bullets(phrases: Sequence[str]) -> str:
    """A reStructuredText bullet list, lines wrapped at 79 but never inside an ``inline literal``."""
    items = []
    for phrase in phrases:
        parts = phrase.split("``")
        kept = "``".join(part.replace(" ", "\xa0") if i % 2 else part for i, part in enumerate(parts))
        text = textwrap.fill(kept, width=79, initial_indent="- ", subsequent_indent="  ",
                             break_long_words=False, break_on_hyphens=False)
        items.append(text.replace("\xa0", " "))
    return "\n".join(items)


#: The page's scale part, between :data:`BEGIN` and :data:`END`; :func:`render_scale` fills it in.
BEGIN = ".. begin scale"
BEGIN_LINE = f"{BEGIN}: written by make bench-scale, SCALE in benchmarks/scale.py"
END = ".. end scale"
SCALE = """\
Measured on {date}:

- machine: {machine}
- Python: {python}
- redis-server: {redis_server}
- load average (1 minute): {load}

{intro}

{repocket}

The minimal program, for comparison (``SORT ... BY ... ALPHA LIMIT`` for the
order by name, ``ZRANGEBYLEX`` then a sort in Python for the name prefix):

{minimal}

{verdict}

{memory}
"""
#: Fields of :data:`SCALE` that hold several lines.
BLOCK_FIELDS = ("intro", "repocket", "minimal", "verdict", "memory")


def _query_table(report: ScaleReport, side: str, target: bool) -> str:
    table = [["query", *(f"N = {n:,}" for n in report.sizes), "growth", *(["target"] if target else [])]]
    for label in report.full:
        table.append([f"``{label}``", *(report.time_cell(side, label, n) for n in report.sizes),
                      report.growth_cell(side, label), *([f"≤{GROWTH_TARGET}"] if target else [])])
    return rst_table(table)


def render_scale(info: RunInfo, report: ScaleReport) -> str:
    """:data:`SCALE` filled in, without trailing or doubled blank lines."""
    intro = fill(
        f"Milliseconds per query (best of {report.reps}) at each model size; every query's result has the"
        " same size at every N (a page of 100, the 100 records of one tag, or a count), so its time should"
        " not grow. [k] marks a result that held k records, not a full page; growth is t(largest N) /"
        " t(smallest N) over the sizes with a full result. repocket:"
    )
    memory = [["", *(f"N = {n:,}" for n in report.sizes)]]
    for side, name in SIDES.items():
        run = report.sides[side]
        memory.append([f"{name}, bytes per record", *(f"{run.memory[n]:.0f}" for n in report.sizes)])
    for side, name in SIDES.items():
        run = report.sides[side]
        memory.append([f"{name}, load µs per record", *(f"{run.load[n]:.1f}" for n in report.sizes)])
    memory[0][0] = "program"
    missed = report.missed()
    verdict = f"Missed targets:\n\n{bullets(missed)}" if missed else "Every growth target was met."
    text = SCALE.format(
        date=info.date,
        machine=info.machine,
        python=info.python,
        redis_server=info.redis_server,
        load=info.load,
        intro=intro,
        repocket=_query_table(report, "rp", target=True),
        minimal=_query_table(report, "mn", target=False),
        verdict=verdict,
        memory=fill(
            f"Bytes per record once loaded (``used_memory - mem_clients_normal``, the empty database's"
            f" subtracted; ``hash-max-ziplist-value {report.hash_max_value}``) and the loading time,"
            " ``bulk_create(batch_size=500)`` for repocket and MULTI/EXEC pipelines of 500 records for the"
            " minimal program:"
        ) + "\n\n" + rst_table(memory),
    )
    return tidy(text)


def write_scale(page: str, text: str) -> str:
    """``page`` with the lines between its :data:`BEGIN` and :data:`END` comments replaced by ``text``.

    Raises:
        ValueError: the page lacks either marker (nothing is written then).
    """
    return write_block(page, BEGIN, BEGIN_LINE, END, text)


def main(sizes: Sequence[int], reps: int, page: Path | None) -> int:
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    report, info = measure(sizes, reps, log)
    print(f"date: {info.date}; machine: {info.machine}; python: {info.python}; redis-server: {info.redis_server};"
          f" load average: {info.load}")
    print()
    print(scale_table(report))
    print()
    print(f"total run time {time.perf_counter() - started:.0f} s")
    if page is not None:
        page.write_text(write_scale(page.read_text(encoding="utf-8"), render_scale(info, report)), encoding="utf-8")
        log(f"wrote the scale results into {page}")
    return 0
