"""JSON in and out: records as response bodies, request bodies as attribute values.

Both ways use repocket's JSON form of a record (:func:`repocket.schema.json_form`,
described by :func:`repocket.schema.json_schema` and read by
``Model.pydantic_model()``): :meth:`~repocket.model.ActiveRecord.to_dict`
``(simple=True)`` made JSON. ``secret=True`` values are ``"***"``, a Pointer is
its target's id (a PointerList a list of ids), Bytes are base64, Decimals text,
UUIDs and DateTimes their canonical text. ByteStream attributes are left out
both ways: they grow by ``append_<name>()`` and may be large.

Incoming values are read by the same function the pydantic model validates
with, which casts them with the attribute's own ``cast``: the repocket side
decides, and names the model and field when it refuses.
"""

from __future__ import annotations

from typing import Any

from repocket import attributes, errors, schema
from repocket.model import ActiveRecord

__all__ = ["record_json", "request_values", "resolve_references"]


def record_json(record: ActiveRecord) -> dict[str, Any]:
    """The record's JSON form, in declaration order, without its ByteStreams."""
    streams = set(record._meta.streams)
    return {name: value for name, value in schema.json_form(record).items() if name not in streams}


def _invalid(model: type[ActiveRecord], name: str, message: str, expected: str) -> errors.ValidationError:
    label = model._meta.label
    return errors.ValidationError(f"{label}.{name}: {message}", model=label, field=name, value=None,
                                  expected=expected)


def request_values(model: type[ActiveRecord], body: Any) -> dict[str, Any]:
    """The attribute values of a JSON body, cast (a Pointer as its target's id, a PointerList a list of ids).

    Raises:
        repocket.errors.ValidationError: the body is not an object, names the primary key or a
            ByteStream, or holds a value its attribute cannot take.
        repocket.errors.UnknownFieldError: the body names something that is not an attribute.
    """
    meta = model._meta
    if not isinstance(body, dict):
        raise errors.ValidationError(
            f"{meta.label}: the request body must be a JSON object of attribute values, "
            f"not {type(body).__name__}", model=meta.label, field=None, value=None, expected="a JSON object")
    values: dict[str, Any] = {}
    for name, value in body.items():
        attr = meta.fields.get(name)
        if attr is None:
            raise meta.unknown_field(name)
        if name == meta.pk:
            raise _invalid(model, name, "the primary key is chosen by repocket and cannot be set or changed",
                           "no primary key in the body")
        if isinstance(attr, attributes.ByteStream):
            raise _invalid(model, name, "a ByteStream is not read or written by the REST routes "
                                        f"(use append_{name}())", "no ByteStream in the body")
        values[name] = schema.read_value(attr, value)
    return values


async def resolve_references(model: type[ActiveRecord], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with Pointer and PointerList ids replaced by the records they name.

    Raises:
        repocket.errors.ValidationError: an id names no stored record (a 422, not a 404: the
            body is wrong, not the URL).
    """
    out = dict(values)
    for name, value in values.items():
        attr = model._meta.fields[name]
        if not isinstance(attr, attributes.Reference) or value is None:
            continue
        target: type[ActiveRecord] = attr.to_model  # type: ignore[attr-defined]
        ids = list(value) if isinstance(attr, attributes.PointerList) else [value]
        stored = await target.objects.ain_bulk(ids)  # one round trip for all of them
        missing = [pk for pk in ids if pk not in stored]
        if missing:
            raise _invalid(model, name, f"no {target._meta.label} has the id {str(missing[0])!r}",
                           f"the id of a stored {target._meta.label}")
        found = [stored[pk] for pk in ids]
        out[name] = found if isinstance(attr, attributes.PointerList) else found[0]
    return out
