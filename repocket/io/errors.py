"""The one place where redis-py's errors become repocket's.

Executors call :func:`wrap_redis_error` for every failed round, and the error
goes back into the plan that asked (which may catch it) or to the caller:

- a lost or refused connection: :exc:`~repocket.errors.RedisConnectionError`;
- refused credentials: :exc:`~repocket.errors.RedisAuthenticationError`, which
  says how to fix them and never quotes anything that could hold the password;
- a failed TLS handshake: :exc:`~repocket.errors.RedisConnectionError` saying
  which side's certificate was refused and which option fixes it;
- ``NOPERM`` (the ACL user may not run the command or use the key), sent by
  repocket or met inside one of its scripts:
  :exc:`~repocket.errors.PermissionDeniedError` naming the model, the command
  and the key;
- ``WRONGTYPE`` on a known key: :exc:`~repocket.errors.CorruptRecordError` naming it;
- anything else Redis refuses: :exc:`~repocket.errors.RepocketError` naming
  the model and the key.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from redis.exceptions import AuthenticationError as RedisPyAuthenticationError
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import NoPermissionError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors
from repocket.plan.rounds import SCRIPT_READ

if TYPE_CHECKING:
    from collections.abc import Sequence

    from repocket.options import ModelOptions

__all__ = ["command_name", "wrap_redis_error"]


#: What Redis says when a script's command is refused by the ACL (no ``NOPERM`` prefix before Redis 7.2).
_SCRIPT_NOPERM = "The user executing the script can't"
#: What a TLS connection that the server closed or reset adds to its error.
_CLOSED_HINT = ("; over TLS, this is also how a server that requires a client certificate (tls-auth-clients) "
                "refuses a connection without a valid one: give ssl_certfile= and ssl_keyfile=")
#: OpenSSL's words when the server refused the client's certificate, or required one and got none.
_CLIENT_CERT_REFUSED = ("CERTIFICATE_REQUIRED", "certificate required", "UNKNOWN_CA", "unknown ca",
                        "BAD_CERTIFICATE", "bad certificate", "HANDSHAKE_FAILURE")


def wrap_redis_error(exc: BaseException, label: str | ModelOptions | None, key: str | None,
                     command: str | None = None, *, tls: bool = False) -> errors.RepocketError:
    """The repocket error for a redis-py error met while sending ``command`` on ``key`` for ``label``.

    ``tls``: the client connects with TLS, so a connection the server closed
    or reset may be its refusal of the client's certificate (TLS 1.3 sends
    that refusal after the client's first command, which may then meet a
    reset instead of the alert).
    """
    if isinstance(exc, errors.RepocketError):
        return exc
    where = f" ({key})" if key else ""
    name: Any = getattr(label, "label", label) or "repocket"
    if isinstance(exc, RedisPyAuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))
    ):
        return _authentication_error(exc, where)
    if isinstance(exc, NoPermissionError) or (
        isinstance(exc, ResponseError) and ("NOPERM" in str(exc) or _SCRIPT_NOPERM in str(exc))
    ):
        return _permission_error(exc, str(name), key, command)
    if isinstance(exc, (RedisPyConnectionError, RedisPyTimeoutError)):
        refused = _tls_error(exc, where)
        if refused is not None:
            return refused
        closed = isinstance(exc.__context__, (ConnectionError, EOFError)) or "closed by server" in str(exc)
        hint = _CLOSED_HINT if tls and closed else ""
        return errors.RedisConnectionError(f"Redis is unreachable{where}: {exc}{hint}")
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE") and key:
        return errors.CorruptRecordError(f"{key} holds the wrong type of Redis value: {exc}", key=key)
    return errors.RepocketError(f"{name}: Redis refused a command{where}: {exc}")


def command_name(args: Sequence[Any]) -> str:
    """How errors name a command: ``HGETALL``, or ``EVAL <script>.lua`` for a read-only script call."""
    if args and args[0] == SCRIPT_READ:
        return f"EVAL {args[1]}.lua"
    return str(args[0]).upper() if args else "a command"


def _permission_error(exc: BaseException, model: str, key: str | None,
                      command: str | None) -> errors.PermissionDeniedError:
    """The ACL user may not run ``command`` (or a command of its script) or use one of its keys."""
    what = f"{command} on {key}" if command and key else command or key or "a command"
    return errors.PermissionDeniedError(
        f"{model}: the Redis user may not run {what}: {exc}. Grant the user the commands repocket needs "
        "and the model's key prefix (ACL SETUSER ... ~repocket:<namespace>:*), or use another user",
        model=model, command=command, key=key,
    )


def _tls_error(exc: BaseException, where: str) -> errors.RedisConnectionError | None:
    """A clearer error for a failed TLS handshake (redis-py keeps the ``ssl`` error as the context), else None."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return errors.RedisConnectionError(
            f"TLS: Redis's certificate was not accepted{where}: {cause.verify_message}. Give the CA that "
            "signed it as ssl_ca_certs=, or ssl_cert_reqs=\"none\" to skip the check (then anyone on the "
            "path can pose as the server)"
        )
    if not isinstance(cause, ssl.SSLError):
        return None
    if any(word in str(cause) for word in _CLIENT_CERT_REFUSED):
        return errors.RedisConnectionError(
            f"TLS: Redis refused the client certificate{where}: it requires one signed by a CA it trusts "
            f"(tls-auth-clients); give ssl_certfile= and ssl_keyfile= ({cause})"
        )
    if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # closed before its alert was read
        return errors.RedisConnectionError(
            f"TLS: Redis closed the connection at the handshake{where}, as a server that requires a client "
            f"certificate (tls-auth-clients) does without a valid one: give ssl_certfile= and ssl_keyfile= ({cause})"
        )
    return errors.RedisConnectionError(f"TLS: the connection to Redis failed{where}: {cause}")


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
