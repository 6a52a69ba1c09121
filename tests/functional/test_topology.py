"""Real Redis Cluster and Sentinel topologies on loopback (repocket.topology, repocket.testing)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_py
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError
from redis.sentinel import Sentinel

from repocket.server import RedisServer
from repocket.topology import (
    CLUSTER_SLOTS,
    LocalCluster,
    LocalSentinel,
    SentinelProcess,
    cluster_nodes,
)

#: A failover (cluster or sentinel) must complete within this many seconds.
FAILOVER_BOUND = 20.0


# -- helpers ---------------------------------------------------------------------------


def _pid_gone(pid: int) -> bool:
    """Whether no process has this PID any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _client(port: int) -> redis_py.Redis:
    return redis_py.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


def _owned_slots(port: int) -> set[int]:
    """The slots the node on ``port`` says it serves."""
    me = next(node for node in cluster_nodes(port) if "myself" in node.flags)
    return {slot for low, high in me.slots for slot in range(low, high + 1)}


def _keys_for(port: int, count: int, prefix: str) -> list[str]:
    """``count`` keys whose slots the node on ``port`` serves."""
    slots = _owned_slots(port)
    keys: list[str] = []
    index = 0
    while len(keys) < count:
        key = f"{prefix}:{index}"
        if key_slot(key.encode()) in slots:
            keys.append(key)
        index += 1
    return keys


def _write_and_wait(port: int, values: dict[str, str]) -> None:
    """SET every key on the primary on ``port``, then WAIT until 1 replica has them.

    A pipeline sends the WAIT on the same connection as the writes, which is
    what it waits for.
    """
    with _client(port) as client:
        pipe = client.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value)
        pipe.wait(1, 5000)
        *sets, acked = pipe.execute()
    assert all(sets)
    assert acked == 1, f"only {acked} replica acknowledged the writes"


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


# -- RedisServer(extra_args=...) -------------------------------------------------------


@pytest.mark.parametrize(
    "extra_args",
    [
        ["--bind", "0.0.0.0"],
        ["--BIND", "0.0.0.0"],
        ["--protected-mode", "no"],
        ["--dir", "/tmp"],
        ["--include", "/tmp/other.conf"],
        ["--maxmemory", "10mb", "--bind", "::"],
        ["--maxmemory 1mb\nbind 0.0.0.0"],
        ["0.0.0.0"],
        "--maxmemory 10mb",
    ],
    ids=["bind", "BIND", "protected-mode", "dir", "include", "later", "newline", "value", "str"],
)
def test_extra_args_cannot_move_the_server(extra_args: list[str]) -> None:
    """An extra argument that would leave loopback or the server's directory is refused."""
    with pytest.raises(ValueError):
        RedisServer(extra_args=extra_args)


def test_extra_args_reach_the_server() -> None:
    """Extra arguments are appended to the command line and take effect."""
    with RedisServer(extra_args=["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"]) as s:
        assert s.port is not None
        with _client(s.port) as client:
            assert client.config_get("maxmemory") == {"maxmemory": str(10 * 1024 * 1024)}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}


# -- the cluster -----------------------------------------------------------------------


def test_cluster_has_three_primaries_with_one_replica_each(redis_cluster: LocalCluster) -> None:
    """3 primaries, each replicated by exactly 1 of the 3 replicas, all on loopback."""
    primaries, replicas = redis_cluster.primaries(), redis_cluster.replicas()
    assert len(primaries) == 3 and len(replicas) == 3
    assert set(primaries) | set(replicas) == set(redis_cluster.nodes)
    assert all(host == "127.0.0.1" for host, _ in redis_cluster.nodes)
    replicated = [redis_cluster.replicas_of(port) for _, port in primaries]
    assert all(len(of_one) == 1 for of_one in replicated)
    assert sorted(r for of_one in replicated for r in of_one) == sorted(replicas)
    for _, port in replicas:
        with _client(port) as client:
            info = client.info("replication")
        assert info["role"] == "slave" and info["master_link_status"] == "up"
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.nodes[0][1]}"
    assert "running=6/6" in repr(redis_cluster)


def test_cluster_covers_every_slot(redis_cluster: LocalCluster) -> None:
    """Every node says the cluster is ok; the primaries' slots are disjoint and cover 16384."""
    for _, port in redis_cluster.nodes:
        with _client(port) as client:
            info = client.cluster("INFO")
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == CLUSTER_SLOTS
        assert int(info["cluster_known_nodes"]) == 6
        assert int(info["cluster_size"]) == 3
    owned = [_owned_slots(port) for _, port in redis_cluster.primaries()]
    assert sum(map(len, owned)) == CLUSTER_SLOTS
    assert set().union(*owned) == set(range(CLUSTER_SLOTS))


def test_cluster_client_reads_and_writes_on_every_primary(
    redis_cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    """redis-py's RedisCluster routes keys to all three primaries, and each really holds its keys."""
    keys = [f"topology:rw:{index}" for index in range(30)]
    try:
        for key in keys:
            assert cluster_client.set(key, f"value of {key}")
        assert [cluster_client.get(key) for key in keys] == [f"value of {key}" for key in keys]
        owners = {key: cluster_client.get_node_from_key(key).port for key in keys}
        assert set(owners.values()) == {port for _, port in redis_cluster.primaries()}
        for key, port in owners.items():  # on the owning node itself, not through the client
            with _client(port) as client:
                assert client.get(key) == f"value of {key}"
        key = keys[0]
        other = next(p for _, p in redis_cluster.primaries() if p != owners[key])
        with _client(other) as client, pytest.raises(MovedError):
            client.get(key)
    finally:
        cluster_client.delete(*keys)


@pytest.mark.slow
def test_killed_primary_is_replaced_by_its_replica(
    redis_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """SIGKILL a primary: its replica takes over in bounded time with the writes WAIT confirmed."""
    cluster = redis_cluster_factory()
    values: dict[str, str] = {}
    for _, port in cluster.primaries():
        written = {key: f"value of {key}" for key in _keys_for(port, 5, "topology:failover")}
        _write_and_wait(port, written)
        values.update(written)
    victim = cluster.primaries()[0][1]
    [(_, heir)] = cluster.replicas_of(victim)

    started = time.monotonic()
    cluster.kill(victim)
    cluster.wait_until_ok(timeout=FAILOVER_BOUND)
    took = time.monotonic() - started

    assert took < FAILOVER_BOUND
    assert ("127.0.0.1", heir) in cluster.primaries()
    assert ("127.0.0.1", victim) not in cluster.primaries() + cluster.replicas()
    assert len(cluster.primaries()) == 3
    client = RedisCluster(host="127.0.0.1", port=heir, decode_responses=True)
    try:
        assert {key: client.get(key) for key in values} == values
        assert client.set("topology:after-failover", "yes")
        assert client.get("topology:after-failover") == "yes"
    finally:
        client.close()

    cluster.restart(victim)  # it comes back as the replica of its heir
    cluster.wait_until_ok(timeout=FAILOVER_BOUND)
    assert cluster.replicas_of(heir) == [("127.0.0.1", victim)]
    assert len(cluster.primaries()) == 3 and len(cluster.replicas()) == 3


def test_cluster_stop_leaves_no_process_or_directory(
    redis_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """stop() ends every node's process by PID and removes every node's directory."""
    cluster = redis_cluster_factory()
    pids = [server.pid for server in cluster.servers]
    paths = [server.path for server in cluster.servers]
    assert len(pids) == 6 and all(pid is not None for pid in pids)
    assert all(path is not None and path.is_dir() for path in paths)

    cluster.stop()

    assert all(_pid_gone(pid) for pid in pids if pid is not None)
    assert not any(path.exists() for path in paths if path is not None)
    assert cluster.servers == [] and cluster.nodes == []
    cluster.stop()  # idempotent


def test_cluster_failing_half_way_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that fails after the nodes are up stops them all, by PID, and removes their dirs."""
    seen: list[tuple[int, Path]] = []

    def broken_form(self: LocalCluster) -> None:
        for server in self.servers:
            assert server.pid is not None and server.path is not None
            seen.append((server.pid, server.path))
        raise RuntimeError("forming failed")

    monkeypatch.setattr(LocalCluster, "_form", broken_form)
    cluster = LocalCluster(primaries=3, replicas_per_primary=1)
    with pytest.raises(RuntimeError, match="forming failed"):
        cluster.start()
    assert len(seen) == 6
    assert all(_pid_gone(pid) for pid, _ in seen)
    assert not any(path.exists() for _, path in seen)
    assert cluster.servers == []


def test_cluster_argument_checks() -> None:
    with pytest.raises(ValueError):
        LocalCluster(primaries=0)
    with pytest.raises(ValueError):
        LocalCluster(replicas_per_primary=-1)
    with pytest.raises(KeyError):
        LocalCluster().kill(1)


# -- the Sentinel group ----------------------------------------------------------------


def test_every_sentinel_reports_the_primary(redis_sentinel: LocalSentinel) -> None:
    """Each of the 3 sentinels answers get-master-addr-by-name with the first server."""
    primary, replica = redis_sentinel.servers
    assert len(redis_sentinel.sentinels) == 3
    for _, port in redis_sentinel.sentinels:
        with _client(port) as client:
            reply = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", redis_sentinel.service_name
            )
        assert list(reply) == ["127.0.0.1", str(primary.port)]
    assert redis_sentinel.primary_address() == ("127.0.0.1", primary.port)
    assert replica.port is not None
    with _client(replica.port) as client:
        info = client.info("replication")
    assert info["role"] == "slave" and info["master_port"] == primary.port


def test_sentinel_files_are_private(redis_sentinel: LocalSentinel) -> None:
    """Each sentinel's directory is 0700 and its config file 0600, bound to loopback."""
    for process in redis_sentinel.sentinel_processes:
        assert process.path is not None
        assert stat.S_IMODE(process.path.stat().st_mode) == 0o700
        conf = process.path / "sentinel.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert "bind 127.0.0.1" in conf.read_text()


def test_sentinel_clients_write_to_the_primary_and_read_from_the_replica(
    redis_sentinel: LocalSentinel,
) -> None:
    """redis-py's Sentinel finds the primary to write to and the replica to read the write from."""
    sentinel = Sentinel(redis_sentinel.sentinels, socket_timeout=5, decode_responses=True)
    primary = sentinel.master_for(redis_sentinel.service_name, socket_timeout=5)
    replica = sentinel.slave_for(redis_sentinel.service_name, socket_timeout=5)
    try:
        pipe = primary.pipeline(transaction=False)
        pipe.set("topology:sentinel", "written")
        pipe.wait(1, 5000)
        assert pipe.execute() == [True, 1]
        assert replica.get("topology:sentinel") == "written"
        assert replica.info("replication")["role"] == "slave"
        with pytest.raises(redis_py.ReadOnlyError):
            replica.set("topology:sentinel", "on a replica")
    finally:
        primary.delete("topology:sentinel")
        primary.close()
        replica.close()


@pytest.mark.slow
def test_sentinel_failover_moves_the_primary(
    redis_sentinel_factory: Callable[..., LocalSentinel],
) -> None:
    """failover() promotes the replica: the sentinels report it, and writes go on there."""
    group = redis_sentinel_factory(3)
    old_primary, old_replica = group.servers
    assert old_primary.port is not None and old_replica.port is not None
    _write_and_wait(old_primary.port, {"topology:before": "kept"})

    started = time.monotonic()
    new = group.failover()
    assert time.monotonic() - started < FAILOVER_BOUND

    assert new == ("127.0.0.1", old_replica.port)
    assert group.primary_address() == new
    sentinel = Sentinel(group.sentinels, socket_timeout=5, decode_responses=True)
    assert sentinel.discover_master(group.service_name) == new
    primary = sentinel.master_for(group.service_name, socket_timeout=5)
    try:
        assert primary.info("replication")["role"] == "master"
        assert primary.get("topology:before") == "kept"
        assert primary.set("topology:after", "written")
    finally:
        primary.close()
    with _client(old_replica.port) as client:
        assert client.get("topology:after") == "written"


def test_sentinel_stop_leaves_no_process_or_directory(
    redis_sentinel_factory: Callable[..., LocalSentinel],
) -> None:
    """stop() ends the sentinels and both servers by PID and removes their directories."""
    group = redis_sentinel_factory()
    processes: list[RedisServer | SentinelProcess] = [*group.servers, *group.sentinel_processes]
    assert len(processes) == 3
    pids = [process.pid for process in processes]
    paths = [process.path for process in processes]
    assert all(pid is not None for pid in pids) and all(p is not None for p in paths)

    group.stop()

    assert all(_pid_gone(pid) for pid in pids if pid is not None)
    assert not any(path.exists() for path in paths if path is not None)
    assert group.sentinels == [] and group.servers == []


def test_sentinel_failing_half_way_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that fails once the sentinels run stops every process and removes every dir."""
    seen: list[tuple[int, Path]] = []

    def broken_ready(self: LocalSentinel) -> str | None:
        for process in [*self.servers, *self.sentinel_processes]:
            assert process.pid is not None and process.path is not None
            seen.append((process.pid, process.path))
        raise RuntimeError("not ready")

    monkeypatch.setattr(LocalSentinel, "_ready_problem", broken_ready)
    group = LocalSentinel()
    with pytest.raises(RuntimeError, match="not ready"):
        group.start()
    assert len(seen) == 3
    assert all(_pid_gone(pid) for pid, _ in seen)
    assert not any(path.exists() for _, path in seen)


def test_sentinel_argument_checks() -> None:
    with pytest.raises(ValueError):
        LocalSentinel(0)
    with pytest.raises(ValueError):
        LocalSentinel(3, quorum=4)
    with pytest.raises(ValueError):
        LocalSentinel(service_name="my master\nsentinel monitor x")
