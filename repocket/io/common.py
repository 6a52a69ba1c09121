"""What the sync and async executors share: checking replies, building script calls, and the
decisions around a script call (WAIT for replicas, calling again after a failover)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import AskError, ReadOnlyError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors
from repocket.io import scripts
from repocket.io.errors import command_name, wrap_redis_error
from repocket.plan.rounds import SCRIPT_READ, Command, Emit, Eval, Pipeline, Plan, Round

if TYPE_CHECKING:
    from repocket.connections import WritePolicy


class NotSent(Exception):
    """A script call that never reached the server whole (its send failed): it did not run."""


class Demoted(Exception):
    """A script call the server refused as a replica (READONLY): it ran no command, so it may be sent again."""


#: What a replica answers to a write, alone or as the error of a command inside a script.
_READONLY = "READONLY You can't write against a read only replica"


def refused_as_replica(exc: BaseException) -> bool:
    """Whether ``exc`` says the server refused a write because it is a replica.

    A script that meets this refusal fails at its first write, since a replica
    takes none: nothing was written. redis-py's ``SentinelManagedConnection``
    turns a plain ``READONLY`` reply into a ConnectionError, raised while
    handling the ReadOnlyError; inside a script it stays a ResponseError.
    """
    if isinstance(exc, ReadOnlyError) or (isinstance(exc, ResponseError) and _READONLY in str(exc)):
        return True
    return isinstance(exc, RedisPyConnectionError) and isinstance(exc.__context__, ReadOnlyError)


#: How many MOVED/ASK redirections one script call follows before it gives up.
MAX_REDIRECTS = 5


def redirection(exc: BaseException) -> tuple[str, str, int] | None:
    """``("MOVED" or "ASK", host, port)`` when a cluster node answered that the slot is served
    elsewhere (the command did not run there), else None."""
    if not isinstance(exc, AskError):  # (MovedError is an AskError)
        return None
    return ("MOVED" if type(exc).__name__ == "MovedError" else "ASK"), exc.host, int(exc.port)


def replicas_enough(confirmed: Any, policy: WritePolicy) -> bool:
    """Whether ``WAIT`` answered at least as many replicas as the policy asks."""
    return int(confirmed) >= policy.replicas


def check_replicas(confirmed: Any, policy: WritePolicy, what: str) -> None:
    """Raise ReplicationError when ``WAIT`` answered fewer replicas than the policy asks."""
    if not replicas_enough(confirmed, policy):
        raise errors.ReplicationError(
            f"{what}: the write was applied on the primary, but {int(confirmed)} of the {policy.replicas} "
            f"replicas asked for confirmed it within {policy.timeout_ms} ms; it is lost if the primary "
            "fails before they receive it"
        )


class ScriptRetries:
    """What to do after a script call failed without running: when to call again, and where.

    Both executors ask :meth:`after` about each failure. A call is only sent
    again when it is known not to have run: refused as a replica (a Sentinel
    failover, :class:`Demoted`), redirected by a cluster node (``MOVED``: ask
    the cluster for its slots again; ``ASK``: call the importing node, after
    ``ASKING``), told to try again while its slot migrates (``TRYAGAIN``), or
    unable to reach the slot's primary before sending (a cluster failover).
    Waits grow from 50 ms to 1 s, for ``policy.failover_seconds`` in all.
    """

    def __init__(self, policy: WritePolicy, step: Eval, cluster: bool, sentinel: bool = False,
                 tls: bool = False) -> None:
        self._policy, self._step, self._cluster, self._sentinel = policy, step, cluster, sentinel
        self._tls = tls
        self._deadline: float | None = None
        self._pause = 0.05
        self._redirects = 0
        #: The node an ASK named, for the next call only.
        self.ask: tuple[str, int] | None = None
        #: Whether the cluster's slots must be read again before the next call (after MOVED).
        self.refresh = False

    def after(self, exc: BaseException) -> float:
        """Seconds to wait before calling again (0: at once); raises the caller's error when it must not be."""
        self.refresh, step = False, self._step
        if isinstance(exc, Demoted):
            return self._wait("the primary was demoted and no new primary took the write")
        moved = redirection(exc) if self._cluster else None
        if moved is not None and self._redirects < MAX_REDIRECTS:
            self._redirects += 1
            self.refresh = moved[0] == "MOVED"
            self.ask = None if self.refresh else (moved[1], moved[2])
            return 0.0
        if self._cluster and isinstance(exc, TryAgainError):
            self.ask = None
            return self._wait("its slot kept migrating between cluster nodes")
        unsent = isinstance(exc, (NotSent, RedisPyConnectionError, RedisPyTimeoutError))
        if unsent and (self._cluster or self._sentinel):
            # It never reached the server (a lost reply raises RedisConnectionError, which is
            # not retried): its primary is down, and a replica may be taking over.
            self.ask, self.refresh = None, self._cluster
            return self._wait("its primary could not be reached and no replica took over")
        if isinstance(exc, NotSent):
            raise errors.RedisConnectionError(
                f"{script_target(step)}: could not send the write to Redis ({exc.__cause__}); nothing was written"
            ) from exc.__cause__
        raise wrap_redis_error(exc, step.label, step.key, f"EVALSHA {step.script}.lua", tls=self._tls) from exc

    def _wait(self, why: str) -> float:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._policy.failover_seconds
        left = self._deadline - now
        if left <= 0:
            raise errors.RedisConnectionError(
                f"{script_target(self._step)}: {why} within {self._policy.failover_seconds:g} s; nothing was written"
            )
        pause, self._pause = min(self._pause, left), min(self._pause * 2, 1.0)
        return pause


def slot_groups(step: Pipeline, keyslot: Callable[[str], int]) -> list[list[int]]:
    """The positions of a transaction's commands grouped by their keys' cluster slot, in order.

    A cluster runs a MULTI on one slot only; what a transaction of repocket's
    must keep together (a record's hash and its ByteStreams) shares a slot, so
    each group is sent as a transaction of its own.
    """
    groups: dict[int, list[int]] = {}
    for position, command in enumerate(step.commands):
        groups.setdefault(keyslot(command.key or ""), []).append(position)
    return list(groups.values())


def routed(client: Any, command: Command, nodes: dict[int, Any]) -> Mapping[str, Any]:
    """The options of ``command`` in a cluster pipeline, naming the primary of its key's slot as its target.

    redis-py finds that node itself by parsing each command for its keys,
    which is a fifth of the client's time in a query's pipeline of reads; the
    command names its key already, so the slot is hashed from it directly
    (``nodes`` keeps each slot's node for the rest of the pipeline). The node
    is the one redis-py would pick (the primary serving the slot), and a
    command redirected by MOVED or ASK is routed by redis-py again. A
    read-only script call is routed by its first key, which spares redis-py
    a ``COMMAND GETKEYS`` round trip per call. Left to redis-py: another
    command whose first argument is not the key it names, a client that
    reads from replicas, and a slot the client has no node for.
    """
    key = command.key
    named = command.args[0] == SCRIPT_READ or (len(command.args) > 1 and command.args[1] == key)
    if key is None or not named or client.read_from_replicas or client.load_balancing_strategy is not None:
        return command.options
    slot = key_slot(key.encode())
    node = nodes.get(slot)
    if node is None:
        try:
            node = nodes[slot] = client.nodes_manager.get_node_from_slot(slot)
        except Exception:  # noqa: BLE001 - no node known for the slot yet: redis-py finds one, or raises
            return command.options
    return {**command.options, "target_nodes": node}


#: Commands a cluster client sends to the node of the key they name, rather than finding it by parsing them:
#: a model's SCAN, and a read-only script call (whose first argument is a script, not a key).
ON_ITS_NODE = ("SCAN", SCRIPT_READ)


def wire(command: Command) -> tuple[Any, ...]:
    """What is sent for ``command``: its arguments, or for a read-only script call
    (:func:`~repocket.plan.rounds.script_read`) an ``EVAL`` of the script's source, which
    a server that never saw the script runs too (no ``NOSCRIPT`` to answer within a pipeline)."""
    args = command.args
    if args[0] == SCRIPT_READ:
        return ("EVAL", scripts.get(args[1]).source, *args[2:])
    return args


def pipeline_failed(exc: BaseException, step: Pipeline, client: Any) -> errors.RepocketError:
    """The error of a whole pipeline that failed on ``client`` (not one of its replies), named by its first command."""
    first = step.commands[0] if step.commands else None
    name = "MULTI" if step.transaction else command_name(first.args) if first is not None else None
    return wrap_redis_error(exc, step.label, first.key if first is not None else None, name, tls=uses_tls(client))


def uses_tls(client: Any) -> bool:
    """Whether ``client`` (sync or async, a cluster's too) connects with TLS; error messages say more then."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return issubclass(pool.connection_class, (redis.SSLConnection, aioredis.SSLConnection))
    manager = getattr(client, "nodes_manager", None)  # a cluster client: the options of its nodes
    options = getattr(manager, "connection_kwargs", None) or getattr(client, "connection_kwargs", None) or {}
    connection_class = options.get("connection_class")
    return bool(options.get("ssl")) or (isinstance(connection_class, type) and issubclass(
        connection_class, (redis.SSLConnection, aioredis.SSLConnection)))


def checked(step: Pipeline, replies: list[Any]) -> list[Any]:
    """The replies of a pipeline; the first failed command raises, naming its key."""
    for reply, command in zip(replies, step.commands):
        if isinstance(reply, Exception):
            raise wrap_redis_error(reply, step.label, command.key, command_name(command.args)) from reply
    return replies


def script_target(step: Eval) -> str:
    """What a script call works on, for messages: the model and the first key."""
    return f"{step.label} ({step.key})" if step.key else step.label


def evalsha(step: Eval, sha: str) -> tuple[Any, ...]:
    """The EVALSHA command of a script call."""
    return ("EVALSHA", sha, len(step.keys), *step.keys, *step.args)


class Driver:
    """Steps a plan for an executor: the round to send next, given the last reply or error.

    The executors' loops only send ``step`` and report back with
    :meth:`give` or :meth:`fail`; when ``step`` is None the plan is done
    and ``value`` is its result.
    """

    def __init__(self, plan: Plan[Any]) -> None:
        self._plan = plan
        self.step: Round | None = None
        self.value: Any = None
        self.give(None)

    def give(self, reply: Any) -> None:
        """Send ``reply`` into the plan and move on to its next round."""
        try:
            self.step = self._plan.send(reply)
        except StopIteration as done:
            self.step, self.value = None, done.value

    def fail(self, error: BaseException) -> None:
        """Throw ``error`` into the plan (which may catch it) and move on."""
        try:
            self.step = self._plan.throw(error)
        except StopIteration as done:
            self.step, self.value = None, done.value

    def emitted(self) -> list[Any]:
        """The items of the current Emit round, moving on past it."""
        assert isinstance(self.step, Emit)
        items = list(self.step.items)
        self.give(None)
        return items
