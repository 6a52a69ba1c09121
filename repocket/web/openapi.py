"""What the OpenAPI document says about one model's routes: body and response schemas.

The record schema is ``Model.json_schema()``, the schema of
``Model.pydantic_model()``, without the ByteStreams the routes leave out.
Bodies are read by the function that model validates with
(:mod:`repocket.web.bodies`), so what the document says is what is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from repocket.model import ActiveRecord

__all__ = ["RouteDocs", "route_docs"]

_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}, "error": {"type": "string"},
                                     "model": {"type": "string"}, "field": {"type": "string"}}}}}}


def _error(description: str) -> dict[str, Any]:
    return {**_ERROR, "description": description}


@dataclass
class RouteDocs:
    """The ``responses=`` and ``openapi_extra=`` arguments of each route."""

    record: dict[int | str, dict[str, Any]]
    created: dict[int | str, dict[str, Any]]
    deleted: dict[int | str, dict[str, Any]]
    page: dict[int | str, dict[str, Any]]
    create_body: dict[str, Any]
    patch_body: dict[str, Any]


def _record_schema(model: type[ActiveRecord]) -> dict[str, Any]:
    """The JSON Schema of the record's JSON form (that of ``Model.pydantic_model()``), minus ByteStreams."""
    streams = set(model._meta.streams)
    try:
        full = model.json_schema()
    except TypeError:  # an attribute type without a JSON form: describe an object, check on the way in
        return {"type": "object", "title": model._meta.name}
    schema = {key: value for key, value in full.items() if key != "$schema"}
    schema["properties"] = {name: prop for name, prop in full["properties"].items() if name not in streams}
    schema["required"] = [name for name in full.get("required", []) if name not in streams]
    return schema


def _writable(schema: dict[str, Any], pk: str, partial: bool) -> dict[str, Any]:
    """A request body's schema: no primary key; with ``partial``, nothing required."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: prop for name, prop in out["properties"].items() if name != pk}
    out["required"] = [] if partial else [name for name in out.get("required", []) if name != pk]
    return out


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


def route_docs(model: type[ActiveRecord]) -> RouteDocs:
    """The OpenAPI descriptions of ``model``'s routes."""
    name = model._meta.name
    schema = _record_schema(model)
    content: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    Responses = dict[int | str, dict[str, Any]]
    errors: Responses = {422: _error("A value, field, lookup, id or cursor is invalid (the field is named)"),
              403: _error("A can_* permission callback refused")}
    found: Responses = {**errors, 404: _error(f"No {name} has this id")}
    writes: Responses = {409: _error("A unique value is taken, the version is stale, or PROTECT refused")}
    page_schema = {"type": "object", "properties": {
        "items": {"type": "array", "items": schema}, "next": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    return RouteDocs(
        record={200: {**content, "description": f"The {name}"}, **found, **writes},
        created={201: {**content, "description": f"The new {name}"}, **errors, **writes},
        deleted={204: {"description": "Deleted"}, **found, **writes},
        page={200: {"description": f"A page of {name} records",
                    "content": {"application/json": {"schema": page_schema}}}, **errors},
        create_body=_body(_writable(schema, model._meta.pk, False), f"The new {name}'s attribute values"),
        patch_body=_body(_writable(schema, model._meta.pk, True), "The attributes to change, and only those"),
    )
