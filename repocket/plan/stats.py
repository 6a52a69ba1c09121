"""What a model's records cost in memory, sampled: for ``repocket stats`` and the admin's models page.

Planning only (see :mod:`repocket.plan`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repocket.plan.rounds import Pipeline, Plan, command

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["STATS_SAMPLE", "bytes_per_record"]

#: How many records' hashes are asked their ``MEMORY USAGE``, per model.
STATS_SAMPLE = 100


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def bytes_per_record(meta: ModelOptions) -> Plan[float | None]:
    """The mean ``MEMORY USAGE`` of up to :data:`STATS_SAMPLE` records' hashes, their ids sampled by
    SRANDMEMBER (no record is read); None for a model without records. Two round trips."""
    views = meta.views()
    replies = yield Pipeline([command("SRANDMEMBER", view.ids_key, STATS_SAMPLE) for view in views],
                             False, meta.label)
    sample = [view.key(_text(pk)) for view, ids in zip(views, replies) for pk in ids or ()][:STATS_SAMPLE]
    if not sample:
        return None
    sizes = yield Pipeline([command("MEMORY", "USAGE", key, key=key) for key in sample], False, meta.label)
    return sum(size or 0 for size in sizes) / len(sizes)
