"""Real multi-server Redis topologies on loopback: a Redis Cluster and a Sentinel group.

Code that talks to Redis Cluster or Sentinel (``redis.cluster.RedisCluster``,
``redis.sentinel.Sentinel``) has to be tested against the real thing: slot
routing, ``MOVED`` redirections, replica promotion and sentinel discovery are
behaviours of the servers, which no fake reproduces. This module starts them
from the same ``redis-server`` binary as the rest of the tests
(:func:`repocket.server.find_redis_server`):

- :class:`LocalCluster`: by default 3 primaries with 1 replica each, every node
  a :class:`~repocket.server.RedisServer` in cluster mode;
- :class:`LocalSentinel`: a primary, a replica and one or more sentinels
  (:class:`SentinelProcess`).

Every process listens on 127.0.0.1 only, on a free port, keeps its files in a
private temporary directory of its own (``0700``), and is stopped by its PID
(SIGTERM, then SIGKILL after 10 s) by ``stop()``, at interpreter exit, and when
a start fails half way, so no server outlives the topology. Waits are bounded:
a topology that does not become healthy in time raises
:class:`~repocket.errors.RepocketError` and is torn down. The pytest plugin
(:mod:`repocket.testing`) offers both as fixtures.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from repocket.errors import RepocketError
from repocket.server import (
    _ADDRESS_IN_USE,
    _O_NOFOLLOW,
    RedisServer,
    _config_quote,
    _free_port,
    find_redis_server,
)

__all__ = [
    "CLUSTER_SLOTS",
    "ClusterNode",
    "LocalCluster",
    "LocalSentinel",
    "SentinelProcess",
    "cluster_nodes",
]

#: The number of hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384
HOST = "127.0.0.1"
#: The cluster bus of a node listens on its port plus this.
_BUS_OFFSET = 10000
_MAX_PORT = 65535
_PORT_ATTEMPTS = 5
_PORT_PICKS = 1000
_ADDSLOTS_CHUNK = 1000
_START_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05
_CLIENT_TIMEOUT = 2.0
#: How long stop() waits for AOF rewrites and syncs to end before SIGTERM.
_QUIET_TIMEOUT = 5.0
_SENTINEL_CONF = "sentinel.conf"
#: Flags of a cluster node that is not (yet) a healthy member.
_UNHEALTHY_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})
_SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")

Address = tuple[str, int]


def _client(port: int, timeout: float = _CLIENT_TIMEOUT) -> redis.Redis:
    """A string-decoding client for one node on 127.0.0.1, with short timeouts and no retries."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _info(port: int, section: str, timeout: float = _CLIENT_TIMEOUT) -> dict[str, Any]:
    """``INFO <section>`` of the server on ``port``, parsed by redis-py."""
    with _client(port, timeout) as client:
        info: dict[str, Any] = client.info(section)
        return info


def _busy(port: int, timeout: float = _CLIENT_TIMEOUT) -> str | None:
    """What the server on ``port`` is doing that a SIGTERM would not interrupt cleanly.

    Redis 6.2 refuses SIGTERM ("Writing initial AOF, can't exit") while it
    writes its first AOF, which a replica with ``appendonly yes`` does after
    every full sync; such a node would only die at the SIGKILL, 10 s later.
    """
    info = _info(port, "persistence", timeout)
    if info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"):
        return f"node {port} is rewriting its AOF"
    if info.get("loading"):
        return f"node {port} is loading its data"
    if _info(port, "replication", timeout).get("master_sync_in_progress"):
        return f"node {port} is syncing with its primary"
    return None


def _raw(port: int, *args: str | int) -> Any:
    """Run one command on ``port`` and return its reply unparsed (decoded strings)."""
    with _client(port) as client:
        # The command name alone selects no response callback: the reply stays raw.
        return client.execute_command(*args)


def _wait_for(
    what: str, problem: Callable[[], str | None], timeout: float, on_error: bool = True
) -> None:
    """Poll ``problem`` every 50 ms until it returns ``None``; raise after ``timeout`` seconds.

    A connection error or a timeout while probing counts as a problem (a node
    is restarting), unless ``on_error`` is false.

    Raises:
        RepocketError: still a problem at the deadline; the message says which.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = problem()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if not on_error:
                raise
            current = f"{type(error).__name__}: {error}"
        if current is None:
            return
        if time.monotonic() > deadline:
            raise RepocketError(f"{what} within {timeout:g} s: {current}")
        time.sleep(_POLL_INTERVAL)


def _port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too, and neither in ``taken``.

    Raises:
        RepocketError: none found in 1000 tries.
    """
    for _ in range(_PORT_PICKS):
        port = _free_port()
        bus = port + _BUS_OFFSET
        if bus > _MAX_PORT or {port, bus} & taken:
            continue
        if _port_free(bus):
            return port
    raise RepocketError("found no free pair of ports (port, port + 10000) on 127.0.0.1")


def _split_slots(primaries: int) -> list[tuple[int, int]]:
    """The 16384 slots in ``primaries`` contiguous, inclusive ranges, as redis-cli splits them."""
    per = CLUSTER_SLOTS / primaries
    bounds = [round(per * i) for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


def _port_of(server: RedisServer) -> int:
    """The TCP port of a server started here (always on a port, never a unix socket)."""
    port = server.port
    assert port is not None
    return port


# -- cluster -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``: a node as some node sees it."""

    node_id: str
    host: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        """Whether the line's node is flagged ``master``."""
        return "master" in self.flags

    @property
    def slot_count(self) -> int:
        """How many slots it serves, in that node's view."""
        return sum(high - low + 1 for low, high in self.slots)

    @classmethod
    def parse(cls, line: str) -> ClusterNode:
        """Parse ``<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...``."""
        fields = line.split()
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = address.rpartition(":")
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being imported or migrated
                continue
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        return cls(
            node_id=fields[0],
            host=host,
            port=int(port),
            flags=frozenset(fields[2].split(",")),
            primary_id=None if fields[3] == "-" else fields[3],
            slots=tuple(slots),
        )


def cluster_nodes(port: int) -> list[ClusterNode]:
    """``CLUSTER NODES`` as the node on ``port`` sees the cluster."""
    text: str = _raw(port, "CLUSTER", "NODES")
    return [ClusterNode.parse(line) for line in text.splitlines() if line.strip()]


def _myself(nodes: list[ClusterNode]) -> ClusterNode:
    """The line of the node that answered."""
    return next(node for node in nodes if "myself" in node.flags)


class LocalCluster:
    """A real Redis Cluster on 127.0.0.1: ``primaries`` primaries with ``replicas_per_primary`` each.

    Args:
        primaries: the number of primaries; the 16384 slots are split between
            them in contiguous ranges.
        replicas_per_primary: the number of replicas of each primary.
        binary: the ``redis-server`` to run; defaults to
            :func:`~repocket.server.find_redis_server`.
        node_timeout_ms: ``cluster-node-timeout``: how long a node may be
            unreachable before it is failed over (the default of 2 s makes a
            failover take a few seconds).
        start_timeout: how long :meth:`start` waits for the cluster to become
            healthy, in seconds.

    Every node is a :class:`~repocket.server.RedisServer` in its own temporary
    directory, with the append-only file on (fsynced on every write) and
    ``cluster-allow-reads-when-down no``. :meth:`start` forms the cluster with
    ``CLUSTER ADDSLOTS``, ``CLUSTER MEET`` and ``CLUSTER REPLICATE``, the first
    ``primaries`` nodes being the primaries; roles change on a failover, so
    :meth:`primaries` and :meth:`replicas` ask the nodes.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        *,
        binary: str | None = None,
        node_timeout_ms: int = 2000,
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        if primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        if replicas_per_primary < 0:
            raise ValueError("replicas_per_primary must not be negative")
        if node_timeout_ms <= 0:
            raise ValueError("node_timeout_ms must be positive")
        self._primaries = primaries
        self._replicas_per_primary = replicas_per_primary
        self._binary = binary
        self._node_timeout_ms = node_timeout_ms
        self._start_timeout = start_timeout
        self._servers: list[RedisServer] = []

    # -- public API ------------------------------------------------------------------

    @property
    def servers(self) -> list[RedisServer]:
        """The nodes' :class:`~repocket.server.RedisServer` objects, in start order."""
        return list(self._servers)

    @property
    def nodes(self) -> list[Address]:
        """Every node's ``(host, port)``, in start order (running or not)."""
        return [(HOST, _port_of(server)) for server in self._servers]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port of the first node>``, for ``RedisCluster.from_url``.

        Raises:
            RepocketError: the cluster is not started.
        """
        if not self._servers:
            raise RepocketError("the cluster has no nodes until it is started")
        return f"redis://{HOST}:{_port_of(self._servers[0])}"

    def start(self) -> LocalCluster:
        """Start every node, form the cluster and wait until it is healthy; no-op if started.

        Healthy means what :meth:`wait_until_ok` checks. If anything fails or
        is interrupted half way, every node started so far is stopped.

        Raises:
            ServerNotFoundError: no ``redis-server`` binary.
            RepocketError: a node did not start, or the cluster was not healthy
                within ``start_timeout``.
        """
        if self._servers:
            return self
        try:
            binary = self._binary or find_redis_server()
            taken: set[int] = set()
            for _ in range(self._primaries * (1 + self._replicas_per_primary)):
                self._servers.append(self._start_node(binary, taken))
            self._form()
            self.wait_until_ok(self._start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node by its PID (SIGTERM, then SIGKILL) and remove its directory; idempotent.

        Waits (at most 5 s) for AOF rewrites and syncs in progress to end
        first, since Redis 6.2 ignores a SIGTERM while it writes its first AOF.
        The cluster is then empty: :meth:`start` would form a new one.
        """
        try:
            _wait_for("", self._busy_problem, _QUIET_TIMEOUT, on_error=False)
        except (RepocketError, redis.RedisError):
            pass  # stop anyway: the SIGKILL after 10 s ends a node that ignores the SIGTERM
        servers, self._servers = self._servers, []
        errors: list[BaseException] = []
        for server in servers:
            try:
                server.stop()
            except Exception as error:  # stop the others all the same
                errors.append(error)
        if errors:
            raise errors[0]

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its directory stays, for :meth:`restart`)."""
        self._server(port).kill()

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again (stopping it first if it runs), with its data and nodes.conf.

        It rejoins the cluster on its own; call :meth:`wait_until_ok` to wait for that.
        """
        server = self._server(port)
        if server.running:
            server.restart()
        else:
            server.start()

    def wait_until_ok(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until the running nodes form a healthy cluster.

        That is: every running node says ``cluster_state:ok``, knows every node,
        flags no running node as failing or in handshake, and agrees with the
        others on which primaries serve the 16384 slots, all of them running;
        every running replica reports ``master_link_status:up``; and no node is
        still loading, syncing or rewriting its AOF. So after :meth:`kill` of
        a primary, it returns once a replica has taken over.

        Raises:
            RepocketError: not so after ``timeout`` seconds; says what was wrong.
        """
        _wait_for("the cluster was not healthy", self._health_problem, timeout)

    def primaries(self) -> list[Address]:
        """The running nodes that say they are a primary serving slots, in start order."""
        return [address for address, me in self._roles() if me.is_primary and me.slots]

    def replicas(self) -> list[Address]:
        """The running nodes that say they are a replica, in start order."""
        return [address for address, me in self._roles() if "slave" in me.flags]

    def replicas_of(self, port: int) -> list[Address]:
        """The running nodes that say they replicate the node on ``port``."""
        primary_id = _myself(cluster_nodes(port)).node_id
        return [address for address, me in self._roles() if me.primary_id == primary_id]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(port) for _, port in self.nodes) or "-"
        running = sum(server.running for server in self._servers)
        return (
            f"<{type(self).__name__} primaries={self._primaries} "
            f"replicas_per_primary={self._replicas_per_primary} {HOST}:{ports} "
            f"running={running}/{len(self._servers)}>"
        )

    # -- internals -------------------------------------------------------------------

    def _server(self, port: int) -> RedisServer:
        """The node on ``port``.

        Raises:
            KeyError: no node of this cluster listens there.
        """
        for server in self._servers:
            if server.port == port:
                return server
        raise KeyError(f"no node of this cluster on port {port}")

    def _running_ports(self) -> list[int]:
        return [_port_of(server) for server in self._servers if server.running]

    def _start_node(self, binary: str, taken: set[int]) -> RedisServer:
        """Start one node on a port whose bus port is free too; pick again if one was taken."""
        for attempt in range(_PORT_ATTEMPTS):
            port = _cluster_port(taken)
            server = RedisServer(
                port=port,
                appendonly=True,
                binary=binary,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self._node_timeout_ms),
                    "--cluster-allow-reads-when-down", "no",
                ],
            )  # fmt: skip
            try:
                server.start()
            except RepocketError as error:  # start() left nothing behind
                if _ADDRESS_IN_USE in str(error) and attempt + 1 < _PORT_ATTEMPTS:
                    continue
                raise
            taken.update({port, port + _BUS_OFFSET})
            return server
        raise AssertionError("unreachable")  # pragma: no cover

    def _form(self) -> None:
        """Assign the slots, introduce the nodes to each other, then attach the replicas."""
        ports = [_port_of(server) for server in self._servers]
        primaries, replicas = ports[: self._primaries], ports[self._primaries :]
        ids = [str(_raw(port, "CLUSTER", "MYID")) for port in ports]
        for epoch, port in enumerate(ports, start=1):
            # Distinct epochs up front: no epoch collision to resolve after MEET.
            _raw(port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for port, (low, high) in zip(primaries, _split_slots(self._primaries)):
            for first in range(low, high + 1, _ADDSLOTS_CHUNK):  # 6.2 has no ADDSLOTSRANGE
                _raw(
                    port,
                    "CLUSTER",
                    "ADDSLOTS",
                    *range(first, min(first + _ADDSLOTS_CHUNK, high + 1)),
                )
        for port in ports[1:]:
            _raw(ports[0], "CLUSTER", "MEET", HOST, port)
        _wait_for("the nodes did not all meet", self._meet_problem, self._start_timeout)
        for index, port in enumerate(replicas):
            _raw(port, "CLUSTER", "REPLICATE", ids[index % self._primaries])

    def _meet_problem(self) -> str | None:
        """What keeps the nodes from all knowing each other, if anything."""
        total = len(self._servers)
        for port in self._running_ports():
            nodes = cluster_nodes(port)
            if len(nodes) < total:
                return f"node {port} knows {len(nodes)} of {total} nodes"
            pending = [node.port for node in nodes if node.flags & {"handshake", "noaddr"}]
            if pending:
                return f"node {port} is still in handshake with {pending}"
        return None

    def _busy_problem(self) -> str | None:
        """The first running node that is busy (see :func:`_busy`), if any."""
        for port in self._running_ports():
            busy = _busy(port, timeout=0.5)
            if busy is not None:
                return busy
        return None

    def _health_problem(self) -> str | None:
        """What keeps the running nodes from being a healthy cluster, if anything."""
        running = self._running_ports()
        if not running:
            return "no node is running"
        views: dict[int, frozenset[tuple[int, tuple[tuple[int, int], ...]]]] = {}
        for port in running:
            info: str = _raw(port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info.split():
                return f"node {port} says cluster_state is not ok"
            nodes = cluster_nodes(port)
            if len(nodes) < len(self._servers):
                return f"node {port} knows {len(nodes)} of {len(self._servers)} nodes"
            for node in nodes:
                if node.port in running and node.flags & _UNHEALTHY_FLAGS:
                    return f"node {port} flags node {node.port} {','.join(sorted(node.flags))}"
            views[port] = frozenset((n.port, n.slots) for n in nodes if n.is_primary and n.slots)
            if "slave" in _myself(nodes).flags:
                link = _info(port, "replication").get("master_link_status")
                if link != "up":
                    return f"replica {port} has master_link_status:{link}"
            busy = _busy(port)
            if busy is not None:
                return busy
        if len(set(views.values())) > 1:
            return f"the nodes disagree on who serves which slots: {views}"
        stopped = sorted(port for port, _ in next(iter(views.values())) if port not in running)
        if stopped:
            return f"the slots of stopped nodes {stopped} are not failed over yet"
        owned = sum(
            high - low + 1 for _, slots in next(iter(views.values())) for low, high in slots
        )
        if owned != CLUSTER_SLOTS:
            return f"{owned} of {CLUSTER_SLOTS} slots are served"
        return None

    def _roles(self) -> list[tuple[Address, ClusterNode]]:
        """Each running node's address and its own line of ``CLUSTER NODES``."""
        return [((HOST, port), _myself(cluster_nodes(port))) for port in self._running_ports()]


# -- sentinel ------------------------------------------------------------------------


class SentinelProcess(RedisServer):
    """A ``redis-server <conf> --sentinel`` child process watching one primary.

    A :class:`~repocket.server.RedisServer` in sentinel mode: it is started,
    probed, given a new free port when another process takes the one picked,
    and stopped by its PID exactly as the servers are. Sentinels must have a
    config file they can rewrite: it is written, ``0600``, into the server's
    fresh private temporary directory (which holds the log too, and which
    :meth:`~repocket.server.RedisServer.stop` removes), for the port of each start. The sentinel listens
    on 127.0.0.1 only.

    Args:
        service_name: the name the primary is monitored under.
        primary_port: the primary's port on 127.0.0.1.
        quorum: how many sentinels must agree that the primary is down.
        binary: the ``redis-server`` to run; defaults to
            :func:`~repocket.server.find_redis_server`.
        down_after_ms: ``down-after-milliseconds``.
        failover_timeout_ms: ``failover-timeout``.
    """

    def __init__(
        self,
        service_name: str,
        primary_port: int,
        quorum: int,
        *,
        binary: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        _check_service_name(service_name)
        super().__init__(binary=binary)
        self._service_name = service_name
        self._primary_port = primary_port
        self._quorum = quorum
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {HOST}:{self._port} service={self._service_name!r} "
            f"pid={self.pid} running={self.running}>"
        )

    def _arguments(self, binary: str, data_dir: Path) -> list[str]:
        """Write the sentinel's config for this start's port; the command line names it."""
        conf = data_dir / _SENTINEL_CONF
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(self._config(data_dir))
        return [binary, str(conf), "--sentinel"]

    def _config(self, directory: Path) -> str:
        name = self._service_name
        return "\n".join(
            [
                f"port {self._port}",
                f"bind {HOST}",
                "protected-mode yes",
                "daemonize no",
                f"dir {_config_quote(str(directory))}",
                'logfile ""',  # stdout, which goes to the log file
                f"sentinel monitor {name} {HOST} {self._primary_port} {self._quorum}",
                f"sentinel down-after-milliseconds {name} {self._down_after_ms}",
                f"sentinel failover-timeout {name} {self._failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
                "",
            ]
        )


def _check_service_name(name: str) -> None:
    """Refuse a service name that could inject a directive into sentinel.conf."""
    if not name or not set(name) <= _SERVICE_CHARS:
        raise ValueError(f"service_name must be letters, digits, '-', '_' or '.': {name!r}")


def _fields(item: Any) -> dict[str, str]:
    """One instance of a ``SENTINEL REPLICAS``/``SENTINELS`` reply: a map (RESP3) or a flat list."""
    if isinstance(item, dict):
        return {str(key): str(value) for key, value in item.items()}
    return {str(key): str(value) for key, value in zip(item[::2], item[1::2])}


def _sentinel_replicas(port: int, service_name: str) -> list[dict[str, str]]:
    """``SENTINEL REPLICAS <service>`` asked of the sentinel on ``port``, one dict per replica."""
    reply: list[Any] = _raw(port, "SENTINEL", "REPLICAS", service_name)
    return [_fields(item) for item in reply]


def _sentinel_peers(port: int, service_name: str) -> list[dict[str, str]]:
    """``SENTINEL SENTINELS <service>``: the other sentinels this one knows."""
    reply: list[Any] = _raw(port, "SENTINEL", "SENTINELS", service_name)
    return [_fields(item) for item in reply]


def _sentinel_primary(port: int, service_name: str) -> Address | None:
    """``SENTINEL GET-MASTER-ADDR-BY-NAME`` asked of the sentinel on ``port``."""
    reply: list[str] | None = _raw(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", service_name)
    if not reply:
        return None
    return reply[0], int(reply[1])


class LocalSentinel:
    """A Sentinel group on 127.0.0.1: a primary, one replica of it, and ``sentinels`` sentinels.

    Args:
        sentinels: how many sentinels watch the primary (1 or 3 are typical).
        service_name: the name the primary is monitored under.
        quorum: how many sentinels must agree that the primary is down;
            defaults to a majority.
        binary: the ``redis-server`` to run; defaults to
            :func:`~repocket.server.find_redis_server`.
        down_after_ms: ``down-after-milliseconds``.
        failover_timeout_ms: ``failover-timeout``.
        start_timeout: how long :meth:`start` and :meth:`failover` wait, in seconds.

    The primary and the replica are :class:`~repocket.server.RedisServer`
    objects (the replica started with ``--replicaof``), the sentinels
    :class:`SentinelProcess` objects; all are stopped by their PID.
    """

    def __init__(
        self,
        sentinels: int = 1,
        *,
        service_name: str = "mymaster",
        quorum: int | None = None,
        binary: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        if sentinels < 1:
            raise ValueError("a Sentinel group needs at least one sentinel")
        quorum = quorum if quorum is not None else sentinels // 2 + 1
        if not 1 <= quorum <= sentinels:
            raise ValueError(f"quorum must be between 1 and {sentinels}")
        _check_service_name(service_name)
        self._count = sentinels
        self._service_name = service_name
        self._quorum = quorum
        self._binary = binary
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self._start_timeout = start_timeout
        self._servers: list[RedisServer] = []
        self._sentinels: list[SentinelProcess] = []

    # -- public API ------------------------------------------------------------------

    @property
    def service_name(self) -> str:
        """The name the sentinels monitor the primary under (for ``master_for``)."""
        return self._service_name

    @property
    def sentinels(self) -> list[Address]:
        """Every sentinel's ``(host, port)``, as ``redis.sentinel.Sentinel`` takes them."""
        return [(HOST, p.port) for p in self._sentinels if p.port is not None]

    @property
    def sentinel_processes(self) -> list[SentinelProcess]:
        """The sentinels' :class:`SentinelProcess` objects."""
        return list(self._sentinels)

    @property
    def servers(self) -> list[RedisServer]:
        """The data servers, the first primary, then its replica (roles change on a failover)."""
        return list(self._servers)

    def start(self) -> LocalSentinel:
        """Start the primary, the replica, then the sentinels; wait until all is in place; no-op if started.

        In place means: the replica's link to the primary is up, and every
        sentinel reports the primary, knows the replica (and its link), and
        knows the other sentinels. If anything fails half way, every process
        started so far is stopped.

        Raises:
            ServerNotFoundError: no ``redis-server`` binary.
            RepocketError: a process did not start, or the group was not in
                place within ``start_timeout``.
        """
        if self._servers:
            return self
        try:
            binary = self._binary or find_redis_server()
            primary = RedisServer(binary=binary)
            self._servers.append(primary)
            primary.start()
            primary_port = _port_of(primary)
            replica = RedisServer(
                binary=binary, extra_args=["--replicaof", HOST, str(primary_port)]
            )
            self._servers.append(replica)
            replica.start()
            # Sentinels started after the link is up see the replica in their first INFO.
            _wait_for(
                "the replica did not sync",
                lambda: self._link_problem(_port_of(replica)),
                self._start_timeout,
            )
            for _ in range(self._count):
                sentinel = SentinelProcess(
                    self._service_name,
                    primary_port,
                    self._quorum,
                    binary=binary,
                    down_after_ms=self._down_after_ms,
                    failover_timeout_ms=self._failover_timeout_ms,
                )
                self._sentinels.append(sentinel)
                sentinel.start()
            _wait_for("the sentinels were not ready", self._ready_problem, self._start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the sentinels, then the servers, each by its PID; remove their directories; idempotent."""
        processes: list[SentinelProcess | RedisServer] = [*self._sentinels, *self._servers]
        self._sentinels, self._servers = [], []
        errors: list[BaseException] = []
        for process in processes:
            try:
                process.stop()
            except Exception as error:  # stop the others all the same
                errors.append(error)
        if errors:
            raise errors[0]

    def primary_address(self) -> Address:
        """The primary's ``(host, port)`` as the first sentinel that answers reports it.

        Raises:
            RepocketError: no sentinel answered.
        """
        errors: list[str] = []
        for _, port in self.sentinels:
            try:
                address = _sentinel_primary(port, self._service_name)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                errors.append(f"{port}: {error}")
                continue
            if address is not None:
                return address
            errors.append(f"{port}: does not know {self._service_name!r}")
        raise RepocketError(f"no sentinel reported the primary: {'; '.join(errors) or 'none'}")

    def failover(self, timeout: float | None = None) -> Address:
        """Make the sentinels promote the replica, and return the new primary's address.

        Sends ``SENTINEL FAILOVER <service>`` (retried while the sentinel has no
        suitable replica yet), then waits until every sentinel reports a new
        primary address and that server says ``role:master``. The old primary
        is turned into a replica by the sentinels later, after several seconds;
        a second failover has to wait for that.

        Raises:
            RepocketError: the failover did not complete within ``timeout``
                seconds (default: ``start_timeout``).
        """
        timeout = self._start_timeout if timeout is None else timeout
        old = self.primary_address()
        port = self.sentinels[0][1]

        def not_sent() -> str | None:
            try:
                _raw(port, "SENTINEL", "FAILOVER", self._service_name)
            except redis.ResponseError as error:
                if "NOGOODSLAVE" in str(error) or "INPROG" in str(error):
                    return str(error)
                raise RepocketError(f"SENTINEL FAILOVER failed: {error}") from error
            return None

        deadline = time.monotonic() + timeout
        _wait_for("SENTINEL FAILOVER was refused", not_sent, timeout)
        new: list[Address] = []

        def not_switched() -> str | None:
            reported = {_sentinel_primary(p, self._service_name) for _, p in self.sentinels}
            if len(reported) != 1 or old in reported or None in reported:
                return f"the sentinels report {sorted(map(str, reported))} (was {old})"
            address = reported.pop()
            assert address is not None
            role = _info(address[1], "replication").get("role")
            if role != "master":
                return f"{address} has role:{role}"
            new[:] = [address]
            return None

        _wait_for(
            "the failover did not complete", not_switched, max(0.0, deadline - time.monotonic())
        )
        return new[0]

    def __enter__(self) -> LocalSentinel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        servers = ",".join(str(s.port) for s in self._servers) or "-"
        sentinels = ",".join(str(p.port) for p in self._sentinels) or "-"
        return (
            f"<{type(self).__name__} service={self._service_name!r} servers={HOST}:{servers} "
            f"sentinels={HOST}:{sentinels}>"
        )

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _link_problem(port: int) -> str | None:
        """What keeps the replica on ``port`` from being in sync, if anything."""
        info = _info(port, "replication")
        if info.get("role") != "slave" or info.get("master_link_status") != "up":
            return f"replica {port}: role:{info.get('role')} link:{info.get('master_link_status')}"
        return None

    def _ready_problem(self) -> str | None:
        """What keeps the sentinels from being ready for a failover, if anything."""
        primary, replica = (_port_of(server) for server in self._servers)
        for _, port in self.sentinels:
            address = _sentinel_primary(port, self._service_name)
            if address != (HOST, primary):
                return f"sentinel {port} reports primary {address}"
            known = [
                r
                for r in _sentinel_replicas(port, self._service_name)
                if r.get("port") == str(replica)
            ]
            if not known:
                return f"sentinel {port} does not know replica {replica} yet"
            if known[0].get("flags") != "slave" or known[0].get("master-link-status") != "ok":
                return f"sentinel {port} sees replica {replica} as {known[0].get('flags')}"
            peers = _sentinel_peers(port, self._service_name)
            if len(peers) < self._count - 1:
                return f"sentinel {port} knows {len(peers)} of {self._count - 1} other sentinels"
        return None
