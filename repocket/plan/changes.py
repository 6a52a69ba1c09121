"""Reading what ``Meta.changes`` and ``Meta.history`` record (planning only; the writes are in the
``write`` script, repocket/lua/changes.lua).

A change entry is appended by the same script call as the write it records,
so there is no change without its write and no write without its change. This
module reads them back: a range of a model's changes (every partition's
stream, merged by time), a consumer group's deliveries and claims, and a
record's past versions.
"""

from __future__ import annotations

import contextvars
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from repocket import errors, keys
from repocket.plan import load
from repocket.plan.rounds import Pipeline, Plan, Sleep, command

if TYPE_CHECKING:
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = ["ACTOR", "Change", "Snapshot", "ack", "as_of", "claim", "create_group", "history", "position", "read",
           "read_group"]

#: Seconds a feed over several streams (read without blocking) waits after a read that found nothing.
POLL_PAUSE = 0.1

#: Who makes the writes of the current thread or task (``repocket.actor()``); "" when nobody said.
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("repocket_actor", default="")

@dataclass(frozen=True)
class Change:
    """One entry of a model's change stream: one write of one record.

    ``fields`` and ``previous`` hold stored values (the bytes of the record's
    hash fields, as ``redis-cli`` shows them) of the fields the write changed:
    ``fields`` the new ones (a field removed is absent), ``previous`` the old
    ones (a field that had none is absent). :meth:`values` decodes them.
    """

    op: str
    id: str
    key: str
    revision: int
    fields: dict[str, bytes]
    previous: dict[str, bytes]
    at: datetime.datetime
    actor: str
    stream_id: str
    #: The partition whose stream holds it (0 for a model of one partition).
    partition: int = 0
    #: ByteStreams the write set (their new bytes; b"" when emptied).
    streams: dict[str, bytes] = field(default_factory=dict)
    #: ByteStreams an append added to (the bytes added).
    appended: dict[str, bytes] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)

    def values(self, previous: bool = False) -> dict[str, Any]:
        """The changed fields' new values (``previous``: their old ones), decoded as the model reads them."""
        meta = self.model._meta
        stored = self.previous if previous else self.fields
        return {name: load.decode_field(meta, meta.fields[name], self.key, name, raw)
                for name, raw in stored.items() if name in meta.fields}


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)


def _change(meta: ModelOptions, partition: int, stream_id: Any, flat: dict[Any, Any]) -> Change:
    """A :class:`Change` from one stream entry."""
    entry = {_text(name): value for name, value in flat.items()}
    try:
        new = {name[4:]: value for name, value in entry.items() if name.startswith("new:")}
        old = {name[4:]: value for name, value in entry.items() if name.startswith("old:")}
        streams = {name[7:]: value for name, value in entry.items() if name.startswith("stream:")}
        appended = {name[7:]: value for name, value in entry.items() if name.startswith("append:")}
        at = datetime.datetime.fromtimestamp(int(entry["at"]) / 1000, datetime.timezone.utc)
        return Change(_text(entry["op"]), _text(entry["id"]), _text(entry["key"]), int(entry["revision"]), new, old,
                      at, _text(entry["actor"]), _text(stream_id), partition, streams, appended, meta.model)
    except (KeyError, ValueError) as exc:
        raise errors.CorruptRecordError(
            f"{meta.changes_key if not meta.partitioned else 'a change stream'} of {meta.label}: entry "
            f"{_text(stream_id)} is not one repocket wrote ({exc})", key=meta.label, field=None) from None


def _order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _by_time(change: Change) -> tuple[tuple[int, int], int]:
    """The order of changes merged from several partitions' streams: by stream id (time), then partition."""
    return _order(change.stream_id), change.partition


def _start_of(position: Any, partition: int) -> str | None:
    since = position.get(partition) if isinstance(position, dict) else position
    return None if since is None else str(since)


def read(meta: ModelOptions, since: Any = None, limit: int | None = None) -> Plan[list[Change]]:
    """A model's changes after ``since`` (exclusive; None: from the oldest kept), oldest first.

    On a model spread over partitions every partition's stream is read in one
    round, and the entries are merged by time; ``since`` is one stream id for
    all, or one per partition (``{partition: id}``, what :func:`position`
    gives). A ``limit`` cuts the result only between two ids, so that reading
    on from the last change returned misses nothing.

    Raises:
        repocket.errors.ChangesTrimmedError: the trimming removed changes after ``since``.
    """
    _changing(meta)
    views = meta.views()
    reads = []
    for number, view in enumerate(views):
        since_here = _start_of(since, number)
        start = "-" if since_here in (None, "0", "0-0") else "(" + since_here
        reads.append(command("XRANGE", view.changes_key, start, "+", *(["COUNT", limit] if limit else [])))
        reads.append(command("HGET", keys.trimmed_key(view.prefix), "id"))
    replies = yield Pipeline(reads, False, meta.label)
    found: list[Change] = []
    for number in range(len(views)):
        entries, trimmed = replies[2 * number], replies[2 * number + 1]
        since_here = _start_of(since, number)
        if trimmed is not None and since_here is not None and (
                since_here in ("0", "0-0") or _order(since_here) < _order(_text(trimmed))):
            raise errors.ChangesTrimmedError(
                f"{meta.label}: the changes after {since_here} up to {_text(trimmed)} were trimmed "
                f"(Meta.changes); read from {_text(trimmed)}, or resync", model=meta.label,
                since=since_here, trimmed=_text(trimmed))
        found += [_change(meta, number, stream_id, flat) for stream_id, flat in entries]
    found.sort(key=_by_time)
    if limit and len(found) > limit:
        cut = limit
        while cut > 0 and found[cut].stream_id == found[cut - 1].stream_id:
            cut -= 1
        found = found[:cut or limit]
    return found


def position(changes: Sequence[Change], start: Any = None) -> dict[int, str]:
    """Where a reader stands after ``changes`` (from ``start``): the last stream id read in each partition."""
    out = dict(start) if isinstance(start, dict) else {}
    for change in changes:
        out[change.partition] = change.stream_id
    return out


def create_group(meta: ModelOptions, group: str, start: str = "0") -> Plan[None]:
    """Create the consumer group ``group`` on every partition's stream (and the stream), unless it exists."""
    _changing(meta)
    for view in meta.views():
        try:
            yield Pipeline([command("XGROUP", "CREATE", view.changes_key, group, start, "MKSTREAM")], False,
                           meta.label)
        except errors.RepocketError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def read_group(meta: ModelOptions, group: str, consumer: str, count: int, block_ms: int | None) -> Plan[list[Change]]:
    """New entries for ``consumer`` of ``group`` (XREADGROUP ``>``), from every partition.

    One stream is read blocking for ``block_ms`` at most; several (a model
    spread over partitions, in other slots on a cluster) are read without
    blocking, in one round.
    """
    views = meta.views()
    blocking = ["BLOCK", block_ms] if block_ms and len(views) == 1 else []
    replies = yield Pipeline([command("XREADGROUP", "GROUP", group, consumer, "COUNT", count, *blocking,
                                      "STREAMS", view.changes_key, ">", key=view.changes_key) for view in views],
                             False, meta.label)
    found = []
    for number, reply in enumerate(replies):
        for _stream, entries in reply or []:
            found += [_change(meta, number, stream_id, flat) for stream_id, flat in entries if flat]
    if not found and block_ms and not blocking:  # (streams read without blocking: a pause before the next read)
        yield Sleep(min(block_ms / 1000, POLL_PAUSE))
    return sorted(found, key=_by_time)


def claim(meta: ModelOptions, group: str, consumer: str, idle_ms: int, count: int) -> Plan[list[Change]]:
    """Take over the entries other consumers of ``group`` were given and left unacknowledged for
    ``idle_ms`` (XAUTOCLAIM: a consumer that died), from every partition, in one round."""
    views = meta.views()
    replies = yield Pipeline([command("XAUTOCLAIM", view.changes_key, group, consumer, idle_ms, "0-0",
                                      "COUNT", count) for view in views], False, meta.label)
    found = []
    for number, reply in enumerate(replies):
        found += [_change(meta, number, stream_id, flat) for stream_id, flat in reply[1] if flat]
    return found


def ack(meta: ModelOptions, group: str, changes: Sequence[Change]) -> Plan[int]:
    """Acknowledge ``changes`` for ``group``: they are not delivered again. How many were pending."""
    by_partition: dict[int, list[str]] = {}
    for change in changes:
        by_partition.setdefault(change.partition, []).append(change.stream_id)
    if not by_partition:
        return 0
    views = meta.views()
    replies = yield Pipeline([command("XACK", views[number].changes_key, group, *ids)
                              for number, ids in sorted(by_partition.items())], False, meta.label)
    return sum(int(reply) for reply in replies)


def _changing(meta: ModelOptions) -> None:
    if meta.changes is None:
        raise errors.ValidationError(
            f"{meta.label}: its writes record no changes; declare Meta.changes (True, {{'maxlen': n}} or "
            "{'max_age': seconds})", model=meta.label, field=None, value=None, expected="Meta.changes")


def _versions(meta: ModelOptions, pk: str, entries: Sequence[Any]) -> Plan[list[ActiveRecord]]:
    """Read-only instances of the versions in ``entries`` of a record's history stream."""
    view = meta.for_pk(pk)
    key = view.key(pk)
    pending: load.Pending = []
    out = []
    for _stream_id, flat in entries:
        entry = dict(flat)
        revision, at = int(entry.pop(b"revision")), int(entry.pop(b"at"))
        actor, op = _text(entry.pop(b"actor")), _text(entry.pop(b"op"))
        if op == "delete" or not entry:
            continue  # (the version a delete left: no values)
        instance = load.build(view, key, (entry, {}), pending)
        instance._snapshot = Snapshot(revision, datetime.datetime.fromtimestamp(at / 1000, datetime.timezone.utc),
                                      actor, op)
        out.append(instance)
    if pending:
        yield from load.resolve_pointers(pending, {})
    return out


@dataclass(frozen=True)
class Snapshot:
    """What a past version of a record carries: its revision, when and by whom it was written, and how."""

    revision: int
    at: datetime.datetime
    actor: str
    op: str


def _keeping(meta: ModelOptions) -> None:
    if not meta.history:
        raise errors.ValidationError(
            f"{meta.label}: keeps no history; declare Meta.history (the number of versions to keep)",
            model=meta.label, field=None, value=None, expected="Meta.history")


def history(meta: ModelOptions, pk: str) -> Plan[list[ActiveRecord]]:
    """The versions of the record ``pk`` that ``Meta.history`` keeps, newest first (one round trip)."""
    _keeping(meta)
    view = meta.for_pk(pk)
    entries = (yield Pipeline([command("XREVRANGE", keys.history_key(view.prefix, pk), "+", "-")], False,
                              meta.label))[0]
    return (yield from _versions(meta, pk, entries))


def as_of(meta: ModelOptions, pk: str, revision: int) -> Plan[ActiveRecord]:
    """The version ``revision`` of the record ``pk``, if ``Meta.history`` still keeps it.

    Raises:
        Model.DoesNotExist: no kept version has that revision.
    """
    for version in (yield from history(meta, pk)):
        if version._snapshot.revision == revision:
            return version
    raise meta.model.DoesNotExist(
        f"{meta.label} {pk}: no kept version has revision {revision} (Meta.history keeps {meta.history})")
