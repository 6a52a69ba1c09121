"""JSON in and out of Redis: the one place bytes from the server are parsed.

Every hash field repocket writes is one JSON object, the *envelope*::

    {"type": "Unicode", "value": "Harry Potter", "module": "repocket.attributes"}

The envelope's members, their order and their separators are those of the
original repocket, so a record reads the same in ``redis-cli``. The value inside
is written by orjson. orjson reads integers wider than 64 bits as floats, so
text that holds a run of 19 or more digits is parsed by the standard library
instead, which keeps every integer exact.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19}")


def loads(raw: bytes | str) -> Any:
    """Parse JSON text exactly: integers of any size stay integers."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if _LONG_DIGITS.search(raw):
        return json.loads(raw, parse_constant=_reject_constant)
    return orjson.loads(raw)


def dumps(value: Any) -> bytes:
    """Serialize a JSON-compatible value compactly, integers of any size included."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # orjson refuses integers wider than 64 bits; the standard library does not.
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; repocket never writes them bare.
    raise ValueError(f"{name} is not valid JSON")


def envelope_prefix(type_name: str) -> bytes:
    """The bytes every envelope of this type starts with, up to the value."""
    return b'{"type": ' + orjson.dumps(type_name) + b', "value": '


def envelope_suffix(module: str, extra: dict[str, str] | None = None) -> bytes:
    """The bytes that close an envelope after the value (``extra`` members last)."""
    tail = b', "module": ' + orjson.dumps(module)
    for name, member in (extra or {}).items():
        tail += b", " + orjson.dumps(name) + b": " + orjson.dumps(member)
    return tail + b"}"
