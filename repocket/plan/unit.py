"""A unit of work (``repocket.atomic()``): the writes of a block, buffered, then sent as one script call.

While a unit is open in the current context, :func:`repocket.plan.write.run_writes`
plans its jobs and adds them to the unit instead of sending them, and the
``after_*`` hooks wait for the commit. The commit sends every plan in one call
of the ``write`` script, which checks every guard, unique value and version of
every record before its first write: all of them are written, or none. A plan
is made once, from what the instances held when they were written: a refusal
(a value changed since) is raised, not planned again.
Planning only.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot

from repocket import errors, keys
from repocket.plan.rounds import Hooks, Plan

if TYPE_CHECKING:
    from repocket import indexes
    from repocket.options import ModelOptions
    from repocket.plan.write import WriteJob

__all__ = ["ACTIVE", "Unit"]


@dataclass
class Unit:
    """The writes buffered by an open ``atomic()`` block, and the hooks that run once they are written."""

    # The jobs, each with the model options (partition) it writes to and its plan, made when it was buffered.
    jobs: list[tuple[ModelOptions, WriteJob, indexes.WritePlan]] = field(default_factory=list)
    #: The ``after_*`` hook and receiver calls, run after the commit.
    after: list[tuple[Any, tuple[Any, ...]]] = field(default_factory=list)
    #: The record keys written so far, each at most once per unit.
    written: set[str] = field(default_factory=set)

    def add(self, meta: ModelOptions, jobs: Sequence[WriteJob]) -> None:
        """Buffer ``jobs``, planned now (from what the instances hold now), refusing a record written twice."""
        planned = [(job.meta or meta, job, job.make_plan(job)) for job in jobs]
        for _, _, plan in planned:
            key = plan.keys[0]
            if key in self.written:
                raise errors.ValidationError(
                    f"{meta.label}: {key} is written twice in one atomic() block, which one script call cannot "
                    "check in order; write it once, at the end of the block. Nothing was written",
                    model=meta.label, field=None, value=None, expected="one write per record and block")
            self.written.add(key)
        self.jobs += planned

    def commit(self) -> Plan[None]:
        """Send every buffered job in one call of the write script, then run the deferred hooks."""
        from repocket.plan import write

        if self.jobs:
            meta = self.jobs[0][0]
            if keys.LAYOUT.cluster:
                slots = {key_slot(job_meta.prefix.encode()) for job_meta, _, _ in self.jobs}  # (by the hash tag)
                if len(slots) > 1:
                    names = sorted({job_meta.label for job_meta, _, _ in self.jobs})
                    raise errors.CrossPartitionError(
                        f"an atomic() block writes to {len(slots)} slots of the cluster ({', '.join(names)}), which "
                        "one script call cannot do; nothing was written. Keep a block within one partition")
            yield from write.run_planned(meta, self.jobs)
        if self.after:
            yield Hooks(self.after)


#: The unit open in the current thread or task, if any.
ACTIVE: contextvars.ContextVar[Unit | None] = contextvars.ContextVar("repocket_unit", default=None)


def open_unit() -> Unit | None:
    """The unit writes go to now, or None: they are sent at once (a block commits once it is closed, so
    its own commit, and the hooks it runs, write at once)."""
    return ACTIVE.get()
