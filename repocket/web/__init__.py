"""REST routes for repocket models, on FastAPI (the optional ``repocket[web]`` extra).

::

    from fastapi import FastAPI
    from repocket.web import crud_routes

    app = FastAPI()
    app.include_router(crud_routes(Book))

``crud_routes(Model)`` mounts list, read, create, partial update and delete
routes for one model, async throughout; see ``docs/web.rst``. Importing
:mod:`repocket` never imports FastAPI: only this package does.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "repocket.web needs FastAPI: install the web extra, pip install 'repocket[web]'"
    ) from exc

from repocket.web.auth import bearer_token
from repocket.web.errors import PermissionRefusedError, error_response
from repocket.web.routes import crud_routes

__all__ = ["PermissionRefusedError", "bearer_token", "crud_routes", "error_response"]
