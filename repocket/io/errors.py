"""The one place where redis-py's errors become repocket's.

Executors call :func:`wrap_redis_error` for every failed round, and the error
goes back into the plan that asked (which may catch it) or to the caller:

- a lost or refused connection: :exc:`~repocket.errors.RedisConnectionError`;
- refused credentials: :exc:`~repocket.errors.RedisAuthenticationError`, which
  says how to fix them and never quotes anything that could hold the password;
- ``WRONGTYPE`` on a known key: :exc:`~repocket.errors.CorruptRecordError` naming it;
- anything else Redis refuses: :exc:`~repocket.errors.RepocketError` naming
  the model and the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import AuthenticationError as RedisPyAuthenticationError
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["wrap_redis_error"]


def wrap_redis_error(exc: BaseException, label: str | ModelOptions | None, key: str | None) -> errors.RepocketError:
    """The repocket error for a redis-py error met while working on ``key`` for ``label``."""
    if isinstance(exc, errors.RepocketError):
        return exc
    where = f" ({key})" if key else ""
    if isinstance(exc, RedisPyAuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))
    ):
        return _authentication_error(exc, where)
    if isinstance(exc, (RedisPyConnectionError, RedisPyTimeoutError)):
        return errors.RedisConnectionError(f"Redis is unreachable{where}: {exc}")
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE") and key:
        return errors.CorruptRecordError(f"{key} holds the wrong type of Redis value: {exc}", key=key)
    name: Any = getattr(label, "label", label) or "repocket"
    return errors.RepocketError(f"{name}: Redis refused a command{where}: {exc}")


def _authentication_error(exc: BaseException, where: str) -> errors.RedisAuthenticationError:
    """Redis refused the credentials. Says which way and how to fix it; never the password.

    Redis's own reply is not quoted: what it says is summed up here, and a
    message built from the connection's settings could carry the password.
    """
    text = str(exc)
    lowered = text.lower()  # NOAUTH's text: "... required", or HELLO's "... already authenticated ..."
    if text.startswith("NOAUTH") or "required" in lowered or "authenticated" in lowered:
        reason = "the server needs a password and none was sent"
    else:
        reason = "wrong password or user name (or the user is disabled)"
    return errors.RedisAuthenticationError(
        f"Redis refused the credentials{where}: {reason}. Fix the password and user name in "
        "the URL (redis://user:password@host:port/db) or in configure.connection_pool("
        "username=..., password=...)"
    )
