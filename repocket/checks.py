"""Where check() and reindex() lived before the split: sync shortcuts to :mod:`repocket.plan.audit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from repocket.io import clients
from repocket.plan import audit
from repocket.plan.audit import CheckReport

if TYPE_CHECKING:
    import redis

    from repocket.model import ActiveRecord

__all__ = ["CheckReport", "check", "reindex"]


def reindex(model: type[ActiveRecord], *, batch_size: int = 500,
            progress: Callable[[int, int], None] | None = None,
            connection: redis.Redis | None = None) -> int:
    """Add every stored record to the id set and its index entries; see ``Manager.reindex``."""
    return clients.run(audit.reindex(model, batch_size, progress), connection)


def check(model: type[ActiveRecord], *, repair: bool = False,
          connection: redis.Redis | None = None) -> CheckReport:
    """Compare the id set and every index with the stored records; see ``Manager.check``."""
    return clients.run(audit.check(model, repair), connection)
