"""pytest plugin: a real Redis for every test, and a clean database in each.

Installed through the ``pytest11`` entry point, so any project that installs
repocket gets these fixtures without a ``conftest.py``:

- ``redis_url`` (session): the URL of the server in use.
- ``redis_server`` (session): the :class:`~repocket.server.RedisServer` the plugin
  started, for tests that stop, kill or restart it; skipped when an external
  server is in use.
- ``redis`` (function): a ``redis.Redis`` client on a freshly flushed database.
- ``repocket_connection`` (function): repocket's global pool pointed at that
  database, yielding ``configure.get_connection()``.
- ``redis_cli`` (session): the path of a ``redis-cli`` binary.
- ``redis_cluster`` (session): a real Redis Cluster on loopback, 3 primaries with
  1 replica each (:class:`~repocket.topology.LocalCluster`).
- ``redis_sentinel`` (session): a primary, its replica and 3 sentinels
  (:class:`~repocket.topology.LocalSentinel`).
- ``redis_cluster_factory`` / ``redis_sentinel_factory`` (function): callables
  that start a new cluster / Sentinel group, stopped at the end of the test,
  for tests that kill nodes or fail over (which would spoil the shared ones).

The server is ``--redis-url`` if given, else ``$REDIS_URL``, else one
throwaway ``redis-server`` per session on a free loopback port, without
persistence, started on first use and stopped by its PID at the end. The
cluster and the Sentinel group are always started here, from the same
``redis-server`` binary, on first use, and stopped by their PIDs at the end of
the session (or of the test, for the factories).
Importing this module starts nothing, and redis-py and repocket's modules are
imported only when a fixture needs them, because pytest imports this plugin in
every session of every project that has repocket installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

if TYPE_CHECKING:
    import redis as redis_py

    from repocket.server import RedisServer
    from repocket.topology import LocalCluster, LocalSentinel



class _Startable(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...


_Topology = TypeVar("_Topology", bound=_Startable)

URL_OPTION = "--redis-url"
URL_ENV = "REDIS_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--redis-url``."""
    group = parser.getgroup("repocket", "repocket test server")
    group.addoption(
        URL_OPTION,
        action="store",
        default=None,
        metavar="URL",
        help=(
            f"run tests against this Redis (default: ${URL_ENV}, else start a "
            "throwaway redis-server on a free 127.0.0.1 port). Tests flush its databases."
        ),
    )


def _external_url(config: pytest.Config) -> str | None:
    """The URL the user asked for, from the option or the environment, if any."""
    url: str | None = config.getoption(URL_OPTION) or os.environ.get(URL_ENV)
    return url or None


@pytest.fixture(scope="session")
def _repocket_server(request: pytest.FixtureRequest) -> Iterator[RedisServer | None]:
    """The session's own server, or ``None`` when an external one is in use."""
    if _external_url(request.config) is not None:
        yield None
        return
    from repocket.server import RedisServer

    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, _repocket_server: RedisServer | None) -> str:
    """The URL of the Redis the tests run against."""
    if _repocket_server is not None:
        return _repocket_server.url
    url = _external_url(request.config)
    assert url is not None
    return url


@pytest.fixture(scope="session")
def redis_server(_repocket_server: RedisServer | None) -> RedisServer:
    """The server the plugin started, for tests that stop, kill or restart it.

    A test that stops or kills it need not start it again: the ``redis``
    fixture restarts it for the next test.
    """
    if _repocket_server is None:
        pytest.skip(f"needs the plugin's own redis-server, not an external one ({URL_OPTION})")
    return _repocket_server


@pytest.fixture(name="redis")
def redis_client(redis_url: str, _repocket_server: RedisServer | None) -> Iterator[redis_py.Redis]:
    """A ``redis.Redis`` client (bytes replies) on a database flushed before the test."""
    import redis as redis_py

    if _repocket_server is not None and not _repocket_server.running:
        _repocket_server.start()  # an earlier test stopped or killed it
    client = redis_py.Redis.from_url(redis_url, decode_responses=False)
    try:
        client.flushdb()
        yield client
    finally:
        client.close()


@pytest.fixture
def repocket_connection(redis: redis_py.Redis, redis_url: str) -> Iterator[redis_py.Redis]:
    """repocket's global connection pool bound to the test's flushed database."""
    from repocket.connections import configure

    configure.connection_pool(url=redis_url)
    yield configure.get_connection()


@pytest.fixture(scope="session")
def redis_cli() -> str:
    """The path of a ``redis-cli`` binary; skips the test if there is none."""
    from repocket.errors import ServerNotFoundError
    from repocket.server import find_redis_cli

    try:
        return find_redis_cli()
    except ServerNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real Redis Cluster on 127.0.0.1 (3 primaries, 1 replica each), shared by the session.

    Do not kill its nodes or fail it over: use ``redis_cluster_factory`` for that.
    """
    from repocket.topology import LocalCluster

    cluster = LocalCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A primary, its replica and 3 sentinels on 127.0.0.1, shared by the session.

    Do not fail it over: use ``redis_sentinel_factory`` for that.
    """
    from repocket.topology import LocalSentinel

    group = LocalSentinel(3)
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture
def redis_cluster_factory() -> Iterator[Callable[..., LocalCluster]]:
    """A callable taking :class:`~repocket.topology.LocalCluster`'s arguments; starts a new cluster.

    Every cluster it started is stopped at the end of the test.
    """
    from repocket.topology import LocalCluster

    yield from _factory(LocalCluster)


@pytest.fixture
def redis_sentinel_factory() -> Iterator[Callable[..., LocalSentinel]]:
    """A callable taking :class:`~repocket.topology.LocalSentinel`'s arguments; starts a new group.

    Every group it started is stopped at the end of the test.
    """
    from repocket.topology import LocalSentinel

    yield from _factory(LocalSentinel)


def _factory(kind: Callable[..., _Topology]) -> Iterator[Callable[..., _Topology]]:
    """A starter of ``kind`` topologies, stopping every one it started when the generator closes."""
    started: list[_Topology] = []

    def start(*args: Any, **kwargs: Any) -> _Topology:
        topology = kind(*args, **kwargs)
        started.append(topology)
        return topology.start()  # type: ignore[no-any-return]

    try:
        yield start
    finally:
        for topology in reversed(started):
            topology.stop()
