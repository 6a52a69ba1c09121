"""How redis-py's ACL and TLS errors become repocket's (repocket.io.errors), without a server.

tests/functional/test_tls_acl.py meets the same errors on real servers; these
cases also run where the server has no TLS, and pin the exact wording.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisPyConnectionError

from repocket import errors
from repocket.connections import WritePolicy
from repocket.io.common import ScriptRetries, pipeline_failed, uses_tls
from repocket.io.errors import command_name, wrap_redis_error
from repocket.plan.rounds import Eval, Pipeline, command, script_read

KEY = "repocket:billing:Invoice:4b1e"


def _raised_during(error: BaseException, context: BaseException) -> BaseException:
    """``error`` as redis-py raises it: while handling ``context``."""
    try:
        try:
            raise context
        except BaseException:
            raise error  # noqa: B904 - redis-py does this: the cause is the context
    except BaseException as raised:
        return raised


def test_noperm_on_a_key() -> None:
    exc = NoPermissionError("this user has no permissions to access one of the keys used as arguments")
    error = wrap_redis_error(exc, "billing.Invoice", KEY, "HGETALL")
    assert isinstance(error, errors.PermissionDeniedError)
    assert isinstance(error, errors.RedisConnectionError) and isinstance(error, PermissionError)
    assert (error.model, error.command, error.key) == ("billing.Invoice", "HGETALL", KEY)
    assert str(error).startswith(f"billing.Invoice: the Redis user may not run HGETALL on {KEY}: this user has no")


@pytest.mark.parametrize("text", [
    "The user executing the script can't run this command or subcommand script: 11a9, on @user_script:1.",
    "Error running script (call to f_11a9): @user_script:1: @user_script: 1: The user executing the script "
    "can't access at least one of the keys mentioned in the command arguments",
    "NOPERM User shop has no permissions to run the 'zadd' command script: 11a9, on @user_script:1.",
], ids=["7.0", "6.2", "NOPERM-prefixed"])
def test_noperm_inside_a_script(text: str) -> None:
    """Inside a script Redis reports a refusal as a script error, worded by version."""
    retries = ScriptRetries(WritePolicy(), Eval("write", [KEY], [], "billing.Invoice"), cluster=False)
    with pytest.raises(errors.PermissionDeniedError) as caught:
        retries.after(ResponseError(text))
    assert caught.value.command == "EVALSHA write.lua" and caught.value.key == KEY


def test_a_refused_transaction_is_named_by_multi() -> None:
    step = Pipeline([command("HGETALL", KEY, key=KEY)], True, "billing.Invoice")
    error = pipeline_failed(NoPermissionError("this user has no permissions to run the 'multi' command"), step, None)
    assert isinstance(error, errors.PermissionDeniedError) and error.command == "MULTI"


def test_command_names() -> None:
    assert command_name(("HGETALL", KEY)) == "HGETALL"
    assert command_name(script_read("count", [KEY], []).args) == "EVAL count.lua"


@given(password=st.text(alphabet="0123456789abcdef:@/ ", min_size=12, max_size=30).map(lambda t: "pw-" + t))
def test_no_password_in_authentication_errors(password: str) -> None:
    """redis-py's own text is not quoted, so whatever it held, the password is not in the message."""
    exc = AuthenticationError(f"invalid username-password pair or user is disabled. ({password})")
    error = wrap_redis_error(exc, "shop.Order", "repocket:shop:Order:_ids")
    assert isinstance(error, errors.RedisAuthenticationError)
    assert password not in str(error) and "wrong password or user name" in str(error)


def test_server_certificate_refused() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    verify.verify_message = "self-signed certificate in certificate chain"
    exc = _raised_during(RedisPyConnectionError("Error 1 connecting to 127.0.0.1:6380."), verify)
    error = wrap_redis_error(exc, "shop.Order", "repocket:shop:Order:_ids")
    assert type(error) is errors.RedisConnectionError
    assert str(error).startswith("TLS: Redis's certificate was not accepted (repocket:shop:Order:_ids): "
                                 "self-signed certificate in certificate chain. Give the CA that signed it")


@pytest.mark.parametrize(("context", "start"), [
    (ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
     "TLS: Redis refused the client certificate"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "TLS: Redis closed the connection at the handshake"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS: the connection to Redis failed"),
], ids=["alert", "eof", "other"])
def test_client_certificate_refused(context: BaseException, start: str) -> None:
    exc = _raised_during(RedisPyConnectionError("Error while reading from 127.0.0.1:6380"), context)
    error = wrap_redis_error(exc, "shop.Order", None)
    assert type(error) is errors.RedisConnectionError and str(error).startswith(start)


@pytest.mark.parametrize("tls", [True, False])
def test_a_reset_over_tls_says_what_it_may_mean(tls: bool) -> None:
    exc = _raised_during(RedisPyConnectionError("Error while reading from 127.0.0.1:6380 : (104, 'reset')"),
                         ConnectionResetError(104, "Connection reset by peer"))
    message = str(wrap_redis_error(exc, "shop.Order", None, tls=tls))
    assert message.startswith("Redis is unreachable: Error while reading")
    assert ("requires a client certificate (tls-auth-clients)" in message) is tls


def test_uses_tls() -> None:
    import redis

    assert uses_tls(redis.Redis.from_url("rediss://127.0.0.1:6380/0"))
    assert not uses_tls(redis.Redis.from_url("redis://127.0.0.1:6379/0"))
    assert not uses_tls(None)
