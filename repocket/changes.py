"""Change streams (``Meta.changes``): who changed what, read back in order, or followed by consumer groups.

Every write of a model that declares ``Meta.changes`` appends one entry to
its change stream in the same script call (repocket/lua/changes.lua):
there is no change without its write, and no write without its change.
``Model.objects.changes()`` reads them; ``Model.objects.follow()`` delivers
them to a consumer group, at least once (docs/changes.rst).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from repocket.io import clients
from repocket.plan import changes as plan
from repocket.plan.changes import Change, Snapshot, position

if TYPE_CHECKING:
    from repocket.model import ActiveRecord

__all__ = ["Change", "Feed", "Snapshot", "actor", "position"]


@contextlib.contextmanager
def actor(name: str) -> Iterator[None]:
    """Name who makes the writes inside the block (rococo's ``changed_by``): their change entries and
    versions carry it. A ``contextvars`` variable, so each thread and each asyncio task has its own."""
    if not isinstance(name, str):
        raise TypeError(f"an actor is a string, not {type(name).__name__}")
    token = plan.ACTOR.set(name)
    try:
        yield
    finally:
        plan.ACTOR.reset(token)


class Feed:
    """A consumer of a model's changes in the consumer group ``group`` (``Model.objects.follow()``).

    Each change is delivered until acknowledged (:meth:`ack`): at least once.
    A read first claims the entries other consumers of the group were given
    and left unacknowledged for ``claim_after`` seconds (a consumer that
    died), then asks for new ones, waiting up to ``block`` seconds. Iterating
    (``for change in feed``, or ``async for``) reads batch after batch, for
    ever; acknowledge each change once it is handled.
    """

    def __init__(self, model: type[ActiveRecord], group: str, consumer: str, *, claim_after: float = 60.0,
                 block: float = 5.0, count: int = 100, start: str = "0", connection: Any = None) -> None:
        if not group or not consumer:
            raise ValueError("a feed needs a group and a consumer name")
        self.model, self.group, self.consumer = model, group, consumer
        self.claim_after, self.block, self.count, self.start = claim_after, block, count, start
        self._connection = connection
        self._ready = False

    def _read(self, block: float | None) -> Any:
        meta = self.model._meta
        if not self._ready:
            yield from plan.create_group(meta, self.group, self.start)
            self._ready = True
        claimed = yield from plan.claim(meta, self.group, self.consumer, int(self.claim_after * 1000), self.count)
        if claimed:
            return claimed
        wait = self.block if block is None else block
        return (yield from plan.read_group(meta, self.group, self.consumer, self.count, int(wait * 1000)))

    def read(self, block: float | None = None) -> list[Change]:
        """One batch: claimed changes, else new ones (waiting ``block`` seconds at most, else the feed's)."""
        return clients.run(self._read(block), self._connection)

    async def aread(self, block: float | None = None) -> list[Change]:
        """The async twin of :meth:`read`."""
        return await clients.run_async(self._read(block), self._connection)

    def ack(self, *changes: Change) -> int:
        """Acknowledge handled changes: they are not delivered again. How many were pending."""
        return clients.run(plan.ack(self.model._meta, self.group, changes), self._connection)

    async def aack(self, *changes: Change) -> int:
        """The async twin of :meth:`ack`."""
        return await clients.run_async(plan.ack(self.model._meta, self.group, changes), self._connection)

    def __iter__(self) -> Iterator[Change]:
        while True:
            yield from self.read()

    async def __aiter__(self) -> AsyncIterator[Change]:
        while True:
            for change in await self.aread():
                yield change
