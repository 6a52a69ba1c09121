"""Where repocket's exceptions become HTTP responses: the one mapping every route uses.

Each route of :func:`repocket.web.crud_routes` runs inside :class:`ErrorMappingRoute`,
which turns the exceptions of :data:`STATUS` (and FastAPI's own request
validation errors) into a JSON body ``{"detail": ..., "error": ..., "model": ...,
"field": ...}``. The ``detail`` is the exception's message, which repocket
writes with secret values masked; the offending value itself is never echoed.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from repocket import errors

__all__ = ["STATUS", "ErrorMappingRoute", "PermissionRefusedError", "error_response"]


class PermissionRefusedError(errors.RepocketError, PermissionError):
    """A ``can_*`` callback of :func:`repocket.web.crud_routes` said no: the request is answered 403."""

    def __init__(self, message: str, *, model: str, action: str) -> None:
        super().__init__(message)
        self.model, self.action = model, action


#: Exception class -> HTTP status, most specific first (the first ``isinstance`` match wins).
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (PermissionRefusedError, 403),
    (errors.DoesNotExist, 404),
    (errors.ValidationError, 422),
    (errors.UnknownFieldError, 422),
    (errors.UnsavedReferenceError, 422),
    (errors.UniqueConstraintError, 409),
    (errors.ConflictError, 409),
    (errors.ProtectedError, 409),
    (errors.CrossPartitionError, 409),
    (errors.RedisConnectionError, 503),
)


def error_response(exc: Exception) -> JSONResponse | None:
    """The response for ``exc``, or None when it is not one the routes answer (a bug: let it raise)."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse(status_code=422, content={
            "detail": f"{where}: {first.get('msg', 'invalid request')}", "error": "RequestValidationError",
            "field": str(first.get("loc", ("",))[-1])})
    for cls, status in STATUS:
        if isinstance(exc, cls):
            body: dict[str, Any] = {"detail": str(exc), "error": type(exc).__name__}
            for name in ("model", "field", "action"):
                if getattr(exc, name, None) is not None:
                    body[name] = getattr(exc, name)
            if isinstance(exc, errors.DoesNotExist):
                body["error"] = "DoesNotExist"  # (not the per-model subclass's qualified name)
            if isinstance(exc, errors.ProtectedError):
                body["referrers"] = exc.referrers
            return JSONResponse(status_code=status, content=body)
    return None


class ErrorMappingRoute(APIRoute):
    """An APIRoute whose handler answers repocket's errors with :func:`error_response`.

    A route class rather than app-level exception handlers, so that a router
    mounted in any app maps its errors the same way without the app doing anything.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def mapped(request: Request) -> Response:
            try:
                return await handler(request)
            except (errors.RepocketError, RequestValidationError) as exc:
                response = error_response(exc)
                if response is None:
                    raise
                return response

        return mapped
