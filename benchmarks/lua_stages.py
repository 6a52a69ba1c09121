"""``python -m benchmarks --lua-stages``: where the write script spends the server's time.

The write calls of 3,000 creates of the benchmark's ``Person`` (six fields, four
indexed; passed in by ``benchmarks.__main__``) are planned once, without sending them (``repocket.plan.write.save``
yields its script call). They are then replayed against variants of the
``write`` script, each alone in a flushed database, and ``INFO commandstats``
gives the ``EVALSHA`` µs per record:

- *empty*: a script that returns at once: Redis's cost of the call itself
  (parsing and copying its arguments into Lua);
- *parsed*: the real script, stopped after it has read the plan and checked
  every operation (``preflight``);
- *checked*: stopped after every check (key types, leases, guards, unique values);
- *full*: the real script.

Each difference is one stage's cost. The replay runs one record per call (create
one by one) and 500 per call (bulk create), with the ``new`` check of
generated ids and with the guards a given id gets, and prints the best of
``--reps`` runs of each.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

import redis

from benchmarks.common import tidy
from repocket import ActiveRecord
from repocket.io import scripts
from repocket.plan import write
from repocket.server import RedisServer

__all__ = ["RECORDS", "main", "planned_calls", "stages"]

#: Creates replayed per run.
RECORDS = 3000


def planned_calls(person: type[ActiveRecord], batch: int, fresh: bool,
                  seed: int = 1) -> list[tuple[list[str], list[Any]]]:
    """The KEYS and ARGV of the write calls creating :data:`RECORDS` records, ``batch`` per call."""
    rng = random.Random(seed)
    calls = []
    for _ in range(RECORDS // batch):
        people = [person(id=uuid.uuid1(), name=f"p{rng.random()}", age=rng.randrange(90), city=rng.choice("abcdefgh"),
                         bio="x" * 30, score=rng.random(), tag=f"t{rng.randrange(50)}") for _ in range(batch)]
        ids = {str(p.id) for p in people} if fresh else set()
        step = next(write.save(person._meta, people, fresh=ids))
        calls.append((list(step.keys), list(step.args)))
    return calls


def stages() -> dict[str, str]:
    """The script variants, by stage name (see the module docstring)."""
    source = scripts.get("write").source
    checks_start, writes_start = "local typed = {}", 'local out = {"ok"}'
    assert checks_start in source and writes_start in source, "the write script's stages have moved"
    return {
        "empty": "return {'ok'}",
        "parsed": source.replace(checks_start, "do return {'ok'} end\n" + checks_start, 1),
        "checked": source.replace(writes_start, "do return {'ok'} end\n" + writes_start, 1),
        "full": source,
    }


def _replay(conn: redis.Redis, body: str, calls: Sequence[tuple[list[str], list[Any]]]) -> float:
    """µs of server time per record for ``calls`` run by ``body`` in a flushed database."""
    conn.flushall()
    sha = conn.script_load(body)
    conn.config_resetstat()
    for keys, args in calls:
        conn.evalsha(sha, len(keys), *keys, *args)
    stats = conn.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("usec", 0)) / RECORDS


def main(person: type[ActiveRecord], out: TextIO, reps: int = 3) -> None:
    """Replay the creates of ``person`` (the benchmark's model) against every stage and print the table."""
    variants = stages()
    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        out.write(f"write script, server µs per record (best of {reps}), {RECORDS:,} creates of {person.__name__}\n")
        out.write(f"{'case':<36}" + "".join(f"{name:>9}" for name in variants) + "\n")
        for batch in (1, 500):
            for fresh in (True, False):
                calls = planned_calls(person, batch, fresh)
                best = {name: min(_replay(conn, body, calls) for _ in range(reps)) for name, body in variants.items()}
                case = f"{batch} per call, {'generated ids (new)' if fresh else 'given ids (guards)'}"
                out.write(f"{case:<36}" + "".join(f"{best[name]:9.1f}" for name in variants) + "\n")
        out.write(tidy("each stage costs its column minus the one before it: parsed - empty is the plan's "
                       "reading and preflight, checked - parsed the checks, full - checked the writes") + "\n")
