"""The pytest plugin for users' own tests (repocket.testing): real and fake mode, the
``repocket_models`` and ``needs_server`` markers, and the round-trip counters.

Each plugin test writes a small user test file and runs it in an inner pytest
session (``pytester``), as a project that installed repocket would.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import textwrap

import pytest
import redis as redis_py
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from repocket import ActiveRecord, attributes
from repocket.connections import configure
from repocket.roundtrips import (
    RoundTrips,
    assert_max_round_trips,
    assert_round_trips,
    count_round_trips,
    parse_request,
)
from repocket.testing import flush_models

pytest_plugins = ["pytester"]


def _plugin_args(*more: str) -> list[str]:
    """Inner-session arguments: the plugin (unless its entry point loads it), no cache, no pytest-asyncio."""
    names = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    plugin = [] if "repocket" in names else ["-p", "repocket.testing"]
    return ["-p", "no:asyncio", "-p", "no:cacheprovider", "-rs", *plugin, *more]


MODELS = '''
from repocket import ActiveRecord, attributes

class Customer(ActiveRecord):
    __namespace__ = "shopapp"
    email = attributes.Unicode(unique=True)
    name = attributes.Unicode()

class Order(ActiveRecord):
    __namespace__ = "shopapp"
    customer = attributes.Pointer(Customer)
    total = attributes.Integer(index=True)
'''


def _inner(pytester: pytest.Pytester, body: str) -> None:
    """Write the user's models (``shop_models.py``) and a test module with ``body``."""
    pytester.makepyfile(shop_models=MODELS)
    pytester.makepyfile(test_user=textwrap.dedent(body))


# -- real mode --------------------------------------------------------------------------

REAL_MODE = '''
import redis
from repocket.connections import configure
from shop_models import Customer

def test_first(redis, repocket_connection):
    assert type(redis) is __import__("redis").Redis
    assert redis.dbsize() == 0
    Customer(email="a@example.com", name="Ann").save()
    assert redis.exists(f"repocket:shopapp:Customer:_ids")

def test_second_starts_empty(redis, repocket_connection):
    assert redis.dbsize() == 0
    assert Customer.objects.count() == 0
'''


def test_real_mode_flushes_between_tests(pytester: pytest.Pytester, redis_url: str) -> None:
    """Against a real server, each test starts on an empty database and repocket is pointed at it."""
    _inner(pytester, REAL_MODE)
    result = pytester.runpytest(*_plugin_args("--redis-url", redis_url))
    result.assert_outcomes(passed=2)


# -- fake mode --------------------------------------------------------------------------

FAKE_MODE = '''
import asyncio
import fakeredis
import pytest
from repocket.connections import configure
from shop_models import Customer, Order

def test_fake_clients(redis, repocket_connection):
    assert isinstance(redis, fakeredis.FakeRedis)
    assert repocket_connection is configure.get_connection()
    ann = Customer(email="ann@example.com", name="Ann")
    ann.save()
    assert redis.hget(f"repocket:shopapp:Customer:{ann.id}", "name") is not None  # bytes replies

    async def read_async():
        client = configure.get_async_connection()
        assert isinstance(client, fakeredis.aioredis.FakeRedis)
        found = await Customer.objects.aget(email="ann@example.com")
        await Order(customer=found, total=3).asave()
        return found

    assert asyncio.run(read_async()).name == "Ann"
    assert Order.objects.filter(total=3).count() == 1  # the async write, seen by sync code

def test_each_test_gets_a_new_server(redis, repocket_connection):
    assert redis.dbsize() == 0
    assert Customer.objects.count() == 0

@pytest.mark.parametrize("fixture", ["redis_url", "redis_server", "redis_cli", "redis_cluster",
                                     "redis_sentinel", "redis_cluster_factory", "redis_sentinel_factory"])
def test_needs_real_server(request, fixture):
    request.getfixturevalue(fixture)

@pytest.mark.needs_server("reads OBJECT ENCODING")
def test_marked(redis):
    pass
'''


def test_fake_mode_without_a_server(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """--repocket-fake: fakeredis clients (sync and async on one server), a new one per test, no
    redis-server started; server fixtures and needs_server tests skip, saying why."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REPOCKET_REDIS_SERVER", "/nonexistent/redis-server")  # a start would fail
    _inner(pytester, FAKE_MODE)
    result = pytester.runpytest(*_plugin_args("--repocket-fake"))
    result.assert_outcomes(passed=2, skipped=8)
    result.stdout.fnmatch_lines([
        "*redis_cluster needs a real redis-server, and this run uses fakeredis (--repocket-fake)*",
        "*needs_server (--repocket-fake): reads OBJECT ENCODING*",
    ])


def test_fake_mode_and_a_url_are_a_usage_error(pytester: pytest.Pytester) -> None:
    """--repocket-fake with --redis-url stops the run, saying to choose one."""
    _inner(pytester, "def test_nothing():\n    pass\n")
    result = pytester.runpytest(*_plugin_args("--repocket-fake", "--redis-url", "redis://localhost:1/0"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--repocket-fake runs on fakeredis, without a server: drop --redis-url*"])


def test_fake_mode_without_fakeredis_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure.fake() without fakeredis's Lua runtime is an ImportError saying what to install."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lupa" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'fakeredis\[lua\]'"):
        configure.fake()


def test_needs_server_runs_on_a_real_server(pytester: pytest.Pytester, redis_url: str) -> None:
    """Without --repocket-fake, a needs_server test runs (and the marker passes --strict-markers)."""
    _inner(pytester, '''
        import pytest

        @pytest.mark.needs_server("reads OBJECT ENCODING")
        def test_marked(redis):
            redis.set("k", "1")
            assert redis.object("encoding", "k") == b"int"
    ''')
    result = pytester.runpytest(*_plugin_args("--strict-markers", "--redis-url", redis_url))
    result.assert_outcomes(passed=1)


# -- repocket_models --------------------------------------------------------------------

MODELS_MARKED = '''
import pytest
from shop_models import Customer, Order

pytestmark = pytest.mark.repocket_models([Customer])

@pytest.mark.repocket_models([Order])
def test_only_those_models_were_deleted(redis):
    keys = {key.decode() for key in redis.keys("*")}
    assert keys == {"unrelated:data", "repocket:shopapp:CustomerNote:_ids"}
    assert Customer.objects.count() == 0  # the marker alone configured repocket
    buyer = Customer(email="c@example.com")
    buyer.save()
    Order(customer=buyer, total=5).save()
'''


def test_repocket_models_deletes_only_those_models(
    pytester: pytest.Pytester, redis: redis_py.Redis, redis_url: str
) -> None:
    """repocket_models (module and test markers together) deletes the keys of those models before
    and after the test, in either layout; keys of other models, even with a longer name, stay."""
    redis.set("unrelated:data", "kept")
    redis.sadd("repocket:shopapp:CustomerNote:_ids", "x")  # another model whose name starts alike
    redis.sadd("repocket:shopapp:Customer:_ids", "stale")
    redis.set("repocket:shopapp:Order:5d1c4f3e-9b1a-4c6e-8f7a-2b4d6e8f0a29", "stale")
    redis.sadd("{repocket:shopapp:Order:0}:_ids", "stale")  # the cluster layout's keys
    _inner(pytester, MODELS_MARKED)
    result = pytester.runpytest(*_plugin_args("--redis-url", redis_url))
    result.assert_outcomes(passed=1)
    assert sorted(redis.keys("*")) == [b"repocket:shopapp:CustomerNote:_ids", b"unrelated:data"]


def test_repocket_models_rejects_what_is_not_a_model(pytester: pytest.Pytester, redis_url: str) -> None:
    """A marker naming something other than a model class is an error naming the value."""
    _inner(pytester, '''
        import pytest

        @pytest.mark.repocket_models(["Customer"])
        def test_marked():
            pass
    ''')
    result = pytester.runpytest(*_plugin_args("--redis-url", redis_url))
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*repocket_models takes model classes, not 'Customer'*"])


class Flushed(ActiveRecord):
    name = attributes.Unicode(index=True)


class FlushedTwin(ActiveRecord):
    name = attributes.Unicode()


def test_flush_models_deletes_every_key_of_the_model(repocket_connection: redis_py.Redis) -> None:
    """flush_models deletes a model's records, indexes and bookkeeping, and says how many keys."""
    for name in ("a", "b"):
        Flushed(name=name).save()
    FlushedTwin(name="c").save()
    before = repocket_connection.dbsize()
    assert flush_models(Flushed) == before - 2  # all but FlushedTwin's hash and id set
    assert Flushed.objects.count() == 0
    assert FlushedTwin.objects.count() == 1


# -- counters ---------------------------------------------------------------------------

COUNTERS = '''
import asyncio
from shop_models import Customer

def test_right_count(repocket_connection, repocket_assert_round_trips, repocket_assert_max_round_trips):
    Customer(email="warm@example.com").save()  # loads the write script
    with repocket_assert_round_trips(1, commands=["EVALSHA"]) as trips:
        Customer(email="a@example.com").save()
    assert trips.count == 1
    with repocket_assert_max_round_trips(1):
        asyncio.run(Customer(email="b@example.com").asave())

def test_wrong_count(repocket_connection, repocket_assert_round_trips):
    Customer(email="warm@example.com").save()
    with repocket_assert_round_trips(3):
        Customer(email="a@example.com").save()

def test_async_counted(repocket_connection, repocket_assert_round_trips):
    Customer(email="warm@example.com").save()
    with repocket_assert_round_trips(2):
        asyncio.run(Customer(email="b@example.com").asave())

def test_too_many(repocket_connection, repocket_assert_max_round_trips):
    with repocket_assert_max_round_trips(0):
        Customer.objects.count()

def test_wrong_commands(repocket_connection, repocket_assert_round_trips):
    with repocket_assert_round_trips(1, commands=["GET"]):
        Customer.objects.count()
'''


@pytest.mark.parametrize("mode", ["real", "fake"])
def test_counters_fail_with_the_commands_sent(pytester: pytest.Pytester, mode: str, request: pytest.FixtureRequest) -> None:
    """A wrong count fails naming the expected and actual counts and every round trip's commands;
    async requests count; the same numbers on fakeredis."""
    args = ["--repocket-fake"] if mode == "fake" else ["--redis-url", request.getfixturevalue("redis_url")]
    _inner(pytester, COUNTERS)
    result = pytester.runpytest(*_plugin_args(*args))
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines([
        "*AssertionError: expected 3 round trips to Redis, made 1:",
        "*  1. EVALSHA *",
    ])
    result.stdout.fnmatch_lines(["*expected 2 round trips to Redis, made 1:*"])  # test_async_counted
    result.stdout.fnmatch_lines(["*expected at most 0 round trips to Redis, made 1:*", "*  1. SCARD repocket:shopapp:Customer:_ids*"])
    assert "expected the commands ['GET'], sent ['SCARD']:" in result.stdout.str()


def test_count_round_trips_in_process(repocket_connection: redis_py.Redis) -> None:
    """One command is one round trip, a pipeline is one, and each command of it is listed."""
    with count_round_trips() as trips:
        repocket_connection.set("k", "v")
        pipe = repocket_connection.pipeline()
        pipe.get("k").sadd("s", "m")
        pipe.execute()
    assert trips.count == 2
    assert trips.names() == [b"SET", b"MULTI", b"GET", b"SADD", b"EXEC"]
    assert trips.describe().splitlines() == ["  1. SET k v", "  2. MULTI; GET k; SADD s m; EXEC"]


def test_assert_helpers_raise_only_when_wrong(repocket_connection: redis_py.Redis) -> None:
    """assert_round_trips passes on the exact count; assert_max_round_trips on fewer, not on more."""
    with assert_round_trips(1, commands=["get"]):
        repocket_connection.get("k")
    with assert_max_round_trips(2):
        repocket_connection.get("k")
    with pytest.raises(AssertionError, match=r"at most 1 round trip to Redis, made 2:\n  1\. GET k\n  2\. GET k"):
        with assert_max_round_trips(1):
            repocket_connection.get("k")
            repocket_connection.get("k")


def test_long_arguments_are_shortened() -> None:
    """A failed assertion shows at most 4 arguments of a command, each at most 80 characters."""
    trips = RoundTrips(1, [Connection().pack_command("HSET", "h", "x" * 100, 1, 2, 3, 4)[0]])
    assert trips.describe() == "  1. HSET h " + "x" * 79 + "… 1 2 (+2 more)"


#: A command: a name (redis-py splits a first argument at spaces), then any arguments.
_commands = st.tuples(st.from_regex(r"[A-Z]{1,8}", fullmatch=True),
                      st.lists(st.binary(max_size=30) | st.text(max_size=10), max_size=5))


@given(st.lists(_commands.map(lambda command: [command[0], *command[1]]), min_size=1, max_size=5))
def test_parse_request_reads_back_what_redis_py_packs(commands: list[list[bytes | str]]) -> None:
    """Whatever redis-py packs into one request (a pipeline), parse_request gives back its commands."""
    connection = Connection()
    request = b"".join(b"".join(connection.pack_commands([command])) for command in commands)
    expected = [[arg.encode() if isinstance(arg, str) else arg for arg in command] for command in commands]
    assert parse_request(request) == expected


def test_long_pipelines_are_shortened() -> None:
    """A failed assertion shows the first 6 commands of a pipeline, then how many more there were."""
    connection = Connection()
    request = b"".join(b"".join(connection.pack_commands([("GET", str(n))])) for n in range(10))
    assert RoundTrips(1, [request]).describe() == "  1. GET 0; GET 1; GET 2; GET 3; GET 4; GET 5; … (+4 more commands)"
