"""``repocket.atomic()``: several writes, of one model or more, all written or none (SPEC §8).

Inside the block, saves, deletes, increments and appends are buffered; at its
end they are sent as one call of the write script, which checks every guard,
unique value and version first, so a failure writes nothing and raises. Reads
inside the block see Redis, not the buffer (docs/consistency.rst).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from repocket.io import clients
from repocket.plan import unit

__all__ = ["atomic"]


class atomic:  # noqa: N801 - named like Django's transaction.atomic, used as ``with repocket.atomic():``
    """A unit of work, used as ``with repocket.atomic():`` or ``async with repocket.atomic():``.

    - The writes made inside (``save()``, ``delete()``, ``incr()``,
      ``append_<field>()``, the bulk methods, across models) are buffered and
      applied at exit as one atomic script call. If any check fails (a value
      changed under a guard, a unique value taken, a stale version, a record
      gone) nothing is written, and the error is raised from the ``with``.
    - ``before_*`` hooks run when a write is buffered; ``after_*`` hooks after
      the commit. An exception inside the block writes nothing.
    - Blocks nest: an inner block joins the outer one.
    - A record is written at most once per block (a second write raises
      ``ValidationError``); ``delete()`` returns 0 inside a block, since the
      count is known only once the block is written.
    - On a Redis Cluster every record of a block must share one partition's
      slot, else ``CrossPartitionError`` is raised before anything is written.
    - The commit goes through ``connection`` (default: the configured one).
    """

    def __init__(self, *, connection: Any = None) -> None:
        self._connection = connection
        self._unit: unit.Unit | None = None
        self._token: Any = None

    def _enter(self) -> None:
        if unit.ACTIVE.get() is not None:
            return  # (nested: the outer block commits)
        self._unit = unit.Unit()
        self._token = unit.ACTIVE.set(self._unit)

    def _leave(self) -> unit.Unit | None:
        if self._unit is None:
            return None
        unit.ACTIVE.reset(self._token)
        done, self._unit = self._unit, None
        return done

    def __enter__(self) -> atomic:
        self._enter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        done = self._leave()
        if done is not None and kind is None:
            clients.run(done.commit(), self._connection)

    async def __aenter__(self) -> atomic:
        self._enter()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        done = self._leave()
        if done is not None and kind is None:
            await clients.run_async(done.commit(), self._connection)
