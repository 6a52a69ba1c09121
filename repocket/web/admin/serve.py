"""Running the admin on uvicorn: ``repocket admin MODULE`` calls :func:`serve_admin`.

:func:`running` serves an app on a free loopback port in a thread of its own,
for tests and notebooks. uvicorn comes with the ``admin`` extra.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from repocket.model import ActiveRecord

__all__ = ["running", "serve", "serve_admin"]


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("serving the admin needs uvicorn: pip install 'repocket[admin]'") from exc
    return uvicorn


def serve_admin(models: Sequence[type[ActiveRecord]], *, host: str = "127.0.0.1", port: int = 8000,
                title: str = "repocket admin") -> None:
    """Serve ``admin_app(models)`` on ``host:port`` until interrupted (Ctrl-C)."""
    from repocket.web.admin import admin_app

    serve(admin_app(models, title=title), host=host, port=port)


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the ASGI ``app`` on uvicorn until interrupted."""
    _uvicorn().run(app, host=host, port=port)


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on uvicorn in a thread (its own event loop), on a free port; yields its URL.

    Raises:
        TimeoutError: the server did not start within ``timeout`` seconds.
    """
    uvicorn = _uvicorn()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="repocket-admin", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise TimeoutError(f"uvicorn did not start serving on {host} within {timeout} s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
