"""An auth hook: a FastAPI dependency that checks a bearer token with a callable of yours.

::

    async def user_for(token: str) -> str | None:   # or a plain def; a JWT decoder fits here too
        return TOKENS.get(token)

    app.include_router(crud_routes(Book, dependencies=[Depends(bearer_token(user_for))]))

The callable's answer (anything but None or False) is kept on
``request.state.principal``, where the ``can_*`` callbacks of
:func:`repocket.web.crud_routes` can read it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request

__all__ = ["bearer_token"]

#: What :func:`bearer_token` calls: the token -> the principal, or None/False to refuse (sync or async).
TokenCheck = Callable[[str], Any | Awaitable[Any]]


def bearer_token(check: TokenCheck) -> Callable[[Request], Awaitable[Any]]:
    """A dependency refusing (401) requests without an ``Authorization: Bearer <token>`` that ``check`` accepts.

    The 401 carries ``WWW-Authenticate: Bearer`` and never repeats the token.
    """

    async def dependency(request: Request) -> Any:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = check(token.strip())
            if inspect.isawaitable(principal):
                principal = await principal
        if principal is None or principal is False:
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        return principal

    return dependency
