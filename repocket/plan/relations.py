"""What a delete does to the records pointing at it: the ``on_delete`` strategies of SPEC §7 (planning only).

On one server, a delete and everything its strategies do is one call of the
``write`` script, so it is all done or none of it:

1. **The graph is planned on the client.** From the records to delete, one
   round per level reads the index set of every Pointer with a strategy that
   is aimed at their model (``SMEMBERS``), and one more loads the records
   found there. ``CASCADE`` deletes them too, and walks on from them (a record
   is visited once, so cycles end); ``SET_NULL`` sets their Pointer to None;
   ``UNLINK`` removes the deleted records from their PointerList;
   ``PROTECT`` refuses the delete with ProtectedError when a record found
   there is not deleted itself, before anything is written.
2. **It is written in one call that checks nothing changed under it.** For
   every index set it read, the call checks its size and members. A record
   that started or stopped pointing at one meanwhile refuses the whole call,
   and the graph is planned again (for :data:`repocket.plan.write.WRITE_BUDGET`
   seconds at most). That refusal gives the delete a short lease on the
   records whose index sets changed, and a save setting a Pointer to one of
   them waits while it is held, so the next call meets no change.
3. **A save that sets such a Pointer checks, in its own call, that the target
   exists** (``target`` in the write script). A referrer saved before the
   delete's call changes an index set the call checks; one saved after it
   finds no target and raises BrokenReferenceError. Either way no record is
   left pointing at nothing.

On a Redis Cluster the records of a graph live in several slots, which one
script call cannot write. A delete that finds records to cascade to, to set
to None or to unlink is made durable instead (:mod:`repocket.plan.intents`):
it writes an intent in its records' partition, then each step in one call
per slot, the records pointing at others first, and removes the intent; a
delete that stopped halfway is completed by the next one, or by
``check(repair=True)``. One that finds none is a plain delete. Either way a
referrer saved meanwhile is not seen (the target check of step 3 would name
a key of another slot): docs/consistency.rst.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from repocket import errors, keys, registry
from repocket.attributes import CASCADE, DO_NOTHING, PROTECT
from repocket.plan import hooks, intents, lists, load, write
from repocket.plan.rounds import Pipeline, Plan, command
from repocket.plan.scatter import gather

if TYPE_CHECKING:
    from repocket.indexes import WritePlan
    from repocket.options import ModelOptions

__all__ = ["Preview", "complete", "delete", "guarded", "preview"]


def _strategies(model: type[Any]) -> list[tuple[type[Any], str, str]]:
    """``(referring model, field, on_delete)`` of every Pointer and PointerList with a strategy aimed at ``model``."""
    return [(referrer, field, attr.on_delete) for referrer, field, attr in registry.pointers_to(model)
            if attr.on_delete != DO_NOTHING]


def guarded(meta: ModelOptions) -> bool:
    """Whether deleting a record of ``meta`` does more than delete it: a Pointer with a strategy aims at it."""
    return meta.partition_index is None and bool(_strategies(meta.model))


class _Graph:
    """What one delete writes: the records to delete, the Pointers to set to None, the index sets read."""

    def __init__(self) -> None:
        #: By record key: the record to delete, and the model options of its partition.
        self.doomed: dict[str, tuple[ModelOptions, Any]] = {}
        #: By record key: a record whose Pointers ``fields`` are set to None, or PointerLists ``fields``
        #: drop the records deleted.
        self.nulled: dict[str, tuple[ModelOptions, Any, set[str]]] = {}
        #: By the key of a record deleted: the index sets of the Pointers aimed at it, with what they held.
        self.read: dict[str, list[tuple[str, list[str]]]] = {}
        #: Records found behind a PROTECT Pointer: (their key, the Pointer's model and field, the target's key).
        self.protecting: list[tuple[str, type[Any], str, str]] = []
        #: By the key of a record deleted: how many Pointers away from the records the delete was asked for.
        self.depth: dict[str, int] = {}

    def jobs(self, checked: bool = True) -> list[tuple[str, write.WriteJob]]:
        """Every write of the call, with the key of its record (``checked``: each delete checks the index
        sets that were read, which a cluster's deletes in steps cannot: they are in other slots)."""
        groups: dict[int, tuple[ModelOptions, list[Any]]] = {}
        for view, record in self.doomed.values():
            groups.setdefault(id(view), (view, []))[1].append(record)
        jobs: list[tuple[str, write.WriteJob]] = []
        for view, records in groups.values():
            jobs += zip([record._key() for record in records],
                        write.delete_jobs(view, records, self._checks if checked else None))
        for key, (view, record, fields) in self.nulled.items():
            if key not in self.doomed:
                listed = {name for name in fields if name in view.pointer_lists}
                jobs.append((key, lists.unlinking(view, record, listed, self.doomed, fields - listed)))
        return jobs

    def steps(self) -> list[list[str]]:
        """The keys of the records written, in the order a delete in steps writes them: those that only
        change first, then those deleted, the deepest first (a record goes only after its referrers)."""
        deepest = max(self.depth.values(), default=0)
        return [[key for key in self.nulled if key not in self.doomed],
                *([key for key, depth in self.depth.items() if depth == level] for level in range(deepest, -1, -1))]

    def _checks(self, plan: WritePlan, record: Any) -> None:
        for index_key, ids in self.read.get(record._key(), ()):
            slot = plan.slot(index_key, "s")
            plan.check("count", slot, len(ids))
            for pk in ids:
                plan.check("member", slot, pk)


def delete(meta: ModelOptions, instances: Sequence[Any]) -> Plan[list[int]]:
    """Delete ``instances`` and do what the strategies aimed at them say, in one write call; keys deleted each."""
    top = {instance._key() for instance in instances}
    if keys.LAYOUT.cluster:
        return (yield from _delete_on_a_cluster(meta, instances, top))
    held = yield from write.held_claims(meta, instances)  # (read before the records go)
    deadline = time.monotonic() + write.WRITE_BUDGET
    token = secrets.token_hex(8)  # (one for every call: a refused one leaves leases the next one uses)
    hooked = set(top)
    while True:
        graph = yield from _plan(meta, instances)
        cascaded = [record for key, (_, record) in graph.doomed.items() if key not in hooked]
        yield from hooks.deleting(cascaded)
        hooked.update(record._key() for record in cascaded)
        jobs = graph.jobs()
        try:
            yield from write.run_writes(meta, [job for _, job in jobs], token=token)
        except write.Referred:  # a record started or stopped pointing at one we delete: plan again
            if time.monotonic() > deadline:
                raise errors.ConflictError(f"{meta.label}: for {write.WRITE_BUDGET:g} s the records pointing at "
                                           "it kept changing; nothing was deleted") from None
            continue
        break
    cascaded = [record for key, (_, record) in graph.doomed.items() if key not in top]
    return (yield from _finished(meta, instances, cascaded, held, {key: job.deleted for key, job in jobs}))


def _finished(meta: ModelOptions, instances: Sequence[Any], cascaded: Sequence[Any],
              held: Sequence[tuple[str, str, str]], deleted: dict[str, int], run_hooks: bool = True) -> Plan[list[int]]:
    """After the writes of a delete: release the unique claims the records deleted held, mark the cascaded
    instances deleted and run their ``after_delete`` hooks; the keys deleted per instance."""
    yield from write.release_claims(meta, held)
    by_model: dict[type[Any], list[Any]] = {}
    for record in cascaded:  # (loaded, so their claims are known without a read)
        by_model.setdefault(type(record), []).append(record)
    for model, records in by_model.items():
        yield from write.release_claims(model._meta, (yield from write.held_claims(model._meta, records)))
    for record in cascaded:
        record._stored, record._stored_streams = None, {}
    if run_hooks:
        yield from hooks.deleted(cascaded)
    return [deleted.get(instance._key(), 0) for instance in instances]


def _delete_on_a_cluster(meta: ModelOptions, instances: Sequence[Any], top: set[str]) -> Plan[list[int]]:
    """A delete on a Redis Cluster, where the records pointing at the instances live in other slots.

    With none (and PROTECT found none), it is a plain delete; with some, it
    is a durable delete in steps (:mod:`repocket.plan.intents`): its intents
    are written in the round that reads the partitions' unfinished ones, which
    it completes first. A referrer saved while it runs is not seen
    (docs/consistency.rst).
    """
    graph = yield from _plan(meta, instances)  # (PROTECT raises here, as on one server)
    if not graph.nulled and all(key in top for key in graph.doomed):
        return (yield from write.delete_records(meta, instances))
    groups = write.by_partition(meta, instances) if meta.partitioned else [(meta, list(instances))]
    tokens = [(view, secrets.token_hex(8)) for view, _ in groups]
    views = [view for view, _ in groups]
    replies = yield Pipeline([*(intents.note(view, token, [instance._key() for instance in group])
                                for (view, token), (_, group) in zip(tokens, groups)),
                              *intents.reading(views)], False, meta.label)
    ours = {token for _, token in tokens}
    for intent in intents.stale(views, replies[len(groups):]):
        if intent[1] not in ours:
            yield from _complete_intent(meta, intent)
    counts = yield from _in_steps(meta, instances, graph)
    yield from intents.done(tokens, meta.label)
    return counts


def complete(meta: ModelOptions, found: Sequence[intents.Intent]) -> Plan[None]:
    """Complete the unfinished deletes ``found`` (:func:`repocket.plan.intents.pending`) of a model."""
    for intent in found:
        yield from _complete_intent(meta, intent)


def _complete_intent(meta: ModelOptions, intent: intents.Intent) -> Plan[None]:
    """Do again what an unfinished delete was doing, from its records (those still stored, and the ids of
    those gone already, whose referrers may be left), then remove its intent."""
    view, token, record_keys = intent
    stored = yield from load.load(view, record_keys)
    instances = [record if record is not None else meta.model(**{meta.pk: view.parse_key(key)})
                 for key, record in zip(record_keys, stored)]
    yield from _in_steps(meta, instances, None, run_hooks=False)  # (they ran in the process that began it)
    yield from intents.done([(view, token)], meta.label)


def _in_steps(meta: ModelOptions, instances: Sequence[Any], graph: _Graph | None,
              run_hooks: bool = True) -> Plan[list[int]]:
    """Write a delete's graph one step at a time, each step one call per slot (see :meth:`_Graph.steps`).

    Each step is atomic in its slot and the order lets the delete stop
    anywhere and be planned again from ``instances``: a referrer deleted or
    changed meanwhile plans the rest again.
    """
    held = yield from write.held_claims(meta, instances)
    top = {instance._key() for instance in instances}
    seen: dict[str, Any] = {}  # the records cascaded to, by key
    deleted: dict[str, int] = {}
    for _ in range(8):
        graph = graph if graph is not None else (yield from _plan(meta, instances))
        cascaded = [record for key, (_, record) in graph.doomed.items() if key not in top and key not in seen]
        if run_hooks:
            yield from hooks.deleting(cascaded)
        seen.update((record._key(), record) for record in cascaded)
        jobs = dict(graph.jobs(checked=False))
        try:
            for step in graph.steps():
                slots: dict[str, tuple[ModelOptions, list[tuple[str, write.WriteJob]]]] = {}
                for key in step:
                    view = jobs[key].meta or meta
                    slots.setdefault(view.prefix, (view, []))[1].append((key, jobs[key]))
                for view, slot_jobs in slots.values():
                    yield from write.run_writes(view, [job for _, job in slot_jobs])
                    deleted.update((key, job.deleted) for key, job in slot_jobs)
        except errors.DoesNotExist:  # (a record to change was deleted meanwhile: plan the rest again)
            graph = None
            continue
        gone = [record for key, record in seen.items() if deleted.get(key)]
        return (yield from _finished(meta, instances, gone, held, deleted, run_hooks))
    raise errors.ConflictError(f"{meta.label}: the records pointing at it kept changing; the delete is "
                               "unfinished, and check(repair=True) or the next delete completes it")


class Preview:
    """What deleting some records would do, planned but not written (:func:`preview`).

    ``deleted``: the records a CASCADE would delete with them; ``changed``: ``(record, fields)`` whose
    Pointers SET_NULL would set to None or whose PointerLists UNLINK would drop them; ``refused``:
    ``(referrer key, referring model, field)`` of the PROTECT Pointers that would refuse the delete.
    """

    def __init__(self, deleted: list[Any], changed: list[tuple[Any, list[str]]],
                 refused: list[tuple[str, type[Any], str]]) -> None:
        self.deleted, self.changed, self.refused = deleted, changed, refused


def preview(meta: ModelOptions, instances: Sequence[Any]) -> Plan[Preview]:
    """What deleting ``instances`` would cascade to, set to None, unlink or be refused by; reads only.

    The same walk as the delete's (SMEMBERS of the Pointers' index sets, then the records found), so
    it costs what planning a delete does and writes nothing; a write meanwhile may change the answer.
    """
    graph = yield from _walk(meta, instances)
    top = {instance._key() for instance in instances}
    refused = sorted({(key, model, field) for key, model, field, _ in graph.protecting if key not in graph.doomed},
                     key=lambda found: (found[0], found[2]))
    return Preview([record for key, (_, record) in graph.doomed.items() if key not in top],
                   [(record, sorted(fields)) for key, (_, record, fields) in graph.nulled.items()
                    if key not in graph.doomed], refused)


def _plan(meta: ModelOptions, instances: Sequence[Any]) -> Plan[_Graph]:
    """The graph of a delete (:func:`_walk`); ProtectedError when a PROTECT Pointer refuses it."""
    graph = yield from _walk(meta, instances)
    _refuse(graph)
    return graph


def _walk(meta: ModelOptions, instances: Sequence[Any]) -> Plan[_Graph]:
    """Walk the records pointing at ``instances``, level by level, into a graph (see the module's docstring)."""
    graph = _Graph()
    level = []
    for instance in instances:
        view = meta.for_pk(instance._data[meta.pk])
        graph.doomed[instance._key()] = (view, instance)
        graph.depth[instance._key()] = 0
        level.append((view, instance))
    depth = 0
    while level:
        depth += 1
        reads: list[tuple[str, type[Any], str, str, str]] = []  # (target key, model, field, strategy, index key)
        for view, record in level:
            pk = str(record._data[view.pk])
            for model, field, how in _strategies(view.model):
                for part in model._meta.views():
                    reads.append((record._key(), model, field, how, keys.eq_index_key(part.prefix, field, pk)))
        if not reads:
            break
        replies = yield Pipeline([command("SMEMBERS", read[-1]) for read in reads], False, meta.label)
        cascading: set[str] = set()  # referrer keys deleted with the targets
        nulling: dict[str, set[str]] = {}  # referrer key -> its Pointers set to None
        by_model: dict[type[Any], list[str]] = {}  # the referrers to load
        for (target, model, field, how, index_key), members in zip(reads, replies):
            ids = sorted(member.decode() for member in members)
            graph.read.setdefault(target, []).append((index_key, ids))
            for pk in ids:
                key = model._meta.key(pk)
                if how == PROTECT:
                    graph.protecting.append((key, model, field, target))
                    continue
                if key in graph.doomed:
                    continue
                if key not in cascading and key not in nulling:
                    by_model.setdefault(model, []).append(key)
                if how == CASCADE:
                    cascading.add(key)
                else:
                    nulling.setdefault(key, set()).add(field)
        level = []
        loaded = yield from gather([load.load(model._meta, found) for model, found in by_model.items()])
        for (model, found), records in zip(by_model.items(), loaded):
            for key, record in zip(found, records):
                if record is None:
                    continue  # (deleted since: the checks of the call see it)
                view = model._meta.for_pk(record._data[model._meta.pk])
                if key in cascading:  # (deleted wins over set to None)
                    graph.doomed[key] = (view, record)
                    graph.depth[key] = depth
                    level.append((view, record))
                else:
                    graph.nulled[key] = (view, record, nulling[key])
    return graph


def _refuse(graph: _Graph) -> None:
    """Raise ProtectedError when a record behind a PROTECT Pointer is not deleted with the others."""
    for key, model, field, target in graph.protecting:
        if key not in graph.doomed:
            refused = sorted({k for k, m, f, t in graph.protecting if k not in graph.doomed and (m, f) == (model, field)})
            raise errors.ProtectedError(
                f"{target} cannot be deleted: {model._meta.label}.{field} (on_delete=PROTECT) points at it from "
                f"{', '.join(refused[:5])}{' and more' if len(refused) > 5 else ''}; nothing was deleted",
                model=model._meta.label, field=field, record=target, referrers=refused)
