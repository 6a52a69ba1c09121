"""Count round trips to Redis, and the commands sent (peewee's ``assertQueryCount``, for Redis).

redis-py writes every request through ``AbstractConnection.send_packed_command``
(sync and ``redis.asyncio``): a single command is one call, and a pipeline
(with or without MULTI) packs all its commands into one call. So one call is
one round trip. Calls made while a connection is being set up (``CLIENT
SETINFO``, ``SELECT``, ``AUTH``, health check ``PING``) are not counted: they
are redis-py's, not the code under test's. fakeredis clients go through the
same methods, so the counts are the same with ``configure.fake()``.

Only requests sent from the thread that opened the block are counted (an
event loop running in that thread included), so other threads' traffic does
not spoil a count::

    with count_round_trips() as trips:
        record.save()
    assert trips.count == 1

    with assert_round_trips(1, commands=["EVALSHA"]):
        record.save()
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.connection import AbstractConnection

__all__ = ["RoundTrips", "assert_max_round_trips", "assert_round_trips", "count_round_trips", "parse_request"]

#: The longest argument a failed assertion's message shows, how many arguments of a command,
#: and how many commands of a pipeline.
_SHOWN_ARG = 80
_SHOWN_ARGS = 4
_SHOWN_COMMANDS = 6


@dataclass
class RoundTrips:
    """What one counting block saw: ``count`` and the raw bytes of each request (``requests``)."""

    count: int = 0
    requests: list[bytes] = field(default_factory=list)

    def commands(self) -> list[list[bytes]]:
        """Every command sent, as its arguments (``[b"HGETALL", b"key"]``), pipelines flattened."""
        return [command for request in self.requests for command in parse_request(request)]

    def names(self) -> list[bytes]:
        """The name (upper case) of every command sent, pipelines flattened."""
        return [command[0].upper() for command in self.commands()]

    def describe(self) -> str:
        """One numbered line per round trip, its commands abbreviated: what a failed assertion shows."""
        lines = []
        for number, request in enumerate(self.requests, 1):
            commands = parse_request(request)
            shown = "; ".join(_describe_command(command) for command in commands[:_SHOWN_COMMANDS])
            more = len(commands) - _SHOWN_COMMANDS
            lines.append(f"  {number}. {shown}" + (f"; … (+{more} more commands)" if more > 0 else ""))
        return "\n".join(lines) if lines else "  (none)"


def _describe_command(command: list[bytes]) -> str:
    """``HGETALL repocket:app:User:…``: a command's name and first arguments, each shortened."""
    name = command[0].decode("ascii", "backslashreplace").upper()
    args = [arg.decode("utf-8", "backslashreplace") for arg in command[1:_SHOWN_ARGS + 1]]
    shown = [arg if len(arg) <= _SHOWN_ARG else arg[:_SHOWN_ARG - 1] + "…" for arg in args]
    more = len(command) - 1 - len(args)
    return " ".join([name, *shown] + ([f"(+{more} more)"] if more else []))


def parse_request(request: bytes) -> list[list[bytes]]:
    """Split one packed request (RESP arrays of bulk strings) into its commands."""
    commands = []
    position = 0
    while position < len(request):
        end = request.index(b"\r\n", position)
        if request[position:position + 1] != b"*":
            raise ValueError(f"not a RESP array of bulk strings at byte {position}: {request[position:position + 20]!r}")
        count = int(request[position + 1:end])
        position = end + 2
        args = []
        for _ in range(count):
            end = request.index(b"\r\n", position)
            length = int(request[position + 1:end])
            args.append(request[end + 2:end + 2 + length])
            position = end + 2 + length + 2
        commands.append(args)
    return commands


class _Block:
    """One open counting block: its thread, whether it counts async requests, what it saw."""

    def __init__(self, include_async: bool) -> None:
        self.thread = threading.get_ident()
        self.include_async = include_async
        self.trips = RoundTrips()


_state = threading.local()
_lock = threading.Lock()
_active: list[_Block] = []
_originals: dict[str, Any] = {}
#: Set while an async connection is being set up: its handshake is redis-py's.
_handshake: contextvars.ContextVar[int] = contextvars.ContextVar("repocket_roundtrips_handshake", default=0)


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _packed(command: Any) -> bytes:
    """The bytes of one request as ``send_packed_command`` received it (bytes, str, or a list of chunks)."""
    if isinstance(command, str):
        return command.encode()
    if isinstance(command, (bytes, bytearray, memoryview)):
        return bytes(command)
    return b"".join(item.encode() if isinstance(item, str) else bytes(item) for item in command)


def _record(command: Any, is_async: bool) -> None:
    me = threading.get_ident()
    packed: bytes | None = None
    for block in list(_active):
        if block.thread == me and (block.include_async or not is_async):
            packed = packed if packed is not None else _packed(command)
            block.trips.count += 1
            block.trips.requests.append(packed)


def _counting_send(self: Any, command: Any, check_health: bool = True) -> Any:
    if _depth() == 0:
        _record(command, is_async=False)
    _state.depth = _depth() + 1
    try:
        return _originals["send_packed_command"](self, command, check_health)
    finally:
        _state.depth -= 1


def _quiet_connect(self: Any, *args: Any, **kwargs: Any) -> Any:
    # Handshake commands sent while connecting are not the caller's round trips.
    _state.depth = _depth() + 1
    try:
        return _originals["connect_check_health"](self, *args, **kwargs)
    finally:
        _state.depth -= 1


async def _counting_asend(self: Any, command: Any, check_health: bool = True) -> Any:
    if _handshake.get() == 0:
        _record(command, is_async=True)
    return await _originals["asend_packed_command"](self, command, check_health)


async def _quiet_aconnect(self: Any, *args: Any, **kwargs: Any) -> Any:
    token = _handshake.set(_handshake.get() + 1)
    try:
        return await _originals["aconnect_check_health"](self, *args, **kwargs)
    finally:
        _handshake.reset(token)


_PATCHES = [  # (class, attribute, key in _originals, replacement)
    (AbstractConnection, "send_packed_command", "send_packed_command", _counting_send),
    (AbstractConnection, "connect_check_health", "connect_check_health", _quiet_connect),
    (AsyncConnection, "send_packed_command", "asend_packed_command", _counting_asend),
    (AsyncConnection, "connect_check_health", "aconnect_check_health", _quiet_aconnect),
]


def _install() -> None:
    if not _originals:
        for cls, name, key, replacement in _PATCHES:
            _originals[key] = getattr(cls, name)
            setattr(cls, name, replacement)


def _uninstall() -> None:
    if _originals and not _active:
        for cls, name, key, _ in _PATCHES:
            setattr(cls, name, _originals.pop(key))


@contextmanager
def count_round_trips(*, include_async: bool = True) -> Iterator[RoundTrips]:
    """Count the requests this thread sends to Redis inside the block.

    Args:
        include_async: count ``redis.asyncio`` requests too (those of an event
            loop running in this thread); ``False`` counts sync ones only.
    """
    block = _Block(include_async)
    with _lock:
        _install()
        _active.append(block)
    try:
        yield block.trips
    finally:
        with _lock:
            _active.remove(block)
            _uninstall()


def _plural(count: int) -> str:
    return f"{count} round trip" + ("" if count == 1 else "s")


def _check_commands(trips: RoundTrips, commands: Sequence[str] | None) -> None:
    __tracebackhide__ = True
    if commands is None:
        return
    sent = [name.decode("ascii", "backslashreplace") for name in trips.names()]
    if sent != [command.upper() for command in commands]:
        raise AssertionError(f"expected the commands {list(commands)}, sent {sent}:\n{trips.describe()}")


@contextmanager
def assert_round_trips(expected: int, *, commands: Sequence[str] | None = None,
                       include_async: bool = True) -> Iterator[RoundTrips]:
    """Fail unless the block makes exactly ``expected`` round trips (Django's ``assertNumQueries``).

    Args:
        expected: how many requests the block must send.
        commands: if given, the names of every command the block must send, in
            order, pipelines flattened (``["MULTI", "HSET", "EXEC"]``); case does not matter.
        include_async: as for :func:`count_round_trips`.

    Raises:
        AssertionError: another number of round trips (or other commands); the
            message lists every round trip and its commands.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    with count_round_trips(include_async=include_async) as trips:
        yield trips
    if trips.count != expected:
        raise AssertionError(f"expected {_plural(expected)} to Redis, made {trips.count}:\n{trips.describe()}")
    _check_commands(trips, commands)


@contextmanager
def assert_max_round_trips(most: int, *, include_async: bool = True) -> Iterator[RoundTrips]:
    """Fail if the block makes more than ``most`` round trips.

    Raises:
        AssertionError: more round trips were made; the message lists them.
    """
    __tracebackhide__ = True
    with count_round_trips(include_async=include_async) as trips:
        yield trips
    if trips.count > most:
        raise AssertionError(f"expected at most {_plural(most)} to Redis, made {trips.count}:\n"
                             f"{trips.describe()}")
