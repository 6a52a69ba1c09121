"""repocket.web: the REST routes of crud_routes(), through httpx's ASGI transport, on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, Request
from hypothesis import given
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes
from repocket.attributes import PROTECT
from repocket.web import bearer_token, crud_routes
from repocket.web.bodies import record_json
from repocket.web.listing import read_cursor, write_cursor

pytestmark = pytest.mark.usefixtures("repocket_connection")


class WebAuthor(ActiveRecord):
    name = attributes.Unicode(index=True)
    email = attributes.Unicode(unique=True, null=True)
    age = attributes.Integer(index=True, default=0)
    password = attributes.Unicode(secret=True, null=True)
    notes = attributes.ByteStream()


class WebBook(ActiveRecord):
    title = attributes.Unicode(index=True)
    pages = attributes.Integer(default=0)
    author = attributes.Pointer(WebAuthor, null=True, on_delete=PROTECT)
    cover = attributes.Bytes(null=True)


class WebPage(ActiveRecord):
    text = attributes.Unicode()
    revisions = attributes.Integer(default=0)

    class Meta:
        versioned = True


class WebShelf(ActiveRecord):
    label = attributes.Unicode()
    books = attributes.PointerList(WebBook, on_delete=PROTECT)


TOKENS = {"s3cret": "alice"}


def _app(**options: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(crud_routes(WebAuthor, **options))
    app.include_router(crud_routes(WebBook))
    app.include_router(crud_routes(WebPage, prefix="/pages"))
    app.include_router(crud_routes(WebShelf))
    return app


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://test") as http:
        yield http


# -- read and create ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_create_returns_201_with_the_record(client: httpx.AsyncClient) -> None:
    """POST creates the record and answers 201 with it (id assigned, Location set)."""
    response = await client.post("/webauthor", json={"name": "Harry", "age": 17})
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "name": "Harry", "email": None, "age": 17, "password": "***"}
    assert response.headers["location"] == f"/webauthor/{body['id']}"
    stored = await WebAuthor.objects.aget(id=body["id"])
    assert (stored.name, stored.age) == ("Harry", 17)


@pytest.mark.asyncio
async def test_get_one_record(client: httpx.AsyncClient) -> None:
    """GET /<model>/{id} answers the record as record_json gives it."""
    harry = await WebAuthor.acreate(name="Harry", age=17)
    response = await client.get(f"/webauthor/{harry.id}")
    assert response.status_code == 200
    assert response.json() == {"id": str(harry.id), "name": "Harry", "email": None, "age": 17, "password": "***"}
    assert "etag" not in response.headers  # not versioned


@pytest.mark.asyncio
async def test_invalid_id_is_422_and_missing_id_404(client: httpx.AsyncClient) -> None:
    """An id that is no UUID is a 422 naming the field; a well-formed id of nobody is a 404."""
    bad = await client.get("/webauthor/not-a-uuid")
    assert bad.status_code == 422
    assert bad.json()["field"] == "id"
    missing = await client.get("/webauthor/00000000-0000-1000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["error"] == "DoesNotExist"


@pytest.mark.asyncio
async def test_secret_is_masked_and_never_echoed(client: httpx.AsyncClient) -> None:
    """A secret=True attribute is "***" in every response, and a bad secret value is not repeated."""
    created = await client.post("/webauthor", json={"name": "Ron", "password": "hunter2"})
    assert created.json()["password"] == "***"
    assert "hunter2" not in created.text
    listed = await client.get("/webauthor")
    assert listed.json()["items"][0]["password"] == "***"
    refused = await client.post("/webauthor", json={"name": "Ron", "password": ["hunter3"]})
    assert refused.status_code == 422
    assert "hunter3" not in refused.text
    assert (await client.get("/webauthor?password=hunter2")).status_code == 422  # no filtering oracle


@pytest.mark.asyncio
async def test_pointer_by_id_and_bytes_as_base64(client: httpx.AsyncClient) -> None:
    """A Pointer is given and read as its target's id; Bytes as base64 (repocket's JSON form)."""
    harry = await WebAuthor.acreate(name="Harry")
    raw = b"\xff\x00png"
    response = await client.post("/webbook", json={
        "title": "Stone", "author": str(harry.id), "cover": base64.b64encode(raw).decode()})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {"id": body["id"], "title": "Stone", "pages": 0, "author": str(harry.id),
                    "cover": base64.b64encode(raw).decode()}
    assert (await WebBook.objects.aget(id=body["id"])).cover == raw
    cleared = await client.patch(f"/webbook/{body['id']}", json={"author": None})
    assert cleared.json()["author"] is None
    assert (await WebBook.objects.aget(id=body["id"])).author is None
    assert (await client.patch(f"/webbook/{body['id']}", json={"cover": "not base64!"})).status_code == 422


@pytest.mark.asyncio
async def test_pointer_list_by_ids(client: httpx.AsyncClient) -> None:
    """A PointerList is given and read as a list of ids, resolved in one read; an unknown id is a 422."""
    first, second = await WebBook.acreate(title="One"), await WebBook.acreate(title="Two")
    ids = [str(second.id), str(first.id)]
    created = await client.post("/webshelf", json={"label": "top", "books": ids})
    assert created.status_code == 201, created.text
    assert created.json()["books"] == ids
    stored = await WebShelf.objects.aget(id=created.json()["id"])
    assert [book.title for book in stored.books] == ["Two", "One"]
    listed = await client.get(f"/webshelf?books={first.id}")
    assert [item["id"] for item in listed.json()["items"]] == [created.json()["id"]]
    bad = await client.patch(f"/webshelf/{stored.id}", json={"books": [str(first.id), str(uuid.uuid4())]})
    assert (bad.status_code, bad.json()["field"]) == (422, "books")
    assert [book.title for book in (await WebShelf.objects.aget(id=stored.id)).books] == ["Two", "One"]


@pytest.mark.asyncio
async def test_unknown_pointer_target_is_422(client: httpx.AsyncClient) -> None:
    """A Pointer id naming no record is a 422 on the Pointer (the body is wrong, not the URL)."""
    response = await client.post("/webbook", json={"title": "T", "author": "00000000-0000-1000-8000-000000000000"})
    assert response.status_code == 422
    assert response.json()["field"] == "author"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "A", "age": "old"}, "age"),
    ({"name": "A", "nickname": "x"}, "nickname"),
    ({"name": "A", "notes": "x"}, "notes"),
    ({"id": "00000000-0000-1000-8000-000000000000", "name": "A"}, "id"),
    ({"name": None}, "name"),
])
@pytest.mark.asyncio
async def test_bad_bodies_are_422_naming_the_field(client: httpx.AsyncClient, body: dict[str, Any],
                                                   field: str) -> None:
    """Uncastable values, unknown names, ByteStreams, the id and a None for null=False are 422s naming the field."""
    response = await client.post("/webauthor", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["model"] == WebAuthor._meta.label
    assert await WebAuthor.objects.acount() == 0


@pytest.mark.asyncio
async def test_body_that_is_not_an_object_is_422(client: httpx.AsyncClient) -> None:
    """A body that is not JSON, or not an object, is a 422."""
    assert (await client.post("/webauthor", content=b"{nope")).status_code == 422
    assert (await client.post("/webauthor", json=[1, 2])).status_code == 422


@pytest.mark.asyncio
async def test_unique_is_409(client: httpx.AsyncClient) -> None:
    """A unique value held by another record is a 409 naming the field; nothing is written."""
    await WebAuthor.acreate(name="A", email="a@example.com")
    response = await client.post("/webauthor", json={"name": "B", "email": "a@example.com"})
    assert response.status_code == 409
    assert response.json()["error"] == "UniqueConstraintError"
    assert response.json()["field"] == "email"
    assert await WebAuthor.objects.acount() == 1


# -- list: lookups, order, pages ----------------------------------------------------


@pytest.mark.asyncio
async def test_list_filters_with_filter_lookups(client: httpx.AsyncClient) -> None:
    """Query parameters are filter() lookups, cast as filter() casts them."""
    for name, age in [("Harry", 17), ("Hermione", 18), ("Ron", 17), ("Albus", 115)]:
        await WebAuthor.acreate(name=name, age=age)
    names = lambda response: sorted(item["name"] for item in response.json()["items"])  # noqa: E731
    assert names(await client.get("/webauthor?age=17")) == ["Harry", "Ron"]
    assert names(await client.get("/webauthor?name__startswith=H&age__gte=18")) == ["Hermione"]
    assert names(await client.get("/webauthor?name__in=Ron,Albus")) == ["Albus", "Ron"]
    assert names(await client.get("/webauthor?name__in=Ron&name__in=Harry")) == ["Harry", "Ron"]
    assert names(await client.get("/webauthor?age__range=18,200")) == ["Albus", "Hermione"]
    assert names(await client.get("/webauthor?email__isnull=true&age__lt=18")) == ["Harry", "Ron"]
    ordered = await client.get("/webauthor?order=-name")
    assert [item["name"] for item in ordered.json()["items"]] == ["Ron", "Hermione", "Harry", "Albus"]
    assert ordered.json()["next"] is None


@pytest.mark.asyncio
async def test_list_follows_a_pointer(client: httpx.AsyncClient) -> None:
    """A lookup may follow a Pointer (author__name=...), as filter() does."""
    harry = await WebAuthor.acreate(name="Harry")
    await WebBook.acreate(title="Stone", author=harry)
    await WebBook.acreate(title="Orphan")
    response = await client.get("/webbook?author__name=Harry")
    assert [item["title"] for item in response.json()["items"]] == ["Stone"]


@pytest.mark.parametrize(("query", "field"), [
    ("nickname=x", "nickname"),
    ("age__near=3", "age__near"),
    ("age=old", "age"),
    ("age__isnull=maybe", "age__isnull"),
    ("age=1&age=2", "age"),
    ("order=nickname", "nickname"),
    ("order=email", "order"),
    ("limit=0", "limit"),
    ("limit=abc", "limit"),
    ("cursor=garbage", "cursor"),
])
@pytest.mark.asyncio
async def test_bad_queries_are_422_naming_them(client: httpx.AsyncClient, query: str, field: str) -> None:
    """Unknown fields or lookups, bad values, orders and cursors are 422s naming what is wrong."""
    response = await client.get(f"/webauthor?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


@pytest.mark.asyncio
async def test_cursor_of_another_order_is_422(client: httpx.AsyncClient) -> None:
    """A cursor made for one order is refused with another."""
    cursor = write_cursor("name", "A", "00000000-0000-1000-8000-000000000000")
    response = await client.get(f"/webauthor?order=-age&cursor={cursor}")
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


async def _walk(client: httpx.AsyncClient, url: str, between: Any = None) -> list[list[dict[str, Any]]]:
    pages = []
    response = await client.get(url)
    while True:
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next"]
        if cursor is None:
            return pages
        if between is not None:
            await between(len(pages))
        response = await client.get(f"{url.split('?')[0]}?limit=3&cursor={cursor}")


@pytest.mark.asyncio
@pytest.mark.parametrize("order", ["id", "-id", "age", "-age", "name"])
async def test_pages_lose_and_repeat_nothing_while_records_are_added(client: httpx.AsyncClient, order: str) -> None:
    """Walking the pages while records are created between them: every record present from the start
    is seen exactly once, none twice, and each page is in order (ties on the order by id)."""
    original = {str((await WebAuthor.acreate(name=f"n{i % 4}", age=i % 3)).id) for i in range(14)}

    async def add(page: int) -> None:
        for i in range(2):
            await WebAuthor.acreate(name=f"n{(page + i) % 5}", age=(page + i) % 4)

    pages = await _walk(client, f"/webauthor?limit=3&order={order}", add)
    seen = [item["id"] for page in pages for item in page]
    assert len(seen) == len(set(seen))
    assert original <= set(seen)
    assert all(len(page) == 3 for page in pages[:-1])
    field, descending = order.lstrip("-"), order.startswith("-")
    keys = [(item[field], item["id"]) for page in pages for item in page]
    assert keys == sorted(keys, reverse=descending)


@pytest.mark.asyncio
async def test_pages_cut_inside_a_run_of_equal_values(client: httpx.AsyncClient) -> None:
    """When a page ends inside a run of equal values, the next page continues that run by id."""
    ids = sorted([str((await WebAuthor.acreate(name="same", age=5)).id) for _ in range(7)])
    await WebAuthor.acreate(name="other", age=9)
    pages = await _walk(client, "/webauthor?limit=3&order=age")
    assert [[item["id"] for item in page] for page in pages][:2] == [ids[:3], ids[3:6]]
    assert [item["age"] for item in pages[2]] == [5, 9]


@pytest.mark.asyncio
@pytest.mark.parametrize("order", ["pages", "-pages"])
async def test_pages_by_an_unindexed_attribute(client: httpx.AsyncClient, order: str) -> None:
    """An order without an index (sorted in Python, ties in no given order) pages by (value, id) too."""
    books = [await WebBook.acreate(title=f"t{i}", pages=i % 2) for i in range(11)]
    pages = await _walk(client, f"/webbook?limit=3&order={order}")
    keys = [(item["pages"], item["id"]) for page in pages for item in page]
    assert keys == sorted(((book.pages, str(book.id)) for book in books), reverse=order.startswith("-"))


@pytest.mark.asyncio
async def test_cursor_alone_continues_the_order(client: httpx.AsyncClient) -> None:
    """?cursor= without ?order= continues in the order the cursor was made for."""
    for i in range(4):
        await WebAuthor.acreate(name=f"w{i}", age=i)
    first = (await client.get("/webauthor?limit=2&order=-age")).json()
    assert [item["age"] for item in first["items"]] == [3, 2]
    second = (await client.get(f"/webauthor?limit=2&cursor={first['next']}")).json()
    assert [item["age"] for item in second["items"]] == [1, 0]
    assert second["next"] is None


@given(order=st.sampled_from(["age", "-name", "id"]), value=st.one_of(st.integers(), st.text()), pk=st.uuids())
def test_cursor_round_trip(order: str, value: Any, pk: Any) -> None:
    """A cursor gives back the position it was made from, and is opaque URL-safe text."""
    cursor = write_cursor(order, value, pk)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert read_cursor(WebAuthor, cursor, order) == (value, str(pk))


@given(name=st.text(), age=st.integers(-(2**70), 2**70), cover=st.one_of(st.none(), st.binary()))
def test_records_round_trip_through_the_routes(name: str, age: int, cover: bytes | None) -> None:
    """What POST takes, GET gives back (and Redis holds), for any text, integer and bytes."""

    async def exchange() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://test") as http:
            author = (await http.post("/webauthor", json={"name": name, "age": age})).json()
            sent = {"title": name, "pages": age, "author": author["id"],
                    "cover": None if cover is None else base64.b64encode(cover).decode()}
            created = await http.post("/webbook", json=sent)
            assert created.status_code == 201, created.text
            read = (await http.get(f"/webbook/{created.json()['id']}")).json()
            assert read == created.json() == {"id": read["id"], **sent}
            stored = await WebBook.objects.aget(id=read["id"])
            assert (stored.title, stored.pages, stored.cover, str(stored.author.id)) == (
                name, age, cover, author["id"])

    asyncio.run(exchange())


# -- PATCH, If-Match, DELETE ----------------------------------------------------------


@pytest.mark.asyncio
async def test_patch_changes_only_the_given_fields(client: httpx.AsyncClient) -> None:
    """PATCH writes only the attributes in the body: a concurrent writer's change to another survives."""
    harry = await WebAuthor.acreate(name="Harry", age=17)
    stale = await WebAuthor.objects.aget(id=harry.id)

    original_asave = WebAuthor.asave

    async def racing_asave(self: WebAuthor, **kwargs: Any) -> Any:  # between the route's load and save
        stale.age = 40
        await original_asave(stale)
        return await original_asave(self, **kwargs)

    WebAuthor.asave = racing_asave  # type: ignore[method-assign]
    try:
        response = await client.patch(f"/webauthor/{harry.id}", json={"name": "Harry Potter"})
    finally:
        WebAuthor.asave = original_asave  # type: ignore[method-assign]
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Harry Potter"
    stored = await WebAuthor.objects.aget(id=harry.id)
    assert (stored.name, stored.age) == ("Harry Potter", 40)


@pytest.mark.asyncio
async def test_patch_validation_and_missing(client: httpx.AsyncClient) -> None:
    """PATCH of a bad value is a 422 that writes nothing; of a missing id a 404."""
    harry = await WebAuthor.acreate(name="Harry", age=17)
    bad = await client.patch(f"/webauthor/{harry.id}", json={"age": "x", "name": "Changed"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "age"
    assert (await WebAuthor.objects.aget(id=harry.id)).name == "Harry"
    missing = await client.patch("/webauthor/00000000-0000-1000-8000-000000000000", json={"age": 3})
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_versioned_etag_and_if_match(client: httpx.AsyncClient) -> None:
    """Versioned records carry an ETag; PATCH with a stale If-Match is a 409 and writes nothing."""
    created = await client.post("/pages", json={"text": "v1"})
    assert created.headers["etag"] == '"1"'
    pk = created.json()["id"]
    read = await client.get(f"/pages/{pk}")
    assert read.headers["etag"] == '"1"'
    changed = await client.patch(f"/pages/{pk}", json={"text": "v2"}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200
    assert changed.headers["etag"] == '"2"'
    stale = await client.patch(f"/pages/{pk}", json={"text": "v3"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    assert stale.json()["error"] == "ConflictError"
    assert (await WebPage.objects.aget(id=pk)).text == "v2"
    refused = await client.delete(f"/pages/{pk}", headers={"If-Match": '"1"'})
    assert refused.status_code == 409
    assert (await client.delete(f"/pages/{pk}", headers={"If-Match": '"2"'})).status_code == 204


@pytest.mark.asyncio
async def test_versioned_save_race_is_409(client: httpx.AsyncClient) -> None:
    """A versioned record changed between the route's load and its save: the save's own check is a 409."""
    page = await WebPage.acreate(text="v1")
    other = await WebPage.objects.aget(id=page.id)
    original_asave = WebPage.asave

    async def racing_asave(self: WebPage, **kwargs: Any) -> Any:
        other.revisions = 9
        await original_asave(other)
        return await original_asave(self, **kwargs)

    WebPage.asave = racing_asave  # type: ignore[method-assign]
    try:
        response = await client.patch(f"/pages/{page.id}", json={"text": "mine"}, headers={"If-Match": '"1"'})
    finally:
        WebPage.asave = original_asave  # type: ignore[method-assign]
    assert response.status_code == 409
    assert (await WebPage.objects.aget(id=page.id)).text == "v1"


@pytest.mark.asyncio
async def test_if_match_on_unversioned_model_is_422(client: httpx.AsyncClient) -> None:
    """If-Match on a model without versions is refused rather than ignored."""
    harry = await WebAuthor.acreate(name="Harry")
    response = await client.patch(f"/webauthor/{harry.id}", json={"age": 1}, headers={"If-Match": '"1"'})
    assert response.status_code == 422
    assert response.json()["field"] == "If-Match"


@pytest.mark.asyncio
async def test_delete_is_204_and_protect_is_409(client: httpx.AsyncClient) -> None:
    """DELETE answers 204; a PROTECT Pointer's refusal is a 409 naming the referrers, and nothing is deleted."""
    harry = await WebAuthor.acreate(name="Harry")
    book = await WebBook.acreate(title="Stone", author=harry)
    refused = await client.delete(f"/webauthor/{harry.id}")
    assert refused.status_code == 409
    assert refused.json()["error"] == "ProtectedError"
    assert refused.json()["referrers"] == [book._key()]
    assert await WebAuthor.objects.aexists()
    assert (await client.delete(f"/webbook/{book.id}")).status_code == 204
    assert (await client.delete(f"/webauthor/{harry.id}")).status_code == 204
    assert not await WebAuthor.objects.aexists()
    assert (await client.delete(f"/webauthor/{harry.id}")).status_code == 404


# -- permissions and auth ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_permissions_refuse_with_403() -> None:
    """Each can_* callback (sync or async) sees the request and the record or lookups; False is a 403."""
    seen: list[tuple[str, Any]] = []

    def can_read(request: Request, subject: Any) -> bool:
        seen.append(("read", subject))
        return not isinstance(subject, dict) or subject.get("age") != "13"

    async def can_create(request: Request, instance: Any) -> bool:
        return bool(instance.name != "Voldemort")

    def can_modify(request: Request, record: Any) -> bool:
        return bool(record.name != "Dumbledore")

    async def can_delete(request: Request, record: Any) -> bool:
        return request.headers.get("x-role") == "admin"

    app = _app(can_read=can_read, can_create=can_create, can_modify=can_modify, can_delete=can_delete)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        refused = await http.post("/webauthor", json={"name": "Voldemort"})
        assert refused.status_code == 403
        assert refused.json() == {"detail": f"{WebAuthor._meta.label}: create refused for this request",
                                  "error": "PermissionRefusedError", "model": WebAuthor._meta.label,
                                  "action": "create"}
        assert await WebAuthor.objects.acount() == 0
        albus = (await http.post("/webauthor", json={"name": "Dumbledore"})).json()
        assert (await http.patch(f"/webauthor/{albus['id']}", json={"age": 1})).status_code == 403
        assert (await http.get("/webauthor?age=13")).status_code == 403
        assert (await http.get("/webauthor?age=14")).status_code == 200
        assert (await http.get(f"/webauthor/{albus['id']}")).status_code == 200
        assert (await http.delete(f"/webauthor/{albus['id']}")).status_code == 403
        assert (await http.delete(f"/webauthor/{albus['id']}", headers={"x-role": "admin"})).status_code == 204
    assert ("read", {"age": "14"}) in seen
    assert any(getattr(subject, "name", None) == "Dumbledore" for _, subject in seen)


@pytest.mark.asyncio
async def test_bearer_token_dependency() -> None:
    """bearer_token(check) answers 401 without a token check accepts, and keeps check's answer on the request."""

    async def user_for(token: str) -> str | None:
        return TOKENS.get(token)

    def only_alice(request: Request, subject: Any) -> bool:
        return bool(request.state.principal == "alice")

    app = FastAPI()
    app.include_router(crud_routes(WebAuthor, dependencies=[Depends(bearer_token(user_for))], can_create=only_alice))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        missing = await http.get("/webauthor")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/webauthor", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        assert "guess" not in wrong.text
        ok = await http.post("/webauthor", json={"name": "A"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201


# -- OpenAPI, packaging ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    """/openapi.json lists every route of every mounted model, with its methods and the id parameter."""
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for prefix in ("/webauthor", "/webbook", "/pages", "/webshelf"):
        assert set(paths[prefix]) == {"get", "post"}
        assert set(paths[prefix + "/{id}"]) == {"get", "patch", "delete"}
    assert [p["name"] for p in paths["/webauthor/{id}"]["get"]["parameters"]] == ["id"]
    assert {p["name"] for p in paths["/webauthor"]["get"]["parameters"]} == {"limit", "cursor", "order"}
    created = paths["/webauthor"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(created["properties"]) == {"name", "email", "age", "password"}  # no id, no ByteStream
    assert created["required"] == ["name"]
    changed = paths["/webauthor/{id}"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert changed["required"] == []
    assert [p["name"] for p in paths["/pages/{id}"]["patch"]["parameters"]] == ["id", "If-Match"]
    assert "409" in paths["/webauthor/{id}"]["delete"]["responses"]
    json.dumps(document)  # a document any client can read


def test_record_json_is_json_safe_and_drops_bytestreams() -> None:
    """record_json gives JSON-safe values, masks secrets and leaves ByteStreams out."""
    author = WebAuthor(name="A", password="p", notes=b"long")
    out = record_json(author)
    assert out == {"id": None, "name": "A", "email": None, "age": 0, "password": "***"}
    json.dumps(out)


def test_importing_repocket_does_not_import_fastapi() -> None:
    """repocket alone never imports FastAPI; repocket.web without it names the extra to install."""
    code = ("import sys, repocket, repocket.model, repocket.query; assert 'fastapi' not in sys.modules; "
            "sys.modules['fastapi'] = None\n"
            "try:\n    import repocket.web\nexcept ImportError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "repocket[web]" in result.stdout


# -- the requests docs/web.rst shows ------------------------------------------------------


class WebDocAuthor(ActiveRecord):
    name = attributes.Unicode(index=True)
    born = attributes.Integer(index=True)


class WebDocBook(ActiveRecord):
    title = attributes.Unicode()
    author = attributes.Pointer(WebDocAuthor, on_delete=PROTECT)

    class Meta:
        versioned = True


@pytest.mark.asyncio
async def test_the_documented_exchanges() -> None:
    """Each request docs/web.rst shows gets the status, headers and body the page shows."""
    app = FastAPI()
    app.include_router(crud_routes(WebDocAuthor, prefix="/author"))
    app.include_router(crud_routes(WebDocBook, prefix="/books"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        created = await http.post("/author", json={"name": "Ursula K. Le Guin", "born": 1929})
        ursula = created.json()["id"]
        assert (created.status_code, created.headers["location"]) == (201, f"/author/{ursula}")
        assert created.json() == {"id": ursula, "name": "Ursula K. Le Guin", "born": 1929}
        terry = (await http.post("/author", json={"name": "Terry Pratchett", "born": 1948})).json()
        iain = (await http.post("/author", json={"name": "Iain M. Banks", "born": 1954})).json()
        book = await http.post("/books", json={"title": "The Dispossessed", "author": ursula})
        dispossessed = book.json()["id"]
        assert (book.status_code, book.headers["etag"]) == (201, '"1"')
        assert book.json() == {"id": dispossessed, "title": "The Dispossessed", "author": ursula}

        read = await http.get(f"/author/{ursula}")
        assert (read.status_code, read.json()) == (200, created.json())

        listed = await http.get("/author?born__gte=1940&order=-born")
        assert listed.json() == {"items": [iain, terry], "next": None}
        first = (await http.get("/author?order=born&limit=2")).json()
        assert first["items"] == [created.json(), terry]
        assert first["next"].startswith("eyJvIjoiYm9ybiIsInYiOjE5NDgs")
        assert (await http.get(f"/author?cursor={first['next']}&limit=2")).json() == {"items": [iain], "next": None}

        changed = await http.patch(f"/books/{dispossessed}", headers={"If-Match": '"1"'},
                                   json={"title": "The Dispossessed: An Ambiguous Utopia"})
        assert (changed.status_code, changed.headers["etag"]) == (200, '"2"')
        assert changed.json() == {"id": dispossessed, "title": "The Dispossessed: An Ambiguous Utopia",
                                  "author": ursula}
        stale = await http.patch(f"/books/{dispossessed}", headers={"If-Match": '"1"'}, json={"title": "x"})
        assert stale.status_code == 409
        assert stale.json()["error"] == "ConflictError"
        assert "If-Match names version 1, but the stored version is 2; nothing was written." in stale.json()["detail"]

        protected = await http.delete(f"/author/{ursula}")
        assert protected.status_code == 409
        body = protected.json()
        assert (body["error"], body["model"], body["field"]) == ("ProtectedError", WebDocBook._meta.label, "author")
        assert body["referrers"] == [WebDocBook._meta.key(dispossessed)]
        assert "(on_delete=PROTECT) points at it from" in body["detail"]

        unknown = await http.get("/author?born__near=3")
        assert (unknown.status_code, unknown.json()["error"], unknown.json()["field"]) == (
            422, "UnknownFieldError", "born__near")
        text = await http.post("/author", json={"name": "X", "born": "1929"})
        assert (text.status_code, text.json()["error"], text.json()["field"]) == (422, "ValidationError", "born")
