"""Count round trips to Redis without MONITOR (peewee's ``assertQueryCount``, for Redis).

redis-py writes every request through ``AbstractConnection.send_packed_command``:
a single command is one call, and a pipeline (with or without MULTI) packs all
its commands into one call. So one call is one round trip. Calls made while a
connection is being set up (``CLIENT SETINFO``, ``SELECT``, ``AUTH``, health
check ``PING``) are not counted: they are redis-py's, not repocket's.

Only calls made by the thread that opened the ``with`` block are counted::

    with count_round_trips() as trips:
        record.save()
    assert trips.count == 1
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.connection import AbstractConnection

__all__ = ["RoundTrips", "count_round_trips", "parse_request"]


@dataclass
class RoundTrips:
    """What one ``count_round_trips()`` block saw: ``count`` and the raw bytes of each request."""

    count: int = 0
    requests: list[bytes] = field(default_factory=list)

    def commands(self) -> list[list[bytes]]:
        """Every command sent, as its arguments (``[b"HGETALL", b"key"]``), pipelines flattened."""
        return [command for request in self.requests for command in parse_request(request)]

    def names(self) -> list[bytes]:
        """The name (upper case) of every command sent, pipelines flattened."""
        return [command[0].upper() for command in self.commands()]


def parse_request(request: bytes) -> list[list[bytes]]:
    """Split one packed request (RESP arrays of bulk strings) into its commands."""
    commands = []
    position = 0
    while position < len(request):
        end = request.index(b"\r\n", position)
        assert request[position:position + 1] == b"*", request[position:position + 20]
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


_state = threading.local()
_lock = threading.Lock()
_active: list[tuple[int, RoundTrips]] = []
_originals: dict[str, Any] = {}


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _counting_send(self: Any, command: Any, check_health: bool = True) -> Any:
    if _depth() == 0:
        _record(command)
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


#: Whether ``redis.asyncio`` requests count too: set by the ``async`` test driver, whose
#: event loop runs in the test's thread (tests/drivers.py).
count_async = False
#: Set while an async connection is being set up: its handshake is redis-py's.
_handshake: contextvars.ContextVar[int] = contextvars.ContextVar("repocket_roundtrips_handshake", default=0)


def _record(command: Any) -> None:
    me = threading.get_ident()
    packed = command.encode() if isinstance(command, str) else b"".join(
        item.encode() if isinstance(item, str) else bytes(item)
        for item in ([command] if isinstance(command, (bytes, bytearray, memoryview)) else command)
    )
    for owner, trips in list(_active):
        if owner == me:
            trips.count += 1
            trips.requests.append(packed)


async def _counting_asend(self: Any, command: Any, check_health: bool = True) -> Any:
    if count_async and _handshake.get() == 0:
        _record(command)
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
def count_round_trips() -> Iterator[RoundTrips]:
    """Count the requests this thread sends to Redis inside the block."""
    trips = RoundTrips()
    entry = (threading.get_ident(), trips)
    with _lock:
        _install()
        _active.append(entry)
    try:
        yield trips
    finally:
        with _lock:
            _active.remove(entry)
            _uninstall()
