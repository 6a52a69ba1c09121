"""repocket.web.admin: the HTML pages of admin_app(), through httpx's ASGI transport, on a real Redis."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors
from repocket.attributes import CASCADE, PROTECT, SET_NULL, UNLINK
from repocket.web.admin import admin_app, pages, reads
from repocket.web.admin.forms import form_fields, form_values
from repocket.web.admin.serve import running

pytestmark = pytest.mark.usefixtures("repocket_connection")


class AdminAuthor(ActiveRecord):
    name = attributes.Unicode(index=True)
    age = attributes.Integer(index=True, default=0)
    password = attributes.Unicode(secret=True, null=True)
    notes = attributes.ByteStream()

    class Meta:
        changes = True
        history = 5


class AdminBook(ActiveRecord):
    title = attributes.Unicode(index=True)
    author = attributes.Pointer(AdminAuthor, null=True, on_delete=PROTECT, related_name="books")
    meta = attributes.JSON(null=True)


class AdminFan(ActiveRecord):
    author = attributes.Pointer(AdminAuthor, on_delete=CASCADE, related_name="fans")
    nick = attributes.Unicode(index=True)


class AdminReview(ActiveRecord):
    author = attributes.Pointer(AdminAuthor, null=True, on_delete=SET_NULL, related_name="reviews")
    stars = attributes.Integer(default=3)


class AdminShelf(ActiveRecord):
    books = attributes.PointerList(AdminBook, on_delete=UNLINK, related_name="shelves")


MODELS = [AdminAuthor, AdminBook, AdminFan, AdminReview, AdminShelf]


def _token(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = admin_app(MODELS, title="Test admin", secret="test-secret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


@pytest.mark.needs_server("fakeredis has no MEMORY USAGE")
@pytest.mark.asyncio
async def test_index_lists_models_with_counts_and_sampled_memory(client: httpx.AsyncClient) -> None:
    """The models page gives each model's record count and the mean MEMORY USAGE of sampled records."""
    for name in ("Ada", "Grace"):
        await AdminAuthor.objects.acreate(name=name)
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    page = response.text
    row = re.search(r'href="/adminauthor">AdminAuthor</a>.*?</tr>', page, re.S)
    assert row and '<td class="num">2</td>' in row.group(0)
    per_record = re.findall(r'<td class="num">([\d,]+)</td>', row.group(0))
    assert len(per_record) == 2 and int(per_record[1].replace(",", "")) > 0  # count, bytes/record
    assert "history (5)" in row.group(0)


@pytest.mark.asyncio
async def test_index_goes_on_without_memory_where_memory_usage_is_refused(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server (or ACL) refusing MEMORY USAGE leaves the column empty; the counts are still shown."""
    def refused(meta: object) -> Iterator[object]:
        raise errors.PermissionDeniedError("NOPERM MEMORY", model="AdminAuthor", command="MEMORY")
        yield

    monkeypatch.setattr(reads, "bytes_per_record", refused)
    await AdminAuthor.objects.acreate(name="Ada")
    response = await client.get("/")
    assert response.status_code == 200
    row = re.search(r'href="/adminauthor">AdminAuthor</a>.*?</tr>', response.text, re.S)
    assert row and '<td class="num">1</td>' in row.group(0) and '<td class="num">–</td>' in row.group(0)


@pytest.mark.asyncio
async def test_list_filters_by_index_sorts_and_pages(client: httpx.AsyncClient) -> None:
    """A list filters by lookups, orders by a column and continues by its keyset cursor."""
    for number in range(5):
        await AdminAuthor.objects.acreate(name=f"a{number}", age=number)
    page = (await client.get("/adminauthor", params={"age__gte": "2", "order": "-age", "limit": "2"})).text
    assert "3 AdminAuthor records match" in page
    assert re.findall(r"<td>a(\d)</td>", page) == ["4", "3"]
    next_link = re.search(r'href="(/adminauthor\?[^"]*cursor=[^"]+)" rel="next"', page)
    assert next_link
    second = (await client.get(html.unescape(next_link.group(1)))).text
    assert "<td>a2</td>" in second and "<td>a4</td>" not in second and 'rel="next"' not in second


@pytest.mark.asyncio
async def test_free_lookup_box_and_a_bad_filter_shown_at_its_input(client: httpx.AsyncClient) -> None:
    """The free lookup box adds a lookup; a refused filter is a 422 with the message at its input."""
    await AdminAuthor.objects.acreate(name="Ada", age=36)
    await AdminAuthor.objects.acreate(name="Bob", age=20)
    page = (await client.get("/adminauthor", params={"_lookup": "age__gt=30"})).text
    assert "<td>Ada</td>" in page and "<td>Bob</td>" not in page
    assert 'id="filter-age__gt" name="age__gt" value="30"' in page  # shown as a filter of its own
    assert 'name="_lookup" placeholder="field__lookup=value" value=""' in page  # (not twice)
    no_equals = await client.get("/adminauthor", params={"_lookup": "age__gt"})
    assert no_equals.status_code == 422 and 'id="error-_lookup"' in no_equals.text
    bad = await client.get("/adminauthor", params={"age": "old"})
    assert bad.status_code == 422
    assert re.search(r'id="filter-age"[^>]*aria-invalid="true"', bad.text)
    assert 'id="error-age"' in bad.text and "AdminAuthor" in bad.text
    secret = await client.get("/adminauthor", params={"password": "x"})
    assert secret.status_code == 422 and "secret attributes cannot be filtered" in secret.text


@pytest.mark.asyncio
async def test_record_page_types_links_both_ways_history_changes_and_no_secret(client: httpx.AsyncClient) -> None:
    """A record's page shows types, Pointers both ways, the stream's tail, history and changes, never a secret."""
    ada = await AdminAuthor.objects.acreate(name="Ada", password="hunter2")
    await ada.aappend_notes(b"line one\n")
    book = await AdminBook.objects.acreate(title="Notes", author=ada)
    ada.age = 37
    await ada.asave()
    page = (await client.get(f"/adminauthor/{ada.pk}")).text
    assert "hunter2" not in page and "***" in page
    assert "<code>Integer</code>" in page and "secret" in page
    assert f'href="/adminbook/{book.pk}"' in page  # reverse accessor: books
    assert f'href="/adminbook?author={ada.pk}"' in page
    assert "line one" in page and f'data-tail-url="/adminauthor/{ada.pk}/stream/notes"' in page
    assert re.search(r"<td class=\"num\">3</td><td>update</td>", page)  # history: create, append, update
    assert "Recent changes" in page and "<code>age</code> = 37" in page
    book_page = (await client.get(f"/adminbook/{book.pk}")).text
    assert f'href="/adminauthor/{ada.pk}"' in book_page  # the Pointer, forwards


@pytest.mark.asyncio
async def test_stream_tail_endpoint_reads_on_from_an_offset(client: httpx.AsyncClient) -> None:
    """The tail endpoint gives a ByteStream's bytes from an offset, for the live view to append."""
    ada = await AdminAuthor.objects.acreate(name="Ada")
    await ada.aappend_notes(b"abc")
    first = (await client.get(f"/adminauthor/{ada.pk}/stream/notes")).json()
    assert first == {"offset": 0, "next": 3, "length": 3, "text": "abc"}
    await ada.aappend_notes(b"def")
    assert (await client.get(f"/adminauthor/{ada.pk}/stream/notes", params={"offset": 3})).json()["text"] == "def"
    missing = await client.get(f"/adminauthor/{ada.pk}/stream/name")
    assert missing.status_code == 422


@pytest.mark.asyncio
async def test_edit_saves_and_a_refused_value_is_shown_at_its_field(client: httpx.AsyncClient) -> None:
    """A refused value is shown at its field with the text kept; an empty secret input keeps the secret."""
    ada = await AdminAuthor.objects.acreate(name="Ada", password="hunter2")
    form = (await client.get(f"/adminauthor/{ada.pk}/edit")).text
    assert "hunter2" not in form
    token = _token(form)
    bad = await client.post(f"/adminauthor/{ada.pk}/edit", data={"csrf": token, "name": "Ada", "age": "old"})
    assert bad.status_code == 422
    assert re.search(r'id="input-age"[^>]*aria-invalid="true"', bad.text)
    assert re.search(r'<p class="error" id="error-age">[^<]*AdminAuthor\.age: [^<]*whole number', bad.text)
    assert 'value="old"' in bad.text  # the text given is kept for correcting
    ok = await client.post(f"/adminauthor/{ada.pk}/edit", data={"csrf": token, "name": "Ada L.", "age": "36",
                                                                  "password": ""})
    assert ok.status_code == 303 and ok.headers["location"] == f"/adminauthor/{ada.pk}?done=saved"
    stored = await AdminAuthor.objects.aget(ada.pk)
    assert (stored.name, stored.age, stored.password) == ("Ada L.", 36, "hunter2")  # empty secret: kept


@pytest.mark.asyncio
async def test_post_without_the_csrf_token_is_refused_and_writes_nothing(client: httpx.AsyncClient) -> None:
    """A POST without the app's CSRF token is a 403 and writes nothing."""
    ada = await AdminAuthor.objects.acreate(name="Ada")
    response = await client.post(f"/adminauthor/{ada.pk}/edit", data={"name": "Mallory"})
    assert response.status_code == 403 and "CSRF" in response.text
    assert (await client.post(f"/adminauthor/{ada.pk}/delete", data={"csrf": "0" * 64})).status_code == 403
    assert (await AdminAuthor.objects.aget(ada.pk)).name == "Ada"


@pytest.mark.asyncio
async def test_create_with_a_pointer_id_and_a_missing_target_at_the_field(client: httpx.AsyncClient) -> None:
    """A new record's Pointer is a target id; a missing target or bad JSON is shown at its field."""
    ada = await AdminAuthor.objects.acreate(name="Ada")
    token = _token((await client.get("/adminbook/new")).text)
    missing = await client.post("/adminbook/new", data={"csrf": token, "title": "X", "author": str(ada.pk)[:-1] + "0",
                                                        "meta": ""})
    assert missing.status_code == 422 and 'id="error-author"' in missing.text
    bad_json = await client.post("/adminbook/new", data={"csrf": token, "title": "X", "author": "", "meta": "{"})
    assert bad_json.status_code == 422 and 'id="error-meta"' in bad_json.text
    made = await client.post("/adminbook/new", data={"csrf": token, "title": "X", "author": str(ada.pk),
                                                     "meta": '{"a": [1]}'})
    assert made.status_code == 303
    book = await AdminBook.objects.aget(title="X")
    assert book.author.pk == ada.pk and book.meta == {"a": [1]}


@pytest.mark.asyncio
async def test_delete_preview_names_cascade_set_null_and_protect(client: httpx.AsyncClient) -> None:
    """The delete page names what CASCADE deletes, SET_NULL changes and PROTECT refuses, before any write."""
    ada = await AdminAuthor.objects.acreate(name="Ada")
    fan = await AdminFan.objects.acreate(author=ada, nick="fan")
    review = await AdminReview.objects.acreate(author=ada)
    page = (await client.get(f"/adminauthor/{ada.pk}/delete")).text
    assert f'href="/adminfan/{fan.pk}"' in page and "CASCADE" in page
    assert f'href="/adminreview/{review.pk}"' in page and "set to None" in page
    assert "Yes, delete it" in page
    book = await AdminBook.objects.acreate(title="Notes", author=ada)
    refused = (await client.get(f"/adminauthor/{ada.pk}/delete")).text
    assert "would be refused" in refused and f'href="/adminbook/{book.pk}"' in refused
    assert "Yes, delete it" not in refused
    posted = await client.post(f"/adminauthor/{ada.pk}/delete", data={"csrf": _token(page)})
    assert posted.status_code == 409 and "Refused." in posted.text
    assert await AdminAuthor.objects.filter(pk=ada.pk).acount() == 1
    await book.adelete()
    done = await client.post(f"/adminauthor/{ada.pk}/delete", data={"csrf": _token(page)})
    assert done.status_code == 303
    assert await AdminFan.objects.acount() == 0 and (await AdminReview.objects.aget(review.pk)).author is None


@pytest.mark.asyncio
async def test_delete_preview_names_the_lists_unlink_drops_it_from(client: httpx.AsyncClient) -> None:
    """The delete page names the PointerLists UNLINK would drop the record from."""
    book = await AdminBook.objects.acreate(title="Notes")
    shelf = await AdminShelf.objects.acreate(books=[book])
    page = (await client.get(f"/adminbook/{book.pk}/delete")).text
    assert f'href="/adminshelf/{shelf.pk}"' in page and "<code>books</code> unlinked from (UNLINK)" in page
    shelf_page = (await client.get(f"/adminshelf/{shelf.pk}")).text
    assert f'href="/adminbook/{book.pk}"' in shelf_page  # a PointerList's targets, as links
    assert (await client.post(f"/adminbook/{book.pk}/delete", data={"csrf": _token(page)})).status_code == 303
    assert (await AdminShelf.objects.aget(shelf.pk)).books == []


@pytest.mark.asyncio
async def test_check_and_repair_after_confirmation(client: httpx.AsyncClient, redis: object) -> None:
    """The check page reports a missing entry; repair runs only after its confirmation form is posted."""
    ada = await AdminAuthor.objects.acreate(name="Ada")
    assert "Consistent" in (await client.get("/adminauthor/check")).text
    redis.srem(AdminAuthor._meta.for_pk(ada.pk).ids_key, str(ada.pk))  # type: ignore[attr-defined]
    report = (await client.get("/adminauthor/check")).text
    assert "Missing entries (1)" in report and 'href="/adminauthor/repair"' in report
    confirm = (await client.get("/adminauthor/repair")).text
    assert "Yes, repair" in confirm
    assert (await AdminAuthor.objects.acheck()).ok is False  # (asking wrote nothing)
    repaired = await client.post("/adminauthor/repair", data={"csrf": _token(confirm)})
    assert repaired.status_code == 200 and "Repaired: 1 problem" in repaired.text and "Consistent" in repaired.text
    assert (await AdminAuthor.objects.acheck()).ok


@pytest.mark.asyncio
async def test_permissions_and_unknown_pages(client: httpx.AsyncClient) -> None:
    """A can_* callback that says no is a 403 page; unknown models and ids are 404 and 422 pages."""
    ada = await AdminAuthor.objects.acreate(name="Ada")
    app = admin_app(MODELS, can_modify=lambda request, record: False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        token = _token((await http.get(f"/adminauthor/{ada.pk}/edit")).text)
        refused = await http.post(f"/adminauthor/{ada.pk}/edit", data={"csrf": token, "name": "Eve"})
        assert refused.status_code == 403
    assert (await client.get("/nosuchmodel")).status_code == 404
    assert (await client.get("/adminauthor/not-a-uuid")).status_code == 422
    assert (await client.get(f"/adminbook/{ada.pk}")).status_code == 404
    assert (await client.get("/_static/admin.js")).headers["content-type"].startswith("text/javascript")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=30),  # (CR: see forms)
       age=st.integers(-10**12, 10**12), meta=st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                                                    st.integers(), max_size=3)))
def test_form_text_round_trips(name: str, age: int, meta: dict[str, int] | None) -> None:
    """A record's form, submitted unchanged, gives back its values (no Redis needed)."""
    author = AdminAuthor(name=name, age=age)
    submitted = {field.name: field.text for field in form_fields(AdminAuthor, author)}
    assert form_values(AdminAuthor, submitted) == {"name": name, "age": age}
    book = AdminBook(title=name, meta=meta)
    texts = {field.name: field.text for field in form_fields(AdminBook, book)}
    assert form_values(AdminBook, texts) == {"title": name, "author": None, "meta": meta}


def test_running_serves_the_admin_over_http() -> None:
    """``running()`` serves the app on uvicorn on a free port: its files, and its refusal of a POST without the token."""
    with running(admin_app(MODELS)) as url:
        css = httpx.get(f"{url}/_static/admin.css", timeout=10)
        assert css.status_code == 200 and "--focus" in css.text
        refused = httpx.post(f"{url}/adminauthor/new", data={"name": "x"}, timeout=10)
        assert refused.status_code == 403


class AdminStamp(ActiveRecord):
    """Bytes, which a record's page shows as text where they decode (people read it), else as base64."""

    mark = attributes.Bytes()
    latin = attributes.Bytes(encoding="latin-1", null=True)


def test_bytes_show_as_their_text_where_they_decode_else_as_base64() -> None:
    stamp = AdminStamp(mark=b"ron@hogwarts.uk", latin="café".encode("latin-1"))
    shown = {cell.name: cell.text for cell in pages.cells(stamp, lambda model, pk: None)}
    assert shown["mark"] == "ron@hogwarts.uk" and shown["latin"] == "café"
    stamp.mark = b"\xff\xfe"
    shown = {cell.name: cell.text for cell in pages.cells(stamp, lambda model, pk: None)}
    assert shown["mark"] == "//4= (base64)"
