"""Which lifecycle hooks and signal receivers a save or a delete runs: :class:`~repocket.plan.rounds.Hooks` rounds.

For each instance, in order: the model's own method (``before_save``,
``after_save(created)``, ``before_delete``, ``after_delete``), when the model
defines it, then the receivers of the matching signal (:mod:`repocket.signals`).
While they run for an instance, a save (or delete) of that same instance from
inside one of them runs no hooks of its own: a hook that saves its record
again does not recurse forever; one that saves another record runs that
record's hooks as usual. Planning only: each function is a plan that yields
one :class:`~repocket.plan.rounds.Hooks` round when there is anything to
run (none otherwise), and the executors make the calls.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Sequence
from typing import Any

from repocket import signals
from repocket.plan import unit
from repocket.plan.rounds import Hooks, Plan

__all__ = ["deleted", "deleting", "saved", "saving"]


def saving(instances: Sequence[Any]) -> Plan[None]:
    """``before_save()`` and the ``pre_save`` receivers of each instance."""
    yield from _round(instances, "save", "before_save", signals.pre_save, lambda _: {})


def saved(instances: Sequence[Any], created: Sequence[bool]) -> Plan[None]:
    """``after_save(created)`` and the ``post_save`` receivers of each instance."""
    flags = {id(instance): new for instance, new in zip(instances, created)}
    yield from _round(instances, "save", "after_save", signals.post_save, lambda i: {"created": flags[id(i)]})


def deleting(instances: Sequence[Any]) -> Plan[None]:
    """``before_delete()`` and the ``pre_delete`` receivers of each instance."""
    yield from _round(instances, "delete", "before_delete", signals.pre_delete, lambda _: {})


def deleted(instances: Sequence[Any]) -> Plan[None]:
    """``after_delete()`` and the ``post_delete`` receivers of each instance."""
    yield from _round(instances, "delete", "after_delete", signals.post_delete, lambda _: {})


def _round(instances: Sequence[Any], phase: str, method: str, signal: signals.Signal,
           extra: Callable[[Any], dict[str, Any]]) -> Plan[None]:
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    for instance in instances:
        if phase in instance._hooks_running:
            continue  # (saved again from inside its own hooks)
        model = type(instance)
        named = extra(instance)
        hook = getattr(model, method, None)
        if hook is not None:
            call = functools.partial(hook, instance, **named)
            calls.append((_guarded(instance, phase, call, f"{model.__qualname__}.{method}"), ()))
        for receiver in signal.receivers(model):
            call = functools.partial(receiver, sender=model, instance=instance, **named)
            name = f"{signal.name} receiver {getattr(receiver, '__qualname__', repr(receiver))}"
            calls.append((_guarded(instance, phase, call, name), ()))
    buffer = unit.open_unit() if method.startswith("after_") else None
    if calls and buffer is not None:  # inside atomic(): once the block's writes are done
        buffer.after += calls
    elif calls:
        yield Hooks(calls)


def _guarded(instance: Any, phase: str, call: Callable[[], Any], name: str) -> Callable[[], Any]:
    """``call`` (named ``name`` in errors), marking ``phase`` as running for ``instance`` until it returns,
    or until what it returns is awaited."""

    def run() -> Any:
        instance._hooks_running = instance._hooks_running | {phase}
        try:
            result = call()
        except BaseException:
            _done(instance, phase)
            raise
        if not inspect.isawaitable(result):
            _done(instance, phase)
            return result
        return _Awaiting(result, lambda: _done(instance, phase))

    run.__qualname__ = name
    return run


def _done(instance: Any, phase: str) -> None:
    instance._hooks_running = instance._hooks_running - {phase}


class _Awaiting:
    """A coroutine hook's result, calling ``done`` once awaited, or once closed without being awaited."""

    def __init__(self, result: Any, done: Callable[[], None]) -> None:
        self._result, self._done = result, done

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from self._result.__await__())
        finally:
            self._done()

    def close(self) -> None:
        """Drop it unawaited (a sync call inside a running loop refuses it)."""
        close = getattr(self._result, "close", None)
        if close is not None:
            close()
        self._done()
