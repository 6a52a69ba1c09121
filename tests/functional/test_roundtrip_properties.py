"""Hypothesis round trips on a real Redis: every attribute type saves and loads back exactly.

Each property saves a record, reads it back with ``objects.get`` and checks the
value AND its type. Records get fresh ids (uuid1) in every example, so examples
never see each other's data.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import struct
import uuid
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes
from repocket.connections import configure
from repocket.errors import ValidationError
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("repocket_connection")


class Target(ActiveRecord):
    label = attributes.Unicode()


class Sample(ActiveRecord):
    text = attributes.Unicode()
    raw = attributes.Bytes()
    latin = attributes.Bytes(encoding="latin-1")
    stream = attributes.ByteStream()
    doc = attributes.JSON(null=True)
    ref = attributes.UUID(null=True)
    when = attributes.DateTime(null=True)
    amount = attributes.Decimal(null=True)
    number = attributes.Integer(null=True)
    ratio = attributes.Float(null=True)
    target = attributes.Pointer(Target, null=True)


def reload(record: ActiveRecord) -> Any:
    """Save ``record`` and read it back from Redis as a new instance."""
    record.save()
    loaded = type(record).objects.get(id=record.pk)
    assert loaded is not record
    return loaded


def same_json(a: Any, b: Any) -> bool:
    """Strict structural equality: same types all the way down, floats bit for bit, key order kept."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


# -- strategies ----------------------------------------------------------------------

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
text_with_surrogate = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), surrogates, st.text(max_size=5))
big_ints = st.integers(min_value=2**64, max_value=2**300) | st.integers(min_value=-(2**300), max_value=-(2**63) - 1)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | big_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_docs = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
naive_datetimes = st.datetimes()
max_offset = dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
fixed_offsets = st.timedeltas(min_value=-max_offset, max_value=max_offset).map(dt.timezone)
aware_datetimes = st.datetimes(timezones=fixed_offsets | st.timezones())
whole_second_offsets = st.integers(-86399, 86399).map(lambda s: dt.timezone(dt.timedelta(seconds=s)))
decimal_tuples = st.builds(
    lambda sign, digits, exponent: decimal.Decimal((sign, tuple(digits), exponent)),
    st.sampled_from([0, 1]),
    st.lists(st.integers(0, 9), min_size=1, max_size=80),
    st.integers(-500, 500),
)
quiet_decimals = (
    st.decimals(allow_nan=True, allow_infinity=True) | decimal_tuples
).filter(lambda d: not d.is_snan())


# -- Unicode ---------------------------------------------------------------------------


@given(st.text())
@example("")
@example("\x00")
@example("a\x00b\x00")
@example("\U0001f600\U0010ffff\U00010000")
@example("null")
@example('{"type": "Unicode"}')
def test_unicode_round_trips_exactly(value: str) -> None:
    """Any text without surrogates (NUL and astral characters included) loads back equal, as str."""
    loaded = reload(Sample(text=value))
    assert loaded.text == value
    assert type(loaded.text) is str


@given(text_with_surrogate)
def test_unicode_with_a_lone_surrogate_is_rejected_at_assignment(value: str) -> None:
    """A lone surrogate cannot be stored as UTF-8, so assignment and construction raise ValidationError."""
    record = Sample()
    with pytest.raises(ValidationError):
        record.text = value
    with pytest.raises(ValidationError):
        Sample(text=value)
    assert record.text == ""


# -- Bytes and ByteStream ----------------------------------------------------------------


@given(st.binary())
@example(bytes(range(256)))
@example(b"\xff\xfe\x00")
@example(b"\xed\xa0\x80")  # a UTF-8-encoded surrogate: not valid UTF-8
@example(b"\xc3(")
@example(b"plain ascii")
def test_bytes_round_trip_exactly(value: bytes) -> None:
    """Every byte string (all 256 byte values, non-UTF-8 included) loads back equal, as bytes."""
    loaded = reload(Sample(raw=value, latin=value))
    assert loaded.raw == value
    assert type(loaded.raw) is bytes
    assert loaded.latin == value
    assert type(loaded.latin) is bytes


@given(st.binary())
@example(bytes(range(256)))
@example(b"\x00")
@example(b"\xff" * 3)
def test_bytestream_round_trips_exactly(value: bytes) -> None:
    """A ByteStream holding any bytes loads back equal, as bytes."""
    loaded = reload(Sample(stream=value))
    assert loaded.stream == value
    assert type(loaded.stream) is bytes


@given(st.binary(), st.binary())
def test_bytestream_append_then_load_gives_the_concatenation(first: bytes, second: bytes) -> None:
    """append_<name>() on a saved record stores exactly first + second, read back by get()."""
    record = Sample(stream=first)
    record.save()
    record.append_stream(second)
    loaded = Sample.objects.get(id=record.pk)
    assert loaded.stream == first + second
    assert type(loaded.stream) is bytes


# -- JSON ----------------------------------------------------------------------------------


@given(json_docs)
@example({"ünï": {"日本": [2**64, -(2**100), 1.5, True, None, "\x00\U0001f600"]}})
@example([2**63, 2**63 - 1, -(2**63), -(2**63) - 1])
@example({"": -0.0, "\U0001f600": 1e308, "x": 5e-324})
@example("")
@example("1234567890123456789012")  # a long digit run in a string, not a number
def test_json_round_trips_exactly(value: Any) -> None:
    """A JSON document (nested, unicode keys, big ints, finite floats, bools, None) loads back identical."""
    loaded = reload(Sample(doc=value))
    assert same_json(loaded.doc, value), (loaded.doc, value)


@given(st.sampled_from([math.nan, math.inf, -math.inf]), st.sampled_from(["top", "nested"]))
def test_json_refuses_non_finite_floats_at_assignment(value: float, where: str) -> None:
    """NaN and ±Infinity have no JSON form, so a JSON attribute refuses them when assigned."""
    doc = value if where == "top" else {"a": [1, {"b": value}]}
    with pytest.raises(ValidationError):
        Sample(doc=doc)


@given(text_with_surrogate)
def test_json_with_a_lone_surrogate_is_rejected_at_assignment(value: str) -> None:
    """A JSON string or key holding a lone surrogate is refused at assignment."""
    with pytest.raises(ValidationError):
        Sample(doc={"k": value})
    with pytest.raises(ValidationError):
        Sample(doc={value: 1})


# -- UUID / AutoUUID --------------------------------------------------------------------------


@given(st.uuids() | st.none())
def test_uuid_round_trips_exactly(value: uuid.UUID | None) -> None:
    """A UUID (any version) or None loads back equal, as uuid.UUID."""
    loaded = reload(Sample(ref=value))
    assert loaded.ref == value
    assert type(loaded.ref) is (uuid.UUID if value is not None else type(None))


@given(st.uuids(), st.booleans())
def test_autouuid_primary_key_round_trips(value: uuid.UUID, as_text: bool) -> None:
    """A given primary key (UUID or its text) is the key get() finds, and loads back as uuid.UUID."""
    record = Sample(id=str(value) if as_text else value)
    record.save()
    loaded = Sample.objects.get(id=value)
    assert loaded.id == value
    assert type(loaded.id) is uuid.UUID
    assert record.save()["hash"].endswith(":" + str(value))


# -- DateTime -----------------------------------------------------------------------------------


@given(naive_datetimes)
@example(dt.datetime.min)
@example(dt.datetime.max)
@example(dt.datetime(2020, 2, 29, 23, 59, 59, 999999))
def test_naive_datetime_round_trips_exactly(value: dt.datetime) -> None:
    """A naive datetime loads back equal and still naive, microseconds included."""
    loaded = reload(Sample(when=value))
    assert type(loaded.when) is dt.datetime
    assert loaded.when.tzinfo is None
    assert loaded.when == value


@given(aware_datetimes)
@example(dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=15))))
@example(dt.datetime(2020, 1, 1, tzinfo=dt.timezone(-max_offset)))
@example(dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(microseconds=1))))
@example(dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=1, microseconds=1))))
@example(dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))))
@example(dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))))
def test_aware_datetime_round_trips_with_its_offset(value: dt.datetime) -> None:
    """An aware datetime (any offset, seconds included) loads back as the same instant with the same utcoffset."""
    loaded = reload(Sample(when=value))
    assert type(loaded.when) is dt.datetime
    assert loaded.when.tzinfo is not None
    assert loaded.when.utcoffset() == value.utcoffset()
    # Same wall time and same offset: the same instant. (== between zones is False for
    # fold-dependent times by PEP 495, so the instant is compared by subtraction.)
    assert loaded.when.replace(tzinfo=None) == value.replace(tzinfo=None)
    assert loaded.when - value == dt.timedelta(0)


# -- Decimal -------------------------------------------------------------------------------------


@given(quiet_decimals)
@example(decimal.Decimal("1.10"))
@example(decimal.Decimal("-0"))
@example(decimal.Decimal("0E-30"))
@example(decimal.Decimal("1E+999999"))
@example(decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494459"))
@example(decimal.Decimal("NaN"))
@example(decimal.Decimal("-NaN123"))
@example(decimal.Decimal("Infinity"))
@example(decimal.Decimal("-Infinity"))
def test_decimal_round_trips_exactly(value: decimal.Decimal) -> None:
    """A Decimal (any precision and exponent, NaN, ±Infinity) loads back with the same str(), as Decimal."""
    loaded = reload(Sample(amount=value))
    assert type(loaded.amount) is decimal.Decimal
    assert str(loaded.amount) == str(value)


@pytest.mark.parametrize("value", [decimal.Decimal("sNaN"), decimal.Decimal("-sNaN7"), "sNaN"])
def test_decimal_signalling_nan_is_rejected_at_assignment(value: Any) -> None:
    """A signalling NaN cannot even be compared, so a Decimal attribute refuses it at assignment."""
    with pytest.raises(ValidationError):
        Sample(amount=value)
    record = Sample()
    with pytest.raises(ValidationError):
        record.amount = value


# -- Integer ---------------------------------------------------------------------------------------


@given(st.integers() | big_ints)
@example(2**63)
@example(2**64)
@example(-(2**63) - 1)
@example(10**100)
@example(-(10**100))
@example(2**53 + 1)
def test_integer_round_trips_exactly(value: int) -> None:
    """An int of any size or sign loads back equal, as int (never float)."""
    loaded = reload(Sample(number=value))
    assert type(loaded.number) is int
    assert loaded.number == value


# -- Float -------------------------------------------------------------------------------------------


@given(st.floats())
@example(math.nan)
@example(math.inf)
@example(-math.inf)
@example(-0.0)
@example(5e-324)
@example(1.7976931348623157e308)
def test_float_round_trips_exactly(value: float) -> None:
    """A float loads back bit for bit (-0.0 and ±inf included); NaN loads back as NaN."""
    loaded = reload(Sample(ratio=value))
    assert type(loaded.ratio) is float
    if math.isnan(value):
        assert math.isnan(loaded.ratio)
    else:
        assert struct.pack(">d", loaded.ratio) == struct.pack(">d", value)
        assert math.copysign(1.0, loaded.ratio) == math.copysign(1.0, value)


# -- Pointer -------------------------------------------------------------------------------------------


@given(st.text())
def test_pointer_round_trips_as_an_equal_instance(label: str) -> None:
    """A Pointer to a saved record loads back as an equal instance of the target model."""
    target = Target.create(label=label)
    loaded = reload(Sample(target=target))
    assert type(loaded.target) is Target
    assert loaded.target == target
    assert loaded.target.label == label
    assert loaded.target is not target


# -- a whole record: re-saving writes nothing, stored bytes are the SPEC envelope ----------------------

whole_records = st.fixed_dictionaries(
    {
        "text": st.text(max_size=10),
        "raw": st.binary(max_size=10),
        "latin": st.binary(max_size=10),
        "stream": st.binary(max_size=10),
        "doc": json_docs,
        "ref": st.uuids() | st.none(),
        # whole-second offsets here: sub-second ones are the aware-datetime property's business
        "when": naive_datetimes | st.datetimes(timezones=whole_second_offsets | st.timezones()) | st.none(),
        "amount": quiet_decimals | st.none(),
        "number": st.integers() | big_ints | st.none(),
        "ratio": st.floats() | st.none(),
        "target": st.booleans(),
    }
)


def build_sample(fields: dict[str, Any]) -> Sample:
    values = dict(fields)
    values["target"] = Target.create(label="t") if values["target"] else None
    return Sample(**values)


def _arguments(trips: Any) -> list[bytes]:
    """Every argument of every command the trips carried."""
    return [arg for command in trips.commands() for arg in command]


@given(whole_records)
def test_resaving_an_unchanged_loaded_record_writes_no_field(fields: dict[str, Any]) -> None:
    """save() of a loaded, unchanged record is one round trip that writes no hash field and no ByteStream."""
    record = build_sample(fields)
    record.save()
    loaded = Sample.objects.get(id=record.pk)
    conn = configure.get_connection()
    key = record._key()
    # Change a field and a stream behind repocket's back: a save that rewrote them would undo it.
    sneaky = Sample.text.encode("written behind repocket's back")
    conn.hset(key, "text", sneaky)
    conn.append(record._calculate_key_for_field("stream"), b"+sneaky")
    with count_round_trips() as trips:
        loaded.save()
    assert trips.count == 1
    sent = _arguments(trips)
    assert b"hset" not in sent and b"set" not in sent, sent
    assert conn.hget(key, "text") == sneaky
    assert conn.get(record._calculate_key_for_field("stream")) == fields["stream"] + b"+sneaky"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@given(whole_records)
@pytest.mark.envelope_only  # the bytes of the envelope format
def test_stored_fields_are_json_envelopes_in_spec_order(fields: dict[str, Any]) -> None:
    """Every stored hash field is strict UTF-8 JSON: type, value, module in that order, the value as SPEC §2 says."""
    record = build_sample(fields)
    record.save()
    conn = configure.get_connection()
    raw_hash = conn.hgetall(record._key())
    stored_names = {name.decode() for name in raw_hash}
    assert stored_names == {name for name, attr in Sample._meta.fields.items() if attr.stored_in_hash}
    for name, raw in raw_hash.items():
        name = name.decode()
        attr = Sample._meta.fields[name]
        members = json.loads(raw.decode("utf-8"), object_pairs_hook=list, parse_constant=_reject_constant)
        assert [k for k, _ in members[:3]] == ["type", "value", "module"], raw
        envelope = dict(members)
        assert envelope["type"] == type(attr).__name__
        assert envelope["module"] == "repocket.attributes"
        extra = [k for k, _ in members[3:]]
        assert extra in ([], ["encoding"]) and (not extra or isinstance(attr, attributes.Bytes)), raw
        stored = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)["value"]
        value = getattr(record, name)
        if value is None:
            assert stored is None
        elif name == "text" or name == "doc":
            assert same_json(stored, value)
        elif name in ("raw", "latin"):
            assert isinstance(stored, str)
        elif name in ("id", "ref"):
            assert stored == str(value)
        elif name == "when":
            assert stored == value.isoformat()
        elif name == "amount":
            assert stored == str(value)
        elif name == "number":
            assert type(stored) is int and stored == value
        elif name == "ratio":
            if math.isfinite(value):
                assert type(stored) is float and struct.pack(">d", stored) == struct.pack(">d", value)
            else:
                assert stored in ("NaN", "Infinity", "-Infinity")
        elif name == "target":
            assert stored == value._key()
