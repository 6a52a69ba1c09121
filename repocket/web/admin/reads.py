"""What the admin pages read besides records: sampled memory, a ByteStream's tail, the newest changes.

Each is a plan (:mod:`repocket.plan.rounds`) run on the async client by
:func:`repocket.io.clients.run_async`, so the admin sends its commands the
way the rest of repocket does (cluster routing, error mapping included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repocket.console import STATS_SAMPLE
from repocket.plan import changes as changes_plan
from repocket.plan.rounds import Pipeline, Plan, command

if TYPE_CHECKING:
    from repocket.changes import Change
    from repocket.options import ModelOptions

__all__ = ["STATS_SAMPLE", "bytes_per_record", "recent_changes", "stream_tail"]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def bytes_per_record(meta: ModelOptions) -> Plan[float | None]:
    """The mean ``MEMORY USAGE`` of up to :data:`STATS_SAMPLE` records' hashes (ids sampled by
    SRANDMEMBER, as ``repocket stats`` does); None for a model without records. Two round trips."""
    views = meta.views()
    replies = yield Pipeline([command("SRANDMEMBER", view.ids_key, STATS_SAMPLE) for view in views],
                             False, meta.label)
    sample = [view.key(_text(pk)) for view, ids in zip(views, replies) for pk in ids or ()][:STATS_SAMPLE]
    if not sample:
        return None
    sizes = yield Pipeline([command("MEMORY", "USAGE", key, key=key) for key in sample], False, meta.label)
    return sum(size or 0 for size in sizes) / len(sizes)


def stream_tail(key: str, label: str, offset: int | None, most: int) -> Plan[tuple[int, bytes, int]]:
    """``(start, bytes, length)``: up to ``most`` bytes of the string ``key`` from ``offset``
    (None: its last ``most`` bytes), and its length then; one round trip, in a MULTI."""
    start, end = (-most, -1) if offset is None else (offset, offset + most - 1)
    chunk, length = yield Pipeline([command("GETRANGE", key, start, end), command("STRLEN", key)], True, label)
    chunk = chunk or b""
    first = length - len(chunk) if offset is None else min(offset, length)
    return first, chunk, length


def recent_changes(meta: ModelOptions, count: int) -> Plan[list[Change]]:
    """The model's ``count`` newest changes (``Meta.changes``), newest first: XREVRANGE of every
    partition's stream in one round, merged by time."""
    views = meta.views()
    replies = yield Pipeline([command("XREVRANGE", view.changes_key, "+", "-", "COUNT", count) for view in views],
                             False, meta.label)
    found = [changes_plan._change(meta, number, stream_id, flat)
             for number, entries in enumerate(replies) for stream_id, flat in entries or () if flat]
    return sorted(found, key=changes_plan._by_time, reverse=True)[:count]
