"""``Model.objects``: the manager, the entry point of every query.

The manager hands out a new :class:`~repocket.query.QuerySet` for each call,
so chained queries never share state. Its query methods, sync and async, are
made from one table (:data:`QUERYSET_METHODS`): each runs the QuerySet method
of the same name on ``get_queryset()``. The manager's own methods create
records in bulk and audit the model's indexes.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, overload

from repocket import formats
from repocket.io import clients
from repocket.plan import audit, evolve, expiry, migrate, repartition, select, write
from repocket.plan import changes as changes_plan

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

    from repocket.aggregates import Aggregate
    from repocket.changes import Change, Feed
    from repocket.checks import CheckReport
    from repocket.model import ActiveRecord
    from repocket.plan.rounds import Plan
    from repocket.query import QuerySet

M = TypeVar("M", bound="ActiveRecord")
_NOT_BY_PK: Any = object()
#: The QuerySet class, set by :func:`install_queryset_methods` (query.py imports this module).
_QUERYSET: Any = None

__all__ = ["QUERYSET_METHODS", "Manager", "ManagerDescriptor"]

#: The QuerySet methods a manager offers, each run on a new query of every record
#: (``Model.objects.filter(...)`` is ``Model.objects.get_queryset().filter(...)``).
QUERYSET_METHODS = (
    "filter", "exclude", "order_by", "reverse", "none", "only", "defer", "distinct", "prefetch_related",
    "count", "acount", "exists", "aexists", "first", "afirst", "last", "alast",
    "earliest", "aearliest", "latest", "alatest", "iterator", "aiterator",
    "values", "avalues", "values_list", "avalues_list", "in_bulk", "ain_bulk",
    "aggregate", "aaggregate", "get_or_create", "aget_or_create", "update_or_create", "aupdate_or_create",
    "bulk_update", "abulk_update",
)


class Manager(Generic[M]):
    """Queries and bulk operations on one model: ``Model.objects``."""

    def __init__(self, model: type[M], connection: redis.Redis | aioredis.Redis | None = None) -> None:
        self.model = model
        self._connection = connection

    def __repr__(self) -> str:
        return f"<Manager of {self.model._meta.label}>"

    def get_queryset(self) -> QuerySet[M]:
        """A new query matching every record."""
        return _QUERYSET(self.model, connection=self._connection)  # type: ignore[no-any-return]

    def using(self, connection: redis.Redis | aioredis.Redis | None) -> Manager[M]:
        """The same manager on another client (``None``: the global one)."""
        return Manager(self.model, connection)

    def all(self) -> QuerySet[M]:
        """Every record, lazily; evaluating it gives a ResultSet."""
        return self.get_queryset()

    if TYPE_CHECKING:  # the table's methods as type checkers see them; at run time they come from the table
        def filter(self, **lookups: Any) -> QuerySet[M]: ...
        def exclude(self, **lookups: Any) -> QuerySet[M]: ...
        def order_by(self, *fields: str) -> QuerySet[M]: ...
        def reverse(self) -> QuerySet[M]: ...
        def none(self) -> QuerySet[M]: ...
        def only(self, *fields: str) -> QuerySet[M]: ...
        def defer(self, *fields: str) -> QuerySet[M]: ...
        def distinct(self) -> QuerySet[M]: ...
        def count(self) -> int: ...
        async def acount(self) -> int: ...
        def exists(self) -> bool: ...
        async def aexists(self) -> bool: ...
        def first(self) -> M | None: ...
        async def afirst(self) -> M | None: ...
        def last(self) -> M | None: ...
        async def alast(self) -> M | None: ...
        def earliest(self, *fields: str) -> M: ...
        async def aearliest(self, *fields: str) -> M: ...
        def latest(self, *fields: str) -> M: ...
        async def alatest(self, *fields: str) -> M: ...
        def iterator(self, chunk_size: int = 1000) -> Iterator[M]: ...
        def aiterator(self, chunk_size: int = 1000) -> AsyncIterator[M]: ...
        def values(self, *fields: str) -> list[dict[str, Any]]: ...
        async def avalues(self, *fields: str) -> list[dict[str, Any]]: ...
        def values_list(self, *fields: str, flat: bool = False) -> list[Any]: ...
        async def avalues_list(self, *fields: str, flat: bool = False) -> list[Any]: ...
        def in_bulk(self, id_list: Iterable[Any] | None = None, *, field_name: str = "pk") -> dict[Any, M]: ...
        async def ain_bulk(self, id_list: Iterable[Any] | None = None, *,
                           field_name: str = "pk") -> dict[Any, M]: ...
        def aggregate(self, *args: Aggregate, **kwargs: Aggregate) -> dict[str, Any]: ...
        async def aaggregate(self, *args: Aggregate, **kwargs: Aggregate) -> dict[str, Any]: ...
        def get_or_create(self, defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]: ...
        async def aget_or_create(self, defaults: dict[str, Any] | None = None,
                                 **lookups: Any) -> tuple[M, bool]: ...
        def update_or_create(self, defaults: dict[str, Any] | None = None, *,
                             create_defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]: ...
        async def aupdate_or_create(self, defaults: dict[str, Any] | None = None, *,
                                    create_defaults: dict[str, Any] | None = None,
                                    **lookups: Any) -> tuple[M, bool]: ...
        def bulk_update(self, objs: Iterable[M], fields: Sequence[str], batch_size: int = 500) -> int: ...
        async def abulk_update(self, objs: Iterable[M], fields: Sequence[str], batch_size: int = 500) -> int: ...

    def get(self, *args: Any, **lookups: Any) -> M:
        """The one record with this id (``get(id=...)``) or matching these lookups.

        By primary key it is read directly, without building a query: the
        commonest call, kept short.

        Raises:
            Model.DoesNotExist: nothing matched.
            Model.MultipleObjectsReturned: more than one record matched.
        """
        by_pk = self._by_pk(args, lookups)
        if by_pk is not _NOT_BY_PK:
            return clients.run(select.get_by_pk(self.model, by_pk), self._connection)  # type: ignore[no-any-return]
        return self.get_queryset().get(*args, **lookups)

    async def aget(self, *args: Any, **lookups: Any) -> M:
        """The async twin of :meth:`get`."""
        by_pk = self._by_pk(args, lookups)
        if by_pk is not _NOT_BY_PK:
            return await clients.run_async(select.get_by_pk(self.model, by_pk), self._connection)  # type: ignore[no-any-return]
        return await self.get_queryset().aget(*args, **lookups)

    def _by_pk(self, args: tuple[Any, ...], lookups: dict[str, Any]) -> Any:
        """The primary key when the call is ``get(pk)``, ``get(id=...)`` or ``get(pk=...)``."""
        if len(args) == 1 and not lookups:
            return args[0]
        if not args and len(lookups) == 1:
            name, value = next(iter(lookups.items()))
            if name in ("pk", self.model._meta.pk):
                return value
        return _NOT_BY_PK

    # -- writes and audits -------------------------------------------------------

    def create(self, **kwargs: Any) -> M:
        """Build a record from ``kwargs``, save it and return it."""
        return clients.run(self.model(**kwargs)._create_plan(), self._connection)  # type: ignore[no-any-return]

    async def acreate(self, **kwargs: Any) -> M:
        """The async twin of :meth:`create`."""
        return await clients.run_async(self.model(**kwargs)._create_plan(), self._connection)  # type: ignore[no-any-return]

    def bulk_create(self, instances: Iterable[M], batch_size: int = 500) -> list[M]:
        """Save many new records, ``batch_size`` per atomic script call.

        Every instance is validated before anything is written; each batch is
        all or nothing. Returns the instances.
        """
        plan = write.bulk_save(self.model, list(instances), batch_size)
        return clients.run(plan, self._connection)

    async def abulk_create(self, instances: Iterable[M], batch_size: int = 500) -> list[M]:
        """The async twin of :meth:`bulk_create`."""
        plan = write.bulk_save(self.model, list(instances), batch_size)
        return await clients.run_async(plan, self._connection)

    def reindex(self, batch_size: int = 500, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild every index of the model from the stored records, idempotently.

        Use it after adding ``index=True`` to a model that already has data.
        ``progress(done, total)`` is called after each batch. Returns the
        number of records indexed.
        """
        return clients.run(audit.reindex(self.model, batch_size, progress), self._connection)

    async def areindex(self, batch_size: int = 500, progress: Callable[[int, int], None] | None = None) -> int:
        """The async twin of :meth:`reindex`."""
        return await clients.run_async(audit.reindex(self.model, batch_size, progress), self._connection)

    def migrate_format(self, to: str | None = None, batch_size: int = 500,
                       progress: Callable[[int, int], None] | None = None) -> int:
        """Rewrite every stored record in the storage format ``to`` (default: the model's ``Meta.format``).

        Values and indexes do not change. Resumable and idempotent (see
        docs/storage.rst); ``progress(done, total)`` is called after each
        batch. Returns the number of records rewritten.
        """
        return clients.run(self._migrate_plan(to, batch_size, progress), self._connection)

    async def amigrate_format(self, to: str | None = None, batch_size: int = 500,
                              progress: Callable[[int, int], None] | None = None) -> int:
        """The async twin of :meth:`migrate_format`."""
        return await clients.run_async(self._migrate_plan(to, batch_size, progress), self._connection)

    def _migrate_plan(self, to: str | None, batch_size: int, progress: Callable[[int, int], None] | None) -> Plan[int]:
        meta = self.model._meta
        target = meta.format if to is None else formats.format_named(to, meta.label)
        return migrate.migrate_format(meta, target, batch_size, progress)

    def migrate(self, rename: Mapping[str, str] | None = None, drop: Iterable[str] = (),
                retype: Iterable[str] | Mapping[str, str | None] = (), dry_run: bool = False,
                batch_size: int = 500, progress: Callable[[int, int], None] | None = None) -> evolve.EvolveReport:
        """Evolve the stored records after the model's declaration changed (docs/evolution.rst).

        ``rename`` maps stored names that no attribute declares any more to the
        attributes holding their values now; ``drop`` deletes stored names that
        no attribute declares; ``retype`` converts the named attributes' stored
        values from the type they were stored with (a mapping names that type,
        which the plain format needs). One atomic write per batch of
        ``batch_size`` records, index entries included; resumable and
        idempotent. With ``dry_run`` nothing is written. ``progress(done,
        total)`` is called after each batch. Returns the report.
        """
        return clients.run(self._evolve_plan(rename, drop, retype, dry_run, batch_size, progress), self._connection)

    async def amigrate(self, rename: Mapping[str, str] | None = None, drop: Iterable[str] = (),
                       retype: Iterable[str] | Mapping[str, str | None] = (), dry_run: bool = False,
                       batch_size: int = 500,
                       progress: Callable[[int, int], None] | None = None) -> evolve.EvolveReport:
        """The async twin of :meth:`migrate`."""
        return await clients.run_async(self._evolve_plan(rename, drop, retype, dry_run, batch_size, progress),
                                       self._connection)

    def _evolve_plan(self, rename: Mapping[str, str] | None, drop: Iterable[str],
                     retype: Iterable[str] | Mapping[str, str | None], dry_run: bool, batch_size: int,
                     progress: Callable[[int, int], None] | None) -> Plan[evolve.EvolveReport]:
        meta = self.model._meta
        return evolve.migrate(meta, evolve.changes(meta, rename, drop, retype), batch_size, dry_run, progress)

    def repartition(self, from_partitions: int | str | None = None, batch_size: int = 500,
                    progress: Callable[[int, int], None] | None = None) -> int:
        """Move the records written in another layout into the model's current partitions.

        ``from_partitions`` names where they are: ``"standalone"`` for the
        standalone layout (the keys of one server, SPEC §2), or the partition
        count they were written with; None (the default) takes the model's
        ``Meta.moving_from``, else the standalone layout. Resumable and
        idempotent, ``batch_size`` records per round (docs/scaling.rst);
        ``progress(done, total)`` after each batch. Returns the number of
        records moved. While it runs, a model declaring ``Meta.moving_from``
        reads both layouts, so its queries stay exact (docs/scaling.rst).
        """
        return clients.run(repartition.repartition(self.model._meta, from_partitions, batch_size, progress),
                           self._connection)

    async def arepartition(self, from_partitions: int | str | None = None, batch_size: int = 500,
                           progress: Callable[[int, int], None] | None = None) -> int:
        """The async twin of :meth:`repartition`."""
        return await clients.run_async(repartition.repartition(self.model._meta, from_partitions, batch_size, progress),
                                       self._connection)

    def changes(self, since: Any = None, limit: int | None = None) -> list[Change]:
        """The model's changes after ``since`` (a stream id, exclusive; None: from the oldest kept), oldest first.

        ``Meta.changes`` must be declared. On a model spread over partitions
        every partition is read in one round trip and the changes are merged
        by time; pass ``since`` as one id per partition
        (``repocket.changes.position(changes)``) to read on exactly.

        Raises:
            repocket.errors.ChangesTrimmedError: the trimming removed changes after ``since``.
        """
        return clients.run(changes_plan.read(self.model._meta, since, limit), self._connection)

    async def achanges(self, since: Any = None, limit: int | None = None) -> list[Change]:
        """The async twin of :meth:`changes`."""
        return await clients.run_async(changes_plan.read(self.model._meta, since, limit), self._connection)

    def follow(self, group: str, consumer: str, *, claim_after: float = 60.0, block: float = 5.0,
               count: int = 100, start: str = "0") -> Feed:
        """A consumer ``consumer`` of the consumer group ``group`` of the model's changes, made on first
        read (from ``start``: "0" every change kept, "$" only new ones): see :class:`repocket.changes.Feed`."""
        from repocket.changes import Feed

        changes_plan._changing(self.model._meta)
        return Feed(self.model, group, consumer, claim_after=claim_after, block=block, count=count, start=start,
                    connection=self._connection)

    def as_of(self, pk: Any, revision: int) -> M:
        """The version ``revision`` of the record ``pk`` (``Meta.history``), read-only.

        Raises:
            Model.DoesNotExist: the history kept holds no such version.
        """
        return clients.run(changes_plan.as_of(self.model._meta, str(pk), revision), self._connection)  # type: ignore[return-value]

    async def aas_of(self, pk: Any, revision: int) -> M:
        """The async twin of :meth:`as_of`."""
        version = await clients.run_async(changes_plan.as_of(self.model._meta, str(pk), revision), self._connection)
        return version  # type: ignore[return-value]

    def purge_expired(self, limit: int = expiry.PURGE_BATCH) -> int:
        """Delete up to ``limit`` records per partition that are past their deadline (``Meta.ttl``).

        They are gone for every read already; this frees their memory and index
        entries now, in one write call per partition. Writes purge the records
        they meet, and ``check(repair=True)`` purges them all; call this from a
        periodic job to keep memory down. Returns how many were purged.
        """
        return clients.run(expiry.sweep(self.model._meta, limit), self._connection)

    async def apurge_expired(self, limit: int = expiry.PURGE_BATCH) -> int:
        """The async twin of :meth:`purge_expired`."""
        return await clients.run_async(expiry.sweep(self.model._meta, limit), self._connection)

    def check(self, repair: bool = False) -> CheckReport:
        """Compare the id set and every index with the stored records.

        Returns a report of missing and stale entries, orphan ByteStream keys and
        broken pointers; with ``repair=True`` the indexes and id set are fixed.
        """
        return clients.run(audit.check(self.model, repair), self._connection)

    async def acheck(self, repair: bool = False) -> CheckReport:
        """The async twin of :meth:`check`."""
        return await clients.run_async(audit.check(self.model, repair), self._connection)


def _proxy(name: str) -> Callable[..., Any]:
    """The manager method ``name``: the QuerySet method of that name, on every record."""
    from repocket.query import QuerySet

    method = getattr(QuerySet, name)

    @functools.wraps(method)
    def proxy(self: Manager[Any], *args: Any, **kwargs: Any) -> Any:
        return getattr(self.get_queryset(), name)(*args, **kwargs)

    proxy.__qualname__ = f"Manager.{name}"
    return proxy


def install_queryset_methods() -> None:
    """Give :class:`Manager` the methods of :data:`QUERYSET_METHODS` (once QuerySet exists)."""
    global _QUERYSET
    from repocket.query import QuerySet

    _QUERYSET = QuerySet
    for name in QUERYSET_METHODS:
        setattr(Manager, name, _proxy(name))


class ManagerDescriptor:
    """Installs ``objects`` on every model; refuses access through an instance (as Django does).

    Typed per model: ``Project.objects`` is a ``Manager[Project]``.
    """

    @overload
    def __get__(self, instance: None, owner: type[M]) -> Manager[M]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any]) -> NoReturn: ...
    def __get__(self, instance: Any, owner: type[Any]) -> Manager[Any]:
        if instance is not None:
            raise AttributeError(
                f"Manager isn't accessible via {owner.__name__} instances; use {owner.__name__}.objects"
            )
        manager = owner.__dict__.get("_manager")
        if manager is None:
            if not hasattr(owner, "_meta"):
                raise AttributeError("ActiveRecord itself has no manager; use it through a model")
            manager = Manager(owner)
            owner._manager = manager  # one per model class, never inherited
        return manager  # type: ignore[no-any-return]
