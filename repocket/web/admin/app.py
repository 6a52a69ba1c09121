"""``admin_app(models)``: a server-rendered HTML admin for repocket models, on FastAPI and Jinja2.

Pages are HTML forms and links, readable without JavaScript; the one script
(``static/admin.js``) adds the ``/`` shortcut to the filter box and the live
tail of ByteStreams. Lists are served by :mod:`repocket.web.listing` (the
REST routes' lookups and keyset pages), values shown in the JSON form of
:mod:`repocket.web.bodies`, errors given the REST routes' statuses
(:data:`repocket.web.errors.STATUS`), and every read and write is
repocket's async API.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from repocket import errors
from repocket.io import clients
from repocket.model import ActiveRecord
from repocket.plan import relations
from repocket.web import routes
from repocket.web.admin import forms, pages, reads, security
from repocket.web.bodies import resolve_references
from repocket.web.errors import STATUS, PermissionRefusedError, error_response
from repocket.web.listing import RESERVED, cursor_order, fetch_page, order_field, parse_filters
from repocket.web.routes import Permission

__all__ = ["admin_app"]

#: The bytes of a ByteStream a record's page shows, and the most one poll of its tail returns.
TAIL_BYTES = 4096
#: The most recent changes read to find a record's own (it shows those among them).
RECENT_CHANGES = 200
_STATIC = {"admin.css": "text/css; charset=utf-8", "admin.js": "text/javascript; charset=utf-8"}
_DONE = {"saved": "Saved.", "created": "Created.", "deleted": "Deleted."}


def _status(exc: Exception) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


class _Site:
    """The models an admin serves, by the name in their URLs, and how it renders its pages."""

    def __init__(self, models: Sequence[type[ActiveRecord]], title: str, secret: str | bytes | None,
                 permissions: dict[str, Permission | None], page_size: int, max_page_size: int) -> None:
        names = [model._meta.name.lower() for model in models]
        self.models = {(name if names.count(name) == 1 else model._meta.label): model
                       for name, model in zip(names, models)}
        self.slugs = {model: slug for slug, model in self.models.items()}
        self.title, self.csrf, self.permissions = title, security.csrf_token(secret), permissions
        self.page_size, self.max_page_size = page_size, max_page_size
        self.env = jinja2.Environment(loader=jinja2.PackageLoader("repocket.web.admin", "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        folder = resources.files("repocket.web.admin") / "static"
        self.static = {name: (folder / name).read_bytes() for name in _STATIC}

    def model(self, slug: str) -> type[ActiveRecord]:
        model = self.models.get(slug)
        if model is None:
            raise _NotServed(slug)
        return model

    def list_url(self, model: type[ActiveRecord]) -> str | None:
        slug = self.slugs.get(model)
        return None if slug is None else f"/{slug}"

    def link_to(self, model: type[ActiveRecord], pk: Any) -> str | None:
        base = self.list_url(model)
        return None if base is None else f"{base}/{pk}"

    async def allowed(self, action: str, request: Request, subject: Any, model: type[ActiveRecord]) -> None:
        await routes.allowed(self.permissions[action], request, subject, model, action)

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        page = self.env.get_template(template).render(
            base=request.scope.get("root_path", ""), title=self.title, csrf=self.csrf, nav=list(self.models),
            done=_DONE.get(request.query_params.get("done", "")), **context)
        return HTMLResponse(page, status_code=status, headers=security.HEADERS)

    def redirect(self, request: Request, path: str) -> Response:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)


class _NotServed(errors.DoesNotExist):
    """A URL names a model the admin does not serve."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"this admin serves no model named {slug!r}")


class _BadToken(PermissionRefusedError):
    """A POST without the admin's CSRF token."""

    def __init__(self) -> None:
        super().__init__("the form's CSRF token is missing or wrong: reload the page and submit it again",
                         model="admin", action="post")


async def _form(site: _Site, request: Request) -> dict[str, str]:
    """The fields of a POSTed urlencoded form, after checking its CSRF token (one value per name)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True) \
        if kind == "application/x-www-form-urlencoded" else []
    submitted = dict(pairs)
    if not security.same_token(site.csrf, submitted.pop("csrf", None)):
        raise _BadToken()
    return submitted


def admin_app(
    models: Sequence[type[ActiveRecord]],
    *,
    title: str = "repocket admin",
    can_read: Permission | None = None,
    can_create: Permission | None = None,
    can_modify: Permission | None = None,
    can_delete: Permission | None = None,
    can_repair: Permission | None = None,
    dependencies: Sequence[Depends] | None = None,
    secret: str | bytes | None = None,
    page_size: int = 25,
    max_page_size: int = 500,
) -> FastAPI:
    """An ASGI app (FastAPI) serving the admin pages of ``models``; mount it or run it (``repocket admin``).

    Args:
        models: the models it shows; a Pointer to another model links there when it is one of them.
        title: the heading of every page.
        can_read: may this request see this record (or list with these lookups)?
        can_create: may it create this (unsaved) instance?
        can_modify: may it change this record (as stored)?
        can_delete: may it delete this record?
        can_repair: may it run ``check(repair=True)`` on this model (the subject is the model)?
            Each ``can_*`` is a :data:`repocket.web.routes.Permission`, as for ``crud_routes``;
            None allows everything, an answer other than True is a 403 page.
        dependencies: FastAPI dependencies run before every page, such as
            :func:`repocket.web.bearer_token` or your session check: the admin has no login of its own.
        secret: what the CSRF token is derived from (give the same one to every process serving the
            admin); random per app by default.
        page_size: records per page of a list, unless ``?limit=`` says otherwise.
        max_page_size: the largest ``?limit=`` taken.
    """
    site = _Site(models, title, secret, {"read": can_read, "create": can_create, "modify": can_modify,
                                         "delete": can_delete, "repair": can_repair}, page_size, max_page_size)
    app = FastAPI(title=title, dependencies=list(dependencies or []), docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(errors.RepocketError)
    async def repocket_error(request: Request, exc: errors.RepocketError) -> Response:
        return site.render(request, "error.html", _status(exc), heading=type(exc).__name__, message=str(exc))

    @app.get("/_static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(site.static[name], media_type=_STATIC[name],
                        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        rows = []
        for slug, model in site.models.items():
            count = await model.objects.acount()
            try:
                mean = await clients.run_async(reads.bytes_per_record(model._meta))
            except errors.PermissionDeniedError:  # (an ACL refusing MEMORY USAGE: the page goes on without it)
                mean = None
            except errors.RedisConnectionError:
                raise
            except errors.RepocketError:  # (a server without MEMORY USAGE, as fakeredis)
                mean = None
            rows.append({"slug": slug, "name": model._meta.name, "label": model._meta.label, "count": count,
                         "per_record": mean, "total": None if mean is None else mean * count,
                         "changes": model._meta.records_changes, "history": model._meta.history})
        return site.render(request, "index.html", rows=rows, sample=reads.STATS_SAMPLE)

    @app.get("/{slug}", response_class=HTMLResponse)
    async def list_records(request: Request, slug: str) -> Response:
        model = site.model(slug)
        return await _list_page(site, request, model)

    @app.get("/{slug}/new", response_class=HTMLResponse)
    async def new_record(request: Request, slug: str) -> Response:
        model = site.model(slug)
        return site.render(request, "form.html", slug=slug, model=model._meta, record=None,
                           fields=forms.form_fields(model, None), error=None, version=None)

    @app.post("/{slug}/new", response_class=HTMLResponse)
    async def create_record(request: Request, slug: str) -> Response:
        model = site.model(slug)
        submitted = await _form(site, request)
        try:
            values = await resolve_references(model, forms.form_values(model, submitted))
            instance = model(**values)
            await site.allowed("create", request, instance, model)
            await instance.asave()
        except (errors.ValidationError, errors.UnknownFieldError, errors.UniqueConstraintError,
                errors.BrokenReferenceError, errors.UnsavedReferenceError) as exc:
            return site.render(request, "form.html", _status(exc), slug=slug, model=model._meta, record=None,
                               fields=forms.form_fields(model, None, submitted, exc), error=exc, version=None)
        return site.redirect(request, f"/{slug}/{instance.pk}?done=created")

    async def check_page(request: Request, slug: str, confirm: bool) -> Response:
        model = site.model(slug)
        report = await model.objects.acheck()
        return site.render(request, "check.html", slug=slug, model=model._meta, report=report, repaired=None,
                           confirm=confirm)

    @app.get("/{slug}/check", response_class=HTMLResponse)
    async def check(request: Request, slug: str) -> Response:
        return await check_page(request, slug, confirm=False)

    @app.get("/{slug}/repair", response_class=HTMLResponse)
    async def confirm_repair(request: Request, slug: str) -> Response:
        """The report again, with the repair button that asks for confirmation."""
        return await check_page(request, slug, confirm=True)

    @app.post("/{slug}/repair", response_class=HTMLResponse)
    async def repair(request: Request, slug: str) -> Response:
        model = site.model(slug)
        await _form(site, request)
        await site.allowed("repair", request, model, model)
        repaired = await model.objects.acheck(repair=True)
        report = await model.objects.acheck()  # (what is left, as ``repocket check --repair`` shows)
        return site.render(request, "check.html", slug=slug, model=model._meta, report=report, repaired=repaired,
                           confirm=False)

    @app.get("/{slug}/{record_id}", response_class=HTMLResponse)
    async def read_record(request: Request, slug: str, record_id: str) -> Response:
        model = site.model(slug)
        record = await model.objects.aget(id=record_id)
        await site.allowed("read", request, record, model)
        return await _record_page(site, request, slug, record)

    @app.get("/{slug}/{record_id}/stream/{name}")
    async def tail(request: Request, slug: str, record_id: str, name: str, offset: int | None = None) -> Response:
        try:
            model = site.model(slug)
            record = await model.objects.aget(id=record_id)
            await site.allowed("read", request, record, model)
            key = record._calculate_key_for_field(name)
            if model._meta.fields[name].secret:
                raise PermissionRefusedError(f"{model._meta.label}.{name} is secret: its bytes are never shown",
                                             model=model._meta.label, action="read")
            start, chunk, length = await clients.run_async(
                reads.stream_tail(key, model._meta.label, None if offset is None else max(0, offset), TAIL_BYTES))
        except errors.RepocketError as exc:
            response = error_response(exc)
            if response is None:
                raise
            return response
        encoding = getattr(model._meta.fields[name], "encoding", "utf-8")
        return JSONResponse({"offset": start, "next": start + len(chunk), "length": length,
                             "text": chunk.decode(encoding, "replace")}, headers={"Cache-Control": "no-store"})

    @app.get("/{slug}/{record_id}/edit", response_class=HTMLResponse)
    async def edit_form(request: Request, slug: str, record_id: str) -> Response:
        model = site.model(slug)
        record = await model.objects.aget(id=record_id)
        await site.allowed("read", request, record, model)
        return site.render(request, "form.html", slug=slug, model=model._meta, record=record,
                           fields=forms.form_fields(model, record), error=None, version=record._version)

    @app.post("/{slug}/{record_id}/edit", response_class=HTMLResponse)
    async def edit(request: Request, slug: str, record_id: str) -> Response:
        model = site.model(slug)
        submitted = await _form(site, request)
        version = submitted.pop("version", None)
        record = await model.objects.aget(id=record_id)
        try:
            values = forms.form_values(model, submitted)
            if version:
                routes.check_if_match(record, f'"{version}"')
            await site.allowed("modify", request, record, model)
            for name, value in (await resolve_references(model, values)).items():
                setattr(record, name, value)
            await record.asave()  # (writes only what changed)
        except (errors.ValidationError, errors.UnknownFieldError, errors.UniqueConstraintError,
                errors.BrokenReferenceError, errors.ConflictError) as exc:
            return site.render(request, "form.html", _status(exc), slug=slug, model=model._meta, record=record,
                               fields=forms.form_fields(model, record, submitted, exc), error=exc, version=version)
        return site.redirect(request, f"/{slug}/{record.pk}?done=saved")

    @app.get("/{slug}/{record_id}/delete", response_class=HTMLResponse)
    async def confirm_delete(request: Request, slug: str, record_id: str) -> Response:
        model = site.model(slug)
        record = await model.objects.aget(id=record_id)
        await site.allowed("read", request, record, model)
        return await _delete_page(site, request, slug, record, None)

    @app.post("/{slug}/{record_id}/delete", response_class=HTMLResponse)
    async def delete(request: Request, slug: str, record_id: str) -> Response:
        model = site.model(slug)
        await _form(site, request)
        record = await model.objects.aget(id=record_id)
        await site.allowed("delete", request, record, model)
        try:
            await record.adelete()
        except errors.ProtectedError as exc:
            return await _delete_page(site, request, slug, record, exc)
        return site.redirect(request, f"/{slug}?done=deleted")

    return app


def _query(params: Sequence[tuple[str, str]], **changes: str | None) -> str:
    """A query string of ``params`` with ``changes`` (None: left out)."""
    kept = [(name, value) for name, value in params if name not in changes]
    kept += [(name, value) for name, value in changes.items() if value is not None]
    return "?" + urlencode(kept) if kept else ""


async def _list_page(site: _Site, request: Request, model: type[ActiveRecord]) -> Response:
    """A page of the model's records: its filters, the order, the keyset page, and the count of matches."""
    meta = model._meta
    params, lookup_text, bad_lookup = [], "", False
    for name, value in request.query_params.multi_items():
        if name == "_lookup" and value.strip():  # (the free lookup box: ``field__lookup=value``)
            lookup_text = value
            name, equals, value = value.strip().partition("=")
            name, value, bad_lookup = name.strip(), value.strip(), not equals or not name.strip()
        if value != "" and name not in ("done", "_lookup") and not bad_lookup:
            params.append((name, value))
    given = dict(params)
    filters = [(name, value) for name, value in params if name not in RESERVED]
    columns = [name for name in meta.fields if name not in meta.streams][:8]
    sortable = set()
    for name in columns:
        try:
            order_field(model, name)
            sortable.add(name)
        except (errors.ValidationError, errors.UnknownFieldError):
            pass
    inputs = [name for name in meta.fields if meta.fields[name].index and not meta.fields[name].secret
              and name != meta.pk]
    context: dict[str, Any] = {"slug": site.slugs[model], "model": meta, "columns": columns, "sortable": sortable,
                               "inputs": inputs, "given": given, "filters": filters, "rows": [], "next": None,
                               "count": None, "error": None, "order": "", "query": _query, "params": [],
                               "lookup_text": lookup_text if bad_lookup else ""}
    if bad_lookup:
        context["error"] = errors.ValidationError(
            f"{meta.label}: the lookup box takes field__lookup=value (e.g. {inputs[0] if inputs else meta.pk}=...)",
            model=meta.label, field="_lookup", value=None, expected="field__lookup=value")
        return site.render(request, "list.html", 422, **context)
    try:
        limit = int(given.get("limit", site.page_size))
        if not 1 <= limit <= site.max_page_size:
            raise ValueError(limit)
    except ValueError:
        context["error"] = errors.ValidationError(
            f"{meta.label}: limit must be a whole number from 1 to {site.max_page_size}", model=meta.label,
            field="limit", value=None, expected=f"1 to {site.max_page_size}")
        return site.render(request, "list.html", 422, **context)
    try:
        lookups = parse_filters(model, params)
        order = given.get("order") or (cursor_order(model, given["cursor"]) if "cursor" in given else None)
        field, descending = order_field(model, order)
        order_text = ("-" if descending else "") + field
        await site.allowed("read", request, lookups, model)
        query = model.objects.filter(**lookups)
        page = await fetch_page(query, order_text, limit, given.get("cursor"))
        count = await query.acount()
    except (errors.ValidationError, errors.UnknownFieldError) as exc:
        context["error"] = exc
        return site.render(request, "list.html", 422, **context)
    rows = [(record.pk, {cell.name: cell for cell in pages.cells(record, site.link_to, with_streams=False)})
            for record in page.records]
    context.update(rows=rows, next=page.next, count=count, order=order_text,
                   params=[(name, value) for name, value in params if name != "cursor"])
    return site.render(request, "list.html", **context)


async def _record_page(site: _Site, request: Request, slug: str, record: ActiveRecord) -> Response:
    """A record's page: its fields with their types, ByteStream tails, relations both ways, history, changes."""
    meta = record._meta
    cells = pages.cells(record, site.link_to, cut=False)
    tails: dict[str, tuple[int, str]] = {}
    for name in meta.streams:
        attr = meta.fields[name]
        if not attr.secret:
            start, chunk, length = await clients.run_async(
                reads.stream_tail(record._calculate_key_for_field(name), meta.label, None, TAIL_BYTES))
            tails[name] = (start + len(chunk), chunk.decode(getattr(attr, "encoding", "utf-8"), "replace"))
    changes: list[pages.ChangeRow] = []
    if meta.records_changes:
        recent = await clients.run_async(reads.recent_changes(meta, RECENT_CHANGES))
        changes = pages.change_rows(type(record), [change for change in recent if change.id == str(record.pk)][:20],
                                    site.link_to)
    return site.render(request, "record.html", slug=slug, model=meta, record=record, cells=cells, tails=tails,
                       relations=await pages.relation_rows(record, site.link_to, site.list_url),
                       history=await pages.history_rows(record) if meta.history else [], changes=changes)


async def _delete_page(site: _Site, request: Request, slug: str, record: ActiveRecord,
                       refused: errors.ProtectedError | None) -> Response:
    """What deleting ``record`` would do (planned, not written) and the button that does it."""
    preview = await clients.run_async(relations.preview(record._meta, [record]))
    deleted = [(f"{found._meta.name} {found.pk}", site.link_to(type(found), found.pk)) for found in preview.deleted]
    changed = [(f"{found._meta.name} {found.pk}", site.link_to(type(found), found.pk),
                [(name, "unlinked from" if name in found._meta.pointer_lists else "set to None") for name in fields])
               for found, fields in preview.changed]
    protecting = [(f"{model._meta.name} {model._meta.parse_key(key)}", site.link_to(model, model._meta.parse_key(key)),
                   field) for key, model, field in preview.refused]
    return site.render(request, "delete.html", 409 if refused else 200, slug=slug, model=record._meta, record=record,
                       deleted=deleted, changed=changed, protecting=protecting, refused=refused)
