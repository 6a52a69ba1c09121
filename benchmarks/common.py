"""What the benchmark's parts share: timing, the server's memory, the machine, the docs page."""

from __future__ import annotations

import datetime as dt
import gc
import os
import platform
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import redis

from repocket import keys

#: How long the server takes to bring ``mem_clients_normal`` up to date: its cron
#: (10 times a second) recomputes the memory of every client.
CLIENT_MEMORY_SETTLE = 0.3


class PipelinedWrites:
    """``create``, ``bulk_create`` and ``delete`` as both hand-written programs send them.

    Each record's commands, queued by ``_queue_write`` / ``_queue_delete`` (which
    each program's layout defines), go in one MULTI/EXEC pipeline; in bulk,
    ``batch_size`` records per pipeline.
    """

    r: Any
    batch_size: int

    def _queue_write(self, pipe: Any, pk: str, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def _queue_delete(self, pipe: Any, pk: str, values: dict[str, Any]) -> None:
        raise NotImplementedError

    def create(self, row: dict[str, Any], pk: str | None = None) -> str:
        """Store one record and its index entries in one MULTI/EXEC round trip; return its id."""
        pk = pk or str(uuid.uuid1())
        pipe = self.r.pipeline()
        self._queue_write(pipe, pk, row)
        pipe.execute()
        return pk

    def bulk_create(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Store many records, ``batch_size`` per MULTI/EXEC pipeline; return their ids."""
        ids = []
        for start in range(0, len(rows), self.batch_size):
            pipe = self.r.pipeline()
            for row in rows[start:start + self.batch_size]:
                pk = str(uuid.uuid1())
                self._queue_write(pipe, pk, row)
                ids.append(pk)
            pipe.execute()
        return ids

    def delete(self, pk: str, values: dict[str, Any]) -> int:
        """Delete one record whose indexed ``values`` are known, in one MULTI/EXEC round trip."""
        pipe = self.r.pipeline()
        self._queue_delete(pipe, pk, values)
        return int(pipe.execute()[0])


class AsyncPipelinedWrites:
    """:meth:`PipelinedWrites.create` on a ``redis.asyncio`` client."""

    r: Any

    def _queue_write(self, pipe: Any, pk: str, row: dict[str, Any]) -> None:
        raise NotImplementedError

    async def create(self, row: dict[str, Any], pk: str | None = None) -> str:
        """Store one record and its index entries in one MULTI/EXEC round trip; return its id."""
        pk = pk or str(uuid.uuid1())
        pipe = self.r.pipeline()
        self._queue_write(pipe, pk, row)
        await pipe.execute()
        return pk


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` (after a full collection) and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def data_memory(conn: redis.Redis) -> int:
    """``used_memory`` minus the clients' buffers (``mem_clients_normal``), in bytes.

    Call it after :data:`CLIENT_MEMORY_SETTLE` seconds without writes: the clients'
    part is recomputed by the server's cron, not at each command.
    """
    info = conn.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


def settled_memory(conn: redis.Redis, *writers: redis.Redis) -> int:
    """:func:`data_memory` once every writer's last command is a PING and the cron has run.

    The server keeps the arguments of a connection's last command (a 500-record
    script call: about 200 KB) until that connection's next command.
    """
    for writer in writers:
        writer.ping()
    time.sleep(CLIENT_MEMORY_SETTLE)
    return data_memory(conn)


def snapshot(conn: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` (name relative to it) with its type and content."""
    names = list(conn.scan_iter(match=keys.escape_glob(prefix) + ":*", count=1000))
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    kinds = pipe.execute()
    for name, kind in zip(names, kinds):
        if kind == b"hash":
            pipe.hgetall(name)
        elif kind == b"set":
            pipe.smembers(name)
        elif kind == b"zset":
            pipe.zrange(name, 0, -1, withscores=True)
        else:
            pipe.dump(name)
    return {name[len(prefix):]: (kind, content) for name, kind, content in zip(names, kinds, pipe.execute())}


# -- the machine ---------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class RunInfo:
    """Where and when the benchmark ran, as the page states it."""

    date: str
    machine: str
    python: str
    redis_server: str
    load: str

    @classmethod
    def measure(cls, conn: redis.Redis, load_at_start: float) -> RunInfo:
        """This machine and ``conn``'s server, now."""
        return cls(
            date=f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
            machine=f"{cpu_model()}, {os.cpu_count()} CPUs ({platform.system()} {platform.machine()})",
            python=f"{platform.python_implementation()} {platform.python_version()}",
            redis_server=str(conn.info("server")["redis_version"]),
            load=f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        )


# -- reStructuredText -----------------------------------------------------------------------


def rst_table(rows: Sequence[Sequence[str]]) -> str:
    """A reStructuredText simple table; ``rows[0]`` is the header, no cell may be empty."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    border = "  ".join("=" * width for width in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return "\n".join([border, line(rows[0]), border, *map(line, rows[1:]), border])


def fill(text: str) -> str:
    """``text`` as one paragraph of lines of at most 79 characters."""
    return textwrap.fill(text, width=79, break_long_words=False, break_on_hyphens=False)


def tidy(text: str) -> str:
    """``text`` without trailing spaces, surrounding blank lines or doubled blank lines."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)


def write_block(page: str, begin: str, begin_line: str, end: str, text: str) -> str:
    """``page`` with the lines between its ``begin`` and ``end`` comment lines replaced by ``text``.

    The line that starts with ``begin`` becomes ``begin_line``.

    Raises:
        ValueError: the page lacks either marker (nothing is written then).
    """
    lines = page.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(begin)), None)
    stop = None if start is None else next((i for i in range(start + 1, len(lines)) if lines[i].rstrip() == end), None)
    if start is None or stop is None:
        raise ValueError(f"the page has no {begin!r} ... {end!r} comment lines around its results")
    return "\n".join([*lines[:start], begin_line, "", text, "", *lines[stop:]]) + "\n"
