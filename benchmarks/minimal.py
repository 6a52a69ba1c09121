"""The minimal redis-py program: what a careful user writes without an ORM.

It stores the benchmark's ``Person`` records the simplest way that still answers
every query of the benchmark from an index, on a client made with
``decode_responses=True`` (redis-py and hiredis decode the replies to ``str``):

* one hash per record, ``<prefix>:<uuid>``, holding each field's plain value as
  redis-py writes it: text as UTF-8, an int as its decimal digits, a float as its
  ``repr()`` (``name``, ``age``, ``city``, ``bio``, ``score``, ``tag``); the id is
  only in the key;
* the set of every id, ``<prefix>:ids``;
* for each indexed field (``name``, ``age``, ``city``, ``tag``) one set per value,
  ``<prefix>:<field>:<value>``, holding the ids of the records with that value;
* one sorted set, ``<prefix>:age``, of the ids scored by age, for the range filter
  (the only query that needs an order kept by Redis).

What it does per operation:

* create: one MULTI/EXEC pipeline: HSET of the fields, SADD to the id set, SADD to
  one set per indexed field, ZADD of the age;
* bulk create: the same commands, 500 records per MULTI/EXEC pipeline;
* get by id: one HGETALL, then the values typed back (``int()``, ``float()``, the
  id from the key as ``uuid.UUID``): one dict per record, equal to repocket's
  ``to_dict(simple=True)``;
* filter: SMEMBERS of the value's set, then one pipeline of HGETALL;
  filter + order_by: the same, sorted in Python; range filter: ZRANGEBYSCORE,
  then one pipeline of HGETALL;
* count: SCARD of the id set;
* delete one by one: the record in hand (id and values), one MULTI/EXEC pipeline
  of DEL, SREM from the id set and from each value's set, ZREM of the age;
* bulk delete (``delete_where``): SMEMBERS, one pipeline of HMGET of the indexed
  fields, then MULTI/EXEC pipelines of 500 records' DEL/SREM/ZREM.

:class:`AsyncMinimal` is the same program on ``redis.asyncio`` (the same keys and
values, the same round trips, each awaited).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import redis
import redis.asyncio as aioredis

from benchmarks.common import AsyncPipelinedWrites, PipelinedWrites

__all__ = ["INDEXED", "AsyncMinimal", "Minimal", "MinimalLayout"]

#: The indexed fields: one set per value each.
INDEXED = ("name", "age", "city", "tag")
#: The field kept in a sorted set too (the range filter).
SORTED = "age"


def decode(pk: str, raw: dict[str, str]) -> dict[str, Any]:
    """One record from its id and its hash (``str`` values), typed back."""
    return {
        "id": uuid.UUID(pk),
        "name": raw["name"],
        "age": int(raw["age"]),
        "city": raw["city"],
        "bio": raw["bio"],
        "score": float(raw["score"]),
        "tag": raw["tag"],
    }


class MinimalLayout:
    """The keys of Person records under ``prefix``, shared by the sync and async programs."""

    def __init__(self, prefix: str, batch_size: int = 500) -> None:
        self.prefix = prefix
        self.ids_key = f"{prefix}:ids"
        self.sorted_key = f"{prefix}:{SORTED}"
        self.batch_size = batch_size

    def set_key(self, field: str, value: Any) -> str:
        """The set of the ids whose ``field`` equals ``value``."""
        return f"{self.prefix}:{field}:{value}"

    def _queue_write(self, pipe: Any, pk: str, row: dict[str, Any]) -> None:
        pipe.hset(f"{self.prefix}:{pk}", mapping=row)
        pipe.sadd(self.ids_key, pk)
        for field in INDEXED:
            pipe.sadd(f"{self.prefix}:{field}:{row[field]}", pk)
        pipe.zadd(self.sorted_key, {pk: row[SORTED]})

    def _queue_delete(self, pipe: Any, pk: str, values: dict[str, Any]) -> None:
        pipe.delete(f"{self.prefix}:{pk}")
        pipe.srem(self.ids_key, pk)
        for field in INDEXED:
            pipe.srem(f"{self.prefix}:{field}:{values[field]}", pk)
        pipe.zrem(self.sorted_key, pk)


class Minimal(MinimalLayout, PipelinedWrites):
    """Person records kept the minimal way under ``prefix``, on a ``decode_responses=True`` client."""

    def __init__(self, client: redis.Redis, prefix: str, batch_size: int = 500) -> None:
        super().__init__(prefix, batch_size)
        self.r = client

    # -- writing (create, bulk_create, delete: PipelinedWrites) -------------------------

    def delete_where(self, field: str, value: Any) -> int:
        """Delete the records whose indexed ``field`` equals ``value``, with their index entries."""
        ids = list(self.r.smembers(self.set_key(field, value)))
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hmget(f"{self.prefix}:{pk}", INDEXED)
        stored = pipe.execute()
        deleted = 0
        for start in range(0, len(ids), self.batch_size):
            pipe = self.r.pipeline()
            for pk, raw in zip(ids[start:start + self.batch_size], stored[start:start + self.batch_size]):
                if raw[0] is not None:
                    self._queue_delete(pipe, pk, dict(zip(INDEXED, raw)))
            deleted += sum(pipe.execute()[::3 + len(INDEXED)])
        return deleted

    # -- reading ---------------------------------------------------------------------

    def get(self, pk: str) -> dict[str, Any] | None:
        """One record by id: one HGETALL."""
        raw = self.r.hgetall(f"{self.prefix}:{pk}")
        return decode(pk, raw) if raw else None

    def fetch(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records by id, in one pipelined round trip (missing ones skipped)."""
        p = self.prefix
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hgetall(f"{p}:{pk}")
        return [decode(pk, raw) for pk, raw in zip(ids, pipe.execute()) if raw]

    def filter_eq(self, field: str, value: Any) -> list[dict[str, Any]]:
        """Records whose indexed ``field`` equals ``value``: SMEMBERS, then pipelined HGETALL."""
        return self.fetch(list(self.r.smembers(self.set_key(field, value))))

    def filter_eq_ordered(self, field: str, value: Any, order: str) -> list[dict[str, Any]]:
        """``filter_eq``, sorted by ``order`` in Python."""
        records = self.filter_eq(field, value)
        records.sort(key=itemgetter(order))
        return records

    def filter_range(self, field: str, low: int, high: int) -> list[dict[str, Any]]:
        """Records whose age is in ``[low, high]``: ZRANGEBYSCORE, then pipelined HGETALL."""
        assert field == SORTED
        return self.fetch(self.r.zrangebyscore(self.sorted_key, low, high))

    def count(self) -> int:
        """How many records: SCARD of the id set."""
        return int(self.r.scard(self.ids_key))


class AsyncMinimal(MinimalLayout, AsyncPipelinedWrites):
    """The same program on a ``redis.asyncio.Redis`` made with ``decode_responses=True``."""

    def __init__(self, client: aioredis.Redis, prefix: str, batch_size: int = 500) -> None:
        super().__init__(prefix, batch_size)
        self.r = client

    async def get(self, pk: str) -> dict[str, Any] | None:
        """One record by id: one HGETALL."""
        raw = await self.r.hgetall(f"{self.prefix}:{pk}")
        return decode(pk, raw) if raw else None

    async def fetch(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records by id, in one pipelined round trip (missing ones skipped)."""
        p = self.prefix
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hgetall(f"{p}:{pk}")
        return [decode(pk, raw) for pk, raw in zip(ids, await pipe.execute()) if raw]

    async def filter_eq(self, field: str, value: Any) -> list[dict[str, Any]]:
        """Records whose indexed ``field`` equals ``value``: SMEMBERS, then pipelined HGETALL."""
        return await self.fetch(list(await self.r.smembers(self.set_key(field, value))))
