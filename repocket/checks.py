"""Rebuilding and auditing a model's bookkeeping keys: ``reindex()`` and ``check()``.

Both find the model's records by SCAN over its key prefix (glob characters
escaped), not through the id set, so they also adopt records written by the
original repocket, which kept no id set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from repocket import errors, indexes, keys, store
from repocket.connections import configure

if TYPE_CHECKING:
    import redis

    from repocket.model import ActiveRecord, ModelOptions

__all__ = ["CheckReport", "check", "reindex"]


@dataclass
class CheckReport:
    """What ``Model.objects.check()`` found. Empty (``len(report) == 0``) when all is consistent."""

    model: str
    records: int = 0
    #: ``(key, member)`` index or id-set entries a record needs but Redis lacks.
    missing_entries: list[tuple[str, str]] = field(default_factory=list)
    #: ``(key, member)`` entries Redis holds that no record needs.
    stale_entries: list[tuple[str, str]] = field(default_factory=list)
    #: ByteStream strings whose record hash is gone.
    orphan_streams: list[str] = field(default_factory=list)
    #: ``(record key, field, target key)`` Pointers to records that do not exist.
    broken_pointers: list[tuple[str, str, str]] = field(default_factory=list)
    #: ``(record key, message)`` records that cannot be read.
    corrupt_records: list[tuple[str, str]] = field(default_factory=list)
    #: ``(key, type)`` id-set or index keys holding the wrong Redis type (repair deletes and rebuilds them).
    wrong_type_keys: list[tuple[str, str]] = field(default_factory=list)
    repaired: bool = False

    def __len__(self) -> int:
        return (
            len(self.missing_entries) + len(self.stale_entries) + len(self.orphan_streams)
            + len(self.broken_pointers) + len(self.corrupt_records) + len(self.wrong_type_keys)
        )

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return len(self) == 0


def _scan_keys(conn: redis.Redis, meta: ModelOptions) -> Iterator[str]:
    pattern = keys.escape_glob(meta.prefix + ":") + "*"
    for key in conn.scan_iter(match=pattern, count=1000):
        yield key.decode() if isinstance(key, bytes) else key


def _classify(conn: redis.Redis, meta: ModelOptions) -> tuple[list[str], list[str], list[str]]:
    """Record keys, ByteStream keys and bookkeeping keys under the model's prefix."""
    records, streams, bookkeeping = [], [], []
    start = len(meta.prefix) + 1
    for key in _scan_keys(conn, meta):
        tail = key[start:]
        if tail.startswith("_"):
            bookkeeping.append(key)
        elif ":field:" in tail:
            streams.append(key)
        else:
            try:
                meta.parse_key(key)
            except ValueError:
                continue  # another model's key sharing the prefix text
            records.append(key)
    return records, streams, bookkeeping


def _expected_entries(meta: ModelOptions, record: ActiveRecord, pk: str) -> Iterator[tuple[str, str, str, str]]:
    """``(key, kind, member, score)`` of every index entry a record needs (kind s, z or h)."""
    yield meta.ids_key, "s", pk, ""
    for name in meta.indexed:
        value = record._data[name]
        for key, kind, args in indexes.entries(meta, name, value, pk):
            if kind == "s":
                yield key, "s", args[0], ""
            else:
                yield key, "z", args[-1], args[0] if kind == "z" else "0"
        if meta.fields[name].unique and value is not None:
            yield keys.unique_key(meta.prefix, name), "h", meta.fields[name].index_token(value), pk


def _load_batches(conn: redis.Redis, meta: ModelOptions, record_keys: list[str], batch_size: int,
                  report: CheckReport | None) -> Iterator[list[tuple[str, ActiveRecord]]]:
    for start in range(0, len(record_keys), batch_size):
        batch = record_keys[start:start + batch_size]
        out = []
        pending: store.Pending = []
        for key, fetched in _fetch_each(conn, meta, batch, report):
            if fetched is None:
                continue
            try:
                out.append((key, store.build(meta, key, fetched, pending)))
            except errors.CorruptRecordError as exc:
                if report is None:
                    raise
                report.corrupt_records.append((key, str(exc)))
        for instance, name, target in pending:
            instance._data[name] = target  # index entries need only the stored key
        if report is not None and pending:
            _check_pointers(conn, pending, report)
        yield out


def _fetch_each(conn: redis.Redis, meta: ModelOptions, batch: list[str],
                report: CheckReport | None) -> list[tuple[str, store.Fetched | None]]:
    """Fetch a batch in one round trip; when a key is of the wrong type, record by record."""
    try:
        return list(zip(batch, store.fetch(conn, [(meta, k) for k in batch])))
    except errors.CorruptRecordError:
        if report is None:
            raise
    out: list[tuple[str, store.Fetched | None]] = []
    for key in batch:
        try:
            out.append((key, store.fetch(conn, [(meta, key)])[0]))
        except errors.CorruptRecordError as exc:
            report.corrupt_records.append((key, str(exc)))
    return out


def _check_pointers(conn: redis.Redis, pending: store.Pending, report: CheckReport) -> None:
    targets = sorted({target for _, _, target in pending})
    pipe = conn.pipeline(transaction=False)
    for target in targets:
        pipe.exists(target)
    alive = dict(zip(targets, pipe.execute()))
    for instance, name, target in pending:
        if not alive[target]:
            report.broken_pointers.append((instance._key(), name, target))


def reindex(model: type[ActiveRecord], *, batch_size: int = 500,
            progress: Callable[[int, int], None] | None = None,
            connection: redis.Redis | None = None) -> int:
    """Add every stored record to the id set and its index entries, ``batch_size`` at a time.

    Idempotent: entries already present are left as they are. Stale entries
    (for values no record holds any more) are removed by ``check(repair=True)``.
    """
    meta = model._meta
    conn = connection or configure.get_connection()
    try:
        record_keys, _, _ = _classify(conn, meta)
        done = 0
        for batch in _load_batches(conn, meta, record_keys, batch_size, None):
            pipe = conn.pipeline(transaction=False)
            for _key, record in batch:
                for entry_key, kind, member, score in _expected_entries(meta, record, str(record.pk)):
                    _add(pipe, entry_key, kind, member, score)
            pipe.execute()
            done += len(batch)
            if progress is not None:
                progress(done, len(record_keys))
    except RedisError as exc:
        raise store.wrap_redis_error(exc, meta, None) from exc
    return done


def _add(pipe: Any, key: str, kind: str, member: str, score: str) -> None:
    if kind == "s":
        pipe.sadd(key, member)
    elif kind == "z":
        pipe.zadd(key, {member: score})
    else:
        pipe.hset(key, member, score)


def check(model: type[ActiveRecord], *, repair: bool = False,
          connection: redis.Redis | None = None) -> CheckReport:
    """Compare the id set and every index with the stored records; optionally fix them."""
    meta = model._meta
    conn = connection or configure.get_connection()
    report = CheckReport(model=meta.label)
    try:
        record_keys, stream_keys, bookkeeping = _classify(conn, meta)
        live = set(record_keys)
        report.orphan_streams = sorted(k for k in stream_keys if k.split(":field:")[0] not in live)
        expected: dict[tuple[str, str], tuple[str, str]] = {}
        for batch in _load_batches(conn, meta, record_keys, 500, report):
            report.records += len(batch)
            for _, record in batch:
                for key, kind, member, score in _expected_entries(meta, record, str(record.pk)):
                    expected[(key, member)] = (kind, score)
        actual = _read_bookkeeping(conn, meta, bookkeeping, report)
        for entry, (kind, score) in expected.items():
            if entry not in actual or (kind == "h" and actual[entry][1] != score) or (
                kind == "z" and float(actual[entry][1]) != float(score)
            ):
                report.missing_entries.append(entry)
        unreadable = {key[len(meta.prefix) + 1:] for key, _ in report.corrupt_records}
        report.stale_entries = sorted(
            entry for entry, (kind, value) in actual.items()
            if (entry not in expected or (kind == "h" and expected[entry][1] != value))
            and _owner(entry[1], kind, value) not in unreadable  # a record we could not read keeps its entries
        )
        report.missing_entries.sort()
        if repair and (report.missing_entries or report.stale_entries or report.wrong_type_keys):
            pipe = conn.pipeline(transaction=False)
            for key, _ in report.wrong_type_keys:
                pipe.delete(key)
            for key, member in report.stale_entries:
                kind = actual[(key, member)][0]
                raw = member.encode("utf-8", "surrogateescape")
                if kind == "s":
                    pipe.srem(key, raw)
                elif kind == "z":
                    pipe.zrem(key, raw)
                else:
                    pipe.hdel(key, raw)
            for key, member in report.missing_entries:
                kind, score = expected[(key, member)]
                _add(pipe, key, kind, member, score)
            pipe.execute()
            report.repaired = True
        if repair and report.broken_pointers:
            report.repaired = _null_broken_pointers(conn, meta, report.broken_pointers) or report.repaired
    except RedisError as exc:
        raise store.wrap_redis_error(exc, meta, None) from exc
    return report


def _null_broken_pointers(conn: redis.Redis, meta: ModelOptions,
                          broken: list[tuple[str, str, str]]) -> bool:
    """The repair rule for broken pointers: a ``null=True`` one is set to None (which is how it
    reads already), through the write script so its index stays exact; a ``null=False`` one is
    left for the application to decide (delete the record, or point it elsewhere)."""
    nullable = [(key, name) for key, name, _ in broken if meta.fields[name].null]
    for key, name in nullable:
        record = store.load(conn, meta, [key])[0]
        if record is None:
            continue  # deleted since
        record._data[name] = None
        store.save_instances(conn, meta, [record], fields=[name])
    return bool(nullable)


_BOOKKEEPING_TYPES = {"_ids": "set", "_eq": "set", "_null": "set", "_sort": "zset", "_lex": "zset", "_unique": "hash"}


def _owner(member: str, kind: str, value: str) -> str:
    """The id an index entry belongs to."""
    if kind == "h":
        return value
    return member.rsplit("\x00", 1)[-1]


def _read_bookkeeping(conn: redis.Redis, meta: ModelOptions, bookkeeping: list[str],
                      report: CheckReport) -> dict[tuple[str, str], tuple[str, str]]:
    """Every entry of the id set and index keys: ``(key, member) -> (kind, score or value)``."""
    pipe = conn.pipeline(transaction=False)
    for key in bookkeeping:
        pipe.type(key)
    kinds = pipe.execute()
    pipe = conn.pipeline(transaction=False)
    typed = []
    start = len(meta.prefix) + 1
    for key, kind in zip(bookkeeping, kinds):
        kind = kind.decode() if isinstance(kind, bytes) else kind
        expected = _BOOKKEEPING_TYPES.get(key[start:].split(":", 1)[0])
        if expected is None:
            continue  # not a key repocket writes
        if kind != expected:
            report.wrong_type_keys.append((key, kind))
            continue
        if kind == "set":
            pipe.smembers(key)
        elif kind == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            pipe.hgetall(key)
        else:
            continue
        typed.append((key, kind))
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (key, kind), reply in zip(typed, pipe.execute()):
        if kind == "set":
            for member in reply:
                out[(key, member.decode("utf-8", "surrogateescape"))] = ("s", "")
        elif kind == "zset":
            for member, score in reply:
                out[(key, member.decode("utf-8", "surrogateescape"))] = ("z", repr(score))
        else:
            for member, value in reply.items():
                out[(key, member.decode("utf-8", "surrogateescape"))] = ("h", value.decode("utf-8", "surrogateescape"))
    return out
