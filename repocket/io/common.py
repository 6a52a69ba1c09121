"""What the sync and async executors share: checking replies, building script calls, and the
decisions around a script call (WAIT for replicas, calling again after a failover)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from repocket import errors
from repocket.io.errors import wrap_redis_error
from repocket.plan.rounds import Emit, Eval, Pipeline, Plan, Round

if TYPE_CHECKING:
    from repocket.connections import WritePolicy


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


class FailoverClock:
    """The pauses between calls of a script refused by a demoted primary: growing, within the budget."""

    def __init__(self, policy: WritePolicy, what: str) -> None:
        self._deadline = time.monotonic() + policy.failover_seconds
        self._pause = 0.05
        self._what = what
        self._seconds = policy.failover_seconds

    def pause(self) -> float:
        """Seconds to wait before calling again; RedisConnectionError once the budget is spent."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise errors.RedisConnectionError(
                f"{self._what}: the primary was demoted and no new primary took the write within "
                f"{self._seconds:g} s; nothing was written"
            )
        pause, self._pause = min(self._pause, left), min(self._pause * 2, 1.0)
        return pause


def checked(step: Pipeline, replies: list[Any]) -> list[Any]:
    """The replies of a pipeline; the first failed command raises, naming its key."""
    for reply, command in zip(replies, step.commands):
        if isinstance(reply, Exception):
            raise wrap_redis_error(reply, step.label, command.key) from reply
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
