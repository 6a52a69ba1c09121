"""The Lua scripts repocket runs, loaded once per server and called by SHA.

Each script lives in ``repocket/scripts/<name>.lua``; the write and incr
scripts start with the text of ``lib.lua``, the checks they share (Redis runs
each script on its own, with no includes). Calls go out as EVALSHA;
a server that does not know the script yet (first use, restart, failover)
answers NOSCRIPT, and the script is loaded and the call repeated once.

Script calls write, and some writes are not idempotent (``incr``, ``append``,
a versioned save), so they are sent **at most once**: redis-py's ``Retry``
still covers getting a connection, but a call whose reply was lost (a timeout,
a dropped connection) is never re-sent. It raises RedisConnectionError saying
the outcome is unknown, instead of risking a write applied twice.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors

#: The library files each script's source starts with.
INCLUDES: dict[str, tuple[str, ...]] = {"write": ("lib",), "incr": ("lib",)}


def _read(name: str) -> str:
    return resources.files("repocket").joinpath(f"scripts/{name}.lua").read_text("utf-8")


class Script:
    """One Lua script: its source (libraries first) and SHA1, called by SHA on a client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = "".join(_read(part) + "\n" for part in INCLUDES.get(name, ())) + _read(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __call__(self, client: redis.Redis, keys: list[Any], args: list[Any]) -> Any:
        """Run the script once, in one round trip (two on the server's first sight of it)."""
        try:
            return call_once(client, "EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return call_once(client, "EVALSHA", self.sha, len(keys), *keys, *args)


def call_once(client: redis.Redis, *command: Any) -> Any:
    """Send one command and read its reply, never re-sending it once it may have run.

    Raises:
        RedisConnectionError: the reply was lost; the command may or may not have run.
    """
    pool = client.connection_pool
    connection: Any = pool.get_connection()  # connects (with the pool's retries) if needed
    try:
        try:
            connection.send_command(*command)
        except RedisPyConnectionError:
            # Nothing complete reached the server (a stale socket): one fresh try.
            connection.disconnect()
            connection.send_command(*command)
        return client.parse_response(connection, command[0])  # type: ignore[no-untyped-call]
    except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
        connection.disconnect()
        raise errors.RedisConnectionError(
            f"the connection to Redis failed during a write ({exc}); the write may or may not "
            "have been applied: read the record back before retrying it"
        ) from exc
    finally:
        pool.release(connection)


@cache
def get(name: str) -> Script:
    """The script called ``name``, read from the package once."""
    return Script(name)
