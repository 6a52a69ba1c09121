"""Unique values of a model spread over partitions: the claim protocol of repocket/plan/claims.py.

Each record's write is one script call in its partition's slot, so a unique
value is kept unique across partitions by claims. These tests run on a real
standalone server with 4 partitions, and on the real cluster with 16: races,
a writer stopped between the protocol's steps, a write whose claim was taken
over, and check(repair=True) releasing a claim nobody holds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from repocket import ActiveRecord, attributes, errors, keys
from repocket.io import clients
from repocket.options import partition_of
from repocket.plan import claims, write
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")


class Member(ActiveRecord):
    email = attributes.Unicode(index=True, unique=True)
    handle = attributes.Unicode(index=True, unique=True, null=True)
    age = attributes.Integer(index=True)

    class Meta:
        partitions = 4


def _ids_in(partition: int, count: int) -> list[str]:
    """Ids whose records live in ``partition`` of 4."""
    out: list[str] = []
    while len(out) < count:
        pk = str(uuid.uuid4())
        if partition_of(pk, 4) == partition:
            out.append(pk)
    return out


def _claims(meta: Any, conn: Any, field: str) -> dict[str, str]:
    """Every claim of ``field``: token -> claimant id."""
    out = {}
    for bucket in range(keys.CLAIM_BUCKETS):
        for token, claim in conn.hgetall(keys.claims_key(meta.standalone_prefix, field, bucket)).items():
            out[token.decode()] = claim.decode().split(" ")[0]
    return out


@pytest.fixture
def conn(repocket_connection: redis_py.Redis) -> Iterator[redis_py.Redis]:
    yield repocket_connection


def test_a_value_held_in_one_partition_is_refused_in_another(conn: redis_py.Redis) -> None:
    first, second = _ids_in(0, 1)[0], _ids_in(3, 1)[0]
    Member.objects.create(id=first, email="ada@example.org", age=1)
    with pytest.raises(errors.UniqueConstraintError, match="already used by") as info:
        Member.objects.create(id=second, email="ada@example.org", age=2)
    assert (info.value.field, info.value.value) == ("email", "ada@example.org")
    assert Member.objects.count() == 1 and not conn.exists(Member._meta.key(second))
    assert _claims(Member._meta, conn, "email") == {"ada@example.org": first}


def test_a_value_given_up_is_free_at_once_and_claims_follow_the_records(conn: redis_py.Redis) -> None:
    ada = Member.objects.create(email="ada@example.org", handle="ada", age=1)
    ada.email, ada.handle = "lovelace@example.org", None
    ada.save()
    bob = Member.objects.create(email="ada@example.org", handle="ada", age=2)  # both freed by the rename
    bob.delete()
    cy = Member.objects.create(email="ada@example.org", age=3)  # freed by the delete
    assert _claims(Member._meta, conn, "email") == {"lovelace@example.org": str(ada.pk),
                                                     "ada@example.org": str(cy.pk)}
    assert _claims(Member._meta, conn, "handle") == {}
    assert Member.objects.check().ok
    found, created = Member.objects.get_or_create(email="ada@example.org", defaults={"age": 9})
    assert (found.pk, created) == (cy.pk, False)


def test_deleting_a_record_never_loaded_releases_its_claims(conn: redis_py.Redis) -> None:
    ada = Member.objects.create(email="ada@example.org", handle="ada", age=1)
    assert Member(id=ada.pk).delete() == 1  # its values are unknown here: read before the delete
    assert _claims(Member._meta, conn, "email") == {} == _claims(Member._meta, conn, "handle")
    assert Member.objects.check().ok
    assert Member.objects.create(email="ada@example.org", handle="ada", age=2).pk != ada.pk


def test_one_of_many_racing_writers_gets_each_value(conn: redis_py.Redis, driver: str) -> None:
    if driver == "async":
        pytest.skip("threads drive the sync executor")
    winners: list[Any] = []
    losers: list[str] = []
    barrier = threading.Barrier(8)

    def racer(number: int) -> None:
        barrier.wait()
        for value in range(10):
            try:
                winners.append(Member.objects.create(email=f"v{value}@example.org", age=number))
            except errors.UniqueConstraintError:
                losers.append(f"v{value}")

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 10 and len(losers) == 70
    assert sorted(m.email for m in Member.objects.all()) == sorted(f"v{v}@example.org" for v in range(10))
    assert Member.objects.check().ok


def test_a_claim_left_by_a_writer_that_stopped_blocks_nobody_and_check_releases_it(conn: redis_py.Redis) -> None:
    ghost = _ids_in(1, 1)[0]  # claimed the value, then stopped before writing its record
    clients.run(claims.take(Member._meta, [claims.Claim("email", "x@example.org", ghost, "x", "g1")]))
    clients.run(claims.take(Member._meta, [claims.Claim("email", "y@example.org", ghost, "y", "g2")]))
    report = Member.objects.check()
    stale = {token for _, token in report.stale_entries}
    assert stale == {"x@example.org", "y@example.org"}
    taker = Member.objects.create(email="x@example.org", age=1)  # takes the claim over
    assert _claims(Member._meta, conn, "email")["x@example.org"] == str(taker.pk)
    assert conn.sismember(keys.revoked_key(Member._meta.prefix_for(ghost), ghost), "g1")
    assert Member.objects.check(repair=True).repaired
    assert Member.objects.check().ok
    assert "y@example.org" not in _claims(Member._meta, conn, "email")


def test_a_write_whose_claim_was_taken_over_writes_nothing(conn: redis_py.Redis) -> None:
    """X claims a value, Y takes the claim over before X's write lands: X's write is refused, whole."""
    x_pk = _ids_in(2, 1)[0]
    clients.run(claims.take(Member._meta, [claims.Claim("email", "z@example.org", x_pk, "z", "gx")]))
    y = Member.objects.create(email="z@example.org", age=2)  # settles X's claim: X holds nothing, gx revoked
    x = Member(id=x_pk, email="z@example.org", age=1)
    x._validate_for_save()
    view = Member._meta.for_pk(x_pk)
    fences = {(x_pk, "email"): (keys.revoked_key(view.prefix, x_pk), "gx")}
    with pytest.raises(write.ClaimRevoked):
        clients.run(write.save(view, [x], fences=fences))
    assert not conn.exists(Member._meta.key(x_pk))
    with pytest.raises(errors.UniqueConstraintError):  # claiming again: Y holds it
        x.save()
    assert [m.pk for m in Member.objects.filter(email="z@example.org")] == [y.pk]
    assert Member.objects.check().ok


def test_check_reports_and_repairs_a_missing_claim(conn: redis_py.Redis) -> None:
    member = Member.objects.create(email="m@example.org", age=1)
    conn.delete(claims.claims_key(Member._meta, "email", "m@example.org"))
    report = Member.objects.check()
    assert report.missing_entries == [(claims.claims_key(Member._meta, "email", "m@example.org"), "m@example.org")]
    assert Member.objects.check(repair=True).repaired
    assert _claims(Member._meta, conn, "email") == {"m@example.org": str(member.pk)}
    with pytest.raises(errors.UniqueConstraintError):
        Member.objects.create(email="m@example.org", age=2)


def test_a_save_that_changes_no_unique_value_costs_one_claim_call_per_value(conn: redis_py.Redis) -> None:
    member = Member.objects.create(email="c@example.org", handle="c", age=1)
    member.age = 2
    with count_round_trips() as trips:
        member.save()
    assert trips.names().count(b"EVALSHA") == 3  # two claims (renewed) and the write


def test_a_unique_field_of_a_spread_model_is_not_incremented_in_place(conn: redis_py.Redis) -> None:
    class Seat(ActiveRecord):
        number = attributes.Integer(index=True, unique=True)

        class Meta:
            partitions = 4

    seat = Seat.objects.create(number=1)
    with pytest.raises(errors.ValidationError, match="not incremented in place"):
        seat.incr("number", 1)


@settings(max_examples=25)
@given(st.lists(st.tuples(st.sampled_from(["create", "rename", "delete"]), st.integers(0, 5), st.integers(0, 5)),
                max_size=25))
def test_claims_always_match_the_records_holding_the_values(conn: redis_py.Redis,
                                                            ops: list[tuple[str, int, int]]) -> None:
    conn.flushdb()
    live: list[Any] = []
    for op, a, b in ops:
        try:
            if op == "create":
                live.append(Member.objects.create(email=f"e{a}", handle=f"h{b}", age=a))
            elif op == "rename" and live:
                record = live[a % len(live)]
                record.email, record.handle = f"e{b}", None if b % 2 else f"h{a}"
                record.save()
            elif op == "delete" and live:
                live.pop(a % len(live)).delete()
        except errors.UniqueConstraintError:
            continue
    stored = list(Member.objects.all())
    assert _claims(Member._meta, conn, "email") == {m.email: str(m.pk) for m in stored}
    assert _claims(Member._meta, conn, "handle") == {m.handle: str(m.pk) for m in stored if m.handle}
    assert len({m.email for m in stored}) == len(stored)
    assert Member.objects.check().ok


# -- on the cluster ------------------------------------------------------------------------------


class Account(ActiveRecord):
    login = attributes.Unicode(index=True, unique=True)


@pytest.mark.one_partition  # (the default of 16 on a cluster)
def test_on_a_cluster_unique_values_hold_across_16_partitions(cluster: RedisCluster, driver: str) -> None:
    assert Account._meta.partitions == 16
    accounts = Account.objects.bulk_create([Account(login=f"u{i}") for i in range(40)])
    with pytest.raises(errors.UniqueConstraintError):
        Account.objects.create(login="u7")
    accounts[7].login = "seven"
    accounts[7].save()
    assert Account.objects.create(login="u7").login == "u7"
    assert Account.objects.filter(login="seven").count() == 1 and Account.objects.count() == 41
    assert Account.objects.check().ok


def test_a_save_of_other_fields_leaves_the_claims_alone(conn: redis_py.Redis) -> None:
    member = Member.objects.create(email="o@example.org", handle="o", age=1)
    member.age = 5
    with count_round_trips() as trips:
        Member.objects.bulk_update([member], ["age"])
    assert trips.names().count(b"EVALSHA") == 1  # the write alone: no claim taken, none released
    assert _claims(Member._meta, conn, "email") == {"o@example.org": str(member.pk)}
    assert Member.objects.get(member.pk).age == 5
