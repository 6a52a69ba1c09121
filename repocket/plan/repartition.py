"""Moving a model's records into its current layout: the plan of ``repartition()``.

A *source* layout is where the records were written before: the standalone
one (``repocket:<ns>:<Model>``, ``from_partitions=None``) or the hash-tagged
one of another partition count ``N`` (``{repocket:<ns>:<Model>:<k>}`` for
``k < N``). Each source partition's id set is read with SSCAN, ``batch_size``
ids at a time, and each record found there that is not at its current key is
moved in three steps (a source partition may share its keys with a current
one: ``{...:3}`` is partition 3 of 4 and of 8, so only the records whose
current key differs are moved):

1. ``EXISTS`` at its current key: a record there already (moved by an earlier
   run cut short, or written since through the current layout) is kept as
   it is, and the source copy is only deleted;
2. the source record is loaded and written at its current key through the
   ``write`` script, with its ByteStreams and index entries (one call per
   target partition);
3. the source record, its strings and its entries in the source indexes are
   deleted through the ``write`` script, in one call per batch (the batch
   shares the source partition's slot), guarded on the values loaded in 2.

A run stopped anywhere leaves each record in its source, in both layouts
(after 2), or moved: running again resumes, and moves nothing twice.
Planning only (see :mod:`repocket.plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from repocket import errors, keys
from repocket.options import partition_of
from repocket.plan import expiry, load, write
from repocket.plan.rounds import Pipeline, Plan, command, one

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["repartition", "settle", "sources"]


def sources(meta: ModelOptions, from_partitions: int | str | None) -> list[ModelOptions]:
    """The source layout's partitions, as views of the model with their prefixes.

    ``from_partitions`` is "standalone", a partition count, or None: the
    model's ``Meta.moving_from``, else "standalone".
    """
    if from_partitions is None:
        from_partitions = meta.moving_from or "standalone"
    if from_partitions == "standalone":
        return [meta.with_prefix(meta.standalone_prefix)]
    if type(from_partitions) is not int or from_partitions < 1:
        raise ValueError(f"from_partitions must be 'standalone' or a partition count (an int from 1), "
                         f"not {from_partitions!r}")
    return [meta.with_prefix(keys.cluster_prefix(meta.standalone_prefix, number)) for number in range(from_partitions)]


def repartition(meta: ModelOptions, from_partitions: int | str | None = None, batch_size: int = 500,
                progress: Callable[[int, int], None] | None = None) -> Plan[int]:
    """Move every record of the source layout to its current key; returns how many were moved."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    origins = sources(meta, from_partitions)
    if [source.prefix for source in origins] == [view.prefix for view in meta.views()]:
        return 0  # the current layout itself
    sizes = yield Pipeline([command("SCARD", source.ids_key) for source in origins], False, meta.label)
    total, seen, moved = sum(int(size) for size in sizes), 0, 0
    for source in origins:
        cursor: Any = 0
        while True:
            cursor, ids = (yield one("SSCAN", source.ids_key, cursor, "COUNT", batch_size, label=meta.label))[0]
            away = [pk.decode() for pk in ids if source.key(pk.decode()) != meta.key(pk.decode())]
            if away:
                moved += yield from _move(meta, source, away)
            seen += len(ids)
            if progress is not None:
                progress(min(seen, total), total)
            if int(cursor) == 0:
                break
    return moved


def _move(meta: ModelOptions, source: ModelOptions, ids: list[str]) -> Plan[int]:
    """Move the records ``ids`` of ``source``: write them at their current keys, then delete them there."""
    reads = [command("EXISTS", meta.key(pk)) for pk in ids]
    if meta.expiring:  # (a moved record keeps its deadline; one past it is purged, not moved)
        reads += [expiry.ttl_command(source.key(pk)) for pk in ids]
    replies = yield Pipeline(reads, False, meta.label)
    present, left = replies[:len(ids)], dict(zip(ids, (int(pttl) for pttl in replies[len(ids):])))
    if meta.expiring and any(expiry.is_past(pttl) for pttl in left.values()):
        yield from expiry.purge(source, [pk for pk, pttl in left.items() if expiry.is_past(pttl)])
    records = [r for r in (yield from load.load(source, [source.key(pk) for pk in ids]))
               if r is not None]  # (None: deleted since the id set was read)
    placed = {pk for pk, there in zip(ids, present) if there}
    fresh = [record for record in records if str(record.pk) not in placed]
    loaded = [(record._stored, record._stored_streams, record._version) for record in fresh]
    for record in fresh:  # a new record at its current key: written whole (a version counter starts again)
        record._stored, record._stored_streams, record._version = None, {}, None
        if meta.expiring:
            record._expire_next = expiry.kept(left.get(str(record.pk), -1))
    if fresh:
        yield from write.save(meta, fresh)
    for record, (hash_fields, streams, version) in zip(fresh, loaded):
        record._stored, record._stored_streams, record._version = hash_fields, streams, version  # the source's
    if records:
        yield from write.delete(source, records)
    return len(fresh)


def settle(meta: ModelOptions, instances: Sequence[Any], every: bool = False) -> Plan[None]:
    """Before a write during a move (``Meta.moving_from``): move to their current keys the records it touches.

    Those are the instances read from the source layout (``_origin``; every
    instance with ``every``, for a delete, an increment or an append, whose
    record may be in the source only) and the records of the source holding a
    unique value that an instance sets, so that the write's unique checks see
    them. The instances read from the source are then written at their current
    keys like any other; a versioned one takes its moved copy's version, or
    raises ConflictError when that copy no longer holds what it read.
    """
    origins = meta.sources()
    if not origins:
        return
    wanted: dict[int, set[str]] = {}
    for instance in instances:
        if every or instance._origin is not None:
            pk = str(instance._data[meta.pk])
            wanted.setdefault(partition_of(pk, len(origins)), set()).add(pk)
    holders = [(name, instance, origin) for instance in instances for name in meta.unique
               if instance._data.get(name) is not None and name not in instance._deferred for origin in origins]
    if holders:
        reads = [command("HGET", keys.unique_key(origin.prefix, name),
                         meta.fields[name].index_token(instance._data[name])) for name, instance, origin in holders]
        for (_, instance, origin), holder in zip(holders, (yield Pipeline(reads, False, meta.label))):
            if holder is not None and holder.decode() != str(instance._data[meta.pk]):
                wanted.setdefault(origins.index(origin), set()).add(holder.decode())
    for number, ids in sorted(wanted.items()):
        yield from _move(meta, origins[number], sorted(ids))
    rebased = [instance for instance in instances if instance._origin is not None]
    for instance in rebased:
        instance._origin = None
    if not rebased or not meta.versioned:
        return
    moved = yield from load.load(meta, [meta.key(instance._data[meta.pk]) for instance in rebased])
    for instance, copy in zip(rebased, moved):
        if copy is None:
            continue  # (deleted meanwhile: the write finds no record, as it would have without the move)
        read = {field: raw for field, raw in (instance._stored or {}).items() if field != b"_version"}
        if any((copy._stored or {}).get(field) != raw for field, raw in read.items()) or any(
                copy._stored_streams.get(name, b"") != raw for name, raw in instance._stored_streams.items()):
            raise errors.ConflictError(
                f"{meta.key(instance._data[meta.pk])} was changed by another writer since it was read (it has moved "
                "to its current key since); nothing was written: read it again")
        instance._version = copy._version  # (the move wrote it anew, with a version of its own)
