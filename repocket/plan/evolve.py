"""Evolving a model's stored records after its declaration changed: the plan of ``repocket migrate``.

Three edits, given as a :class:`Changes`, rewrite every record that needs them
(docs/evolution.rst):

- *rename* ``old=new``: the stored field ``old``, which no attribute declares
  any more, becomes the declared ``new`` (read with ``new``'s type). A record
  holding both keeps ``new``, written by the current code, and loses ``old``;
- *drop* ``name``: the stored field ``name``, which no attribute declares, is
  deleted;
- *retype* ``name``: the declared ``name`` was stored with another type; each
  value is read with the type it was stored with (its envelope's tag, or the
  old type named, which the plain format needs) and converted to the declared
  type (from its plain text, else by the type's cast: ``12`` → ``"12"``,
  ``"12"`` → ``12``). A value that does not convert is reported, and its
  record is left as it was.

Each batch of ids (SSCAN of the id set) is written in one call of the
``write`` script, every field it changes guarded, so the call checks
everything before its first write, and a record changed meanwhile is re-read
and planned again. A declared indexed field's entries move in the same call
as its value; the index keys of a name no attribute declares any more (a
dropped one, or a renamed one's old name) are deleted once the walk is done,
since no query reads them. The walk is resumable: after each batch its SSCAN
cursor is kept in the hash ``<prefix>:_evolving``, under the edits' text, and
a run with the same edits starts there; and idempotent: a record already
evolved needs nothing, and is not written again. Planning only (see
:mod:`repocket.plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from repocket import errors, indexes, keys, serialization
from repocket.attributes import ATTRIBUTE_TYPES, Attribute, Reference, _short_repr
from repocket.formats import ENVELOPE, SECRET_MASK
from repocket.indexes import WritePlan
from repocket.plan import load
from repocket.plan.rounds import Command, Pipeline, Plan, command, one
from repocket.plan.write import (
    WriteJob,
    _guard,
    _new_plan,
    _plan_index_change,
    check_alive,
    run_writes,
)

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["ABSENT", "SAMPLES", "Changes", "EvolveReport", "changes", "migrate"]

#: How many records a report shows as samples of what changes.
SAMPLES = 3
#: How a sample shows a field the record does not store (before it is written, or once deleted).
ABSENT = "(absent)"
_CONVERSION_ERRORS = (TypeError, ValueError, ArithmeticError, errors.ValidationError)


@dataclass(frozen=True)
class Changes:
    """The edits of a migration, checked against the model by :func:`changes`."""

    #: old stored name -> declared name
    rename: Mapping[str, str] = field(default_factory=dict)
    #: stored names no attribute declares, to delete
    drop: tuple[str, ...] = ()
    #: declared name -> the type name it was stored with (None: the envelope's tag says)
    retype: Mapping[str, str | None] = field(default_factory=dict)

    def operations(self) -> list[str]:
        """The edits as text, in a stable order: the keys of :attr:`EvolveReport.counts`."""
        return ([f"rename {old}={new}" for old, new in sorted(self.rename.items())]
                + [f"drop {name}" for name in sorted(self.drop)]
                + [f"retype {name}" + (f" from {old}" if old else "") for name, old in sorted(self.retype.items())])

    def signature(self) -> str:
        """The edits' text, naming a run's cursor: a run of other edits does not resume it."""
        return "; ".join(self.operations())

    def gone(self) -> list[str]:
        """The stored names no attribute declares any more, whose index keys go at the end."""
        return sorted({*self.rename, *self.drop})


@dataclass
class EvolveReport:
    """What a migration did (or, with ``dry_run``, would do)."""

    model: str
    dry_run: bool = False
    #: Records read.
    records: int = 0
    #: Records rewritten (with ``dry_run``: that would be).
    changed: int = 0
    #: Records each edit applied to, by the edit's text (``"rename old=new"``, ``"drop f"``, ``"retype f"``).
    counts: dict[str, int] = field(default_factory=dict)
    #: ``(record key, field, stored value, what is wrong)`` of the values that could not be converted;
    #: those records were left as they were. A secret value is masked.
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: A few records and what changes in them: ``(record key, {field: (before, after)})``.
    samples: list[tuple[str, dict[str, tuple[str, str]]]] = field(default_factory=list)
    #: Index keys of names no attribute declares any more, deleted (or, with ``dry_run``, found).
    index_keys_removed: int = 0

    @property
    def ok(self) -> bool:
        """True when every record could be evolved."""
        return not self.problems


def changes(meta: ModelOptions, rename: Mapping[str, str] | None = None, drop: Iterable[str] = (),
            retype: Iterable[str] | Mapping[str, str | None] = ()) -> Changes:
    """The edits, checked against the model's declaration.

    Raises:
        repocket.errors.UnknownFieldError: a rename's new name or a retyped name is not an attribute.
        repocket.errors.ValidationError: an edit that cannot apply (a name still declared, dropped; a
            name edited twice; a type that is not an attribute type; the plain format, which does not
            record types, without the old type).
    """
    rename = dict(rename or {})
    dropped = tuple(dict.fromkeys([drop] if isinstance(drop, str) else drop))
    retyped: dict[str, str | None] = dict(retype) if isinstance(retype, Mapping) else dict.fromkeys(
        [retype] if isinstance(retype, str) else retype)
    for old, new in rename.items():
        _undeclared(meta, old, "renamed")
        _declared(meta, new)
    for name in dropped:
        _undeclared(meta, name, "dropped")
        if name in rename:
            raise _refused(meta, name, "is both renamed and dropped")
    if len(set(rename.values())) < len(rename):
        raise _refused(meta, sorted(rename.values())[0], "is the new name of two renames")
    for name, old_type in retyped.items():
        attr = _declared(meta, name)
        if isinstance(attr, Reference) or (old_type is not None and issubclass(ATTRIBUTE_TYPES.get(
                old_type, Attribute), Reference)):
            raise _refused(meta, name, "is a Pointer or PointerList (or was): they are not retyped")
        if old_type is not None and old_type not in ATTRIBUTE_TYPES:
            raise _refused(meta, name, f"names the old type {old_type!r}, which is no attribute type "
                                       f"(one of {', '.join(sorted(ATTRIBUTE_TYPES))})")
        if old_type is None and meta.format is not ENVELOPE:
            raise _refused(meta, name, "is stored in the plain format, which does not record types: name "
                                       f"the type it was stored with ({name}=Integer, say)")
    return Changes(rename, dropped, retyped)


def _declared(meta: ModelOptions, name: str) -> Attribute[Any]:
    """The declared attribute ``name`` that lives in the record hash, or the error naming the valid ones."""
    attr = meta.fields.get(name)
    if attr is None:
        raise meta.unknown_field(name)
    if not attr.stored_in_hash or name == meta.pk:
        raise _refused(meta, name, "is the primary key or a ByteStream, which are not edited")
    return attr


def _undeclared(meta: ModelOptions, name: str, what: str) -> None:
    """Refuse to rename or drop a name an attribute still declares, or one no attribute could have."""
    if name in meta.fields:
        raise _refused(meta, name, f"is still declared: only a stored name no attribute declares is {what}")
    if not name or name.startswith("_") or ":" in name:
        raise _refused(meta, name, "is not an attribute name (repocket's own fields start with '_')")


def _refused(meta: ModelOptions, name: str, why: str) -> errors.ValidationError:
    return errors.ValidationError(f"{meta.label}.{name}: {why}; nothing was written", model=meta.label,
                                  field=name, value=name, expected="an edit that applies to the declaration")


def migrate(meta: ModelOptions, edits: Changes, batch_size: int = 500, dry_run: bool = False,
            progress: Callable[[int, int], None] | None = None) -> Plan[EvolveReport]:
    """Apply ``edits`` to every stored record, ``batch_size`` per script call; returns the report.

    With ``dry_run`` nothing is written (and no cursor kept): the report says
    what would change. ``progress(done, total)`` is called after each batch,
    counting the records of every partition.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = EvolveReport(meta.label, dry_run, counts=dict.fromkeys(edits.operations(), 0))
    views = meta.views()
    signature = edits.signature()
    replies = yield Pipeline([command(*args) for view in views for args in (
        ("HGET", keys.evolving_key(view.prefix), signature), ("SCARD", view.ids_key))], False, meta.label)
    total = sum(int(size) for size in replies[1::2])
    seen = [0]  # records walked so far, over every partition (progress counts them all)

    def walked(count: int) -> None:
        seen[0] += count
        if progress is not None:
            progress(min(seen[0], total), total)

    for view, saved in zip(views, replies[0::2]):
        start = 0 if dry_run or saved is None else int(saved)
        yield from _walk(view, edits, start, batch_size, report, walked)
        report.index_keys_removed += yield from _drop_index_keys(view, edits.gone(), dry_run)
    if progress is not None:
        progress(total, total)
    return report


def _walk(meta: ModelOptions, edits: Changes, cursor: Any, batch_size: int, report: EvolveReport,
          walked: Callable[[int], None]) -> Plan[None]:
    """Walk one partition's id set from ``cursor`` (kept by a run cut short), evolving each batch and
    keeping the cursor after it."""
    signature = edits.signature()
    while True:
        cursor, ids = (yield one("SSCAN", meta.ids_key, cursor, "COUNT", batch_size, label=meta.label))[0]
        pks = [pk.decode() for pk in ids]
        if pks:
            yield from _batch(meta, edits, pks, report)
        if int(cursor) == 0:
            break
        if not report.dry_run:  # (after the batch's write: a run stopped in between does that batch again)
            yield one("HSET", keys.evolving_key(meta.prefix), signature, int(cursor), label=meta.label)
        walked(len(pks))
    if not report.dry_run:
        yield one("HDEL", keys.evolving_key(meta.prefix), signature, label=meta.label)
    walked(len(pks))


@dataclass
class _Edit:
    """One record's planned change: the fields written, the declared values they now hold."""

    #: field -> new stored bytes (None: the field is deleted)
    writes: dict[str, bytes | None] = field(default_factory=dict)
    #: declared field -> its new value (for its index entries)
    values: dict[str, Any] = field(default_factory=dict)
    #: retyped field -> (the type it was stored with, the value it held), whose entries are removed
    before: dict[str, tuple[Attribute[Any], Any]] = field(default_factory=dict)
    #: field -> the value it held, as a sample shows it
    old_values: dict[str, Any] = field(default_factory=dict)
    #: the edits that apply
    applied: list[str] = field(default_factory=list)
    #: (field, stored value shown, what is wrong), when a value does not convert
    problem: tuple[str, str, str] | None = None


def _batch(meta: ModelOptions, edits: Changes, pks: list[str], report: EvolveReport) -> Plan[None]:
    """Evolve the records ``pks`` that need it, in one script call (planning them from what they hold)."""
    fetched = yield from load.fetch([(meta, meta.key(pk)) for pk in pks], None)
    found = [(pk, raw[0], _plan_edit(meta, edits, raw[0])) for pk, raw in zip(pks, fetched)
             if raw is not None]  # (None: deleted since the id set was read)
    yield from _skip_moved_entries(meta, found)
    report.records += len(found)
    if report.dry_run:
        for pk, stored, planned in found:
            _count(meta, report, pk, stored, planned)
        return
    jobs, latest = [], []
    for pk, stored, planned in found:
        if planned.problem is not None or not (planned.writes or planned.before):
            _count(meta, report, pk, stored, planned)  # (a problem, or evolved already: nothing to write)
            continue
        planned_now = [planned]  # what make_plan planned last, from what the record held then
        jobs.append(WriteJob(_writer(meta, edits, pk, planned_now), stored, must_exist=False))
        latest.append((pk, stored, planned_now))
    if jobs:
        yield from run_writes(meta, jobs)
    for (pk, stored, planned_now), job in zip(latest, jobs):  # counted once written, as the write planned it
        _count(meta, report, pk, job.known_old or stored, planned_now[0])


def _count(meta: ModelOptions, report: EvolveReport, pk: str, stored: dict[bytes, bytes], planned: _Edit) -> None:
    """Add one record's edit (written, or with ``dry_run`` to write) to the report."""
    if planned.problem is not None:
        report.problems.append((meta.key(pk), *planned.problem))
        return
    if not planned.writes and not planned.before:
        return  # evolved already (or deleted meanwhile)
    report.changed += 1
    for operation in planned.applied:
        report.counts[operation] += 1
    if len(report.samples) < SAMPLES:
        report.samples.append((meta.key(pk), _shown(meta, stored, planned)))


def _skip_moved_entries(meta: ModelOptions, found: list[tuple[str, dict[bytes, bytes], _Edit]]) -> Plan[None]:
    """Forget the entry moves of retyped values whose bytes stay the same (the plain format: ``12`` is the
    text of an Integer and of a Unicode) when the entries have moved already: their record is evolved.

    The entries say so exactly: every one of the declared type's is there, and none of the old type's
    that the declared type does not have too. One round trip for the batch, when there are such values.
    """
    asked: list[tuple[_Edit, str, list[tuple[str, str, tuple[str, ...]]], list[tuple[str, str, tuple[str, ...]]]]] = []
    for pk, _, planned in found:
        for name, (old_attr, old_value) in planned.before.items():
            if name in planned.writes:
                continue
            try:
                new = list(indexes.entries(meta, name, planned.values[name], pk))
                old = [e for e in indexes.entries(cast("ModelOptions", _OldFields(meta.prefix, name, old_attr)),
                                                  name, old_value, pk) if e not in new]
            except (ArithmeticError, ValueError, TypeError):
                continue  # (entries no value can name: moved with the write, as any other)
            asked.append((planned, name, new, old))
    if not asked:
        return
    reads = [_entry_read(entry) for _, _, new, old in asked for entry in new + old]
    replies = iter((yield Pipeline(reads, False, meta.label)))
    for planned, name, new, old in asked:
        there = [bool(next(replies)) if kind == "s" else next(replies) is not None for _, kind, _ in new + old]
        if all(there[:len(new)]) and not any(there[len(new):]):
            del planned.before[name]
            del planned.values[name]
            planned.applied.remove(next(op for op in planned.applied if op.startswith(f"retype {name}")))


def _entry_read(entry: tuple[str, str, tuple[str, ...]]) -> Command:
    """The read that says whether an index entry is there: SISMEMBER, or ZSCORE of its member."""
    key, kind, args = entry
    return command("SISMEMBER", key, args[0]) if kind == "s" else command("ZSCORE", key, args[-1])


def _writer(meta: ModelOptions, edits: Changes, pk: str, planned_now: list[_Edit]) -> Callable[[WriteJob], WritePlan]:
    """The write of one record's edit, planned again from what it holds when it changed under us
    (``planned_now[0]`` is the edit planned last)."""

    def make_plan(job: WriteJob) -> WritePlan:
        plan = _new_plan(meta, pk)
        stored = job.known_old
        if stored is None:  # deleted meanwhile: nothing to evolve
            planned_now[0] = _Edit()
            return plan
        planned = planned_now[0] = _plan_edit(meta, edits, stored)
        check_alive(plan, meta)
        record = meta.key(pk)
        if planned.problem is not None:  # (it changed under us into a value that does not convert)
            for name in sorted({*edits.rename, *edits.rename.values(), *edits.retype}):
                _guard(plan, name, stored.get(name.encode()))
            return plan  # guards only: nothing is written
        for name, (old_attr, old_value) in planned.before.items():
            _remove_old_entries(plan, meta, name, old_attr, old_value, pk)
        for name, value in planned.values.items():
            if meta.fields[name].index:  # (guards the field too)
                _plan_index_change(plan, meta, job, record, pk, name, value)
        for name in planned.writes:
            if name not in planned.values or not meta.fields[name].index:
                _guard(plan, name, stored.get(name.encode()))
        for name, raw in planned.writes.items():
            if raw is None:
                plan.write("hdel", name)
            else:
                plan.write("hset", name, raw)
        if meta.versioned and planned.writes:
            plan.write("bump")  # (an instance read before the migration no longer saves over it)
        return plan

    return make_plan


def _plan_edit(meta: ModelOptions, edits: Changes, stored: dict[bytes, bytes]) -> _Edit:
    """What the edits change in a record holding ``stored`` (nothing, for one evolved already)."""
    edit = _Edit()
    moved: set[str] = set()
    for old, new in sorted(edits.rename.items()):
        raw = stored.get(old.encode())
        if raw is None:
            continue
        edit.applied.append(f"rename {old}={new}")
        edit.writes[old] = None
        if new.encode() in stored:
            continue  # written by the current code: it wins, and the old copy goes
        moved.add(new)
        if not _convert(meta, edits, new, raw, edit, moved=True):
            return edit
    for name in edits.drop:
        if name.encode() in stored:
            edit.applied.append(f"drop {name}")
            edit.writes[name] = None
    for name in sorted(edits.retype):
        raw = stored.get(name.encode())
        if raw is None or name in moved:
            continue
        if not _convert(meta, edits, name, raw, edit, moved=False):
            return edit
    return edit


def _convert(meta: ModelOptions, edits: Changes, name: str, raw: bytes, edit: _Edit, moved: bool) -> bool:
    """Plan ``name``'s new stored value from ``raw`` (retyped if it is; ``moved``: stored under its old
    name); False, with the problem, if it cannot."""
    attr = meta.fields[name]
    value, problem = meta.format.decode(meta, attr, name, raw)
    if name not in edits.retype:
        if problem is not None:
            edit.problem = (name, _stored_text(attr, raw), problem)
            return False
        edit.old_values[name] = value
        _set(meta, edit, name, raw, value, moved)
        return True
    old_type = edits.retype[name]
    if old_type is None:  # the envelope's tag says
        tag = _envelope_tag(raw)
        if problem is None:  # stored as the declared type already
            if moved:
                edit.old_values[name] = value
                _set(meta, edit, name, raw, value, moved)
            return True
        if tag is None or tag not in ATTRIBUTE_TYPES:
            edit.problem = (name, _stored_text(attr, raw), problem)
            return False
        old_type = tag
    old_attr = ATTRIBUTE_TYPES[old_type]()
    old_value, problem = meta.format.decode(meta, old_attr, name, raw)
    if problem is not None:
        value, problem = meta.format.decode(meta, attr, name, raw)
        if problem is None:  # (plain format) it reads as the declared type, and not as the old one: evolved
            if moved:
                edit.old_values[name] = value
                _set(meta, edit, name, raw, value, moved)
            return True
        edit.problem = (name, _stored_text(attr, raw), problem)
        return False
    try:
        value = _retyped(old_attr, attr, old_value)
    except _CONVERSION_ERRORS:
        shown = SECRET_MASK if attr.secret else _short_repr(old_value)
        edit.problem = (name, shown, f"the {old_type} value {shown} does not convert to {type(attr).__name__}")
        return False
    edit.applied.append(f"retype {name}" + (f" from {edits.retype[name]}" if edits.retype[name] else ""))
    edit.old_values[name] = old_value
    _set(meta, edit, name, raw, value, moved)
    if attr.index:
        edit.before[name] = (old_attr, old_value)
    return True


def _set(meta: ModelOptions, edit: _Edit, name: str, raw: bytes, value: Any, moved: bool) -> None:
    """Plan the declared ``name`` to hold ``value`` (stored as ``raw`` before, under it or, ``moved``, its old
    name)."""
    new = meta.format.encode(meta.fields[name], value)
    edit.values[name] = value
    if moved or new != raw:
        edit.writes[name] = new


def _retyped(old_attr: Attribute[Any], attr: Attribute[Any], value: Any) -> Any:
    """``value`` of type ``old_attr`` as the type ``attr``: read from its plain text, else cast."""
    if value is None:
        return None
    try:
        text = old_attr.to_plain(value)
        if text is not None:
            return attr.from_plain(text)
    except (TypeError, ValueError, ArithmeticError):
        pass
    return attr.cast(value)


def _envelope(raw: bytes) -> dict[str, Any] | None:
    """A stored value's JSON envelope, or None when it is not one."""
    try:
        envelope = serialization.loads(raw)
    except (ValueError, RecursionError):
        return None
    return envelope if type(envelope) is dict else None


def _envelope_tag(raw: bytes) -> str | None:
    """The type tag of a stored envelope, or None when it is not one."""
    tag = (_envelope(raw) or {}).get("type")
    return tag if isinstance(tag, str) else None


def _stored_text(attr: Attribute[Any], raw: bytes) -> str:
    """A stored value as a report shows it (masked when secret)."""
    return SECRET_MASK if attr.secret else _short_repr(raw.decode("utf-8", "backslashreplace"))


class _OldFields:
    """What :func:`repocket.indexes.entries` reads of a model, with a field's old type in its place."""

    def __init__(self, prefix: str, name: str, attr: Attribute[Any]) -> None:
        self.prefix = prefix
        self.fields = {name: attr}


def _remove_old_entries(plan: WritePlan, meta: ModelOptions, name: str, old_attr: Attribute[Any], old_value: Any,
                        pk: str) -> None:
    """Remove the index entries a retyped field's value had under its old type (and its unique claim)."""
    shim = cast("ModelOptions", _OldFields(meta.prefix, name, old_attr))
    try:
        plan.remove_entries(shim, name, old_value, pk)
        token = old_attr.index_token(old_value) if meta.fields[name].unique and old_value is not None else None
    except (ArithmeticError, ValueError, TypeError):
        return  # an old value no entry could name (an old type that is not indexable): it had none
    if token is not None:
        plan.write("udel", plan.slot(keys.unique_key(meta.prefix, name), "h"), token, pk)


def _shown(meta: ModelOptions, stored: dict[bytes, bytes], edit: _Edit) -> dict[str, tuple[str, str]]:
    """``{field: (before, after)}`` of one record, as a sample shows it (secrets masked, a field not
    stored as ABSENT)."""
    out = {}
    for name, raw in edit.writes.items():
        attr = meta.fields.get(name)
        before = stored.get(name.encode())
        if attr is not None and attr.secret:
            out[name] = (SECRET_MASK if before is not None else ABSENT, SECRET_MASK if raw is not None else ABSENT)
            continue
        if before is None:
            old = ABSENT
        elif name in edit.old_values:
            old = _short_repr(edit.old_values[name], 40)
        else:  # a name no attribute declares: its envelope's value, else its text
            old = _short_repr(_stored_value(before), 40)
        out[name] = (old, ABSENT if raw is None else _short_repr(edit.values.get(name), 40))
    return out


def _stored_value(raw: bytes) -> Any:
    """What an undeclared stored field holds: its envelope's value, else its text."""
    envelope = _envelope(raw)
    if envelope is not None and "value" in envelope:
        return envelope["value"]
    return raw.decode("utf-8", "backslashreplace")


def _drop_index_keys(meta: ModelOptions, names: list[str], dry_run: bool) -> Plan[int]:
    """Delete (or, with ``dry_run``, count) the index keys of the names no attribute declares any more."""
    if not names:
        return 0
    fixed = [make(meta.prefix, name) for name in names for make in (
        keys.null_index_key, keys.sorted_index_key, keys.lex_index_key, keys.unique_key)]
    found = [key for key, there in zip(fixed, (yield Pipeline([command("EXISTS", k) for k in fixed], False,
                                                                meta.label))) if there]
    for name in names:
        pattern = keys.escape_glob(keys.eq_index_key(meta.prefix, name, "")) + "*"
        cursor: Any = 0
        while True:
            cursor, batch = (yield one("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, key=meta.prefix,
                                       label=meta.label))[0]
            found += [k.decode() if isinstance(k, bytes) else k for k in batch]
            if int(cursor) == 0:
                break
    found = sorted(set(found))
    if found and not dry_run:
        deletes: list[Command] = [command("DEL", key) for key in found]
        yield Pipeline(deletes, False, meta.label)
    return len(found)
