"""SPEC §2, exactly: the keys repocket writes and the bytes in them, as redis-cli shows them."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import subprocess
import uuid
from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes

pytestmark = pytest.mark.envelope_only  # SPEC §2's bytes; the plain format's are in test_plain_format.py

MODULE = __name__
PREFIX_USER = f"repocket:{MODULE}:User"
HARRY_ID = "970773fa-4de1-11e5-86f4-6c4008a70392"
HARRY_KEY = f"{PREFIX_USER}:{HARRY_ID}"
TRICKS = {"known_tricks": ["Protego", "Expelliarmus", "Wingardium Leviosa", "Expecto Patronum"]}
PASSWORD = b"$2b$10$4Tk3kCJ0hc0bjrU1ZWPxXe1wHdyhH6/EE5bd0Xbt8zPsi5OzHkXgS"


class User(ActiveRecord):
    name = attributes.Unicode()
    house_name = attributes.Unicode()
    email = attributes.Bytes()
    password = attributes.Bytes()
    metadata = attributes.JSON()


class Project(ActiveRecord):
    name = attributes.Unicode()


class Shapes(ActiveRecord):
    text = attributes.Unicode(null=True)
    raw = attributes.Bytes(null=True)
    latin = attributes.Bytes(encoding="latin-1")
    doc = attributes.JSON()
    ref = attributes.UUID(null=True)
    when = attributes.DateTime(null=True)
    amount = attributes.Decimal(null=True)
    count = attributes.Integer(null=True)
    ratio = attributes.Float(null=True)
    project = attributes.Pointer(Project, null=True)
    log = attributes.ByteStream()
    err = attributes.ByteStream()


class Indexed(ActiveRecord):
    name = attributes.Unicode(index=True)
    age = attributes.Integer(index=True, null=True)
    code = attributes.Unicode(unique=True)


def harry() -> User:
    return User.create(
        id=HARRY_ID,
        name="Harry Potter",
        email="harry@hogwards.uk",
        house_name="Gryffindor",
        password=PASSWORD,
        metadata=TRICKS,
    )


def members(raw: bytes) -> list[tuple[str, Any]]:
    """The members of a stored envelope, in stored order."""
    return json.loads(raw, object_pairs_hook=list)  # type: ignore[no-any-return]


def envelope(client: redis_py.Redis, key: str, field: str) -> dict[str, Any]:
    raw = client.hget(key, field)
    assert raw is not None, f"{key} has no field {field}"
    return json.loads(raw)  # type: ignore[no-any-return]


def value(client: redis_py.Redis, key: str, field: str) -> Any:
    return envelope(client, key, field)["value"]


# -- keys -------------------------------------------------------------------------------------------


def test_record_key_format(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """The record hash key is ``repocket:<module>:<Model>:<id>``."""
    assert MODULE == "tests.functional.test_storage_format"
    assert harry().save()["hash"] == f"repocket:tests.functional.test_storage_format:User:{HARRY_ID}"
    assert redis.type(HARRY_KEY) == b"hash"


def test_one_hash_field_per_non_bytestream_attribute(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """The hash has one field per attribute, ByteStreams excepted."""
    harry()
    assert {f.decode() for f in redis.hkeys(HARRY_KEY)} == {"id", "name", "house_name", "email", "password", "metadata"}
    record = Shapes.create(log=b"x")
    key = record.save()["hash"]
    assert {f.decode() for f in redis.hkeys(key)} == {
        "id", "text", "raw", "latin", "doc", "ref", "when", "amount", "count", "ratio", "project",
    }


def test_envelope_members_in_order(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Every field is a JSON object with exactly the members type, value, module, in that order."""
    harry()
    for field, raw in redis.hgetall(HARRY_KEY).items():
        got = members(raw)
        assert [name for name, _ in got] == ["type", "value", "module"], field
        assert dict(got)["module"] == "repocket.attributes"


def test_envelope_type_names_the_attribute_class(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """The ``type`` member is the attribute's class name."""
    harry()
    types = {f.decode(): json.loads(raw)["type"] for f, raw in redis.hgetall(HARRY_KEY).items()}
    assert types == {
        "id": "AutoUUID", "name": "Unicode", "house_name": "Unicode",
        "email": "Bytes", "password": "Bytes", "metadata": "JSON",
    }


def test_raw_bytes_of_tutorial_fields(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """The stored bytes use the original's ``", "`` and ``": "`` separators, exactly."""
    harry()
    assert redis.hget(HARRY_KEY, "name") == (
        b'{"type": "Unicode", "value": "Harry Potter", "module": "repocket.attributes"}'
    )
    assert redis.hget(HARRY_KEY, "email") == (
        b'{"type": "Bytes", "value": "harry@hogwards.uk", "module": "repocket.attributes"}'
    )
    assert redis.hget(HARRY_KEY, "id") == (
        b'{"type": "AutoUUID", "value": "970773fa-4de1-11e5-86f4-6c4008a70392", "module": "repocket.attributes"}'
    )
    metadata = redis.hget(HARRY_KEY, "metadata")
    assert metadata.startswith(b'{"type": "JSON", "value": {')
    assert metadata.endswith(b'}, "module": "repocket.attributes"}')


# -- value shapes --------------------------------------------------------------------------------------


@pytest.fixture
def shapes_key(repocket_connection: redis_py.Redis) -> tuple[str, Shapes]:
    project = Project.create(name="p")
    record = Shapes.create(
        text="Hogwarts \U0001f9d9 café",
        raw=b"plain ascii",
        latin=b"caf\xe9",
        doc={"known_tricks": ["Protego"], "nested": {"ü": [1, 2.5, None, True]}},
        ref=uuid.UUID("40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8"),
        when=dt.datetime(2015, 8, 29, 12, 30, 45, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        amount=decimal.Decimal("1234567890.123456789012345678900"),
        count=2**100 + 1,
        ratio=0.1,
        project=project,
        log=b"\x00\xff\xfe raw log",
    )
    return record.save()["hash"], record


def test_unicode_value_is_string(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """Unicode is stored as a JSON string (UTF-8, astral characters included)."""
    key, _ = shapes_key
    assert value(redis, key, "text") == "Hogwarts \U0001f9d9 café"


def test_bytes_decodable_is_string(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """Bytes that decode under the attribute's encoding are stored as that string, no extra member."""
    key, _ = shapes_key
    assert members(redis.hget(key, "raw")) == [
        ("type", "Bytes"), ("value", "plain ascii"), ("module", "repocket.attributes"),
    ]
    assert value(redis, key, "latin") == "café"  # latin-1 bytes b"caf\xe9" as text


def test_bytes_not_decodable_is_base64_with_marker(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Bytes that do not decode are base64 with an extra member ``"encoding": "base64"``."""
    record = Shapes.create(raw=b"\xff\x00\x80binary")
    got = members(redis.hget(record.save()["hash"], "raw"))
    assert [name for name, _ in got][:3] == ["type", "value", "module"]
    assert dict(got)["encoding"] == "base64"
    assert set(dict(got)) == {"type", "value", "module", "encoding"}
    assert base64.b64decode(dict(got)["value"]) == b"\xff\x00\x80binary"
    assert Shapes.objects.get(id=record.id).raw == b"\xff\x00\x80binary"


def test_json_value_is_nested_document(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """JSON is stored as the document itself, nested (not a string holding JSON)."""
    key, _ = shapes_key
    assert value(redis, key, "doc") == {"known_tricks": ["Protego"], "nested": {"ü": [1, 2.5, None, True]}}


def test_uuid_value_is_canonical(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """UUID and AutoUUID are stored in canonical hyphenated lower-case form."""
    key, record = shapes_key
    assert value(redis, key, "ref") == "40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8"
    assert value(redis, key, "id") == str(record.id)
    upper = Shapes.create(ref="40997AA471FC4AD3B0D704C0FAC6D6D8")
    assert value(redis, upper.save()["hash"], "ref") == "40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8"


def test_datetime_value_is_iso_with_offset(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """DateTime is stored as ISO-8601 text keeping the timezone offset."""
    key, _ = shapes_key
    assert value(redis, key, "when") == "2015-08-29T12:30:45.123456+05:30"


def test_datetime_naive_value_has_no_offset(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A naive DateTime is stored as ISO-8601 without offset."""
    record = Shapes.create(when=dt.datetime(2015, 8, 29, 12, 30))
    assert value(redis, record.save()["hash"], "when") == "2015-08-29T12:30:00"


def test_decimal_value_is_exact_string(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """Decimal is stored as its exact string, trailing zeros kept."""
    key, _ = shapes_key
    assert value(redis, key, "amount") == "1234567890.123456789012345678900"


def test_integer_value_is_number_beyond_64_bits(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """Integer is stored as a JSON number, exact beyond 64 bits."""
    key, record = shapes_key
    raw = redis.hget(key, "count")
    assert raw == b'{"type": "Integer", "value": 1267650600228229401496703205377, "module": "repocket.attributes"}'
    assert Shapes.objects.get(id=record.id).count == 2**100 + 1


def test_float_value_is_number(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """Float is stored as a JSON number that reads back as the same float."""
    key, _ = shapes_key
    stored = value(redis, key, "ratio")
    assert isinstance(stored, float) and stored == 0.1


@pytest.mark.parametrize(("number", "text"), [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")])
def test_float_non_finite_is_string(repocket_connection: redis_py.Redis, redis: redis_py.Redis, number: float, text: str) -> None:
    """NaN and ±Infinity are stored as the strings "NaN", "Infinity", "-Infinity" and read back."""
    record = Shapes.create(ratio=number)
    assert value(redis, record.save()["hash"], "ratio") == text
    loaded = Shapes.objects.get(id=record.id).ratio
    assert (math.isnan(loaded) if math.isnan(number) else loaded == number)


def test_float_negative_zero_round_trips(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """-0.0 is stored as a number and reads back with its sign."""
    record = Shapes.create(ratio=-0.0)
    stored = value(redis, record.save()["hash"], "ratio")
    assert stored == 0 and math.copysign(1, stored) == -1
    assert math.copysign(1, Shapes.objects.get(id=record.id).ratio) == -1


def test_pointer_value_is_target_hash_key(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """Pointer is stored as the target record's hash key."""
    key, record = shapes_key
    assert value(redis, key, "project") == f"repocket:{MODULE}:Project:{record.project.id}"


NULLABLE = [("text", "Unicode"), ("raw", "Bytes"), ("ref", "UUID"), ("when", "DateTime"),
            ("amount", "Decimal"), ("count", "Integer"), ("ratio", "Float"), ("project", "Pointer")]


def test_null_value_is_json_null(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """None is stored as JSON null in a full envelope, and reads back as None."""
    record = Shapes.create(**{name: None for name, _ in NULLABLE})
    key = record.save()["hash"]
    for name, type_name in NULLABLE:
        assert redis.hget(key, name) == (
            b'{"type": "' + type_name.encode() + b'", "value": null, "module": "repocket.attributes"}'
        ), name
    loaded = Shapes.objects.get(id=record.id)
    assert all(getattr(loaded, name) is None for name, _ in NULLABLE)


def test_every_shape_round_trips(shapes_key: tuple[str, Shapes]) -> None:
    """What was saved is what get returns, type included."""
    _, record = shapes_key
    loaded = Shapes.objects.get(id=record.id)
    assert loaded == record
    for name in ("text", "raw", "latin", "doc", "ref", "when", "amount", "count", "ratio", "log"):
        assert type(getattr(loaded, name)) is type(getattr(record, name)), name
    assert str(loaded.amount) == "1234567890.123456789012345678900"
    assert loaded.when.utcoffset() == dt.timedelta(hours=5, minutes=30)


# -- ByteStream -----------------------------------------------------------------------------------------


def test_bytestream_is_a_string_with_raw_bytes(shapes_key: tuple[str, Shapes], redis: redis_py.Redis) -> None:
    """A ByteStream lives at ``<hash key>:field:<name>``, a Redis string holding the raw bytes."""
    key, _ = shapes_key
    assert redis.type(f"{key}:field:log") == b"string"
    assert redis.get(f"{key}:field:log") == b"\x00\xff\xfe raw log"
    assert redis.hget(key, "log") is None


# -- bookkeeping keys ---------------------------------------------------------------------------------------


def test_id_set(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """The ids of saved records are in the set ``<prefix>:_ids``."""
    harry()
    assert redis.type(f"{PREFIX_USER}:_ids") == b"set"
    assert redis.smembers(f"{PREFIX_USER}:_ids") == {HARRY_ID.encode()}


def test_bookkeeping_keys_have_underscore_segment(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Every key that is not a record or a ByteStream is under the model prefix, its next segment starting with '_'."""
    prefix = f"repocket:{MODULE}:Indexed"
    records = [Indexed.create(name="Ann", age=3, code="a"), Indexed.create(name="Bob", age=None, code="b")]
    record_keys = {f"{prefix}:{r.id}" for r in records}
    all_keys = {k.decode() for k in redis.keys("*")}
    assert record_keys <= all_keys
    bookkeeping = all_keys - record_keys
    assert f"{prefix}:_ids" in bookkeeping
    assert len(bookkeeping) > 1  # the indexes exist too
    for key in bookkeeping:
        assert key.startswith(prefix + ":_"), key
        segment = key[len(prefix) + 1:].split(":")[0]
        with pytest.raises(ValueError):
            uuid.UUID(segment)


def test_only_documented_keys_for_plain_model(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A model without indexes or ByteStreams writes its record hash and the id set, nothing else."""
    harry()
    assert {k.decode() for k in redis.keys("*")} == {HARRY_KEY, f"{PREFIX_USER}:_ids"}


# -- the redis-cli view ------------------------------------------------------------------------------------


def redis_cli_hgetall(redis_cli: str, redis_url: str, key: str) -> list[str]:
    """The lines ``redis-cli --raw HGETALL key`` prints."""
    done = subprocess.run(
        [redis_cli, "-u", redis_url, "--raw", "HGETALL", key],
        capture_output=True, timeout=30, check=True,
    )
    return done.stdout.decode("utf-8").splitlines()


def test_redis_cli_view(repocket_connection: redis_py.Redis, redis_cli: str, redis_url: str) -> None:
    """``redis-cli --raw HGETALL <key>`` shows one field per attribute, each the SPEC §2 envelope."""
    harry()
    lines = redis_cli_hgetall(redis_cli, redis_url, HARRY_KEY)
    assert len(lines) == 12
    shown = dict(zip(lines[0::2], lines[1::2]))
    assert set(shown) == {"id", "name", "house_name", "email", "password", "metadata"}
    assert shown["name"] == '{"type": "Unicode", "value": "Harry Potter", "module": "repocket.attributes"}'
    assert shown["house_name"] == '{"type": "Unicode", "value": "Gryffindor", "module": "repocket.attributes"}'
    assert shown["email"] == '{"type": "Bytes", "value": "harry@hogwards.uk", "module": "repocket.attributes"}'
    assert shown["password"] == (
        '{"type": "Bytes", "value": "' + PASSWORD.decode() + '", "module": "repocket.attributes"}'
    )
    assert shown["id"] == f'{{"type": "AutoUUID", "value": "{HARRY_ID}", "module": "repocket.attributes"}}'
    assert shown["metadata"].startswith('{"type": "JSON", "value": {')
    assert shown["metadata"].endswith('}, "module": "repocket.attributes"}')
    assert json.loads(shown["metadata"], object_pairs_hook=list) == [
        ("type", "JSON"), ("value", [("known_tricks", TRICKS["known_tricks"])]), ("module", "repocket.attributes"),
    ]


def test_redis_cli_view_of_bytestream(repocket_connection: redis_py.Redis, redis_cli: str, redis_url: str) -> None:
    """``redis-cli --raw GET <hash key>:field:<name>`` prints the ByteStream's bytes."""
    record = Shapes.create(log=b"line one\nline two")
    key = record.save()["strings"]["log"]
    done = subprocess.run([redis_cli, "-u", redis_url, "--raw", "GET", key], capture_output=True, timeout=30, check=True)
    assert done.stdout == b"line one\nline two\n"
