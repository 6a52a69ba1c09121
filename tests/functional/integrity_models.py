"""Models and helpers shared by the integrity, fault and fuzz tests.

The namespace is fixed (``class Meta: namespace = "integrity"``) so a child
process started with the ``spawn`` method imports the very same models and
writes the very same keys. Worker functions for those processes live here too:
a spawned child can import this module without importing pytest's test modules.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis as redis_py

from repocket import ActiveRecord, attributes
from repocket.connections import configure
from repocket.errors import UniqueConstraintError

NAMESPACE = "integrity"


class Profile(ActiveRecord):
    """Dirty tracking: writers changing different attributes of one record."""

    class Meta:
        namespace = NAMESPACE

    name = attributes.Unicode(index=True)
    bio = attributes.Unicode()
    age = attributes.Integer(index=True)
    avatar = attributes.ByteStream()


class Wide(ActiveRecord):
    """Eight counters, one per concurrent writer (half of them indexed)."""

    class Meta:
        namespace = NAMESPACE

    f0 = attributes.Integer(index=True)
    f1 = attributes.Integer()
    f2 = attributes.Integer(index=True)
    f3 = attributes.Integer()
    f4 = attributes.Integer(index=True)
    f5 = attributes.Integer()
    f6 = attributes.Integer(index=True)
    f7 = attributes.Integer()


WIDE_FIELDS = [f"f{i}" for i in range(8)]


class Account(ActiveRecord):
    """A unique Unicode attribute."""

    class Meta:
        namespace = NAMESPACE

    email = attributes.Unicode(unique=True)
    note = attributes.Unicode(null=True)


class Ticket(ActiveRecord):
    """A unique Integer attribute."""

    class Meta:
        namespace = NAMESPACE

    number = attributes.Integer(unique=True)
    holder = attributes.Unicode()


class Ledger(ActiveRecord):
    """Optimistic locking."""

    class Meta:
        namespace = NAMESPACE
        versioned = True

    label = attributes.Unicode()
    balance = attributes.Integer(index=True)


class Page(ActiveRecord):
    """Atomic counters of every number type, indexed and not."""

    class Meta:
        namespace = NAMESPACE

    title = attributes.Unicode()
    views = attributes.Integer(index=True)
    plain = attributes.Integer()
    rating = attributes.Float(index=True)
    total = attributes.Decimal(index=True)
    maybe = attributes.Integer(null=True)


class Event(ActiveRecord):
    """The write workload of the fault tests: every storage shape (hash, index, ByteStream)."""

    class Meta:
        namespace = NAMESPACE

    seq = attributes.Integer(index=True)
    kind = attributes.Unicode(index=True)
    payload = attributes.JSON()
    blob = attributes.ByteStream()


class Hits(ActiveRecord):
    """A counter incremented through server faults."""

    class Meta:
        namespace = NAMESPACE

    name = attributes.Unicode()
    count = attributes.Integer(index=True)


class Vault(ActiveRecord):
    """Secret attributes."""

    class Meta:
        namespace = NAMESPACE

    owner = attributes.Unicode()
    token = attributes.Unicode(secret=True)
    pin = attributes.Integer(secret=True, null=True)


ALL_MODELS: list[type[ActiveRecord]] = [Profile, Wide, Account, Ticket, Ledger, Page, Event, Hits, Vault]


# -- helpers -----------------------------------------------------------------------------

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def ids_in_database(client: redis_py.Redis) -> set[str]:
    """Every UUID that appears anywhere in the database: key names, members, hash fields, values."""
    found: set[bytes] = set()
    for key in client.scan_iter(count=1000):
        if b":_revoked:" in key:
            continue  # a spread model's revoked claim generations of a record (repocket/plan/claims.py)
        found.update(_UUID.findall(key))
        kind = client.type(key)
        if kind == b"set":
            blobs = list(client.smembers(key))
        elif kind == b"zset":
            blobs = list(client.zrange(key, 0, -1))
        elif kind == b"hash":
            blobs = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == b"string":
            blobs = [client.get(key) or b""]
        else:
            blobs = []
        for blob in blobs:
            found.update(_UUID.findall(blob))
    return {b.decode() for b in found}


def key_contents(client: redis_py.Redis) -> dict[bytes, tuple[bytes, Any]]:
    """Every key of the database with its type and full contents, in a canonical order.

    (DUMP is not canonical: a hash table's order may change on a mere read.)
    """
    out: dict[bytes, tuple[bytes, Any]] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value: Any = client.get(key)
        elif kind == b"hash":
            value = sorted(client.hgetall(key).items())
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        else:
            value = client.dump(key)
        out[key] = (kind, value)
    return out


def check_report(model: type[ActiveRecord], connection: redis_py.Redis | None = None) -> Any:
    """``model.objects.check()`` on ``connection`` (default: the global pool)."""
    return model.objects.using(connection).check()


# -- child-process workers (spawn) ---------------------------------------------------------


def claim_email(url: str, email: str, label: str, barrier: Any, results: Any) -> None:
    """In a child process: configure repocket on ``url``, wait for the others, create an Account."""
    configure.connection_pool(url=url)
    barrier.wait(timeout=60)
    try:
        record = Account.create(email=email, note=label)
    except UniqueConstraintError as exc:
        results.put(("taken", label, exc.model, exc.field, exc.value, str(exc)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", label, repr(exc), "", "", ""))
    else:
        results.put(("ok", label, str(record.pk), "", "", ""))
    finally:
        configure.reset()


def new_uuid() -> str:
    """A random id that no record has."""
    return str(uuid.uuid4())


def run_threads(count: int, target: Callable[[int, redis_py.Redis], Any], url: str) -> list[Any]:
    """Run ``target(i, client)`` in ``count`` threads, each with its own client, started together.

    Returns each thread's result or the exception it raised.
    """
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def body(i: int) -> None:
        client = redis_py.Redis.from_url(url)
        try:
            barrier.wait(timeout=30)
            results[i] = target(i, client)
        except BaseException as exc:  # collected, asserted by the caller
            results[i] = exc
        finally:
            client.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a racing thread hung"
    return results
