"""SPEC §3 and issue 2's bad input: the error tree, validation, and data corrupted behind repocket's back."""

from __future__ import annotations

import datetime as dt
import decimal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

import repocket
from repocket import ActiveRecord, attributes, errors

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")

MODULE = __name__
MISSING_ID = "970773fa-4de1-11e5-86f4-6c4008a70392"
ENV = b'{"type": "%s", "value": %s, "module": "repocket.attributes"}'


class Target(ActiveRecord):
    name = attributes.Unicode()


class Other(ActiveRecord):
    name = attributes.Unicode()


class Victim(ActiveRecord):
    name = attributes.Unicode()
    data = attributes.Bytes()
    tags = attributes.JSON()
    ref = attributes.UUID(null=True)
    when = attributes.DateTime(null=True)
    amount = attributes.Decimal()
    count = attributes.Integer()
    ratio = attributes.Float()
    project = attributes.Pointer(Target, null=True)


class Streamed(ActiveRecord):
    name = attributes.Unicode()
    log = attributes.ByteStream()


class Stamped(ActiveRecord):
    at = attributes.DateTime()


class Indexed(ActiveRecord):
    name = attributes.Unicode(index=True)
    age = attributes.Integer(index=True)


def prefix(model: type[ActiveRecord]) -> str:
    return f"repocket:{MODULE}:{model.__name__}"


def snapshot(client: redis_py.Redis) -> dict[bytes, Any]:
    """Every key of the test database with its type and full contents."""
    out: dict[bytes, Any] = {}
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = (kind, client.hgetall(key))
        elif kind == b"set":
            out[key] = (kind, client.smembers(key))
        elif kind == b"zset":
            out[key] = (kind, client.zrange(key, 0, -1, withscores=True))
        elif kind == b"string":
            out[key] = (kind, client.get(key))
        elif kind == b"list":
            out[key] = (kind, client.lrange(key, 0, -1))
        else:
            out[key] = (kind, None)
    return out


# -- the error tree ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_repocket_error(name: str) -> None:
    """Every exception in repocket.errors inherits from RepocketError."""
    cls = getattr(errors, name)
    assert issubclass(cls, Exception)
    assert issubclass(cls, errors.RepocketError)


def test_spec_errors_exist_under_root() -> None:
    """The errors SPEC §1–3 names exist and are RepocketErrors; ValidationError is a ValueError."""
    for cls in (errors.DoesNotExist, errors.RepocketActiveRecordDefinitionError, errors.ValidationError,
                errors.CorruptRecordError, errors.BrokenReferenceError):
        assert issubclass(cls, errors.RepocketError)
    assert issubclass(errors.ValidationError, ValueError)
    assert issubclass(Victim.DoesNotExist, errors.DoesNotExist)
    assert repocket.RepocketError is errors.RepocketError


def test_validation_error_names_model_field_type_expected() -> None:
    """ValidationError's message and attributes name the model, the field, the value's type and the expectation."""
    with pytest.raises(errors.ValidationError) as info:
        Victim(count="twelve")
    exc = info.value
    message = str(exc)
    assert "Victim" in message and "count" in message
    assert "str" in message  # the value's type
    assert "int" in message  # what was expected
    assert "Victim" in str(exc.model)
    assert exc.field == "count"
    assert exc.value == "twelve"
    assert "int" in str(exc.expected)
    assert isinstance(exc, ValueError) and isinstance(exc, errors.RepocketError)


# -- wrong types at construction and assignment ------------------------------------------------------------

WRONG = [
    ("name", 5, "int"),
    ("name", ["Harry"], "list"),
    ("data", 5, "int"),
    ("data", 1.5, "float"),
    ("tags", {1: "a"}, "dict"),
    ("tags", {"x": float("nan")}, "dict"),
    ("tags", {"a", "b"}, "set"),
    ("ref", "not-a-uuid", "str"),
    ("ref", 12345, "int"),
    ("when", "not a date", "str"),
    ("when", 5, "int"),
    ("amount", "abc", "str"),
    ("amount", [1], "list"),
    ("count", "abc", "str"),
    ("count", 1.5, "float"),
    ("count", [], "list"),
    ("ratio", "abc", "str"),
    ("ratio", {}, "dict"),
    ("project", "repocket:x:Target:1", "str"),
    ("project", Other(name="wrong model"), "Other"),
    ("id", "not-a-uuid", "str"),
]


@pytest.mark.parametrize(("field", "bad", "type_name"), WRONG, ids=[f"{f}-{t}" for f, _, t in WRONG])
def test_wrong_type_at_construction(field: str, bad: object, type_name: str) -> None:
    """A value that cannot be cast raises ValidationError at construction, naming field and value type."""
    with pytest.raises(errors.ValidationError) as info:
        Victim(**{field: bad})
    assert info.value.field == field
    assert field in str(info.value) and type_name in str(info.value)


@pytest.mark.parametrize(("field", "bad", "type_name"), WRONG, ids=[f"{f}-{t}" for f, _, t in WRONG])
def test_wrong_type_at_assignment(field: str, bad: object, type_name: str) -> None:
    """A value that cannot be cast raises ValidationError at assignment and leaves the old value."""
    record = Victim(id=MISSING_ID, name="ok", count=3)
    before = record.to_dict(simple=True)
    with pytest.raises(errors.ValidationError) as info:
        setattr(record, field, bad)
    assert info.value.field == field
    assert type_name in str(info.value)
    assert record.to_dict(simple=True) == before


def test_valid_values_are_cast_at_assignment() -> None:
    """Assignment casts values that can be cast (so the in-memory value has the attribute's type)."""
    record = Victim()
    record.count = "42"
    record.amount = "1.10"
    record.ratio = 3
    record.data = "text"
    record.name = b"bytes"
    record.ref = "40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8"
    record.when = "2015-08-29T12:00:00+00:00"
    assert record.count == 42 and type(record.count) is int
    assert record.amount == decimal.Decimal("1.10") and str(record.amount) == "1.10"
    assert record.ratio == 3.0 and type(record.ratio) is float
    assert record.data == b"text" and record.name == "bytes"
    assert record.ref == uuid.UUID("40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8")
    assert record.when == dt.datetime(2015, 8, 29, 12, tzinfo=dt.timezone.utc)


# -- null=False ------------------------------------------------------------------------------------------------


def test_none_in_not_null_attribute_fails_save_writing_nothing(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """None left in a null=False attribute makes save() raise ValidationError naming it; no key is written."""
    record = Victim(name=None)
    with pytest.raises(errors.ValidationError) as info:
        record.save()
    assert info.value.field == "name" and "name" in str(info.value) and "Victim" in str(info.value)
    assert redis.keys("*") == []
    assert record.id is None or not redis.exists(f"{prefix(Victim)}:{record.id}")


def test_unset_not_null_datetime_fails_save(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A DateTime() (null=False) left at its empty value None fails save with ValidationError."""
    with pytest.raises(errors.ValidationError) as info:
        Stamped().save()
    assert info.value.field == "at"
    assert redis.keys("*") == []
    assert Stamped.create(at=dt.datetime(2015, 1, 1)).at == dt.datetime(2015, 1, 1)


def test_none_on_existing_record_changes_nothing(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A failed save of a stored record leaves the record and its index entries as they were."""
    record = Indexed.create(name="Ann", age=3)
    Indexed.create(name="Bob", age=4)
    before = snapshot(redis)
    record.age = None
    record.name = "Changed"
    with pytest.raises(errors.ValidationError):
        record.save()
    assert snapshot(redis) == before
    assert Indexed.objects.get(id=record.id).name == "Ann"


def test_empty_values_are_valid_not_null(repocket_connection: redis_py.Redis) -> None:
    """The original empty values ('', b'', 0, 0.0, Decimal('0')) are not None and save fine."""
    record = Victim.create()
    loaded = Victim.objects.get(id=record.id)
    assert (loaded.name, loaded.data, loaded.count, loaded.ratio, loaded.amount) == ("", b"", 0, 0.0, decimal.Decimal(0))


# -- invalid UUIDs, unknown fields, unsaved pointers, missing records ---------------------------------------------


@pytest.mark.parametrize("bad", ["nope", "970773fa-4de1-11e5-86f4-6c4008a7039", "970773fa-4de1-11e5-86f4-6c4008a70392x", ""])
def test_invalid_uuid_raises_value_error_naming_it(bad: str) -> None:
    """An invalid id or UUID raises ValueError (ValidationError) naming the value."""
    with pytest.raises(ValueError) as info:
        Victim(id=bad)
    assert repr(bad) in str(info.value) or (bad and bad in str(info.value))
    with pytest.raises(errors.ValidationError):
        Victim(ref=bad)


def test_get_with_invalid_uuid_raises_value_error(repocket_connection: redis_py.Redis) -> None:
    """objects.get(id=<invalid>) raises ValueError naming the value, not DoesNotExist."""
    with pytest.raises(ValueError, match="bogus-id"):
        Victim.objects.get(id="bogus-id")


def test_unknown_field_in_constructor(repocket_connection: redis_py.Redis) -> None:
    """An unknown keyword raises TypeError naming it and listing the valid names."""
    with pytest.raises(TypeError) as info:
        Victim(nmae="typo")
    assert "nmae" in str(info.value)
    assert all(name in str(info.value) for name in ("name", "data", "tags", "ref", "when", "count"))
    assert isinstance(info.value, errors.RepocketError)


def test_unknown_field_in_getitem() -> None:
    """``instance["unknown"]`` raises KeyError listing the valid names."""
    with pytest.raises(KeyError) as info:
        Victim()["nmae"]
    assert "nmae" in str(info.value) and "count" in str(info.value)


def test_unknown_field_in_filter(repocket_connection: redis_py.Redis) -> None:
    """filter(unknown=...) raises TypeError naming the field."""
    with pytest.raises(TypeError, match="nmae"):
        list(Victim.objects.filter(nmae="typo"))


def test_unknown_field_in_matches() -> None:
    """matches({"unknown": ...}) raises an error naming the field, never True."""
    with pytest.raises((KeyError, TypeError), match="nmae"):
        Victim().matches({"nmae": "x"})


def test_pointer_to_unsaved_record(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Saving a Pointer to an unsaved record raises ReferenceError and writes nothing."""
    record = Victim(project=Target(name="never saved"))
    with pytest.raises(ReferenceError) as info:
        record.save()
    assert isinstance(info.value, errors.RepocketError)
    assert "Target" in str(info.value)
    assert redis.keys("*") == []


def test_get_missing_id_names_the_key(repocket_connection: redis_py.Redis) -> None:
    """get() of a missing id raises Model.DoesNotExist naming the key it looked for."""
    with pytest.raises(Victim.DoesNotExist) as info:
        Victim.objects.get(id=MISSING_ID)
    assert f"{prefix(Victim)}:{MISSING_ID}" in str(info.value)
    assert isinstance(info.value, errors.DoesNotExist)


def test_get_missing_id_other_model_not_caught() -> None:
    """One model's DoesNotExist is not another's."""
    assert not issubclass(Victim.DoesNotExist, Target.DoesNotExist)


# -- corrupted data ------------------------------------------------------------------------------------------------


def _env(type_name: str, value: str, module: str = "repocket.attributes") -> bytes:
    return b'{"type": "%s", "value": %s, "module": "%s"}' % (type_name.encode(), value.encode(), module.encode())


OTHER_KEY = f"repocket:{MODULE}:Other:{MISSING_ID}"
CORRUPT = [
    ("not-json", "name", b"this is not json"),
    ("empty", "name", b""),
    ("truncated", "name", b'{"type": "Unicode", "value": "Harr'),
    ("bare-nan", "ratio", b'{"type": "Float", "value": NaN, "module": "repocket.attributes"}'),
    ("not-an-object", "name", b'"Harry Potter"'),
    ("array", "name", b'["Unicode", "Harry", "repocket.attributes"]'),
    ("unknown-type-tag", "name", _env("Evil", '"x"')),
    ("no-type", "name", b'{"value": "x", "module": "repocket.attributes"}'),
    ("module-os", "name", _env("Unicode", '"x"', "os")),
    ("type-in-os", "name", _env("system", '"echo pwned"', "os")),
    ("no-module", "name", b'{"type": "Unicode", "value": "x"}'),
    ("no-value", "name", b'{"type": "Unicode", "module": "repocket.attributes"}'),
    ("extra-member", "name", b'{"type": "Unicode", "value": "x", "module": "repocket.attributes", "eval": "1"}'),
    ("other-type-tag", "name", _env("Integer", "5")),
    ("other-type-tag-count", "count", _env("Unicode", '"5"')),
    ("unicode-number", "name", _env("Unicode", "5")),
    ("integer-string", "count", _env("Integer", '"12"')),
    ("integer-float", "count", _env("Integer", "1.5")),
    ("integer-bool", "count", _env("Integer", "true")),
    ("float-text", "ratio", _env("Float", '"abc"')),
    ("float-list", "ratio", _env("Float", "[1]")),
    ("decimal-garbage", "amount", _env("Decimal", '"abc"')),
    ("decimal-number", "amount", _env("Decimal", "1.5")),
    ("uuid-garbage", "ref", _env("UUID", '"not-a-uuid"')),
    ("uuid-number", "ref", _env("UUID", "5")),
    ("datetime-garbage", "when", _env("DateTime", '"yesterday-ish"')),
    ("datetime-number", "when", _env("DateTime", "1440000000")),
    ("bytes-number", "data", _env("Bytes", "5")),
    ("bytes-bad-base64", "data", b'{"type": "Bytes", "value": "!!!", "module": "repocket.attributes", "encoding": "base64"}'),
    ("bytes-unknown-encoding", "data", b'{"type": "Bytes", "value": "x", "module": "repocket.attributes", "encoding": "rot13"}'),
    ("pointer-other-model", "project", _env("Pointer", f'"{OTHER_KEY}"')),
    ("pointer-glob", "project", _env("Pointer", f'"repocket:{MODULE}:Target:*"')),
    ("pointer-glob-class", "project", _env("Pointer", f'"repocket:{MODULE}:Target:[0-9]*"')),
    ("pointer-number", "project", _env("Pointer", "5")),
    ("pointer-not-a-key", "project", _env("Pointer", '"/etc/passwd"')),
    ("id-disagrees", "id", _env("AutoUUID", f'"{MISSING_ID}"')),
    ("id-garbage", "id", _env("AutoUUID", '"garbage"')),
]


@pytest.fixture
def victim(repocket_connection: redis_py.Redis) -> tuple[Victim, str]:
    Other.create(id=MISSING_ID, name="other model")  # OTHER_KEY exists: still not a Target
    record = Victim.create(name="Harry", count=1, project=Target.create(name="t"))
    return record, record.save()["hash"]


@pytest.mark.parametrize(("case", "field", "raw"), CORRUPT, ids=[c for c, _, _ in CORRUPT])
@pytest.mark.envelope_only  # the bytes of the envelope format
def test_corrupt_field_raises_naming_key_and_field(
    victim: tuple[Victim, str], redis: redis_py.Redis, case: str, field: str, raw: bytes
) -> None:
    """Stored data that is not what repocket writes raises CorruptRecordError naming key and field."""
    record, key = victim
    redis.hset(key, field, raw)
    with pytest.raises(errors.CorruptRecordError) as info:
        Victim.objects.get(id=record.id)
    exc = info.value
    assert exc.key == key
    assert exc.field == field
    assert key in str(exc) and field in str(exc)


@pytest.mark.parametrize(("case", "field", "raw"), CORRUPT[:8], ids=[c for c, _, _ in CORRUPT[:8]])
@pytest.mark.envelope_only  # the bytes of the envelope format
def test_corrupt_field_raises_through_queries(
    victim: tuple[Victim, str], redis: redis_py.Redis, case: str, field: str, raw: bytes
) -> None:
    """Queries (all, filter) raise CorruptRecordError too, never load a silent None."""
    record, key = victim
    redis.hset(key, field, raw)
    with pytest.raises(errors.CorruptRecordError):
        list(Victim.objects.all())
    with pytest.raises(errors.CorruptRecordError):
        list(Victim.objects.filter(name="Harry"))


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_corrupt_pointer_target_raises(victim: tuple[Victim, str], redis: redis_py.Redis) -> None:
    """A corrupt field in a pointed-to record raises CorruptRecordError naming the target's key."""
    record, _ = victim
    target_key = f"{prefix(Target)}:{record.project.id}"
    redis.hset(target_key, "name", b"{not json")
    with pytest.raises(errors.CorruptRecordError) as info:
        Victim.objects.get(id=record.id)
    assert info.value.key == target_key and info.value.field == "name"


SENTINEL = "repocket_sentinel_do_not_import_4f1c"


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_stored_module_names_are_never_imported(
    victim: tuple[Victim, str], redis: redis_py.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading never imports a module named by stored data, even one that is importable."""
    flag = tmp_path / "imported.flag"
    (tmp_path / f"{SENTINEL}.py").write_text(
        f"import pathlib\npathlib.Path({str(flag)!r}).write_text('imported')\n"
        "class Unicode:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, SENTINEL, raising=False)
    record, key = victim
    for raw in (
        _env("Unicode", '"x"', SENTINEL),
        _env(f"{SENTINEL}.Unicode", '"x"', SENTINEL),
        _env(SENTINEL, '"x"'),
    ):
        redis.hset(key, "name", raw)
        with pytest.raises(errors.CorruptRecordError):
            Victim.objects.get(id=record.id)
    redis.hset(key, "project", _env("Pointer", f'"repocket:{SENTINEL}:Unicode:{MISSING_ID}"'))
    redis.hset(key, "name", _env("Unicode", '"x"'))
    with pytest.raises(errors.CorruptRecordError):
        Victim.objects.get(id=record.id)
    assert SENTINEL not in sys.modules
    assert not flag.exists()


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_module_os_is_not_imported_again(victim: tuple[Victim, str], redis: redis_py.Redis) -> None:
    """A ``module`` naming a stdlib module the process has not imported is not imported by reading."""
    name = "this_module_does_not_exist_anywhere"
    record, key = victim
    redis.hset(key, "name", _env("Unicode", '"x"', name))
    with pytest.raises(errors.CorruptRecordError) as info:
        Victim.objects.get(id=record.id)
    assert not isinstance(info.value, ImportError)
    assert name not in sys.modules


def test_undeclared_hash_fields_are_ignored(victim: tuple[Victim, str], redis: redis_py.Redis) -> None:
    """A hash field that is not a declared attribute (e.g. a removed one) does not break reading."""
    record, key = victim
    redis.hset(key, "removed_attribute", b"anything at all")
    assert Victim.objects.get(id=record.id) == record


# -- wrong Redis types ------------------------------------------------------------------------------------------------


def test_record_key_of_wrong_type_on_read(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A string where the record hash should be raises CorruptRecordError naming the key on read."""
    key = f"{prefix(Victim)}:{MISSING_ID}"
    redis.set(key, b"I am not a hash")
    with pytest.raises(errors.CorruptRecordError) as info:
        Victim.objects.get(id=MISSING_ID)
    assert info.value.key == key and key in str(info.value)


def test_record_key_of_wrong_type_on_save(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Saving over a key of the wrong type raises CorruptRecordError and writes nothing."""
    key = f"{prefix(Victim)}:{MISSING_ID}"
    redis.set(key, b"I am not a hash")
    before = snapshot(redis)
    with pytest.raises(errors.CorruptRecordError) as info:
        Victim(id=MISSING_ID, name="Harry").save()
    assert key in str(info.value)
    assert snapshot(redis) == before


def test_record_key_of_wrong_type_with_bytestream_on_save(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A wrong-type record key fails the save before the ByteStream string or id set is written."""
    key = f"{prefix(Streamed)}:{MISSING_ID}"
    redis.rpush(key, b"a list")
    before = snapshot(redis)
    with pytest.raises(errors.CorruptRecordError):
        Streamed(id=MISSING_ID, name="x", log=b"some bytes").save()
    assert snapshot(redis) == before


def test_bytestream_key_of_wrong_type(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A ByteStream key of the wrong type raises CorruptRecordError on read, and a save writes nothing."""
    record = Streamed.create(name="x", log=b"old")
    stream_key = record.save()["strings"]["log"]
    redis.delete(stream_key)
    redis.sadd(stream_key, b"a set")
    with pytest.raises(errors.CorruptRecordError) as info:
        Streamed.objects.get(id=record.id)
    assert info.value.key == stream_key
    before = snapshot(redis)
    record.name = "changed"
    record.log = b"new bytes"
    with pytest.raises(errors.CorruptRecordError):
        record.save()
    assert snapshot(redis) == before


def test_append_to_bytestream_key_of_wrong_type(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """append_<name> to a ByteStream key of the wrong type raises CorruptRecordError and writes nothing."""
    record = Streamed.create(name="x", log=b"old")
    stream_key = record.save()["strings"]["log"]
    redis.delete(stream_key)
    redis.sadd(stream_key, b"a set")
    before = snapshot(redis)
    with pytest.raises(errors.CorruptRecordError):
        record.append_log(b"more")
    assert snapshot(redis) == before


def test_id_set_of_wrong_type_on_save(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A bookkeeping key of the wrong type fails the save with CorruptRecordError before the record is written."""
    redis.set(f"{prefix(Victim)}:_ids", b"not a set")
    before = snapshot(redis)
    with pytest.raises(errors.CorruptRecordError):
        Victim(id=MISSING_ID, name="Harry").save()
    assert snapshot(redis) == before


def test_index_key_of_wrong_type_on_save(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """An index key of the wrong type fails the save, leaving record, id set and other indexes untouched."""
    record = Indexed.create(name="Ann", age=3)
    replaced = [key for key in redis.keys(f"{prefix(Indexed)}:_*") if b"age" in key]
    assert replaced  # the age index exists
    for key in replaced:
        redis.delete(key)
        redis.set(key, b"not an index")
    before = snapshot(redis)
    record.name = "Bob"
    record.age = 4
    with pytest.raises(errors.CorruptRecordError):
        record.save()
    assert snapshot(redis) == before


# -- a record's id field against its key ------------------------------------------------------


def test_a_record_holding_another_records_id_is_corrupt_at_get(repocket_connection: redis_py.Redis) -> None:
    """The id field must be the key's: a hash copied under another key is refused, naming both."""
    first, second = Target.objects.create(name="a"), Target.objects.create(name="b")
    repocket_connection.delete(second._key())
    repocket_connection.copy(first._key(), second._key())
    with pytest.raises(errors.CorruptRecordError, match=f"holds id {first.id}, which is not the id in its key") as info:
        Target.objects.get(id=second.id)
    assert info.value.key == second._key() and info.value.field == "id"
    assert Target.objects.get(id=first.id).name == "a"


def test_a_pointer_to_a_key_whose_id_is_not_canonical_is_corrupt(repocket_connection: redis_py.Redis) -> None:
    """A Pointer to a key ending in an upper-case id (whose hash holds that same text): not what repocket
    writes, so the Pointer is refused; no record is built from a key whose id is not canonical."""
    target = Target.objects.create(name="a")
    upper = str(target.id).upper()
    key = f"{Target._meta.prefix}:{upper}"
    stored = repocket_connection.hgetall(target._key())
    field = Target._meta.format.encode(Target._meta.fields["id"], upper)
    assert field is not None
    repocket_connection.hset(key, mapping={**stored, b"id": field})
    victim = Victim.objects.create(name="v", data=b"", tags=[], amount=decimal.Decimal(1), count=1, ratio=1.0,
                                   project=target)
    pointer = repocket_connection.hget(victim._key(), "project")
    assert pointer is not None and str(target.id).encode() in pointer
    repocket_connection.hset(victim._key(), "project", pointer.replace(str(target.id).encode(), upper.encode()))
    with pytest.raises(errors.CorruptRecordError) as info:
        Victim.objects.get(id=victim.id)
    assert (info.value.key, info.value.field) == (victim._key(), "project")
