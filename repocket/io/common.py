"""What the sync and async executors share: checking replies and building script calls."""

from __future__ import annotations

from typing import Any

from repocket.io.errors import wrap_redis_error
from repocket.plan.rounds import Emit, Eval, Pipeline, Plan, Round


def checked(step: Pipeline, replies: list[Any]) -> list[Any]:
    """The replies of a pipeline; the first failed command raises, naming its key."""
    for reply, command in zip(replies, step.commands):
        if isinstance(reply, Exception):
            raise wrap_redis_error(reply, step.label, command.key) from reply
    return replies


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
