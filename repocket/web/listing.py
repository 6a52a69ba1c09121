"""The list route's query string: lookups, the order, and cursor (keyset) pagination.

Lookups are repocket's own: each ``field__lookup=value`` parameter becomes a
:class:`~repocket.plan.lookups.Lookup`, which names an unknown field or lookup
and casts the value exactly as ``filter()`` does. Only the text of the query
string is shaped here: ``in`` takes repeated parameters or a comma list,
``range`` two comma-separated bounds, ``isnull`` ``true`` or ``false``.

Pages are keyset pages: the order is one attribute plus the primary key as
tie-breaker, and the cursor holds the last record's ``(value, id)``. The next
page is the records strictly after that position, read by lookups
(``value == v and id > last``, then ``value > v``), never by an offset, so
records added or deleted elsewhere in the order do not shift a page.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Iterable
from typing import Any

from repocket import attributes, errors
from repocket.model import ActiveRecord
from repocket.plan.lookups import LOOKUPS, Lookup
from repocket.query import QuerySet

__all__ = ["Page", "cursor_order", "fetch_page", "order_field", "parse_filters", "read_cursor", "write_cursor"]

#: Query parameters the list route keeps for itself (every other one is a lookup).
RESERVED = frozenset({"limit", "cursor", "order"})

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def _invalid(model: type[ActiveRecord], field: str, message: str, expected: str) -> errors.ValidationError:
    label = model._meta.label
    return errors.ValidationError(f"{label}: {message}", model=label, field=field, value=None, expected=expected)


def _query_value(model: type[ActiveRecord], name: str, given: list[str]) -> Any:
    """The value of the lookup ``name`` from its query-string texts (cast later, by the Lookup)."""
    op = name.rsplit("__", 1)[-1] if "__" in name else "exact"
    op = op if op in LOOKUPS else "exact"
    if op == "in":
        return [part for text in given for part in (text.split(",") if len(given) == 1 else [text])]
    if len(given) > 1:
        raise _invalid(model, name, f"the query parameter {name!r} is given {len(given)} times",
                       "one value (or the in lookup)")
    text = given[0]
    if op == "range":
        bounds = text.split(",")
        if len(bounds) != 2:
            raise _invalid(model, name, f"{name} takes two comma-separated bounds, low,high",
                           "low,high")
        return tuple(bounds)
    if op == "isnull":
        if text.lower() not in _TRUE | _FALSE:
            raise _invalid(model, name, f"{name} takes true or false", "true or false")
        return text.lower() in _TRUE
    return text


def _refuse_secret(model: type[ActiveRecord], lookup: Lookup, name: str) -> None:
    while lookup is not None:
        if lookup.attr.secret:
            raise _invalid(model, name, f"{name}: secret attributes cannot be filtered on",
                           "a lookup on an attribute that is not secret=True")
        lookup = lookup.sub  # type: ignore[assignment]


def parse_filters(model: type[ActiveRecord], params: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The ``filter()`` keyword arguments of a query string (its reserved parameters left out).

    Raises:
        repocket.errors.UnknownFieldError: a parameter names no attribute or no lookup.
        repocket.errors.ValidationError: a value cannot be cast, or names a secret attribute.
    """
    grouped: dict[str, list[str]] = {}
    for name, text in params:
        if name not in RESERVED:
            grouped.setdefault(name, []).append(text)
    lookups: dict[str, Any] = {}
    for name, given in grouped.items():
        value = _query_value(model, name, given)
        _refuse_secret(model, Lookup(model._meta, name, value), name)  # (checks and casts as filter() will)
        lookups[name] = value
    return lookups


def order_field(model: type[ActiveRecord], order: str | None) -> tuple[str, bool]:
    """``(attribute name, descending)`` of ``?order=``: the primary key by default.

    Raises:
        repocket.errors.UnknownFieldError: no such attribute.
        repocket.errors.ValidationError: an attribute a cursor cannot page by (see docs/web.rst).
    """
    meta = model._meta
    text = (order or meta.pk).strip()
    descending = text.startswith("-")
    name = text.lstrip("-")
    name = meta.pk if name == "pk" else name
    attr = meta.fields.get(name)
    if attr is None:
        raise meta.unknown_field(name)
    if name != meta.pk and (attr.secret or attr.null or isinstance(
            attr, (attributes.Reference, attributes.JSON, attributes.Bytes))):
        raise _invalid(model, "order", f"cannot page by {name}: the order must be the primary key or an "
                       "attribute that is not null=True, secret, a Pointer, a PointerList, JSON or Bytes",
                       "an orderable, non-null attribute")
    return name, descending


def write_cursor(order: str, value: Any, pk: Any) -> str:
    """An opaque cursor for the position ``(value, pk)`` in ``order``."""
    raw = json.dumps({"o": order, "v": value, "id": str(pk)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(model: type[ActiveRecord], cursor: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(decoded, dict) or set(decoded) != {"o", "v", "id"} or not isinstance(decoded["o"], str):
            raise ValueError("not a cursor")
    except (ValueError, binascii.Error, UnicodeError):
        raise _invalid(model, "cursor", "the cursor is not one this route returned", "a cursor from next") from None
    return decoded


def cursor_order(model: type[ActiveRecord], cursor: str) -> str:
    """The order a cursor was made for (so ``?cursor=`` alone continues the same listing)."""
    order: str = _decode(model, cursor)["o"]
    return order


def read_cursor(model: type[ActiveRecord], cursor: str, order: str) -> tuple[Any, str]:
    """The ``(value, id)`` a cursor holds.

    Raises:
        repocket.errors.ValidationError: the cursor is not one the list route gave, or for another order.
    """
    decoded = _decode(model, cursor)
    if decoded["o"] != order:
        raise _invalid(model, "cursor", f"the cursor pages by {decoded['o']!r}, not by {order!r}",
                       "the order the cursor was made for")
    return decoded["v"], str(decoded["id"])


def _cursor_value(value: Any) -> Any:
    """An order attribute's value as JSON that its lookups cast back (ISO text for a DateTime)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    return value.isoformat() if isinstance(value, datetime.datetime) else str(value)  # UUID, Decimal


async def _records(query: QuerySet[Any], count: int) -> list[Any]:
    return [record async for record in query[:count]]


class Page:
    """One page: its records and the cursor of the next one (None: this is the last)."""

    def __init__(self, records: list[Any], next_cursor: str | None) -> None:
        self.records, self.next = records, next_cursor


async def fetch_page(query: QuerySet[Any], order: str, limit: int, cursor: str | None) -> Page:
    """The ``limit`` records after ``cursor`` in ``order`` (``[-]field``, ties by primary key).

    At most three queries: the ties of the cursor's value after its id, the
    records past that value, and, when the page ends inside a run of equal
    values, that run by id (so a run cut by the page end continues exactly).
    """
    model = query.model
    meta = model._meta
    field, descending = order_field(model, order)
    sign, after = ("-", "lt") if descending else ("", "gt")
    pk = meta.pk
    want = limit + 1  # one more than the page: whether there is a next one
    if field == pk:
        rest = query
        if cursor is not None:
            rest = query.filter(**{f"{pk}__{after}": read_cursor(model, cursor, order)[1]})
        found = await _records(rest.order_by(sign + pk), want)
    else:
        found = []
        rest = query
        if cursor is not None:
            value, last = read_cursor(model, cursor, order)
            found = await _records(query.filter(**{field: value, f"{pk}__{after}": last}).order_by(sign + pk), want)
            rest = query.filter(**{f"{field}__{after}": value})
        if len(found) < want:
            need = want - len(found)
            tail = await _records(rest.order_by(sign + field), need)
            if len(tail) == need:  # the slice may cut a run of equal values: take that run by id
                edge = tail[-1]._data[field]
                head = [record for record in tail if record._data[field] != edge]
                run = await _records(query.filter(**{field: edge}).order_by(sign + pk), need - len(head))
                tail = head + run
            found += tail
    page = found[:limit]
    if len(found) <= limit:
        return Page(page, None)
    last_record = page[-1]
    value = _cursor_value(last_record._data[field])
    return Page(page, write_cursor(order, value, last_record.pk))
