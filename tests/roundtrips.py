"""The project's round-trip counter: :mod:`repocket.roundtrips`, counting async requests only under
the ``async`` driver.

The ``driver`` fixture (tests/conftest.py) sets :data:`count_async` while a
test runs through the asyncio executor, whose event loop runs in the test's
thread (tests/drivers.py); under the sync driver only sync requests count, so
a test may count its own async requests separately::

    with count_round_trips() as trips:
        record.save()
    assert trips.count == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from repocket import roundtrips
from repocket.roundtrips import RoundTrips, parse_request

__all__ = ["RoundTrips", "count_round_trips", "parse_request"]

#: Whether ``redis.asyncio`` requests count too: set by the ``async`` test driver.
count_async = False


@contextmanager
def count_round_trips() -> Iterator[RoundTrips]:
    """Count the requests this thread sends to Redis inside the block (async ones under the async driver)."""
    with roundtrips.count_round_trips(include_async=count_async) as trips:
        yield trips
