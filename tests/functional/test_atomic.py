"""``repocket.atomic()`` (SPEC §8): the writes of a block, of several models, in one script call, or none.

On a real redis-server, through both executors (the ``with`` form) and with
``async with``: what is written, when hooks run, what a failure leaves (nothing),
nesting, and the cluster's one-partition rule.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis as redis_py

import repocket
from repocket import ActiveRecord, attributes, errors
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")

EVENTS: list[str] = []
#: The test's plain redis-py client, for hooks to look at Redis without repocket (no nested executor).
CONN: list[redis_py.Redis] = []


class Account(ActiveRecord):
    owner = attributes.Unicode(index=True)
    balance = attributes.Integer()
    login = attributes.Unicode(unique=True, null=True)

    class Meta:
        changes = True

    def before_save(self) -> None:
        EVENTS.append(f"before {self.owner}")

    def after_save(self, created: bool) -> None:
        stored = bool(CONN and CONN[0].exists(self._key()))
        EVENTS.append(f"after {self.owner} stored={stored}")


class Transfer(ActiveRecord):
    source = attributes.Pointer(Account)
    amount = attributes.Integer()


class Ledger(ActiveRecord):
    name = attributes.Unicode()
    version_note = attributes.Unicode(null=True)

    class Meta:
        versioned = True


@pytest.fixture(autouse=True)
def _events(repocket_connection: redis_py.Redis) -> None:
    EVENTS.clear()
    CONN[:] = [repocket_connection]


def test_a_block_writes_every_model_in_one_call_at_its_end(repocket_connection: redis_py.Redis) -> None:
    alice = Account.objects.create(owner="alice", balance=100)
    bob = Account.objects.create(owner="bob", balance=0)
    old = Transfer.objects.create(source=alice, amount=1)
    EVENTS.clear()
    with count_round_trips() as inside, repocket.atomic():
        alice.balance = 60
        alice.save()
        bob.incr("balance", 40)
        Transfer.objects.create(source=alice, amount=40)
        old.delete()
        assert Account.objects.get(bob.pk).balance == 0  # (reads see Redis, not the block)
        calls_inside = inside.count
    assert calls_inside == 1  # (the read above; the writes wait)
    assert inside.names().count(b"EVALSHA") == 1  # every write, in one call
    assert Account.objects.get(alice.pk).balance == 60 and Account.objects.get(bob.pk).balance == 40
    assert [t.amount for t in Transfer.objects.all()] == [40]
    assert EVENTS == ["before alice", "after alice stored=True"]  # after_* once written
    assert [c.op for c in Account.objects.changes()][-2:] == ["update", "incr"]


def test_a_failed_check_writes_nothing_and_raises(repocket_connection: redis_py.Redis) -> None:
    alice = Account.objects.create(owner="alice", balance=100, login="al")
    bob = Account.objects.create(owner="bob", balance=0)
    before = len(Account.objects.changes())
    with pytest.raises(errors.UniqueConstraintError, match="nothing was written"):
        with repocket.atomic():
            alice.balance = 0
            alice.save()
            bob.login = "al"  # taken by alice
            bob.save()
    assert Account.objects.get(alice.pk).balance == 100 and Account.objects.get(bob.pk).login is None
    assert len(Account.objects.changes()) == before  # no change recorded either
    ledger = Ledger.objects.create(name="l")
    stale = Ledger.objects.get(ledger.pk)
    ledger.name = "changed elsewhere"
    ledger.save()
    with pytest.raises(errors.ConflictError):
        with repocket.atomic():
            Account.objects.create(owner="carol", balance=1)
            stale.name = "mine"
            stale.save()
    assert not Account.objects.filter(owner="carol").exists() and Ledger.objects.get(ledger.pk).name == (
        "changed elsewhere")


def test_an_exception_in_the_block_writes_nothing(repocket_connection: redis_py.Redis) -> None:
    with pytest.raises(RuntimeError):
        with repocket.atomic():
            Account.objects.create(owner="dave", balance=5)
            raise RuntimeError("changed my mind")
    assert Account.objects.count() == 0 and EVENTS == ["before dave"]


def test_blocks_nest_and_the_outer_one_commits(repocket_connection: redis_py.Redis) -> None:
    with repocket.atomic():
        Account.objects.create(owner="erin", balance=1)
        with repocket.atomic():
            Account.objects.create(owner="frank", balance=2)
        assert Account.objects.count() == 0  # (the inner block joined the outer one)
    assert sorted(a.owner for a in Account.objects.all()) == ["erin", "frank"]


def test_a_record_written_twice_in_a_block_is_refused(repocket_connection: redis_py.Redis) -> None:
    alice = Account.objects.create(owner="alice", balance=1)
    with pytest.raises(errors.ValidationError, match="written twice"):
        with repocket.atomic():
            alice.balance = 2
            alice.save()
            alice.incr("balance")
    assert Account.objects.get(alice.pk).balance == 1


@pytest.mark.sync_only  # (runs asyncio itself)
def test_async_with_buffers_the_async_writes(repocket_connection: redis_py.Redis) -> None:
    async def block() -> None:
        async with repocket.atomic():
            account = await Account.objects.acreate(owner="gina", balance=3)
            await Transfer.objects.acreate(source=account, amount=3)
            assert not await Account.objects.filter(owner="gina").aexists()

    asyncio.run(block())
    assert Account.objects.filter(owner="gina").exists() and Transfer.objects.get().amount == 3


class Local(ActiveRecord):
    """One partition: on a cluster all its keys share a slot."""

    name = attributes.Unicode()

    class Meta:
        partitions = 1


@pytest.mark.sync_only  # (the cluster fixture drives the sync executor)
def test_on_a_cluster_a_block_stays_in_one_partition(cluster: Any) -> None:
    with repocket.atomic():
        for name in ("a", "b", "c"):
            Local.objects.create(name=name)
    assert Local.objects.count() == 3
    with pytest.raises(errors.CrossPartitionError, match="nothing was written"):
        with repocket.atomic():
            Local.objects.create(name="d")
            Ledger.objects.create(name="elsewhere")
    assert Local.objects.count() == 3 and Ledger.objects.count() == 0
