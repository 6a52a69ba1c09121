"""Rebuilding and auditing a model's bookkeeping keys: the plans of ``reindex()`` and ``check()``.

Both find the model's records by SCAN over its key prefix (glob characters
escaped), not through the id set, so they also adopt records written by the
original repocket, which kept no id set. Planning only (see :mod:`repocket.plan`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from repocket import errors, indexes, keys
from repocket.attributes import Reference
from repocket.plan import claims, expiry, intents, load, relations, write
from repocket.plan.rounds import Command, Pipeline, Plan, command, one

if TYPE_CHECKING:
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

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
    #: Keys of records past their deadline (``Meta.ttl``) whose entries await a purge. They are gone for
    #: every read already, so they are no problem (not counted by ``len``); repair purges them.
    expired: list[str] = field(default_factory=list)
    #: ``(intents key, token)`` deletes on a cluster that stopped halfway (repocket/plan/intents.py):
    #: repair completes them.
    unfinished_deletes: list[tuple[str, str]] = field(default_factory=list)
    #: How many records store each hash field that no attribute declares (one removed or renamed since
    #: they were written; docs/evolution.rst). Reads ignore them and saves keep them, so they are no
    #: problem (not counted by ``len``): ``repocket migrate --drop``/``--rename`` deals with them.
    undeclared_fields: dict[str, int] = field(default_factory=dict)
    repaired: bool = False

    def __len__(self) -> int:
        return (
            len(self.missing_entries) + len(self.stale_entries) + len(self.orphan_streams)
            + len(self.broken_pointers) + len(self.corrupt_records) + len(self.wrong_type_keys)
            + len(self.unfinished_deletes)
        )

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return len(self) == 0


def _scan_keys(meta: ModelOptions) -> Plan[list[str]]:
    """Every key under the model's prefix (SCAN, 1000 at a time)."""
    pattern = keys.escape_glob(meta.prefix + ":") + "*"
    found: list[str] = []
    cursor = 0
    while True:
        cursor, batch = (yield one("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, key=meta.prefix,
                                   label=meta.label))[0]
        found.extend(key.decode() if isinstance(key, bytes) else key for key in batch)
        if int(cursor) == 0:
            return found


def _classify(meta: ModelOptions) -> Plan[tuple[list[str], list[str], list[str]]]:
    """Record keys, ByteStream keys and bookkeeping keys under the model's prefix (every partition's)."""
    if meta.partitioned:  # partition after partition, each SCAN on the node holding its slot
        records_, streams_, bookkeeping_ = [], [], []
        for view in meta.views():
            found = yield from _classify(view)
            records_ += found[0]
            streams_ += found[1]
            bookkeeping_ += found[2]
        return records_, streams_, bookkeeping_
    records, streams, bookkeeping = [], [], []
    start = len(meta.prefix) + 1
    for key in sorted(set((yield from _scan_keys(meta)))):  # SCAN may return a key twice
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
    meta = meta.for_pk(pk)
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


def _load_batch(meta: ModelOptions, batch: list[str],
                report: CheckReport | None) -> Plan[list[tuple[str, ActiveRecord]]]:
    """The readable records of ``batch`` with their Pointers left as stored keys."""
    out = []
    pending: load.Pending = []
    declared = {name.encode() for name, _ in meta.hash_fields}
    for key, fetched in (yield from _fetch_each(meta, batch, report)):
        if fetched is None:
            continue
        if report is not None:
            _count_undeclared(fetched[0], declared, report.undeclared_fields)
        try:
            out.append((key, load.build(meta, key, fetched, pending)))
        except errors.CorruptRecordError as exc:
            if report is None:
                raise
            report.corrupt_records.append((key, str(exc)))
    for instance, name, target, position in pending:
        load.place(instance, name, position, target)  # index entries need only the stored key
    if report is not None and pending:
        yield from _check_pointers(meta, pending, report)
    return out


def _count_undeclared(stored: dict[Any, Any], declared: set[bytes], counts: dict[str, int]) -> None:
    """Count the record's hash fields that no attribute declares (repocket's own start with ``_``)."""
    for name in stored:
        name = name if isinstance(name, bytes) else name.encode()
        if name not in declared and not name.startswith(b"_"):
            text = name.decode("utf-8", "backslashreplace")
            counts[text] = counts.get(text, 0) + 1


def _fetch_each(meta: ModelOptions, batch: list[str],
                report: CheckReport | None) -> Plan[list[tuple[str, load.Fetched | None]]]:
    """Fetch a batch in one round trip; when a key is of the wrong type, record by record."""
    try:
        return list(zip(batch, (yield from load.fetch([(meta, k) for k in batch]))))
    except errors.CorruptRecordError:
        if report is None:
            raise
    out: list[tuple[str, load.Fetched | None]] = []
    for key in batch:
        try:
            out.append((key, (yield from load.fetch([(meta, key)]))[0]))
        except errors.CorruptRecordError as exc:
            report.corrupt_records.append((key, str(exc)))
    return out


def _target_model(meta: ModelOptions, name: str) -> type[ActiveRecord]:
    """The model the Pointer or PointerList ``name`` aims at."""
    return cast("Reference[Any]", meta.fields[name]).to_model


def _check_pointers(meta: ModelOptions, pending: load.Pending, report: CheckReport) -> Plan[None]:
    """Report the pointers whose target is missing, or past its deadline (which reads as missing)."""
    targets = sorted({(target, _target_model(meta, name)._meta.expiring) for _, name, target, _ in pending})
    reads = [expiry.ttl_command(t) if expiring else command("EXISTS", t) for t, expiring in targets]
    replies = yield Pipeline(reads, False, meta.label)
    alive = {target: (int(reply) != -2 and not expiry.is_past(int(reply))) if expiring else bool(reply)
             for (target, expiring), reply in zip(targets, replies)}
    for instance, name, target, _ in pending:
        if not alive[target]:
            report.broken_pointers.append((instance._key(), name, target))


def reindex(model: type[ActiveRecord], batch_size: int = 500,
            progress: Callable[[int, int], None] | None = None) -> Plan[int]:
    """Add every stored record to the id set and its index entries, ``batch_size`` at a time.

    Idempotent: entries already present are left as they are. Stale entries
    (for values no record holds any more) are removed by ``check(repair=True)``.
    """
    meta = model._meta
    record_keys, _, _ = yield from _classify(meta)
    done = 0
    for start in range(0, len(record_keys), batch_size):
        batch = yield from _load_batch(meta, record_keys[start:start + batch_size], None)
        adds = [_add(entry_key, kind, member, score)
                for _key, record in batch
                for entry_key, kind, member, score in _expected_entries(meta, record, str(record.pk))]
        if adds:
            yield Pipeline(adds, False, meta.label)
        done += len(batch)
        if progress is not None:
            progress(done, len(record_keys))
    return done


def _add(key: str, kind: str, member: Any, score: str) -> Command:
    if kind == "s":
        return command("SADD", key, member)
    if kind == "z":
        return command("ZADD", key, score, member)
    return command("HSET", key, member, score)


def check(model: type[ActiveRecord], repair: bool = False) -> Plan[CheckReport]:
    """Compare the id set and every index with the stored records; optionally fix them."""
    meta = model._meta
    report = CheckReport(model=meta.label)
    if keys.LAYOUT.cluster:  # (first: completing them changes what follows)
        unfinished = yield from intents.pending(meta.views(), meta.label)
        report.unfinished_deletes = [(keys.intents_key(view.prefix), token) for view, token, _ in unfinished]
        if repair and unfinished:
            yield from relations.complete(meta, unfinished)
            report.repaired = True
    record_keys, stream_keys, bookkeeping = yield from _classify(meta)
    live = set(record_keys)
    report.orphan_streams = sorted(k for k in stream_keys if k.split(":field:")[0] not in live)
    expected: dict[tuple[str, str], tuple[str, str]] = {}
    for start in range(0, len(record_keys), 500):
        batch = yield from _load_batch(meta, record_keys[start:start + 500], report)
        report.records += len(batch)
        for _, record in batch:
            for key, kind, member, score in _expected_entries(meta, record, str(record.pk)):
                expected[(key, member)] = (kind, score)
    actual = yield from _read_bookkeeping(meta, bookkeeping, report)
    expired = (yield from _past_deadline(meta)) if meta.expiring else {}
    loaded = {pk for (key, pk) in expected if key.endswith(":_ids")}
    for entry, (kind, score) in expected.items():
        if entry not in actual or (kind == "h" and actual[entry][1] != score) or (
            kind == "z" and float(actual[entry][1]) != float(score)
        ):
            report.missing_entries.append(entry)
    unreadable = {key.rpartition(":")[2] for key, _ in report.corrupt_records}
    report.stale_entries = sorted(
        entry for entry, (kind, value) in actual.items()
        if (entry not in expected or (kind == "h" and expected[entry][1] != value))
        and _owner(entry[1], kind, value) not in unreadable  # a record we could not read keeps its entries
        and _owner(entry[1], kind, value) not in expired  # nor does one past its deadline, until purged
        and not (_tail(meta, entry[0]) == "_expiry" and entry[1] in loaded)  # (a live record's deadline)
    )
    report.missing_entries.sort()
    report.expired = sorted(expired.values())
    if repair and expired:
        report.repaired = (yield from _purge_expired(meta, expired, live, actual)) or report.repaired
    if repair and (report.missing_entries or report.stale_entries or report.wrong_type_keys):
        fixes = [command("DEL", key) for key, _ in report.wrong_type_keys]
        for key, member in report.stale_entries:
            kind = actual[(key, member)][0]
            raw = member.encode("utf-8", "surrogateescape")
            fixes.append(command({"s": "SREM", "z": "ZREM"}.get(kind, "HDEL"), key, raw))
        for key, member in report.missing_entries:
            kind, score = expected[(key, member)]
            fixes.append(_add(key, kind, member, score))
        yield Pipeline(fixes, False, meta.label)
        report.repaired = True
    if repair and report.broken_pointers:
        report.repaired = (yield from _null_broken_pointers(meta, report.broken_pointers)) or report.repaired
    if meta.partitioned and meta.unique:
        holders = {(key.rsplit(":", 1)[1], member): score for (key, member), (kind, score) in expected.items()
                   if kind == "h"}
        report.repaired = (yield from _check_claims(meta, holders, report, repair, expired)) or report.repaired
    report.undeclared_fields = dict(sorted(report.undeclared_fields.items()))
    return report


def _past_deadline(meta: ModelOptions) -> Plan[dict[str, str]]:
    """The records past their deadline, by the server's clock: ``{id: record key}``, every partition's."""
    views = meta.views()
    out = {}
    for view, due in zip(views, (yield expiry.due_reads(views, -1, meta.label))):
        for raw in due:
            pk = raw.decode("utf-8", "surrogateescape")
            out[pk] = view.key(pk)
    return out


def _purge_expired(meta: ModelOptions, expired: dict[str, str], stored: set[str],
                   actual: dict[tuple[str, str], tuple[str, str]]) -> Plan[bool]:
    """Purge the records past their deadline; for those whose key Redis deleted already (the grace
    over, so their values are unknown) remove the entries naming them, as stale ones are."""
    by_view: dict[str, tuple[ModelOptions, list[str]]] = {}
    for pk, key in expired.items():
        if key in stored:
            view = meta.for_pk(pk)
            by_view.setdefault(view.prefix, (view, []))[1].append(pk)
    for view, pks in by_view.values():
        for start in range(0, len(pks), expiry.PURGE_BATCH):
            yield from expiry.purge(view, pks[start:start + expiry.PURGE_BATCH])
    gone = {pk for pk, key in expired.items() if key not in stored}
    fixes = [command({"s": "SREM", "z": "ZREM"}.get(kind, "HDEL"), key, member.encode("utf-8", "surrogateescape"))
             for (key, member), (kind, value) in actual.items() if _owner(member, kind, value) in gone]
    if fixes:
        yield Pipeline(fixes, False, meta.label)
    return True


def _check_claims(meta: ModelOptions, holders: dict[tuple[str, str], str], report: CheckReport,
                  repair: bool, expired: dict[str, str]) -> Plan[bool]:
    """Compare a spread model's unique claims with the records holding the values (repocket/plan/claims.py).

    A claim nobody holds is stale (a writer stopped between its steps); a value
    held without its claim is missing. Repair releases the first, settling each
    in its claimant's partition first, and claims the second for its holder.
    """
    buckets = [(name, keys.claims_key(meta.standalone_prefix, name, bucket))
               for name in meta.unique for bucket in range(keys.CLAIM_BUCKETS)]
    replies = yield Pipeline([command("HGETALL", key) for _, key in buckets], False, meta.label)
    claimed: dict[tuple[str, str], str] = {}
    stale: list[tuple[str, str, str]] = []
    for (name, key), reply in zip(buckets, replies):
        for raw_token, raw_claim in reply.items():
            token, owner = raw_token.decode("utf-8", "surrogateescape"), raw_claim.decode().partition(" ")[0]
            claimed[(name, token)] = owner
            if holders.get((name, token)) != owner and owner not in expired:  # (its purge releases it)
                report.stale_entries.append((key, token))
                stale.append((name, token, owner))
    missing = [(name, token, pk) for (name, token), pk in holders.items() if claimed.get((name, token)) != pk]
    report.missing_entries.extend((claims.claims_key(meta, name, token), token) for name, token, _ in missing)
    if not repair or not (stale or missing):
        return False
    for name, token, owner in stale:
        yield from claims.release(meta, name, token, owner)
    for name, token, pk in missing:
        try:
            yield from claims.take(meta, [claims.Claim(name, token, pk, token, secrets.token_hex(8))])
        except errors.UniqueConstraintError:
            pass  # two records hold the value: left for the application, and reported again
    return True


def _null_broken_pointers(meta: ModelOptions, broken: list[tuple[str, str, str]]) -> Plan[bool]:
    """The repair rule for broken pointers: a ``null=True`` one is set to None (which is how it
    reads already), through the write script so its index stays exact; a ``null=False`` one is
    left for the application to decide (delete the record, or point it elsewhere)."""
    nullable = [(key, name) for key, name, _ in broken if meta.fields[name].null]
    for key, name in nullable:
        record = (yield from load.load(meta, [key]))[0]
        if record is None:
            continue  # deleted since
        record._data[name] = None
        yield from write.save(meta, [record], fields=[name])
    return bool(nullable)


_BOOKKEEPING_TYPES = {"_ids": "set", "_eq": "set", "_null": "set", "_sort": "zset", "_lex": "zset", "_unique": "hash",
                      "_expiry": "zset"}


def _owner(member: str, kind: str, value: str) -> str:
    """The id an index entry belongs to."""
    if kind == "h":
        return value
    return member.rsplit("\x00", 1)[-1]


def _tail(meta: ModelOptions, key: str) -> str:
    """What follows the prefix (of the key's partition) in one of the model's keys."""
    return key.split("}:", 1)[1] if meta.partitioned else key[len(meta.prefix) + 1:]


def _read_bookkeeping(meta: ModelOptions, bookkeeping: list[str],
                      report: CheckReport) -> Plan[dict[tuple[str, str], tuple[str, str]]]:
    """Every entry of the id set and index keys: ``(key, member) -> (kind, score or value)``."""
    if not bookkeeping:
        return {}
    kinds = yield Pipeline([command("TYPE", key) for key in bookkeeping], False, meta.label)
    reads: list[Command] = []
    typed = []
    for key, kind in zip(bookkeeping, kinds):
        kind = kind.decode() if isinstance(kind, bytes) else kind
        expected = _BOOKKEEPING_TYPES.get(_tail(meta, key).split(":", 1)[0])
        if expected is None:
            continue  # not a key repocket writes
        if kind != expected:
            report.wrong_type_keys.append((key, kind))
            continue
        if kind == "set":
            reads.append(command("SMEMBERS", key))
        elif kind == "zset":
            reads.append(command("ZRANGE", key, 0, -1, "WITHSCORES", withscores=True))
        else:
            reads.append(command("HGETALL", key))
        typed.append((key, kind))
    replies = (yield Pipeline(reads, False, meta.label)) if reads else []
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (key, kind), reply in zip(typed, replies):
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
