"""Secondary indexes: which index entries a value has, as Redis writes.

For an indexed attribute ``field`` of a record ``pk``:

* every value gets an equality entry: ``pk`` in the set ``<prefix>:_eq:<field>:<token>``,
  where equal values have equal tokens (``Decimal("1.10")`` and ``Decimal("1.1")`` alike);
  ``None`` goes in ``<prefix>:_null:<field>`` instead;
* ordered types (Integer, Float, Decimal, DateTime) also get ``pk`` scored by the
  value in the sorted set ``<prefix>:_sort:<field>``;
* Unicode also gets the member ``value + "\\x00" + pk`` in ``<prefix>:_lex:<field>``,
  a sorted set whose members sort by code point, for ``startswith`` and ordering;
* a PointerList puts ``pk`` in the equality set of each of its targets (none when empty);
* ``unique=True`` fields map token to pk in the hash ``<prefix>:_unique:<field>``.

Scores are doubles: integers past 2**53 and long Decimals share scores with
their neighbours, so range queries read a slightly wider candidate set and
compare exactly in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from repocket import attributes, keys

if TYPE_CHECKING:
    from repocket.options import ModelOptions

ORDERED_TYPES = (attributes.Integer, attributes.Float, attributes.Decimal, attributes.DateTime)


def is_ordered(attr: attributes.Attribute[Any]) -> bool:
    """Whether the attribute keeps a sorted (score) index."""
    return isinstance(attr, ORDERED_TYPES)


def is_lex(attr: attributes.Attribute[Any]) -> bool:
    """Whether the attribute keeps a lexicographic index (Unicode)."""
    return isinstance(attr, attributes.Unicode)


def score(attr: attributes.Attribute[Any], value: Any) -> float | None:
    """The sorted-index score of ``value``; None for values with no order (NaN)."""
    if isinstance(attr, attributes.DateTime):
        return attributes.instant_microseconds(value) / 1e6  # a naive value read as UTC
    if isinstance(attr, attributes.Decimal):
        if value.is_nan():
            return None
        return float(value)  # past the double range: ±inf
    try:
        result = float(value)
    except OverflowError:  # an int past the double range
        return math.inf if value > 0 else -math.inf
    return None if math.isnan(result) else result


def format_score(number: float) -> str:
    """A score as Redis reads it (``inf``/``-inf`` spelled its way)."""
    if number == math.inf:
        return "+inf"
    if number == -math.inf:
        return "-inf"
    return repr(number)


def entries(meta: ModelOptions, field: str, value: Any, pk: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """The index entries of one value: ``(key, kind, args)`` with kind in s/z/l.

    ``s`` is a set member ``args[0]``; ``z`` a sorted-set ``(score, member)``;
    ``l`` a lexicographic member ``args[0]`` (score 0).
    """
    attr = meta.fields[field]
    if isinstance(attr, attributes.PointerList):  # one equality entry per target, none for an empty list
        for target in value:
            yield keys.eq_index_key(meta.prefix, field, attr.target_token(target)), "s", (pk,)
        return
    if value is None:
        yield keys.null_index_key(meta.prefix, field), "s", (pk,)
        return
    token = attr.index_token(value)
    yield keys.eq_index_key(meta.prefix, field, token), "s", (pk,)
    if is_ordered(attr):
        number = score(attr, value)
        if number is not None:
            yield keys.sorted_index_key(meta.prefix, field), "z", (format_score(number), pk)
    elif is_lex(attr):
        yield keys.lex_index_key(meta.prefix, field), "l", (value + "\x00" + pk,)


def lex_member_id(member: bytes) -> bytes:
    """The record id a lexicographic index member ends with (after its last NUL: values may hold NUL)."""
    return member.rsplit(b"\x00", 1)[-1]


class WritePlan:
    """One record's KEYS and ARGV in a call of the ``write`` script, built up op by op.

    Its first key is the record hash, its second the record's write lease
    (see ``repocket/lua/write.lua``).
    """

    def __init__(self, record_key: str, lease_key: str) -> None:
        self.keys: list[str] = [record_key, lease_key]
        self.types: list[str] = ["h", "t"]
        self.checks: list[Any] = []
        self.writes: list[Any] = []
        #: unique token -> the value it stands for, to name the value in errors
        self.unique_values: dict[str, Any] = {}
        self._slots: dict[str, int] = {record_key: 1, lease_key: 2}

    def slot(self, key: str, kind: str) -> int:
        """The 1-based KEYS index of ``key`` (type letter ``kind``), adding it if new."""
        index = self._slots.get(key)
        if index is None:
            self.keys.append(key)
            self.types.append(kind)
            index = self._slots[key] = len(self.keys)
        return index

    def check(self, *args: Any) -> None:
        self.checks.extend(args)

    def write(self, *args: Any) -> None:
        self.writes.extend(args)

    def add_entries(self, meta: ModelOptions, field: str, value: Any, pk: str) -> None:
        """Write the index entries of ``value``."""
        for key, kind, args in entries(meta, field, value, pk):
            if kind == "s":
                self.write("sadd", self.slot(key, "s"), *args)
            else:
                member = args[-1]
                self.write("zadd", self.slot(key, "z"), args[0] if kind == "z" else "0", member)

    def remove_entries(self, meta: ModelOptions, field: str, value: Any, pk: str) -> None:
        """Remove the index entries of ``value`` (all named first: if one cannot be, none is added)."""
        for key, kind, args in list(entries(meta, field, value, pk)):
            if kind == "s":
                self.write("srem", self.slot(key, "s"), *args)
            else:
                self.write("zrem", self.slot(key, "z"), args[-1])

    def args(self) -> list[Any]:
        """This record's part of the script's ARGV (its keys are :attr:`keys`)."""
        return [len(self.keys), "".join(self.types), len(self.checks), len(self.writes),
                *self.checks, *self.writes]
