"""The sync executor: drives plans on a ``redis.Redis``.

:func:`run` sends each round a plan yields and sends the reply back into it;
:func:`stream` does the same and yields the records the plan emits as they
arrive (``iterator()``). Errors are wrapped in :mod:`repocket.io.errors` and
thrown into the plan. Script calls go out once: see :func:`call_once`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError
from redis.sentinel import SentinelConnectionPool

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

__all__ = ["call_once", "run", "stream"]

T = TypeVar("T")


def run(plan: Plan[T], client: redis.Redis) -> T:
    """Drive ``plan`` to its end on ``client`` and return its result."""
    driver = Driver(plan)  # a plan run for its result emits nothing
    while (step := driver.step) is not None:
        try:
            driver.give(send(client, step))
        except errors.RepocketError as exc:
            driver.fail(exc)
    return driver.value  # type: ignore[no-any-return]


def stream(plan: Plan[T], client: redis.Redis) -> Generator[Any, None, T]:
    """Drive ``plan`` on ``client``, yielding every item it emits; returns its result."""
    driver = Driver(plan)
    while (step := driver.step) is not None:
        if isinstance(step, Emit):
            yield from driver.emitted()
            continue
        try:
            driver.give(send(client, step))
        except errors.RepocketError as exc:
            driver.fail(exc)
    return driver.value  # type: ignore[no-any-return]


def send(client: redis.Redis, step: Round) -> Any:
    """One round trip for one round (none for a Sleep); its reply."""
    if isinstance(step, Pipeline):
        return _pipeline(client, step)
    if isinstance(step, Eval):
        return _script(client, step)
    if isinstance(step, Sleep):
        time.sleep(step.seconds)
        return None
    if isinstance(step, Hooks):
        for function, args in step.calls:
            done = function(*args)
            if inspect.isawaitable(done):
                _await_outside_a_loop(function, done)
        return None
    raise TypeError(f"a plan yielded {step!r}, which is not a round")


def _pipeline(client: redis.Redis, step: Pipeline) -> list[Any]:
    commands = step.commands
    try:
        if len(commands) == 1 and not step.transaction:
            only = commands[0]
            target = client
            if isinstance(client, RedisCluster) and only.args[0] in ON_ITS_NODE:  # on the node of its key's slot
                target = client.get_redis_connection(client.get_node_from_key(only.key))
            try:
                return [target.execute_command(*wire(only), **only.options)]  # type: ignore[no-untyped-call]
            except RedisError as exc:
                raise wrap_redis_error(exc, step.label, only.key, command_name(only.args),
                                       tls=uses_tls(client)) from exc
        if step.transaction and isinstance(client, RedisCluster):
            replies: list[Any] = [None] * len(commands)

            def transaction(group: list[int]) -> list[Any]:
                pipe = client.pipeline(transaction=True)
                for position in group:
                    pipe.execute_command(*wire(commands[position]), **commands[position].options)
                return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

            groups = slot_groups(step, client.keyslot)  # one MULTI per slot, sent side by side
            done = map(transaction, groups) if len(groups) == 1 else _side_by_side().map(transaction, groups)
            for group, results in zip(groups, done):
                for position, reply in zip(group, results):
                    replies[position] = reply
            return checked(step, replies)
        pipe = client.pipeline(transaction=step.transaction)
        cluster = isinstance(client, RedisCluster)
        nodes: dict[int, Any] = {}  # each slot's node, for this pipeline (see routed)
        for command in commands:
            options = routed(client, command, nodes) if cluster else command.options
            pipe.execute_command(*wire(command), **options)  # type: ignore[no-untyped-call]
        replies = pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise pipeline_failed(exc, step, client) from exc
    return checked(step, replies)


def _await_outside_a_loop(function: Any, done: Any) -> None:
    """Run a coroutine hook or receiver that a sync call met: in a loop of its own, if none runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_awaited(done))
        return
    close = getattr(done, "close", None)
    if close is not None:
        close()  # (dropped unawaited: no warning)
    raise TypeError(f"{getattr(function, '__qualname__', function)} is a coroutine function, and this sync "
                    "call runs inside an event loop: use the async method (asave(), adelete(), ...)")


async def _awaited(done: Any) -> None:
    await done


_threads: ThreadPoolExecutor | None = None


def _side_by_side() -> ThreadPoolExecutor:
    """The threads that send a round's transactions on several cluster slots at once (made on first use).

    redis-py runs a cluster transaction on one slot, and one at a time; from
    threads, the MULTIs of a read over several partitions (records with
    ByteStreams) cost one round trip of waiting instead of one per slot.
    """
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="repocket-multi")
    return _threads


def _forget_threads() -> None:
    """In a forked child, whose copy of the pool has no threads: a new pool on next use."""
    global _threads
    _threads = None


os.register_at_fork(after_in_child=_forget_threads)


def _script(client: redis.Redis, step: Eval) -> Any:
    script = scripts.get(step.script)
    policy = configure.write_policy()
    what = script_target(step)
    retries = ScriptRetries(policy, step, isinstance(client, RedisCluster),
                            isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool),
                            uses_tls(client))
    while True:
        try:
            target = _script_client(client, step, retries.ask)
            asking = retries.ask is not None
            try:
                return call_once(target, *evalsha(step, script.sha), policy=policy, what=what, asking=asking)
            except NoScriptError:  # first use on this server, a restart or a failover
                target.script_load(script.source)
                return call_once(target, *evalsha(step, script.sha), policy=policy, what=what, asking=asking)
        except (Demoted, NotSent, RedisError) as exc:
            pause = retries.after(exc)  # (raises unless the call did not run and may be sent again)
            if retries.refresh:
                client.nodes_manager.initialize()  # type: ignore[attr-defined]
            if pause:
                time.sleep(pause)


def _script_client(client: redis.Redis, step: Eval, ask: tuple[str, int] | None) -> redis.Redis:
    """The client of the node a script call goes to: on a cluster, the primary of its keys' slot
    (all of a call's keys share one), or the node an ASK named; else ``client`` itself."""
    if not isinstance(client, RedisCluster):
        return client
    if ask is not None:
        node = client.get_node(host=ask[0], port=ask[1])
        if node is None:
            client.nodes_manager.initialize()
            node = client.get_node(host=ask[0], port=ask[1])
    else:
        node = client.get_node_from_key(step.keys[0])
    return client.get_redis_connection(node)  # type: ignore[no-any-return]


def call_once(client: redis.Redis, *command: Any, policy: WritePolicy = DEFAULT_POLICY, what: str = "",
              asking: bool = False) -> Any:
    """Send one command and read its reply, never re-sending it once it may have run.

    redis-py retries a command whose connection broke, which would apply a
    write twice if the first one had run; this sends on a connection of its
    own and gives up instead. With ``policy.replicas``, a ``WAIT`` follows on
    that connection (see :func:`~repocket.io.common.check_replicas`).

    Raises:
        RedisConnectionError: the reply was lost; the command may or may not have run.
        ReplicationError: it ran, but too few replicas confirmed it.
        Demoted: the server refused it as a replica (a Sentinel failover): it did not run.
    """
    pool = client.connection_pool
    connection: Any = pool.get_connection()  # connects (with the pool's retries) if needed
    try:
        if asking:  # a cluster node importing the slot serves the next command (ASK)
            connection.send_command("ASKING")
            client.parse_response(connection, "ASKING")  # type: ignore[no-untyped-call]
        try:
            connection.send_command(*command)
        except RedisPyConnectionError:
            # Nothing complete reached the server (a stale socket): one fresh try.
            connection.disconnect()
            try:
                connection.send_command(*command)
            except (RedisPyConnectionError, RedisPyTimeoutError) as exc:
                raise NotSent() from exc  # (a command that did not reach Redis whole did not run)
        reply = client.parse_response(connection, command[0])  # type: ignore[no-untyped-call]
        if policy.replicas:
            connection.send_command("WAIT", policy.replicas, policy.timeout_ms)
            confirmed = client.parse_response(connection, "WAIT")  # type: ignore[no-untyped-call]
            if not replicas_enough(confirmed, policy):
                _leave_old_primary(pool, connection)
            check_replicas(confirmed, policy, what)
        return reply
    except (RedisPyConnectionError, RedisPyTimeoutError, ResponseError) as exc:
        if refused_as_replica(exc) and isinstance(pool, SentinelConnectionPool):
            _leave_old_primary(pool, connection)
            raise Demoted() from exc
        if isinstance(exc, ResponseError):
            raise  # Redis refused the command (NOSCRIPT, a script's error): the caller says what
        connection.disconnect()
        raise errors.RedisConnectionError(scripts.UNKNOWN_OUTCOME.format(exc)) from exc
    finally:
        pool.release(connection)


def _leave_old_primary(pool: Any, connection: Any) -> None:
    """After a short WAIT or a READONLY refusal on a Sentinel pool: if Sentinel names another primary
    now (a failover), drop this connection and the idle ones, so that the next write goes to it."""
    if not isinstance(pool, SentinelConnectionPool):
        return
    try:  # best effort: the caller raises for the write whatever Sentinel answers
        primary = pool.get_master_address()  # type: ignore[no-untyped-call]
    except RedisError:
        return
    if primary != (connection.host, connection.port):
        connection.disconnect()
