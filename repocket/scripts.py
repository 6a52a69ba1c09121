"""The Lua scripts repocket runs, loaded once per server and called by SHA.

Each script lives in ``repocket/scripts/<name>.lua``. Calls go out as EVALSHA;
a server that does not know the script yet (first use, restart, failover)
answers NOSCRIPT, and the script is loaded and the call repeated once.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError


class Script:
    """One Lua script: its source and SHA1, called by SHA on a client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("repocket").joinpath(f"scripts/{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __call__(self, client: redis.Redis, keys: list[Any], args: list[Any]) -> Any:
        """Run the script in one round trip (two on the server's first sight of it)."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


@cache
def get(name: str) -> Script:
    """The script called ``name``, read from the package once."""
    return Script(name)
