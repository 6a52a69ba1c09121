"""Faults: the real redis-server is killed (SIGKILL) or frozen (SIGSTOP) in the middle of a write workload.

Each test runs its own append-only ``RedisServer`` (``appendfsync always``) in
``tmp_path``, never the shared session server. Operations must fail fast with
``RedisConnectionError``; after a restart every acknowledged write must be
there, whole, and ``check()`` must be empty. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from repocket import errors
from repocket.connections import configure
from repocket.server import RedisServer
from tests.functional.integrity_models import Event, Hits, Ledger

SOCKET_TIMEOUT = 0.5
RETRIES = 1
BACKOFF = 0.02
#: A generous bound on one failing call: (connect + command timeout) per attempt, backoff, and slack.
FAIL_FAST_BOUND = (2 * SOCKET_TIMEOUT) * (RETRIES + 1) + BACKOFF * RETRIES + 5.0

#: Figures across this module: printed by each test (run with -s).
FIGURES: dict[str, int] = {"faults injected": 0, "acknowledged writes": 0, "records lost": 0}


def report(**figures: int) -> None:
    """Add to the module's figures and print them."""
    for name, value in figures.items():
        FIGURES[name.replace("_", " ")] = FIGURES.get(name.replace("_", " "), 0) + value
    print(f"\n[faults] {FIGURES}")


def configure_on(server: RedisServer, **overrides: Any) -> None:
    """Point repocket at ``server`` with short timeouts and few retries."""
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "retry": Retry(ConstantBackoff(BACKOFF), RETRIES),
    }
    options.update(overrides)
    configure.connection_pool(url=server.url, **options)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private append-only redis-server for one test (stopped, resumed if frozen, afterwards)."""
    srv = RedisServer(path=tmp_path / "redis", appendonly=True)
    srv.start()
    try:
        yield srv
    finally:
        if srv.pid is not None:
            os.kill(srv.pid, signal.SIGCONT)
        srv.stop()
        configure.reset()


def assert_clean(*models: type[Any]) -> None:
    """check() finds nothing wrong in any of the models."""
    for model in models:
        found = model.objects.check()
        assert len(found) == 0, found


def wait_for(condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# -- a workload with a model of what must be stored ---------------------------------------------


def event_state(seq: int, version: int) -> tuple[int, str, dict[str, Any], bytes]:
    """The (seq, kind, payload, blob) of an Event at ``version``: each field derives from both numbers."""
    return (
        seq,
        f"k{version % 5}",
        {"seq": seq, "version": version, "items": list(range(version % 6))},
        f"{seq}:{version};".encode() * (1 + version % 4),
    )


def stored_state(record: Event) -> tuple[int, str, dict[str, Any], bytes]:
    return (record.seq, record.kind, record.payload, record.blob)


class Workload:
    """One thread of creates, updates, deletes, bulk creates and counter increments.

    It records what must be stored (acknowledged writes) and, for writes that
    failed, every state the record may legitimately be in.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.certain: dict[str, Any] = {}  # pk -> state (None: deleted)
        self.uncertain: dict[str, list[Any]] = {}  # pk -> possible states
        self.live: dict[str, tuple[Event, int]] = {}  # pk -> (instance, version) for further writes
        self.failures: list[float] = []
        self.unexpected: list[BaseException] = []
        self.acknowledged = 0
        self.hits_ok = 0
        self.hits_failed = 0
        self.hits: Hits | None = None
        self.stop = threading.Event()
        self.seq = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
            except BaseException as exc:  # reported by the test
                self.unexpected.append(exc)
                return

    def _attempt(self, action: Any) -> bool:
        start = time.monotonic()
        try:
            action()
        except errors.RedisConnectionError:
            self.failures.append(time.monotonic() - start)
            time.sleep(0.005)
            return False
        self.acknowledged += 1
        return True

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.4 or len(self.live) < 5:
            self.seq += 1
            state = event_state(self.seq, 0)
            record = Event(seq=state[0], kind=state[1], payload=state[2], blob=state[3])
            if self._attempt(record.save):
                self.certain[str(record.id)] = state
                self.live[str(record.id)] = (record, 0)
            elif record.id is not None:
                self.uncertain[str(record.id)] = [None, state]
        elif roll < 0.55:
            batch = []
            for _ in range(self.rng.randint(2, 40)):
                self.seq += 1
                state = event_state(self.seq, 0)
                batch.append((Event(seq=state[0], kind=state[1], payload=state[2], blob=state[3]), state))
            ok = self._attempt(lambda: Event.objects.bulk_create([r for r, _ in batch]))
            for record, state in batch:
                if record.id is None:
                    continue
                if ok:
                    self.certain[str(record.id)] = state
                    self.live[str(record.id)] = (record, 0)
                else:
                    self.uncertain[str(record.id)] = [None, state]
        elif roll < 0.85:
            pk = self.rng.choice(sorted(self.live))
            record, version = self.live.pop(pk)
            old = event_state(record.seq, version)
            new = event_state(record.seq, version + 1)
            record.kind, record.payload, record.blob = new[1], new[2], new[3]
            if self._attempt(record.save):
                self.certain[pk] = new
                self.live[pk] = (record, version + 1)
            else:
                del self.certain[pk]
                self.uncertain[pk] = [old, new]
        elif roll < 0.92:
            pk = self.rng.choice(sorted(self.live))
            record, version = self.live.pop(pk)
            if self._attempt(record.delete):
                self.certain[pk] = None
            else:
                self.uncertain[pk] = [event_state(record.seq, version), None]
                del self.certain[pk]
        else:
            if self.hits is None:
                candidate = Hits(name="counter")
                if self._attempt(candidate.save):
                    self.hits = candidate
                return
            if self._attempt(lambda: self.hits.incr("count")):  # type: ignore[union-attr]
                self.hits_ok += 1
            else:
                self.hits_failed += 1

    def verify(self) -> int:
        """Assert the stored data matches; return the number of acknowledged records lost."""
        stored = {str(record.id): record for record in Event.objects.all()}
        lost = 0
        for pk, state in self.certain.items():
            have = stored_state(stored[pk]) if pk in stored else None
            if have != state:
                lost += 1
        for pk, possible in self.uncertain.items():
            have = stored_state(stored[pk]) if pk in stored else None
            assert have in possible, (pk, have, possible)
        phantoms = set(stored) - set(self.certain) - set(self.uncertain)
        assert not phantoms, phantoms
        client = configure.get_connection()
        hash_fields = {name.encode() for name, _ in Event._meta.hash_fields}
        for record in stored.values():
            assert set(client.hkeys(record._key())) == hash_fields
        if self.hits is not None:
            count = Hits.objects.get(id=self.hits.id).count
            assert self.hits_ok <= count <= self.hits_ok + self.hits_failed, (
                count, self.hits_ok, self.hits_failed,
            )
        return lost


@pytest.mark.slow
def test_sigkill_during_a_write_workload_loses_no_acknowledged_write(server: RedisServer) -> None:
    """SIGKILL mid-workload three times: calls fail fast, and after restart every acknowledged write is whole."""
    configure_on(server)
    work = Workload(seed=4)
    work.thread.start()
    kills = 0
    try:
        for cycle in range(3):
            wait_for(lambda c=cycle: work.acknowledged >= 150 * (c + 1) or work.unexpected, what="writes")
            assert not work.unexpected, work.unexpected
            failures_before = len(work.failures)
            server.kill()
            kills += 1
            wait_for(lambda n=failures_before: len(work.failures) >= n + 3 or work.unexpected,
                     what="failed calls while the server is down")
            server.start()
        acknowledged = work.acknowledged
        wait_for(lambda: work.acknowledged >= acknowledged + 50 or work.unexpected,
                 what="writes after the last restart")
    finally:
        work.stop.set()
        work.thread.join(timeout=30)
    assert not work.thread.is_alive()
    assert not work.unexpected, work.unexpected
    assert work.failures, "no call failed while the server was down"
    assert max(work.failures) <= FAIL_FAST_BOUND, max(work.failures)

    server.kill()  # and once more with the workload stopped: nothing acknowledged may go
    kills += 1
    server.start()
    lost = work.verify()
    report(faults_injected=kills, acknowledged_writes=work.acknowledged, records_lost=lost,
           failed_calls=len(work.failures))
    print(f"[faults] slowest failing call: {max(work.failures):.3f} s; "
          f"records certain: {len(work.certain)}, uncertain: {len(work.uncertain)}")
    assert lost == 0
    assert_clean(Event, Hits)


@pytest.mark.slow
def test_frozen_server_makes_calls_time_out_instead_of_hanging(server: RedisServer) -> None:
    """While the server is frozen (SIGSTOP), writes and reads raise RedisConnectionError within the timeout bound."""
    configure_on(server)
    kept = Event.create(seq=1, kind="k0", payload={}, blob=b"x")
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        durations = []
        for action in (
            lambda: Event.create(seq=2, kind="k1", payload={"a": 1}, blob=b"y"),
            lambda: Event.objects.get(id=kept.id),
            lambda: list(Event.objects.filter(kind="k0")),
            lambda: Event.objects.check(),
        ):
            start = time.monotonic()
            with pytest.raises(errors.RedisConnectionError) as info:
                action()
            durations.append(time.monotonic() - start)
            assert isinstance(info.value, ConnectionError)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    report(faults_injected=1)
    print(f"[faults] frozen-server call durations: {[round(d, 3) for d in durations]}")
    assert max(durations) <= FAIL_FAST_BOUND
    assert Event.objects.get(id=kept.id).seq == 1
    for record in Event.objects.all():
        assert (record.kind, record.payload, record.blob) in [("k0", {}, b"x"), ("k1", {"a": 1}, b"y")]
    assert_clean(Event)


def _across_a_freeze(server: RedisServer, action: Any, pause: float) -> dict[str, Any]:
    """Run ``action`` in a thread while the server is frozen for ``pause`` seconds; its outcome."""
    assert server.pid is not None
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except errors.RepocketError as exc:
            outcome["error"] = exc

    os.kill(server.pid, signal.SIGSTOP)
    thread = threading.Thread(target=run)
    try:
        thread.start()
        time.sleep(pause)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    thread.join(timeout=10)
    assert not thread.is_alive()
    return outcome


#: Freezes that end after the first attempt timed out (0.3 s) and before the retry does (0.6 s).
PAUSES = [0.35, 0.45, 0.55]


@pytest.mark.parametrize("pause", PAUSES)
def test_an_increment_acknowledged_once_is_applied_once(server: RedisServer, pause: float) -> None:
    """A counter increment that times out and is retried by redis-py is applied at most once."""
    configure_on(server, socket_timeout=0.3, socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 1))
    counter = Hits.create(name="c")
    assert counter.incr("count") == 1  # the script is loaded: the frozen call is a plain EVALSHA
    outcome = _across_a_freeze(server, lambda: counter.incr("count"), pause)
    report(faults_injected=1)
    stored = Hits.objects.get(id=counter.id).count
    print(f"[faults] incr across a {pause} s freeze: outcome={outcome}, stored={stored}")
    if "value" in outcome:
        assert stored == outcome["value"] == 2
    else:
        assert isinstance(outcome["error"], errors.RedisConnectionError)
        assert stored in (1, 2)
    assert_clean(Hits)


@pytest.mark.parametrize("pause", PAUSES)
def test_a_versioned_save_across_a_freeze_is_not_reported_as_a_conflict(server: RedisServer, pause: float) -> None:
    """A versioned save retried by redis-py after a timeout never claims "nothing was written" when it was."""
    configure_on(server, socket_timeout=0.3, socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 1))
    record = Ledger.create(label="before", balance=1)
    record.label = "after"
    outcome = _across_a_freeze(server, record.save, pause)
    report(faults_injected=1)
    stored = Ledger.objects.get(id=record.id)
    print(f"[faults] versioned save across a {pause} s freeze: outcome={outcome}, stored={stored.label}")
    if "error" in outcome:
        assert not isinstance(outcome["error"], errors.ConflictError) or stored.label == "before", outcome
    else:
        assert stored.label == "after"
    assert_clean(Ledger)


@pytest.mark.slow
def test_kill_during_bulk_create_leaves_no_half_written_record(server: RedisServer) -> None:
    """SIGKILL while large bulk_create batches are being written: every record is whole or absent."""
    configure_on(server)
    rng = random.Random(11)
    attempted: dict[str, tuple[Any, ...]] = {}
    acknowledged: set[str] = set()
    seen: set[str] = set()
    partial_batches = 0
    for cycle in range(2):
        stop = threading.Event()
        errors_seen: list[BaseException] = []

        def writer(cycle: int = cycle, stop: threading.Event = stop,
                   errors_seen: list[BaseException] = errors_seen) -> None:
            n = 0
            while not stop.is_set():
                batch = []
                for _ in range(300):
                    n += 1
                    state = event_state(cycle * 10**6 + n, rng.randint(0, 9))
                    batch.append((Event(seq=state[0], kind=state[1], payload=state[2], blob=state[3]), state))
                try:
                    Event.objects.bulk_create([r for r, _ in batch], batch_size=150)
                except errors.RedisConnectionError as exc:
                    errors_seen.append(exc)
                    for record, state in batch:
                        if record.id is not None:
                            attempted[str(record.id)] = state
                    return
                for record, state in batch:
                    attempted[str(record.id)] = state
                    acknowledged.add(str(record.id))

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(0.15 + rng.random() * 0.2)
        server.kill()
        thread.join(timeout=30)
        assert not thread.is_alive()
        server.start()
        unacknowledged = [pk for pk in attempted if pk not in acknowledged and pk not in seen]
        seen.update(unacknowledged)
        client = configure.get_connection()
        present = sum(client.exists(Event._meta.key(pk)) for pk in unacknowledged)
        if 0 < present < len(unacknowledged):
            partial_batches += 1  # the kill landed inside a bulk_create call
    stored = {str(r.id): r for r in Event.objects.all()}
    lost = len(acknowledged - set(stored))
    for pk, record in stored.items():
        assert pk in attempted
        assert stored_state(record) == attempted[pk]
    client = configure.get_connection()
    hash_fields = {name.encode() for name, _ in Event._meta.hash_fields}
    for record in stored.values():
        assert set(client.hkeys(record._key())) == hash_fields
    report(faults_injected=2, acknowledged_writes=len(acknowledged), records_lost=lost)
    print(f"[faults] bulk: {len(stored)} stored of {len(attempted)} attempted, "
          f"{len(acknowledged)} acknowledged, kills inside a bulk_create call: {partial_batches}")
    assert lost == 0
    assert_clean(Event)


def test_writes_resume_after_restart_with_scripts_reloaded(server: RedisServer) -> None:
    """After a kill, a restart and a script flush, save, bulk_create, incr and delete work again."""
    configure_on(server)
    first = Event.create(seq=1, kind="k1", payload={"a": [1]}, blob=b"one")
    counter = Hits.create(name="c", count=5)
    server.kill()
    with pytest.raises(errors.RedisConnectionError):
        Event.create(seq=2, kind="k2", payload={}, blob=b"")
    server.start()
    report(faults_injected=1)
    configure.get_connection().script_flush()  # Redis 6.2 replays SCRIPT LOAD from the AOF
    assert configure.get_connection().script_exists(*_script_shas()) == [False] * len(_script_shas())
    second = Event.create(seq=3, kind="k3", payload={}, blob=b"three")
    Event.objects.bulk_create([Event(seq=4 + i, kind="k4", payload={}, blob=b"") for i in range(5)])
    assert counter.incr("count") == 6
    first.kind = "k9"
    first.save()
    second.delete()
    assert Event.objects.get(id=first.id).kind == "k9"
    assert Event.objects.filter(kind="k4").count() == 5
    assert Event.objects.filter(kind="k3") == []
    assert_clean(Event, Hits)


def _script_shas() -> list[str]:
    from repocket.scripts import get

    return [get(name).sha for name in ("write", "incr", "append")]


# -- connection security ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("style", ["url", "keyword"])
def test_password_never_appears_in_repr_or_connection_errors(
    style: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The configured password is in neither repr(pool), repr(client), the error message nor the logs."""
    secret = "Pa55-w0rd-zq81"
    port = _closed_port()
    options: dict[str, Any] = {"socket_connect_timeout": 0.5, "retry": Retry(NoBackoff(), 1)}
    caplog.set_level(logging.DEBUG)
    try:
        if style == "url":
            pool = configure.connection_pool(url=f"redis://alice:{secret}@127.0.0.1:{port}/0", **options)
        else:
            pool = configure.connection_pool("127.0.0.1", port, username="alice", password=secret, **options)
        client = configure.get_connection()
        assert secret not in repr(pool)
        assert secret not in repr(client)
        for action in (lambda: Hits.create(name="x"), lambda: Hits.objects.get(id=_closed_uuid()),
                       lambda: Hits.objects.check()):
            with pytest.raises(errors.RedisConnectionError) as info:
                action()
            assert secret not in str(info.value)
            assert secret not in repr(info.value)
            assert "127.0.0.1" in str(info.value) or str(port) in str(info.value)
    finally:
        configure.reset()
    assert secret not in caplog.text


def _closed_uuid() -> str:
    return "00000000-0000-1000-8000-000000000000"


def test_wrong_password_fails_without_echoing_it_and_right_one_works(server: RedisServer) -> None:
    """Against a server with a password, a wrong or missing one raises RedisAuthenticationError, never echoing it."""
    good, bad = "right-Horse-42", "wrong-Battery-17"
    admin = redis_py.Redis.from_url(server.url)
    admin.config_set("requirepass", good)
    admin.close()
    try:
        for password, says in ((bad, "wrong password"), (None, "needs a password")):
            configure_on(server, password=password)
            for action in (lambda: Hits.create(name="x"), lambda: Hits.objects.get(id=_closed_uuid()),
                           lambda: list(Hits.objects.filter(count=1)), lambda: Hits.objects.check()):
                with pytest.raises(errors.RedisAuthenticationError) as info:
                    action()
                assert isinstance(info.value, errors.RedisConnectionError)
                message = str(info.value)
                assert "refused the credentials" in message and says in message, message
                assert "unreachable" not in message
                assert secret_free(message + repr(info.value), good, bad)
        configure_on(server, password=good)
        assert Hits.create(name="y").name == "y"
        assert secret_free(repr(configure.get_connection()), good, bad)
        assert_clean(Hits)
    finally:
        with redis_py.Redis.from_url(server.url, password=good) as admin:
            admin.config_set("requirepass", "")


def secret_free(text: str, *secrets: str) -> bool:
    """Whether none of ``secrets`` occurs in ``text``."""
    return not any(s in text for s in secrets)
