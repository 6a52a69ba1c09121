"""The same-layout yardstick: hand-written redis-py keeping repocket's own layout.

It does what a careful programmer would write by hand to store the benchmark's
``Person`` records with the *same layout as repocket*, byte for byte (the
benchmark checks this before timing anything, see ``verify_layouts`` in
``benchmarks.__main__``); :mod:`benchmarks.minimal` is the other yardstick, the
simplest layout:

* one hash per record, ``<prefix>:<uuid>``, one JSON envelope per field
  (``{"type": "Unicode", "value": "Ada", "module": "repocket.attributes"}``),
  written with repocket's own envelope prefix/suffix bytes and orjson;
* the id set ``<prefix>:_ids``;
* for every indexed field an equality set ``<prefix>:_eq:<field>:<value>``;
  Unicode fields (name, city, tag) also a lexicographic sorted set
  ``<prefix>:_lex:<field>`` of ``value\\x00id`` members (score 0), and the
  Integer field (age) a sorted set ``<prefix>:_sort:<field>`` scored by the value.

:class:`AsyncHandWritten` is the same program on ``redis.asyncio``: the same keys
and bytes (built by the shared :class:`Layout`) and the same round trips, each
awaited.

Pipelines where a careful programmer uses them:

* a write (one record, or a batch of 500 in a bulk load or a bulk delete) is
  one redis-py ``pipeline()`` with its default MULTI/EXEC, so a record and its
  index entries are written together, as repocket's Lua write is atomic;
* a filter is SMEMBERS (or ZRANGEBYSCORE) and then one non-transactional
  pipeline of HGETALL; every field is decoded into a Python value with orjson
  (the id into a ``uuid.UUID``), giving one dict per record;
* a bulk delete reads only the indexed fields (HMGET) it needs to remove the
  index entries; a delete one by one has the record in hand (its id and values,
  as a repocket instance does) and is one MULTI/EXEC of DEL, SREM and ZREM.

What the hand-written code does *not* do, and repocket does, is part of the
price being measured: type checks of every key touched, guards against
concurrent changes, validation of every value, envelope checking on read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from benchmarks.common import AsyncPipelinedWrites, PipelinedWrites
from repocket import serialization

__all__ = ["FIELDS", "INDEXED", "AsyncHandWritten", "HandWritten", "Layout"]

#: The hash fields, in repocket's declaration order (``id`` first).
FIELDS = ("id", "name", "age", "city", "bio", "score", "tag")
#: Indexed Unicode fields (equality set + lexicographic set) and Integer fields (equality + score).
LEX_FIELDS = ("name", "city", "tag")
SORT_FIELDS = ("age",)
INDEXED = ("name", "age", "city", "tag")

_MODULE = "repocket.attributes"
_SUFFIX = serialization.envelope_suffix(_MODULE)
_UUID = serialization.envelope_prefix("AutoUUID")
_UNICODE = serialization.envelope_prefix("Unicode")
_INTEGER = serialization.envelope_prefix("Integer")
_FLOAT = serialization.envelope_prefix("Float")
_dumps = orjson.dumps
_loads = orjson.loads


class Layout:
    """The keys and bytes of Person records under ``prefix``, shared by the sync and async programs."""

    def __init__(self, prefix: str, batch_size: int = 500) -> None:
        self.prefix = prefix
        self.ids_key = f"{prefix}:_ids"
        self.batch_size = batch_size

    @staticmethod
    def encode(pk: str, row: dict[str, Any]) -> dict[str, bytes]:
        """The hash of one record: a JSON envelope per field."""
        return {
            "id": _UUID + b'"' + pk.encode() + b'"' + _SUFFIX,
            "name": _UNICODE + _dumps(row["name"]) + _SUFFIX,
            "age": _INTEGER + _dumps(row["age"]) + _SUFFIX,
            "city": _UNICODE + _dumps(row["city"]) + _SUFFIX,
            "bio": _UNICODE + _dumps(row["bio"]) + _SUFFIX,
            "score": _FLOAT + _dumps(row["score"]) + _SUFFIX,
            "tag": _UNICODE + _dumps(row["tag"]) + _SUFFIX,
        }

    def _queue_write(self, pipe: Any, pk: str, row: dict[str, Any]) -> None:
        p = self.prefix
        pipe.hset(f"{p}:{pk}", mapping=self.encode(pk, row))
        pipe.sadd(self.ids_key, pk)
        for field in LEX_FIELDS:
            value = row[field]
            pipe.sadd(f"{p}:_eq:{field}:{value}", pk)
            pipe.zadd(f"{p}:_lex:{field}", {f"{value}\x00{pk}": 0})
        for field in SORT_FIELDS:
            value = row[field]
            pipe.sadd(f"{p}:_eq:{field}:{value}", pk)
            pipe.zadd(f"{p}:_sort:{field}", {pk: value})

    def _queue_delete(self, pipe: Any, pk: str, values: dict[str, Any]) -> None:
        p = self.prefix
        pipe.delete(f"{p}:{pk}")
        pipe.srem(self.ids_key, pk)
        for name in LEX_FIELDS:
            pipe.srem(f"{p}:_eq:{name}:{values[name]}", pk)
            pipe.zrem(f"{p}:_lex:{name}", f"{values[name]}\x00{pk}")
        for name in SORT_FIELDS:
            pipe.srem(f"{p}:_eq:{name}:{values[name]}", pk)
            pipe.zrem(f"{p}:_sort:{name}", pk)

    @staticmethod
    def decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
        """A record's Python values from its hash (envelopes parsed by orjson)."""
        record = {field.decode(): _loads(value)["value"] for field, value in raw.items()}
        record["id"] = uuid.UUID(record["id"])
        return record


class HandWritten(Layout, PipelinedWrites):
    """Person records kept by hand under ``prefix`` on the redis-py client ``client``."""

    def __init__(self, client: redis.Redis, prefix: str, batch_size: int = 500) -> None:
        super().__init__(prefix, batch_size)
        self.r = client

    # -- writing (create, bulk_create, delete: PipelinedWrites) -------------------------

    def delete_where(self, field: str, value: Any) -> int:
        """Delete the records whose indexed ``field`` equals ``value``, with their index entries."""
        p = self.prefix
        ids = [pk.decode() for pk in self.r.smembers(f"{p}:_eq:{field}:{value}")]
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hmget(f"{p}:{pk}", INDEXED)
        stored = pipe.execute()
        deleted = 0
        for start in range(0, len(ids), self.batch_size):
            pipe = self.r.pipeline()
            for pk, raw in zip(ids[start:start + self.batch_size], stored[start:start + self.batch_size]):
                if raw[0] is None:
                    continue
                self._queue_delete(pipe, pk, dict(zip(INDEXED, (_loads(r)["value"] for r in raw))))
            replies = pipe.execute()
            deleted += sum(replies[::2 + 2 * len(LEX_FIELDS) + 2 * len(SORT_FIELDS)])
        return deleted

    # -- reading ---------------------------------------------------------------------

    def get(self, pk: str) -> dict[str, Any] | None:
        """One record by id: one HGETALL."""
        raw = self.r.hgetall(f"{self.prefix}:{pk}")
        return self.decode(raw) if raw else None

    def fetch(self, ids: Sequence[bytes]) -> list[dict[str, Any]]:
        """Records by id, in one pipelined round trip (missing ones skipped)."""
        p = self.prefix
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hgetall(f"{p}:{pk.decode()}")
        decode = self.decode
        return [decode(raw) for raw in pipe.execute() if raw]

    def filter_eq(self, field: str, value: Any) -> list[dict[str, Any]]:
        """Records whose indexed ``field`` equals ``value``: SMEMBERS, then pipelined HGETALL."""
        return self.fetch(list(self.r.smembers(f"{self.prefix}:_eq:{field}:{value}")))

    def filter_eq_ordered(self, field: str, value: Any, order: str) -> list[dict[str, Any]]:
        """``filter_eq``, sorted by ``order`` in Python."""
        records = self.filter_eq(field, value)
        records.sort(key=itemgetter(order))
        return records

    def filter_range(self, field: str, low: int, high: int) -> list[dict[str, Any]]:
        """Records whose sorted ``field`` is in ``[low, high]``: ZRANGEBYSCORE, then pipelined HGETALL."""
        return self.fetch(self.r.zrangebyscore(f"{self.prefix}:_sort:{field}", low, high))

    def count(self) -> int:
        """How many records: SCARD of the id set."""
        return int(self.r.scard(self.ids_key))


class AsyncHandWritten(Layout, AsyncPipelinedWrites):
    """The same program on a ``redis.asyncio.Redis``: the same keys, bytes and round trips."""

    def __init__(self, client: aioredis.Redis, prefix: str, batch_size: int = 500) -> None:
        super().__init__(prefix, batch_size)
        self.r = client

    async def get(self, pk: str) -> dict[str, Any] | None:
        """One record by id: one HGETALL."""
        raw = await self.r.hgetall(f"{self.prefix}:{pk}")
        return self.decode(raw) if raw else None

    async def fetch(self, ids: Sequence[bytes]) -> list[dict[str, Any]]:
        """Records by id, in one pipelined round trip (missing ones skipped)."""
        p = self.prefix
        pipe = self.r.pipeline(transaction=False)
        for pk in ids:
            pipe.hgetall(f"{p}:{pk.decode()}")
        decode = self.decode
        return [decode(raw) for raw in await pipe.execute() if raw]

    async def filter_eq(self, field: str, value: Any) -> list[dict[str, Any]]:
        """Records whose indexed ``field`` equals ``value``: SMEMBERS, then pipelined HGETALL."""
        return await self.fetch(list(await self.r.smembers(f"{self.prefix}:_eq:{field}:{value}")))
