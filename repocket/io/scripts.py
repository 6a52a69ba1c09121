"""The Lua scripts repocket runs: their source, read from the package once, and their SHA1.

Each script lives in ``repocket/lua/<name>.lua``; the write, incr and append
scripts start with the text of ``lib.lua``, the checks they share (Redis runs
each script on its own, with no includes). Executors call a script by SHA
(EVALSHA); a server that does not know it yet (first use, restart, failover)
answers NOSCRIPT, and the executor loads it and calls again once.

Script calls write, and some writes are not idempotent (``incr``, ``append``,
a versioned save), so executors send them **at most once**: redis-py's retries
still cover getting a connection, but a call whose reply was lost (a timeout,
a dropped connection) is never re-sent. It raises RedisConnectionError saying
the outcome is unknown (:data:`UNKNOWN_OUTCOME`), instead of risking a write
applied twice.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

__all__ = ["INCLUDES", "UNKNOWN_OUTCOME", "Script", "get"]

#: The library files each script's source starts with.
INCLUDES: dict[str, tuple[str, ...]] = {"write": ("lib", "changes"), "incr": ("lib",), "append": ("lib",)}

#: The message of a script call whose reply was lost.
UNKNOWN_OUTCOME = ("the connection to Redis failed during a write ({}); the write may or may not "
                   "have been applied: read the record back before retrying it")


def _read(name: str) -> str:
    return resources.files("repocket").joinpath(f"lua/{name}.lua").read_text("utf-8")


class Script:
    """One Lua script: its source (libraries first) and SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = "".join(_read(part) + "\n" for part in INCLUDES.get(name, ())) + _read(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()


@cache
def get(name: str) -> Script:
    """The script called ``name``, read from the package once."""
    return Script(name)
