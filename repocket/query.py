"""Lazy queries (:class:`QuerySet`) and their evaluated form (:class:`ResultSet`).

A QuerySet is immutable: ``filter``, ``exclude``, ``order_by`` and slicing
return new ones, and nothing touches Redis until the query is evaluated
(iteration, ``len``, indexing, ``count``, ``get``, ``first``...). Evaluation:

1. **Candidates** come from indexes when a lookup can use one (equality sets,
   sorted sets for ranges, the lexicographic set for ``startswith``, pointer
   sets for ``project=`` and ``project__name=``), read in one pipelined round
   trip; otherwise from the model's id set (every record: O(model size)).
2. **Records** are fetched in one more round trip, Pointers one level per round trip.
3. **Every lookup is checked again in Python** on the loaded records, so an
   index only narrows the search and never changes an answer.

When the order comes from an index and every lookup used one, slicing is pushed
into Redis: only the records of the slice are fetched.
"""

from __future__ import annotations

import datetime
import decimal
import math
import operator
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from redis.exceptions import RedisError

from repocket import aggregates, attributes, errors, indexes, keys, store
from repocket.aggregates import Aggregate
from repocket.connections import configure
from repocket.model import ActiveRecord

if TYPE_CHECKING:
    import redis

    from repocket.options import ModelOptions

M = TypeVar("M", bound=ActiveRecord)

__all__ = ["LOOKUPS", "QuerySet", "ResultSet"]


# -- ResultSet ----------------------------------------------------------------------


def _sort_key(field: str) -> Callable[[Any], Any]:
    path = field.split("__")

    def key(record: Any) -> Any:
        value = record
        for part in path:
            if value is None:
                break
            value = value._data[part]
        if value is None or type(value) is attributes.BrokenReference:
            return (0, 0)
        if isinstance(value, ActiveRecord):
            return (1, str(value.pk))
        if _is_nan(value):
            return (2, 0)  # NaN has no order: after every number
        if isinstance(value, datetime.datetime) and value.utcoffset() is None:
            value = value.replace(tzinfo=datetime.timezone.utc)  # naive counts as UTC
        return (1, value)

    return key


def _is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    return False


def _arrange(ranked: list[str], nulls: set[str], universe: set[str], descending: bool) -> list[str]:
    """Candidates in order: None first (by id), index order, then unscored ones (NaN) last."""
    ranked = [pk for pk in ranked if pk in universe]
    placed = set(ranked) | nulls
    rest = sorted(pk for pk in universe if pk not in placed)
    null_ids = sorted(pk for pk in nulls if pk in universe)
    if descending:
        return rest + ranked[::-1] + null_ids
    return null_ids + ranked + rest


def sort_records(records: list[Any], fields: Sequence[str]) -> list[Any]:
    """Records sorted by ``fields`` (``-`` descending), stably; None first when ascending."""
    out = list(records)
    for field in reversed(fields):
        descending = field.startswith("-")
        name = field.lstrip("-")
        attr = out[0]._meta.fields.get(name) if out else None
        if isinstance(attr, attributes.DateTime) or name == "pk":
            out.sort(key=_sort_key(out[0]._meta.pk if name == "pk" else name), reverse=descending)
        elif attr is not None and not isinstance(attr, attributes.Pointer):
            out.sort(key=_plain_sort_key(name), reverse=descending)
        else:
            out.sort(key=_sort_key(name), reverse=descending)
    return out


def _plain_sort_key(name: str) -> Callable[[Any], Any]:
    """The sort key of one non-Pointer attribute: None first, NaN (never equal to itself) last."""

    def key(record: Any) -> Any:
        value = record._data[name]
        if value is None:
            return (0, 0)
        return (2, 0) if value != value else (1, value)

    return key


class ResultSet(list):  # type: ignore[type-arg]
    """A list of records with superpowers: ``.order_by("field")`` / ``.order_by("-field")``.

    Ordering is stable and chainable; several keys are allowed, ``None`` sorts
    first ascending (last descending).
    """

    def order_by(self, *fields: str) -> ResultSet:
        """A new ResultSet ordered by ``fields``."""
        if self:
            meta = self[0]._meta
            for field in fields:
                _check_order_field(meta, field)
        return ResultSet(sort_records(self, fields))


def _check_order_field(meta: ModelOptions, field: str) -> None:
    name, _, rest = field.lstrip("-").partition("__")
    if name == "pk" and not rest:
        return
    attr = meta.fields.get(name)
    if attr is None:
        raise meta.unknown_field(name)
    if rest:
        if not isinstance(attr, attributes.Pointer):
            raise meta.unknown_field(field.lstrip("-"))
        _check_order_field(attr.to_model._meta, rest)


# -- lookups ------------------------------------------------------------------------


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
        self.field = path[0]
        self.attr = attr
        self._pointer = isinstance(attr, attributes.Pointer)
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
        if isinstance(self.attr, attributes.Pointer):
            return _pointer_pk(self.attr, value)
        return self.attr.comparable(self.attr.cast(value))

    def value_of(self, record: Any) -> Any:
        value = record._data[self.field]
        if self._pointer and self.sub is None:
            return None if value is None else value.pk
        return self.attr.comparable(value) if self._instant else value

    def matches(self, record: Any) -> bool:
        if self.sub is not None:
            target = record._data[self.field]
            return isinstance(target, ActiveRecord) and self.sub.matches(target)
        if self.op == "exact" and not self._pointer and not self._instant:
            return bool(record._data[self.field] == self.value)  # the common case, inlined
        return LOOKUPS[self.op](self.value_of(record), self.value)


def _pointer_pk(attr: attributes.Pointer, value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    if isinstance(value, ActiveRecord):
        if not isinstance(value, attr.to_model):
            raise attr._invalid(value)
        return value._pk()
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise attr._invalid(value)


# -- planning -----------------------------------------------------------------------


class _IdSource:
    """Where a lookup's candidate ids come from, as one queued Redis command."""

    def __init__(self, key: str, queue: Callable[[Any], None], parse: Callable[[Any], set[str]]) -> None:
        self.key = key  # named in the error when the read fails
        self.queue = queue
        self.parse = parse


_CANONICAL_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _members(reply: Any) -> set[str]:
    """Ids from an index or id set reply; anything that is not a canonical UUID is no record's id."""
    return {m.decode() for m in reply if _CANONICAL_ID.fullmatch(m)}


def _lex_ids(reply: Any) -> set[str]:
    return _members(m.rsplit(b"\x00", 1)[-1] for m in reply)


def _index_source(meta: ModelOptions, lookup: Lookup, conn: redis.Redis) -> _IdSource | None:
    """The index read that gives a superset of the records matching ``lookup``, if any."""
    attr, op, value = lookup.attr, lookup.op, lookup.value
    if not attr.index:
        return None
    prefix, field = meta.prefix, lookup.field
    if lookup.sub is not None:
        target_ids = _candidate_ids(attr.to_model._meta, [lookup.sub], conn)  # type: ignore[attr-defined]
        if target_ids is None:
            return None
        eq = [keys.eq_index_key(prefix, field, pk) for pk in sorted(target_ids)]
        return _IdSource(keys.eq_index_key(prefix, field, "*"),
                         lambda pipe: pipe.sunion(eq) if eq else pipe.echo(b""),
                         lambda reply: _members(reply) if eq else set())

    def token(v: Any) -> str:
        return str(v) if isinstance(attr, attributes.Pointer) else attr.index_token(v)

    if op == "exact":
        key = keys.null_index_key(prefix, field) if value is None else keys.eq_index_key(prefix, field, token(value))
        return _IdSource(key, lambda pipe: pipe.smembers(key), _members)
    if op == "in":
        in_keys = [keys.null_index_key(prefix, field) if v is None else keys.eq_index_key(prefix, field, token(v)) for v in value]
        if not in_keys:
            return _IdSource("", lambda pipe: pipe.echo(b""), lambda reply: set())
        return _IdSource(keys.eq_index_key(prefix, field, "*"), lambda pipe: pipe.sunion(in_keys), _members)
    if op == "isnull" and value:
        key = keys.null_index_key(prefix, field)
        return _IdSource(key, lambda pipe: pipe.smembers(key), _members)
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
        sort_key = keys.sorted_index_key(prefix, field)
        # Inclusive bounds: scores are doubles, so exact comparison happens in Python.
        return _IdSource(sort_key, lambda pipe: pipe.zrangebyscore(sort_key, low, high), _members)
    if op == "startswith" and indexes.is_lex(attr):
        lex_key = keys.lex_index_key(prefix, field)
        start = b"[" + value.encode("utf-8")
        end = b"[" + value.encode("utf-8") + b"\xff"
        return _IdSource(lex_key, lambda pipe: pipe.zrangebylex(lex_key, start, end), _lex_ids)
    return None


def _score_bound(attr: attributes.Attribute[Any], value: Any) -> str | None:
    if value is None:
        return None
    number = indexes.score(attr, value)
    return None if number is None else indexes.format_score(number)


def _candidate_ids(meta: ModelOptions, lookups: Sequence[Lookup], conn: redis.Redis) -> set[str] | None:
    """Ids that may match every lookup (from indexes, in one round trip), or None: unknown."""
    sources = [s for s in (_index_source(meta, lookup, conn) for lookup in lookups) if s is not None]
    if not sources:
        return None
    pipe = conn.pipeline(transaction=False)
    for source in sources:
        source.queue(pipe)
    replies = store.execute(pipe, meta, [source.key for source in sources])
    result: set[str] | None = None
    for source, reply in zip(sources, replies):
        ids = source.parse(reply)
        result = ids if result is None else result & ids
        if not result:
            break
    return result


# -- QuerySet -----------------------------------------------------------------------


class QuerySet(Generic[M]):
    """A lazy, immutable, chainable query over one model; evaluates to a :class:`ResultSet`."""

    def __init__(self, model: type[M], connection: redis.Redis | None = None) -> None:
        self.model = model
        self._connection = connection
        self._filters: list[Lookup] = []
        self._excludes: list[list[Lookup]] = []
        self._order: tuple[str, ...] = ()
        self._low = 0
        self._high: int | None = None
        self._cache: ResultSet | None = None
        #: ``none()``: matches nothing, and never asks Redis.
        self._empty = False
        #: ``only()``/``defer()``: the attributes to load (None: all of them).
        self._fields: frozenset[str] | None = None
        #: ``distinct()``: values()/values_list() drop repeated rows.
        self._distinct = False

    def _clone(self) -> QuerySet[M]:
        clone = QuerySet(self.model, self._connection)
        clone._filters = list(self._filters)
        clone._excludes = list(self._excludes)
        clone._order = self._order
        clone._low, clone._high = self._low, self._high
        clone._empty, clone._fields, clone._distinct = self._empty, self._fields, self._distinct
        return clone

    @property
    def _conn(self) -> redis.Redis:
        return self._connection or configure.get_connection()

    def __repr__(self) -> str:
        shown = list(self[:21]) if self._cache is None else self._cache[:21]
        more = ", ...(remaining elements truncated)..." if len(shown) > 20 else ""
        return f"<QuerySet {shown[:20]!r}{more}>"

    # -- building ----------------------------------------------------------------

    def _check_unsliced(self, what: str) -> None:
        if self._low or self._high is not None:
            raise TypeError(f"cannot {what} a sliced query")

    def filter(self, **lookups: Any) -> QuerySet[M]:
        """A new query also requiring every lookup."""
        self._check_unsliced("filter")
        clone = self._clone()
        clone._filters.extend(Lookup(self.model._meta, name, value) for name, value in lookups.items())
        return clone

    def exclude(self, **lookups: Any) -> QuerySet[M]:
        """A new query leaving out records that match all of ``lookups``."""
        self._check_unsliced("exclude")
        clone = self._clone()
        clone._excludes.append([Lookup(self.model._meta, name, value) for name, value in lookups.items()])
        return clone

    def all(self) -> QuerySet[M]:
        """A copy of this query."""
        return self._clone()

    def order_by(self, *fields: str) -> QuerySet[M]:
        """A new query ordered by ``fields`` (``"-field"`` descending, ``project__name`` allowed).

        Like :meth:`ResultSet.order_by`, ordering is stable, so a second call
        sorts by its fields with ties kept in the previous order:
        ``order_by("name").order_by("city")`` orders by city, then name.
        """
        self._check_unsliced("order")
        meta = self.model._meta
        for field in fields:
            _check_order_field(meta, field)
        fields = tuple(("-" if f.startswith("-") else "") + meta.pk if f.lstrip("-") == "pk" else f
                       for f in fields)
        clone = self._clone()
        clone._order = tuple(fields) + tuple(f for f in self._order if f.lstrip("-") not in
                                             {g.lstrip("-") for g in fields})
        return clone

    def reverse(self) -> QuerySet[M]:
        """The same query in the opposite order (an unordered query: by descending pk)."""
        self._check_unsliced("reverse")
        clone = self._clone()
        order = self._order or (self.model._meta.pk,)
        clone._order = tuple(f[1:] if f.startswith("-") else "-" + f for f in order)
        return clone

    def none(self) -> QuerySet[M]:
        """A query that matches nothing, evaluated without asking Redis."""
        clone = self._clone()
        clone._empty = True
        return clone

    def distinct(self) -> QuerySet[M]:
        """A query whose :meth:`values` and :meth:`values_list` drop repeated rows.

        Records are distinct already; rows of values keep their first occurrence, in order.
        """
        clone = self._clone()
        clone._distinct = True
        return clone

    def only(self, *fields: str) -> QuerySet[M]:
        """Load only these attributes (and the primary key), with HMGET instead of HGETALL.

        Reading another attribute of a loaded record fetches the deferred ones
        then (one round trip); ``save()`` never writes attributes it did not load.
        """
        meta = self.model._meta
        clone = self._clone()
        clone._fields = frozenset(self._field_names(fields, "only")) | {meta.pk}
        return clone

    def defer(self, *fields: str) -> QuerySet[M]:
        """Load every attribute but these; see :meth:`only`."""
        meta = self.model._meta
        names = set(self._field_names(fields, "defer"))
        if meta.pk in names:
            raise errors.ValidationError(f"{meta.label}.{meta.pk}: the primary key cannot be deferred",
                                         model=meta.label, field=meta.pk, value=None)
        loaded = self._fields if self._fields is not None else frozenset(meta.fields)
        clone = self._clone()
        clone._fields = loaded - names
        return clone

    def _field_names(self, fields: Sequence[str], what: str) -> list[str]:
        meta = self.model._meta
        names = [meta.pk if name == "pk" else name for name in fields]
        for name in names:
            if name not in meta.fields:
                raise meta.unknown_field(name)
        return names

    def using(self, connection: redis.Redis | None) -> QuerySet[M]:
        """The same query on another client."""
        clone = self._clone()
        clone._connection = connection
        return clone

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            if (index.start or 0) < 0 or (index.stop is not None and index.stop < 0) or index.step not in (None, 1):
                raise ValueError("QuerySet slices take non-negative start and stop and no step")
            if self._cache is not None:
                return ResultSet(self._cache[index])
            clone = self._clone()
            start = clone._low + (index.start or 0)
            stop = None if index.stop is None else clone._low + index.stop
            if clone._high is not None:
                stop = clone._high if stop is None else min(stop, clone._high)
            clone._low, clone._high = start, stop
            return clone
        if self._cache is not None or index < 0:
            return self._evaluate()[index]  # a negative index needs the whole result
        found = self[index:index + 1]._evaluate()
        if not found:
            raise IndexError("QuerySet index out of range")
        return found[0]

    # -- evaluation --------------------------------------------------------------

    def _evaluate(self) -> ResultSet:
        if self._cache is None:
            self._cache = ResultSet(self._run())
        return self._cache

    def __iter__(self) -> Iterator[M]:
        return iter(self._evaluate())

    def __len__(self) -> int:
        return len(self._evaluate())

    def __bool__(self) -> bool:
        return bool(self._evaluate())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, QuerySet)):
            return list(self._evaluate()) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _matches(self, record: Any) -> bool:
        return all(lookup.matches(record) for lookup in self._filters) and not any(
            all(lookup.matches(record) for lookup in group) for group in self._excludes
        )

    def _candidates(self) -> tuple[list[str] | None, bool]:
        """Candidate ids (None: every record) and whether every filter used an index (and none excludes)."""
        meta = self.model._meta
        ids = _candidate_ids(meta, self._filters, self._conn)
        indexed = all(_index_source_exists(meta, lookup) for lookup in self._filters) and not self._excludes
        return (None if ids is None else list(ids)), indexed

    def _all_ids(self) -> list[str]:
        try:
            return sorted(_members(self._conn.smembers(self.model._meta.ids_key)))
        except RedisError as exc:
            raise store.wrap_redis_error(exc, self.model._meta, self.model._meta.ids_key) from exc

    def _order_attr(self) -> attributes.Attribute[Any] | None:
        """The attribute of a single-key order that an index can serve exactly, else None."""
        if len(self._order) != 1:
            return None
        attr = self.model._meta.fields.get(self._order[0].lstrip("-"))
        if attr is None or not attr.index or isinstance(attr, attributes.Decimal):
            return None  # (distinct Decimals can share a score: they are ordered in Python)
        return attr if indexes.is_ordered(attr) or indexes.is_lex(attr) else None

    def _ordered_ids(self, ids: list[str] | None, attr: attributes.Attribute[Any]) -> tuple[list[str], bool] | None:
        """Ids in this query's order, read from the order attribute's index.

        Returns ``(ids, windowed)``: when ``windowed``, the ids are exactly this
        query's slice; otherwise every candidate in order. None when the index
        cannot give the true order (scores past 2**53, Unicode values with NUL).
        """
        meta = self.model._meta
        descending = self._order[0].startswith("-")
        lex = indexes.is_lex(attr)
        index_key = (keys.lex_index_key if lex else keys.sorted_index_key)(meta.prefix, attr.name)
        null_key = keys.null_index_key(meta.prefix, attr.name)
        limit = _EXACT_SCORE_LIMITS.get(type(attr), math.inf)
        sliced = bool(self._low) or self._high is not None
        if not lex and sliced and ids is not None:
            return self._order_candidates(ids, index_key, null_key, limit, descending)
        if not lex and sliced:
            window = self._order_window(index_key, null_key, limit, descending)
            if window is not None:
                return window
        pipe = self._conn.pipeline(transaction=False)
        read_keys = [index_key, null_key]
        pipe.zrange(index_key, 0, -1, withscores=not lex)
        pipe.smembers(null_key)
        if ids is None:
            read_keys.append(meta.ids_key)
            pipe.smembers(meta.ids_key)
        replies = store.execute(pipe, meta, read_keys)
        if lex:
            if any(member.count(b"\x00") > 1 for member in replies[0]):
                return None  # a value holding NUL sorts ambiguously against the separator
            ranked = [m.rsplit(b"\x00", 1)[-1].decode("utf-8", "replace") for m in replies[0]]
        else:
            if replies[0] and max(abs(replies[0][0][1]), abs(replies[0][-1][1])) >= limit:
                return None  # scores past 2**53 (or far-future times) can tie distinct values
            ranked = [m.decode("utf-8", "replace") for m, _ in replies[0]]
        universe = set(ids) if ids is not None else _members(replies[2])
        return _arrange(ranked, _members(replies[1]), universe, descending), False

    def _order_candidates(self, ids: list[str], index_key: str, null_key: str, limit: float,
                          descending: bool) -> tuple[list[str], bool] | None:
        """A known candidate set in order, from its scores alone: O(candidates), not O(model)."""
        if not ids:
            return [], False
        pipe = self._conn.pipeline(transaction=False)
        pipe.zmscore(index_key, ids)
        pipe.smismember(null_key, ids)
        scores, is_null = store.execute(pipe, self.model._meta, [index_key, null_key])
        if any(score is not None and abs(score) >= limit for score in scores):
            return None
        ranked = [pk for _, pk in sorted((score, pk) for pk, score in zip(ids, scores) if score is not None)]
        nulls = {pk for pk, flag in zip(ids, is_null) if flag}
        return _arrange(ranked, nulls, set(ids), descending), False

    def _order_window(self, index_key: str, null_key: str, limit: float,
                      descending: bool) -> tuple[list[str], bool] | None:
        """The slice of every record in order, reading only that part of the index.

        Possible when every record is either scored or None (no NaN): then the
        order is the None ids (by id) and the sorted set, or the reverse.
        """
        meta = self.model._meta
        pipe = self._conn.pipeline(transaction=False)
        pipe.scard(meta.ids_key)
        pipe.zcard(index_key)
        pipe.smembers(null_key)
        pipe.zrange(index_key, 0, 0, withscores=True)
        pipe.zrange(index_key, -1, -1, withscores=True)
        total, scored, null_reply, lowest, highest = store.execute(
            pipe, meta, [meta.ids_key, index_key, null_key, index_key, index_key])
        nulls = sorted(_members(null_reply))
        if any(abs(score) >= limit for _, score in lowest + highest) or total != scored + len(nulls):
            return None
        high = total if self._high is None else min(self._high, total)
        if self._low >= high:
            return [], True
        # Positions of the scored part and of the None part in the whole order.
        scored_at, nulls_at = (0, scored) if descending else (len(nulls), 0)
        start, stop = max(self._low - scored_at, 0), max(min(high - scored_at, scored), 0)
        window: list[str] = []
        if start < stop:
            read = self._conn.zrevrange if descending else self._conn.zrange
            try:
                members: list[bytes] = read(index_key, start, stop - 1)  # type: ignore[assignment]
                window = [m.decode() for m in members]
            except RedisError as exc:
                raise store.wrap_redis_error(exc, meta, index_key) from exc
        null_part = nulls[max(self._low - nulls_at, 0):max(high - nulls_at, 0)]
        return (window + null_part if descending else null_part + window), True

    def _load(self, ids: Sequence[str]) -> list[Any]:
        meta = self.model._meta
        fields = self._loaded_fields()
        records = [r for r in store.load(self._conn, meta, [meta.key(pk) for pk in ids], fields=fields)
                   if r is not None]
        if fields is not None:
            for record in records:
                record._loaded_with = self._connection  # where its deferred attributes are read
        return records

    def _loaded_fields(self) -> frozenset[str] | None:
        """What to fetch of each record: ``only()``'s fields plus those the query checks or orders by."""
        if self._fields is None:
            return None
        needed = {lookup.field for lookup in self._filters}
        needed.update(lookup.field for group in self._excludes for lookup in group)
        needed.update(field.lstrip("-").split("__")[0] for field in self._order)
        return self._fields | needed

    def _pk_ordered(self, ids: list[str] | None) -> tuple[list[str], bool] | None:
        """Candidates in primary key order, when that is the query's order: ids sort as their UUIDs do."""
        pk = self.model._meta.pk
        if self._order not in ((pk,), ("-" + pk,)):
            return None
        ordered = sorted(self._all_ids() if ids is None else ids)
        return (ordered[::-1] if self._order[0].startswith("-") else ordered), False

    def _stream(self, chunk_size: int, materialize: bool = False) -> tuple[Iterator[Any], bool]:
        """Matching records, and whether they come in this query's order (from an index).

        With an indexed order, only the ids of the slice are fetched when every
        filter's index read is exact; otherwise records are fetched in chunks
        from the start until the slice is full, and checked in Python. A query
        ``materialize``-d whole, with nothing sliced, is sorted in Python:
        cheaper than reading the index.
        """
        if self._empty:
            return iter(()), True
        ids, indexed = self._candidates()
        attr = self._order_attr() if indexed else None
        unsliced = not self._low and self._high is None
        plan = self._pk_ordered(ids)
        if plan is None and attr is not None and not (materialize and unsliced):
            plan = self._ordered_ids(ids, attr)
        if plan is not None:
            ordered, windowed = plan
            if windowed:
                window, skip, limit = ordered, 0, None
            elif indexed and all(lookup.op in _EXACT_OPS for lookup in self._filters):
                window, skip, limit = ordered[self._low:self._high], 0, None
            else:
                window, skip = ordered, self._low
                limit = None if self._high is None else self._high - self._low
            return self._fetch_matching(window, chunk_size, skip, limit), True
        ids = self._all_ids() if ids is None else ids
        if self._order:  # sorted in Python afterwards: every candidate is needed
            return self._fetch_matching(ids, chunk_size, 0, None), False
        # Unordered: any order is the query's order, so a slice stops when it is full.
        limit = None if self._high is None else self._high - self._low
        return self._fetch_matching(ids, chunk_size, self._low, limit), True

    def _fetch_matching(self, ids: list[str], chunk_size: int, skip: int, limit: int | None) -> Iterator[Any]:
        """Load ``ids`` in chunks, yielding matches after ``skip`` of them, at most ``limit``.

        With a limit, the first chunk is just large enough to fill the slice if
        every record matches, and each next one twice the last (up to
        ``chunk_size``), so a slice costs few records and few round trips.
        """
        size = chunk_size if limit is None else max(1, min(chunk_size, skip + limit))
        check = self._filters or self._excludes
        start = 0
        while start < len(ids):
            chunk = ids[start:start + size]
            start += size
            size = min(size * 2, chunk_size)
            for record in self._load(chunk):
                if check and not self._matches(record):
                    continue
                if skip:
                    skip -= 1
                    continue
                if limit is not None:
                    if limit == 0:
                        return
                    limit -= 1
                yield record
            if limit == 0:
                return

    def _run(self) -> list[Any]:
        stream, in_order = self._stream(chunk_size=10**9, materialize=True)
        records = sort_records(list(stream), self._order)  # in order: also ties the scores could not
        return records if in_order else records[self._low:self._high]

    # -- terminal methods ----------------------------------------------------------

    def count(self) -> int:
        """How many records match; one round trip when an index (or the id set) answers alone.

        An unfiltered count is the size of the id set, and a count of one exact
        lookup on an indexed attribute is the size of that index set: both trust
        the index, which every write keeps exact (``check()`` reports drift).
        Anything else loads the candidates and checks them.
        """
        if self._cache is not None:
            return len(self._cache)
        if self._empty:
            return 0
        meta = self.model._meta
        if not self._excludes and self._low == 0 and self._high is None:
            key = None
            if not self._filters:
                key = meta.ids_key
            elif len(self._filters) == 1 and _exact_by_index(self._filters[0]):
                lookup = self._filters[0]
                key = (keys.null_index_key(meta.prefix, lookup.field) if lookup.value is None
                       else keys.eq_index_key(meta.prefix, lookup.field, _token(lookup)))
            if key is not None:
                try:
                    return int(self._conn.scard(key))
                except RedisError as exc:
                    raise store.wrap_redis_error(exc, meta, key) from exc
        return len(self._evaluate())

    def exists(self) -> bool:
        """Whether any record matches; stops at the first match instead of counting them all."""
        if self._cache is not None:
            return bool(self._cache)
        if self._empty:
            return False
        unsliced = self._low == 0 and self._high is None
        if unsliced and not self._excludes and (
                not self._filters or (len(self._filters) == 1 and _exact_by_index(self._filters[0]))):
            return self.count() > 0  # one SCARD
        clone = self._clone()
        clone._order = ()  # any match will do
        clone._fields = frozenset({self.model._meta.pk})
        return bool(clone[0:1]._evaluate())

    def first(self) -> M | None:
        """The first matching record by this query's order (by primary key when unordered), or None."""
        if self._cache is not None:
            return self._cache[0] if self._cache else None
        query = self if self._order else self.order_by("pk")
        found = query[0:1]._evaluate()
        return found[0] if found else None

    def last(self) -> M | None:
        """The last matching record by this query's order (by primary key when unordered), or None."""
        if self._cache is None and not self._order:
            return self.order_by("-pk").first()
        found = self._evaluate()
        return found[-1] if found else None

    def earliest(self, *fields: str) -> M:
        """The first record ordered by ``fields``.

        Raises:
            Model.DoesNotExist: nothing matched.
        """
        if not fields:
            raise TypeError("earliest() and latest() take the field names to order by")
        found = self.order_by(*fields).first()
        if found is None:
            raise self.model.DoesNotExist(f"{self.model._meta.label}: no record to order by {', '.join(fields)}")
        return found

    def latest(self, *fields: str) -> M:
        """The last record ordered by ``fields`` (the first in descending order).

        Raises:
            Model.DoesNotExist: nothing matched.
        """
        return self.earliest(*(f[1:] if f.startswith("-") else "-" + f for f in fields))

    def get(self, *args: Any, **lookups: Any) -> M:
        """The one matching record.

        ``get(pk)``, ``get(id=pk)`` and ``get(pk=pk)`` read the record directly by key.

        Raises:
            Model.DoesNotExist: nothing matched.
            Model.MultipleObjectsReturned: more than one record matched.
        """
        meta = self.model._meta
        if args:
            if len(args) > 1 or lookups:
                raise TypeError("get() takes one primary key or keyword lookups")
            lookups = {meta.pk: args[0]}
        pk_names = {meta.pk, "pk", f"{meta.pk}__exact"}
        direct = [name for name in lookups if name in pk_names]
        if (direct and len(lookups) == 1 and not self._filters and not self._excludes
                and not self._empty and self._fields is None):
            return get_by_pk(self.model, lookups[direct[0]], self._connection)
        if "pk" in lookups:
            lookups[meta.pk] = lookups.pop("pk")
        found = list(self.filter(**lookups)[:2]) if lookups else list(self[:2])
        if not found:
            raise self.model.DoesNotExist(f"{meta.label} matching {_describe(meta, lookups)} does not exist")
        if len(found) > 1:
            raise self.model.MultipleObjectsReturned(
                f"more than one {meta.label} matches {_describe(meta, lookups)}")
        return found[0]  # type: ignore[no-any-return]

    def get_or_create(self, defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]:
        """The record matching ``lookups``, or a new one made of them and ``defaults``.

        Returns ``(record, created)``. Race-free when a ``unique=True`` attribute
        is among the lookups: of concurrent callers, one creates the record and
        the others get it (the unique claim decides). Without one, two callers
        may both create, as in Django without a unique constraint.
        """
        try:
            return self.get(**lookups), False
        except self.model.DoesNotExist:
            pass
        return self._create_or_get(lookups, defaults)

    def update_or_create(self, defaults: dict[str, Any] | None = None, *,
                         create_defaults: dict[str, Any] | None = None,
                         **lookups: Any) -> tuple[M, bool]:
        """Update the record matching ``lookups`` with ``defaults``, or create it.

        A new record is made of ``lookups`` and ``create_defaults`` (``defaults``
        when not given). Returns ``(record, created)``. Race-free on a unique
        lookup, like :meth:`get_or_create`; an update writes only what changed.
        """
        try:
            record = self.get(**lookups)
        except self.model.DoesNotExist:
            record, created = self._create_or_get(
                lookups, defaults if create_defaults is None else create_defaults)
            if created:
                return record, True
        for name, value in (defaults or {}).items():
            if name not in self.model._meta.fields:
                raise self.model._meta.unknown_field(name)
            setattr(record, name, value)
        record.save(connection=self._connection)
        return record, False

    def _create_or_get(self, lookups: dict[str, Any], defaults: dict[str, Any] | None) -> tuple[M, bool]:
        meta = self.model._meta
        params = {meta.pk if name == "pk" else name.removesuffix("__exact"): value
                  for name, value in lookups.items() if "__" not in name.removesuffix("__exact")}
        params.update(defaults or {})
        try:
            return self.model.create(connection=self._connection, **params), True
        except errors.UniqueConstraintError as clash:
            error = clash
        try:
            return self.get(**lookups), False  # another caller created it first
        except self.model.DoesNotExist:
            raise error from None  # the clash was on another value

    def in_bulk(self, id_list: Iterable[Any] | None = None, *, field_name: str = "pk") -> dict[Any, M]:
        """The matching records keyed by ``field_name`` (the primary key, or a unique attribute).

        With ``id_list``, only records whose key is in it; by primary key they are
        read directly, one round trip for all of them.
        """
        meta = self.model._meta
        name = meta.pk if field_name == "pk" else field_name
        attr = meta.fields.get(name)
        if attr is None:
            raise meta.unknown_field(name)
        if name != meta.pk and not attr.unique:
            raise errors.ValidationError(
                f"{meta.label}.{name}: in_bulk() needs the primary key or a unique=True attribute",
                model=meta.label, field=name, value=None, expected="a unique attribute",
            )
        self._check_unsliced("in_bulk")
        if id_list is None:
            return {record._data[name]: record for record in self._evaluate()}
        wanted = list(id_list)
        if not wanted or self._empty:
            return {}
        if name != meta.pk:
            return {record._data[name]: record for record in self.filter(**{f"{name}__in": wanted})}
        pks = sorted({str(attr.cast(pk)) for pk in wanted})
        found = [r for r in self._load(pks) if not (self._filters or self._excludes) or self._matches(r)]
        return {record._data[name]: record for record in found}

    def aggregate(self, *args: Aggregate, **kwargs: Aggregate) -> dict[str, Any]:
        """Summary values over the matching records: ``aggregate(Sum("pages"), top=Max("pages"))``.

        Returns a dict keyed by the given names, or ``<field>__<function>`` for
        positional ones. Without filters, ``Count`` and ``Min``/``Max`` of an
        indexed number or datetime read the indexes in one round trip (two for a
        value the index scores inexactly); anything else loads only the fields
        involved, with HMGET, and computes in Python.
        """
        named = {agg.default_alias: agg for agg in args}
        named.update(kwargs)
        meta = self.model._meta
        for alias, agg in named.items():
            if not isinstance(agg, Aggregate):
                raise TypeError(f"aggregate() takes Count, Sum, Avg, Min or Max, not {agg!r} for {alias!r}")
            agg.check(meta)
        if not named:
            return {}
        if self._empty:
            return {alias: agg.empty() for alias, agg in named.items()}
        unfiltered = (not self._filters and not self._excludes and self._low == 0 and self._high is None
                      and self._cache is None)
        if unfiltered and all(agg.from_index(meta) for agg in named.values()):
            return _aggregate_from_indexes(self._conn, meta, named)
        if self._cache is not None:
            records: Sequence[Any] = self._cache
        else:
            clone = self._clone()
            if clone._low == 0 and clone._high is None:
                clone._order = ()  # the order matters only to say which records a slice holds
            records = list(clone.only(*(agg.field_name(meta) for agg in named.values())))
        return {alias: agg.compute(meta, records) for alias, agg in named.items()}

    def iterator(self, chunk_size: int = 1000) -> Iterator[M]:
        """Stream matching records, fetching ``chunk_size`` per round trip.

        Without an order, or with an order an index serves, records are never
        all held in memory. An order needing Python sorting loads them all.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if self._cache is not None:
            yield from self._cache
            return
        records, in_order = self._stream(chunk_size)
        yield from (records if in_order else self._evaluate())

    def values(self, *fields: str) -> list[dict[str, Any]]:
        """A dict per record of the given attributes (all when none); Pointers give the target's id.

        ``author__name`` follows one Pointer. Only the attributes named are fetched.
        """
        names = self._value_fields(fields)
        rows = [{name: _plain(record, name) for name in names} for record in self._value_records(fields)]
        if self._distinct:
            rows = [dict(row) for row in _unique_rows(tuple(row.items()) for row in rows)]
        return rows

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """A tuple per record of the given attributes, or with ``flat=True`` (one field) the values."""
        names = self._value_fields(fields)
        if flat and len(names) != 1:
            raise TypeError("values_list(flat=True) takes exactly one field")
        records = self._value_records(fields)
        rows: list[Any] = ([_plain(record, names[0]) for record in records] if flat
                           else [tuple(_plain(record, name) for name in names) for record in records])
        return _unique_rows(rows) if self._distinct else rows

    def _value_fields(self, fields: Sequence[str]) -> list[str]:
        meta = self.model._meta
        for name in fields:
            head, _, rest = name.partition("__")
            if head == "pk" and not rest:
                continue
            if head not in meta.fields:
                raise meta.unknown_field(head)
            if rest:
                attr = meta.fields[head]
                target = attr.to_model._meta if isinstance(attr, attributes.Pointer) else None  # type: ignore[attr-defined]
                if target is None or (rest not in target.fields and rest != "pk"):
                    raise meta.unknown_field(name, "attribute path (a Pointer's attribute: pointer__field)")
        return list(fields) or meta.field_names()

    def _value_records(self, fields: Sequence[str]) -> Sequence[Any]:
        """The records for values(): only the attributes named are fetched (whatever only() said)."""
        if self._cache is not None:
            return self._cache
        if not fields:
            clone = self._clone()
            clone._fields = None
            return clone._evaluate()
        return self.only(*{name.partition("__")[0] for name in fields})._evaluate()

    def update(self, **values: Any) -> int:
        """Set attributes on every matching record and save them, pipelined. Returns how many."""
        meta = self.model._meta
        for name in values:
            if name not in meta.fields:
                raise meta.unknown_field(name)
            if name == meta.pk:
                raise errors.ValidationError(f"{meta.label}.{name}: the primary key cannot be updated",
                                             model=meta.label, field=name, value=None)
        records = list(self._evaluate())
        for record in records:
            for name, value in values.items():
                setattr(record, name, value)
        bulk_save(self.model, records, 500, self._connection, assign_ids=False)
        return len(records)

    def bulk_update(self, objs: Iterable[M], fields: Sequence[str], batch_size: int = 500) -> int:
        """Write ``fields`` of already saved records, ``batch_size`` per atomic script call.

        Only the named attributes (and their index entries) are written, as
        Django's ``bulk_update``; hooks and ``auto_now`` do not run. Every record
        must exist: a missing one raises ``DoesNotExist`` and its batch writes
        nothing. Returns how many records were written.
        """
        return bulk_update(self.model, list(objs), fields, batch_size, self._connection)

    def delete(self) -> int:
        """Delete every matching record (with strings and index entries), pipelined. Returns how many."""
        if self._empty:
            return 0
        records = list(self._evaluate())
        if not records:
            return 0
        meta = self.model._meta
        deleted = 0
        for start in range(0, len(records), 500):
            batch = records[start:start + 500]
            counts = store.delete_records(self._conn, meta, batch)
            deleted += sum(1 for count in counts if count)
            for record in batch:
                record._stored = None
                record._stored_streams = {}
        self._cache = None
        return deleted


def _index_source_exists(meta: ModelOptions, lookup: Lookup) -> bool:
    """Whether a lookup's index read gives exactly its matches (no Python check needed to know the ids)."""
    if not lookup.attr.index:
        return False
    if lookup.sub is not None:
        return _index_source_exists(lookup.attr.to_model._meta, lookup.sub)  # type: ignore[attr-defined]
    return lookup.op in ("exact", "in", "isnull") and (lookup.op != "isnull" or lookup.value) or (
        lookup.op in ("gt", "gte", "lt", "lte", "range") and indexes.is_ordered(lookup.attr)
    ) or (lookup.op == "startswith" and indexes.is_lex(lookup.attr))


#: Scores at or past these magnitudes may stand for several distinct values (doubles hold 53 bits).
_EXACT_SCORE_LIMITS: dict[type, float] = {
    attributes.Integer: float(2**53),
    attributes.DateTime: float(2**53 // 1_000_000),  # seconds with microseconds
}

#: Lookups whose index read is exactly the set of matches (ranges read a wider candidate set).
_EXACT_OPS = frozenset({"exact", "in", "isnull", "startswith"})


def _exact_by_index(lookup: Lookup) -> bool:
    return lookup.attr.index and lookup.sub is None and lookup.op == "exact"


def _token(lookup: Lookup) -> str:
    if isinstance(lookup.attr, attributes.Pointer):
        return str(lookup.value)
    return lookup.attr.index_token(lookup.value)


def _plain(record: Any, name: str) -> Any:
    """A values() cell: the attribute, a Pointer's target id, or ``pointer__field`` of its target."""
    head, _, rest = name.partition("__")
    meta = record._meta
    if head == "pk":
        head = meta.pk
    value = record._data[head] if head in record._data else getattr(record, head)  # deferred: loads
    if rest:  # a missing or broken target has no fields: None, as an outer join gives
        return _plain(value, rest) if isinstance(value, ActiveRecord) else None
    if isinstance(meta.fields[head], attributes.Pointer):
        return None if value is None else value.pk
    return value


def _unique_rows(rows: Iterable[Any]) -> list[Any]:
    """Rows without repeats, first occurrences in order (unhashable rows compared by equality)."""
    seen: set[Any] = set()
    kept: list[Any] = []
    for row in rows:
        try:
            if row in seen:
                continue
            seen.add(row)
        except TypeError:  # a JSON value (dict, list) in the row
            if row in kept:
                continue
        kept.append(row)
    return kept


class _Masked:
    def __repr__(self) -> str:
        return "'***'"


def _describe(meta: ModelOptions, lookups: dict[str, Any]) -> str:
    """Lookups for a message, secret values masked (``{'token': '***'}``)."""
    shown: dict[str, Any] = {}
    for name, value in lookups.items():
        parts = name.split("__")
        attr = meta.fields.get(meta.pk if parts[0] == "pk" else parts[0])
        secret = attr is not None and attr.secret
        if attr is not None and isinstance(attr, attributes.Pointer) and len(parts) > 1:
            target = attr.to_model._meta.fields.get(parts[1])
            secret = secret or (target is not None and target.secret)
        shown[name] = _Masked() if secret else value
    return repr(shown)


def _aggregate_from_indexes(conn: redis.Redis, meta: ModelOptions,
                            named: dict[str, aggregates.Aggregate]) -> dict[str, Any]:
    """Count and Min/Max of a whole model from its indexes: one round trip, plus one for
    a Min/Max whose score is not exactly its value (DateTime, Decimal, integers past 2**53),
    and one more when over 16 values share the edge's score."""
    pipe = conn.pipeline(transaction=False)
    read_keys: list[str] = []
    for agg in named.values():
        name = agg.field_name(meta)
        if isinstance(agg, aggregates.Count):
            pipe.scard(meta.ids_key)
            read_keys.append(meta.ids_key)
            if name != meta.pk:
                read_keys.append(keys.null_index_key(meta.prefix, name))
                pipe.scard(read_keys[-1])
        else:
            read_keys.append(keys.sorted_index_key(meta.prefix, name))
            # The edge and its neighbours: the values sharing the edge's score, if it is not exact.
            if isinstance(agg, aggregates.Max):
                pipe.zrange(read_keys[-1], -_EDGE_READ, -1, withscores=True)
            else:
                pipe.zrange(read_keys[-1], 0, _EDGE_READ - 1, withscores=True)
    replies = iter(store.execute(pipe, meta, read_keys))
    out: dict[str, Any] = {}
    for alias, agg in named.items():
        name = agg.field_name(meta)
        attr = meta.fields[name]
        if isinstance(agg, aggregates.Count):
            total = int(next(replies))
            out[alias] = total if name == meta.pk else total - int(next(replies))
            continue
        edge = next(replies)
        if not edge:
            out[alias] = None
            continue
        if isinstance(agg, aggregates.Max):
            edge = edge[::-1]
        score = edge[0][1]
        if isinstance(attr, attributes.Float):
            out[alias] = attr.cast(score)  # the score is the value
        elif isinstance(attr, attributes.Integer) and abs(score) < 2**53:
            out[alias] = int(score)
        else:  # every value sharing the extreme score, compared exactly
            tied = [m.decode() for m, s in edge if s == score]
            if len(tied) == len(edge) == _EDGE_READ:  # the tie may go on past what was read
                sort_key = keys.sorted_index_key(meta.prefix, name)
                try:
                    tied = [m.decode() for m in conn.zrangebyscore(sort_key, score, score)]  # type: ignore[union-attr]
                except RedisError as exc:
                    raise store.wrap_redis_error(exc, meta, sort_key) from exc
            records = [r for r in store.load(conn, meta, [meta.key(pk) for pk in tied],
                                             fields=frozenset({meta.pk, name})) if r is not None]
            out[alias] = agg.compute(meta, records) if records else None
    return out


#: How many members at each end of a sorted index Min/Max reads, to see the values tied on
#: the edge's score in the same round trip.
_EDGE_READ = 16


def bulk_update(model: type[Any], objs: list[Any], fields: Sequence[str], batch_size: int,
                connection: redis.Redis | None) -> int:
    """Write ``fields`` of saved records, one atomic script call per batch; see QuerySet.bulk_update."""
    meta = model._meta
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if isinstance(fields, str) or not fields:
        raise ValueError("bulk_update() takes a list of the attribute names to write")
    names = []
    for name in fields:
        name = meta.pk if name == "pk" else name
        if name not in meta.fields:
            raise meta.unknown_field(name)
        if name == meta.pk:
            raise errors.ValidationError(f"{meta.label}.{name}: the primary key cannot be updated",
                                         model=meta.label, field=name, value=None)
        names.append(name)
    seen: set[Any] = set()
    for obj in objs:
        if type(obj) is not model:
            raise TypeError(f"bulk_update of {meta.label} got a {type(obj).__name__}")
        if obj.pk is None:
            raise ValueError(f"bulk_update(): every {meta.label} must have been saved (one has no id)")
        if obj.pk in seen:
            raise ValueError(f"{meta.label} {obj.pk} appears twice in one bulk_update()")
        seen.add(obj.pk)
        obj._validate_for_save(names)
    conn = connection or configure.get_connection()
    for start in range(0, len(objs), batch_size):
        # force: the named fields are written even where they equal what was loaded, as Django does
        store.save_instances(conn, meta, objs[start:start + batch_size], force=True, fields=names)
    return len(objs)


def get_by_pk(model: type[M], value: Any, connection: redis.Redis | None) -> M:
    """The record with primary key ``value``, read by key in one round trip."""
    meta = model._meta
    pk = meta.fields[meta.pk].cast(value)
    key = meta.key(pk)
    record = store.load(connection or configure.get_connection(), meta, [key])[0]
    if record is None:
        raise model.DoesNotExist(f"{meta.label} matching {meta.pk}={str(pk)!r} does not exist (no key {key})")
    return record  # type: ignore[return-value]


def bulk_save(
    model: type[Any],
    instances: list[Any],
    batch_size: int,
    connection: redis.Redis | None,
    assign_ids: bool = True,
) -> list[Any]:
    """Validate every instance first, then save them ``batch_size`` per pipelined round trip."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    meta = model._meta
    seen: set[Any] = set()
    seen_objects: set[int] = set()
    for instance in instances:
        if type(instance) is not model:
            raise TypeError(f"bulk_create of {meta.label} got a {type(instance).__name__}")
        if id(instance) in seen_objects:
            raise ValueError(f"the same {meta.label} instance appears twice in one bulk write")
        seen_objects.add(id(instance))
        pk = instance._data[meta.pk]
        if pk is not None:
            if pk in seen:
                raise ValueError(f"{meta.label} {pk} appears twice in one bulk write")
            seen.add(pk)
        for name in meta.auto_now:
            instance._data[name] = meta.fields[name].now()
        instance._validate_for_save()
    for instance in instances:
        if instance._data[meta.pk] is None:
            instance._data[meta.pk] = meta.fields[meta.pk].generate()
    conn = connection or configure.get_connection()
    for start in range(0, len(instances), batch_size):
        store.save_instances(conn, meta, instances[start:start + batch_size])
    return instances
