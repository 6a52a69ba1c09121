"""What a plan yields: rounds of commands, as plain data that carries every key it touches.

- :class:`Pipeline`: commands sent in one round trip (in a MULTI when
  ``transaction``); the plan receives the list of their replies. A pipeline of
  one command is sent as that command alone.
- :class:`Eval`: one call of a repocket Lua script, sent at most once (a lost
  reply raises ``RedisConnectionError`` instead of a retry that could apply a
  write twice); the plan receives the script's reply.
- :class:`Sleep`: a pause before a retry, without a round trip.
- :class:`Emit`: records handed to the caller of a streaming plan
  (``iterator()``, ``async for``) as they are loaded.
- :class:`Hooks`: lifecycle hooks and signal receivers to run (user code),
  without a round trip; the async executor awaits coroutine ones.

A command that fails (a key of the wrong type, a refused script) is not a
reply: the executor turns it into repocket's error, naming the command's key,
and throws it into the plan, which may catch it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["SCRIPT_READ", "Command", "Emit", "Eval", "Hooks", "Pipeline", "Plan", "Round", "Sleep", "command", "one",
           "script_read"]

T = TypeVar("T")

_NO_OPTIONS: Mapping[str, Any] = {}


@dataclass(slots=True)
class Command:
    """One Redis command: its arguments, the key to name if it fails, and parse options."""

    args: tuple[Any, ...]
    key: str | None = None
    #: What redis-py's reply parser needs to know (``withscores=True`` for ZRANGE).
    options: Mapping[str, Any] = field(default_factory=lambda: _NO_OPTIONS)


def command(*args: Any, key: str | None = None, **options: Any) -> Command:
    """A :class:`Command`; ``key`` defaults to the command's first argument after its name."""
    if key is None and len(args) > 1 and isinstance(args[1], str):
        key = args[1]
    return Command(args, key, options or _NO_OPTIONS)


#: The name a :func:`script_read` command carries instead of a Redis command's; executors send it as ``EVAL``.
SCRIPT_READ = "repocket.script_read"


def script_read(script: str, keys: Sequence[str], args: Sequence[Any]) -> Command:
    """A call of the read-only Lua script ``script`` as one command of a :class:`Pipeline`.

    Unlike an :class:`Eval` it is sent with the pipeline's other commands, so
    calls in several cluster slots cost one request per node, not one each;
    a read may be sent again, which an :class:`Eval` write may not. All its
    ``keys`` share one slot.
    """
    return Command((SCRIPT_READ, script, len(keys), *keys, *args), keys[0] if keys else None, _NO_OPTIONS)


@dataclass(slots=True)
class Pipeline:
    """Commands sent in one round trip; ``label`` names whose they are in errors."""

    commands: Sequence[Command]
    transaction: bool = False
    label: str = "repocket"


def one(*args: Any, label: str = "repocket", **options: Any) -> Pipeline:
    """A round of a single command (the plan receives a list of one reply)."""
    return Pipeline([command(*args, **options)], False, label)


@dataclass(slots=True)
class Eval:
    """One call of the Lua script ``script`` (a name in ``repocket/lua``), sent at most once."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    label: str = "repocket"

    @property
    def key(self) -> str | None:
        """The key named when the call fails, which is the script's first."""
        return self.keys[0] if self.keys else None


@dataclass(slots=True)
class Sleep:
    """Wait ``seconds`` before the next round (the back-off of a contended write)."""

    seconds: float


@dataclass(slots=True)
class Emit:
    """Items for the caller of a streaming plan; the plan receives None."""

    items: Sequence[Any]


@dataclass(slots=True)
class Hooks:
    """User code to run between rounds, in order: lifecycle hooks and signal receivers (no round trip).

    Each call is ``(function, args)``. The sync executor calls them, the
    async one too and awaits what a coroutine function returns. What a call
    raises ends the plan where it stands: a ``before_*`` hook runs before the
    write it precedes, which is then never sent.
    """

    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]


Round = Pipeline | Eval | Sleep | Emit | Hooks
#: A plan, which yields rounds, receives their replies and returns its result.
Plan = Generator[Round, Any, T]
