"""Run the functional suite through either executor: the ``driver`` fixture.

Every repocket call a test makes ends in :func:`repocket.io.clients.run` or
:func:`repocket.io.clients.stream`, which drive a plan on a sync client. The
``async`` driver replaces those two so that the same plan is driven by the
asyncio executor (:mod:`repocket.io.asyncio`) on a ``redis.asyncio`` client of
the same server and database, on an event loop of the calling thread. The
test bodies stay as they are, so each scenario checks the async path against
the same expectations, round trips included (:mod:`tests.roundtrips` counts
async requests too), without a copy of the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis.asyncio as aioredis

from repocket.connections import configure
from repocket.io import asyncio as aio
from repocket.io import clients

__all__ = ["AsyncDriver"]

#: The settings of a sync client that say which server and database it talks to.
_SAME_SERVER = ("host", "port", "db", "username", "password", "socket_timeout", "socket_connect_timeout")


class AsyncDriver:
    """Sync entry points that run their plans on the asyncio executor."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            self._local.clients = {}
            with self._lock:
                self._loops.append(loop)
        return loop  # type: ignore[no-any-return]

    def _client(self, connection: Any) -> aioredis.Redis:
        """The async client for ``connection`` (a sync client of the same server and db), in this loop."""
        if connection is None:
            return configure.get_async_connection()
        if isinstance(connection, aioredis.Redis):
            return connection
        cache: dict[int, aioredis.Redis] = self._local.clients
        client = cache.get(id(connection))
        if client is None:
            given = connection.connection_pool.connection_kwargs
            if "server" in given:  # a fakeredis client (--repocket-fake): an async one on its in-memory server
                from fakeredis.aioredis import FakeRedis

                cache[id(connection)] = client = FakeRedis(server=given["server"], db=given.get("db", 0))
                return client
            kwargs = {name: given[name] for name in _SAME_SERVER if name in given}
            if "path" in given:
                kwargs["unix_socket_path"] = given["path"]
            cache[id(connection)] = client = aioredis.Redis(**kwargs)
        return client

    def run(self, plan: Any, connection: Any = None) -> Any:
        """What ``clients.run`` does, through the asyncio executor."""
        async def drive() -> Any:
            return await aio.arun(plan, self._client(connection))

        return self._loop().run_until_complete(drive())

    def stream(self, plan: Any, connection: Any = None) -> Iterator[Any]:
        """What ``clients.stream`` does, through the asyncio executor."""
        loop = self._loop()

        async def start() -> AsyncIterator[Any]:
            return aio.astream(plan, self._client(connection))

        items = loop.run_until_complete(start())
        while True:
            try:
                yield loop.run_until_complete(items.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Close every loop this driver opened, and the clients on them."""
        for loop in self._loops:
            if loop.is_closed():
                continue
            try:
                loop.run_until_complete(_close_clients(loop))
            finally:
                loop.close()


async def _close_clients(loop: asyncio.AbstractEventLoop) -> None:
    client = configure._async_clients.get(loop)
    if client is not None:
        await client.aclose()


def install(monkeypatch: Any) -> AsyncDriver:
    """Route ``clients.run`` and ``clients.stream`` through a new AsyncDriver for one test."""
    driver = AsyncDriver()
    monkeypatch.setattr(clients, "run", driver.run)
    monkeypatch.setattr(clients, "stream", driver.stream)
    return driver
