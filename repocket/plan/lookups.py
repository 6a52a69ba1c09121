"""What each lookup means: its Python predicate, its cast value, and the index read that serves it.

One :class:`Lookup` per ``field[__target_field][__op]=value`` of a query.
Every lookup is checked in Python on the loaded records (:data:`LOOKUPS`), so
an index only narrows the candidates and never changes an answer.
:func:`index_read` says which index read gives a superset of a lookup's
matches, and :func:`exact_index` whether that read is exactly its matches.
Pure: nothing here talks to Redis.
"""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from repocket import attributes, errors, indexes, keys
from repocket.plan.rounds import Command, command

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = [
    "EXACT_OPS", "EXACT_SCORE_LIMITS", "LOOKUPS", "Lookup", "counted_by_index", "exact_index", "index_read", "members",
    "record_id", "set_keys", "token",
]


def _contains(value: Any, wanted: Any) -> bool:
    try:
        return wanted in value
    except TypeError:
        return False


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(value: Any, wanted: Any) -> bool:
        if value is None:
            return False
        try:
            return op(value, wanted)
        except (TypeError, ArithmeticError):  # unorderable, or a Decimal NaN
            return False

    return check


#: Lookup name -> (value, wanted) -> bool, applied in Python to loaded records.
LOOKUPS: dict[str, Callable[[Any, Any], bool]] = {
    "exact": lambda value, wanted: value == wanted,
    "iexact": lambda value, wanted: _fold(value) == _fold(wanted),
    "in": lambda value, wanted: value in wanted,
    "gt": _compare(operator.gt),
    "gte": _compare(operator.ge),
    "lt": _compare(operator.lt),
    "lte": _compare(operator.le),
    "range": _compare(lambda value, wanted: wanted[0] <= value <= wanted[1]),
    "isnull": lambda value, wanted: (value is None) == wanted,
    "startswith": lambda value, wanted: isinstance(value, (str, bytes)) and value.startswith(wanted),
    "istartswith": lambda value, wanted: isinstance(value, str) and value.casefold().startswith(wanted.casefold()),
    "endswith": lambda value, wanted: isinstance(value, (str, bytes)) and value.endswith(wanted),
    "iendswith": lambda value, wanted: isinstance(value, str) and value.casefold().endswith(wanted.casefold()),
    "contains": lambda value, wanted: value is not None and _contains(value, wanted),
    "icontains": lambda value, wanted: isinstance(value, str) and wanted.casefold() in value.casefold(),
    "regex": lambda value, wanted: isinstance(value, str) and wanted.search(value) is not None,
    "iregex": lambda value, wanted: isinstance(value, str) and wanted.search(value) is not None,
}

#: Lookups that only make sense on text (Unicode attributes).
_TEXT_LOOKUPS = frozenset({"iexact", "istartswith", "iendswith", "icontains", "regex", "iregex"})


def _unknown_lookup(meta: ModelOptions, expression: str, name: str) -> errors.UnknownFieldError:
    return errors.UnknownFieldError(
        f"{meta.label}: unknown lookup {name!r} in {expression!r}; supported lookups: "
        f"{', '.join(LOOKUPS)} (a Pointer may be followed once: field__target_field__lookup)",
        model=meta.label, field=expression, valid=meta.field_names(),
    )


class Lookup:
    """One condition: ``field[__subfield]__op = value``, its value already cast."""

    def __init__(self, meta: ModelOptions, expression: str, value: Any) -> None:
        parts = expression.split("__")
        op = parts[-1] if len(parts) > 1 and parts[-1] in LOOKUPS else "exact"
        path = parts[:-1] if op != "exact" or parts[-1] == "exact" else parts
        if not path or not path[0]:
            raise meta.unknown_field(expression, "lookup")
        if path[0] == "pk":
            path[0] = meta.pk
        attr = meta.fields.get(path[0])
        if attr is None:
            raise meta.unknown_field(path[0])
        if len(path) > 1 and not isinstance(attr, attributes.Pointer):
            raise _unknown_lookup(meta, expression, path[1])
        if len(path) > 2:
            target_fields = attr.to_model._meta.fields  # type: ignore[attr-defined]
            if path[1] in target_fields and not isinstance(target_fields[path[1]], attributes.Pointer):
                raise _unknown_lookup(meta, expression, path[2])
            raise meta.unknown_field(expression, "lookup (a Pointer is followed one level deep)")
        if isinstance(attr, attributes.PointerList) and op not in ("exact", "in"):
            raise errors.ValidationError(
                f"{meta.label}.{path[0]}: a PointerList is queried with "
                f"{path[0]}=<record> (holds it) or {path[0]}__in=[...] (holds any of them), not __{op}",
                model=meta.label, field=path[0], value=None, expected="the exact or in lookup")
        self.field = path[0]
        self.attr = attr
        #: A PointerList: the lookup asks whether the list holds the record (``in``: any of them).
        self._list = isinstance(attr, attributes.PointerList)
        self._pointer = isinstance(attr, attributes.Pointer) or self._list
        #: DateTime values compare as instants (a naive value counts as UTC).
        self._instant = isinstance(attr, attributes.DateTime)
        self.sub: Lookup | None = None
        self.op = op
        self.value: Any
        if len(path) == 2:
            target = attr.to_model._meta  # type: ignore[attr-defined]
            self.sub = Lookup(target, "__".join(path[1:] + [op]), value)
            self.value = self.sub.value
            return
        self.value = self._cast(meta, value)

    def _cast(self, meta: ModelOptions, value: Any) -> Any:
        attr, op = self.attr, self.op
        if op == "isnull":
            return bool(value)
        if op == "in":
            if isinstance(value, (str, bytes, bytearray, dict)) or not hasattr(value, "__iter__"):
                raise errors.ValidationError(
                    f"{meta.label}.{self.field}__in takes a list, tuple or set of values, "
                    f"not a {type(value).__name__}",
                    model=meta.label, field=self.field, value=None, expected="a list of values",
                )
            return [self._cast_one(v) for v in value]
        if op == "range":
            low, high = value
            return (self._cast_one(low), self._cast_one(high))
        if op in ("contains", "icontains") and isinstance(attr, attributes.JSON):
            return value
        if op in _TEXT_LOOKUPS and not isinstance(attr, attributes.Unicode):
            raise errors.ValidationError(
                f"{meta.label}.{self.field}: the {op} lookup works on Unicode attributes only, "
                f"and {self.field} is {type(attr).__name__}",
                model=meta.label, field=self.field, value=None, expected="a Unicode attribute",
            )
        if op in ("regex", "iregex"):
            if not isinstance(value, str):
                raise attr._invalid(value)
            try:
                return re.compile(value, re.IGNORECASE if op == "iregex" else 0)
            except re.error as exc:
                raise errors.ValidationError(
                    f"{meta.label}.{self.field}__{op}: invalid regular expression ({exc})",
                    model=meta.label, field=self.field, value=None, expected="a regular expression",
                ) from None
        return self._cast_one(value)

    def _cast_one(self, value: Any) -> Any:
        if self._pointer:
            return _pointer_pk(self.attr, value)  # type: ignore[arg-type]
        return self.attr.comparable(self.attr.cast(value))

    def value_of(self, record: Any) -> Any:
        value = record._data[self.field]
        if self._list:
            return {target.pk for target in value}
        if self._pointer and self.sub is None:
            return None if value is None else value.pk
        return self.attr.comparable(value) if self._instant else value

    def matches(self, record: Any) -> bool:
        if self.sub is not None:
            target = record._data[self.field]
            return getattr(target, "_meta", None) is not None and self.sub.matches(target)  # None, broken: no
        if self.op == "exact" and not self._pointer and not self._instant:
            return bool(record._data[self.field] == self.value)  # the common case, inlined
        if self._list:  # holds the record; ``in``: holds any of them
            held = self.value_of(record)
            return self.value in held if self.op == "exact" else not held.isdisjoint(self.value)
        return LOOKUPS[self.op](self.value_of(record), self.value)


def _pointer_pk(attr: attributes.Reference[Any], value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    if getattr(value, "_meta", None) is not None:  # a record
        if not isinstance(value, attr.to_model):
            raise attr._invalid(value)
        return value._pk()  # type: ignore[no-any-return]
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise attr._invalid(value)


def members(reply: Any) -> set[str]:
    """Ids from an index or id set reply; anything that is not a canonical UUID is no record's id."""
    return {m.decode() for m in reply if keys.CANONICAL_ID_BYTES.fullmatch(m)}


def record_id(member: bytes) -> bool:
    """Whether an index member is a record's id (a canonical UUID), as :func:`members` keeps them."""
    return keys.CANONICAL_ID_BYTES.fullmatch(member) is not None


def _lex_ids(reply: Any) -> set[str]:
    return members(indexes.lex_member_id(m) for m in reply)


def index_read(meta: ModelOptions, lookup: Lookup) -> tuple[Command, Callable[[Any], set[str]]] | None:
    """The index read giving a superset of the records matching ``lookup`` (not a Pointer
    traversal: see repocket.plan.select), and how to parse its reply into ids; None if no index serves it."""
    attr, op, value = lookup.attr, lookup.op, lookup.value
    if not attr.index or lookup.sub is not None:
        return None
    prefix, field = meta.prefix, lookup.field
    sets = set_keys(meta, lookup)
    if sets is not None and op == "in":
        if not sets:
            return command("ECHO", b"", key=""), lambda reply: set()
        return command("SUNION", *sets, key=keys.eq_index_key(prefix, field, "*")), members
    if sets is not None:
        return command("SMEMBERS", sets[0]), members
    if op in ("gt", "gte", "lt", "lte", "range") and indexes.is_ordered(attr):
        low: str | None = "-inf"
        high: str | None = "+inf"
        if op in ("gt", "gte"):
            low = _score_bound(attr, value)
        elif op in ("lt", "lte"):
            high = _score_bound(attr, value)
        else:
            low, high = _score_bound(attr, value[0]), _score_bound(attr, value[1])
        if low is None or high is None:
            return None
        # Inclusive bounds: scores are doubles, so exact comparison happens in Python.
        return command("ZRANGEBYSCORE", keys.sorted_index_key(prefix, field), low, high), members
    if op == "startswith" and indexes.is_lex(attr):
        start = b"[" + value.encode("utf-8")
        return command("ZRANGEBYLEX", keys.lex_index_key(prefix, field), start, start + b"\xff"), _lex_ids
    return None


def set_keys(meta: ModelOptions, lookup: Lookup) -> list[str] | None:
    """The index sets whose union holds exactly the records matching ``lookup``, or None.

    ``exact`` and ``isnull=True`` have one set (the value's equality set, or
    the None set), ``in`` one per distinct value (none for an empty list).
    Other lookups, Pointer traversals and unindexed fields have none.
    """
    attr, op, value = lookup.attr, lookup.op, lookup.value
    if not attr.index or lookup.sub is not None:
        return None
    prefix, field = meta.prefix, lookup.field

    def eq_key(v: Any) -> str:
        return keys.null_index_key(prefix, field) if v is None else keys.eq_index_key(prefix, field, token(attr, v))

    if op == "exact":
        return [eq_key(value)]
    if op == "in":
        return list(dict.fromkeys(eq_key(v) for v in value))
    if op == "isnull" and value:
        return [keys.null_index_key(prefix, field)]
    return None


def token(attr: attributes.Attribute[Any], value: Any) -> str:
    """The equality-index token of a lookup's (cast) value."""
    return str(value) if isinstance(attr, attributes.Reference) else attr.index_token(value)


def _score_bound(attr: attributes.Attribute[Any], value: Any) -> str | None:
    if value is None:
        return None
    number = indexes.score(attr, value)
    return None if number is None else indexes.format_score(number)


def exact_index(meta: ModelOptions, lookup: Lookup) -> bool:
    """Whether an index serves ``lookup``, so a query's candidates can come from indexes
    alone (a range read may be a little wider than its matches: see EXACT_OPS)."""
    if not lookup.attr.index:
        return False
    if lookup.sub is not None:
        return exact_index(lookup.attr.to_model._meta, lookup.sub)  # type: ignore[attr-defined]
    return lookup.op in ("exact", "in", "isnull") and (lookup.op != "isnull" or lookup.value) or (
        lookup.op in ("gt", "gte", "lt", "lte", "range") and indexes.is_ordered(lookup.attr)
    ) or (lookup.op == "startswith" and indexes.is_lex(lookup.attr))


#: Scores at or past these magnitudes may stand for several distinct values (doubles hold 53 bits).
EXACT_SCORE_LIMITS: dict[type, float] = {
    attributes.Integer: float(2**53),
    attributes.DateTime: float(2**53 // 1_000_000),  # seconds with microseconds
}

#: Lookups whose index read is exactly the set of matches (ranges read a wider candidate set).
EXACT_OPS = frozenset({"exact", "in", "isnull", "startswith"})


def counted_by_index(lookup: Lookup) -> bool:
    """Whether one index set holds exactly the matches of ``lookup`` (an exact lookup on an indexed field)."""
    return lookup.attr.index and lookup.sub is None and lookup.op == "exact"
