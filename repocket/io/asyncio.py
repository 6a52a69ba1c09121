"""The asyncio executor: drives the same plans as :mod:`repocket.io.sync` on a ``redis.asyncio.Redis``.

Only the sending differs: every round is awaited, so the event loop is never
blocked, and no sync connection is opened. A task cancelled while it waits
for a reply leaves no connection with a reply still pending: redis.asyncio
disconnects a connection whose read was interrupted, and :func:`acall_once`
releases its connection only after that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors
from repocket.connections import DEFAULT_POLICY, WritePolicy, configure
from repocket.io import scripts
from repocket.io.common import (
    Demoted,
    Driver,
    FailoverClock,
    check_replicas,
    checked,
    evalsha,
    refused_as_replica,
    replicas_enough,
    script_target,
)
from repocket.io.errors import wrap_redis_error
from repocket.plan.rounds import Emit, Eval, Pipeline, Plan, Round, Sleep

__all__ = ["acall_once", "arun", "astream"]

T = TypeVar("T")


async def arun(plan: Plan[T], client: aioredis.Redis) -> T:
    """Drive ``plan`` to its end on ``client`` and return its result."""
    driver = Driver(plan)  # a plan run for its result emits nothing
    while (step := driver.step) is not None:
        try:
            driver.give(await send(client, step))
        except errors.RepocketError as exc:
            driver.fail(exc)
    return driver.value  # type: ignore[no-any-return]


def astream(plan: Plan[Any], client: aioredis.Redis) -> AsyncGenerator[Any, None]:
    """Drive ``plan`` on ``client``, yielding every item it emits."""
    return _drive(Driver(plan), client)


async def _drive(driver: Driver, client: aioredis.Redis) -> AsyncGenerator[Any, None]:
    while (step := driver.step) is not None:
        if isinstance(step, Emit):
            for item in driver.emitted():
                yield item
            continue
        try:
            driver.give(await send(client, step))
        except errors.RepocketError as exc:
            driver.fail(exc)


async def send(client: aioredis.Redis, step: Round) -> Any:
    """One round trip for one round (none for a Sleep); its reply."""
    if isinstance(step, Pipeline):
        return await _pipeline(client, step)
    if isinstance(step, Eval):
        return await _script(client, step)
    if isinstance(step, Sleep):
        await asyncio.sleep(step.seconds)
        return None
    raise TypeError(f"a plan yielded {step!r}, which is not a round")


async def _pipeline(client: aioredis.Redis, step: Pipeline) -> list[Any]:
    commands = step.commands
    try:
        if len(commands) == 1 and not step.transaction:
            only = commands[0]
            try:
                return [await client.execute_command(*only.args, **only.options)]  # type: ignore[no-untyped-call]
            except RedisError as exc:
                raise wrap_redis_error(exc, step.label, only.key) from exc
        async with client.pipeline(transaction=step.transaction) as pipe:
            for command in commands:
                pipe.execute_command(*command.args, **command.options)  # type: ignore[no-untyped-call]
            replies = await pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise wrap_redis_error(exc, step.label, commands[0].key if commands else None) from exc
    return checked(step, replies)


async def _script(client: aioredis.Redis, step: Eval) -> Any:
    script = scripts.get(step.script)
    policy = configure.write_policy()
    what = script_target(step)
    clock: FailoverClock | None = None
    while True:
        try:
            try:
                return await acall_once(client, *evalsha(step, script.sha), policy=policy, what=what)
            except NoScriptError:  # first use on this server, a restart or a failover
                await client.script_load(script.source)
                return await acall_once(client, *evalsha(step, script.sha), policy=policy, what=what)
        except Demoted:  # nothing ran: call the primary Sentinel names next
            clock = clock or FailoverClock(policy, what)
            await asyncio.sleep(clock.pause())
        except RedisError as exc:
            raise wrap_redis_error(exc, step.label, step.key) from exc


async def acall_once(client: aioredis.Redis, *command: Any, policy: WritePolicy = DEFAULT_POLICY,
                     what: str = "") -> Any:
    """Send one command and read its reply, never re-sending it; see :func:`repocket.io.sync.call_once`.

    Raises:
        RedisConnectionError: the reply was lost; the command may or may not have run.
        ReplicationError: it ran, but too few replicas confirmed it.
        Demoted: the server refused it as a replica (a Sentinel failover): it did not run.
    """
    pool = client.connection_pool
    connection: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        try:
            await connection.send_command(*command)
        except RedisPyConnectionError:
            await connection.disconnect()
            await connection.send_command(*command)
        reply = await client.parse_response(connection, command[0])
        if policy.replicas:
            await connection.send_command("WAIT", policy.replicas, policy.timeout_ms)
            confirmed = await client.parse_response(connection, "WAIT")
            if not replicas_enough(confirmed, policy):
                await _leave_old_primary(pool, connection)
            check_replicas(confirmed, policy, what)
        return reply
    except (RedisPyConnectionError, RedisPyTimeoutError, ResponseError) as exc:
        if refused_as_replica(exc) and isinstance(pool, SentinelConnectionPool):
            await _leave_old_primary(pool, connection)
            raise Demoted() from exc
        if isinstance(exc, ResponseError):
            raise  # Redis refused the command (NOSCRIPT, a script's error): the caller says what
        await connection.disconnect()
        raise errors.RedisConnectionError(scripts.UNKNOWN_OUTCOME.format(exc)) from exc
    finally:
        await pool.release(connection)


async def _leave_old_primary(pool: Any, connection: Any) -> None:
    """The async twin of :func:`repocket.io.sync._leave_old_primary`."""
    if isinstance(pool, SentinelConnectionPool) and await pool.get_master_address() != (  # type: ignore[no-untyped-call]
            connection.host, connection.port):
        await connection.disconnect()
