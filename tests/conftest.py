"""Shared test settings. The Redis fixtures come from the ``repocket.testing`` plugin."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from redis.cluster import RedisCluster

from repocket import configure
from repocket.topology import LocalCluster
from tests import FORMAT, PARTITIONS, drivers, roundtrips

settings.register_profile(
    "repocket",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("repocket")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker, fmt in (("envelope_only", "envelope"), ("plain_only", "plain")):
            if item.get_closest_marker(marker) and FORMAT != fmt:
                item.add_marker(pytest.mark.skip(reason=f"{marker}: this run stores the {FORMAT} format"))
        if item.get_closest_marker("one_partition") and PARTITIONS:
            item.add_marker(pytest.mark.skip(reason=f"one_partition: this run spreads models over {PARTITIONS}"))


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test through the sync executor, then again through the asyncio one (tests/drivers.py).

    A module opts in with ``pytestmark = pytest.mark.usefixtures("driver")``; a
    test that only makes sense on one of them marks itself ``sync_only``.
    """
    if request.param == "async" and request.node.get_closest_marker("sync_only"):
        pytest.skip("sync_only: this scenario drives the sync executor itself")
    if request.param == "sync":
        yield "sync"
        return
    async_driver = drivers.install(monkeypatch)
    roundtrips.count_async = True
    try:
        yield "async"
    finally:
        roundtrips.count_async = False
        async_driver.close()


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """repocket pointed at the session's cluster, every primary flushed; the standalone layout afterwards."""
    client = configure.cluster(url=redis_cluster.url)
    for node in client.get_primaries():
        client.get_redis_connection(node).flushall()
    yield client
    configure.reset()
