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

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
    outermost = _depth() == 0
    if outermost:
        me = threading.get_ident()
        packed = command.encode() if isinstance(command, str) else b"".join(
            item.encode() if isinstance(item, str) else bytes(item)
            for item in ([command] if isinstance(command, (bytes, bytearray, memoryview)) else command)
        )
        for owner, trips in list(_active):
            if owner == me:
                trips.count += 1
                trips.requests.append(packed)
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


def _install() -> None:
    if not _originals:
        _originals["send_packed_command"] = AbstractConnection.send_packed_command
        _originals["connect_check_health"] = AbstractConnection.connect_check_health
        AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]
        AbstractConnection.connect_check_health = _quiet_connect  # type: ignore[method-assign]


def _uninstall() -> None:
    if _originals and not _active:
        AbstractConnection.send_packed_command = _originals.pop("send_packed_command")  # type: ignore[method-assign]
        AbstractConnection.connect_check_health = _originals.pop("connect_check_health")  # type: ignore[method-assign]


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
