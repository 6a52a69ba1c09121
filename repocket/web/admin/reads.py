"""What the admin pages read besides records: sampled memory, a ByteStream's tail, the newest changes.

Each is a plan (:mod:`repocket.plan.rounds`) run on the async client by
:func:`repocket.io.clients.run_async`, so the admin sends its commands the
way the rest of repocket does (cluster routing, error mapping included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repocket.plan import changes as changes_plan
from repocket.plan.rounds import Pipeline, Plan, command
from repocket.plan.stats import STATS_SAMPLE, bytes_per_record

if TYPE_CHECKING:
    from repocket.changes import Change
    from repocket.options import ModelOptions

__all__ = ["STATS_SAMPLE", "bytes_per_record", "recent_changes", "stream_tail"]


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
