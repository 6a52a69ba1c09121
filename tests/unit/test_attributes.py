"""Attribute types without a server: casting, base types, to_string, and the exact bytes encode() writes."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid

import pytest

from repocket import attributes
from repocket.errors import ValidationError

HARRY_ID = "970773fa-4de1-11e5-86f4-6c4008a70392"
ENVELOPE = '{{"type": "{type}", "value": {value}, "module": "repocket.attributes"}}'


def envelope(type_name: str, value: str) -> bytes:
    """The exact bytes SPEC §2 prescribes for one hash field."""
    return ENVELOPE.format(type=type_name, value=value).encode("utf-8")


# -- cast: Unicode / Bytes -------------------------------------------------------------


def test_unicode_cast_keeps_str() -> None:
    """Unicode.cast returns a str unchanged."""
    assert attributes.Unicode().cast("Harry Potter") == "Harry Potter"


def test_unicode_cast_decodes_bytes_with_encoding() -> None:
    """Unicode.cast decodes bytes with the attribute's encoding."""
    assert attributes.Unicode().cast("café".encode()) == "café"
    assert attributes.Unicode(encoding="latin-1").cast(b"caf\xe9") == "café"


def test_unicode_cast_rejects_undecodable_bytes() -> None:
    """Unicode.cast of bytes invalid under the encoding raises ValidationError."""
    with pytest.raises(ValidationError):
        attributes.Unicode().cast(b"\xff\xfe")


@pytest.mark.parametrize("value", [5, 1.5, ["a"], {"a": 1}, object()])
def test_unicode_cast_rejects_non_text(value: object) -> None:
    """Unicode.cast of a non-text value raises ValidationError (a ValueError)."""
    with pytest.raises(ValidationError) as info:
        attributes.Unicode().cast(value)
    assert isinstance(info.value, ValueError)
    assert type(value).__name__ in str(info.value)


def test_bytes_cast_encodes_str_with_encoding() -> None:
    """Bytes.cast encodes a str with the attribute's encoding."""
    assert attributes.Bytes().cast("café") == b"caf\xc3\xa9"
    assert attributes.Bytes(encoding="latin-1").cast("café") == b"caf\xe9"


def test_bytes_cast_accepts_bytes_like() -> None:
    """Bytes.cast returns bytes for bytes, bytearray and memoryview."""
    for value in (b"\x00\xff", bytearray(b"\x00\xff"), memoryview(b"\x00\xff")):
        result = attributes.Bytes().cast(value)
        assert type(result) is bytes and result == b"\x00\xff"


@pytest.mark.parametrize("value", [5, 1.5, ["a"], object()])
def test_bytes_cast_rejects_non_bytes(value: object) -> None:
    """Bytes.cast of a value that is neither text nor bytes raises ValidationError."""
    with pytest.raises(ValidationError):
        attributes.Bytes().cast(value)


def test_cast_none_stays_none() -> None:
    """cast(None) is None for every attribute type (null-ness is checked at save)."""
    for cls in (attributes.Unicode, attributes.Bytes, attributes.Integer, attributes.Float,
                attributes.Decimal, attributes.UUID, attributes.DateTime, attributes.JSON):
        assert cls().cast(None) is None


# -- cast: numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4", 4), (" -17 ", -17), (3.0, 3), (decimal.Decimal("7"), 7), (2**80, 2**80), ("123456789012345678901234567890", 123456789012345678901234567890)],
)
def test_integer_cast(value: object, expected: int) -> None:
    """Integer.cast accepts ints, numeric strings, and integral floats/Decimals."""
    result = attributes.Integer().cast(value)
    assert type(result) is int and result == expected


@pytest.mark.parametrize("value", [1.5, decimal.Decimal("2.5"), math.nan, math.inf, "4.5", "four", [], object()])
def test_integer_cast_rejects(value: object) -> None:
    """Integer.cast rejects non-integral floats, non-finite floats and non-numeric values."""
    with pytest.raises(ValidationError):
        attributes.Integer().cast(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.5", 1.5), (3, 3.0), (decimal.Decimal("0.25"), 0.25), ("-0.0", -0.0), ("inf", math.inf)],
)
def test_float_cast(value: object, expected: float) -> None:
    """Float.cast accepts numbers and numeric strings and returns a float."""
    result = attributes.Float().cast(value)
    assert type(result) is float and result == expected
    assert math.copysign(1, result) == math.copysign(1, expected)


def test_float_cast_nan_string() -> None:
    """Float.cast("nan") is a NaN float."""
    assert math.isnan(attributes.Float().cast("nan"))


@pytest.mark.parametrize("value", ["abc", [], {}, object()])
def test_float_cast_rejects(value: object) -> None:
    """Float.cast rejects non-numeric values."""
    with pytest.raises(ValidationError):
        attributes.Float().cast(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.10", "1.10"), (3, "3"), (1.1, "1.1"), (decimal.Decimal("0.000000000000000000001"), "1E-21")],
)
def test_decimal_cast(value: object, expected: str) -> None:
    """Decimal.cast accepts Decimals, ints, numeric strings (exactly) and floats (by their shortest text)."""
    result = attributes.Decimal().cast(value)
    assert type(result) is decimal.Decimal
    assert str(result) == expected


@pytest.mark.parametrize("value", ["abc", [], object()])
def test_decimal_cast_rejects(value: object) -> None:
    """Decimal.cast rejects non-numeric values."""
    with pytest.raises(ValidationError):
        attributes.Decimal().cast(value)


# -- cast: JSON ------------------------------------------------------------------------


def test_json_cast_tuples_become_lists() -> None:
    """JSON.cast turns tuples into lists, at every depth, so memory equals what is read back."""
    assert attributes.JSON().cast({"a": (1, (2, 3))}) == {"a": [1, [2, 3]]}
    assert type(attributes.JSON().cast((1,))) is list


def test_json_cast_copies() -> None:
    """JSON.cast returns a copy: mutating the given document does not change the value."""
    doc = {"known_tricks": ["Protego"]}
    cast = attributes.JSON().cast(doc)
    doc["known_tricks"].append("Expelliarmus")
    assert cast == {"known_tricks": ["Protego"]}


@pytest.mark.parametrize("value", [{"a": 1, "b": [True, None, 1.5, "x"]}, [], "text", 0, None, "{\"not\": \"parsed\"}"])
def test_json_cast_accepts_documents(value: object) -> None:
    """JSON.cast accepts any JSON document; a str stays a str (never parsed)."""
    assert attributes.JSON().cast(value) == value


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {("a",): 1}, {"a": {2: 3}}, math.nan, [math.inf], {"x": -math.inf}, {1, 2}, b"bytes", object()],
)
def test_json_cast_rejects(value: object) -> None:
    """JSON.cast rejects non-str keys, NaN/Infinity and non-JSON types."""
    with pytest.raises(ValidationError):
        attributes.JSON().cast(value)


# -- cast: UUID / DateTime -----------------------------------------------------------------


def test_uuid_cast_from_str() -> None:
    """UUID.cast parses a string into uuid.UUID."""
    result = attributes.UUID().cast(HARRY_ID)
    assert isinstance(result, uuid.UUID) and result == uuid.UUID(HARRY_ID)


def test_autouuid_cast_invalid_names_the_value() -> None:
    """AutoUUID.cast of an invalid string raises a ValueError naming the value."""
    with pytest.raises(ValueError, match="not-a-uuid"):
        attributes.AutoUUID().cast("not-a-uuid")


def test_datetime_cast_from_iso_string() -> None:
    """DateTime.cast parses ISO-8601, keeping the offset."""
    result = attributes.DateTime().cast("2015-08-29T12:30:45.123456+02:00")
    assert result == dt.datetime(2015, 8, 29, 12, 30, 45, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert result.utcoffset() == dt.timedelta(hours=2)


def test_datetime_cast_from_naive_iso_string() -> None:
    """DateTime.cast of a naive ISO string gives a naive datetime."""
    result = attributes.DateTime().cast("2015-08-29T12:30:45")
    assert result == dt.datetime(2015, 8, 29, 12, 30, 45) and result.tzinfo is None


def test_datetime_cast_from_date() -> None:
    """DateTime.cast of a date gives midnight of that day."""
    result = attributes.DateTime().cast(dt.date(2015, 8, 29))
    assert type(result) is dt.datetime and result == dt.datetime(2015, 8, 29)


@pytest.mark.parametrize("value", ["not a date", 12, [], object()])
def test_datetime_cast_rejects(value: object) -> None:
    """DateTime.cast rejects text that is not a date and non-date values."""
    with pytest.raises(ValidationError):
        attributes.DateTime().cast(value)


# -- the original's classmethod API ------------------------------------------------------------


def test_cast_works_on_the_class() -> None:
    """``Integer.cast("4")`` works on the class, as the original documents ``classmethod cast``."""
    assert attributes.Integer.cast("4") == 4
    assert attributes.Bytes.cast("x") == b"x"
    assert attributes.UUID.cast(HARRY_ID) == uuid.UUID(HARRY_ID)


def test_cast_on_class_rejects_like_instance() -> None:
    """Casting through the class raises the same ValidationError as through an instance."""
    with pytest.raises(ValidationError):
        attributes.Integer.cast("four")


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (attributes.Unicode, str),
        (attributes.Bytes, bytes),
        (attributes.ByteStream, bytes),
        (attributes.UUID, uuid.UUID),
        (attributes.AutoUUID, uuid.UUID),
        (attributes.DateTime, dt.datetime),
        (attributes.Decimal, decimal.Decimal),
        (attributes.Integer, int),
        (attributes.Float, float),
    ],
)
def test_get_base_type(cls: type[attributes.Attribute[object]], base: type) -> None:
    """get_base_type() returns ``__base_type__`` as the original API reference lists it."""
    assert cls.get_base_type() is base
    assert cls().get_base_type() is base
    assert cls.__base_type__ is base


def test_attribute_keywords_and_defaults() -> None:
    """Attributes take null, default and encoding, defaulting to False, None and utf-8."""
    attr = attributes.Unicode()
    assert (attr.null, attr.default, attr.encoding) == (False, None, "utf-8")
    attr = attributes.Bytes(True, b"x", "latin-1")
    assert (attr.null, attr.default, attr.encoding) == (True, b"x", "latin-1")
    assert attributes.DateTime(auto_now=True).auto_now is True
    assert attributes.Pointer(None, null=True).null is True
    assert attributes.Pointer(None, True).null is True  # Pointer(to_model, null=False)
    positional = attributes.DateTime(True, True)  # DateTime(auto_now=False, null=False)
    assert (positional.auto_now, positional.null) == (True, True)


# -- to_string / to_python ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "value", "expected"),
    [
        (attributes.Unicode(), "Harry", "Harry"),
        (attributes.Bytes(), b"harry@hogwards.uk", "harry@hogwards.uk"),
        (attributes.Integer(), 42, "42"),
        (attributes.Float(), 1.5, "1.5"),
        (attributes.Decimal(), decimal.Decimal("1.10"), "1.10"),
        (attributes.UUID(), uuid.UUID(HARRY_ID), HARRY_ID),
        (attributes.Unicode(), None, ""),
    ],
)
def test_to_string(attr: attributes.Attribute[object], value: object, expected: str) -> None:
    """to_string converts a value into a str safely (None becomes '')."""
    assert attr.to_string(value) == expected


def test_to_python_simple_is_the_value() -> None:
    """to_python(value, simple=True) returns the plain value."""
    assert attributes.Unicode().to_python("Harry", simple=True) == "Harry"
    assert attributes.Integer().to_python(3, simple=True) == 3


def test_to_python_is_the_envelope() -> None:
    """to_python(value) returns the json-safe envelope dict, as stored."""
    result = attributes.Unicode().to_python("Harry")
    assert result == {"type": "Unicode", "value": "Harry", "module": "repocket.attributes"}
    assert list(result) == ["type", "value", "module"]
    json.dumps(result)


# -- encode(): exact bytes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "value", "expected"),
    [
        (attributes.Unicode(), "Harry Potter", envelope("Unicode", '"Harry Potter"')),
        (attributes.Bytes(), b"harry@hogwards.uk", envelope("Bytes", '"harry@hogwards.uk"')),
        (attributes.AutoUUID(), uuid.UUID(HARRY_ID), envelope("AutoUUID", f'"{HARRY_ID}"')),
        (attributes.UUID(), uuid.UUID(HARRY_ID), envelope("UUID", f'"{HARRY_ID}"')),
        (attributes.Integer(), 2**70, envelope("Integer", str(2**70))),
        (attributes.Integer(), -5, envelope("Integer", "-5")),
        (attributes.Float(), 1.5, envelope("Float", "1.5")),
        (attributes.Float(), math.nan, envelope("Float", '"NaN"')),
        (attributes.Float(), math.inf, envelope("Float", '"Infinity"')),
        (attributes.Float(), -math.inf, envelope("Float", '"-Infinity"')),
        (attributes.Decimal(), decimal.Decimal("1.10"), envelope("Decimal", '"1.10"')),
        (
            attributes.DateTime(),
            dt.datetime(2015, 8, 29, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
            envelope("DateTime", '"2015-08-29T12:30:00-03:00"'),
        ),
        (attributes.DateTime(), dt.datetime(2015, 8, 29, 12, 30), envelope("DateTime", '"2015-08-29T12:30:00"')),
        (attributes.Unicode(), None, envelope("Unicode", "null")),
        (attributes.DateTime(null=True), None, envelope("DateTime", "null")),
    ],
    ids=lambda x: repr(x)[:40],
)
def test_encode_exact_bytes(attr: attributes.Attribute[object], value: object, expected: bytes) -> None:
    """encode() writes exactly the SPEC §2 envelope bytes."""
    assert attr.encode(value) == expected


def test_encode_bytes_not_decodable_is_base64() -> None:
    """Bytes that do not decode under the encoding are stored as base64 with an extra encoding member."""
    assert attributes.Bytes().encode(b"\xff\x00") == (
        b'{"type": "Bytes", "value": "/wA=", "module": "repocket.attributes", "encoding": "base64"}'
    )


def test_encode_float_negative_zero() -> None:
    """-0.0 is encoded as the number -0.0 (its sign kept)."""
    raw = attributes.Float().encode(-0.0)
    assert math.copysign(1, json.loads(raw)["value"]) == -1.0


def test_encode_json_is_nested_document() -> None:
    """A JSON value is stored as the nested document, not as a string."""
    raw = attributes.JSON().encode({"known_tricks": ["Protego", "Expelliarmus"], "ü": 1})
    assert raw.startswith(b'{"type": "JSON", "value": {')
    assert raw.endswith(b', "module": "repocket.attributes"}')
    assert json.loads(raw)["value"] == {"known_tricks": ["Protego", "Expelliarmus"], "ü": 1}


def test_encode_unicode_non_ascii_round_trips_through_json() -> None:
    """Non-ASCII and astral text is valid UTF-8 JSON that parses back to the same str."""
    text = "Hogwarts \U0001f9d9 caf\u00e9 \x00"
    raw = attributes.Unicode().encode(text)
    assert json.loads(raw.decode("utf-8"))["value"] == text
