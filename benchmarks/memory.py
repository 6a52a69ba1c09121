"""Bytes per record of one model in five layouts, each alone in a flushed database.

The model has six fields, two of them indexed::

    class Student(ActiveRecord):
        name = Unicode()               # "Ada Lovelace 001234"
        house = Unicode(index=True)    # one of 4 houses
        age = Integer(index=True)      # uniform in 0..99
        bio = Unicode()                # ~90 characters
        score = Float()
        tag = Unicode()                # "t12"

:data:`RECORDS` records (the same ids and values in every layout) are written in
each of these layouts, by pipelines or ``bulk_create`` of 500 records:

(a) minimal: a hash of plain values per record (the id only in the key), the id
    set, one set per house and one per age (the minimal program's layout);
(b) plain values by hand (the hash of (a)) with the indexes repocket keeps: the id
    set ``_ids``; for the Unicode ``house`` an equality set per value and the
    lexicographic sorted set ``_lex:house`` of ``value\\x00id``; for the Integer
    ``age`` an equality set per value and the sorted set ``_sort:age`` scored by
    age (no record has a None, so there is no ``_null`` set);
(c) the same-layout program: (b) with repocket's JSON envelopes in the hash, and
    the ``id`` field;
(d) repocket, default (envelope) format;
(e) repocket with ``class Meta: format = "plain"``.

Before anything is measured the benchmark checks that (c) wrote exactly the keys
and bytes (d) wrote, and that (b) wrote the index keys (d) wrote and the hashes
(a) wrote; what (e) writes differently from (b) is noted under the table.

The metric is ``used_memory - mem_clients_normal`` (INFO memory) after the
writes minus the same before them, divided by the number of records. The
clients' part is subtracted because the server keeps each connection's buffers,
and the arguments of its last command (a 500-record script call: about 200 KB)
until its next command: every writer sends a PING before each reading. Every
layout uses one key prefix of the same length, so key names weigh the same.
``MEMORY USAGE`` (``SAMPLES 0``) then gives one record hash's bytes and, summed
over the keys of each index, its bytes per record; ``OBJECT ENCODING`` gives the
record hash's encoding.

It runs on two servers: one configured as the embedded server
(``hash-max-ziplist-value`` :data:`repocket.server.EMBEDDED_HASH_MAX_VALUE`),
where a record's hash fits Redis's compact encoding, and one with Redis's
default (64), where a field longer than 64 bytes (``bio``, every envelope) makes
the hash a hash table.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from benchmarks.common import rst_table, settled_memory, snapshot
from repocket import ActiveRecord, attributes, serialization
from repocket.server import EMBEDDED_HASH_MAX_VALUE, RedisServer

__all__ = ["LAYOUTS", "RECORDS", "TARGETS", "LayoutMemory", "MemoryReport", "measure_memory"]

RECORDS = 2000
BATCH = 500
HOUSES = ("Gryffindor", "Hufflepuff", "Ravenclaw", "Slytherin")
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
WORDS = ("redis", "python", "hash", "index", "record", "query", "pipeline", "script", "atomic", "model")
FIELDS = ("name", "house", "age", "bio", "score", "tag")
INDEXED = ("house", "age")
#: The two namespaces have the same length, so every layout's key names weigh the same.
ENVELOPE_NAMESPACE, PLAIN_NAMESPACE = "memE", "memP"

#: The layouts, in the table's order.
LAYOUTS = {
    "a": "minimal (a)",
    "b": "plain, repocket's indexes (b)",
    "c": "same layout by hand (c)",
    "d": "repocket, envelope (d)",
    "e": "repocket, plain (e)",
}
#: The largest acceptable bytes per record, as a multiple of layout (b), by layout;
#: and the configurations it applies on.
TARGETS = {"d": (1.5, ("embedded",)), "e": (1.15, ("embedded", "default"))}


def _student(prefix_namespace: str, storage: str) -> type[ActiveRecord]:
    """The memory benchmark's record, under ``prefix_namespace``, stored in the format ``storage``."""

    class Student(ActiveRecord):
        class Meta:
            namespace = prefix_namespace
            format = storage

        name = attributes.Unicode()
        house = attributes.Unicode(index=True)
        age = attributes.Integer(index=True)
        bio = attributes.Unicode()
        score = attributes.Float()
        tag = attributes.Unicode()

    return Student


#: (d) and (e): the same model in the envelope and the plain format.
Student = _student(ENVELOPE_NAMESPACE, "envelope")
PlainStudent = _student(PLAIN_NAMESPACE, "plain")


def make_rows(n: int, seed: int = 11) -> tuple[list[str], list[dict[str, Any]]]:
    """``n`` ids (uuid1, all 36 characters) and records as plain dicts."""
    rnd = random.Random(seed)
    ids = [str(uuid.uuid1()) for _ in range(n)]
    rows = [{
        "name": f"{rnd.choice(FIRST)} {rnd.choice(LAST)} {i:06d}",
        "house": HOUSES[rnd.randrange(len(HOUSES))],
        "age": rnd.randrange(100),
        "bio": " ".join(rnd.choice(WORDS) for _ in range(12)),
        "score": round(rnd.uniform(0, 100), 3),
        "tag": f"t{rnd.randrange(50)}",
    } for i in range(n)]  # fmt: skip
    return ids, rows


# -- the hand-written layouts -----------------------------------------------------------

_SUFFIX = serialization.envelope_suffix("repocket.attributes")
_TYPES = {"name": "Unicode", "house": "Unicode", "age": "Integer", "bio": "Unicode", "score": "Float",
          "tag": "Unicode"}  # fmt: skip
_PREFIXES = {name: serialization.envelope_prefix(kind) for name, kind in _TYPES.items()}
_UUID = serialization.envelope_prefix("AutoUUID")


def envelopes(pk: str, row: dict[str, Any]) -> dict[str, bytes]:
    """A record's hash as repocket's envelope format writes it."""
    out = {"id": _UUID + b'"' + pk.encode() + b'"' + _SUFFIX}
    for name in FIELDS:
        out[name] = _PREFIXES[name] + orjson.dumps(row[name]) + _SUFFIX
    return out


def _batches(ids: Sequence[str], rows: Sequence[dict[str, Any]]) -> Any:
    for start in range(0, len(ids), BATCH):
        yield zip(ids[start:start + BATCH], rows[start:start + BATCH])


def write_minimal(client: redis.Redis, prefix: str, ids: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Layout (a): plain values, the id set, one set per house and per age."""
    for batch in _batches(ids, rows):
        pipe = client.pipeline()
        for pk, row in batch:
            pipe.hset(f"{prefix}:{pk}", mapping=row)
            pipe.sadd(f"{prefix}:ids", pk)
            for name in INDEXED:
                pipe.sadd(f"{prefix}:{name}:{row[name]}", pk)
        pipe.execute()


def _repocket_indexes(pipe: Any, prefix: str, pk: str, row: dict[str, Any]) -> None:
    pipe.sadd(f"{prefix}:_ids", pk)
    pipe.sadd(f"{prefix}:_eq:house:{row['house']}", pk)
    pipe.zadd(f"{prefix}:_lex:house", {f"{row['house']}\x00{pk}": 0})
    pipe.sadd(f"{prefix}:_eq:age:{row['age']}", pk)
    pipe.zadd(f"{prefix}:_sort:age", {pk: row["age"]})


def write_plain_indexed(client: redis.Redis, prefix: str, ids: Sequence[str],
                        rows: Sequence[dict[str, Any]]) -> None:
    """Layout (b): the hashes of (a), the index keys repocket writes."""
    for batch in _batches(ids, rows):
        pipe = client.pipeline()
        for pk, row in batch:
            pipe.hset(f"{prefix}:{pk}", mapping=row)
            _repocket_indexes(pipe, prefix, pk, row)
        pipe.execute()


def write_same_layout(client: redis.Redis, prefix: str, ids: Sequence[str],
                      rows: Sequence[dict[str, Any]]) -> None:
    """Layout (c): repocket's envelopes and index keys, by hand."""
    for batch in _batches(ids, rows):
        pipe = client.pipeline()
        for pk, row in batch:
            pipe.hset(f"{prefix}:{pk}", mapping=envelopes(pk, row))
            _repocket_indexes(pipe, prefix, pk, row)
        pipe.execute()


def write_model(model: type[ActiveRecord]) -> Callable[[redis.Redis, str, Sequence[str], Sequence[dict[str, Any]]], None]:
    """Layouts (d) and (e): ``model.objects.bulk_create`` of the records, 500 per script call."""
    def write(client: redis.Redis, prefix: str, ids: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        model.objects.using(client).bulk_create(
            [model(id=pk, **row) for pk, row in zip(ids, rows)], batch_size=BATCH
        )

    return write


# -- measuring ---------------------------------------------------------------------------


@dataclass
class LayoutMemory:
    """What one layout takes on one server."""

    layout: str
    #: Bytes per record.
    per_record: float
    #: ``MEMORY USAGE`` of one record hash, and its ``OBJECT ENCODING``.
    record: int | None = None
    encoding: str = ""
    #: ``MEMORY USAGE`` of each index's keys per record: "ids", "house", "age".
    index: dict[str, float] = field(default_factory=dict)


@dataclass
class MemoryReport:
    """Every layout on each server configuration."""

    records: int
    #: Configuration name ("embedded", "default") -> its hash-max-ziplist-value.
    configs: dict[str, int]
    #: Configuration name -> layout key -> what it takes.
    layouts: dict[str, dict[str, LayoutMemory]]
    #: What the layout check found (differences of (e) from (b)).
    notes: list[str]

    def ratio(self, config: str, layout: str) -> float | None:
        """Bytes per record of ``layout`` / those of layout (b)."""
        ours, base = self.layouts[config][layout].per_record, self.layouts[config]["b"].per_record
        return ours / base if base else None

    def missed(self) -> list[str]:
        """The memory targets missed, as phrases."""
        out = []
        for layout, (target, configs) in TARGETS.items():
            for config in configs:
                ratio = self.ratio(config, layout) if config in self.layouts else None
                if ratio is not None and ratio > target:
                    out.append(f"the memory of {LAYOUTS[layout][:-4]} on the {config} configuration"
                               f" ({ratio:.2f}× layout (b), target ≤{target})")
        return out


def _group(relative: str) -> str:
    """Which index a key (its name after the prefix and ':') belongs to: "record", "ids" or a field."""
    if relative in ("ids", "_ids"):
        return "ids"
    parts = relative.split(":")
    if len(parts) == 1:
        return "record"
    return parts[1] if parts[0].startswith("_") else parts[0]


def _usage(conn: redis.Redis, prefix: str, records: int, first: str) -> tuple[int, str, dict[str, float]]:
    """One record's MEMORY USAGE and encoding; each index's MEMORY USAGE per record."""
    names = list(conn.scan_iter(match=f"{prefix}:*", count=1000))
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
    sizes: dict[str, float] = {}
    for name, size in zip(names, pipe.execute()):
        group = _group(name.decode()[len(prefix) + 1:])
        if group != "record":
            sizes[group] = sizes.get(group, 0) + size / records
    record = f"{prefix}:{first}"
    encoding = conn.object("encoding", record)
    return int(conn.memory_usage(record, samples=0) or 0), (encoding or b"?").decode(), sizes


def _relative(snap: dict[bytes, Any], records: bool) -> dict[bytes, Any]:
    """The record hashes (``records``) or the other keys of a snapshot."""
    return {name: value for name, value in snap.items() if (value[0] == b"hash") == records}


def _check_layouts(snaps: dict[str, dict[bytes, Any]]) -> list[str]:
    """Raise if a hand-written layout is not what it claims; return how (e) differs from (b)."""
    if snaps["c"] != snaps["d"]:
        raise RuntimeError("memory: the same-layout program (c) did not write repocket's keys and bytes (d)")
    if _relative(snaps["b"], False) != _relative(snaps["d"], False):
        raise RuntimeError("memory: layout (b) did not write the index keys repocket writes (d)")
    if _relative(snaps["a"], True) != _relative(snaps["b"], True):
        raise RuntimeError("memory: layouts (a) and (b) wrote different record hashes")
    notes = []
    if "e" in snaps:
        if _relative(snaps["e"], False) != _relative(snaps["b"], False):
            notes.append("(e) wrote other index keys than (b)")
        ours = {name: (kind, {k: v for k, v in content.items() if k != b"id"})
                for name, (kind, content) in _relative(snaps["e"], True).items()}
        extra = {k for _, content in _relative(snaps["e"], True).values() for k in content} - {f.encode() for f in FIELDS}
        if ours != _relative(snaps["b"], True):
            notes.append("the hashes of (e) hold other values than those of (b)")
        if extra:
            fields = ", ".join(f"``{k.decode()}``" for k in sorted(extra))
            notes.append(f"(e) also keeps {fields} in its hash, where (b) has the id in the key only")
    return notes


def measure_config(server_url: str, config: str, ids: Sequence[str], rows: Sequence[dict[str, Any]],
                   check: bool, log: Callable[[str], None]) -> tuple[dict[str, LayoutMemory], list[str], int]:
    """Every layout on one server; the check's notes (with ``check``) and its hash-max-ziplist-value."""
    conn = redis.Redis.from_url(server_url)
    writer = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(server_url, max_connections=1))
    try:
        hash_max = int(conn.config_get("hash-max-ziplist-value")["hash-max-ziplist-value"])
        prefix = Student._meta.prefix
        writers: dict[str, tuple[str, Any]] = {
            "a": (prefix, write_minimal),
            "b": (prefix, write_plain_indexed),
            "c": (prefix, write_same_layout),
            "d": (prefix, write_model(Student)),
            "e": (PlainStudent._meta.prefix, write_model(PlainStudent)),
        }
        # load the scripts first: the script cache survives FLUSHALL and is not the records' memory
        warm_ids, warm_rows = make_rows(1, seed=12)
        for model in (Student, PlainStudent):
            write_model(model)(writer, model._meta.prefix, warm_ids, warm_rows)
        out: dict[str, LayoutMemory] = {}
        snaps: dict[str, dict[bytes, Any]] = {}
        for layout, (layout_prefix, write) in writers.items():
            conn.flushall()
            before = settled_memory(conn, writer)
            write(writer, layout_prefix, ids, rows)
            after = settled_memory(conn, writer)
            record, encoding, index = _usage(conn, layout_prefix, len(ids), ids[0])
            out[layout] = LayoutMemory(LAYOUTS[layout], (after - before) / len(ids), record, encoding, index)
            if check:
                snaps[layout] = snapshot(conn, layout_prefix)
            log(f"  memory, {config} configuration: {LAYOUTS[layout]}: {out[layout].per_record:.0f} B per record")
        conn.flushall()
        notes = _check_layouts(snaps) if check else []
        return out, notes, hash_max
    finally:
        writer.close()
        conn.close()


def measure_memory(log: Callable[[str], None], records: int = RECORDS) -> MemoryReport:
    """Start a server configured like the embedded one and one with Redis's defaults; measure both."""
    ids, rows = make_rows(records)
    layouts: dict[str, dict[str, LayoutMemory]] = {}
    configs: dict[str, int] = {}
    notes: list[str] = []
    for config, hash_max_value in (("embedded", EMBEDDED_HASH_MAX_VALUE), ("default", None)):
        server = RedisServer(hash_max_value=hash_max_value)
        try:
            server.start()
            layouts[config], found, configs[config] = measure_config(
                server.url, config, ids, rows, check=config == "embedded", log=log
            )
            notes += found
        finally:
            server.stop()
    return MemoryReport(records, configs, layouts, notes)


# -- output ------------------------------------------------------------------------------


def _cells(report: MemoryReport, config: str, layout: str) -> list[str]:
    item = report.layouts[config][layout]
    ratio = report.ratio(config, layout)
    return [
        f"{item.per_record:.0f}",
        "—" if ratio is None else f"{ratio:.2f}",
        f"{item.record}",
        item.encoding,
        *(f"{item.index.get(name, 0):.0f}" for name in ("ids", *INDEXED)),
    ]


def _verdict(report: MemoryReport, config: str, layout: str) -> str:
    target, configs = TARGETS.get(layout, (None, ()))
    ratio = report.ratio(config, layout)
    if target is None or config not in configs or ratio is None:
        return ""
    return f"≤{target}  {'ok' if ratio <= target else 'MISSED'}"


def memory_table(report: MemoryReport) -> str:
    """The terminal's memory tables, one per configuration."""
    lines = [
        f"Memory: {report.records:,} records of Student (6 fields; house and age indexed), each layout alone",
        "in a flushed database; B/record = (used_memory - mem_clients_normal) after - before, / records;",
        "hash = MEMORY USAGE of one record hash; ids, house, age = MEMORY USAGE of each index's keys / records.",
    ]
    for config, hash_max in report.configs.items():
        lines += [
            "",
            f"{config} configuration (hash-max-ziplist-value {hash_max}):",
            f"  {'layout':<32} {'B/record':>8} {'×(b)':>5} {'hash':>5}  {'encoding':<10}"
            f" {'ids':>4} {'house':>5} {'age':>4}  target",
        ]
        for layout, label in LAYOUTS.items():
            c = _cells(report, config, layout)
            lines.append(f"  {label:<32} {c[0]:>8} {c[1]:>5} {c[2]:>5}  {c[3]:<10} {c[4]:>4} {c[5]:>5} {c[6]:>4}"
                         f"  {_verdict(report, config, layout)}".rstrip())
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def memory_page(report: MemoryReport | None) -> str:
    """The memory part of the docs page ("" when memory was not measured)."""
    if report is None:
        return ""
    from benchmarks.common import fill

    parts = [fill(
        f"Memory per record: {report.records:,} records of a model with six fields (``house`` and ``age``"
        " indexed), each layout alone in a flushed database. Bytes per record is ``used_memory`` minus"
        " ``mem_clients_normal`` after the writes, minus the same before, divided by the records; hash is the"
        " ``MEMORY USAGE`` of one record hash and encoding its ``OBJECT ENCODING``; ids, house and age give the"
        " ``MEMORY USAGE`` of each index's keys per record. The target is the largest acceptable multiple of"
        " layout (b)."
    )]
    for config, hash_max in report.configs.items():
        table = [["layout", "B per record", "× (b)", "hash", "encoding", "ids", "house", "age", "target"]]
        for layout, label in LAYOUTS.items():
            target, configs = TARGETS.get(layout, (None, ()))
            table.append([label, *_cells(report, config, layout),
                          f"≤{target}" if target is not None and config in configs else "—"])
        parts.append(f"With ``hash-max-ziplist-value {hash_max}`` ({config} configuration):")
        parts.append(rst_table(table))
    if report.notes:
        parts.append(fill("Notes: " + "; ".join(report.notes) + "."))
    return "\n\n".join(parts)
