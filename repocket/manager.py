"""``Model.objects``: the manager, the entry point of every query.

The manager hands out a new :class:`~repocket.query.QuerySet` for each call,
so chained queries never share state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import redis

    from repocket.aggregates import Aggregate
    from repocket.checks import CheckReport
    from repocket.model import ActiveRecord
    from repocket.query import QuerySet

M = TypeVar("M", bound="ActiveRecord")

__all__ = ["Manager", "ManagerDescriptor"]


class Manager(Generic[M]):
    """Queries and bulk operations on one model: ``Model.objects``."""

    def __init__(self, model: type[M], connection: redis.Redis | None = None) -> None:
        self.model = model
        self._connection = connection

    def __repr__(self) -> str:
        return f"<Manager of {self.model._meta.label}>"

    def get_queryset(self) -> QuerySet[M]:
        """A new query matching every record."""
        from repocket.query import QuerySet

        return QuerySet(self.model, connection=self._connection)

    def using(self, connection: redis.Redis | None) -> Manager[M]:
        """The same manager on another client (``None``: the global one)."""
        return Manager(self.model, connection)

    # -- queries (each returns a new lazy QuerySet or evaluates one) ----------

    def all(self) -> QuerySet[M]:
        """Every record, lazily; evaluating it gives a ResultSet."""
        return self.get_queryset()

    def filter(self, **lookups: Any) -> QuerySet[M]:
        """Records matching every lookup (``name="x"``, ``age__gte=3``, ``project__name="p"``)."""
        return self.get_queryset().filter(**lookups)

    def exclude(self, **lookups: Any) -> QuerySet[M]:
        """Records not matching all of the lookups together."""
        return self.get_queryset().exclude(**lookups)

    def order_by(self, *fields: str) -> QuerySet[M]:
        """Every record, ordered (``"-name"`` descending)."""
        return self.get_queryset().order_by(*fields)

    def get(self, *args: Any, **lookups: Any) -> M:
        """The one record with this id (``get(id=...)``) or matching these lookups.

        Raises:
            Model.DoesNotExist: nothing matched.
            Model.MultipleObjectsReturned: more than one record matched.
        """
        if not args and len(lookups) == 1:
            name, value = next(iter(lookups.items()))
            if name in (self.model._meta.pk, "pk"):
                from repocket.query import get_by_pk

                return get_by_pk(self.model, value, self._connection)
        return self.get_queryset().get(*args, **lookups)

    def count(self) -> int:
        """How many records the model has (one round trip)."""
        return self.get_queryset().count()

    def exists(self) -> bool:
        """Whether the model has any record."""
        return self.get_queryset().exists()

    def first(self) -> M | None:
        """Some record (the first by ordering, when ordered), or None."""
        return self.get_queryset().first()

    def last(self) -> M | None:
        """The last record by ordering, or None."""
        return self.get_queryset().last()

    def iterator(self, chunk_size: int = 1000) -> Iterator[M]:
        """Stream every record, ``chunk_size`` per round trip, without holding them all."""
        return self.get_queryset().iterator(chunk_size=chunk_size)

    def values(self, *fields: str) -> list[dict[str, Any]]:
        """Dicts of the given attributes (all when none given) of every record."""
        return self.get_queryset().values(*fields)

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """Tuples (or, with ``flat``, single values) of the given attributes."""
        return self.get_queryset().values_list(*fields, flat=flat)

    def none(self) -> QuerySet[M]:
        """A query matching nothing, evaluated without asking Redis."""
        return self.get_queryset().none()

    def reverse(self) -> QuerySet[M]:
        """Every record by descending primary key."""
        return self.get_queryset().reverse()

    def only(self, *fields: str) -> QuerySet[M]:
        """Every record, loading only these attributes (HMGET)."""
        return self.get_queryset().only(*fields)

    def defer(self, *fields: str) -> QuerySet[M]:
        """Every record, loading all attributes but these."""
        return self.get_queryset().defer(*fields)

    def distinct(self) -> QuerySet[M]:
        """Every record; values()/values_list() rows without repeats."""
        return self.get_queryset().distinct()

    def earliest(self, *fields: str) -> M:
        """The first record ordered by ``fields``; DoesNotExist when there is none."""
        return self.get_queryset().earliest(*fields)

    def latest(self, *fields: str) -> M:
        """The last record ordered by ``fields``; DoesNotExist when there is none."""
        return self.get_queryset().latest(*fields)

    def in_bulk(self, id_list: Iterable[Any] | None = None, *, field_name: str = "pk") -> dict[Any, M]:
        """Records keyed by primary key (or a unique attribute), read by key in one round trip."""
        return self.get_queryset().in_bulk(id_list, field_name=field_name)

    def aggregate(self, *args: Aggregate, **kwargs: Aggregate) -> dict[str, Any]:
        """Count, Sum, Avg, Min and Max over every record; see :meth:`repocket.query.QuerySet.aggregate`."""
        return self.get_queryset().aggregate(*args, **kwargs)

    def get_or_create(self, defaults: dict[str, Any] | None = None, **lookups: Any) -> tuple[M, bool]:
        """The record matching ``lookups``, or a new one; ``(record, created)``. Race-free on a unique lookup."""
        return self.get_queryset().get_or_create(defaults, **lookups)

    def update_or_create(self, defaults: dict[str, Any] | None = None, *,
                         create_defaults: dict[str, Any] | None = None,
                         **lookups: Any) -> tuple[M, bool]:
        """Update the record matching ``lookups`` with ``defaults``, or create it; ``(record, created)``."""
        return self.get_queryset().update_or_create(defaults, create_defaults=create_defaults, **lookups)

    # -- writes ------------------------------------------------------------------

    def create(self, **kwargs: Any) -> M:
        """Build a record from ``kwargs``, save it and return it."""
        return self.model.create(connection=self._connection, **kwargs)  # type: ignore[no-any-return]

    def bulk_create(self, instances: Iterable[M], batch_size: int = 500) -> list[M]:
        """Save many new records, ``batch_size`` per pipelined round trip.

        Every record is written atomically (record, strings, id set, indexes);
        a batch is one pipeline, not one transaction. Returns the instances.
        """
        from repocket.query import bulk_save

        return bulk_save(self.model, list(instances), batch_size, self._connection)

    def bulk_update(self, objs: Iterable[M], fields: Sequence[str], batch_size: int = 500) -> int:
        """Write ``fields`` of saved records, ``batch_size`` per atomic call; returns how many."""
        return self.get_queryset().bulk_update(objs, fields, batch_size=batch_size)

    def reindex(
        self,
        batch_size: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Rebuild every index of the model from the stored records, idempotently.

        Use it after adding ``index=True`` to a model that already has data.
        ``progress(done, total)`` is called after each batch. Returns the
        number of records indexed.
        """
        from repocket.checks import reindex

        return reindex(self.model, batch_size=batch_size, progress=progress, connection=self._connection)

    def check(self, repair: bool = False) -> CheckReport:
        """Compare the id set and every index with the stored records.

        Returns a report of missing and stale entries, orphan ByteStream keys and
        broken pointers; with ``repair=True`` the indexes and id set are fixed.
        """
        from repocket.checks import check

        return check(self.model, repair=repair, connection=self._connection)


class ManagerDescriptor:
    """Installs ``objects`` on every model; refuses access through an instance (as Django does)."""

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
