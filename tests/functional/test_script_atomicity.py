"""The write scripts are all or nothing, whatever the stored data holds.

Redis does not roll back a Lua script that fails halfway, so the scripts check
everything their writes will use before the first write. Here stored values are
corrupted behind repocket's back (version counters, number envelopes, keys of
the wrong type, leases), then every kind of write runs over them: whenever one
raises, it raises a documented error and every key holds exactly what it held.
Run with ``-s`` to see the outcomes the fuzzer met.
"""

from __future__ import annotations

import decimal
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors, keys, store
from repocket.io import sync
from repocket.plan.rounds import Eval, Plan
from tests.functional.integrity_models import Ledger, Page, key_contents

NAMESPACE = "atomicity"


class Book(ActiveRecord):
    """Versioned, with indexes of every kind, a unique attribute and a ByteStream."""

    class Meta:
        namespace = NAMESPACE
        versioned = True

    title = attributes.Unicode(index=True)
    isbn = attributes.Unicode(unique=True, null=True)
    copies = attributes.Integer(index=True)
    price = attributes.Decimal(index=True)
    rating = attributes.Float(index=True)
    text = attributes.ByteStream()


class Shelf(ActiveRecord):
    """Not versioned, with a unique Integer and a ByteStream."""

    class Meta:
        namespace = NAMESPACE

    label = attributes.Unicode(index=True)
    slot = attributes.Integer(unique=True, null=True)
    load = attributes.Integer(index=True)
    weight = attributes.Float()
    notes = attributes.ByteStream()


#: Per model: its Unicode index, unique, Integer and Float attributes and its ByteStream.
ROLES = {Book: ("title", "isbn", "copies", "rating", "text"), Shelf: ("label", "slot", "load", "weight", "notes")}
#: Errors a write may raise over corrupt data: each says what is wrong.
DOCUMENTED = (errors.CorruptRecordError, errors.UniqueConstraintError, errors.ConflictError,
              errors.DoesNotExist, errors.ValidationError, errors.BrokenReferenceError)


@pytest.fixture
def conn(repocket_connection: redis_py.Redis) -> Iterator[redis_py.Redis]:
    """repocket configured on a flushed database."""
    yield repocket_connection


def assert_unchanged_if_raises(client: redis_py.Redis, action: Callable[[], Any]) -> BaseException | None:
    """Run ``action``; if it raises, the error must be documented and no key may have changed."""
    before = key_contents(client)
    try:
        action()
    except DOCUMENTED as exc:
        assert key_contents(client) == before, exc
        assert "user_script" not in str(exc) and "Redis refused" not in str(exc), exc
        return exc
    return None


# -- the version counter -----------------------------------------------------------------------------


def test_incr_over_a_version_beyond_64_bits_raises_corrupt_record_error_and_writes_nothing(
    conn: redis_py.Redis,
) -> None:
    """incr on a record whose _version is past int64 raises CorruptRecordError naming it, writing nothing."""
    ledger = Ledger.create(label="l", balance=1)
    conn.hset(ledger._key(), "_version", b"18446744073709551616")
    for amount in (10, 2**60):  # the incr script, then the write script
        exc = assert_unchanged_if_raises(conn, lambda amount=amount: ledger.incr("balance", amount))
        assert isinstance(exc, errors.CorruptRecordError)
        assert (exc.key, exc.field) == (ledger._key(), "_version")
    assert [key for key, _ in Ledger.objects.check().corrupt_records] == [ledger._key()]
    conn.hset(ledger._key(), "_version", b"2")
    assert Ledger.objects.get(id=ledger.id).balance == 1
    assert Ledger.objects.filter(balance=1) == [Ledger.objects.get(id=ledger.id)]


def test_a_batch_with_one_bad_version_writes_none_of_its_records(conn: redis_py.Redis) -> None:
    """A batch of 5 loaded records, one whose _version is then corrupted, writes none of them."""
    ledgers = [Ledger.create(label=f"l{i}", balance=1) for i in range(5)]
    copies = [Ledger.objects.get(id=ledger.id) for ledger in ledgers]
    conn.hset(ledgers[3]._key(), "_version", b"99999999999999999999999")
    for copy in copies:
        copy.balance = 7
    exc = assert_unchanged_if_raises(conn, lambda: store.save_instances(conn, Ledger._meta, copies))
    assert isinstance(exc, errors.CorruptRecordError) and exc.key == ledgers[3]._key()
    exc = assert_unchanged_if_raises(conn, lambda: Ledger.objects.filter(balance=1).update(balance=7))
    assert isinstance(exc, errors.CorruptRecordError)
    assert Ledger.objects.filter(balance=7).count() == 0


@pytest.mark.parametrize("raw", [b"18446744073709551616", b"9223372036854775808", b"-1", b"007", b"1.5",
                                 b" 2", b"2 ", b"+2", b"", b"abc", b"1e3"])
def test_get_of_a_version_that_is_not_a_plain_int64_raises_corrupt_record_error(
    conn: redis_py.Redis, raw: bytes
) -> None:
    """get() of a record whose _version is not a plain integer within int64 raises CorruptRecordError."""
    ledger = Ledger.create(label="l", balance=1)
    conn.hset(ledger._key(), "_version", raw)
    with pytest.raises(errors.CorruptRecordError) as info:
        Ledger.objects.get(id=ledger.id)
    assert (info.value.key, info.value.field) == (ledger._key(), "_version")


def test_a_version_at_int64_max_reads_but_cannot_be_bumped(conn: redis_py.Redis) -> None:
    """A _version of 2**63 - 1 loads, but saving or incrementing it raises CorruptRecordError, writing nothing."""
    ledger = Ledger.create(label="l", balance=1)
    conn.hset(ledger._key(), "_version", str(2**63 - 1))
    loaded = Ledger.objects.get(id=ledger.id)
    assert loaded._version == 2**63 - 1
    loaded.label = "m"
    for action in (loaded.save, lambda: loaded.incr("balance")):
        exc = assert_unchanged_if_raises(conn, action)
        assert isinstance(exc, errors.CorruptRecordError) and exc.field == "_version"


# -- number envelopes and plans ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [b"-0", b"-00", b"007"])
def test_incr_of_a_non_canonical_integer_keeps_indexes_exact(conn: redis_py.Redis, text: bytes) -> None:
    """An Integer envelope holding -0 or leading zeros is incremented exactly, or refused as corrupt."""
    page = Page.create(title="p", views=0)
    conn.hset(page._key(), "views", b'{"type": "Integer", "value": ' + text + b', "module": "repocket.attributes"}')
    exc = assert_unchanged_if_raises(conn, lambda: page.incr("views", 5))
    if exc is None:  # valid JSON: -0 is 0
        assert Page.objects.get(id=page.id).views == 5
        assert Page.objects.filter(views=5) == [page]
        assert len(Page.objects.check()) == 0
    else:
        assert isinstance(exc, errors.CorruptRecordError) and exc.field == "views"


def test_a_malformed_plan_fails_before_writing_any_record(conn: redis_py.Redis) -> None:
    """A batch whose second record has an unknown write op fails with nothing of the first written."""
    first, second = "repocket:t:A:1", "repocket:t:A:2"
    args: list[Any] = [2, "token"]
    for op in ("hset", "explode"):
        args += [2, "ht", 0, 3, op, "f", "v"]
    with pytest.raises(errors.RepocketError, match="unknown write"):
        sync.run(_call(Eval("write", [first, "repocket:t:A:_lease:1", second, "repocket:t:A:_lease:2"], args)),
                 conn)
    assert conn.exists(first, second) == 0


def test_a_stored_value_bump_would_fail_on_is_named_not_quoted_as_lua(conn: redis_py.Redis) -> None:
    """queryset update over records with a bad version raises CorruptRecordError, not a Lua traceback."""
    ledgers = [Ledger.create(label="x", balance=i) for i in range(3)]
    conn.hset(ledgers[1]._key(), "_version", b"9" * 30)
    exc = assert_unchanged_if_raises(conn, lambda: Ledger.objects.all().update(label="y"))
    assert isinstance(exc, errors.CorruptRecordError)
    assert "Lua" not in str(exc) and "script" not in str(exc)


# -- the fuzzer ----------------------------------------------------------------------------------------

BAD_VERSIONS = [b"18446744073709551616", b"9223372036854775807", b"9" * 40, b"-1", b"abc", b"1.5", b"007",
                b"", b" 2", b"1e3"]
ODD_INTEGERS = [b"1e400", b"1.0", b"-0", b"007", b"18446744073709551616", b"1e308", b"NaN", b"Infinity",
                b"true", b"null", b'"12"', b"12345678901234567890123", b"-9007199254740993", b"9007199254740991",
                b"[1]", b"{}"]
ODD_FLOATS = [b"1e400", b'"NaN"', b'"-Infinity"', b"1" + b"0" * 30, b"true", b'"x"', b"-0.0", b"5e-324", b"null"]
ODD_DECIMALS = [b'"1e999999999"', b'"NaN"', b'"sNaN"', b"5", b'"abc"', b'"-0"', b'"1E+1000000"', b"null"]


class Scene:
    """Three Books and three Shelves, freshly written; copies of the victim loaded before any corruption."""

    def __init__(self, client: redis_py.Redis, model: type[Any]) -> None:
        client.flushdb()
        self.client = client
        self.model = model
        text, unique, number, ratio, stream = ROLES[model]
        self.records = []
        for i in range(3):
            values = {text: f"t{i}", unique: (f"u{i}" if model is Book else i), number: i + 1, ratio: i / 2,
                      stream: f"s{i}".encode()}
            if model is Book:
                values["price"] = decimal.Decimal(f"{i}.10")
            self.records.append(model.create(**values))
        self.victim = self.records[1]
        self.stale = model.objects.get(id=self.victim.id)
        self.others = [model.objects.get(id=r.id) for r in self.records]

    def envelope(self, field: str, value: bytes) -> bytes:
        tag = type(self.model._meta.fields[field]).__name__
        return b'{"type": "' + tag.encode() + b'", "value": ' + value + b', "module": "repocket.attributes"}'


@st.composite
def corruptions(draw: Any) -> tuple[str, Callable[[Scene], None]]:
    """A corruption of the victim record or of the keys around it: its kind and how to apply it."""
    kind = draw(st.sampled_from([
        "version", "integer", "float", "decimal", "random bytes", "field deleted", "hash wrong type",
        "stream wrong type", "index wrong type", "lease wrong type", "lease without expiry",
        "unique holder", "nothing",
    ]))
    version = draw(st.sampled_from(BAD_VERSIONS))
    odd_int, odd_float, odd_decimal = (draw(st.sampled_from(v)) for v in (ODD_INTEGERS, ODD_FLOATS, ODD_DECIMALS))
    junk = draw(st.binary(max_size=30))
    which = draw(st.integers(0, 6))
    holder = draw(st.sampled_from([b"\xff\xfe", b"not-an-id", b""]))
    wrong = draw(st.sampled_from(["string", "list", "hash", "set"]))

    def apply(scene: Scene) -> None:
        client, key = scene.client, scene.victim._key()
        text, unique, number, ratio, stream = ROLES[scene.model]
        prefix, pk = scene.model._meta.prefix, str(scene.victim.id)

        def retype(target: str) -> None:
            client.delete(target)
            if wrong == "string":
                client.set(target, b"x")
            elif wrong == "list":
                client.rpush(target, b"x")
            elif wrong == "hash":
                client.hset(target, b"x", b"y")
            else:
                client.sadd(target, b"x")

        if kind == "version":
            client.hset(key, "_version", version)
        elif kind == "integer":
            client.hset(key, number, scene.envelope(number, odd_int))
        elif kind == "float":
            client.hset(key, ratio, scene.envelope(ratio, odd_float))
        elif kind == "decimal":
            field = "price" if scene.model is Book else number
            client.hset(key, field, scene.envelope(field, odd_decimal))
        elif kind == "random bytes":
            client.hset(key, [text, unique, number, ratio][which % 4], junk)
        elif kind == "field deleted":
            client.hdel(key, [text, unique, number, ratio, "_version"][which % 5])
        elif kind == "hash wrong type":
            retype(key)
        elif kind == "stream wrong type":
            retype(keys.stream_key(key, stream))
        elif kind == "index wrong type":
            retype([keys.eq_index_key(prefix, text, "t1"), keys.lex_index_key(prefix, text),
                    keys.sorted_index_key(prefix, number), keys.unique_key(prefix, unique), scene.model._meta.ids_key,
                    keys.eq_index_key(prefix, text, "new"), keys.null_index_key(prefix, unique)][which])
        elif kind == "lease wrong type":
            retype(keys.lease_key(prefix, pk))
        elif kind == "lease without expiry":
            client.set(keys.lease_key(prefix, pk), b"not a repocket writer")
        elif kind == "unique holder":
            token = "u1" if scene.model is Book else "1"
            client.hset(keys.unique_key(prefix, unique), token, holder)

    return kind, apply


def _operations(scene: Scene) -> dict[str, Callable[[], Any]]:
    """Every kind of write, over the victim (and its neighbours for the batch ones)."""
    model, stale = scene.model, scene.stale
    text, unique, number, ratio, stream = ROLES[model]

    def change(record: Any, n: int = 0) -> Any:
        setattr(record, text, f"new{n}")
        setattr(record, unique, f"nu{n}" if model is Book else 100 + n)
        setattr(record, number, 40 + n)
        setattr(record, stream, b"new stream")
        return record

    def fresh() -> Any:
        return model.objects.get(id=scene.victim.id)

    def new(n: int) -> Any:
        record = model(**{text: "t1", number: 1, unique: f"b{n}" if model is Book else 200 + n})
        return record

    return {
        "save stale": lambda: change(stale).save(),
        "save stale, force": lambda: change(stale).save(force=True),
        "save fresh": lambda: change(fresh()).save(),
        "save unchanged": lambda: stale.save(),
        "save as new": lambda: change(model(id=scene.victim.id)).save(),
        "delete stale": lambda: stale.delete(),
        "delete by id": lambda: model(id=scene.victim.id).delete(),
        "delete fresh": lambda: fresh().delete(),
        "incr": lambda: stale.incr(number, 3),
        "decr huge": lambda: stale.decr(number, 2**60),
        "incr float": lambda: stale.incr(ratio, 0.5),
        "incr decimal": lambda: stale.incr("price" if model is Book else number, decimal.Decimal("1.1")),
        "append": lambda: getattr(stale, f"append_{stream}")(b"+more"),
        "update all": lambda: model.objects.all().update(**{text: "all", number: 9}),
        "update filtered": lambda: model.objects.filter(**{number: 2}).update(**{number: 7}),
        "bulk create": lambda: model.objects.bulk_create([new(0), new(1)]),
        "bulk save": lambda: store.save_instances(scene.client, model._meta,
                                                  [change(r, i) for i, r in enumerate(scene.others)]),
        "bulk save fields": lambda: store.save_instances(
            scene.client, model._meta, [change(r, i) for i, r in enumerate(scene.others)], fields=[text, number]),
    }


OPERATION_NAMES = ["save stale", "save stale, force", "save fresh", "save unchanged", "save as new",
                   "delete stale", "delete by id", "delete fresh", "incr", "decr huge", "incr float",
                   "incr decimal", "append", "update all", "update filtered", "bulk create", "bulk save",
                   "bulk save fields"]


def test_writes_over_corrupt_data_raise_documented_errors_and_change_nothing(conn: redis_py.Redis) -> None:
    """Every write over corrupted data either succeeds or raises a documented error with every key unchanged."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(model=st.sampled_from([Book, Shelf]), case=corruptions(), operation=st.sampled_from(OPERATION_NAMES))
    def attempt(model: type[Any], case: tuple[str, Callable[[Scene], None]], operation: str) -> None:
        kind, apply = case
        scene = Scene(conn, model)
        apply(scene)
        planted = set(conn.scan_iter(match="*:_lease:*"))
        exc = assert_unchanged_if_raises(conn, _operations(scene)[operation])
        outcomes[f"{kind} / {type(exc).__name__ if exc else 'ok'}"] += 1
        leases = set(conn.scan_iter(match="*:_lease:*"))
        assert leases <= planted, (kind, operation, leases)  # a lease never outlives its write

    attempt()
    print(f"\n[atomicity] outcomes: {dict(sorted(outcomes.items()))}")
    assert any(not key.endswith("/ ok") for key in outcomes)


def _call(step: Eval) -> Plan[object]:
    """A plan of one script call, to send a hand-made (malformed) one."""
    return (yield step)
