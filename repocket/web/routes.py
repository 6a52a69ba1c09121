"""``crud_routes(Model)``: the FastAPI router of one model's REST collection.

Every route runs repocket's async API (``aget``, ``asave``, ``adelete``,
async iteration of QuerySets) and answers errors through
:class:`repocket.web.errors.ErrorMappingRoute`. Bodies are read and checked by
:mod:`repocket.web.bodies`; the list route's query string by
:mod:`repocket.web.listing`, in repocket's JSON form (:mod:`repocket.schema`),
which the OpenAPI document describes (:mod:`repocket.web.openapi`).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route
# functions' annotations at run time, and they name values local to crud_routes.

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.params import Depends
from fastapi.responses import JSONResponse

from repocket import errors
from repocket.model import ActiveRecord
from repocket.web import openapi
from repocket.web.bodies import record_json, request_values, resolve_references
from repocket.web.errors import ErrorMappingRoute, PermissionRefusedError
from repocket.web.listing import cursor_order, fetch_page, order_field, parse_filters

__all__ = ["Permission", "allowed", "check_if_match", "crud_routes"]

#: A ``can_*`` callback: ``(request, subject) -> bool``, sync or async. The subject is the record
#: (for create: the unsaved instance; for modify: the record as stored, before the change), or for
#: the list route the dict of ``filter()`` lookups its query string gives.
Permission = Callable[[Request, Any], bool | Awaitable[bool]]


async def allowed(check: Permission | None, request: Request, subject: Any, model: type[ActiveRecord],
                  action: str) -> None:
    """Refuse (PermissionRefusedError: 403) a request ``check`` does not answer ``True`` for (sync or async)."""
    if check is None:
        return
    answer = check(request, subject)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer is not True:
        raise PermissionRefusedError(f"{model._meta.label}: {action} refused for this request",
                                     model=model._meta.label, action=action)


def _etag(record: ActiveRecord) -> dict[str, str]:
    """The ``ETag`` header of a versioned record: its version counter, quoted."""
    if not record._meta.versioned:
        return {}
    return {"ETag": f'"{record._version or 0}"'}


def check_if_match(record: ActiveRecord, if_match: str | None) -> None:
    """Refuse (ConflictError: 409) a request whose ``If-Match`` names another version than the stored one."""
    if if_match is None or if_match.strip() == "*":
        return
    meta = record._meta
    if not meta.versioned:
        raise errors.ValidationError(
            f"{meta.label} is not Meta.versioned: its records have no version for If-Match to name",
            model=meta.label, field="If-Match", value=None, expected="no If-Match header")
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    current = str(record._version or 0)
    if current not in wanted:
        raise errors.ConflictError(
            f"{meta.label} {record.pk}: If-Match names version {', '.join(sorted(wanted))}, but the stored "
            f"version is {current}; nothing was written. Read the record again and retry.")


async def _load(model: type[ActiveRecord], record_id: str) -> Any:
    """The record with this id. An id that is not a UUID is a 422 (ValidationError), a missing one a 404."""
    return await model.objects.aget(id=record_id)


async def _json_body(request: Request, model: type[ActiveRecord]) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise errors.ValidationError(f"{model._meta.label}: the request body is not JSON",
                                     model=model._meta.label, field=None, value=None,
                                     expected="a JSON object") from None


def _record_response(record: ActiveRecord, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(record_json(record), status_code=status, headers={**_etag(record), **(headers or {})})


def crud_routes(
    model: type[ActiveRecord],
    *,
    prefix: str | None = None,
    can_read: Permission | None = None,
    can_create: Permission | None = None,
    can_modify: Permission | None = None,
    can_delete: Permission | None = None,
    dependencies: Sequence[Depends] | None = None,
    tags: list[str] | None = None,
    default_limit: int = 50,
    max_limit: int = 1000,
) -> APIRouter:
    """An APIRouter with list, read, create, partial update and delete routes for ``model``.

    Args:
        model: the repocket model the routes serve.
        prefix: the collection's path; ``/<model name in lower case>`` by default.
        can_read: may this request read this record (or list with these lookups)?
        can_create: may it create this (unsaved) instance?
        can_modify: may it change this record (as stored)?
        can_delete: may it delete this record? Each ``can_*`` is a :data:`~repocket.web.routes.Permission`;
            None allows everything; an answer other than True is a 403.
        dependencies: FastAPI dependencies run before every route, such as
            :func:`repocket.web.bearer_token`.
        tags: OpenAPI tags; the model's name by default.
        default_limit: the page size of the list route when ``?limit=`` is not given.
        max_limit: the largest ``?limit=`` accepted.
    """
    meta = model._meta
    path = prefix if prefix is not None else "/" + meta.name.lower()
    router = APIRouter(prefix=path, route_class=ErrorMappingRoute, tags=list(tags or [meta.name]),
                       dependencies=list(dependencies or []))
    docs = openapi.route_docs(model)
    id_param = Annotated[str, Path(alias="id", description=f"The {meta.name}'s id (a UUID)")]
    if_match_header = Annotated[str | None, Header(alias="If-Match", description="For a Meta.versioned model: "
                                                   "the version (ETag) the change was made against")]

    @router.get("", summary=f"List {meta.name} records", responses=docs.page,
                description="Query parameters other than limit, cursor and order are filter() lookups: "
                            "?name=Harry&age__gte=3. The order is one attribute ([-]name; the id by "
                            "default), ties by id; pages continue from the opaque cursor in next.")
    async def list_records(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=max_limit, description="Records per page")] = default_limit,
        cursor: Annotated[str | None, Query(description="The next of the previous page")] = None,
        order: Annotated[str | None, Query(description="[-]attribute")] = None,
    ) -> Response:
        lookups = parse_filters(model, request.query_params.multi_items())
        if order is None and cursor is not None:
            order = cursor_order(model, cursor)
        field, descending = order_field(model, order)
        await allowed(can_read, request, lookups, model, "list")
        page = await fetch_page(model.objects.filter(**lookups), ("-" if descending else "") + field, limit, cursor)
        return JSONResponse({"items": [record_json(record) for record in page.records], "next": page.next})

    @router.get("/{id}", summary=f"Read one {meta.name}", responses=docs.record)
    async def read_record(request: Request, record_id: id_param) -> Response:
        record = await _load(model, record_id)
        await allowed(can_read, request, record, model, "read")
        return _record_response(record)

    @router.post("", summary=f"Create a {meta.name}", status_code=201, responses=docs.created,
                 openapi_extra=docs.create_body)
    async def create_record(request: Request) -> Response:
        values = await resolve_references(model, request_values(model, await _json_body(request, model)))
        instance = model(**values)
        await allowed(can_create, request, instance, model, "create")
        await instance.asave()
        return _record_response(instance, 201, {"Location": f"{request.url.path.rstrip('/')}/{instance.pk}"})

    @router.patch("/{id}", summary=f"Change some attributes of a {meta.name}", responses=docs.record,
                  openapi_extra=docs.patch_body)
    async def modify_record(request: Request, record_id: id_param, if_match: if_match_header = None) -> Response:
        values = request_values(model, await _json_body(request, model))
        record = await _load(model, record_id)
        check_if_match(record, if_match)
        await allowed(can_modify, request, record, model, "modify")
        for name, value in (await resolve_references(model, values)).items():
            setattr(record, name, value)
        await record.asave()  # writes only what changed: other attributes keep concurrent writes
        return _record_response(record)

    @router.delete("/{id}", summary=f"Delete a {meta.name}", status_code=204, responses=docs.deleted)
    async def delete_record(request: Request, record_id: id_param, if_match: if_match_header = None) -> Response:
        record = await _load(model, record_id)
        check_if_match(record, if_match)
        await allowed(can_delete, request, record, model, "delete")
        await record.adelete()
        return Response(status_code=204)

    return router
