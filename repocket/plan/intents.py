"""Durable delete intents: how a delete whose strategies cross a cluster's slots survives a crash (planning only).

On a Redis Cluster the records a delete cascades to, sets to None or unlinks
live in other slots than the records it deletes, so no single script call
writes them all (:mod:`repocket.plan.relations`). Such a delete first writes
an **intent** in the partition of the records it deletes: a field of the hash
``<prefix>:_intents``, holding the keys of those records and when the delete
began. Then it does its work in steps, each one atomic call in one slot, in
an order that can be stopped anywhere and started again:

1. the records whose Pointers are set to None or whose lists drop a target;
2. the records cascaded to, the deepest first;
3. the records themselves; then the intent is removed.

A record is deleted only after every record pointing at it was dealt with,
so planning the graph again from the intent's keys finds whatever is left.
An intent older than :data:`STALE_AFTER` belongs to a delete that stopped
(its process died): the next such delete in that partition completes it, and
``check()`` reports it (``report.unfinished_deletes``) and, with
``repair=True``, completes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from repocket import keys
from repocket.plan.rounds import Command, Pipeline, Plan, command

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["STALE_AFTER", "Intent", "done", "note", "pending", "reading", "stale"]

#: Seconds after which an intent belongs to a delete that stopped (a running one ends well before:
#: its write calls give up after ``repocket.plan.write.WRITE_BUDGET`` seconds each).
STALE_AFTER = 30.0

#: One unfinished delete, as its partition, its token (the field of the intents hash) and the keys it deletes.
Intent = tuple["ModelOptions", str, list[str]]


def note(view: ModelOptions, token: str, record_keys: Sequence[str]) -> Command:
    """The command that writes an intent to delete ``record_keys`` (records of the partition ``view``)."""
    body = orjson.dumps({"keys": list(record_keys), "at": time.time()})
    return command("HSET", keys.intents_key(view.prefix), token, body)


def done(views_tokens: Sequence[tuple[ModelOptions, str]], label: str) -> Plan[None]:
    """Remove the intents of a delete that finished."""
    if views_tokens:
        yield Pipeline([command("HDEL", keys.intents_key(view.prefix), token) for view, token in views_tokens],
                       False, label)


def stale(views: Sequence[ModelOptions], replies: Sequence[Any], older_than: float | None = None) -> list[Intent]:
    """The intents older than ``older_than`` seconds (:data:`STALE_AFTER`) in the ``HGETALL`` ``replies``
    of the partitions ``views``."""
    older_than = STALE_AFTER if older_than is None else older_than
    now = time.time()
    found = []
    for view, reply in zip(views, replies):
        for token, raw in sorted(reply.items()):
            intent = orjson.loads(raw)
            if now - float(intent["at"]) >= older_than:
                found.append((view, token.decode(), [str(key) for key in intent["keys"]]))
    return found


def reading(views: Sequence[ModelOptions]) -> list[Command]:
    """The reads of the intents of the partitions ``views`` (one ``HGETALL`` each), for :func:`stale`."""
    return [command("HGETALL", keys.intents_key(view.prefix)) for view in views]


def pending(views: Sequence[ModelOptions], label: str, older_than: float | None = None) -> Plan[list[Intent]]:
    """The intents of the partitions ``views`` older than ``older_than`` seconds (:data:`STALE_AFTER`),
    in one round trip."""
    return stale(views, (yield Pipeline(reading(views), False, label)), older_than)
