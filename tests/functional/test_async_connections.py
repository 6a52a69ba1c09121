"""The async connection (configure.get_async_connection) and the async embedded server, on real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis as redis_py
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from repocket.connections import configure
from repocket.errors import RepocketError
from repocket.server import RedisServer

PASSWORD = "s3cret: with spaces & symbols"


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture
def restore_pool(redis_url: str) -> Iterator[None]:
    """After the test, point the global settings back at the test server."""
    yield
    configure._server = None  # a test stops the servers it started itself
    configure.connection_pool(url=redis_url)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, since an AF_UNIX socket path holds about 100 bytes."""
    with tempfile.TemporaryDirectory(prefix="rpa-", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server on a free TCP port that requires :data:`PASSWORD`."""
    server = RedisServer(path=tmp_path / "data", password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unix_server(short_dir: Path) -> Iterator[RedisServer]:
    """A server listening on a unix socket only."""
    server = RedisServer(unix_socket=short_dir / "redis.sock").start()
    try:
        yield server
    finally:
        server.stop()


def _with_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db``."""
    if url.startswith("unix://"):
        return f"{url.partition('?')[0]}?db={db}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


async def _write_async_read_sync(key: str) -> None:
    """Write with the async client, read with the sync one, and the other way round."""
    sync = configure.get_connection()
    async with configure.get_async_connection() as conn:
        await conn.set(f"{key}:a", "from async")
        sync.set(f"{key}:s", "from sync")
        assert sync.get(f"{key}:a") == b"from async"
        assert await conn.get(f"{key}:s") == b"from sync"


# -- one client per running loop -------------------------------------------------------


@pytest.mark.asyncio
async def test_one_client_per_loop(repocket_connection: redis_py.Redis) -> None:
    """Two calls in the same loop return the same redis.asyncio client."""
    async with configure.get_async_connection() as conn:
        assert isinstance(conn, aioredis.Redis)
        assert configure.get_async_connection() is conn
        assert await conn.ping()


def test_each_loop_gets_a_new_client(repocket_connection: redis_py.Redis) -> None:
    """A new loop gets a new client; the client of a closed loop is never handed out again."""

    async def grab() -> tuple[aioredis.Redis, asyncio.AbstractEventLoop]:
        async with configure.get_async_connection() as conn:
            assert await conn.ping()
        return conn, asyncio.get_running_loop()

    first, first_loop = asyncio.run(grab())
    second, second_loop = asyncio.run(grab())
    assert first is not second
    assert first_loop.is_closed()  # still alive (we hold it), but its client is gone
    assert first_loop not in configure._async_clients
    assert configure._async_clients.get(second_loop) is second


def test_outside_a_loop_is_a_runtime_error() -> None:
    """Without a running event loop, get_async_connection says where to call it from."""
    with pytest.raises(RuntimeError, match=r"needs a running event loop; call it from async code"):
        configure.get_async_connection()


@pytest.mark.asyncio
async def test_connection_pool_drops_the_async_clients(
    repocket_connection: redis_py.Redis, redis_url: str
) -> None:
    """connection_pool() again gives async code a client built from the new settings."""
    old = configure.get_async_connection()
    assert await old.ping()
    configure.connection_pool(url=redis_url)
    async with configure.get_async_connection() as new:
        assert new is not old
        assert await new.ping()
    await asyncio.sleep(0.05)  # the old client is closed in a task on this loop
    pool = old.connection_pool
    assert pool._available_connections and not pool._in_use_connections
    assert not any(connection.is_connected for connection in pool._available_connections)


@pytest.mark.asyncio
async def test_defaults_when_nothing_was_configured(restore_pool: None) -> None:
    """Before any connection_pool() call, async code gets localhost:6379 db 0, like sync code."""
    configure.reset()
    conn = configure.get_async_connection()
    assert conn.connection_pool.connection_kwargs == {
        **conn.connection_pool.connection_kwargs,
        "host": "localhost",
        "port": 6379,
        "db": 0,
    }
    assert configure.get_connection().connection_pool.connection_kwargs["port"] == 6379
    await conn.aclose()


# -- the async client reaches the same server and database -----------------------------


@pytest.mark.asyncio
async def test_same_server_and_db_from_a_url(
    redis: redis_py.Redis, redis_url: str, restore_pool: None
) -> None:
    """After connection_pool(url=...), both clients share one database (not db 0)."""
    configure.connection_pool(url=_with_db(redis_url, 5))
    configure.get_connection().flushdb()
    await _write_async_read_sync("url")
    assert not redis.exists("url:a")  # the fixture's db 0 is untouched


@pytest.mark.asyncio
async def test_same_server_and_db_from_hostname_port_db(
    redis: redis_py.Redis, redis_url: str, restore_pool: None
) -> None:
    """After connection_pool(hostname=, port=, db=), both clients share one database."""
    where = redis_py.connection.parse_url(redis_url)
    if "host" not in where:
        pytest.skip("the test server is not on TCP")
    configure.connection_pool(
        hostname=where["host"],
        port=where.get("port", 6379),
        db=6,
        username=where.get("username"),
        password=where.get("password"),
    )
    configure.get_connection().flushdb()
    await _write_async_read_sync("tcp")
    assert not redis.exists("tcp:a")


@pytest.mark.asyncio
async def test_same_server_with_a_password(
    password_server: RedisServer, restore_pool: None
) -> None:
    """The password given to connection_pool() reaches the async connections too."""
    assert password_server.port is not None
    configure.connection_pool(hostname="127.0.0.1", port=password_server.port, password=PASSWORD)
    await _write_async_read_sync("auth")
    anonymous = aioredis.Redis(host="127.0.0.1", port=password_server.port)
    try:
        with pytest.raises(redis_py.AuthenticationError):
            await anonymous.ping()
    finally:
        await anonymous.aclose()


@pytest.mark.asyncio
async def test_same_server_on_a_unix_socket(unix_server: RedisServer, restore_pool: None) -> None:
    """A unix:// URL gives async code a unix-socket connection to the same server."""
    configure.connection_pool(url=_with_db(unix_server.url, 2))
    await _write_async_read_sync("unix")
    conn = configure.get_async_connection()
    assert conn.connection_pool.connection_class is aioredis.UnixDomainSocketConnection
    await conn.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "where",
    [
        {"hostname": "127.0.0.1", "port": 6380, "ssl": True, "ssl_ca_certs": "/tls/ca.pem"},
        {"url": "rediss://127.0.0.1:6380/0", "ssl_ca_certs": "/tls/ca.pem"},
    ],
    ids=["ssl=True", "rediss://"],
)
async def test_tls_settings_carry_over(where: dict[str, Any], restore_pool: None) -> None:
    """TLS settings give async code redis.asyncio.SSLConnection with the same files.

    No TLS server here: the pools are only built, nothing connects.
    """
    configure.connection_pool(**where)
    sync_pool = configure.get_connection().connection_pool
    conn = configure.get_async_connection()
    assert sync_pool.connection_class is redis_py.SSLConnection
    assert conn.connection_pool.connection_class is aioredis.SSLConnection
    assert conn.connection_pool.connection_kwargs["ssl_ca_certs"] == "/tls/ca.pem"
    await conn.aclose()


@pytest.mark.asyncio
async def test_a_sync_only_connection_class_is_refused(restore_pool: None) -> None:
    """A custom sync connection class cannot serve async code: a TypeError says so."""

    class Custom(redis_py.Connection):
        pass

    configure.connection_pool(connection_class=Custom)
    with pytest.raises(TypeError, match="connection_class=.*Custom has no redis.asyncio twin"):
        configure.get_async_connection()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("retry", "retries", "backoff"),
    [
        (
            Retry(ExponentialBackoff(cap=0.5, base=0.01), 7),
            7,
            ExponentialBackoff(cap=0.5, base=0.01),
        ),
        (None, 3, ExponentialBackoff(cap=1.0)),  # the default
    ],
    ids=["given", "default"],
)
async def test_retry_carries_over(
    redis_url: str,
    restore_pool: None,
    retry: Retry | None,
    retries: int,
    backoff: ExponentialBackoff,
) -> None:
    """An async connection retries as many times, with the same backoff, as the sync ones."""
    configure.connection_pool(url=redis_url, retry=retry)
    client = configure.get_async_connection()
    connection = await client.connection_pool.get_connection()
    try:
        assert isinstance(connection.retry, AsyncRetry)
        assert connection.retry.get_retries() == retries
        assert connection.retry._backoff == backoff
    finally:
        await client.connection_pool.release(connection)
        await client.aclose()


# -- configure.aembedded and RedisServer.astart ----------------------------------------


@pytest.mark.asyncio
async def test_aembedded_opens_no_sync_connection_and_never_blocks_the_loop(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, restore_pool: None
) -> None:
    """aembedded starts the server with redis.asyncio only, while other tasks keep running."""

    def refuse(self: redis_py.connection.AbstractConnection, *args: object) -> None:
        raise AssertionError(f"a sync connection was opened: {self!r}")

    for cls in (redis_py.connection.AbstractConnection, redis_py.connection.Connection):
        monkeypatch.setattr(cls, "connect", refuse)
    monkeypatch.setattr(redis_py.connection.AbstractConnection, "connect_check_health", refuse)
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the first tick is taken before the start begins
    try:
        began = loop.time()
        server = await configure.aembedded(path=short_dir / "data")
        ended = loop.time()
        ticks.append(ended)
    finally:
        ticker.cancel()
    try:
        assert server.running and server.unix_socket == str(short_dir / "data" / "redis.sock")
        assert configure._server is server
        # A blocking start (configure.embedded takes ~60 ms) would let no tick in between.
        assert any(began < when < ended for when in ticks), (began, ended, ticks)
        gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
        assert max(gaps) < 0.2, gaps
        async with configure.get_async_connection() as conn:
            await conn.set("k", "v")
        monkeypatch.undo()
        assert configure.get_connection().get("k") == b"v"  # one call configured both
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_astart_reports_a_failed_start_with_the_log(tmp_path: Path) -> None:
    """A server that exits at once fails astart() with its status and log, as start() does."""
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\necho 'FATAL: bad config line'\nexit 3\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    server = RedisServer(path=tmp_path / "data", binary=str(binary))
    with pytest.raises(RepocketError, match=r"exited with status 3[\s\S]*FATAL: bad config line"):
        await server.astart()
    assert not server.running


@pytest.mark.asyncio
async def test_cancelled_astart_leaves_no_server(tmp_path: Path) -> None:
    """Cancelling astart() while it waits kills the process it spawned."""
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\nexec sleep 30\n")  # never answers PING
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    server = RedisServer(path=tmp_path / "data", binary=str(binary))
    start = asyncio.create_task(server.astart())
    await asyncio.sleep(0.2)
    pid = server.pid
    assert pid is not None
    start.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await start
        assert not server.running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        server.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # without the fix it would still run


@pytest.mark.asyncio
async def test_astart_is_a_no_op_when_running(unix_server: RedisServer) -> None:
    """astart() on a running server returns it and keeps its process."""
    pid = unix_server.pid
    assert await unix_server.astart() is unix_server
    assert unix_server.pid == pid
