"""pytest plugin: a clean Redis database for every test, a fake one on request, and round-trip counters.

Installed through the ``pytest11`` entry point, so any project that installs
repocket gets these fixtures without a ``conftest.py`` (docs/testing.rst):

- ``redis`` (function): a ``redis.Redis`` client (bytes replies) on a freshly
  flushed database; with ``--repocket-fake``, a ``fakeredis.FakeRedis`` on a
  new in-memory server.
- ``repocket_connection`` (function): repocket's global configuration pointed
  at that database (``configure.connection_pool()``, or ``configure.fake()``),
  yielding ``configure.get_connection()``.
- ``repocket_assert_round_trips`` / ``repocket_assert_max_round_trips``
  (function): ``repocket.roundtrips.assert_round_trips`` and
  ``assert_max_round_trips``, as pytest-django's
  ``django_assert_num_queries``.
- ``redis_url`` (session): the URL of the server in use.
- ``redis_server`` (session): the :class:`~repocket.server.RedisServer` the plugin
  started, for tests that stop, kill or restart it; skipped when an external
  server is in use.
- ``redis_cli`` (session): the path of a ``redis-cli`` binary.
- ``redis_cluster`` (session): a real Redis Cluster on loopback, 3 primaries with
  1 replica each (:class:`~repocket.topology.LocalCluster`).
- ``redis_sentinel`` (session): a primary, its replica and 3 sentinels
  (:class:`~repocket.topology.LocalSentinel`).
- ``redis_cluster_factory`` / ``redis_sentinel_factory`` (function): callables
  that start a new cluster / Sentinel group, stopped at the end of the test,
  for tests that kill nodes or fail over (which would spoil the shared ones).

Markers: ``repocket_models([Model, ...])`` deletes only those models' keys,
before and after the test, instead of flushing the database (and gives the
test ``repocket_connection``); ``needs_server("why")`` skips a test under
``--repocket-fake``.

The server is ``--redis-url`` if given, else ``$REDIS_URL``, else one
throwaway ``redis-server`` per session on a free loopback port, without
persistence, started on first use and stopped by its PID at the end. The
cluster and the Sentinel group are always started here, from the same
``redis-server`` binary, on first use, and stopped by their PIDs at the end of
the session (or of the test, for the factories). With ``--repocket-fake`` no
server is started: the fixtures that need one (``redis_url``, ``redis_server``,
``redis_cli``, the cluster and Sentinel ones) skip the test.
Importing this module starts nothing, and redis-py, fakeredis and repocket's
modules are imported only when a fixture needs them, because pytest imports
this plugin in every session of every project that has repocket installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

if TYPE_CHECKING:
    import redis as redis_py

    from repocket.model import ActiveRecord
    from repocket.roundtrips import RoundTrips
    from repocket.server import RedisServer
    from repocket.topology import LocalCluster, LocalSentinel

__all__ = ["assert_max_round_trips", "assert_round_trips", "count_round_trips", "flush_models"]


class _Startable(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...


_Topology = TypeVar("_Topology", bound=_Startable)

URL_OPTION = "--redis-url"
URL_ENV = "REDIS_URL"
FAKE_OPTION = "--repocket-fake"
#: The reason a fixture that needs a real server gives when it skips in fake mode.
FAKE_SKIP = f"needs a real redis-server, and this run uses fakeredis ({FAKE_OPTION})"
MODELS_MARKER = "repocket_models"
SERVER_MARKER = "needs_server"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--redis-url`` and ``--repocket-fake``."""
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
    group.addoption(
        FAKE_OPTION,
        action="store_true",
        default=False,
        help=(
            "run tests against fakeredis (in memory, a new server per test) instead of a "
            f"redis-server; tests marked {SERVER_MARKER} and fixtures needing a real server skip."
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin's markers, so that ``--strict-markers`` projects may use them; refuse
    ``--repocket-fake`` with ``--redis-url`` (``$REDIS_URL`` is ignored in fake mode) or without fakeredis."""
    if is_fake(config) and config.getoption(URL_OPTION, default=None):
        raise pytest.UsageError(f"{FAKE_OPTION} runs on fakeredis, without a server: drop {URL_OPTION} or {FAKE_OPTION}")
    if is_fake(config):
        import importlib.util

        if importlib.util.find_spec("fakeredis") is None or importlib.util.find_spec("lupa") is None:
            raise pytest.UsageError(f"{FAKE_OPTION} needs fakeredis with Lua: pip install 'fakeredis[lua]'")
    config.addinivalue_line(
        "markers",
        f"{MODELS_MARKER}([Model, ...]): delete only these models' keys before and after the test, "
        "instead of flushing the database; the test gets repocket_connection",
    )
    config.addinivalue_line(
        "markers", f"{SERVER_MARKER}(reason): needs a real redis-server; skipped under {FAKE_OPTION}",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--repocket-fake``, skip the tests marked ``needs_server``, giving their reason."""
    if not is_fake(config):
        return
    for item in items:
        marker = item.get_closest_marker(SERVER_MARKER)
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "needs a real redis-server")
            item.add_marker(pytest.mark.skip(reason=f"{SERVER_MARKER} ({FAKE_OPTION}): {reason}"))


def is_fake(config: pytest.Config) -> bool:
    """Whether this run uses fakeredis (``--repocket-fake``)."""
    return bool(config.getoption(FAKE_OPTION, default=False))


def _skip_if_fake(request: pytest.FixtureRequest, fixture: str | None = None) -> None:
    if is_fake(request.config):
        pytest.skip(f"{fixture or request.fixturename} {FAKE_SKIP}")


def _external_url(config: pytest.Config) -> str | None:
    """The URL the user asked for, from the option or the environment, if any."""
    url: str | None = config.getoption(URL_OPTION) or os.environ.get(URL_ENV)
    return url or None


@pytest.fixture(scope="session")
def _repocket_server(request: pytest.FixtureRequest) -> Iterator[RedisServer | None]:
    """The session's own server, or ``None`` when an external one is in use."""
    _skip_if_fake(request, "redis_url")
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


def _marked_models(node: pytest.Item) -> list[type[ActiveRecord]] | None:
    """The models named by the test's ``repocket_models`` markers (module, class and test), or None."""
    from repocket.model import ActiveRecord

    markers = list(node.iter_markers(MODELS_MARKER))
    if not markers:
        return None
    models: list[type[ActiveRecord]] = []
    for marker in markers:
        given = [model for arg in marker.args for model in (arg if isinstance(arg, (list, tuple)) else [arg])]
        if not given:
            raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.{MODELS_MARKER}([...]) needs at least one model class")
        for model in given:
            if not (isinstance(model, type) and issubclass(model, ActiveRecord)):
                raise pytest.UsageError(
                    f"{node.nodeid}: @pytest.mark.{MODELS_MARKER} takes model classes, not {model!r}")
            if model not in models:
                models.append(model)
    return models


@pytest.fixture(scope="session")
def _repocket_fake_scripts() -> dict[bytes, bytes]:
    """The Lua scripts loaded in fake mode, kept from test to test as FLUSHDB keeps a server's."""
    return {}


@pytest.fixture(name="redis")
def redis_client(request: pytest.FixtureRequest) -> Iterator[redis_py.Redis]:
    """A ``redis.Redis`` client (bytes replies) on a database flushed before the test.

    With ``repocket_models`` markers, only those models' keys are deleted, before
    and after the test. With ``--repocket-fake``, a ``fakeredis.FakeRedis`` on a
    new, empty in-memory server (the Lua scripts loaded stay loaded, as through FLUSHDB).
    """
    if is_fake(request.config):
        import fakeredis

        memory = fakeredis.FakeServer()
        memory.script_cache = request.getfixturevalue("_repocket_fake_scripts")
        fake = fakeredis.FakeRedis(server=memory)
        try:
            yield fake
        finally:
            fake.close()
        return
    import redis as redis_py

    server: RedisServer | None = request.getfixturevalue("_repocket_server")
    url: str = request.getfixturevalue("redis_url")
    if server is not None and not server.running:
        server.start()  # an earlier test stopped or killed it
    client = redis_py.Redis.from_url(url, decode_responses=False)
    models = _marked_models(request.node)  # type: ignore[arg-type]
    try:
        if models is None:
            client.flushdb()
        else:
            flush_models(*models, connection=client)
        yield client
        if models is not None:
            flush_models(*models, connection=client)
    finally:
        client.close()


@pytest.fixture
def repocket_connection(request: pytest.FixtureRequest, redis: redis_py.Redis) -> Iterator[redis_py.Redis]:
    """repocket's global configuration bound to the test's database (sync and async alike).

    ``configure.connection_pool(url=redis_url)``, or under ``--repocket-fake``
    ``configure.fake()`` on the ``redis`` fixture's in-memory server.
    """
    from repocket.connections import configure

    if is_fake(request.config):
        configure.fake(redis.connection_pool.connection_kwargs["server"])
    else:
        configure.connection_pool(url=request.getfixturevalue("redis_url"))
    yield configure.get_connection()


@pytest.fixture(autouse=True)
def _repocket_models_marker(request: pytest.FixtureRequest) -> None:
    """Give a test marked ``repocket_models`` its ``repocket_connection``, as ``django_db`` gives a database."""
    if request.node.get_closest_marker(MODELS_MARKER) is not None:
        request.getfixturevalue("repocket_connection")


def flush_models(*models: type[ActiveRecord], connection: Any = None) -> int:
    """Delete every key of ``models`` (standalone and cluster layouts, every partition); nothing else.

    Keys are found by SCAN on each model's prefix (docs/storage.rst), so other
    data in a shared database is left alone.

    Args:
        *models: model classes.
        connection: a sync ``redis.Redis`` or ``RedisCluster``; default: repocket's global one.

    Returns:
        How many keys were deleted.
    """
    from repocket.connections import configure
    from repocket.keys import escape_glob

    client = connection if connection is not None else configure.get_connection()
    deleted = 0
    for model in models:
        prefix = escape_glob(model._meta.standalone_prefix)
        for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
            found = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(found), 500):
                pipe = client.pipeline(transaction=False)
                for key in found[start:start + 500]:
                    pipe.delete(key)  # one key per command: a cluster's keys may be in different slots
                deleted += sum(pipe.execute())
    return deleted


def count_round_trips(*, include_async: bool = True) -> AbstractContextManager[RoundTrips]:
    """``repocket.roundtrips.count_round_trips()``, importable from the plugin too."""
    from repocket import roundtrips

    return roundtrips.count_round_trips(include_async=include_async)


def assert_round_trips(expected: int, *, commands: Iterable[str] | None = None,
                       include_async: bool = True) -> AbstractContextManager[RoundTrips]:
    """``repocket.roundtrips.assert_round_trips()``, importable from the plugin too."""
    from repocket import roundtrips

    return roundtrips.assert_round_trips(
        expected, commands=None if commands is None else list(commands), include_async=include_async)


def assert_max_round_trips(most: int, *, include_async: bool = True) -> AbstractContextManager[RoundTrips]:
    """``repocket.roundtrips.assert_max_round_trips()``, importable from the plugin too."""
    from repocket import roundtrips

    return roundtrips.assert_max_round_trips(most, include_async=include_async)


@pytest.fixture
def repocket_assert_round_trips() -> Callable[..., AbstractContextManager[RoundTrips]]:
    """:func:`assert_round_trips`: ``with repocket_assert_round_trips(2): ...`` fails unless the block
    makes exactly 2 round trips to Redis (``commands=[...]`` checks the commands too)."""
    return assert_round_trips


@pytest.fixture
def repocket_assert_max_round_trips() -> Callable[..., AbstractContextManager[RoundTrips]]:
    """:func:`assert_max_round_trips`: ``with repocket_assert_max_round_trips(3): ...`` fails if the
    block makes more than 3 round trips to Redis."""
    return assert_max_round_trips


@pytest.fixture(scope="session")
def redis_cli(request: pytest.FixtureRequest) -> str:
    """The path of a ``redis-cli`` binary; skips the test if there is none."""
    from repocket.errors import ServerNotFoundError
    from repocket.server import find_redis_cli

    _skip_if_fake(request)
    try:
        return find_redis_cli()
    except ServerNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A real Redis Cluster on 127.0.0.1 (3 primaries, 1 replica each), shared by the session.

    Do not kill its nodes or fail it over: use ``redis_cluster_factory`` for that.
    """
    from repocket.topology import LocalCluster

    _skip_if_fake(request)
    cluster = LocalCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(request: pytest.FixtureRequest) -> Iterator[LocalSentinel]:
    """A primary, its replica and 3 sentinels on 127.0.0.1, shared by the session.

    Do not fail it over: use ``redis_sentinel_factory`` for that.
    """
    from repocket.topology import LocalSentinel

    _skip_if_fake(request)
    group = LocalSentinel(3)
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture
def redis_cluster_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalCluster]]:
    """A callable taking :class:`~repocket.topology.LocalCluster`'s arguments; starts a new cluster.

    Every cluster it started is stopped at the end of the test.
    """
    from repocket.topology import LocalCluster

    _skip_if_fake(request)
    yield from _factory(LocalCluster)


@pytest.fixture
def redis_sentinel_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalSentinel]]:
    """A callable taking :class:`~repocket.topology.LocalSentinel`'s arguments; starts a new group.

    Every group it started is stopped at the end of the test.
    """
    from repocket.topology import LocalSentinel

    _skip_if_fake(request)
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
