"""Writing records: every save, delete, bulk batch, increment and append, as plans.

Planning only (see :mod:`repocket.plan`). Writes go through the ``write`` Lua
script: one atomic call for a record or a whole batch of them (all of it or
nothing), re-planned when a record changed under it; the refusal gives the
writer a short lease on the record, so the re-plan converges
(docs/consistency.rst). :func:`save`, :func:`delete`, :func:`increment` and
:func:`append` are the plans; :class:`WriteJob` is one record's part of a call.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from repocket import errors, keys
from repocket.attributes import Attribute, Decimal, Float, Integer, _short_repr
from repocket.indexes import WritePlan
from repocket.options import partition_of
from repocket.plan import changes, claims, expiry, relations, repartition, unit
from repocket.plan.load import SECRET_MASK, _corrupt, decode_field, fetch
from repocket.plan.rounds import Eval, Plan, Sleep

if TYPE_CHECKING:
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = [
    "LEASE_PAUSE", "WRITE_BUDGET", "WriteJob", "append", "bulk_save", "bulk_update", "by_partition", "delete",
    "delete_jobs", "delete_records", "held_claims", "increment", "release_claims", "run_writes", "save",
]

#: How long (seconds) a write keeps trying while other writers hold leases on
#: its records. A lease lives 2 seconds at most, so only a stuck server or a
#: writer that keeps changing data behind repocket's back exhausts it.
WRITE_BUDGET = 10.0
#: The pause (seconds) before calling again when another writer holds a lease,
#: random so that waiting writers do not all come back at once.
LEASE_PAUSE = (0.0005, 0.003)


class ClaimRevoked(Exception):
    """A unique value's claim a write relied on was taken over: nothing was written; claim again."""


class NotDue(Exception):
    """A purge found a record saved anew since it read it past its deadline: nothing was written; read again."""


class Referred(Exception):
    """The records pointing at a record being deleted changed since the delete was planned: plan it again."""


class WriteJob:
    """One record's write: re-planned from what Redis holds when it changed under us."""

    def __init__(self, make_plan: Callable[[WriteJob], WritePlan], stored: dict[bytes, bytes] | None,
                 must_exist: bool = False, fresh: bool = False, meta: ModelOptions | None = None) -> None:
        self.make_plan = make_plan
        #: The record's model, when a call writes records of several (a delete and its cascade).
        self.meta = meta
        #: A vanished record is an error (DoesNotExist), not something to write anew.
        self.must_exist = must_exist
        #: Whether the id was generated for this write. The script then checks only that the record's own
        #: keys do not exist (the ``new`` check), and the job is planned again without it if they do.
        self.fresh = fresh
        #: The hash fields as we believe Redis holds them (None when we assume nothing is stored).
        self.stored = stored
        #: Indexed fields' stored bytes, for removing old index entries.
        self.known_old: dict[bytes, bytes] | None = stored
        #: What the instance last read or wrote, whose index entries are removed too
        #: when the stored value turns out unreadable (corrupted behind our back).
        self.last_seen: dict[bytes, bytes] = dict(stored or {})
        #: How many keys its ``del`` ops deleted, once written.
        self.deleted = 0
        #: The claims of a spread model this write relies on (repocket/plan/claims.py), per unique field
        #: the key of the record's revoked generations and the claim's generation, checked in the same call.
        self.fences: dict[str, tuple[str, str]] = {}

    def retry_from(self, reply: list[Any]) -> None:
        status = reply[0]
        if status == b"present":  # an id someone else has written too: check it as any other
            self.fresh = False
            return
        if status == b"taken":  # by a record past its deadline, purged since: the same write again
            return
        if status in (b"missing", b"expired"):  # deleted (or purged) under us: write it whole, as new
            self.stored = self.known_old = None
            return
        known = dict(self.known_old or {})
        for field, current in zip(reply[1::2], reply[2::2]):
            if current is not None:
                known[field] = current
            else:  # the field is absent
                known.pop(field, None)
        self.known_old = known


def run_writes(meta: ModelOptions, jobs: Sequence[WriteJob], budget: float = WRITE_BUDGET,
               token: str | None = None) -> Plan[None]:
    """Write every job in one call of the ``write`` script: all of them, or none.

    When records changed under us, nothing was written: those jobs are
    re-planned from the values the refusal returned and the whole batch is
    sent again. That refusal also gave us a short lease on those records, so
    no other repocket writer changes them before our next call, which
    therefore succeeds: the re-plan converges however many writers contend.
    While another writer holds a lease on one of our records, we pause and
    call again, for ``budget`` seconds at most (then ConflictError). A delete
    refused because the records pointing at one it deletes changed raises
    ``Referred``, keeping the leases that refusal gave ``token`` (the
    caller plans again, and calls with the same ``token``).
    """
    buffer = unit.open_unit()
    if buffer is not None:  # inside atomic(): sent with the block's other writes at its end
        buffer.add(meta, jobs)
        return
    token = token or secrets.token_hex(8)  # names our leases
    deadline = time.monotonic() + budget
    holding = False  # whether the script gave us leases that are still ours
    plans: list[WritePlan] = []
    try:
        while True:
            plans = [job.make_plan(job) for job in jobs]
            reply = yield write_call(meta, token, plans)
            if reply[0] == b"ok":  # the call deleted our leases
                holding = False
                for job, deleted in zip(jobs, reply[1:]):
                    job.deleted = int(deleted)
                return
            refusals = [(jobs[int(number) - 1], plans[int(number) - 1], refusal)
                        for number, refusal in zip(reply[1::2], reply[2::2])]
            statuses = {refusal[0] for _, _, refusal in refusals}
            if statuses <= {b"conflict", b"leased", b"referred"}:  # leases granted only when none was met
                holding = holding or b"leased" not in statuses
            else:  # the script released ours: any other refusal is one we do not retry as is
                holding = False
            for job, plan, refusal in refusals:  # a refusal we cannot retry wins
                if (yield from _purged(job.meta or meta, job, plan, refusal)):
                    continue  # (past its deadline: gone now, as it already was for reads)
                _raise_unless_retryable(job.meta or meta, job, plan, refusal)
            if time.monotonic() > deadline:
                raise errors.ConflictError(
                    f"{meta.label}: for {budget:g} s the records kept changing or other writers "
                    "held them; nothing was written"
                )
            for job, _, refusal in refusals:
                if refusal[0] != b"leased":
                    job.retry_from(refusal)
            if b"leased" in statuses:
                yield Sleep(random.uniform(*LEASE_PAUSE))
    except GeneratorExit:
        raise  # the caller went away (a cancelled task): our leases expire within 2 s
    except Referred:
        raise  # (the caller plans the delete again, holding the leases)
    except BaseException:
        if holding:  # we give up with leases in hand (an error while re-planning, say)
            yield from _release_leases(token, plans)
        raise


def run_planned(meta: ModelOptions, planned: Sequence[tuple[ModelOptions, WriteJob, WritePlan]]) -> Plan[None]:
    """Send the plans of an ``atomic()`` block in one call: all of them, or none.

    Unlike :func:`run_writes` nothing is planned again, since each plan holds
    what its instance held when the block wrote it: any refusal raises (a
    value changed under a guard as ConflictError), except another writer's
    lease, which is waited for (for WRITE_BUDGET seconds at most).
    """
    token = secrets.token_hex(8)
    deadline = time.monotonic() + WRITE_BUDGET
    plans = [plan for _, _, plan in planned]
    while True:
        reply = yield write_call(meta, token, plans)
        if reply[0] == b"ok":
            for (_, job, _), deleted in zip(planned, reply[1:]):
                job.deleted = int(deleted)
            return
        refusals = [(planned[int(number) - 1], refusal) for number, refusal in zip(reply[1::2], reply[2::2])]
        if all(refusal[0] == b"leased" for _, refusal in refusals) and time.monotonic() < deadline:
            yield Sleep(random.uniform(*LEASE_PAUSE))
            continue
        if all(refusal[0] in (b"conflict", b"referred") for _, refusal in refusals):
            yield from _release_leases(token, plans)  # (the script gave us leases we will not use)
        for (job_meta, job, plan), refusal in refusals:
            _raise_unless_retryable(job_meta, job, plan, refusal)
        (_, _, plan), refusal = refusals[0]
        raise errors.ConflictError(
            f"{plan.keys[0]}: changed by someone else since the atomic() block wrote it "
            f"({_text(refusal[0])}); nothing of the block was written")


def _purged(meta: ModelOptions, job: WriteJob, plan: WritePlan, refusal: list[Any]) -> Plan[bool]:
    """Purge what a refusal says is past its deadline: the record itself (``expired``), or the holder of
    the unique value it claims (``taken``); whether the write can go ahead now (as for a missing record)."""
    if not meta.expiring or refusal[0] not in (b"expired", b"taken"):
        return False
    if refusal[0] == b"expired":
        yield from expiry.purge(meta, [plan.keys[0].rpartition(":")[2]])
        return not job.must_exist  # (an update of some fields needs its record: DoesNotExist)
    return bool((yield from expiry.purge(meta, [_text(refusal[3])])))


def write_call(meta: ModelOptions, token: str, plans: Sequence[WritePlan]) -> Eval:
    """One call of the ``write`` script for ``plans``, under the lease token ``token``."""
    script_keys: list[str] = []
    args: list[Any] = [len(plans), token]
    for plan in plans:
        script_keys.extend(plan.keys)
        args.extend(plan.args())
    return Eval("write", script_keys, args, meta.label)


def _release_leases(token: str, plans: Sequence[WritePlan]) -> Plan[None]:
    """Give back the leases ``token`` holds on the plans' records, best effort: if this fails, they expire in 2 s."""
    try:
        yield Eval("release", [plan.keys[1] for plan in plans], [token])
    except errors.RepocketError:
        pass


def _raise_unless_retryable(meta: ModelOptions, job: WriteJob, plan: WritePlan, refusal: list[Any]) -> None:
    """Raise the exception for a refusal that re-planning cannot cure (missing, conflict, leased, present can be)."""
    status = refusal[0]
    if status == b"missing" and job.must_exist:
        raise meta.model.DoesNotExist(f"{plan.keys[0]} does not exist; nothing was written")
    if status == b"stale" or (status == b"missing" and meta.versioned):
        found = _text(refusal[1]) if len(refusal) > 1 and refusal[1] else "no record"
        raise errors.ConflictError(
            f"{plan.keys[0]}: changed by someone else since it was loaded "
            f"(stored version: {found[:40]}); nothing was written. Call refresh() and retry."
        )
    if status not in (b"missing", b"conflict", b"leased", b"present"):
        raise_for_reply(refusal, meta, plan)


def raise_for_reply(reply: list[Any], meta: ModelOptions, plan: WritePlan) -> None:
    """Turn a refusal from the write script into the matching exception."""
    status = reply[0]
    if status in (b"wrongtype", b"corrupt"):
        raise _stored_data_error(plan.keys[0], reply)
    if status == b"notdue":
        raise NotDue()
    if status == b"expired":
        raise meta.model.DoesNotExist(f"{plan.keys[0]} expired; nothing was written")
    if status == b"revoked":
        raise ClaimRevoked()
    if status == b"referred":
        raise Referred()
    if status == b"dangling":
        target = plan.keys[int(reply[1]) - 1]
        raise errors.BrokenReferenceError(
            f"{plan.keys[0]}: a Pointer names {target}, which was deleted meanwhile; nothing was written",
            key=plan.keys[0], field="", target=target)
    if status in (b"taken", b"clash"):
        slot, token, other = int(reply[1]), _text(reply[2]), _text(reply[3])
        field = plan.keys[slot - 1].rsplit(":", 1)[-1]
        value = plan.unique_values.get(token, token)
        shown = SECRET_MASK if meta.fields[field].secret else _short_repr(value)
        if status == b"taken":
            where = f"is already used by {meta.key(other)}"
        else:  # claimed twice within the batch, which the script wrote none of
            where = (f"is given to two records of the same batch, {other} and "
                     f"{plan.keys[0].rsplit(':', 1)[-1]}")
        raise errors.UniqueConstraintError(
            f"{meta.label}.{field}: the value {shown} {where}; nothing was written",
            model=meta.label,
            field=field,
            value=value,
        )
    raise errors.RepocketError(f"{meta.label}: unexpected reply from the write script: {_text(status)!r}")


def _text(raw: bytes | str) -> str:
    """Text from a script's reply, whatever bytes the stored data held."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def _stored_data_error(record: str, reply: list[Any]) -> errors.CorruptRecordError:
    """The error for a script refusing stored data it cannot write over.

    ``{"wrongtype", key, type}``: a key of the wrong Redis type.
    ``{"corrupt", field, problem, value}``: a stored value a write command would fail on
    (``_version``, or the record's revision in ``<prefix>:_revisions``: never secret).
    """
    if reply[0] == b"wrongtype":
        key, have = _text(reply[1]), _text(reply[2])
        return errors.CorruptRecordError(
            f"{key} is a Redis {have}, not what repocket keeps there; nothing was written", key=key
        )
    field, problem, value = _text(reply[1]), _text(reply[2]), _text(reply[3])
    return _corrupt(record, field, f"the stored value {_short_repr(value)} {problem}; nothing was written")


def _old_value(meta: ModelOptions, record: str, name: str, raw: bytes) -> Any:
    """The decoded stored value, or _UNREADABLE when it is corrupt (its entries cannot be found)."""
    try:
        return decode_field(meta, meta.fields[name], record, name, raw)
    except errors.CorruptRecordError:
        return _UNREADABLE


_UNREADABLE: Any = object()


def _new_plan(meta: ModelOptions, pk: str, op: str = "") -> WritePlan:
    """An empty plan for the record ``pk``: its hash and its write lease are its first keys.

    For a model with ``Meta.changes`` or ``Meta.history`` it starts with the
    ``change`` op, so that every write of the record (a save, a delete, a
    cascade, an increment, an append, a purge) records its change in the same
    call; ``op`` names it ("incr", "append"), or "" for the script to tell a
    create, an update and a delete apart.
    """
    plan = WritePlan(meta.key(pk), keys.lease_key(meta.prefix, pk))
    if meta.records_changes:
        policy, limit = meta.changes or ("none", 0)
        plan.write("change",
                   plan.slot(meta.changes_key, "x") if meta.changes else 0,
                   plan.slot(keys.revisions_key(meta.prefix), "h"),
                   plan.slot(keys.trimmed_key(meta.prefix), "h") if policy != "none" else 0,
                   plan.slot(keys.history_key(meta.prefix, pk), "x") if meta.history else 0,
                   pk, changes.ACTOR.get(), op, policy, limit, meta.history)
    return plan


def check_alive(plan: WritePlan, meta: ModelOptions) -> None:
    """Make ``plan`` need its record: stored, and for an expiring model not past its deadline (which the
    writer purges, then raises DoesNotExist)."""
    plan.check("exists")
    if meta.expiring:
        plan.check("alive")


def _plan_index_change(plan: WritePlan, meta: ModelOptions, job: WriteJob, record: str, pk: str, name: str, new: Any) -> None:
    """Guard an indexed field, drop its old entries and add the new ones (``new`` may be _UNREADABLE: remove only)."""
    attr = meta.fields[name]
    field = name.encode()
    old_raw = (job.known_old or {}).get(field)
    if not job.fresh:  # (a fresh record has no field to guard: its ``new`` check says so)
        _guard(plan, name, old_raw)
    unique_slot = plan.slot(keys.unique_key(meta.prefix, name), "h") if attr.unique else 0
    if old_raw is None and job.stored is not None:
        # The record exists but lacks the field (a None in the plain format, or declared
        # after it was written): it reads as the format says, and check() indexes it so.
        # Removing absent entries is harmless.
        old = meta.format.absent(attr)
    elif old_raw is None:
        old = _UNREADABLE  # a new record: nothing to remove
    else:
        old = _old_value(meta, record, name, old_raw)
        if old is _UNREADABLE and field in job.last_seen:
            old = _old_value(meta, record, name, job.last_seen[field])
    if old is not _UNREADABLE:
        try:
            old_token = attr.index_token(old) if unique_slot and old is not None else None
            plan.remove_entries(meta, name, old, pk)
        except (ArithmeticError, ValueError, TypeError):
            pass  # a stored value whose entries cannot be named (Decimal past the exponent range): as if corrupt
        else:
            if old_token is not None:
                plan.write("udel", unique_slot, old_token, pk)
    if new is _UNREADABLE:
        return
    problem: Exception | None = None
    try:
        token = attr.index_token(new) if unique_slot and new is not None else None
        plan.add_entries(meta, name, new, pk)
    except (ArithmeticError, ValueError, TypeError) as exc:  # a value no index entry can name
        problem = exc
    if problem is not None:
        raise attr._invalid(new, problem)
    if token is not None:
        fence = job.fences.get(name)
        if fence is not None:
            plan.check("fenced", plan.slot(fence[0], "s"), fence[1])
        plan.check("unique", unique_slot, token, pk)
        plan.unique_values[token] = new
        plan.write("uset", unique_slot, token, pk)


def _guard(plan: WritePlan, name: str, raw: bytes | None) -> None:
    """Check that the stored field ``name`` still holds ``raw`` (None: that it is absent)."""
    if raw is None:
        plan.check("absent", name)
    else:
        plan.check("guard", name, raw)


def save(meta: ModelOptions, instances: Sequence[ActiveRecord], force: bool = False,
         *, fields: Collection[str] | None = None, fresh: Collection[str] = (),
         fences: dict[tuple[str, str], tuple[str, str]] | None = None) -> Plan[None]:
    """Write validated instances (ids assigned) in one script call: all of them, or none.

    An instance loaded or saved before writes only the attributes whose bytes
    changed since; a new one, or any with ``force``, writes all of them.
    With ``fields`` (attribute names), only those attributes are considered,
    and every record must already exist: a missing one raises
    ``Model.DoesNotExist`` naming its key, with nothing of the batch written.
    An instance's deferred attributes (``_deferred``, not loaded) are never
    written, indexed or compared, even with ``force``; such an instance must
    exist too, as its record cannot be written whole. ``fresh`` holds the ids
    the caller has just generated: nothing can be stored under them, which the
    script checks at the cost of one EXISTS (see :class:`WriteJob`). ``fences``
    maps ``(id, unique field)`` to the claim its write relies on (a spread model).
    During a move (``Meta.moving_from``), the records still in the source layout
    that the write needs are moved first (:func:`repocket.plan.repartition.settle`).
    """
    _refuse_versions(meta, instances)
    if meta.sources():
        yield from repartition.settle(meta, instances)
    if meta.partitioned and meta.unique:
        if unit.open_unit() is not None:
            raise errors.CrossPartitionError(
                f"{meta.label} spreads over partitions and claims its unique values in calls of their own, "
                "which an atomic() block cannot hold; nothing was written")
        yield from _save_claimed(meta, instances, force, fields, fresh)
        return
    if meta.partitioned:  # one script call per partition: all-or-nothing within each
        for view, group in by_partition(meta, instances):
            yield from save(view, group, force, fields=fields, fresh=fresh, fences=fences)
        return
    chosen = _chosen_fields(meta, fields)
    prepared = []
    jobs = []
    for instance in instances:
        pk = str(instance._data[meta.pk])
        record = meta.key(pk)
        names = chosen - instance._deferred
        partial = fields is not None or bool(instance._deferred)
        everything = force or instance._stored is None
        encode = meta.format.encode
        encoded = {field: encode(attr, instance._data[name])  # None: the field is left out
                   for field, name, attr, _ in meta.layout if field is not None and name in names}
        streams = {name: instance._data[name] or b"" for name in meta.streams if name in names}
        # A partial write of an instance never loaded claims no version: it is not checked.
        claims_version = meta.versioned and not (partial and instance._version is None)
        prepared.append((instance, encoded, streams, partial, claims_version))

        def make_plan(job: WriteJob, instance: ActiveRecord = instance, pk: str = pk, record: str = record,
                      encoded: dict[bytes, bytes | None] = encoded, streams: dict[str, bytes] = streams,
                      everything: bool = everything, claims_version: bool = claims_version) -> WritePlan:
            plan = _new_plan(meta, pk)
            stored = job.stored
            if meta.versioned:
                if claims_version:
                    plan.check("version", str(instance._version or ""))
                plan.write("bump")
            if stored is not None:
                plan.check("exists")
            elif job.fresh:
                plan.check("new")
            if meta.expiring and not job.fresh:
                plan.check("alive")  # (one past its deadline is purged, then written anew)
            if everything or stored is None:
                changed = encoded
            else:
                changed = {field: raw for field, raw in encoded.items() if stored.get(field) != raw}
            for name in meta.indexed:
                if name.encode() in changed:
                    _plan_index_change(plan, meta, job, record, pk, name, instance._data[name])
            for name in () if keys.LAYOUT.cluster else meta.guarded_pointers:  # (a cluster: another slot)
                if name.encode() not in changed:
                    continue
                value = instance._data[name]
                for target in value if isinstance(value, list) else [value]:
                    if getattr(target, "_meta", None) is not None:
                        # (its delete sees this record in the index it checks, or this write finds no target)
                        lease = keys.lease_key(target._meta.prefix_for(target.pk), target.pk)
                        plan.check("target", plan.slot(target._key(), "h"), plan.slot(lease, "t"))
            for field, raw in changed.items():
                if raw is not None:
                    plan.write("hset", field, raw)
                else:  # a None in the plain format: no field
                    plan.write("hdel", field)
            old_streams = None if everything or stored is None else instance._stored_streams
            written = []
            for name, value in streams.items():
                if old_streams is None or old_streams.get(name, b"") != value:
                    slot = plan.slot(keys.stream_key(record, name), "t")
                    written.append(name)
                    if value:
                        plan.write("set", slot, value)
                    else:
                        plan.write("del", slot)
            plan.write("sadd", plan.slot(meta.ids_key, "s"), pk)
            if meta.expiring:
                expiry.deadline_writes(plan, meta, pk, record, _deadline(meta, instance), written)
            return plan

        believed: dict[bytes, bytes] | None
        if partial:  # the record exists: what we loaded is our best guess at what it holds
            believed = instance._stored if instance._stored is not None else {}
        else:
            believed = None if force else instance._stored
        jobs.append(WriteJob(make_plan, believed, must_exist=partial,
                             fresh=believed is None and not partial and pk in fresh))
        if fences:
            jobs[-1].fences = {name: fence for (owner, name), fence in fences.items() if owner == pk}
    yield from run_writes(meta, jobs)
    for instance, encoded, streams, partial, claims_version in prepared:
        written = {field: raw for field, raw in encoded.items() if raw is not None}
        if partial:
            left_out = [field for field, raw in encoded.items() if raw is None]
            instance._stored = {**(instance._stored or {}), **written}
            for field in left_out:
                instance._stored.pop(field, None)
            instance._stored_streams = {**instance._stored_streams, **streams}
        else:
            instance._stored = written
            instance._stored_streams = streams
        if claims_version:
            instance._version = (instance._version or 0) + 1
        instance._expire_next = False


def _refuse_versions(meta: ModelOptions, instances: Sequence[ActiveRecord]) -> None:
    """Past versions (``history()``) are read-only: saving or deleting one would rewrite the present."""
    for instance in instances:
        if instance._snapshot is not None:
            raise errors.ValidationError(
                f"{meta.label} {instance._pk()}: revision {instance._snapshot.revision} is a past version, "
                "read-only; load the record to change it", model=meta.label, field=None, value=None,
                expected="the record as it is now")


def _deadline(meta: ModelOptions, instance: ActiveRecord) -> int | None | bool:
    """What a save does to the record's deadline: the one ``expire()`` asked for before the record was
    saved, else ``Meta.ttl`` from now, else none (False: it keeps what it has)."""
    if instance._expire_next is not False:
        return instance._expire_next
    return expiry.milliseconds(meta, meta.ttl) if meta.ttl is not None else False


def by_partition(meta: ModelOptions, instances: Sequence[ActiveRecord]) -> list[tuple[ModelOptions, list[Any]]]:
    """The instances grouped by the partition holding them, each group with its partition's view."""
    groups: dict[int, list[Any]] = {}
    for instance in instances:
        groups.setdefault(partition_of(instance._data[meta.pk], meta.partitions), []).append(instance)
    return [(meta.partition(number), group) for number, group in sorted(groups.items())]


def _chosen_fields(meta: ModelOptions, fields: Collection[str] | None) -> frozenset[str]:
    """The attribute names a save considers: ``fields`` (checked), or every attribute."""
    if fields is None:
        return frozenset(meta.fields)
    chosen = frozenset([fields] if isinstance(fields, str) else fields)
    for name in sorted(chosen):
        if name not in meta.fields:
            raise meta.unknown_field(name)
    return chosen


def delete(meta: ModelOptions, instances: Sequence[ActiveRecord]) -> Plan[list[int]]:
    """Delete records with their strings and index entries, each atomically; keys deleted per record.

    A versioned record is deleted only at the version its instance loaded; an
    instance never loaded (``Model(id=...)``) claims no version, so none is
    checked. Its stored values are unknown: the guards fetch them. During a
    move, a copy in the source layout is moved first, then deleted with the rest.
    """
    _refuse_versions(meta, instances)
    if meta.sources():
        yield from repartition.settle(meta, instances, every=True)
    if relations.guarded(meta):
        return (yield from relations.delete(meta, instances))
    return (yield from delete_records(meta, instances))


def delete_records(meta: ModelOptions, instances: Sequence[ActiveRecord]) -> Plan[list[int]]:
    """:func:`delete`, leaving alone the records that point at them (their Pointers' ``on_delete``)."""
    if meta.partitioned:
        held = yield from held_claims(meta, instances)
        counts: dict[int, int] = {}
        for view, group in by_partition(meta, instances):
            for instance, deleted in zip(group, (yield from delete_records(view, group))):
                counts[id(instance)] = deleted
        yield from release_claims(meta, held)
        return [counts[id(instance)] for instance in instances]
    jobs = delete_jobs(meta, instances)
    yield from run_writes(meta, jobs)
    return [job.deleted for job in jobs]


def held_claims(meta: ModelOptions, instances: Sequence[ActiveRecord]) -> Plan[list[tuple[str, str, str]]]:
    """``(id, unique field, token)`` of the values a spread model's ``instances`` hold, whose claims their
    delete releases; an instance never loaded has them read first (one round trip)."""
    if not (meta.partitioned and meta.unique):
        return []
    unread = [instance for instance in instances if instance._stored is None]
    found = yield from fetch([(meta, instance._key()) for instance in unread], frozenset([meta.pk, *meta.unique]))
    stored = {id(instance): fetched[0] for instance, fetched in zip(unread, found) if fetched is not None}
    return [(str(instance._data[meta.pk]), name, token) for instance in instances
            for name, token in _stored_tokens(meta, instance, stored.get(id(instance)))]


def release_claims(meta: ModelOptions, held: Sequence[tuple[str, str, str]]) -> Plan[None]:
    """Release the claims :func:`held_claims` listed, once their records are deleted."""
    for pk, name, token in held:
        yield from claims.release(meta, name, token, pk)


def delete_jobs(meta: ModelOptions, instances: Sequence[ActiveRecord],
                checks: Callable[[WritePlan, ActiveRecord], None] | None = None) -> list[WriteJob]:
    """The jobs deleting ``instances`` of one partition (``meta``); ``checks(plan, instance)`` adds to each plan."""
    jobs = []
    for instance in instances:
        pk = str(instance._data[meta.pk])
        record = meta.key(pk)

        def make_plan(job: WriteJob, pk: str = pk, record: str = record,
                      claims_version: bool = meta.versioned and instance._stored is not None,
                      instance: ActiveRecord = instance) -> WritePlan:
            plan = _new_plan(meta, pk)
            if claims_version:
                plan.check("version", str(instance._version or ""))
            if checks is not None:
                checks(plan, instance)
            for name in meta.indexed:
                _plan_index_change(plan, meta, job, record, pk, name, _UNREADABLE)
            plan.write("del", 1)
            for name in meta.streams:
                plan.write("del", plan.slot(keys.stream_key(record, name), "t"))
            plan.write("srem", plan.slot(meta.ids_key, "s"), pk)
            if meta.expiring:
                plan.write("zrem", plan.slot(meta.expiry_key, "z"), pk)
            return plan

        jobs.append(WriteJob(make_plan, instance._stored if instance._stored is not None else {}, meta=meta))
    return jobs


def _save_claimed(meta: ModelOptions, instances: Sequence[ActiveRecord], force: bool,
                  fields: Collection[str] | None, fresh: Collection[str]) -> Plan[None]:
    """Save instances of a spread model with unique fields: claim, write, release (repocket/plan/claims.py)."""
    names = _chosen_fields(meta, fields)
    held = [(str(instance._data[meta.pk]), name, token)
            for instance in instances for name, token in _stored_tokens(meta, instance) if name in names]
    deadline = time.monotonic() + WRITE_BUDGET
    while True:
        wanted = claims.wanted(meta, instances, [n for n in names if not any(n in i._deferred for i in instances)])
        try:
            yield from claims.take(meta, wanted)
            fences = {(c.pk, c.field): (keys.revoked_key(meta.prefix_for(c.pk), c.pk), c.generation)
                      for c in wanted}
            for view, group in by_partition(meta, instances):
                yield from save(view, group, force, fields=fields, fresh=fresh, fences=fences)
        except ClaimRevoked:  # another writer took a value over before our write landed: claim again
            if time.monotonic() > deadline:
                raise errors.ConflictError(f"{meta.label}: for {WRITE_BUDGET:g} s other writers kept taking "
                                           "its unique values over; nothing more was written") from None
            continue
        except Exception:
            for claim in wanted:  # those this write does not hold (a record holding one keeps it)
                try:
                    yield from claims.release(meta, claim.field, claim.token, claim.pk)
                except errors.RepocketError:
                    break  # (Redis is failing: the claims left are released by the next claimant or check())
            raise
        break
    now = {(c.pk, c.field, c.token) for c in wanted}
    for pk, name, token in held:
        if (pk, name, token) not in now:
            yield from claims.release(meta, name, token, pk)


def _stored_tokens(meta: ModelOptions, instance: ActiveRecord,
                   stored: dict[bytes, bytes] | None = None) -> list[tuple[str, str]]:
    """``(unique field, token)`` of the values the instance was loaded or last saved with (or of ``stored``)."""
    out = []
    for name in meta.unique:
        raw = (stored or instance._stored or {}).get(name.encode())
        if raw is None:
            continue
        value = _old_value(meta, instance._key(), name, raw)
        if value is not _UNREADABLE and value is not None:
            out.append((name, meta.fields[name].index_token(value)))
    return out


def increment(instance: ActiveRecord, name: str, amount: Any) -> Plan[Any]:
    """Add ``amount`` to a number attribute inside Redis; returns the stored result.

    Integers are added by the ``incr`` script in one call. An indexed one
    names, in the call's KEYS, the equality sets of the value it expects (the
    instance's) and of the result; when the stored value is another, the
    script says which, and the next call names the sets of the values around
    it (a window twice as wide as the drift seen, so that writers racing on
    one counter soon meet). Floats, Decimals, integers past 2**53 and unique
    fields use the ``write`` script with a guard on the current value, re-read
    and retried when another writer got there first.
    """
    meta = instance._meta
    attr = meta.fields[name]
    if not isinstance(attr, (Integer, Float, Decimal)):
        raise errors.ValidationError(
            f"{meta.label}.{name}: only Integer, Float and Decimal attributes can be incremented",
            model=meta.label, field=name, value=amount, expected="a number attribute",
        )
    step = attr.cast(amount)
    if step is None:
        raise attr._invalid(amount)
    if attr.unique and meta.partitioned:
        raise errors.ValidationError(
            f"{meta.label}.{name}: a unique field of a model spread over partitions is not incremented in "
            "place (its new value must be claimed first): set it and save()",
            model=meta.label, field=name, value=amount, expected="a field that is not unique",
        )
    pk = str(instance._pk())
    if meta.sources():
        yield from repartition.settle(meta, [instance], every=True)
    meta = meta.for_pk(pk)
    record = meta.key(pk)
    if isinstance(attr, Integer) and not attr.unique and abs(step) < 2**52 and not meta.records_changes \
            and unit.open_unit() is None:
        known = instance._data.get(name)
        guesses = _incr_guesses(known if type(known) is int else 0, step, 0)
        deadline = time.monotonic() + WRITE_BUDGET
        while True:
            script_keys = [record, keys.lease_key(meta.prefix, pk)]
            values: list[str] = []
            if attr.index:
                values = sorted({str(v) for v in guesses} | {str(v + step) for v in guesses}, key=int)
                script_keys.append(keys.sorted_index_key(meta.prefix, name))
                script_keys += [keys.eq_index_key(meta.prefix, name, value) for value in values]
            reply = yield Eval("incr", script_keys, [name, step, pk, "1" if attr.index else "",
                                                     "1" if meta.versioned else "", meta.format.name, *values],
                               meta.label)
            if reply[0] == b"moved" and time.monotonic() > deadline:
                raise errors.ConflictError(
                    f"{record}: for {WRITE_BUDGET:g} s other writers kept changing {name}; nothing was incremented"
                )
            if reply[0] == b"moved":  # the stored value is not one we named the sets of: name those around it
                stored = int(reply[1])
                guesses = _incr_guesses(stored, step, abs(stored - (known if type(known) is int else stored)))
                known = stored
                continue
            if reply[0] != b"leased":
                break
            if time.monotonic() > deadline:  # another writer's lease: it is about to write the record
                raise errors.ConflictError(
                    f"{record}: other writers held it for {WRITE_BUDGET:g} s; nothing was incremented"
                )
            yield Sleep(random.uniform(*LEASE_PAUSE))
        status = reply[0]
        if status == b"ok":
            if meta.versioned and reply[2] == (instance._version or 0) + 1:
                instance._version = reply[2]  # nobody else wrote in between: still current
            return _settle_increment(instance, name, int(reply[1]))
        if status == b"missing":
            raise meta.model.DoesNotExist(f"{record} does not exist; nothing was incremented")
        if status in (b"wrongtype", b"corrupt"):
            raise _stored_data_error(record, reply)
        # "shape" (null or unusual text) and "big" fall through to the exact path below.
    result: dict[str, Any] = {}
    # A versioned instance whose version is current stays current after its own
    # increment; the first try checks that, and a stale one retries without it.
    state = {"check_version": meta.versioned}

    def make_plan(job: WriteJob) -> WritePlan:
        plan = _new_plan(meta, pk, "incr")
        check_alive(plan, meta)
        if state["check_version"]:
            plan.check("version", str(instance._version or ""))
        # The guard checks our belief about the stored bytes; when it is wrong, the
        # refusal brings the real ones and we plan again. Nothing known yet means
        # "absent": an attribute added after the record was written, whose value
        # is its default (as reading it would give).
        current_raw = (job.known_old or {}).get(name.encode())
        _guard(plan, name, current_raw)
        if current_raw is None:
            current = meta.format.absent(attr)
        else:
            current = decode_field(meta, attr, record, name, current_raw)
        if current is None:
            result.pop("value", None)
            if current_raw is not None:
                raise _cannot_add(meta, name, amount, None, attr)
            return plan  # absent with a None default: written only if the guard holds
        problem: ArithmeticError | None = None
        try:
            new = current + step
        except ArithmeticError as exc:  # Decimal: inf + -inf, or past the exponent range
            problem = exc
        if problem is not None:
            raise _cannot_add(meta, name, amount, current, attr, problem)
        result["value"] = new
        if attr.index:
            _plan_index_change(plan, meta, job, record, pk, name, new)
        plan.write("hset", name, meta.format.encode(attr, new))  # (a sum is never None)
        if meta.versioned:
            plan.write("bump")
        return plan

    field = name.encode()
    # What the instance loaded is the first guess at the stored value: when it is right, one call.
    believed = {field: instance._stored[field]} if instance._stored and field in instance._stored else {}
    try:
        yield from run_writes(meta, [WriteJob(make_plan, dict(believed), must_exist=True)])
    except errors.ConflictError:
        if not state["check_version"]:
            raise
        state["check_version"] = False
        yield from run_writes(meta, [WriteJob(make_plan, dict(believed), must_exist=True)])
    else:
        if meta.versioned:
            instance._version = (instance._version or 0) + 1
    if "value" not in result:
        raise _cannot_add(meta, name, amount, None, attr)
    return _settle_increment(instance, name, result["value"])


#: The most values an Integer increment names the equality sets of, around the stored value it was told.
INCR_WINDOW = 64


def _incr_guesses(value: int, step: int, drift: int) -> range:
    """The stored values an increment names the sets of: ``value`` alone, or, after the value moved by
    ``drift`` under it (other writers), the values within twice that drift (up to INCR_WINDOW)."""
    if drift == 0:
        return range(value, value + 1)
    width = min(2 * drift, INCR_WINDOW // 2)
    return range(value - width, value + width + 1)


def _cannot_add(meta: ModelOptions, name: str, amount: Any, current: Any, attr: Attribute[Any],
                exc: BaseException | None = None) -> errors.ValidationError:
    """The error for an increment that cannot be done: the stored value is None, or the sum fails."""
    if attr.secret:
        text = f"cannot add {SECRET_MASK} to {SECRET_MASK}"
    else:
        text = f"cannot add {_short_repr(amount)} to {_short_repr(current)}" + (f" ({exc})" if exc else "")
    return errors.ValidationError(
        f"{meta.label}.{name}: {text}", model=meta.label, field=name,
        value=current, expected=attr._expected(),
    )


def _settle_increment(instance: ActiveRecord, name: str, value: Any) -> Any:
    """Give the instance the stored result: its value and stored bytes are now known."""
    attr = instance._meta.fields[name]
    instance._data[name] = value
    if instance._stored is not None:
        instance._stored[name.encode()] = instance._meta.format.encode(attr, value)  # type: ignore[assignment]
    if name in instance._deferred:
        instance._deferred = instance._deferred - {name}
    return value


def append(instance: ActiveRecord, name: str, chunk: bytes) -> Plan[str]:
    """APPEND ``chunk`` to a saved record's ByteStream ``name``, only while the record exists.

    Updates the value in memory too, and returns the string's key. The next
    save() does not write the stream again: its stored value is taken as the
    result, whatever others appended.
    """
    meta = instance._meta
    if meta.sources():
        yield from repartition.settle(meta, [instance], every=True)
    record = instance._key()
    key = keys.stream_key(record, name)
    if meta.records_changes or unit.open_unit() is not None:  # (the write script records it, or buffers it)
        yield from run_writes(meta, [WriteJob(_append_plan(meta.for_pk(instance._pk()), str(instance._pk()), key,
                                                           chunk), {}, must_exist=True)])
    elif (yield Eval("append", [record, key], [chunk], meta.label)) == -1:
        raise instance.DoesNotExist(f"{meta.label} {record} no longer exists; nothing was appended")
    instance._data[name] = (instance._data[name] or b"") + chunk
    instance._stored_streams[name] = instance._data[name]
    return key


def _append_plan(meta: ModelOptions, pk: str, key: str, chunk: bytes) -> Callable[[WriteJob], WritePlan]:
    """The plan of an append to the ByteStream string ``key`` of a model that records its changes."""

    def make_plan(job: WriteJob) -> WritePlan:
        plan = _new_plan(meta, pk, "append")
        check_alive(plan, meta)
        slot = plan.slot(key, "t")
        plan.write("append", slot, chunk)
        if meta.expiring:
            plan.write("follow", slot)
        return plan

    return make_plan


def updatable(meta: ModelOptions, names: Iterable[str]) -> list[str]:
    """The attributes a bulk write may set (``pk`` naming the primary key), checked: known, not the key."""
    out = []
    for name in names:
        name = meta.pk if name == "pk" else name
        if name not in meta.fields:
            raise meta.unknown_field(name)
        if name == meta.pk:
            raise errors.ValidationError(f"{meta.label}.{name}: the primary key cannot be updated",
                                         model=meta.label, field=name, value=None)
        out.append(name)
    return out


def _check_batch(model: type[Any], instances: Sequence[Any], batch_size: int, operation: str) -> None:
    """Refuse a batch size below 1, an instance of another model, and a record given twice."""
    meta = model._meta
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    seen_ids: set[Any] = set()
    seen_objects: set[int] = set()
    for instance in instances:
        if type(instance) is not model:
            raise TypeError(f"{operation} of {meta.label} got a {type(instance).__name__}")
        pk = instance._data[meta.pk]
        if id(instance) in seen_objects or (pk is not None and pk in seen_ids):
            which = f"the same {meta.label} instance" if pk is None else f"{meta.label} {pk}"
            raise ValueError(f"{which} appears twice in one {operation}()")
        seen_objects.add(id(instance))
        if pk is not None:
            seen_ids.add(pk)


def bulk_update(model: type[Any], objs: list[Any], fields: Sequence[str], batch_size: int) -> Plan[int]:
    """Write ``fields`` of saved records, one atomic script call per batch; see QuerySet.bulk_update."""
    meta = model._meta
    if isinstance(fields, str) or not fields:
        raise ValueError("bulk_update() takes a list of the attribute names to write")
    names = updatable(meta, fields)
    _check_batch(model, objs, batch_size, "bulk_update")
    for obj in objs:
        if obj.pk is None:
            raise ValueError(f"bulk_update(): every {meta.label} must have been saved (one has no id)")
        obj._validate_for_save(names)
    for start in range(0, len(objs), batch_size):
        # force: the named fields are written even where they equal what was loaded, as Django does
        yield from save(meta, objs[start:start + batch_size], force=True, fields=names)
    return len(objs)


def bulk_save(model: type[Any], instances: list[Any], batch_size: int) -> Plan[list[Any]]:
    """Validate every instance first, then save them ``batch_size`` per atomic script call."""
    meta = model._meta
    _check_batch(model, instances, batch_size, "bulk_create")
    for instance in instances:
        for name in meta.auto_now:
            setattr(instance, name, meta.fields[name].now())  # (and no longer deferred: it is written)
        instance._validate_for_save()
    fresh = set()
    for instance in instances:
        if instance._data[meta.pk] is None:
            instance._data[meta.pk] = meta.fields[meta.pk].generate()
            fresh.add(str(instance._data[meta.pk]))
    for start in range(0, len(instances), batch_size):
        yield from save(meta, instances[start:start + batch_size], fresh=fresh)
    return instances
