"""Where reading and writing lived before the split: sync shortcuts to the plans.

The plans are :mod:`repocket.plan.load` and :mod:`repocket.plan.write`, and
:mod:`repocket.io.sync` runs them; these functions do both on a sync client,
for code (and tests) written against the old module.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import redis

from repocket.io import clients
from repocket.io.errors import wrap_redis_error
from repocket.plan import load as _load
from repocket.plan import write as _write
from repocket.plan.load import SECRET_MASK, Fetched, Pending, build, decode_field
from repocket.plan.write import LEASE_PAUSE, WRITE_BUDGET, WriteJob

if TYPE_CHECKING:
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = [
    "LEASE_PAUSE", "SECRET_MASK", "WRITE_BUDGET", "Fetched", "Pending", "WriteJob", "build", "decode_field",
    "delete_records", "fetch", "increment", "load", "save_instances", "wrap_redis_error",
]


def fetch(conn: redis.Redis, items: Sequence[tuple[ModelOptions, str]],
          fields: frozenset[str] | None = None) -> list[Fetched | None]:
    """:func:`repocket.plan.load.fetch` on ``conn``."""
    return clients.run(_load.fetch(items, fields), conn)


def load(conn: redis.Redis, meta: ModelOptions, record_keys: Sequence[str],
         identity: dict[str, ActiveRecord] | None = None,
         fields: frozenset[str] | None = None) -> list[ActiveRecord | None]:
    """:func:`repocket.plan.load.load` on ``conn``."""
    return clients.run(_load.load(meta, record_keys, identity, fields), conn)


def save_instances(conn: redis.Redis, meta: ModelOptions, instances: Sequence[ActiveRecord],
                   force: bool = False, *, fields: Collection[str] | None = None) -> None:
    """:func:`repocket.plan.write.save` on ``conn``."""
    clients.run(_write.save(meta, instances, force, fields=fields), conn)


def delete_records(conn: redis.Redis, meta: ModelOptions, instances: Sequence[ActiveRecord]) -> list[int]:
    """:func:`repocket.plan.write.delete` on ``conn``."""
    return clients.run(_write.delete(meta, instances), conn)


def increment(conn: redis.Redis, instance: ActiveRecord, name: str, amount: Any) -> Any:
    """:func:`repocket.plan.write.increment` on ``conn``."""
    return clients.run(_write.increment(instance, name, amount), conn)
