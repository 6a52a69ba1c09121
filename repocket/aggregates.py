"""Aggregates for ``QuerySet.aggregate()``: ``Count``, ``Sum``, ``Avg``, ``Min`` and ``Max``.

Named as in Django (``from django.db.models import Sum``), for
:meth:`repocket.query.QuerySet.aggregate`::

    Book.objects.filter(author=a).aggregate(Sum("pages"), longest=Max("pages"))
    # {"pages__sum": 1234, "longest": 640}

Each aggregate checks its attribute when the query is built and computes its
value from loaded records. ``Count`` and ``Min``/``Max`` of an indexed number
or datetime can also be read from the indexes of an unfiltered query
(:meth:`Aggregate.from_index`); the query decides which way to go. As in SQL,
``None`` values are left out (and NaN, which has no order, from Min and Max);
an empty set gives ``Count`` 0 and ``None`` for the rest.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from repocket import attributes, errors, indexes

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["Aggregate", "Avg", "Count", "Max", "Min", "Sum"]

_NUMBERS = (attributes.Integer, attributes.Float, attributes.Decimal)
_ORDERED = (*_NUMBERS, attributes.DateTime, attributes.Unicode)


class Aggregate:
    """One summary value over an attribute of the matching records."""

    function: ClassVar[str] = ""
    #: The attribute types this aggregate accepts, or none for any type.
    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(self, field: str) -> None:
        if not isinstance(field, str) or not field:
            raise TypeError(f"{type(self).__name__}() takes an attribute name")
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.field!r})"

    @property
    def default_alias(self) -> str:
        """The result's key when the aggregate is passed positionally, as ``pages__sum``."""
        return f"{self.field}__{self.function.lower()}"

    def field_name(self, meta: ModelOptions) -> str:
        """The attribute's name (``pk`` means the primary key)."""
        return meta.pk if self.field == "pk" else self.field

    def check(self, meta: ModelOptions) -> None:
        """Refuse an unknown attribute, or one of a type this aggregate cannot summarise."""
        name = self.field_name(meta)
        attr = meta.fields.get(name)
        if attr is None:
            raise meta.unknown_field(name)
        if self.accepts and not isinstance(attr, self.accepts):
            kinds = ", ".join(t.__name__ for t in self.accepts)
            raise errors.ValidationError(
                f"{meta.label}.{name}: {self.function} works on {kinds} attributes, "
                f"not {type(attr).__name__}",
                model=meta.label, field=name, value=None, expected=kinds,
            )

    def empty(self) -> Any:
        """The value over no records."""
        return None

    def from_index(self, meta: ModelOptions) -> bool:
        """Whether an unfiltered query can read this from the indexes instead of the records."""
        return False

    def values(self, meta: ModelOptions, records: Sequence[Any]) -> list[Any]:
        """The attribute's non-None values over ``records``."""
        name = self.field_name(meta)
        return [value for value in (record._data[name] for record in records) if value is not None]

    def compute(self, meta: ModelOptions, records: Sequence[Any]) -> Any:
        """The value over loaded records."""
        raise NotImplementedError


class Count(Aggregate):
    """How many records hold a value (``Count("pk")``: how many records)."""

    function = "Count"

    def empty(self) -> Any:
        return 0

    def from_index(self, meta: ModelOptions) -> bool:
        name = self.field_name(meta)
        return name == meta.pk or meta.fields[name].index

    def compute(self, meta: ModelOptions, records: Sequence[Any]) -> Any:
        return len(records) if self.field_name(meta) == meta.pk else len(self.values(meta, records))


class Sum(Aggregate):
    """The sum of a number attribute."""

    function = "Sum"
    accepts = _NUMBERS

    def compute(self, meta: ModelOptions, records: Sequence[Any]) -> Any:
        values = self.values(meta, records)
        if not values:
            return None
        start: Any = decimal.Decimal(0) if isinstance(values[0], decimal.Decimal) else 0
        return sum(values, start)


class Avg(Aggregate):
    """The mean of a number attribute: a float, or a Decimal for a Decimal attribute."""

    function = "Avg"
    accepts = _NUMBERS

    def compute(self, meta: ModelOptions, records: Sequence[Any]) -> Any:
        values = self.values(meta, records)
        if not values:
            return None
        if isinstance(values[0], decimal.Decimal):
            return sum(values, decimal.Decimal(0)) / len(values)
        total = sum(values)
        try:
            return total / len(values)
        except OverflowError:  # integers past the float range
            return decimal.Decimal(total) / len(values)


class _Extreme(Aggregate):
    accepts = _ORDERED
    #: Max takes the highest, Min the lowest.
    highest: ClassVar[bool] = False

    def from_index(self, meta: ModelOptions) -> bool:
        attr = meta.fields[self.field_name(meta)]
        return attr.index and indexes.is_ordered(attr)

    def compute(self, meta: ModelOptions, records: Sequence[Any]) -> Any:
        attr = meta.fields[self.field_name(meta)]
        values = [v for v in self.values(meta, records) if v == v]  # NaN has no order
        if not values:
            return None
        pick = max if self.highest else min
        return pick(values, key=attr.comparable)


class Min(_Extreme):
    """The lowest value of a number, datetime or text attribute."""

    function = "Min"


class Max(_Extreme):
    """The highest value of a number, datetime or text attribute."""

    function = "Max"
    highest = True
