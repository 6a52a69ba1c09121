"""What ``Meta.changes`` and ``Meta.history`` cost per write (part of ``make bench``).

repocket's saves of a model recording its changes (and one keeping its
history too) against the hand-written equivalent on the same server: the
record's ``HSET`` and the change's ``XADD`` (and the version's ``XADD``) in
one ``MULTI``, with the same envelopes, fields and stream layout. The target
is a ratio of at most 1.3 (issue 12). A model recording nothing, against
``HSET`` alone in a ``MULTI``, is the baseline: what repocket's write costs
before anything is recorded.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.common import timed
from repocket import ActiveRecord, attributes

__all__ = ["TARGET", "Audited", "Unaudited", "Versioned", "measure", "missed", "table"]

#: The largest acceptable repocket / hand-written ratio.
TARGET = 1.3
#: Records written per run, one by one.
WRITES = 500


def _model(name: str, doc: str, **meta: Any) -> type[ActiveRecord]:
    """The benchmark's record (three attributes) with the ``Meta`` options ``meta``."""
    return type(name, (ActiveRecord,), {
        "__module__": __name__, "__doc__": doc, "name": attributes.Unicode(), "count": attributes.Integer(),
        "note": attributes.Unicode(), "Meta": type("Meta", (), {"namespace": "bench", **meta}),
    })


#: The record with nothing recorded: the baseline of what recording adds.
Unaudited = _model("Unaudited", "A record recording nothing.")
#: A record whose every write appends to its model's change stream.
Audited = _model("Audited", "A record recording its changes.", changes=True)
#: The same, keeping the last 10 versions of each record too.
Versioned = _model("Versioned", "A record recording its changes and versions.", changes=True, history=10)


class HandWrittenChanges:
    """HSET and XADD (and the version's XADD) in one MULTI, in repocket's layout, by hand."""

    def __init__(self, conn: redis.Redis, model: type[ActiveRecord], history: int) -> None:
        self.conn, self.meta, self.history = conn, model._meta, history
        self.revisions: dict[str, int] = {}

    def _encoded(self, row: dict[str, Any]) -> dict[str, bytes]:
        return {name: self.meta.format.encode(self.meta.fields[name], value) for name, value in row.items()}

    def write(self, pk: str, row: dict[str, Any], before: dict[str, bytes] | None) -> None:
        fields = self._encoded(row)
        key = self.meta.key(pk)
        revision = self.revisions[pk] = self.revisions.get(pk, 0) + 1
        entry: dict[str, Any] = {"op": "update" if before else "create", "id": pk, "key": key,
                                 "revision": revision, "at": 0, "actor": ""}
        for name, value in fields.items():
            entry[f"new:{name}"] = value
            if before and name in before:
                entry[f"old:{name}"] = before[name]
        pipe = self.conn.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        if not before:
            pipe.sadd(self.meta.ids_key, pk)
        if self.meta.changes is not None:
            pipe.xadd(f"{self.meta.prefix}:_changes", entry)
        if self.history:
            version = {"revision": revision, "at": 0, "actor": "", "op": entry["op"], **fields}
            pipe.xadd(f"{self.meta.prefix}:_history:{pk}", version, maxlen=self.history, approximate=False)
        pipe.execute()


def _pair(reps: int, rp: Callable[[], Any], hw: Callable[[], Any]) -> tuple[float, float, float]:
    """Best seconds of each side over ``reps`` runs, taking turns (and turns at going first), and the
    median of each run's own ratio (the two sides back to back, so a burst of load slows both)."""
    best = [math.inf, math.inf]
    ratios = []
    for rep in range(reps):
        took = [0.0, 0.0]
        for side in ((0, 1), (1, 0))[rep % 2]:
            took[side] = timed((rp, hw)[side])[0]
            best[side] = min(best[side], took[side])
        ratios.append(took[0] / took[1])
    return best[0], best[1], statistics.median(ratios)


def measure(conn: redis.Redis, reps: int) -> list[tuple[str, float, float, float]]:
    """``(operation, repocket µs, hand-written µs, paired ratio)`` per write."""
    out = []
    for model, history in ((Unaudited, 0), (Audited, 0), (Versioned, 10)):
        out += _measure(model, HandWrittenChanges(conn, model, history), max(reps, 7))
    return out


def _measure(model: type[ActiveRecord], hand: HandWrittenChanges,
             reps: int) -> list[tuple[str, float, float, float]]:
    label = "nothing recorded" if model._meta.changes is None else "changes" + (" + history" if hand.history else "")

    def create_rp() -> None:
        for n in range(WRITES):
            model.objects.create(name=f"n{n}", count=n, note="created")

    def create_hw() -> None:
        for n in range(WRITES):
            hand.write(str(uuid.uuid1()), {"name": f"n{n}", "count": n, "note": "created"}, None)

    rp_create, hw_create, create_ratio = _pair(reps, create_rp, create_hw)
    records = list(model.objects.all()[:WRITES])
    hand_ids = [str(uuid.uuid1()) for _ in range(WRITES)]
    for pk in hand_ids:
        hand.write(pk, {"name": "x", "count": 0, "note": "updated 0"}, None)
    turns = {"rp": 0, "hw": 0}

    def update_rp() -> None:
        turns["rp"] += 1
        for record in records:
            record.note = f"updated {turns['rp']}"
            record.save()

    def update_hw() -> None:
        old = hand._encoded({"note": f"updated {turns['hw']}"})
        turns["hw"] += 1
        for pk in hand_ids:
            hand.write(pk, {"note": f"updated {turns['hw']}"}, old)

    rp_update, hw_update, update_ratio = _pair(reps, update_rp, update_hw)
    return [(f"create, {label}", rp_create / WRITES * 1e6, hw_create / WRITES * 1e6, create_ratio),
            (f"update one field, {label}", rp_update / WRITES * 1e6, hw_update / WRITES * 1e6, update_ratio)]


def table(rows: list[tuple[str, float, float, float]]) -> str:
    """The rows as text: best µs of each side, the paired ratio and its verdict against :data:`TARGET`."""
    lines = [f"{'write (µs each, best)':<38}{'repocket':>10}{'MULTI':>10}{'paired':>8}  target ≤ {TARGET}"]
    for name, rp, hw, ratio in rows:
        verdict = "(baseline)" if "nothing recorded" in name else "met" if ratio <= TARGET else "MISSED"
        lines.append(f"{name:<38}{rp:>10.1f}{hw:>10.1f}{ratio:>8.2f}  {verdict}")
    return "\n".join(lines)


def missed(rows: list[tuple[str, float, float, float]]) -> list[str]:
    """The rows whose paired ratio is over :data:`TARGET`, as phrases."""
    return [f"{name}: {ratio:.2f}x the hand-written MULTI (target ≤ {TARGET})"
            for name, _, _, ratio in rows if ratio > TARGET and "nothing recorded" not in name]
