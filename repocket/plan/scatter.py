"""Scatter and gather: running one plan per partition of a spread model, side by side.

A model with ``Meta.partitions = P > 1`` keeps P independent sets of keys
(:meth:`repocket.options.ModelOptions.partition`). A query on it runs its
plan once per partition, and :func:`gather` drives those P plans in lockstep:
each round, the pipelines they yield are sent as one pipeline, so a query
costs the round trips of its longest partition plan, not P times as many. On
a cluster the executor splits that pipeline by node, and sends the parts
together: one round trip per primary holding partitions of the model.

Script calls and pauses cannot share a round trip: they go one after another,
in partition order. Planning only, like the rest of :mod:`repocket.plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from repocket.plan.rounds import Pipeline, Plan, Round

__all__ = ["gather", "gather_in_turn"]

T = TypeVar("T")


def gather(plans: Sequence[Plan[T]]) -> Plan[list[T]]:
    """Run ``plans`` side by side and return their results, in order.

    An error a round meets is thrown into every plan whose commands were in
    that round (each may catch it); one that escapes a plan ends them all.
    """
    results: list[Any] = [None] * len(plans)
    sends: dict[int, tuple[Any, BaseException | None]] = {number: (None, None) for number in range(len(plans))}
    try:
        while sends:
            steps: dict[int, Round] = {}
            for number, (reply, error) in sends.items():
                plan = plans[number]
                try:
                    steps[number] = plan.send(reply) if error is None else plan.throw(error)
                except StopIteration as stop:
                    results[number] = stop.value
            sends = {}
            for number, step in steps.items():
                if not isinstance(step, Pipeline):  # a script call, a pause, records emitted: alone
                    sends[number] = yield from _alone(step)
            for transaction in (False, True):
                group = [(number, step) for number, step in steps.items()
                         if isinstance(step, Pipeline) and step.transaction is transaction]
                if group:
                    sends.update((yield from _together(group, transaction)))
        return results
    finally:
        for plan in plans:
            plan.close()


def gather_in_turn(plans: Sequence[Plan[T]], first: int) -> Plan[list[T]]:
    """:func:`gather` of the first ``first`` plans, then of the rest: their results, in order.

    During a move the source layout is read before the current one, so that a
    record moved meanwhile is found by one read or the other (see
    :meth:`repocket.options.ModelOptions.sources`).
    """
    early = (yield from gather(plans[:first])) if first else []
    return [*early, *(yield from gather(plans[first:]))]


def _alone(step: Round) -> Plan[tuple[Any, BaseException | None]]:
    try:
        return (yield step), None
    except Exception as exc:  # noqa: BLE001 - handed to the plan that yielded the round
        return None, exc


def _together(group: list[tuple[int, Pipeline]],
              transaction: bool) -> Plan[dict[int, tuple[Any, BaseException | None]]]:
    """Send the pipelines of ``group`` as one, and split the replies back."""
    merged = Pipeline([cmd for _, step in group for cmd in step.commands], transaction, group[0][1].label)
    try:
        replies = yield merged
    except Exception as exc:  # noqa: BLE001 - handed to every plan of the round
        return {number: (None, exc) for number, _ in group}
    out: dict[int, tuple[Any, BaseException | None]] = {}
    start = 0
    for number, step in group:
        out[number] = (list(replies[start:start + len(step.commands)]), None)
        start += len(step.commands)
    return out
