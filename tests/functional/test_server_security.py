"""What keeps other local users out of the embedded server (repocket.server, configure.embedded)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

from repocket import server as server_module
from repocket.connections import configure
from repocket.errors import RepocketError
from repocket.server import (
    LOG_NAME,
    PASSWORD_NAME,
    RESTRICTED_COMMANDS,
    RedisServer,
    load_password,
    start_embedded,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (AF_UNIX limit), world-traversable like a home directory."""
    path = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def embedded() -> Iterator[Callable[..., RedisServer]]:
    """start_embedded, with every server it started stopped after the test."""
    servers: list[RedisServer] = []

    def start(path: Path, **kwargs: Any) -> RedisServer:
        server = start_embedded(path, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def restore_pool(redis_url: str) -> Iterator[None]:
    """Put repocket's global pool back on the test server after configure.embedded()."""
    yield
    server = configure._server
    if server is not None:
        server.stop()
        configure._server = None
    configure.connection_pool(url=redis_url)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _aof_files(path: Path) -> list[Path]:
    """The append-only file (Redis 6.2), or the files in appendonlydir/ (Redis 7, which also moves an old
    appendonly.aof in there)."""
    if (path / "appendonly.aof").exists():
        return [path / "appendonly.aof"]
    directory = path / "appendonlydir"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _password_of(server: RedisServer) -> str:
    password = urlsplit(server.url).password
    assert password
    return password


def _without_password(server: RedisServer) -> redis_py.Redis:
    """A client on the same address that gives no password (and does not retry the refusal)."""
    no_retry = Retry(NoBackoff(), 0)
    if server.unix_socket is not None:
        return redis_py.Redis(unix_socket_path=server.unix_socket, retry=no_retry)
    return redis_py.Redis(host="127.0.0.1", port=server.port or 0, retry=no_retry)


# -- files -----------------------------------------------------------------------------


def test_embedded_files_are_private(embedded: Callable[..., RedisServer], short_dir: Path) -> None:
    """The data directory is 0700 and the AOF, log and password file are 0600."""
    path = short_dir / "data"
    server = embedded(path)
    redis_py.Redis.from_url(server.url).set("secret", "value")
    server.stop()
    assert _mode(path) == 0o700
    for name in (LOG_NAME, PASSWORD_NAME):
        assert _mode(path / name) == 0o600, name
    assert _aof_files(path) and all(_mode(file) == 0o600 for file in _aof_files(path))
    assert not (path / "appendonlydir").exists() or _mode(path / "appendonlydir") == 0o700


def test_existing_dir_and_files_are_tightened(
    embedded: Callable[..., RedisServer], short_dir: Path
) -> None:
    """A directory and files left 0755/0644 by an older version are made 0700/0600."""
    path = short_dir / "data"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    (path / "appendonly.aof").write_bytes(b"")
    (path / "appendonly.aof").chmod(0o644)
    (path / LOG_NAME).write_bytes(b"old log\n")
    (path / LOG_NAME).chmod(0o644)
    embedded(path).stop()
    assert _mode(path) == 0o700
    assert _aof_files(path) and all(_mode(file) == 0o600 for file in _aof_files(path))
    assert not (path / "appendonlydir").exists() or _mode(path / "appendonlydir") == 0o700
    assert _mode(path / LOG_NAME) == 0o600


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_another_user_cannot_read_the_data(
    embedded: Callable[..., RedisServer], short_dir: Path
) -> None:
    """User nobody can neither read the append-only file nor connect to the socket."""
    path = short_dir / "data"
    server = embedded(path, unix_socket=path / "redis.sock")
    redis_py.Redis.from_url(server.url).set("secret", "value")
    for command in (["cat", str(_aof_files(path)[0])], ["cat", str(path / PASSWORD_NAME)]):
        done = subprocess.run(command, user="nobody", capture_output=True, check=False)
        assert done.returncode != 0 and b"value" not in done.stdout


@pytest.mark.skipif(not IS_ROOT, reason="needs root to give a directory to another user")
def test_directory_of_another_user_is_refused(short_dir: Path) -> None:
    """A data directory owned by someone else is refused: they could read or swap its files."""
    path = short_dir / "theirs"
    path.mkdir()
    os.chown(path, 65534, 65534)
    with pytest.raises(RepocketError, match="belongs to uid 65534"):
        start_embedded(path)


# -- password --------------------------------------------------------------------------


def test_embedded_requires_its_password(embedded: Callable[..., RedisServer], short_dir: Path) -> None:
    """A client without the password is refused; redis-py connects with handle.url."""
    server = embedded(short_dir / "data")
    with pytest.raises(redis_py.AuthenticationError):
        _without_password(server).set("k", "v")
    assert redis_py.Redis.from_url(server.url).ping()


def test_password_file_is_reused(embedded: Callable[..., RedisServer], short_dir: Path) -> None:
    """The password lives in <path>/password, and the next server on the path uses it too."""
    path = short_dir / "data"
    first = embedded(path)
    password = _password_of(first)
    assert len(password) >= 40  # token_urlsafe(32)
    assert (path / PASSWORD_NAME).read_text().strip() == password
    redis_py.Redis.from_url(first.url).set("k", "v")
    first.stop()
    second = embedded(path)
    assert _password_of(second) == password
    assert redis_py.Redis.from_url(second.url).get("k") == b"v"


def test_load_password_creates_once_and_tightens(tmp_path: Path) -> None:
    """load_password creates a 0600 file once, then returns its content, fixing a loose mode."""
    password = load_password(tmp_path)
    assert _mode(tmp_path / PASSWORD_NAME) == 0o600
    (tmp_path / PASSWORD_NAME).chmod(0o644)
    assert load_password(tmp_path) == password
    assert _mode(tmp_path / PASSWORD_NAME) == 0o600


def test_empty_password_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty password file (a crash while writing it) names the file to delete."""
    monkeypatch.setattr(server_module, "_PASSWORD_READ_TIMEOUT", 0.05)
    (tmp_path / PASSWORD_NAME).touch(mode=0o600)
    with pytest.raises(RepocketError, match="is empty; delete it"):
        load_password(tmp_path)


def test_password_is_masked_everywhere_shown(
    embedded: Callable[..., RedisServer], short_dir: Path
) -> None:
    """repr() and masked_url show *** where url has the password."""
    server = embedded(short_dir / "data")
    password = _password_of(server)
    assert server.masked_url == f"redis://:***@127.0.0.1:{server.port}/0"
    assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
    assert password not in repr(server) and "redis://:***@" in repr(server)


def test_password_not_in_start_error(tmp_path: Path) -> None:
    """The error of a failed start quotes the masked URL, never the password."""
    binary = tmp_path / "broken-redis"
    binary.write_text("#!/bin/sh\necho 'FATAL: no can do' >&2\nexit 1\n")
    binary.chmod(0o755)
    server = RedisServer(path=tmp_path / "data", password="hunter2-secret", binary=str(binary))
    with pytest.raises(RepocketError, match="no can do") as caught:
        server.start()
    assert "hunter2-secret" not in str(caught.value) and ":***@" in str(caught.value)


def test_password_not_on_the_command_line(
    embedded: Callable[..., RedisServer], short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password reaches redis-server on stdin: any local user can read argv with ps."""
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        argvs.append(list(args))
        return real_popen(args, **kwargs)

    monkeypatch.setattr(server_module.subprocess, "Popen", recording_popen)
    server = embedded(short_dir / "data")
    password = _password_of(server)
    assert argvs and not any(password in arg for argv in argvs for arg in argv)
    cmdline = Path(f"/proc/{server.pid}/cmdline")
    if cmdline.exists():
        assert password.encode() not in cmdline.read_bytes()


def test_any_password_text_is_passed_safely(tmp_path: Path) -> None:
    """A password with spaces, quotes and a newline is one requirepass value, not a new directive."""
    password = 'a b"c\n rename-command PING ""'
    with RedisServer(path=tmp_path / "data", password=password) as server:
        client = redis_py.Redis.from_url(server.url)
        assert client.ping()
        assert redis_py.Redis(host="127.0.0.1", port=server.port or 0, password=password).ping()


# -- disabled commands -----------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "dir"), ("DEBUG", "SLEEP", "0"),
                ("MODULE", "LIST"), ("REPLICAOF", "127.0.0.1", "1"), ("SLAVEOF", "NO", "ONE")],
)  # fmt: skip
def test_dangerous_commands_are_disabled(
    embedded: Callable[..., RedisServer], short_dir: Path, command: tuple[str, ...]
) -> None:
    """CONFIG, DEBUG, MODULE, REPLICAOF and SLAVEOF are unknown commands to clients of the embedded server."""
    assert command[0] in RESTRICTED_COMMANDS
    server = embedded(short_dir / "data")
    client = redis_py.Redis.from_url(server.url)
    with pytest.raises(redis_py.ResponseError, match="unknown command"):
        client.execute_command(*command)
    assert client.info("server")["process_id"] == server.pid  # INFO stays available


def test_plain_server_keeps_config_and_no_password(tmp_path: Path) -> None:
    """A plain RedisServer (the test suite's) has no password and allows CONFIG."""
    with RedisServer(path=tmp_path / "data") as server:
        client = redis_py.Redis.from_url(server.url)
        assert server.url == server.masked_url == f"redis://127.0.0.1:{server.port}/0"
        assert client.config_get("appendonly") == {"appendonly": "yes"}


def test_interrupted_start_leaves_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C while start() waits for PING kills the process it spawned."""
    pids: list[int] = []

    def interrupted(self: RedisServer, log_path: Path, log_offset: int) -> None:
        assert self._process is not None
        pids.append(self._process.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(RedisServer, "_wait_until_ready", interrupted)
    server = RedisServer(path=tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert pids and not server.running
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGKILL)  # without the fix it would still run


# -- configure.embedded: unix socket or TCP ---------------------------------------------


def test_configure_embedded_prefers_a_unix_socket(short_dir: Path, restore_pool: None) -> None:
    """Without port=, configure.embedded listens on <path>/redis.sock (0700) and no TCP port."""
    path = short_dir / "data"
    server = configure.embedded(path)
    sock = path / "redis.sock"
    assert server.unix_socket == str(sock) and server.port is None
    assert stat.S_ISSOCK(sock.stat().st_mode) and _mode(sock) == 0o700
    password = _password_of(server)
    assert server.url == f"unix://:{password}@{sock}?db=0"
    assert server.masked_url == f"unix://:***@{sock}?db=0"
    assert configure.get_connection().ping()
    assert redis_py.Redis.from_url(f"unix://{sock}?db=0&password={password}").ping()
    with pytest.raises(redis_py.AuthenticationError):
        _without_password(server).ping()


def test_configure_embedded_long_path_uses_tcp(tmp_path: Path, restore_pool: None) -> None:
    """When <path>/redis.sock is too long for AF_UNIX, configure.embedded falls back to TCP."""
    path = tmp_path / ("d" * 60) / ("e" * 60)
    server = configure.embedded(path)
    assert server.unix_socket is None and server.port is not None
    assert configure.get_connection().ping()


def test_configure_embedded_with_port_uses_tcp(short_dir: Path, restore_pool: None) -> None:
    """With port=, configure.embedded listens on TCP 127.0.0.1, with the password."""
    port = server_module._free_port()
    server = configure.embedded(short_dir / "data", port=port)
    assert server.port == port and server.unix_socket is None
    assert configure.get_connection().ping()
    with pytest.raises(redis_py.AuthenticationError):
        _without_password(server).ping()


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_the_embedded_server_keeps_a_typical_record_compact(
    embedded: Callable[..., RedisServer], short_dir: Path
) -> None:
    """A record of six short fields stays in Redis's compact hash encoding on the embedded server, not on a plain one."""
    from repocket import ActiveRecord, attributes

    class Compact(ActiveRecord):
        name = attributes.Unicode(index=True)
        house = attributes.Unicode()
        age = attributes.Integer(index=True)
        wand = attributes.Unicode()
        score = attributes.Float()
        bio = attributes.Unicode()

    record = Compact(name="Hermione Granger", house="Gryffindor", age=18, wand="vine", score=0.731,
                     bio="a student of magic")
    server = embedded(short_dir / "data")
    with RedisServer() as plain:
        encodings = []
        for url in (server.url, plain.url):
            client = redis_py.Redis.from_url(url)
            record.save(force=True, connection=client)
            encodings.append(client.object("encoding", record._key()))
            client.close()
    assert encodings[0] in (b"ziplist", b"listpack")  # Redis 6.2 / 7.x names
    assert encodings[1] == b"hashtable"  # Redis's default of 64 bytes is too short for the envelopes
