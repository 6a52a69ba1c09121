"""Records that expire (``Meta.ttl``, ``expire()``): deadlines, what reads see, and purges (planning only).

A record's deadline is set by the server's clock, in the write call itself
(the ``expire`` op of the ``write`` script). From that instant on the record
is gone for every read, and no read relies on keyspace notifications:

* **Reading a record** (``get``, every query's load, Pointer targets,
  reverse accessors) sends ``PTTL`` with its ``HGETALL``, in the same round
  trip. The key's TTL is the deadline plus :data:`GRACE_MS`, so a TTL under
  :data:`GRACE_MS` is a record past its deadline: it reads as missing.
* **Counting** (``count()``, ``exists()``) is one call of the ``count``
  script, which subtracts the ids past their deadline (from the partition's
  expiry sorted set, ``<prefix>:_expiry``, scored by deadline) from the sets'
  sizes. Aggregates read the records instead of the indexes.
* **Writes** refuse a record past its deadline (the ``alive`` check): the
  writer purges it, then writes its record anew.

During the grace the record's values are still stored, so a **purge** can
name its index entries and delete them with the record, in one write call:
the writes above, :func:`sweep` (bounded, ``Model.objects.purge_expired()``)
and ``check(repair=True)`` purge. A record left unpurged for the whole grace
is deleted by Redis itself; its index entries then stay (never counted or
returned: its id is still past its deadline in the expiry set) until
``check(repair=True)`` removes them. ByteStreams keep the record's TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from repocket import errors, keys
from repocket.plan.rounds import Command, Pipeline, Plan, script_read

if TYPE_CHECKING:
    from repocket.indexes import WritePlan
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = ["GRACE_MS", "PURGE_BATCH", "deadline_writes", "due_reads", "is_past", "kept", "purge", "remaining", "sweep"]

#: How long (ms) a record's key outlives its deadline, so that a purge can read its values
#: (``repocket/lua/lib.lua`` has the same number).
GRACE_MS = 3_600_000
#: The most records a bounded sweep purges per partition and call.
PURGE_BATCH = 100


def is_past(pttl: int) -> bool:
    """Whether a record key's PTTL says its record is past its deadline (its TTL is in the grace)."""
    return 0 <= pttl < GRACE_MS


def remaining(pttl: int) -> float | None:
    """Seconds to a record's deadline from its key's PTTL; None when it never expires."""
    if pttl == -1:
        return None
    return max(pttl - GRACE_MS, 0) / 1000


def kept(pttl: int) -> int | None:
    """The milliseconds a copy of a record is given so that it keeps the deadline its key's PTTL says
    (None: it has none), for a save's ``_expire_next``."""
    return None if pttl < 0 else max(pttl - GRACE_MS, 1)


def ttl_command(key: str) -> Command:
    """The ``PTTL`` read with a record of an expiring model."""
    return Command(("PTTL", key), key)


def milliseconds(meta: ModelOptions, seconds: Any) -> int:
    """``seconds`` as the whole milliseconds an ``expire`` op takes, checked."""
    from repocket.model import MAX_TTL

    if type(seconds) not in (int, float) or not 0.001 <= seconds <= MAX_TTL:
        raise errors.ValidationError(
            f"{meta.label}: an expiry is a number of seconds from 0.001 to {MAX_TTL}, not {seconds!r}",
            model=meta.label, field=None, value=seconds, expected="a number of seconds")
    return max(int(round(seconds * 1000)), 1)


def deadline_writes(plan: WritePlan, meta: ModelOptions, pk: str, record: str, ms: int | None | bool,
                    streams: Sequence[str]) -> None:
    """End ``plan`` with what its record's deadline needs: ``ms`` from now (an int), none (None: persist),
    or as it is (False); the ByteStreams ``streams`` it writes, or all of them with a new deadline,
    follow the hash's TTL (a SET clears a string's)."""
    expiry = plan.slot(meta.expiry_key, "z")
    if ms is None:
        plan.write("persist", expiry, pk)
    elif ms is not False:
        plan.write("expire", expiry, ms, pk)
    for name in meta.streams if ms is not False else streams:
        plan.write("follow", plan.slot(keys.stream_key(record, name), "t"))


def purge(meta: ModelOptions, pks: Sequence[str]) -> Plan[int]:
    """Delete the records ``pks`` of one partition (``meta``) that are past their deadline, with their
    index entries, ByteStreams and unique claims, in one write call; how many were purged.

    Their values are read during the grace (one round trip), so their index
    entries are known; one whose key Redis deleted already (the grace over)
    leaves its entries for ``check(repair=True)``. No hooks run: a purge is
    the end of a record that is gone already, not a delete.
    """
    from repocket.plan import write

    for _ in range(8):  # (a record purged and saved anew by others meanwhile: read again, without it)
        reads = [command for pk in pks for command in (Command(("HGETALL", meta.key(pk)), meta.key(pk)),
                                                        ttl_command(meta.key(pk)))]
        replies = yield Pipeline(reads, False, meta.label)
        doomed = []
        for pk, raw, pttl in zip(pks, replies[::2], replies[1::2]):
            if raw and not is_past(int(pttl)):
                continue  # (not past its deadline: saved anew since)
            instance = meta.model.__new__(meta.model)
            instance._data = {meta.pk: pk}
            instance._stored = raw or {}
            instance._stored_streams, instance._version = {}, None
            doomed.append(instance)
        if not doomed:
            return 0
        try:
            yield from write.run_writes(meta, write.delete_jobs(meta, doomed, _still_past))
        except write.NotDue:
            continue
        return len(doomed)
    return 0


def _still_past(plan: WritePlan, instance: ActiveRecord) -> None:
    plan.check("due")  # (refused when it was purged, and saved anew, by others since we read it)


def sweep(meta: ModelOptions, limit: int = PURGE_BATCH) -> Plan[int]:
    """Purge up to ``limit`` records past their deadline in each partition of ``meta``; how many."""
    views = meta.views()
    purged = 0
    for view, due in zip(views, (yield due_reads(views, limit, meta.label))):
        if due:
            purged += yield from purge(view, [pk.decode() for pk in due])
    return purged


def due_reads(views: Sequence[ModelOptions], limit: int, label: str) -> Pipeline:
    """One round reading, per partition of ``views``, up to ``limit`` ids past their deadline (-1: all),
    by the server's clock (the read-only ``due`` script; one request per node on a cluster)."""
    return Pipeline([script_read("due", [view.expiry_key], [limit]) for view in views], False, label)


def _expiring(meta: ModelOptions, what: str) -> None:
    if not meta.expiring:
        raise errors.ValidationError(
            f"{meta.label}: {what} needs a model whose records expire: declare Meta.ttl (seconds, or None "
            "for records that expire only when expire() says)", model=meta.label, field=None, value=None,
            expected="a model with Meta.ttl")


def set_deadline(instance: ActiveRecord, seconds: Any) -> Plan[None]:
    """``expire(seconds)`` (``seconds`` None: ``persist()``): one write call, or the next save's."""
    from repocket.plan import repartition, write

    meta = instance._meta
    _expiring(meta, "expire()" if seconds is not None else "persist()")
    ms = None if seconds is None else milliseconds(meta, seconds)
    if instance._stored is None:  # not saved yet: its first save writes the deadline
        instance._expire_next = ms
        return
    if meta.sources():
        yield from repartition.settle(meta, [instance], every=True)
    pk = str(instance._pk())
    view = meta.for_pk(pk)

    def make_plan(job: write.WriteJob) -> WritePlan:
        plan = write._new_plan(view, pk)
        write.check_alive(plan, view)
        deadline_writes(plan, view, pk, view.key(pk), ms, ())
        return plan

    yield from write.run_writes(view, [write.WriteJob(make_plan, {}, must_exist=True)])


def time_left(instance: ActiveRecord) -> Plan[float | None]:
    """``ttl()``: seconds to the record's deadline (None: it never expires), read from its key's TTL."""
    meta = instance._meta
    if not meta.expiring:
        return None
    if instance._stored is None:  # not saved: what its first save will set
        pending = instance._expire_next
        if pending is False:
            return None if meta.ttl is None else float(meta.ttl)
        return None if pending is None else pending / 1000
    key = meta.for_pk(instance._pk()).key(instance._pk())
    pttl = int((yield Pipeline([ttl_command(key)], False, meta.label))[0])
    if pttl == -2 or is_past(pttl):
        raise meta.model.DoesNotExist(f"{key} does not exist (or expired)")
    return remaining(pttl)
