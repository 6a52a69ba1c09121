"""The asyncio executor: drives the same plans as :mod:`repocket.io.sync` on a ``redis.asyncio.Redis``.

Only the sending differs: every round is awaited, so the event loop is never
blocked, and no sync connection is opened. A task cancelled while it waits
for a reply leaves no connection with a reply still pending: redis.asyncio
disconnects a connection whose read was interrupted, and :func:`acall_once`
releases its connection only after that.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors
from repocket.connections import DEFAULT_POLICY, WritePolicy, configure
from repocket.io import scripts
from repocket.io.common import (
    ON_ITS_NODE,
    Demoted,
    Driver,
    NotSent,
    ScriptRetries,
    check_replicas,
    checked,
    evalsha,
    pipeline_failed,
    refused_as_replica,
    replicas_enough,
    routed,
    script_target,
    slot_groups,
    uses_tls,
    wire,
)
from repocket.io.errors import command_name, wrap_redis_error
from repocket.plan.rounds import Emit, Eval, Hooks, Pipeline, Plan, Round, Sleep

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
    if isinstance(step, Hooks):
        for function, args in step.calls:
            done = function(*args)
            if inspect.isawaitable(done):
                await done
        return None
    raise TypeError(f"a plan yielded {step!r}, which is not a round")


async def _pipeline(client: aioredis.Redis, step: Pipeline) -> list[Any]:
    commands = step.commands
    try:
        if len(commands) == 1 and not step.transaction:
            only = commands[0]
            target: Any = client
            if isinstance(client, RedisCluster) and only.args[0] in ON_ITS_NODE:  # on the node of its key's slot
                await client.initialize()
                target = client.get_node_from_key(only.key)
            try:
                return [await target.execute_command(*wire(only), **only.options)]
            except RedisError as exc:
                raise wrap_redis_error(exc, step.label, only.key, command_name(only.args),
                                       tls=uses_tls(client)) from exc
        if step.transaction and isinstance(client, RedisCluster):
            replies: list[Any] = [None] * len(commands)

            async def transaction(group: list[int]) -> list[Any]:
                async with client.pipeline(transaction=True) as pipe:
                    for position in group:
                        pipe.execute_command(*wire(commands[position]), **commands[position].options)
                    return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

            groups = slot_groups(step, client.keyslot)  # one MULTI per slot, sent side by side
            for group, results in zip(groups, await asyncio.gather(*map(transaction, groups))):
                for position, reply in zip(group, results):
                    replies[position] = reply
            return checked(step, replies)
        async with client.pipeline(transaction=step.transaction) as pipe:
            cluster = isinstance(client, RedisCluster)
            nodes: dict[int, Any] = {}  # each slot's node, for this pipeline (see routed)
            for command in commands:
                options = routed(client, command, nodes) if cluster else command.options
                pipe.execute_command(*wire(command), **options)
            replies = await pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise pipeline_failed(exc, step, client) from exc
    return checked(step, replies)


async def _script(client: aioredis.Redis, step: Eval) -> Any:
    script = scripts.get(step.script)
    policy = configure.write_policy()
    what = script_target(step)
    retries = ScriptRetries(policy, step, isinstance(client, RedisCluster),
                            isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool),
                            uses_tls(client))
    while True:
        try:
            pool, parse, load = await _script_node(client, step, retries.ask)
            asking = retries.ask is not None
            try:
                return await _call_once(pool, parse, *evalsha(step, script.sha), policy=policy, what=what,
                                        asking=asking)
            except NoScriptError:  # first use on this server, a restart or a failover
                await load(script.source)
                return await _call_once(pool, parse, *evalsha(step, script.sha), policy=policy, what=what,
                                        asking=asking)
        except (Demoted, NotSent, RedisError) as exc:
            pause = retries.after(exc)  # (raises unless the call did not run and may be sent again)
            if retries.refresh:
                await client.nodes_manager.initialize()  # type: ignore[attr-defined]
            if pause:
                await asyncio.sleep(pause)


class _NodePool:
    """A cluster node's connections, lent as a pool lends them to :func:`_call_once`."""

    def __init__(self, node: Any) -> None:
        self._node = node

    async def get_connection(self) -> Any:
        connection = self._node.acquire_connection()
        try:
            await connection.connect()
        except BaseException:
            await connection.disconnect()
            self._node.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        self._node.release(connection)


async def _script_node(client: aioredis.Redis, step: Eval, ask: tuple[str, int] | None) -> tuple[Any, Any, Any]:
    """Where a script call goes: ``(pool, parse_response, script_load)`` of ``client``, or on a
    cluster of the primary of its keys' slot (all of a call's keys share one), or of the node an ASK named."""
    if not isinstance(client, RedisCluster):
        return client.connection_pool, client.parse_response, client.script_load
    await client.initialize()
    node = client.get_node(host=ask[0], port=ask[1]) if ask else client.get_node_from_key(step.keys[0])
    if node is None:
        await client.nodes_manager.initialize()
        node = client.get_node(host=ask[0], port=ask[1]) if ask else client.get_node_from_key(step.keys[0])

    async def load(source: str) -> Any:
        return await node.execute_command("SCRIPT", "LOAD", source)

    return _NodePool(node), node.parse_response, load


async def acall_once(client: aioredis.Redis, *command: Any, policy: WritePolicy = DEFAULT_POLICY,
                     what: str = "") -> Any:
    """Send one command and read its reply, never re-sending it; see :func:`repocket.io.sync.call_once`.

    Raises:
        RedisConnectionError: the reply was lost; the command may or may not have run.
        ReplicationError: it ran, but too few replicas confirmed it.
        Demoted: the server refused it as a replica (a Sentinel failover): it did not run.
    """
    return await _call_once(client.connection_pool, client.parse_response, *command, policy=policy, what=what)


async def _call_once(pool: Any, parse: Any, *command: Any, policy: WritePolicy = DEFAULT_POLICY, what: str = "",
                     asking: bool = False) -> Any:
    """:func:`acall_once` on a connection of ``pool``, its replies read by ``parse``."""
    connection: Any = await pool.get_connection()
    try:
        if asking:  # a cluster node importing the slot serves the next command (ASK)
            await connection.send_command("ASKING")
            await parse(connection, "ASKING")
        try:
            await connection.send_command(*command)
        except RedisPyConnectionError:
            await connection.disconnect()
            try:
                await connection.send_command(*command)
            except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
                raise NotSent() from exc  # (a command that did not reach Redis whole did not run)
        reply = await parse(connection, command[0])
        if policy.replicas:
            await connection.send_command("WAIT", policy.replicas, policy.timeout_ms)
            confirmed = await parse(connection, "WAIT")
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
    if not isinstance(pool, SentinelConnectionPool):
        return
    try:  # best effort: the caller raises for the write whatever Sentinel answers
        primary = await pool.get_master_address()  # type: ignore[no-untyped-call]
    except RedisError:
        return
    if primary != (connection.host, connection.port):
        await connection.disconnect()
