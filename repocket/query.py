"""Lazy queries (:class:`QuerySet`) and their evaluated form (:class:`ResultSet`).

A QuerySet is immutable: ``filter``, ``exclude``, ``order_by`` and slicing
return new ones, and nothing touches Redis until the query is evaluated
(iteration, ``len``, indexing, ``count``, ``get``, ``first``...). This module
is the API and the query's state; how a query runs is decided in
:mod:`repocket.plan.select` and sent by :mod:`repocket.io`. Each evaluating
method has an async twin with the ``a`` prefix (``count``/``acount``) that
runs the same plan, and ``async for`` works on any QuerySet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from repocket import attributes, errors
from repocket.aggregates import Aggregate
from repocket.io import clients
from repocket.manager import install_queryset_methods
from repocket.model import ActiveRecord
from repocket.plan import select, write
from repocket.plan.lookups import LOOKUPS, Lookup
from repocket.plan.select import sort_records

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

    from repocket.options import ModelOptions

M = TypeVar("M", bound=ActiveRecord)

__all__ = ["LOOKUPS", "QuerySet", "ResultSet"]


# -- ResultSet ----------------------------------------------------------------------


class ResultSet(list[M]):
    """A list of records with superpowers: ``.order_by("field")`` / ``.order_by("-field")``.

    Ordering is stable and chainable; several keys are allowed, ``None`` sorts
    first ascending (last descending). A ``ResultSet[Project]`` holds Projects.
    """

    def order_by(self, *fields: str) -> ResultSet[M]:
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
    if isinstance(attr, attributes.PointerList):
        raise errors.ValidationError(
            f"{meta.label}.{name}: a PointerList has no order to sort records by", model=meta.label,
            field=name, value=field, expected="an attribute holding one value")
    if rest:
        if not isinstance(attr, attributes.Pointer):
            raise meta.unknown_field(field.lstrip("-"))
        _check_order_field(attr.to_model._meta, rest)


class QuerySet(Generic[M]):
    """A lazy, immutable, chainable query over one model; evaluates to a :class:`ResultSet`.

    ``Project.objects.filter(...)`` is a ``QuerySet[Project]``: iterating it yields
    Projects, ``get()`` returns one, ``first()`` one or None.
    """

    def __init__(self, model: type[M], connection: redis.Redis | aioredis.Redis | None = None) -> None:
        self.model = model
        self._connection = connection
        self._filters: list[Lookup] = []
        self._excludes: list[list[Lookup]] = []
        self._order: tuple[str, ...] = ()
        self._low = 0
        self._high: int | None = None
        self._cache: ResultSet[M] | None = None
        #: ``none()``: matches nothing, and never asks Redis.
        self._empty = False
        #: ``only()``/``defer()``: the attributes to load (None: all of them).
        self._fields: frozenset[str] | None = None
        #: ``distinct()``: values()/values_list() drop repeated rows.
        self._distinct = False
        #: The one partition this query reads, when a spread model's query is scattered (see :attr:`meta`).
        self._partition: int | None = None
        #: Records already in hand, by key, that loaded Pointers resolve to without reading them
        #: (a reverse accessor's own record: ``project.builds`` point at ``project``).
        self._known: dict[str, Any] = {}
        #: ``prefetch_related()``: the reverse accessors loaded with the records.
        self._prefetch: tuple[str, ...] = ()
        #: Whether the records held came from ``prefetch_related()`` (``all()`` keeps them).
        self._prefetched = False

    @property
    def meta(self) -> ModelOptions:
        """The model's options, or those of the one partition the query is bound to (planning reads keys here)."""
        meta = self.model._meta
        return meta if self._partition is None else meta.scatter_views()[self._partition]

    def _clone(self) -> QuerySet[M]:
        clone = QuerySet(self.model, self._connection)
        clone._filters = list(self._filters)
        clone._excludes = list(self._excludes)
        clone._order = self._order
        clone._low, clone._high = self._low, self._high
        clone._empty, clone._fields, clone._distinct = self._empty, self._fields, self._distinct
        clone._partition = self._partition
        clone._known = self._known
        clone._prefetch = self._prefetch
        return clone

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
        """A copy of this query; of a reverse accessor loaded by ``prefetch_related()``, its records
        (as Django's ``.all()`` on a prefetched relation: no query)."""
        clone = self._clone()
        if self._prefetched:
            clone._remember(list(self._cache or ()))
        return clone

    def order_by(self, *fields: str) -> QuerySet[M]:
        """A new query ordered by ``fields`` (``"-field"`` descending, ``project__name`` allowed).

        Like :meth:`repocket.query.ResultSet.order_by`, ordering is stable, so a second call
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

    def prefetch_related(self, *names: str) -> QuerySet[M]:
        """Load these reverse accessors (``project.builds``) of every record with the records.

        Each costs two more round trips for the whole result (the Pointer's
        index sets, then the referring records), instead of two per record;
        the accessor then answers from memory. ``filter()`` on it queries Redis again.
        """
        clone = self._clone()
        clone._prefetch = (*self._prefetch, *names)
        return clone

    def only(self, *fields: str) -> QuerySet[M]:
        """Load only these attributes (and the primary key), with HMGET instead of HGETALL.

        Reading another attribute of a loaded record fetches the deferred ones
        then (one round trip); ``save()`` never writes attributes it did not load.
        """
        meta = self.model._meta
        clone = self._clone()
        clone._fields = frozenset(self._field_names(fields)) | {meta.pk}
        return clone

    def defer(self, *fields: str) -> QuerySet[M]:
        """Load every attribute but these; see :meth:`only`."""
        meta = self.model._meta
        names = set(self._field_names(fields))
        if meta.pk in names:
            raise errors.ValidationError(f"{meta.label}.{meta.pk}: the primary key cannot be deferred",
                                         model=meta.label, field=meta.pk, value=None)
        loaded = self._fields if self._fields is not None else frozenset(meta.fields)
        clone = self._clone()
        clone._fields = loaded - names
        return clone

    def _field_names(self, fields: Sequence[str]) -> list[str]:
        meta = self.model._meta
        names = [meta.pk if name == "pk" else name for name in fields]
        for name in names:
            if name not in meta.fields:
                raise meta.unknown_field(name)
        return names

    def using(self, connection: redis.Redis | aioredis.Redis | None) -> QuerySet[M]:
        """The same query on another client: a ``redis.Redis`` for sync calls, a
        ``redis.asyncio.Redis`` for the async ones (``None``: the global ones)."""
        clone = self._clone()
        clone._connection = connection
        return clone

    @overload
    def __getitem__(self, index: int) -> M: ...
    @overload
    def __getitem__(self, index: slice) -> QuerySet[M]: ...
    def __getitem__(self, index: int | slice) -> Any:
        """A record, or a slice: a new query (LIMIT); of a query evaluated already, a ResultSet
        (typed as a QuerySet, which iterates, indexes and counts with ``len`` alike)."""
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

    def _remember(self, records: list[M]) -> None:
        """Take ``records`` as what the query holds (its result, loaded already: ``prefetch_related()``)."""
        self._cache = ResultSet(records)
        self._prefetched = True

    def _run(self, plan: Any) -> Any:
        return clients.run(plan, self._connection)

    async def _arun(self, plan: Any) -> Any:
        return await clients.run_async(plan, self._connection)

    def _evaluate(self) -> ResultSet[M]:
        if self._cache is None:
            self._cache = ResultSet(self._run(select.materialize(self)))
        return self._cache

    async def _aevaluate(self) -> ResultSet[M]:
        if self._cache is None:
            self._cache = ResultSet(await self._arun(select.materialize(self)))
        return self._cache

    def __iter__(self) -> Iterator[M]:
        return iter(self._evaluate())

    async def __aiter__(self) -> AsyncIterator[M]:
        for record in await self._aevaluate():
            yield record

    def __len__(self) -> int:
        return len(self._evaluate())

    def __bool__(self) -> bool:
        return bool(self._evaluate())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, QuerySet)):
            return list(self._evaluate()) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- terminal methods: each a plan of repocket.plan.select, run sync or async ----------

    def count(self) -> int:
        """How many records match; one round trip when an index (or the id set) answers alone.

        An unfiltered count is the size of the id set, and a count of one exact
        lookup on an indexed attribute is the size of that index set: both trust
        the index, which every write keeps exact (``check()`` reports drift).
        Anything else loads the candidates and checks them.
        """
        return self._run(select.count(self))  # type: ignore[no-any-return]

    async def acount(self) -> int:
        """The async twin of :meth:`count`."""
        return await self._arun(select.count(self))  # type: ignore[no-any-return]

    def exists(self) -> bool:
        """Whether any record matches; stops at the first match instead of counting them all."""
        return self._run(select.exists(self))  # type: ignore[no-any-return]

    async def aexists(self) -> bool:
        """The async twin of :meth:`exists`."""
        return await self._arun(select.exists(self))  # type: ignore[no-any-return]

    def first(self) -> M | None:
        """The first matching record by this query's order (by primary key when unordered), or None."""
        return self._run(select.first(self))  # type: ignore[no-any-return]

    async def afirst(self) -> M | None:
        """The async twin of :meth:`first`."""
        return await self._arun(select.first(self))  # type: ignore[no-any-return]

    def last(self) -> M | None:
        """The last matching record by this query's order (by primary key when unordered), or None."""
        return self._run(select.last(self))  # type: ignore[no-any-return]

    async def alast(self) -> M | None:
        """The async twin of :meth:`last`."""
        return await self._arun(select.last(self))  # type: ignore[no-any-return]

    def earliest(self, *fields: str) -> M:
        """The first record ordered by ``fields``.

        Raises:
            Model.DoesNotExist: nothing matched.
        """
        return self._run(select.earliest(self, fields))  # type: ignore[no-any-return]

    async def aearliest(self, *fields: str) -> M:
        """The async twin of :meth:`earliest`."""
        return await self._arun(select.earliest(self, fields))  # type: ignore[no-any-return]

    def latest(self, *fields: str) -> M:
        """The last record ordered by ``fields`` (the first in descending order).

        Raises:
            Model.DoesNotExist: nothing matched.
        """
        return self._run(select.latest(self, fields))  # type: ignore[no-any-return]

    async def alatest(self, *fields: str) -> M:
        """The async twin of :meth:`latest`."""
        return await self._arun(select.latest(self, fields))  # type: ignore[no-any-return]

    def get(self, *args: Any, **lookups: Any) -> M:
        """The one matching record.

        ``get(pk)``, ``get(id=pk)`` and ``get(pk=pk)`` read the record directly by key.

        Raises:
            Model.DoesNotExist: nothing matched.
            Model.MultipleObjectsReturned: more than one record matched.
        """
        return self._run(select.get(self, args, lookups))  # type: ignore[no-any-return]

    async def aget(self, *args: Any, **lookups: Any) -> M:
        """The async twin of :meth:`get`."""
        return await self._arun(select.get(self, args, lookups))  # type: ignore[no-any-return]

    def get_or_create(self, defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]:
        """The record matching ``lookups``, or a new one made of them and ``defaults``.

        Returns ``(record, created)``. Race-free when a ``unique=True`` attribute
        is among the lookups: of concurrent callers, one creates the record and
        the others get it (the unique claim decides). Without one, two callers
        may both create, as in Django without a unique constraint.
        """
        return self._run(select.get_or_create(self, defaults, lookups))  # type: ignore[no-any-return]

    async def aget_or_create(self, defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]:
        """The async twin of :meth:`get_or_create`."""
        return await self._arun(select.get_or_create(self, defaults, lookups))  # type: ignore[no-any-return]

    def update_or_create(self, defaults: dict[str, Any] | None = None, *,
                         create_defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]:
        """Update the record matching ``lookups`` with ``defaults``, or create it.

        A new record is made of ``lookups`` and ``create_defaults`` (``defaults``
        when not given). Returns ``(record, created)``. Race-free on a unique
        lookup, like :meth:`get_or_create`; an update writes only what changed.
        """
        return self._run(select.update_or_create(self, defaults, create_defaults, lookups))  # type: ignore[no-any-return]

    async def aupdate_or_create(self, defaults: dict[str, Any] | None = None, *,
                                create_defaults: dict[str, Any] | None = None,
                                **lookups: Any) -> tuple[M, bool]:
        """The async twin of :meth:`update_or_create`."""
        plan = select.update_or_create(self, defaults, create_defaults, lookups)
        return await self._arun(plan)  # type: ignore[no-any-return]

    def in_bulk(self, id_list: Iterable[Any] | None = None, *, field_name: str = "pk") -> dict[Any, M]:
        """The matching records keyed by ``field_name`` (the primary key, or a unique attribute).

        With ``id_list``, only records whose key is in it; by primary key they are
        read directly, one round trip for all of them.
        """
        return self._run(select.in_bulk(self, id_list, field_name))  # type: ignore[no-any-return]

    async def ain_bulk(self, id_list: Iterable[Any] | None = None, *, field_name: str = "pk") -> dict[Any, M]:
        """The async twin of :meth:`in_bulk`."""
        return await self._arun(select.in_bulk(self, id_list, field_name))  # type: ignore[no-any-return]

    def aggregate(self, *args: Aggregate, **kwargs: Aggregate) -> dict[str, Any]:
        """Summary values over the matching records: ``aggregate(Sum("pages"), top=Max("pages"))``.

        Returns a dict keyed by the given names, or ``<field>__<function>`` for
        positional ones. Without filters, ``Count`` and ``Min``/``Max`` of an
        indexed number or datetime read the indexes in one round trip (two for a
        value the index scores inexactly); anything else loads only the fields
        involved, with HMGET, and computes in Python.
        """
        return self._run(select.aggregate(self, _named(args, kwargs)))  # type: ignore[no-any-return]

    async def aaggregate(self, *args: Aggregate, **kwargs: Aggregate) -> dict[str, Any]:
        """The async twin of :meth:`aggregate`."""
        return await self._arun(select.aggregate(self, _named(args, kwargs)))  # type: ignore[no-any-return]

    def iterator(self, chunk_size: int = 1000) -> Iterator[M]:
        """Stream matching records, fetching ``chunk_size`` per round trip.

        Without an order, or with an order an index serves, records are never
        all held in memory. An order needing Python sorting loads them all.
        """
        return clients.stream(select.iterate(self, chunk_size), self._connection)

    def aiterator(self, chunk_size: int = 1000) -> AsyncIterator[M]:
        """The async twin of :meth:`iterator`: ``async for record in qs.aiterator(500)``."""
        return clients.astream(select.iterate(self, chunk_size), self._connection)

    def values(self, *fields: str) -> list[dict[str, Any]]:
        """A dict per record of the given attributes (all when none); Pointers give the target's id.

        ``author__name`` follows one Pointer. Only the attributes named are fetched.
        """
        return self._run(select.values(self, fields))  # type: ignore[no-any-return]

    async def avalues(self, *fields: str) -> list[dict[str, Any]]:
        """The async twin of :meth:`values`."""
        return await self._arun(select.values(self, fields))  # type: ignore[no-any-return]

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """A tuple per record of the given attributes, or with ``flat=True`` (one field) the values."""
        return self._run(select.values_list(self, fields, flat))  # type: ignore[no-any-return]

    async def avalues_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """The async twin of :meth:`values_list`."""
        return await self._arun(select.values_list(self, fields, flat))  # type: ignore[no-any-return]

    def update(self, **values: Any) -> int:
        """Set attributes on every matching record and save them, 500 per script call. Returns how many."""
        return self._run(select.update(self, values))  # type: ignore[no-any-return]

    async def aupdate(self, **values: Any) -> int:
        """The async twin of :meth:`update`."""
        return await self._arun(select.update(self, values))  # type: ignore[no-any-return]

    def bulk_update(self, objs: Iterable[M], fields: Sequence[str], batch_size: int = 500) -> int:
        """Write ``fields`` of already saved records, ``batch_size`` per atomic script call.

        Only the named attributes (and their index entries) are written, as
        Django's ``bulk_update``; hooks and ``auto_now`` do not run. Every record
        must exist: a missing one raises ``DoesNotExist`` and its batch writes
        nothing. Returns how many records were written.
        """
        return self._run(write.bulk_update(self.model, list(objs), fields, batch_size))  # type: ignore[no-any-return]

    async def abulk_update(self, objs: Iterable[M], fields: Sequence[str], batch_size: int = 500) -> int:
        """The async twin of :meth:`bulk_update`."""
        return await self._arun(write.bulk_update(self.model, list(objs), fields, batch_size))  # type: ignore[no-any-return]

    def delete(self) -> int:
        """Delete every matching record (with strings and index entries), 500 per script call. Returns how many."""
        self._cache = None
        return self._run(select.delete(self))  # type: ignore[no-any-return]

    async def adelete(self) -> int:
        """The async twin of :meth:`delete`."""
        self._cache = None
        return await self._arun(select.delete(self))  # type: ignore[no-any-return]


def _named(args: Sequence[Aggregate], kwargs: dict[str, Aggregate]) -> dict[str, Aggregate]:
    named = {agg.default_alias: agg for agg in args}
    named.update(kwargs)
    return named


install_queryset_methods()
