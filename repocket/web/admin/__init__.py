"""A server-rendered HTML admin for repocket models: ``admin_app([Author, Book])``; see ``docs/admin.rst``.

::

    from fastapi import FastAPI
    from repocket.web.admin import admin_app

    app = FastAPI()
    app.mount("/admin", admin_app([Author, Book], dependencies=[Depends(your_login)]))

Or ``repocket admin MODULE`` to run it on 127.0.0.1 (:mod:`repocket.web.admin.serve`).
It needs FastAPI and Jinja2; nothing is loaded from another host.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("repocket.web.admin needs Jinja2: pip install 'repocket[web]' jinja2") from exc

from repocket.web.admin.app import admin_app

__all__ = ["admin_app"]
