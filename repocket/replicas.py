"""Replicas (django-cqrs's sync): a model's changes applied to another Redis, or to a callback, by revision.

A :class:`Replica` reads a model's change stream (``Meta.changes``) from the
primary and applies each change once, in revision order per record:

- a replayed or older revision is skipped;
- a gap (a revision after the next one expected) is reported
  (:attr:`Replica.gaps`) and, for a Redis replica, repaired by copying the
  record whole from the primary;
- a replica that fell behind the trimming (ChangesTrimmedError) is rebuilt by
  :meth:`Replica.resync`.

On another Redis the changes are written through repocket's own writes, so
the replica's indexes are exact; each change is written with the replica's
bookkeeping (the record's revision and the stream position, records of
:class:`ReplicaState`) in one ``repocket.atomic()`` block: a replica that
stops halfway applies nothing twice.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repocket import attributes, errors, keys
from repocket.changes import Change, position
from repocket.io import clients
from repocket.model import ActiveRecord
from repocket.plan import load, write
from repocket.plan.rounds import Pipeline, Plan, command
from repocket.transaction import atomic

if TYPE_CHECKING:
    import redis

    from repocket.options import ModelOptions

__all__ = ["Gap", "Replica", "ReplicaState"]


class ReplicaState(ActiveRecord):
    """What a replica applied: a record's revision (``record`` set), or the stream position (``record`` "")."""

    replica = attributes.Unicode(index=True)
    model = attributes.Unicode()
    record = attributes.Unicode()
    revision = attributes.Integer(default=0)
    position = attributes.JSON(null=True)

    class Meta:
        namespace = "repocket"
        partitions = 1


@dataclass(frozen=True)
class Gap:
    """A change whose revision was not the next one the replica expected for its record."""

    id: str
    expected: int
    got: int


class Replica:
    """Apply ``model``'s changes from ``primary`` (default: the configured connection) to ``target`` (a
    ``redis.Redis``), or to ``callback(change)``, each once, by revision.

    A Redis replica keeps what it applied in ``target`` (:class:`ReplicaState`,
    named ``name``); a callback replica keeps it in memory, unless ``state``
    names a Redis to keep it in.
    """

    def __init__(self, model: type[ActiveRecord], *, target: redis.Redis | None = None,
                 callback: Callable[[Change], Any] | None = None, primary: redis.Redis | None = None,
                 state: redis.Redis | None = None, name: str = "replica", batch: int = 500) -> None:
        if (target is None) == (callback is None):
            raise ValueError("a replica applies changes to a target Redis or to a callback: give one of them")
        if model._meta.changes is None:
            raise errors.ValidationError(f"{model._meta.label}: a replica needs Meta.changes", model=model._meta.label,
                                         field=None, value=None, expected="Meta.changes")
        self.model, self.target, self.callback, self.primary = model, target, callback, primary
        self.state = state if state is not None else target
        self.name, self.batch = name, batch
        #: The gaps met so far (and repaired, for a Redis replica).
        self.gaps: list[Gap] = []
        #: Changes applied, and skipped as already applied, since this object was made.
        self.applied = self.skipped = 0
        #: The time of the last change applied (for the lag).
        self.last_at: datetime.datetime | None = None
        self._revisions: dict[str, int] = {}
        self._position: dict[int, str] = {}

    # -- bookkeeping -------------------------------------------------------------------

    def _state_id(self, record: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"repocket-replica:{self.name}:{self.model._meta.label}:{record}")

    def _state(self, record: str) -> ReplicaState | None:
        if self.state is None:
            return None
        try:
            found: ReplicaState = ReplicaState.objects.using(self.state).get(self._state_id(record))
        except ReplicaState.DoesNotExist:
            return None
        return found

    def _keep(self, record: str, found: ReplicaState | None, **values: Any) -> None:
        """Write (buffered, in the open block) the replica's bookkeeping of ``record`` ("": the position),
        over ``found``, its record as read (None: a new one)."""
        if self.state is None:
            return
        found = found or ReplicaState(id=self._state_id(record), replica=self.name, model=self.model._meta.label,
                                      record=record)
        for name, value in values.items():
            setattr(found, name, value)
        found.save(connection=self.state)

    def _applied(self, record: str) -> tuple[ReplicaState | None, int]:
        """The bookkeeping record of ``record`` (one read, None in memory) and the revision applied last."""
        if self.state is None:
            return None, self._revisions.get(record, 0)
        found = self._state(record)
        return found, found.revision if found is not None else 0

    def _where(self) -> tuple[ReplicaState | None, dict[int, str]]:
        """The bookkeeping record of the position (one read, None in memory) and the position."""
        if self.state is None:
            return None, dict(self._position)
        found = self._state("")
        return found, {int(k): v for k, v in (found.position or {}).items()} if found is not None else {}

    def revision(self, record: str) -> int:
        """The revision of ``record`` this replica applied last (0: none)."""
        return self._applied(record)[1]

    @property
    def position(self) -> dict[int, str]:
        """The last stream id the replica applied in each partition, which is where it stands."""
        return self._where()[1]

    # -- applying ------------------------------------------------------------------------

    def apply(self, change: Change) -> bool:
        """Apply one change unless its revision is applied already; whether it was applied."""
        kept, done = self._applied(change.id)
        if change.revision <= done:
            self.skipped += 1
            return False
        gap = change.revision > done + 1
        if gap:
            self.gaps.append(Gap(change.id, done + 1, change.revision))
        with atomic(connection=self.state):
            if self.callback is not None:
                self.callback(change)
                revision = change.revision
            elif gap:  # the record as the primary holds it now, with the revision it has now
                revision = self._copy(change.id)
            else:
                clients.run(_apply(self.model._meta, change), self.target)
                revision = change.revision
            self._keep(change.id, kept, revision=revision)
            at, here = self._where()
            self._keep("", at, position={str(k): v for k, v in position([change], here).items()})
        if self.state is None:
            self._revisions[change.id] = revision
            self._position[change.partition] = change.stream_id
        self.applied += 1
        self.last_at = change.at
        return True

    def _copy(self, pk: str) -> int:
        """Write the record ``pk`` to the target as the primary holds it; the revision it has there."""
        meta = self.model._meta
        view = meta.for_pk(pk)
        fetched, revision = clients.run(_read_primary(view, pk), self.primary)
        clients.run(_overwrite(view, pk, fetched), self.target)
        return revision

    def sync(self, limit: int | None = None) -> int:
        """Apply the changes after the replica's position (``limit`` at most); how many were read.

        Raises:
            repocket.errors.ChangesTrimmedError: the replica fell behind the trimming: call :meth:`resync`.
        """
        found = self.model.objects.using(self.primary).changes(since=self.position or None, limit=limit or self.batch)
        for change in found:
            self.apply(change)
        return len(found)

    def resync(self) -> int:
        """Rebuild the replica from the primary's records: each written whole, with the revision it has
        there, records the primary no longer has deleted; then read on from where the stream is now.
        Returns how many records were copied."""
        meta = self.model._meta
        tips, revisions = clients.run(_tips_and_revisions(meta), self.primary)  # (before the records)
        copied = 0
        present: set[str] = set()
        for record in self.model.objects.using(self.primary).all().iterator(chunk_size=self.batch):
            pk = str(record.pk)
            present.add(pk)
            with atomic(connection=self.state):
                if self.callback is not None:
                    self.callback(_snapshot_change(meta, record, revisions.get(pk, 0)))
                else:
                    view = meta.for_pk(pk)
                    clients.run(_overwrite(view, pk, (record._stored or {}, dict(record._stored_streams))),
                                self.target)
                self._keep(pk, self._state(pk), revision=revisions.get(pk, 0))
            if self.state is None:
                self._revisions[pk] = revisions.get(pk, 0)
            copied += 1
        if self.target is not None:
            for stale in self.model.objects.using(self.target).all():
                if str(stale.pk) not in present:
                    stale.delete(connection=self.target)
        with atomic(connection=self.state):
            self._keep("", self._where()[0], position={str(k): v for k, v in tips.items()})
        self._position = dict(tips)
        return copied

    def lag(self) -> datetime.timedelta | None:
        """How far behind the primary the last change applied was written (None before the first)."""
        if self.last_at is None:
            return None
        return datetime.datetime.now(datetime.timezone.utc) - self.last_at


def _snapshot_change(meta: ModelOptions, record: ActiveRecord, revision: int) -> Change:
    """A change standing for a whole record, for a callback replica's resync."""
    return Change("create", str(record.pk), record._key(), revision,
                  {k.decode() if isinstance(k, bytes) else k: v for k, v in (record._stored or {}).items()}, {},
                  datetime.datetime.now(datetime.timezone.utc), "", "", 0, {}, {}, meta.model)


def _current(view: ModelOptions, pk: str) -> Plan[tuple[dict[bytes, bytes], dict[str, bytes]] | None]:
    """The record ``pk`` as stored where the plan runs: its hash and ByteStreams, or None."""
    found = (yield from load.fetch([(view, view.key(pk))]))[0]
    if found is None:
        return None
    raw, streams = found
    return dict(raw), {name: streams.get(name, b"") for name in view.streams}


def _overwrite(view: ModelOptions, pk: str, fetched: Any) -> Plan[None]:
    """Make the record ``pk`` hold ``fetched`` (hash and streams, or None: gone), through repocket's writes."""
    current = yield from _current(view, pk)
    if fetched is None or not fetched[0]:
        if current is not None:
            yield from write.delete(view, [_built(view, pk, current, current)])
        return
    yield from _write_as(view, pk, current, ({_bytes(k): v for k, v in fetched[0].items()}, dict(fetched[1])))


def _bytes(name: Any) -> bytes:
    return name if isinstance(name, bytes) else str(name).encode()


def _built(view: ModelOptions, pk: str, values: Any, stored: Any) -> ActiveRecord:
    pending: load.Pending = []
    instance = load.build(view, view.key(pk), values, pending)
    for holder, name, target, at in pending:
        load.place(holder, name, at, attributes.BrokenReference(target, view.key(pk), name))
    instance._stored = dict(stored[0]) if stored is not None else None
    instance._stored_streams = dict(stored[1]) if stored is not None else {}
    return instance


def _write_as(view: ModelOptions, pk: str, current: Any, wanted: Any) -> Plan[None]:
    """Save the record ``pk`` as ``wanted`` (hash, streams) over what the target holds (``current``)."""
    pending: load.Pending = []
    instance = load.build(view, view.key(pk), wanted, pending)
    if pending:
        yield from load.resolve_pointers(pending, {})
    instance._stored = dict(current[0]) if current is not None else None
    instance._stored_streams = dict(current[1]) if current is not None else {}
    if instance._stored is not None and b"_version" in instance._stored:
        instance._version = int(instance._stored[b"_version"])
    yield from write.save(view, [instance])


def _apply(meta: ModelOptions, change: Change) -> Plan[None]:
    """Apply one change to the record where the plan runs (the replica)."""
    view = meta.for_pk(change.id)
    current = yield from _current(view, change.id)
    if change.op == "delete":
        if current is not None:
            yield from write.delete(view, [_built(view, change.id, current, current)])
        return
    raw = dict(current[0]) if current is not None else {}
    streams = dict(current[1]) if current is not None else {name: b"" for name in view.streams}
    for name in change.previous:
        if name not in change.fields:
            raw.pop(name.encode(), None)
    raw.update({name.encode(): value for name, value in change.fields.items()})
    streams.update(change.streams)
    for name, chunk in change.appended.items():
        streams[name] = streams.get(name, b"") + chunk
    yield from _write_as(view, change.id, current, (raw, streams))


def _read_primary(view: ModelOptions, pk: str) -> Plan[tuple[Any, int]]:
    """The record ``pk`` on the primary (hash and streams, or None) and its revision there."""
    found = yield from _current(view, pk)
    revision = (yield Pipeline([command("HGET", keys.revisions_key(view.prefix), pk)], False, view.label))[0]
    return found, int(revision or 0)


def _tips_and_revisions(meta: ModelOptions) -> Plan[tuple[dict[int, str], dict[str, int]]]:
    """Where each partition's change stream ends now, and every record's revision."""
    views = meta.views()
    reads = []
    for view in views:
        reads.append(command("XREVRANGE", view.changes_key, "+", "-", "COUNT", 1))
        reads.append(command("HGETALL", keys.revisions_key(view.prefix)))
    replies = yield Pipeline(reads, False, meta.label)
    tips: dict[int, str] = {}
    revisions: dict[str, int] = {}
    for number in range(len(views)):
        last, counts = replies[2 * number], replies[2 * number + 1]
        if last:
            tips[number] = last[0][0].decode()
        revisions.update({pk.decode(): int(count) for pk, count in counts.items()})
    return tips, revisions

