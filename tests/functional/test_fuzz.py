"""Hostile input, tried at scale with Hypothesis.

(a) Arbitrary values assigned to every attribute type: accepted values
round-trip through save/get to an equal value of the same type, anything else
raises ValidationError, and nothing else is ever raised.

(b) A corruption fuzzer rewrites stored hash fields, ByteStream strings, record
hashes and index entries behind repocket's back. Reading must give either the
value the stored bytes really mean (an independent decoder in this file is the
oracle) or a documented error (CorruptRecordError, BrokenReferenceError,
DoesNotExist); nothing named by the data is imported; a corrupt record never
breaks ``get`` of another record; ``check()`` notices and, after the corrupt
record is removed, ``check(repair=True)`` leaves ``check()`` empty.

(c) Glob characters and newlines in index values and namespaces.

Run with ``-s`` to see how many examples and corruption cases each run tried.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import math
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors
from repocket.attributes import ATTRIBUTE_TYPES

#: Examples and corruption cases tried in this run, by kind (printed by each test).
TRIED: Counter[str] = Counter()

def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings for the fuzzers: no deadline, no example database, bounded examples."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def tried(kind: str) -> None:
    TRIED[kind] += 1


def print_tried(test: str) -> None:
    print(f"\n[fuzz] after {test}: {dict(sorted(TRIED.items()))}")


# -- models ---------------------------------------------------------------------------------------


class Target(ActiveRecord):
    """What Pointers point at."""

    name = attributes.Unicode(index=True)


class Stranger(ActiveRecord):
    """Another model: a Pointer to one of its records is not a Target."""

    name = attributes.Unicode()


class Typed(ActiveRecord):
    """Every attribute type, nullable and (where possible) indexed."""

    u = attributes.Unicode(null=True, index=True)
    b = attributes.Bytes(null=True, index=True)
    j = attributes.JSON(null=True)
    uid = attributes.UUID(null=True, index=True)
    when = attributes.DateTime(null=True, index=True)
    dec = attributes.Decimal(null=True, index=True)
    i = attributes.Integer(null=True, index=True)
    f = attributes.Float(null=True, index=True)
    p = attributes.Pointer(Target, null=True)
    s = attributes.ByteStream(null=True)


class Plain(ActiveRecord):
    """Every attribute type, not nullable, not indexed."""

    u = attributes.Unicode()
    b = attributes.Bytes()
    j = attributes.JSON()
    uid = attributes.UUID(default=uuid.UUID(int=1))
    when = attributes.DateTime(default=dt.datetime(2000, 1, 1))
    dec = attributes.Decimal()
    i = attributes.Integer()
    f = attributes.Float()
    p = attributes.Pointer(Target, index=False, null=True)
    s = attributes.ByteStream()


class Victim(ActiveRecord):
    """The record the corruption fuzzer attacks (and its bystander)."""

    name = attributes.Unicode(index=True)
    count = attributes.Integer(index=True)
    ratio = attributes.Float()
    amount = attributes.Decimal()
    when = attributes.DateTime()
    uid = attributes.UUID()
    data = attributes.JSON()
    raw = attributes.Bytes()
    stream = attributes.ByteStream()
    ref = attributes.Pointer(Target)
    opt = attributes.Pointer(Target, null=True)


class Tagged(ActiveRecord):
    """Unicode index values full of glob characters and newlines."""

    name = attributes.Unicode(index=True)
    code = attributes.Unicode(unique=True, null=True)


FIELDS = ["u", "b", "j", "uid", "when", "dec", "i", "f", "p", "s"]


@pytest.fixture
def conn(repocket_connection: redis_py.Redis) -> Iterator[redis_py.Redis]:
    """repocket on a flushed database."""
    yield repocket_connection


def assert_clean(*models: type[Any]) -> None:
    """check() finds nothing wrong."""
    for model in models:
        found = model.objects.check()
        assert len(found) == 0, found


# -- comparing values exactly ------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (floats and Decimals compared by their exact text)."""
    if isinstance(a, ActiveRecord) or isinstance(b, ActiveRecord):
        return type(a) is type(b) and a.pk == b.pk
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime):
        return a.isoformat() == b.isoformat() and (a.tzinfo is None) == (b.tzinfo is None)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- (a) arbitrary values per attribute ------------------------------------------------------------

big_ints = st.builds(lambda e, s, d: s * (10**e + d), st.integers(15, 5000), st.sampled_from([1, -1]),
                     st.integers(0, 9))
numeric_text = st.from_regex(r"\A\s?-?\d{1,25}(\.\d{0,5})?([eE]-?\d{1,4})?\s?\Z")
date_text = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.from_regex(r"\A\d{1,5}-\d{1,2}-\d{1,2}([T ]\d{1,2}:\d{2}(:\d{2})?)?([+-]\d{2}:?\d{2}|Z)?\Z"),
    st.sampled_from(["today", "0", "99999-01-01", "2020-02-30", "1/2/3", "24:00", "T", "", " "]),
)
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints,
    st.floats(),
    st.text(),
    surrogates,
    st.binary(),
    st.binary().map(bytearray),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.times(),
    st.decimals(),
    st.uuids(),
    st.uuids().map(str),
    numeric_text,
    date_text,
    st.fractions(),
    st.complex_numbers(),
    st.just(object()),
)
anything = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        st.dictionaries(st.integers() | st.none(), children, min_size=1, max_size=2),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=8,
)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | big_ints | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=10,
)

#: Values of (or castable to) each attribute's type, mixed with ``anything`` so most examples round-trip.
LIKELY = {
    "u": st.text() | st.text(alphabet="*?[]{}:\n\x00é") | st.binary(),
    "b": st.binary() | st.text(),
    "j": json_values,
    "uid": st.uuids() | st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    "when": st.datetimes(timezones=st.none() | st.timezones()) | st.dates() | date_text,
    "dec": st.decimals() | numeric_text | st.integers() | st.floats(),
    "i": st.integers() | big_ints | numeric_text | st.floats().filter(lambda f: f == f and abs(f) < 1e300),
    "f": st.floats() | st.integers() | numeric_text | st.decimals(),
    "p": st.none(),
    "s": st.binary() | st.text(),
}


def test_any_value_round_trips_or_raises_validation_error(conn: redis_py.Redis) -> None:
    """Any value assigned to any attribute either round-trips exactly (same type) or raises ValidationError."""
    targets = [Target.create(name=f"t{i}") for i in range(3)]
    strangers = [Stranger.create(name="s")]
    outcomes: Counter[str] = Counter()

    @fuzz_settings(600)
    @given(model=st.sampled_from([Typed, Plain]), field=st.sampled_from(FIELDS), data=st.data())
    def attempt(model: type[Any], field: str, data: Any) -> None:
        value = data.draw(st.one_of(anything, LIKELY[field], st.sampled_from(targets + strangers)),
                          label="value")
        tried("(a) arbitrary value examples")
        record = model()
        try:
            setattr(record, field, value)
            record.save()
        except errors.ValidationError:
            outcomes["ValidationError"] += 1
            return
        outcomes["round trip"] += 1
        loaded = model.objects.get(id=record.id)
        assert same(loaded[field], record[field]), (field, value, record[field], loaded[field])
        if field in ("i", "f", "dec") and record[field] is not None and value is not None:
            assert isinstance(record[field], model._meta.fields[field].get_base_type())

    attempt()
    print(f"\n[fuzz] arbitrary values: {dict(outcomes)}")
    print_tried("arbitrary values")
    assert outcomes["round trip"] > 0 and outcomes["ValidationError"] > 0
    assert_clean(Typed, Plain, Target)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("i", 10**400),  # past a double: no finite score
        ("i", -(10**5000)),  # past Python's int-to-str digit limit
        ("j", {"n": 10**5000}),
        ("j", _nested(300)),  # deeper than orjson's recursion limit
        ("when", dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))),
        ("when", dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5)))),
        ("dec", decimal.Decimal("1E+999999")),
        ("dec", decimal.Decimal("sNaN")),
        ("f", math.nan),
        ("u", "\ud800"),
        ("b", bytearray(b"\xff\x00")),
        ("u", 10**5000),
        ("f", 10**5000),
        ("s", None),
        ("when", "2000-01-01T00:00-30:00"),
    ],
    ids=["int-1e400", "int-5000-digits", "json-5000-digits", "json-depth-300", "datetime-min-plus5",
         "datetime-max-minus5", "decimal-1e999999", "decimal-snan", "float-nan", "unicode-surrogate",
         "bytearray", "unicode-5000-digit-int", "float-5000-digit-int", "bytestream-none", "datetime-offset-30h"],
)
def test_edge_values_round_trip_or_raise_validation_error(conn: redis_py.Redis, field: str, value: Any) -> None:
    """Edge values on indexed attributes either round-trip exactly or raise ValidationError, nothing else."""
    tried("(a) edge values")
    record = Typed()
    try:
        setattr(record, field, value)
        record.save()
    except errors.ValidationError:
        assert Typed.objects.count() == 0
    else:
        assert same(Typed.objects.get(id=record.id)[field], record[field])
    assert_clean(Typed)


# -- (b) the corruption fuzzer ---------------------------------------------------------------------

INVALID: Any = object()  # the oracle's verdict: repocket must refuse these bytes
HOSTILE_MODULES = ["os", "subprocess", "builtins", "pickle", "importlib", "repocket", "repocket.model",
                   "repocket.attributes ", "", None, 1, ["os"]]
DOCUMENTED = (errors.CorruptRecordError, errors.BrokenReferenceError, errors.DoesNotExist)


def _json_or_invalid(raw: bytes) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=reject)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return INVALID


def oracle(attr: attributes.Attribute[Any], raw: bytes, pk: str) -> Any:
    """What a stored hash field means for ``attr``, decoded independently of repocket (or INVALID).

    Pointers decode to their target key (a str).
    """
    envelope = _json_or_invalid(raw)
    if envelope is INVALID or type(envelope) is not dict:
        return INVALID
    tag = envelope.get("type")
    if not isinstance(tag, str) or tag not in {type(attr).__name__} | set(attr.compatible_tags):
        return INVALID
    if envelope.get("module") != "repocket.attributes" or "value" not in envelope:
        return INVALID
    if set(envelope) - {"type", "value", "module"} - set(attr.extra_members):
        return INVALID
    value = envelope["value"]
    if value is None:
        return None
    try:
        return _decode_value(attr, value, envelope, pk)
    except (ValueError, TypeError, KeyError, ArithmeticError, binascii.Error):
        return INVALID


def _decode_value(attr: attributes.Attribute[Any], value: Any, envelope: dict[str, Any], pk: str) -> Any:
    kind = type(attr)
    if kind in (attributes.Unicode,):
        if type(value) is not str:
            raise TypeError
        return value
    if kind in (attributes.Bytes, attributes.ByteStream):
        if type(value) is not str:
            raise TypeError
        encoding = envelope.get("encoding")
        if encoding is None:
            return value.encode("utf-8")
        if encoding != "base64":
            raise ValueError
        return base64.b64decode(value, validate=True)
    if kind is attributes.JSON:
        return value
    if kind is attributes.Integer:
        if type(value) is not int:
            raise TypeError
        return value
    if kind is attributes.Float:
        if type(value) is str:
            return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]  # KeyError: INVALID
        if type(value) not in (int, float):
            raise TypeError
        return float(value)
    if kind is attributes.Decimal:
        if type(value) is not str:
            raise TypeError
        return decimal.Decimal(value)
    if kind is attributes.DateTime:
        if type(value) is not str:
            raise TypeError
        return dt.datetime.fromisoformat(value)
    if kind in (attributes.UUID, attributes.AutoUUID):
        if type(value) is not str:
            raise TypeError
        parsed = uuid.UUID(value)
        if kind is attributes.AutoUUID and str(parsed) != pk:
            raise ValueError
        return parsed
    if kind is attributes.Pointer:
        if type(value) is not str:
            raise TypeError
        prefix = Target._meta.prefix + ":"
        tail = value[len(prefix):]
        if not value.startswith(prefix) or len(tail) != 36 or str(uuid.UUID(tail)) != tail:
            raise ValueError
        return value
    raise AssertionError(kind)


class Scene:
    """Two Victims (A is attacked, B stands by), their Targets and a Stranger, freshly written."""

    def __init__(self, client: redis_py.Redis) -> None:
        client.flushdb()
        self.client = client
        self.t1 = Target.create(name="t1")
        self.t2 = Target.create(name="t2")
        self.stranger = Stranger.create(name="s")
        self.a = Victim.create(
            name="alpha", count=1, ratio=0.5, amount=decimal.Decimal("1.10"),
            when=dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), uid=uuid.UUID(int=7),
            data={"k": [1, "x", None]}, raw=b"\xff\x00raw", stream=b"stream-a", ref=self.t1, opt=self.t2,
        )
        self.b = Victim.create(
            name="beta", count=2, ratio=-1.25, amount=decimal.Decimal("-3"),
            when=dt.datetime(1999, 12, 31), uid=uuid.UUID(int=8), data=[1, 2],
            raw=b"bytes-b", stream=b"stream-b", ref=self.t2, opt=None,
        )
        self.originals = {str(self.a.id): self.a.to_dict(), str(self.b.id): self.b.to_dict()}


def glob_keys(prefix: str) -> list[str]:
    return [f"{prefix}:*", f"{prefix}:?", f"{prefix}:[0-9a-f]*", f"{prefix}:{{x}}", f"{prefix}:*\n",
            f"{prefix}:\n", f"{prefix}:\\*", f"{prefix}*"]


@st.composite
def corruptions(draw: Any, evil: str) -> tuple[str, Callable[[Scene], dict[str, Any]]]:
    """A corruption: its kind and a function applying it to a Scene (returns what it touched)."""
    kind = draw(st.sampled_from([
        "field:random", "field:truncated", "field:type tag", "field:module", "field:value",
        "field:extra member", "field:not an object", "field:other valid value", "field:deleted",
        "pointer", "stream:bytes", "stream:deleted", "stream:wrong type", "hash:wrong type",
        "hash:unknown field", "index:bogus member", "index:removed entry", "index:wrong score",
        "index:wrong type",
    ]))
    names = [name for name, _ in Victim._meta.hash_fields]
    field = draw(st.sampled_from(names))
    module = draw(st.sampled_from([*HOSTILE_MODULES, evil]))
    data = draw(st.data())

    def apply(scene: Scene) -> dict[str, Any]:
        client, key = scene.client, scene.a._key()
        attr = Victim._meta.fields[field]
        original = client.hget(key, field) or b""
        envelope = json.loads(original)
        new: bytes | None = None
        if kind == "field:random":
            new = data.draw(st.binary(max_size=60))
        elif kind == "field:truncated":
            new = original[: data.draw(st.integers(0, len(original) - 1))]
        elif kind == "field:type tag":
            compatible = {type(attr).__name__} | set(attr.compatible_tags)
            envelope["type"] = data.draw(st.one_of(
                st.sampled_from([t for t in ATTRIBUTE_TYPES if t not in compatible]),
                st.sampled_from(["", "int", "os.system", "unicode", None, 1, True, ["Unicode"], {"Unicode": 1}]),
            ))
            new = json.dumps(envelope).encode()
        elif kind == "field:module":
            envelope["module"] = module
            new = json.dumps(envelope).encode()
        elif kind == "field:value":
            envelope["value"] = data.draw(st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                max_leaves=5,
            ))
            new = json.dumps(envelope).encode()
        elif kind == "field:extra member":
            envelope[data.draw(st.sampled_from(["encoding", "x", "__class__", "module_"]))] = data.draw(
                st.sampled_from(["base64", "rot13", 1, None, "os"]))
            new = json.dumps(envelope).encode()
        elif kind == "field:not an object":
            new = data.draw(st.sampled_from([b"1", b"[]", b'"Unicode"', b"null", b"true", b"{}", b"[{}]"]))
        elif kind == "field:other valid value":
            new = attr.encode(scene.b._data[field] if field != "id" else scene.a.id)
        elif kind == "field:deleted":
            client.hdel(key, field)
            return {"field": field, "raw": None}
        elif kind == "pointer":
            name = data.draw(st.sampled_from(["ref", "opt"]))
            target = data.draw(st.sampled_from([
                scene.t2._key(), scene.stranger._key(), scene.b._key(), key,
                Target._meta.key(uuid.uuid4()), Target._meta.key(str(scene.t1.id).upper()),
                *glob_keys(Target._meta.prefix), scene.t1._key() + "\n", " " + scene.t1._key(),
            ]))
            raw = b'{"type": "Pointer", "value": ' + json.dumps(target).encode() + b', "module": "repocket.attributes"}'
            client.hset(key, name, raw)
            return {"field": name, "raw": raw}
        elif kind.startswith("stream:"):
            skey = scene.a._calculate_key_for_field("stream")
            if kind == "stream:bytes":
                value = data.draw(st.binary(max_size=40))
                client.set(skey, value)
                return {"stream": value}
            client.delete(skey)
            if kind == "stream:wrong type":
                client.rpush(skey, b"x")
                return {"stream": INVALID}
            return {"stream": b""}
        elif kind == "hash:wrong type":
            client.delete(key)
            client.rpush(key, b"x")
            return {"hash": INVALID}
        elif kind == "hash:unknown field":
            client.hset(key, data.draw(st.binary(min_size=1, max_size=10)), data.draw(st.binary(max_size=10)))
            return {}
        elif kind.startswith("index:"):
            return _corrupt_index(kind, scene, data)
        assert new is not None
        client.hset(key, field, new)
        return {"field": field, "raw": new}

    return kind, apply


def _corrupt_index(kind: str, scene: Scene, data: Any) -> dict[str, Any]:
    client, meta, pk = scene.client, Victim._meta, str(scene.a.id)
    index_keys = {
        "ids": meta.ids_key,
        "eq name": f"{meta.prefix}:_eq:name:alpha",
        "eq count": f"{meta.prefix}:_eq:count:1",
        "sort count": f"{meta.prefix}:_sort:count",
        "lex name": f"{meta.prefix}:_lex:name",
        "eq ref": f"{meta.prefix}:_eq:ref:{scene.t1.id}",
    }
    which = data.draw(st.sampled_from(sorted(index_keys)))
    key = index_keys[which]
    kind_of = client.type(key).decode()
    if kind == "index:bogus member":
        member = data.draw(st.one_of(
            st.sampled_from([str(scene.b.id), str(uuid.uuid4()), "*", "?", "[a-z]", "{x}", "\n", "",
                             pk.upper(), pk + ":field:stream", "_ids", str(scene.t1.id)]),
            st.binary(max_size=20),
            st.text(max_size=10),
        ))
        if kind_of == "zset":
            if which == "lex name" and data.draw(st.booleans()):
                member = (b"alpha\x00" if isinstance(member, bytes) else "alpha\x00") + member
            changed = client.zadd(key, {member: 1})
        else:
            changed = client.sadd(key, member)
    elif kind == "index:removed entry":
        if kind_of == "zset":
            changed = client.zrem(key, *client.zrange(key, 0, -1))
        else:
            changed = client.srem(key, pk)
    elif kind == "index:wrong score":
        key = f"{meta.prefix}:_sort:count"
        client.zadd(key, {pk: data.draw(st.floats(allow_nan=False).filter(lambda x: x != 1.0))})
        changed = 1
    else:  # wrong type
        client.delete(key)
        changed = client.set(key, b"not an index")
    return {"index": key, "changed": bool(changed)}


def _read(action: Callable[[], Any]) -> Any:
    """The result of ``action()``, or the documented error it raised (anything else propagates)."""
    try:
        return action()
    except DOCUMENTED as exc:
        return exc


def _check_loaded(scene: Scene, record: Victim, touched: dict[str, Any]) -> None:
    """A loaded Victim holds exactly what its stored data means."""
    original = scene.originals[str(record.id)]
    for name, attr in Victim._meta.fields.items():
        value = record._data[name]
        is_a = record.id == scene.a.id
        if is_a and touched.get("field") == name:
            meant = INVALID if touched["raw"] is None else oracle(attr, touched["raw"], str(scene.a.id))
            if touched["raw"] is None:  # a deleted hash field reads as the attribute's default
                assert same(value, attr.get_default()), (name, value)
                continue
            assert meant is not INVALID, (name, touched["raw"], value)
            if isinstance(attr, attributes.Pointer):
                if value is not None:
                    assert value._key() == meant, (name, meant, value)
                elif meant is not None:  # a null=True Pointer to a missing record reads as None
                    assert attr.null and not scene.client.exists(meant), (name, meant)
            else:
                assert same(value, meant), (name, touched["raw"], value, meant)
        elif is_a and name == "stream" and "stream" in touched:
            assert value == touched["stream"]
        else:
            assert same(attr.to_python(value), original[name]), (name, value, original[name])


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_corrupted_storage_reads_as_its_meaning_or_a_documented_error(
    conn: redis_py.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corrupted hash fields, strings, hashes and indexes read as what they mean or raise a documented error."""
    evil = f"evilmod_{uuid.uuid4().hex}"
    (tmp_path / f"{evil}.py").write_text("raise SystemExit('repocket imported a module named in stored data')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    outcomes: Counter[str] = Counter()

    @fuzz_settings(400)
    @given(case=corruptions(evil))
    def attempt(case: tuple[str, Callable[[Scene], dict[str, Any]]]) -> None:
        kind, apply = case
        scene = Scene(conn)
        touched = apply(scene)
        tried(f"(b) corruption {kind}")
        tried("(b) corruption cases")

        # B, the bystander, always reads back whole by get.
        b = Victim.objects.get(id=scene.b.id)
        _check_loaded(scene, b, {})

        # A reads as what its stored bytes mean, or raises a documented error.
        a = _read(lambda: Victim.objects.get(id=scene.a.id))
        outcomes[f"get: {type(a).__name__}"] += 1
        must_refuse = touched.get("hash") is INVALID or touched.get("stream") is INVALID or (
            "raw" in touched and touched["raw"] is not None
            and oracle(Victim._meta.fields[touched["field"]], touched["raw"], str(scene.a.id)) is INVALID
        )
        if isinstance(a, Victim):
            assert not must_refuse, (kind, touched)
            _check_loaded(scene, a, touched)
        else:
            assert isinstance(a, (errors.CorruptRecordError, errors.BrokenReferenceError)), a

        # Queries: each record returned is faithful and matches; documented errors otherwise.
        for query in (
            lambda: list(Victim.objects.all()),
            lambda: list(Victim.objects.filter(name="alpha")),
            lambda: list(Victim.objects.filter(name="beta")),
            lambda: list(Victim.objects.filter(count__gte=1)),
            lambda: list(Victim.objects.filter(name__startswith="al")),
            lambda: list(Victim.objects.order_by("count")),
            lambda: list(Victim.objects.filter(ref=scene.t1)),
            lambda: Victim.objects.filter(name="beta").count(),
        ):
            found = _read(query)
            outcomes[f"query: {type(found).__name__}"] += 1
            if isinstance(found, list):
                assert len({r.id for r in found}) == len(found)
                for record in found:
                    assert record.id in (scene.a.id, scene.b.id)
                    _check_loaded(scene, record, touched)
            elif isinstance(found, int):
                assert found in (0, 1)
            else:
                assert isinstance(found, (errors.CorruptRecordError, errors.BrokenReferenceError)), found
        assert _read(lambda: list(Victim.objects.filter(name="beta"))) in (
            [b], _Any(errors.CorruptRecordError), _Any(errors.BrokenReferenceError))

        # check() notices index damage; removing A and repairing leaves it empty.
        report = Victim.objects.check()
        if touched.get("changed"):
            assert len(report) > 0, (kind, touched)
        if must_refuse:
            assert report.corrupt_records, (kind, touched)
        for leftover in (scene.a._key(), scene.a._calculate_key_for_field("stream")):
            conn.delete(leftover)
        if "index" in touched and conn.type(touched["index"]) == b"string":
            conn.delete(touched["index"])
        Victim.objects.check(repair=True)
        assert_clean(Victim, Target, Stranger)

    attempt()
    assert evil not in sys.modules
    newly = set(sys.modules) - before
    assert not newly & {"subprocess", "pickle", evil}, newly
    print(f"\n[fuzz] corruption outcomes: {dict(sorted(outcomes.items()))}")
    print_tried("corruption")


class _Any:
    """Equal to any instance of the given type (for ``in`` checks)."""

    def __init__(self, kind: type[BaseException]) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.kind)


def test_a_wrong_typed_index_key_is_reported_and_repaired(conn: redis_py.Redis) -> None:
    """An index key holding the wrong Redis type: queries raise CorruptRecordError; check() reports it; repair rebuilds it."""
    a = Victim.create(name="alpha", count=1, ref=Target.create(name="t"), data={},
                      when=dt.datetime(2020, 1, 1), uid=uuid.UUID(int=1))
    key = f"{Victim._meta.prefix}:_eq:name:alpha"
    conn.delete(key)
    conn.set(key, b"garbage")
    with pytest.raises(errors.CorruptRecordError):
        list(Victim.objects.filter(name="alpha"))
    report = Victim.objects.check()
    assert len(report) > 0
    Victim.objects.check(repair=True)
    assert Victim.objects.filter(name="alpha") == [a]
    assert_clean(Victim)


def _victim(name: str = "alpha", count: int = 1, target: Target | None = None) -> Victim:
    return Victim.create(name=name, count=count, ref=target or Target.create(name="t"), data={"x": 1},
                         when=dt.datetime(2020, 1, 1), uid=uuid.UUID(int=1), stream=b"s")


def _remove_and_repair(conn: redis_py.Redis, record: Victim) -> None:
    """Delete a corrupted record's keys behind repocket's back, repair, and expect check() empty."""
    conn.delete(record._key(), record._calculate_key_for_field("stream"))
    Victim.objects.check(repair=True)
    assert_clean(Victim, Target)


@pytest.mark.parametrize("tag", [["Unicode"], {"Unicode": 1}])
@pytest.mark.envelope_only  # the bytes of the envelope format
def test_unhashable_type_tag_is_a_corrupt_record(conn: redis_py.Redis, tag: Any) -> None:
    """An envelope whose type tag is a JSON array or object reads as CorruptRecordError."""
    tried("(b) corruption unhashable tag")
    a = _victim()
    conn.hset(a._key(), "name", json.dumps({"type": tag, "value": "alpha", "module": "repocket.attributes"}))
    with pytest.raises(errors.CorruptRecordError):
        Victim.objects.get(id=a.id)
    assert Victim.objects.check().corrupt_records
    _remove_and_repair(conn, a)


@pytest.mark.parametrize("where", ["ids", "eq", "lex"])
def test_non_utf8_index_members_are_skipped_and_reported(conn: redis_py.Redis, where: str) -> None:
    """Non-UTF-8 members in the id set or an index never crash a query; check() reports them and repair removes them."""
    tried("(b) corruption non-utf8 member")
    a = _victim()
    prefix = Victim._meta.prefix
    if where == "ids":
        conn.sadd(Victim._meta.ids_key, b"\xff\xfe")
    elif where == "eq":
        conn.sadd(f"{prefix}:_eq:name:alpha", b"\xff")
    else:
        conn.zadd(f"{prefix}:_lex:name", {b"\xff\xfe": 0})
    for query in (lambda: list(Victim.objects.all()), lambda: list(Victim.objects.filter(name="alpha")),
                  lambda: list(Victim.objects.order_by("name")),
                  lambda: list(Victim.objects.filter(name__startswith="al"))):
        found = _read(query)
        assert found == [a] or isinstance(found, errors.CorruptRecordError), found
    assert len(Victim.objects.check()) > 0
    Victim.objects.check(repair=True)
    assert list(Victim.objects.all()) == [a]
    assert_clean(Victim)


@pytest.mark.parametrize("which", ["hash", "stream"])
def test_check_reports_records_of_the_wrong_redis_type(conn: redis_py.Redis, which: str) -> None:
    """check() lists a record whose hash or ByteStream key has the wrong Redis type, and audits the rest."""
    tried("(b) corruption wrong-type record")
    target = Target.create(name="t")
    a = _victim(target=target)
    b = _victim(name="beta", count=2, target=target)
    key = a._key() if which == "hash" else a._calculate_key_for_field("stream")
    conn.delete(key)
    conn.rpush(key, b"x")
    with pytest.raises(errors.CorruptRecordError):
        Victim.objects.get(id=a.id)
    assert Victim.objects.get(id=b.id) == b
    report = Victim.objects.check()
    assert [k for k, _ in report.corrupt_records] == [a._key()]
    _remove_and_repair(conn, a)
    assert Victim.objects.get(id=b.id) == b


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_deleting_a_record_with_a_corrupt_unique_field_frees_its_value(conn: redis_py.Redis) -> None:
    """Deleting a record whose unique field was corrupted frees the value it held and leaves check() empty."""
    tried("(b) corruption unique field then delete")
    record = Tagged.create(name="n", code="c1")
    conn.hset(record._key(), "code", b"garbage")
    assert record.delete() == 1
    again = Tagged.create(name="m", code="c1")
    assert Tagged.objects.get(code="c1") == again
    assert_clean(Tagged)


def test_repair_leaves_the_entries_of_an_unreadable_record_alone(conn: redis_py.Redis) -> None:
    """check(repair=True) does not unindex a record it cannot read: once fixed, it is found again."""
    tried("(b) corruption repair of unreadable record")
    a = _victim()
    raw = conn.hget(a._key(), "data")
    conn.hset(a._key(), "data", b"{bad")
    report = Victim.objects.check(repair=True)
    assert [k for k, _ in report.corrupt_records] == [a._key()]
    assert conn.sismember(Victim._meta.ids_key, str(a.id))
    conn.hset(a._key(), "data", raw)
    assert list(Victim.objects.all()) == [a]
    assert Victim.objects.filter(name="alpha") == [a]
    assert_clean(Victim)


class Versioned(ActiveRecord):
    """A versioned model, for corrupting its version counter."""

    class Meta:
        versioned = True

    name = attributes.Unicode()


def test_a_corrupt_version_counter_raises_corrupt_record_error(conn: redis_py.Redis) -> None:
    """A versioned record whose _version is not an integer reads as CorruptRecordError."""
    record = Versioned.create(name="v")
    conn.hset(record._key(), "_version", b"1.5; os.system('x')")
    with pytest.raises(errors.CorruptRecordError):
        Versioned.objects.get(id=record.id)
    tried("(b) corruption _version")
    assert Versioned.objects.check().corrupt_records
    conn.delete(record._key())
    Versioned.objects.check(repair=True)
    assert_clean(Versioned)


# -- (c) glob characters and newlines --------------------------------------------------------------


@pytest.mark.parametrize("char", ["*", "?", "[", "]", "{", "}", ":", "\n", "\\", " "])
def test_namespaces_with_glob_characters_are_refused(char: str) -> None:
    """A namespace containing a glob character, ':' or a newline is refused when the class is created."""
    for namespace in (f"ns{char}x", char, f"{char}ns"):
        with pytest.raises(errors.RepocketActiveRecordDefinitionError):
            type("Globbed", (ActiveRecord,), {"Meta": type("Meta", (), {"namespace": namespace}),
                                              "__module__": __name__, "name": attributes.Unicode()})
        with pytest.raises(errors.RepocketActiveRecordDefinitionError):
            type("Globbed2", (ActiveRecord,), {"__namespace__": namespace, "__module__": __name__})


GLOBBY = st.text(alphabet=st.sampled_from(list("*?[]{}:\n\\^-!ab é\x00")), min_size=1, max_size=8)


def test_index_values_with_glob_characters_filter_and_check_exactly(conn: redis_py.Redis) -> None:
    """Unicode index values full of * ? [ ] { } : and newlines filter exactly, and check()/reindex() stay exact."""

    @fuzz_settings(150)
    @given(values=st.lists(GLOBBY, min_size=1, max_size=6), probe=GLOBBY)
    def attempt(values: list[str], probe: str) -> None:
        tried("(c) glob index examples")
        conn.flushdb()
        records = []
        for i, value in enumerate(values):
            code = value if value not in values[:i] else None
            records.append(Tagged.create(name=value, code=code))
        for value in set(values) | {probe}:
            expected = sorted(str(r.id) for r in records if r.name == value)
            assert sorted(str(r.id) for r in Tagged.objects.filter(name=value)) == expected
            assert Tagged.objects.filter(name=value).count() == len(expected)
            starts = sorted(str(r.id) for r in records if r.name.startswith(value))
            assert sorted(str(r.id) for r in Tagged.objects.filter(name__startswith=value)) == starts
        for record in records:
            if record.code is not None:
                assert Tagged.objects.get(code=record.code) == record
                with pytest.raises(errors.UniqueConstraintError):
                    Tagged.create(name="dup", code=record.code)
        assert_clean(Tagged)
        for key in conn.scan_iter(match=Tagged._meta.prefix + ":_*"):
            conn.delete(key)
        assert Tagged.objects.reindex() == len(records)
        assert_clean(Tagged)

    attempt()
    print_tried("glob index values")
