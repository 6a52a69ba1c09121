"""Schema evolution on a real Redis: added, removed, renamed and retyped attributes, index changes,
and ``repocket migrate`` (docs/evolution.rst)."""

from __future__ import annotations

import datetime
import decimal
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors, keys
from repocket.formats import SECRET_MASK
from repocket.io import clients
from repocket.plan import evolve
from repocket.plan.rounds import Eval, Plan
from tests import FORMAT
from tests.functional.evolution_models import (
    Account,
    Counter,
    Ledger,
    Product,
    Tally,
    declared_before,
    old_account,
    old_counter,
    old_ledger,
    old_product,
    old_tally,
)

pytestmark = pytest.mark.usefixtures("driver")

ROOT = Path(__file__).resolve().parents[2]


def _migrate(model: type[ActiveRecord], batch_size: int = 500, dry_run: bool = False, progress: Any = None,
             **edits: Any) -> evolve.EvolveReport:
    """Run the migration plan of ``edits`` (rename=, drop=, retype=) on the configured connection."""
    plan = evolve.migrate(model._meta, evolve.changes(model._meta, **edits), batch_size, dry_run, progress)
    return clients.run(plan)


def _snapshot(redis: redis_py.Redis) -> dict[bytes, Any]:
    """Every key and what it holds (DUMP), to see that nothing changed."""
    return {key: redis.dump(key) for key in sorted(redis.keys("*"))}


def _old_products(count: int = 3) -> list[Any]:
    """Records written by the previous release of Product."""
    before = old_product()
    return [before.objects.create(name=f"p{i}", label=f"label {i}", price=10 + i, legacy=f"l{i}")
            for i in range(count)]


PRODUCT_EDITS: dict[str, Any] = {"rename": {"label": "title"}, "drop": ["legacy"], "retype": {"price": "Integer"}}


# -- what happens without a migration -------------------------------------------------------------


def test_an_added_attribute_reads_as_its_default(repocket_connection: redis_py.Redis) -> None:
    """A record written before an attribute was declared reads it as its default, and filters so."""
    before = declared_before(Product, name=attributes.Unicode(index=True))
    pk = before.objects.create(name="old").pk
    product = Product.objects.get(pk=pk)
    assert (product.stock, product.title) == (5, "")
    assert Product.objects.filter(stock=5).count() == 1
    product.stock = 6
    product.save()
    assert Product.objects.get(pk=pk).stock == 6


def test_undeclared_fields_are_ignored_by_reads_and_kept_by_saves(repocket_connection: redis_py.Redis) -> None:
    """A stored field no attribute declares: get and filter ignore it, save leaves its bytes untouched,
    delete removes it with the record; check() counts it without calling it a problem."""
    declared_before(Product, name=attributes.Unicode(index=True), legacy=attributes.Unicode()).objects.create(
        name="p", legacy="kept")
    product = Product.objects.get(name="p")
    assert not hasattr(product, "legacy") and "legacy" not in product.to_dict()
    stored = repocket_connection.hget(product._key(), "legacy")
    product.title = "changed"
    product.save()
    assert repocket_connection.hget(product._key(), "legacy") == stored
    report = Product.objects.check()
    assert report.undeclared_fields == {"legacy": 1}
    assert report.ok and len(report) == 0
    product.delete()
    assert not repocket_connection.exists(product._key())


@pytest.mark.envelope_only  # (in the plain format, the text "10" reads as a Unicode: see the docs)
def test_a_retyped_value_raises_a_precise_corrupt_record_error(repocket_connection: redis_py.Redis) -> None:
    """Before ``--retype``, a value stored with the old type names the record and field when read."""
    pk = _old_products(1)[0].pk
    with pytest.raises(errors.CorruptRecordError) as raised:
        Product.objects.get(pk=pk)
    assert raised.value.key == Product._meta.key(str(pk)) and raised.value.field == "price"
    assert "price" in str(raised.value) and str(pk) in str(raised.value)
    assert Product.objects.check().corrupt_records[0][0] == Product._meta.key(str(pk))


def test_a_newly_indexed_attribute_needs_a_reindex(repocket_connection: redis_py.Redis) -> None:
    """Declaring ``index=True`` on a stored attribute: queries on it miss the old records and check()
    reports the missing entries until reindex() adds them."""
    before = declared_before(Counter, hits=attributes.Integer(null=True))
    before.objects.create(hits=3)
    assert Counter.objects.filter(hits=3).count() == 0  # the index is empty until reindex()
    report = Counter.objects.check()
    assert report.missing_entries and not report.stale_entries
    assert Counter.objects.reindex() == 1
    assert Counter.objects.check().ok
    assert Counter.objects.filter(hits=3).count() == 1


def test_an_attribute_no_longer_indexed_leaves_stale_entries_for_repair(repocket_connection: redis_py.Redis) -> None:
    """Dropping ``index=True``: queries scan (and stay right), check() reports the entries left,
    check(repair=True) deletes them."""
    Counter.objects.create(hits=3)
    after = declared_before(Counter, hits=attributes.Integer(null=True))
    assert after.objects.filter(hits=3).count() == 1
    report = after.objects.check()
    assert report.stale_entries and not report.missing_entries
    after.objects.check(repair=True)
    assert after.objects.check().ok
    assert not repocket_connection.keys("*evolution:Counter*:_eq:*")


# -- migrate: rename, drop, retype ----------------------------------------------------------------


def test_migrate_renames_drops_and_retypes_with_exact_indexes(repocket_connection: redis_py.Redis) -> None:
    """One migration moves each value to its new name and type, deletes the dropped field, moves the
    index entries, and leaves check() clean with no undeclared field."""
    old = _old_products(3)
    assert not Product.objects.check().ok  # (entries of undeclared names, none of title's)
    report = _migrate(Product, batch_size=2, **PRODUCT_EDITS)
    assert (report.records, report.changed, report.problems) == (3, 3, [])
    assert report.counts == {"rename label=title": 3, "drop legacy": 3, "retype price from Integer": 3}
    assert report.index_keys_removed >= 3 + 1  # _eq:label:<3 values>, _lex:label (of each partition)
    assert not repocket_connection.keys("*evolution:Product*:_eq:label:*")
    assert not repocket_connection.keys("*evolution:Product*:_lex:label")
    for record in old:
        product = Product.objects.get(pk=record.pk)
        assert (product.title, product.price, product.stock) == (record.label, str(record.price), 5)
        assert repocket_connection.hkeys(product._key()) and not repocket_connection.hexists(product._key(), "label")
    assert [p.name for p in Product.objects.filter(title="label 1")] == ["p1"]
    assert [p.name for p in Product.objects.filter(price__startswith="1").order_by("price")] == ["p0", "p1", "p2"]
    check = Product.objects.check()
    assert check.ok and check.undeclared_fields == {}


def test_a_record_holding_both_names_keeps_the_declared_one(repocket_connection: redis_py.Redis) -> None:
    """A record saved by the current code holds the new name already: it wins, the old copy goes."""
    record = _old_products(1)[0]
    _migrate(Product, retype={"price": "Integer"}, drop=["legacy"])
    product = Product.objects.get(pk=record.pk)
    product.title = "new title"
    product.save()
    report = _migrate(Product, rename={"label": "title"})
    assert report.counts == {"rename label=title": 1} and report.changed == 1
    assert Product.objects.get(pk=record.pk).title == "new title"
    assert not repocket_connection.hexists(product._key(), "label")
    assert Product.objects.check().ok


def test_migrate_is_idempotent(repocket_connection: redis_py.Redis) -> None:
    """A second run finds every record evolved: it rewrites none and changes no key."""
    _old_products(4)
    _migrate(Product, **PRODUCT_EDITS)
    before = _snapshot(repocket_connection)
    report = _migrate(Product, **PRODUCT_EDITS)
    assert (report.records, report.changed, report.index_keys_removed) == (4, 0, 0)
    assert set(report.counts.values()) == {0}
    assert _snapshot(repocket_connection) == before


def test_a_dry_run_counts_and_samples_but_writes_nothing(repocket_connection: redis_py.Redis) -> None:
    """``dry_run``: the counts and samples of what would change, and not one key changed."""
    _old_products(5)
    before = _snapshot(repocket_connection)
    report = _migrate(Product, dry_run=True, batch_size=2, **PRODUCT_EDITS)
    assert report.dry_run and report.changed == 5 and report.counts["drop legacy"] == 5
    assert len(report.samples) == evolve.SAMPLES
    key, fields = report.samples[0]
    assert "evolution:Product" in key
    assert fields["label"][1] == evolve.ABSENT and fields["title"][0] == evolve.ABSENT and fields["title"][1].startswith("'label ")
    if "price" in fields:  # (in the plain format 10 and "10" are stored alike: only its entries move)
        assert fields["price"][0].isdigit() and fields["price"][1] == repr(fields["price"][0])
    assert _snapshot(repocket_connection) == before
    assert _migrate(Product, **PRODUCT_EDITS).changed == 5


class _Interrupt(Exception):
    """Stands for a Ctrl-C after the first batch."""


@pytest.mark.one_partition  # (the batches of one id set)
def test_migrate_resumes_after_an_interruption(repocket_connection: redis_py.Redis) -> None:
    """Stopped after its first batch, a migration keeps its cursor in Redis; the next run starts there
    and evolves the rest."""
    _old_products(12)

    def stop(done: int, total: int) -> None:
        raise _Interrupt

    with pytest.raises(_Interrupt):
        _migrate(Product, batch_size=3, progress=stop, **PRODUCT_EDITS)
    cursor_key = keys.evolving_key(Product._meta.prefix)
    signature = evolve.changes(Product._meta, **PRODUCT_EDITS).signature()
    assert repocket_connection.hget(cursor_key, signature) is not None
    first = sum(bool(repocket_connection.hexists(Product._meta.key(pk.decode()), "title"))
                for pk in repocket_connection.smembers(Product._meta.ids_key))
    assert 0 < first < 12
    seen: list[tuple[int, int]] = []
    report = _migrate(Product, batch_size=3, progress=lambda done, total: seen.append((done, total)), **PRODUCT_EDITS)
    assert report.changed == 12 - first and report.problems == []
    assert seen[-1] == (12, 12)
    assert not repocket_connection.exists(cursor_key)
    assert Product.objects.check().ok
    assert sorted(p.title for p in Product.objects.all()) == sorted(f"label {i}" for i in range(12))


def _meddling(plan: Plan[Any], before_write: Callable[[], None]) -> Plan[Any]:
    """``plan``, with ``before_write()`` run once just before its first script call (another writer)."""
    reply, meddled = None, False
    try:
        while True:
            step = plan.send(reply)
            if isinstance(step, Eval) and not meddled:
                before_write()
                meddled = True
            reply = yield step
    except StopIteration as done:
        return done.value


def test_a_record_changed_during_the_migration_is_converted_from_what_it_holds(
        repocket_connection: redis_py.Redis) -> None:
    """The application writes a record between the migration's read and its write: the write script
    refuses the batch, and the record is read again and converted from its new value."""
    record = _old_products(2)[0]
    key = Product._meta.key(str(record.pk))
    changed = Product._meta.format.encode(attributes.Unicode(), "changed")
    edits = evolve.changes(Product._meta, **PRODUCT_EDITS)
    report = clients.run(_meddling(evolve.migrate(Product._meta, edits),
                                   lambda: repocket_connection.hset(key, "label", changed)))
    assert report.changed == 2 and report.problems == []
    assert Product.objects.get(pk=record.pk).title == "changed"
    assert Product.objects.check().ok


def test_a_value_changed_into_one_that_does_not_convert_writes_nothing(repocket_connection: redis_py.Redis) -> None:
    """Changed meanwhile into a value that does not convert, a record is reported and left as it is."""
    before = old_counter()
    record = before.objects.create(hits="12")
    twelve = Counter._meta.format.encode(attributes.Unicode(), "twelve")
    edits = evolve.changes(Counter._meta, retype={"hits": "Unicode"})
    report = clients.run(_meddling(evolve.migrate(Counter._meta, edits),
                                   lambda: repocket_connection.hset(record._key(), "hits", twelve)))
    assert report.changed == 0 and [problem[:2] for problem in report.problems] == [(record._key(), "hits")]
    assert repocket_connection.hget(record._key(), "hits") == twelve


def test_a_value_that_does_not_convert_is_reported_and_its_record_left(repocket_connection: redis_py.Redis) -> None:
    """``retype``: "12" becomes 12; "twelve" is reported (key, field, value) and its record keeps every
    byte; running again after fixing it evolves it."""
    before = old_counter()
    good = before.objects.create(hits="12")
    bad = before.objects.create(hits="twelve")
    empty = before.objects.create(hits=None)
    untouched = repocket_connection.hgetall(bad._key())
    report = _migrate(Counter, retype={"hits": "Unicode"})
    assert report.changed == (1 if FORMAT == "plain" else 2)  # (a None is no field in the plain format)
    assert len(report.problems) == 1
    key, field, value, problem = report.problems[0]
    assert (key, field) == (bad._key(), "hits") and "twelve" in value and "Integer" in problem
    assert repocket_connection.hgetall(bad._key()) == untouched
    assert Counter.objects.get(pk=good.pk).hits == 12 and Counter.objects.get(pk=empty.pk).hits is None
    assert [c.pk for c in Counter.objects.filter(hits__gte=10)] == [good.pk]
    bad.hits = "13"
    bad.save()
    assert _migrate(Counter, retype={"hits": "Unicode"}).changed == 1
    assert Counter.objects.check().ok


@pytest.mark.sync_only  # (no Redis: the conversion itself)
@pytest.mark.parametrize(("old", "new", "value", "expected"), [
    (attributes.Integer(), attributes.Unicode(), 12, "12"),
    (attributes.Unicode(), attributes.Integer(), "12", 12),
    (attributes.Float(), attributes.Integer(), 12.0, 12),
    (attributes.Integer(), attributes.Float(), 3, 3.0),
    (attributes.Unicode(), attributes.DateTime(), "2024-01-02T03:04:05+00:00",
     datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)),
    (attributes.Integer(), attributes.Decimal(), 3, decimal.Decimal(3)),
])
def test_retype_reads_the_old_value_with_the_new_type(old: Any, new: Any, value: Any, expected: Any) -> None:
    """A retyped value is read from its plain text by the new type, else cast by it."""
    converted = evolve._retyped(old, new, value)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.sync_only
@pytest.mark.parametrize(("old", "new", "value"), [
    (attributes.Float(), attributes.Integer(), 12.5), (attributes.Unicode(), attributes.Integer(), "1.5"),
    (attributes.Unicode(), attributes.Float(), "twelve"),
])
def test_retype_refuses_a_value_the_new_type_cannot_hold(old: Any, new: Any, value: Any) -> None:
    """A value the new type can neither read nor cast raises, which the migration reports."""
    with pytest.raises(errors.ValidationError):
        evolve._retyped(old, new, value)


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_retype_round_trips_integers_through_text(repocket_connection: redis_py.Redis, number: int) -> None:
    """Integer → Unicode → Integer gives back every integer, its index exact at each step."""
    repocket_connection.flushdb()
    Counter.objects.create(hits=number)
    as_text = old_counter()  # (the text model plays the "current" one here)
    report = clients.run(evolve.migrate(as_text._meta, evolve.changes(as_text._meta, retype={"hits": "Integer"})))
    assert report.changed == 1 and as_text.objects.get().hits == str(number)
    assert as_text.objects.check().ok
    assert _migrate(Counter, retype={"hits": "Unicode"}).changed == 1
    assert Counter.objects.get().hits == number and Counter.objects.filter(hits=number).count() == 1
    assert Counter.objects.check().ok


@pytest.mark.envelope_only  # (the envelope names the type each value was stored with)
def test_the_envelope_tells_the_old_type(repocket_connection: redis_py.Redis) -> None:
    """In the envelope format ``retype`` needs no old type: each value's tag says it."""
    _old_products(2)
    report = _migrate(Product, retype=["price"], drop=["legacy", "label"])
    assert report.counts["retype price"] == 2 and report.problems == []
    assert sorted(p.price for p in Product.objects.all()) == ["10", "11"]


def test_plain_format_retype_moves_entries_once(repocket_connection: redis_py.Redis) -> None:
    """The plain format stores 12 and "12" alike: before the migration the text reads, but its entries
    are the Integer's; ``retype`` moves them (the bytes stay), and a second run finds them moved."""
    before = old_tally()
    before.objects.bulk_create([before(count=n) for n in (7, 12, 30)])
    assert sorted(t.count for t in Tally.objects.all()) == ["12", "30", "7"]  # (no error: the text reads)
    assert Tally.objects.filter(count__startswith="1").count() == 0  # (its entries are the Integer's)
    assert not Tally.objects.check().ok
    with pytest.raises(errors.ValidationError, match="plain format, which does not record types"):
        evolve.changes(Tally._meta, retype=["count"])
    report = _migrate(Tally, retype={"count": "Integer"})
    assert report.changed == 3 and report.counts == {"retype count from Integer": 3}
    assert Tally.objects.check().ok
    assert [t.count for t in Tally.objects.filter(count__startswith="1")] == ["12"]
    before = _snapshot(repocket_connection)
    assert _migrate(Tally, retype={"count": "Integer"}).changed == 0
    assert _snapshot(repocket_connection) == before


def test_bad_edits_are_refused_naming_model_and_field(repocket_connection: redis_py.Redis) -> None:
    """A rename or drop of a declared name, an unknown name, an unknown type: refused before any write."""
    with pytest.raises(errors.ValidationError, match=r"Product\.title: is still declared"):
        evolve.changes(Product._meta, drop=["title"])
    with pytest.raises(errors.UnknownFieldError, match="has no attribute 'nope'"):
        evolve.changes(Product._meta, rename={"label": "nope"})
    with pytest.raises(errors.ValidationError, match="Product.price: names the old type 'Integr'"):
        evolve.changes(Product._meta, retype={"price": "Integr"})
    with pytest.raises(errors.ValidationError, match="is both renamed and dropped"):
        evolve.changes(Product._meta, rename={"label": "title"}, drop=["label"])
    with pytest.raises(ValueError, match="batch_size"):
        _migrate(Product, batch_size=0, drop=["legacy"])


def test_a_secret_value_that_does_not_convert_is_reported_masked(repocket_connection: redis_py.Redis) -> None:
    """A secret attribute's value never appears in the report: neither in problems nor in samples."""
    before = old_account()
    before.objects.create(mail="a@example.com", pin="1234")
    bad = before.objects.create(mail="b@example.com", pin="hunter2")
    report = _migrate(Account, rename={"mail": "email"}, retype={"pin": "Unicode"}, dry_run=True)
    assert [problem[:3] for problem in report.problems] == [(bad._key(), "pin", SECRET_MASK)]
    assert "hunter2" not in repr(report) and "1234" not in repr(report)
    assert all(shown == (SECRET_MASK, SECRET_MASK) for _, fields in report.samples
               for name, shown in fields.items() if name == "pin")


def test_a_unique_clash_stops_the_batch_naming_the_value(repocket_connection: redis_py.Redis) -> None:
    """Renamed into a unique attribute, two records holding one value: UniqueConstraintError names it and
    nothing of the batch is written; once one is changed, the migration goes through."""
    before = old_account()
    first = before.objects.create(mail="same@example.com", pin="1")
    second = before.objects.create(mail="same@example.com", pin="2")
    with pytest.raises(errors.UniqueConstraintError, match="same@example.com") as raised:
        _migrate(Account, rename={"mail": "email"}, retype={"pin": "Unicode"})
    assert raised.value.field == "email"
    assert all(repocket_connection.hexists(r._key(), "mail") for r in (first, second))
    assert Account.objects.filter(email="same@example.com").count() == 0
    second.mail = "other@example.com"
    second.save()
    assert _migrate(Account, rename={"mail": "email"}, retype={"pin": "Unicode"}).changed == 2
    assert Account.objects.get(email="same@example.com").pk == first.pk
    assert Account.objects.check().ok


def test_a_versioned_record_read_before_the_migration_cannot_save_over_it(
        repocket_connection: redis_py.Redis) -> None:
    """The rewrite bumps a versioned record's version: an instance read before it (holding the added
    attribute's default, not the moved value) gets ConflictError instead of writing over the value."""
    pk = old_ledger().objects.create(total=40).pk
    stale = Ledger.objects.get(pk=pk)
    assert stale.amount == 0
    assert _migrate(Ledger, rename={"total": "amount"}).changed == 1
    stale.amount = 1
    with pytest.raises(errors.ConflictError):
        stale.save()
    assert Ledger.objects.get(pk=pk).amount == 40


@pytest.mark.sync_only
def test_migrate_on_a_cluster(cluster: Any) -> None:
    """On a Redis Cluster the same migration evolves every record, its entries in the record's slot."""
    _old_products(4)
    report = _migrate(Product, batch_size=2, **PRODUCT_EDITS)
    assert report.changed == 4 and report.problems == []
    assert Product.objects.filter(title="label 2").count() == 1
    assert Product.objects.check().ok


# -- the command line -----------------------------------------------------------------------------

MODEL = "tests.functional.evolution_models:Product"


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``repocket`` in a subprocess, as a user runs it."""
    env = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.run([sys.executable, "-m", "repocket", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


@pytest.mark.sync_only  # (the subprocess drives its own executor)
def test_cli_migrate_dry_run_then_migrate_then_check(repocket_connection: redis_py.Redis, redis_url: str) -> None:
    """``repocket migrate --dry-run`` prints counts and samples and writes nothing; without it the records
    evolve, a second run rewrites none, and ``repocket check`` is clean."""
    _old_products(3)
    edits = ["--rename", "label=title", "--drop", "legacy", "--retype", "price=Integer", "--batch", "2"]
    checked = _cli(redis_url, "check", MODEL)
    assert checked.returncode == 1
    assert "undeclared fields (not problems): label 3 records, legacy 3 records" in checked.stdout
    before = _snapshot(repocket_connection)
    dry = _cli(redis_url, "migrate", MODEL, *edits, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == f"{Product._meta.label}: 3 records read, 3 to rewrite (dry run: nothing written)"
    assert "  rename label=title: 3 records" in lines and "  drop legacy: 3 records" in lines
    assert "  retype price from Integer: 3 records" in lines
    assert any(line.startswith("  index keys of undeclared names to delete: ") for line in lines)
    assert len([line for line in lines if line.startswith("  sample ")]) == 3
    assert _snapshot(repocket_connection) == before
    done = _cli(redis_url, "migrate", MODEL, *edits)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{Product._meta.label}: 3 records read, 3 rewritten"
    assert "migrate Product" in done.stderr and "3/3" in done.stderr  # the progress bar
    again = _cli(redis_url, "migrate", MODEL, *edits)
    assert again.stdout.splitlines()[0] == f"{Product._meta.label}: 3 records read, 0 rewritten"
    checked = _cli(redis_url, "check", MODEL)
    assert checked.returncode == 0 and "undeclared" not in checked.stdout


@pytest.mark.sync_only
def test_cli_migrate_exit_statuses(repocket_connection: redis_py.Redis, redis_url: str) -> None:
    """A value that does not convert exits 1 naming it; a bad edit or no edit exits 2 in one line."""
    old_counter().objects.create(hits="twelve")
    failed = _cli(redis_url, "migrate", "tests.functional.evolution_models:Counter", "--retype", "hits=Unicode")
    assert failed.returncode == 1
    assert "cannot convert" in failed.stdout and "'twelve'" in failed.stdout and "field 'hits'" in failed.stdout
    refused = _cli(redis_url, "migrate", MODEL, "--drop", "title")
    assert refused.returncode == 2 and refused.stderr.startswith("repocket: ") and "still declared" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    nothing = _cli(redis_url, "migrate", MODEL)
    assert nothing.returncode == 2 and "name what changed" in nothing.stderr
