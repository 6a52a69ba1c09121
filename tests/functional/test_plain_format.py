"""``Meta.format = "plain"`` on a real Redis: the bytes stored, exact round trips, errors, migration.

Every other test module also runs with plain models (``REPOCKET_TEST_FORMAT=plain``,
which ``make test`` does); this one checks what only the plain format has.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import subprocess
import sys
import uuid
from typing import Any

import pytest
import redis as redis_py
from hypothesis import example, given
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes
from repocket.errors import CorruptRecordError, RepocketActiveRecordDefinitionError
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("repocket_connection")


class Owner(ActiveRecord):
    name = attributes.Unicode()

    class Meta:
        format = "plain"


class Plain(ActiveRecord):
    text = attributes.Unicode(null=True, index=True)
    raw = attributes.Bytes(null=True)
    doc = attributes.JSON(null=True)
    ref = attributes.UUID(null=True)
    when = attributes.DateTime(null=True)
    amount = attributes.Decimal(null=True)
    number = attributes.Integer(null=True, index=True)
    ratio = attributes.Float(null=True)
    owner = attributes.Pointer(Owner, null=True)
    log = attributes.ByteStream()
    token = attributes.Unicode(secret=True)

    class Meta:
        format = "plain"


def stored(record: ActiveRecord, conn: redis_py.Redis) -> dict[bytes, bytes]:
    return conn.hgetall(record._key())  # type: ignore[return-value]


def test_every_type_is_stored_as_its_plain_value(redis: redis_py.Redis) -> None:
    owner = Owner.create(name="Ada")
    when = dt.datetime(2026, 12, 2, 10, 4, 23, 250, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    record = Plain.create(text="Hé \x00 ☃", raw=b"\xff\x00\xfe", doc={"a": [1, 2.5, None, "x"]},
                          ref=uuid.UUID(int=7), when=when, amount=decimal.Decimal("1.10"),
                          number=-(2**70), ratio=-0.0, owner=owner, log=b"line\n", token="s3cret")
    assert stored(record, redis) == {
        b"id": str(record.pk).encode(),
        b"text": "Hé \x00 ☃".encode(),
        b"raw": b"\xff\x00\xfe",  # raw bytes: Redis strings are binary-safe
        b"doc": b'{"a":[1,2.5,null,"x"]}',
        b"ref": b"00000000-0000-0000-0000-000000000007",
        b"when": b"2026-12-02T10:04:23.000250-03:00",
        b"amount": b"1.10",
        b"number": str(-(2**70)).encode(),
        b"ratio": b"-0.0",
        b"owner": owner._key().encode(),
        b"token": b"s3cret",
    }
    assert redis.get(record._key() + ":field:log") == b"line\n"


@pytest.mark.parametrize(("value", "text"), [(math.inf, b"inf"), (-math.inf, b"-inf"), (math.nan, b"nan"),
                                             (1e16, b"1e+16"), (0.1, b"0.1")])
def test_floats_are_stored_as_their_repr(value: float, text: bytes, redis: redis_py.Redis) -> None:
    record = Plain.create(ratio=value)
    assert redis.hget(record._key(), "ratio") == text
    loaded = Plain.objects.get(pk=record.pk).ratio
    assert (math.isnan(loaded) and math.isnan(value)) or loaded == value


def test_none_is_a_missing_field_and_a_json_null_is_stored(redis: redis_py.Redis) -> None:
    record = Plain.create(text="x", number=3)
    assert {b"text", b"number"} <= set(stored(record, redis))
    record.text = None
    record.number = None
    record.doc = None
    record.save()
    fields = stored(record, redis)
    assert b"text" not in fields and b"number" not in fields  # HDEL: a None has no field
    assert fields[b"doc"] == b"null"  # a JSON attribute's None is the document null
    loaded = Plain.objects.get(pk=record.pk)
    assert loaded.text is None and loaded.number is None and loaded.doc is None
    assert Plain.objects.filter(text__isnull=True, pk=record.pk).count() == 1
    assert Plain.objects.filter(text="x", pk=record.pk).count() == 0
    assert Plain.objects.check().ok


def test_a_field_missing_from_an_old_record_reads_as_none_or_the_default(redis: redis_py.Redis) -> None:
    record = Plain.create(token="t")
    redis.hdel(record._key(), "token", "ratio")  # as if the attributes were declared later
    loaded = Plain.objects.get(pk=record.pk)
    assert loaded.token == ""  # not null: its default
    assert loaded.ratio is None  # null allowed: a missing field is how None is stored


@pytest.mark.needs_server("fakeredis has no OBJECT ENCODING (nor the listpack/hashtable encodings it reports)")
def test_a_plain_record_stays_in_the_compact_encoding(redis: redis_py.Redis) -> None:
    record = Plain.create(text="Harry Potter", number=11, ratio=1.5, token="t", ref=uuid.uuid4())
    assert redis.object("encoding", record._key()) in (b"listpack", b"ziplist")


def test_save_and_get_cost_one_round_trip_each() -> None:
    record = Plain(text="one", number=1)
    with count_round_trips() as trips:
        record.save()
    assert trips.count == 1
    with count_round_trips() as trips:
        Plain.objects.get(pk=record.pk)
    assert trips.count == 1


def test_increments_stay_plain_and_keep_the_index_exact(redis: redis_py.Redis) -> None:
    record = Plain.create(number=40, ratio=0.5)
    record.incr("number")  # (the first call may load the script)
    with count_round_trips() as trips:
        assert record.incr("number") == 42
    assert trips.count == 1  # the incr script, inside Redis
    record.incr("ratio", 0.25)
    assert redis.hget(record._key(), "number") == b"42"
    assert redis.hget(record._key(), "ratio") == b"0.75"
    assert Plain.objects.filter(number=42, pk=record.pk).count() == 1
    assert Plain.objects.filter(number=41, pk=record.pk).count() == 0
    assert Plain.objects.check().ok


def test_an_empty_text_written_behind_our_back_is_not_taken_for_a_none(redis: redis_py.Redis) -> None:
    record = Plain.create(text=None)
    loaded = Plain.objects.get(pk=record.pk)
    redis.hset(record._key(), "text", "")  # "" is a value in the plain format, not a None
    redis.srem(f"{Plain._meta.prefix}:_null:text", str(record.pk))
    redis.sadd(f"{Plain._meta.prefix}:_eq:text:", str(record.pk))
    loaded.text = "new"
    loaded.save()  # its guard expected no field, met "": it re-plans from ""
    assert Plain.objects.filter(text="", pk=record.pk).count() == 0
    assert Plain.objects.filter(text="new", pk=record.pk).count() == 1
    assert Plain.objects.check().ok


# -- round trips -------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    return type(a) is type(b) and a == b


json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
texts = st.text().filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t))
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


@given(
    text=st.none() | texts,
    raw=st.none() | st.binary(),
    doc=json_docs,
    ref=st.none() | st.uuids(),
    when=st.none() | st.datetimes() | st.datetimes(timezones=offsets),
    amount=st.none() | st.decimals(allow_nan=False) | st.just(decimal.Decimal("NaN")),
    number=st.none() | st.integers() | st.integers(min_value=2**64, max_value=2**200),
    ratio=st.none() | st.floats(),
    log=st.binary(),
    token=texts,
)
@example(text="", raw=b"", doc="", ref=None, when=None, amount=decimal.Decimal("-0"), number=0,
         ratio=-0.0, log=b"", token='{"type": "Unicode", "value": "x", "module": "repocket.attributes"}')
def test_every_type_round_trips_exactly(**values: Any) -> None:
    record = Plain.create(**values)
    loaded = Plain.objects.get(pk=record.pk)
    for name, value in values.items():
        got = getattr(loaded, name)
        if isinstance(value, decimal.Decimal) and value.is_nan():
            assert got.is_nan()
        else:
            assert _same(got, value), (name, got, value)
            if isinstance(value, dt.datetime):
                assert got.utcoffset() == value.utcoffset()


# -- bad stored data ---------------------------------------------------------------------

CORRUPT = [
    ("number", b"007"), ("number", b"7.5"), ("number", b" 7"), ("number", b""),
    ("ratio", b"1,5"), ("ratio", b"NaN"), ("ref", b"not-a-uuid"), ("when", b"yesterday"),
    ("amount", b"1.2.3"), ("doc", b"{bad"), ("text", b"\xff\xfe"), ("owner", b"repocket:elsewhere:X:1"),
]


@pytest.mark.parametrize(("field", "raw"), CORRUPT)
def test_a_corrupt_plain_field_raises_naming_key_and_field(field: str, raw: bytes, redis: redis_py.Redis) -> None:
    record = Plain.create(text="ok", token="t")
    redis.hset(record._key(), field, raw)
    with pytest.raises(CorruptRecordError) as caught:
        Plain.objects.get(pk=record.pk)
    assert caught.value.key == record._key() and caught.value.field == field
    assert record._key() in str(caught.value) and repr(field) in str(caught.value)
    with pytest.raises(CorruptRecordError):
        list(Plain.objects.filter(pk=record.pk))


def test_a_corrupt_secret_never_shows_its_value(redis: redis_py.Redis) -> None:
    class Vault(ActiveRecord):
        pin = attributes.Integer(secret=True)

        class Meta:
            format = "plain"

    record = Vault.create(pin=1234)
    redis.hset(record._key(), "pin", b"98765x")
    with pytest.raises(CorruptRecordError) as caught:
        Vault.objects.get(pk=record.pk)
    assert "98765" not in str(caught.value) and "***" in str(caught.value)
    assert caught.value.__context__ is None


def test_an_unknown_format_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(RepocketActiveRecordDefinitionError, match="format must be one of 'envelope', 'plain'"):
        class Wrong(ActiveRecord):
            class Meta:
                format = "yaml"


# -- migrate-format -----------------------------------------------------------------------


def _declare(fmt: str) -> type[ActiveRecord]:
    """The same model (same keys), declared in the format ``fmt``."""
    class Mig(ActiveRecord):
        name = attributes.Unicode(index=True)
        age = attributes.Integer(null=True, index=True)
        bio = attributes.Unicode(null=True, default="none")
        doc = attributes.JSON(null=True)

        class Meta:
            namespace = "tests.plain.migration"
            format = fmt

    return Mig


def test_migrate_format_converts_and_back_resumably_and_idempotently(redis: redis_py.Redis) -> None:
    envelope_model = _declare("envelope")
    rows = [envelope_model.create(name=f"n{i}", age=None if i % 3 == 0 else i, bio=None if i % 2 else "b",
                                  doc={"i": i}) for i in range(25)]
    # An envelope text stored as a value: it must stay a value, in both directions.
    tricky = envelope_model.create(name='{"type": "Unicode", "value": "x", "module": "repocket.attributes"}')
    redis.hdel(rows[1]._key(), "bio")  # declared after the record was written: reads as the default
    before = {str(r.pk): r.to_dict(simple=True) for r in envelope_model.objects.all()}
    assert before[str(rows[1].pk)]["bio"] == "none"

    plain_model = _declare("plain")
    assert plain_model.objects.migrate_format(batch_size=10) == 26
    assert all(b"{" not in redis.hget(r._key(), "name") for r in rows)
    assert redis.hget(rows[1]._key(), "bio") == b"none"
    assert not redis.hexists(rows[3]._key(), "bio")  # a None: no field
    assert redis.hget(tricky._key(), "name").startswith(b'{"type": "Unicode"')
    after = {str(r.pk): r.to_dict(simple=True) for r in plain_model.objects.all()}
    assert after == before
    assert plain_model.objects.check().ok
    assert plain_model.objects.filter(name=tricky.name).count() == 1
    snapshot = {r._key(): stored(r, redis) for r in rows}
    assert plain_model.objects.migrate_format() == 0  # idempotent: nothing left to convert
    assert {r._key(): stored(r, redis) for r in rows} == snapshot

    # Interrupted half way back to the envelope format, then resumed.
    with pytest.raises(RuntimeError):
        def stop(done: int, total: int) -> None:
            raise RuntimeError("interrupted")
        plain_model.objects.migrate_format(to="envelope", batch_size=10, progress=stop)
    envelope_model = _declare("envelope")
    assert 0 < envelope_model.objects.migrate_format() < 26
    assert {str(r.pk): r.to_dict(simple=True) for r in envelope_model.objects.all()} == before
    assert redis.hget(tricky._key(), "name").startswith(b'{"type": "Unicode", "value": "{')
    assert envelope_model.objects.check().ok


def test_the_cli_migrates_a_model(redis_url: str, tmp_path: Any, redis: redis_py.Redis) -> None:
    module = tmp_path / "migmodels.py"
    module.write_text(
        "from repocket import ActiveRecord, attributes\n"
        "class Note(ActiveRecord):\n"
        "    text = attributes.Unicode()\n"
        "    class Meta:\n"
        "        namespace = 'tests.plain.cli'\n"
        "        format = 'plain'\n"
    )
    key = f"repocket:tests.plain.cli:Note:{uuid.uuid1()}"
    pk = key.rsplit(":", 1)[1]
    redis.hset(key, mapping={
        "id": f'{{"type": "AutoUUID", "value": "{pk}", "module": "repocket.attributes"}}',
        "text": '{"type": "Unicode", "value": "hello", "module": "repocket.attributes"}',
    })
    redis.sadd("repocket:tests.plain.cli:Note:_ids", pk)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "repocket", "migrate-format", "migmodels.Note", "--url", redis_url],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 records rewritten" in done.stdout and "plain format" in done.stdout
    assert redis.hgetall(key) == {b"id": pk.encode(), b"text": b"hello"}


def test_a_client_that_decodes_responses_reads_plain_records(redis_url: str) -> None:
    owner = Owner.create(name="A")
    values = {"text": "hé", "ref": uuid.uuid4(), "when": dt.datetime(2020, 1, 1), "amount": decimal.Decimal("1.5"),
              "number": 3, "ratio": 0.5, "token": "t"}
    record = Plain.create(owner=owner, **values)
    decoding = redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        loaded = Plain.objects.using(decoding).get(pk=record.pk)
    finally:
        decoding.close()
    assert {name: getattr(loaded, name) for name in values} == values
    assert loaded.owner.pk == owner.pk
