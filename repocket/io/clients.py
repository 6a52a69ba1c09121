"""Which client a call runs on: the one passed (``connection=`` or ``using()``), else the global one.

Sync entry points take a ``redis.Redis``, async ones a ``redis.asyncio.Redis``;
giving one where the other belongs is a TypeError saying which to use, not a
call that blocks the event loop or fails deep inside redis-py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from repocket.connections import configure
from repocket.io import asyncio as aio
from repocket.io import sync
from repocket.plan.rounds import Plan

__all__ = ["async_client", "astream", "run", "run_async", "stream", "sync_client"]

T = TypeVar("T")


def sync_client(connection: Any = None) -> redis.Redis:
    """``connection``, or the global sync client."""
    if connection is None:
        return configure.get_connection()
    if isinstance(connection, aioredis.Redis):
        raise TypeError("a redis.asyncio client was given to a sync call: await the a-prefixed method "
                        "(asave, aget, acount, ...) or pass a redis.Redis")
    return connection  # type: ignore[no-any-return]


def async_client(connection: Any = None) -> aioredis.Redis:
    """``connection``, or the global async client of the running event loop."""
    if connection is None:
        return configure.get_async_connection()
    if not isinstance(connection, aioredis.Redis):
        raise TypeError("a sync client was given to an async call: pass a redis.asyncio.Redis "
                        "(or none, for configure.get_async_connection())")
    return connection


def run(plan: Plan[T], connection: Any = None) -> T:
    """Run ``plan`` on ``connection`` (or the global client) and return its result."""
    return sync.run(plan, sync_client(connection))


async def run_async(plan: Plan[T], connection: Any = None) -> T:
    """Run ``plan`` on ``connection`` (or the loop's global async client) and return its result."""
    return await aio.arun(plan, async_client(connection))


def stream(plan: Plan[Any], connection: Any = None) -> Iterator[Any]:
    """The items ``plan`` emits, run on a sync client."""
    return sync.stream(plan, sync_client(connection))


def astream(plan: Plan[Any], connection: Any = None) -> AsyncIterator[Any]:
    """The items ``plan`` emits, run on an async client."""
    return aio.astream(plan, async_client(connection))
