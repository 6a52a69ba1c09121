"""Changing a stored PointerList inside Redis: ``append_<field>``, ``remove_<field>`` and UNLINK (planning only).

A PointerList is one hash field holding a JSON list of hash keys. Each edit
is one call of the ``write`` script that guards that field: it names the
stored bytes it planned from, and a call meeting other bytes writes nothing
and is planned again from the bytes it was told (with a short lease, so it
converges: see :func:`repocket.plan.write.run_writes`). So two writers adding
different targets at once both keep theirs, the list's index entries move
with it, and a version counter (``Meta.versioned``) is bumped like a save's.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast

from repocket import errors, keys
from repocket.attributes import BrokenReference, PointerList, _short_repr
from repocket.plan import load, repartition, write
from repocket.plan.rounds import Plan

if TYPE_CHECKING:
    from repocket.indexes import WritePlan
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = ["edit", "unlinking"]


def stored_keys(meta: ModelOptions, record: str, name: str, raw: bytes | None) -> list[str]:
    """The target keys a stored PointerList field holds (an absent field: none)."""
    if raw is None:
        return []
    return list(load.decode_field(meta, meta.fields[name], record, name, raw))


def _list_plan(meta: ModelOptions, pk: str, job: write.WriteJob, name: str,
               change: Callable[[list[str]], list[str]], check_version: int | None,
               target: Any = None) -> tuple[WritePlan, list[str], bytes | None]:
    """The plan replacing the stored list ``name`` of ``pk`` with ``change(stored keys)``, guarded.

    Returns the plan, the new keys and their encoded field (None when the list is unchanged: the
    plan then writes nothing but checks that the field still holds what it was planned from).
    """
    attr = meta.fields[name]
    record = meta.key(pk)
    plan = write._new_plan(meta, pk)
    write.check_alive(plan, meta)
    if check_version is not None:
        plan.check("version", str(check_version or ""))
    raw = (job.known_old or {}).get(name.encode())
    old = stored_keys(meta, record, name, raw)
    new = change(old)
    if new == old:
        write._guard(plan, name, raw)
        return plan, new, None
    write._plan_index_change(plan, meta, job, record, pk, name, new)
    encoded = meta.format.encode(attr, [_Key(key) for key in new])
    plan.write("hset", name, encoded)
    if meta.versioned:
        plan.write("bump")
    if target is not None and name in meta.guarded_pointers and not keys.LAYOUT.cluster:
        lease = keys.lease_key(target._meta.prefix_for(target.pk), target.pk)
        plan.check("target", plan.slot(target._key(), "h"), plan.slot(lease, "t"))
    return plan, new, encoded


class _Key:
    """A stored target key standing in for its record where a PointerList is encoded."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def _key(self) -> str:
        return self.key


def edit(instance: ActiveRecord, name: str, target: Any, add: bool) -> Plan[bool]:
    """Append ``target`` to the PointerList ``name`` of a saved record, or remove it, inside Redis.

    Returns whether the stored list changed (False: it held the target already,
    or did not hold it). The instance's list becomes the stored one, with the
    records other writers added meanwhile loaded (one more round trip then).
    """
    meta = instance._meta
    target = _target(meta, name, target, add, instance)
    pk = str(instance._pk())
    if meta.sources():
        yield from repartition.settle(meta, [instance], every=True)
    view = meta.for_pk(pk)
    wanted = target._key()

    def change(old: list[str]) -> list[str]:
        if add:
            return old if wanted in old else [*old, wanted]
        return [key for key in old if key != wanted]

    result: dict[str, Any] = {}
    versions = [instance._version] if meta.versioned else [None]
    if meta.versioned:
        versions.append(None)  # (a stale instance: the edit merges, so it goes ahead unchecked)

    def make_plan(job: write.WriteJob, version: int | None) -> WritePlan:
        plan, result["keys"], result["raw"] = _list_plan(view, pk, job, name, change, version,
                                                         target if add else None)
        return plan

    field = name.encode()
    believed = {field: instance._stored[field]} if instance._stored and field in instance._stored else {}
    for attempt, version in enumerate(versions):
        try:
            yield from write.run_writes(view, [write.WriteJob(functools.partial(make_plan, version=version),
                                                              dict(believed), must_exist=True)])
        except errors.ConflictError:
            if attempt + 1 == len(versions):
                raise
            continue
        if version is not None and result["raw"] is not None:  # (checked: nobody else wrote in between)
            instance._version = version + 1
        break
    yield from _settle(instance, name, result["keys"], result["raw"], target)
    return result["raw"] is not None


def _target(meta: ModelOptions, name: str, given: Any, add: bool, instance: ActiveRecord) -> Any:
    """The record ``append_<field>`` or ``remove_<field>`` was given, checked; for a removal also a
    broken entry (a BrokenReference, or the key or id it names), which no record stands for."""
    attr = cast(PointerList, meta.fields[name])
    target_meta = attr.to_model._meta
    if isinstance(given, attr.to_model):
        if given._data.get(target_meta.pk) is None or (add and given._stored is None):
            raise errors.UnsavedReferenceError(
                f"{meta.label}.{name}: the {target_meta.label} is not saved; save it before adding it to the list")
        return given
    if not add and type(given) is BrokenReference:
        return given
    if not add and isinstance(given, (str, uuid.UUID)):
        try:
            key = target_meta.current_key(str(given)) if ":" in str(given) else target_meta.key(uuid.UUID(str(given)))
        except ValueError:
            pass
        else:
            return BrokenReference(key, instance._key(), name)
    shown = "'***' (secret)" if attr.secret else _short_repr(given)
    what = f"a saved {target_meta.label} instance" + ("" if add else ", or its key or id")
    raise errors.ValidationError(
        f"{meta.label}.{name}: cannot {'append' if add else 'remove'} {shown} of type {type(given).__name__}; "
        f"expected {what}", model=meta.label, field=name, value=given, expected=what)


def _settle(instance: ActiveRecord, name: str, stored: list[str], raw: bytes | None, target: Any) -> Plan[None]:
    """Give the instance the stored list: the records it holds in memory, the others loaded."""
    if raw is not None and instance._stored is not None:
        instance._stored[name.encode()] = raw
    current = instance._data.get(name) or []
    known = {item._key(): item for item in [*current, target]}
    unknown = [key for key in stored if key not in known]
    if unknown:
        target_meta = instance._meta.fields[name].to_model._meta  # type: ignore[attr-defined]
        for key, found in zip(unknown, (yield from load.load(target_meta, unknown))):
            known[key] = found if found is not None else BrokenReference(key, instance._key(), name)
    instance._data[name] = [known[key] for key in stored]
    if name in instance._deferred:
        instance._deferred = instance._deferred - {name}


def unlinking(view: ModelOptions, record: Any, fields: Collection[str], gone: Collection[str],
              nulled: Collection[str]) -> write.WriteJob:
    """The job of a delete's call that drops the keys ``gone`` from ``record``'s PointerLists ``fields``
    (UNLINK) and sets its Pointers ``nulled`` to None (SET_NULL), with their index entries."""
    pk = str(record._data[view.pk])
    key = view.key(pk)

    def make_plan(job: write.WriteJob) -> WritePlan:
        plan = write._new_plan(view, pk)
        plan.check("exists")
        if view.versioned:
            plan.write("bump")
        for name in sorted(nulled):
            write._plan_index_change(plan, view, job, key, pk, name, None)
            raw = view.format.encode(view.fields[name], None)
            if raw is None:
                plan.write("hdel", name.encode())
            else:
                plan.write("hset", name.encode(), raw)
        for name in sorted(fields):
            old = stored_keys(view, key, name, (job.known_old or {}).get(name.encode()))
            new = [item for item in old if item not in gone]
            write._plan_index_change(plan, view, job, key, pk, name, new)
            plan.write("hset", name.encode(), view.format.encode(view.fields[name], [_Key(item) for item in new]))
        return plan

    return write.WriteJob(make_plan, record._stored, must_exist=True, meta=view)
