"""The tutorial's models over HTTP: REST routes (repocket.web) and the admin pages, in one app.

Run against the server the demo wrote to (docs/cli.rst shows how to keep its data)::

    REDIS_URL=redis://... python examples/rest_api.py      # then open http://127.0.0.1:8000/admin/

The REST API is at /user, /project and /build, described at /openapi.json.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from tutorial import Build, Project, User  # examples/tutorial.py, next to this file

from repocket.connections import configure
from repocket.web import crud_routes
from repocket.web.admin import admin_app

app = FastAPI(title="The tutorial's models")
for model in (User, Project, Build):
    app.include_router(crud_routes(model))
app.mount("/admin", admin_app([User, Project, Build], title="Tutorial admin"))


def main() -> None:
    import uvicorn

    configure.connection_pool(url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    uvicorn.run(app, host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
