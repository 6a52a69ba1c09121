"""Converting a model's stored records from one storage format to the other.

:func:`migrate_format` walks the id set and rewrites each record's hash fields
in the target format (:mod:`repocket.formats`); the values, and so the index
entries, do not change. Each batch is one call of the ``write`` script, every
field guarded, so a record changed meanwhile is re-read and converted from
what it holds. It is resumable and idempotent: the ids converted so far are
kept in ``<prefix>:_migrating:<format>`` (added in the same script call as
the conversion), so every record's current format is known exactly, even for
text that would read in either format; when the walk ends,
``<prefix>:_format`` records the format of every record and the set is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from repocket import keys
from repocket.formats import FORMATS, Format
from repocket.indexes import WritePlan
from repocket.plan import load
from repocket.plan.rounds import Pipeline, Plan, command, one
from repocket.plan.write import WriteJob, _guard, _new_plan, run_writes

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["migrate_format"]


def migrate_format(meta: ModelOptions, target: Format, batch_size: int = 500,
                   progress: Callable[[int, int], None] | None = None) -> Plan[int]:
    """Store every record of the model in ``target``; returns how many records were rewritten.

    A record whose field is readable in neither format raises CorruptRecordError
    naming it; the records converted until then stay converted, and running
    again resumes.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if meta.partitioned:  # partition after partition, each resumable on its own (progress counts per partition)
        rewritten = 0
        for view in meta.views():
            rewritten += yield from migrate_format(view, target, batch_size, progress)
        return rewritten
    other = next(f for f in FORMATS.values() if f is not target)
    format_key = keys.format_key(meta.prefix)
    done_key, other_key = keys.migrating_key(meta.prefix, target.name), keys.migrating_key(meta.prefix, other.name)
    marker, pending_here, pending_other = yield Pipeline(
        [command("GET", format_key), command("EXISTS", done_key), command("EXISTS", other_key)], False, meta.label)
    base = FORMATS.get((marker or b"envelope").decode(), FORMATS["envelope"])
    if base is target and not pending_here and not pending_other:
        return 0  # converted already
    total = (yield one("SCARD", meta.ids_key, label=meta.label))[0]
    seen = rewritten = 0
    cursor: Any = 0
    while True:
        cursor, ids = (yield one("SSCAN", meta.ids_key, cursor, "COUNT", batch_size, label=meta.label))[0]
        ids = [pk.decode() for pk in ids]
        if ids:
            rewritten += yield from _convert(meta, ids, base, target, other, done_key, other_key)
            seen += len(ids)
            if progress is not None:
                progress(min(seen, total), total)
        if int(cursor) == 0:
            break
    yield Pipeline([command("SET", format_key, target.name), command("DEL", done_key, other_key)], True, meta.label)
    return rewritten


def _convert(meta: ModelOptions, ids: list[str], base: Format, target: Format, other: Format,
             done_key: str, other_key: str) -> Plan[int]:
    """Convert the records ``ids`` that are not in ``target`` yet, in one script call."""
    in_done, in_other = yield Pipeline([command("SMISMEMBER", done_key, *ids),
                                        command("SMISMEMBER", other_key, *ids)], False, meta.label)
    todo = []
    for pk, done, elsewhere in zip(ids, in_done, in_other):
        current = target if done else other if elsewhere else base
        if current is not target:
            todo.append((pk, current))
    if not todo:
        return 0
    fetched = yield from load.fetch([(meta, meta.key(pk)) for pk, _ in todo], None)
    jobs = [WriteJob(_converter(meta, pk, source, target, done_key, other_key), raw[0])
            for (pk, source), raw in zip(todo, fetched) if raw is not None]  # (None: deleted meanwhile)
    yield from run_writes(meta, jobs)
    return len(jobs)


def _converter(meta: ModelOptions, pk: str, source: Format, target: Format,
               done_key: str, other_key: str) -> Callable[[WriteJob], WritePlan]:
    def make_plan(job: WriteJob) -> WritePlan:
        plan = _new_plan(meta, pk)
        if job.known_old is None:  # deleted meanwhile: nothing to convert
            return plan
        plan.check("exists")
        record = meta.key(pk)
        for name, attr in meta.hash_fields:
            field = name.encode()
            raw = job.known_old.get(field)
            if raw is None:
                value = source.absent(attr)
            else:
                value, problem = source.decode(meta, attr, name, raw)
                if problem is not None and target.decode(meta, attr, name, raw)[1] is None:
                    continue  # written in the target format already (by code declaring it)
                if problem is not None:
                    load.decode_field(meta, attr, record, name, raw)  # raises CorruptRecordError
            new = target.encode(attr, value)
            if new == raw:  # (absent in both: a None in the plain format)
                continue
            _guard(plan, name, raw)
            if new is None:
                plan.write("hdel", field)
            else:
                plan.write("hset", field, new)
        plan.write("sadd", plan.slot(done_key, "s"), pk)
        plan.write("srem", plan.slot(other_key, "s"), pk)
        return plan

    return make_plan
