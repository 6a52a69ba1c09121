"""The examples of docs/async.rst run as written against a real Redis."""

from __future__ import annotations

import asyncio
import sys
import types
import uuid
from pathlib import Path

import pytest

from repocket.connections import configure
from tests.functional.test_readme import ROOT, _run_examples

PAGE = ROOT / "docs" / "async.rst"
FASTAPI_HEADING = "A FastAPI application"


def _fastapi_example() -> str:
    """The source of the page's FastAPI application: the first code-block under its heading."""
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    start = lines.index(FASTAPI_HEADING)
    start = next(i for i in range(start, len(lines)) if lines[i].strip() == ".. code-block:: python") + 1
    body: list[str] = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        body.append(line[3:])
    return "\n".join(body).strip() + "\n"


def test_async_page_examples_give_the_output_shown(repocket_connection):
    """Every ``>>>`` example of the asyncio page (coroutines run by ``asyncio.run``) prints what it shows."""
    result = _run_examples(PAGE, "__main__")
    assert result.attempted >= 20, "docs/async.rst lost its examples"


def test_fastapi_example_compiles():
    """The FastAPI application on the page is valid Python (it runs only where FastAPI is installed)."""
    source = _fastapi_example()
    assert "await configure.aembedded(" in source and "async for" in source
    compile(source, str(PAGE), "exec")


def test_fastapi_example_serves_requests(tmp_path: Path):
    """The page's FastAPI application answers 201, 200, 404, 409 and 422 as the page says."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")

    source = _fastapi_example()
    data = f"path={str(tmp_path / 'data')!r}"
    assert 'path=".repocket"' in source
    module = types.ModuleType("async_docs_app")
    sys.modules[module.__name__] = module

    async def requests() -> None:
        app = module.app
        transport = httpx.ASGITransport(app=app)
        # The lifespan starts a real embedded server; httpx's transport does not run it by itself.
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://docs.test") as client:
            ada = {"email": "ada@example.org", "name": "Ada", "age": 36}
            created = await client.post("/users", json=ada)
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            assert (await client.post("/users", json={**ada, "email": "a2@example.org", "age": "old"})).status_code == 422
            assert (await client.post("/users", json={"wand": "holly"})).status_code == 422
            assert (await client.post("/users", json={**ada, "name": "Ada again"})).status_code == 409
            alan = {"email": "alan@example.org", "name": "Alan", "age": 41}
            assert (await client.post("/users", json=alan)).status_code == 201
            got = await client.get(f"/users/{user_id}")
            assert got.status_code == 200 and got.json()["name"] == "Ada"
            assert (await client.get(f"/users/{uuid.uuid4()}")).status_code == 404
            assert (await client.get("/users/not-an-id")).status_code == 422
            listed = await client.get("/users", params={"limit": 1})
            assert [user["name"] for user in listed.json()] == ["Alan"]
            listed = await client.get("/users", params={"offset": 1})
            assert [user["name"] for user in listed.json()] == ["Ada"]
            assert (await client.get("/users", params={"offset": -1})).status_code == 422

    try:
        exec(compile(source.replace('path=".repocket"', data), str(PAGE), "exec"), module.__dict__)
        asyncio.run(requests())
    finally:
        sys.modules.pop(module.__name__, None)
        configure.reset()
