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

import decimal
import math
import operator
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from redis.exceptions import RedisError

from repocket import attributes, errors, indexes, keys, store
from repocket.connections import configure
from repocket.model import ActiveRecord

if TYPE_CHECKING:
    import redis

    from repocket.model import ModelOptions

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
        if value is None:
            return (0, 0)
        if isinstance(value, ActiveRecord):
            return (1, str(value.pk))
        if _is_nan(value):
            return (2, 0)  # NaN has no order: after every number
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
        if attr is not None and not isinstance(attr, attributes.Pointer):
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
    "contains": lambda value, wanted: value is not None and _contains(value, wanted),
    "icontains": lambda value, wanted: isinstance(value, str) and wanted.casefold() in value.casefold(),
}


class Lookup:
    """One condition: ``field[__subfield]__op = value``, its value already cast."""

    def __init__(self, meta: ModelOptions, expression: str, value: Any) -> None:
        parts = expression.split("__")
        op = parts[-1] if len(parts) > 1 and parts[-1] in LOOKUPS else "exact"
        path = parts[:-1] if op != "exact" or parts[-1] == "exact" else parts
        if len(path) > 2 or not path:
            raise meta.unknown_field(expression, "lookup")
        if path[0] == "pk":
            path[0] = meta.pk
        attr = meta.fields.get(path[0])
        if attr is None:
            raise meta.unknown_field(path[0])
        self.field = path[0]
        self.attr = attr
        self._pointer = isinstance(attr, attributes.Pointer)
        self.sub: Lookup | None = None
        self.op = op
        self.value: Any
        if len(path) == 2:
            if not isinstance(attr, attributes.Pointer):
                raise errors.UnknownFieldError(
                    f"{meta.label}.{path[0]} is not a Pointer; {expression!r} cannot follow it",
                    model=meta.label, field=expression, valid=meta.field_names(),
                )
            target = attr.to_model._meta
            self.sub = Lookup(target, "__".join(path[1:] + [op]), value)
            self.value = self.sub.value
            return
        self.value = self._cast(meta, value)

    def _cast(self, meta: ModelOptions, value: Any) -> Any:
        attr, op = self.attr, self.op
        if op == "isnull":
            return bool(value)
        if op == "in":
            return [self._cast_one(v) for v in value]
        if op == "range":
            low, high = value
            return (self._cast_one(low), self._cast_one(high))
        if op in ("contains", "icontains") and isinstance(attr, attributes.JSON):
            return value
        if op in ("icontains", "istartswith", "iexact") and not isinstance(attr, attributes.Unicode):
            raise errors.ValidationError(
                f"{meta.label}.{self.field}: the {op} lookup works on Unicode attributes only",
                model=meta.label, field=self.field, value=value, expected="a Unicode attribute",
            )
        return self._cast_one(value)

    def _cast_one(self, value: Any) -> Any:
        if isinstance(self.attr, attributes.Pointer):
            return _pointer_pk(self.attr, value)
        return self.attr.cast(value)

    def value_of(self, record: Any) -> Any:
        value = record._data[self.field]
        if isinstance(self.attr, attributes.Pointer) and self.sub is None:
            return None if value is None else value.pk
        return value

    def matches(self, record: Any) -> bool:
        if self.sub is not None:
            target = record._data[self.field]
            return target is not None and self.sub.matches(target)
        if self.op == "exact" and not self._pointer:
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

    def _clone(self) -> QuerySet[M]:
        clone = QuerySet(self.model, self._connection)
        clone._filters = list(self._filters)
        clone._excludes = list(self._excludes)
        clone._order = self._order
        clone._low, clone._high = self._low, self._high
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
        for field in fields:
            _check_order_field(self.model._meta, field)
        clone = self._clone()
        clone._order = tuple(fields) + tuple(f for f in self._order if f.lstrip("-") not in
                                             {g.lstrip("-") for g in fields})
        return clone

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
        records = store.load(self._conn, meta, [meta.key(pk) for pk in ids])
        return [r for r in records if r is not None]

    def _stream(self, chunk_size: int, materialize: bool = False) -> tuple[Iterator[Any], bool]:
        """Matching records, and whether they come in this query's order (from an index).

        With an indexed order, only the ids of the slice are fetched when every
        filter's index read is exact; otherwise records are fetched in chunks
        from the start until the slice is full, and checked in Python. A query
        ``materialize``-d whole, with nothing sliced, is sorted in Python:
        cheaper than reading the index.
        """
        ids, indexed = self._candidates()
        attr = self._order_attr() if indexed else None
        unsliced = not self._low and self._high is None
        plan = None if attr is None or (materialize and unsliced) else self._ordered_ids(ids, attr)
        if plan is not None:
            ordered, windowed = plan
            if windowed:
                window, skip, limit = ordered, 0, None
            elif all(lookup.op in _EXACT_OPS for lookup in self._filters):
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
        """How many records match; one round trip when an index (or the id set) answers alone."""
        if self._cache is not None:
            return len(self._cache)
        meta = self.model._meta
        if not self._excludes and self._low == 0 and self._high is None:
            try:
                if not self._filters:
                    return int(self._conn.scard(meta.ids_key))
                if len(self._filters) == 1 and _exact_by_index(self._filters[0]):
                    lookup = self._filters[0]
                    key = (keys.null_index_key(meta.prefix, lookup.field) if lookup.value is None
                           else keys.eq_index_key(meta.prefix, lookup.field, _token(lookup)))
                    return int(self._conn.scard(key))
            except RedisError as exc:
                raise store.wrap_redis_error(exc, meta, None) from exc
        return len(self._evaluate())

    def exists(self) -> bool:
        """Whether any record matches."""
        return self.count() > 0 if self._cache is None else bool(self._cache)

    def first(self) -> M | None:
        """The first matching record (by this query's order), or None."""
        found = self._evaluate() if self._cache is not None else self[0:1]._evaluate()
        return found[0] if found else None

    def last(self) -> M | None:
        """The last matching record (by this query's order), or None."""
        found = self._evaluate()
        return found[-1] if found else None

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
        if direct and len(lookups) == 1 and not self._filters and not self._excludes:
            return get_by_pk(self.model, lookups[direct[0]], self._connection)
        if "pk" in lookups:
            lookups[meta.pk] = lookups.pop("pk")
        found = list(self.filter(**lookups)[:2]) if lookups else list(self[:2])
        if not found:
            raise self.model.DoesNotExist(f"{meta.label} matching {lookups!r} does not exist")
        if len(found) > 1:
            raise self.model.MultipleObjectsReturned(f"more than one {meta.label} matches {lookups!r}")
        return found[0]  # type: ignore[no-any-return]

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
        """A dict per record of the given attributes (all when none); Pointers give the target's id."""
        names = self._value_fields(fields)
        return [{name: _plain(record, name) for name in names} for record in self._evaluate()]

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """A tuple per record of the given attributes, or with ``flat=True`` (one field) the values."""
        names = self._value_fields(fields)
        if flat:
            if len(names) != 1:
                raise TypeError("values_list(flat=True) takes exactly one field")
            return [_plain(record, names[0]) for record in self._evaluate()]
        return [tuple(_plain(record, name) for name in names) for record in self._evaluate()]

    def _value_fields(self, fields: Sequence[str]) -> list[str]:
        meta = self.model._meta
        for name in fields:
            if name not in meta.fields:
                raise meta.unknown_field(name)
        return list(fields) or meta.field_names()

    def update(self, **values: Any) -> int:
        """Set attributes on every matching record and save them, pipelined. Returns how many."""
        meta = self.model._meta
        for name in values:
            if name not in meta.fields:
                raise meta.unknown_field(name)
            if name == meta.pk:
                raise errors.ValidationError(f"{meta.label}.{name}: the primary key cannot be updated",
                                             model=meta.label, field=name, value=values[name])
        records = list(self._evaluate())
        for record in records:
            for name, value in values.items():
                setattr(record, name, value)
        bulk_save(self.model, records, 500, self._connection, assign_ids=False)
        return len(records)

    def delete(self) -> int:
        """Delete every matching record (with strings and index entries), pipelined. Returns how many."""
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
    value = record._data[name]
    if isinstance(record._meta.fields[name], attributes.Pointer):
        return None if value is None else value.pk
    return value


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
    for instance in instances:
        if type(instance) is not model:
            raise TypeError(f"bulk_create of {meta.label} got a {type(instance).__name__}")
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
