"""SPEC §1, statement by statement, on a real Redis: the public API of models, attributes and managers."""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import bcrypt
import pytest
import redis as redis_py

from repocket import ActiveRecord, ResultSet, attributes, errors, fields
from repocket.connections import configure
from repocket.server import RedisServer
from tests.roundtrips import count_round_trips

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")

MODULE = __name__
HARRY_ID = "970773fa-4de1-11e5-86f4-6c4008a70392"
RON_ID = "40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8"
UTC = dt.timezone.utc

# -- models (module level: their namespace is this module) -----------------------------


class User(ActiveRecord):
    name = attributes.Unicode()
    house_name = attributes.Unicode()
    email = attributes.Bytes()
    password = attributes.Bytes()
    metadata = attributes.JSON()


class Project(ActiveRecord):
    name = attributes.Unicode()
    git_uri = attributes.Bytes()
    metadata = attributes.JSON()


class Build(ActiveRecord):
    id = attributes.AutoUUID()
    project = attributes.Pointer(Project)
    started_at = attributes.DateTime(null=True)
    ended_at = attributes.DateTime(auto_now=True)
    stdout = attributes.ByteStream()
    stderr = attributes.ByteStream()


class Note(ActiveRecord):
    project = attributes.Pointer(Project, null=True)
    text = attributes.Unicode()


class Empty(ActiveRecord):
    uni = attributes.Unicode()
    byt = attributes.Bytes()
    doc = attributes.JSON()
    ref_id = attributes.UUID(null=True)
    when = attributes.DateTime(null=True)
    amount = attributes.Decimal()
    count = attributes.Integer()
    ratio = attributes.Float()
    log = attributes.ByteStream()
    target = attributes.Pointer(Project, null=True)


_sequence = itertools.count(1)


class Defaults(ActiveRecord):
    title = attributes.Unicode(default="untitled")
    blob = attributes.Bytes(default=b"\x00blob")
    tags = attributes.JSON(default=list)
    number = attributes.Integer(default=lambda: next(_sequence))
    created = attributes.DateTime(default=lambda: dt.datetime.now(UTC))


class Token(ActiveRecord):
    uid = attributes.AutoUUID()
    value = attributes.Unicode()


class Cat(ActiveRecord):
    name = attributes.Unicode()


class Dog(ActiveRecord):
    name = attributes.Unicode()


class Person(ActiveRecord):
    name = attributes.Unicode()
    city = attributes.Unicode()
    age = attributes.Integer(null=True)


class Moved(ActiveRecord):
    class Meta:
        namespace = "legacy.models"

    name = attributes.Unicode()


class Dunder(ActiveRecord):
    __namespace__ = "legacy.dunder"
    name = attributes.Unicode()


class Animal(ActiveRecord):
    name = attributes.Unicode()
    legs = attributes.Integer()


class Bird(Animal):
    wingspan = attributes.Float()
    song = attributes.Unicode()


def prefix(model: type[ActiveRecord], namespace: str = MODULE) -> str:
    """The key prefix SPEC §2 prescribes for a model of this module."""
    return f"repocket:{namespace}:{model.__name__}"


def all_keys(client: redis_py.Redis) -> set[str]:
    """Every key in the test database, as text."""
    return {key.decode() for key in client.keys("*")}


@pytest.fixture
def restore_pool(redis_url: str) -> Iterator[None]:
    """Put repocket's global pool back on the test server after a test that reconfigures it."""
    yield
    configure.connection_pool(url=redis_url)


def make_harry(**overrides: Any) -> User:
    fields_ = {
        "id": HARRY_ID,
        "name": "Harry Potter",
        "house_name": "Gryffindor",
        "email": "harry@hogwards.uk",
        "password": b"$2b$04$somethingsecret",
        "metadata": {"known_tricks": ["Protego", "Expelliarmus"]},
    }
    fields_.update(overrides)
    return User(**fields_)


# -- the original documentation's tutorial, as written ------------------------------------


def test_tutorial_as_documented(repocket_connection: redis_py.Redis) -> None:
    """The original tutorial (create Harry and Ron, get, [], filter, order_by, delete) behaves as documented."""
    harry = User.create(
        id="970773fa-4de1-11e5-86f4-6c4008a70392",
        name="Harry Potter",
        email="harry@hogwards.uk",
        house_name="Gryffindor",
        password=bcrypt.hashpw(b"hermione42", bcrypt.gensalt(10)),
        metadata={
            "known_tricks": [
                "Protego",
                "Expelliarmus",
                "Wingardium Leviosa",
                "Expecto Patronum",
            ]
        },
    )
    ron = User.create(
        id="40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8",
        name="Ron Weasley",
        house_name="Gryffindor",
        email="ron@hogwards.uk",
        password=bcrypt.hashpw(b"hermione42", bcrypt.gensalt(10)),
        metadata={
            "known_tricks": [
                "Protego",
                "Expelliarmus",
            ]
        },
    )
    assert isinstance(harry, User) and isinstance(ron, User)

    harry = User.objects.get(id="970773fa-4de1-11e5-86f4-6c4008a70392")
    assert harry.metadata == {
        "known_tricks": ["Protego", "Expelliarmus", "Wingardium Leviosa", "Expecto Patronum"]
    }
    assert harry.id == uuid.UUID("970773fa-4de1-11e5-86f4-6c4008a70392")
    assert harry["id"] == uuid.UUID("970773fa-4de1-11e5-86f4-6c4008a70392")
    assert harry.email == b"harry@hogwards.uk"
    assert bcrypt.checkpw(b"hermione42", harry.password)

    results = User.objects.filter(house_name="Gryffindor")
    assert len(results) == 2
    assert {results[0].name, results[1].name} == {"Harry Potter", "Ron Weasley"}

    results = User.objects.filter(house_name="Gryffindor").order_by("-name")
    assert len(results) == 2
    assert results[0].name == "Ron Weasley"
    assert results[1].name == "Harry Potter"

    harrys_keys = harry.save()
    assert harrys_keys == {"hash": f"{prefix(User)}:{HARRY_ID}", "strings": {}}

    assert harry.delete() == 1
    assert [u.name for u in User.objects.filter(house_name="Gryffindor")] == ["Ron Weasley"]


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_original_api_reference_example(repocket_connection: redis_py.Redis) -> None:
    """The API reference's example: save() gives the keys and hgetall on the hash returns the record."""
    obj1 = User(email=b"foo@bar.com", name="foo", metadata={"yay": "this is json baby!"})
    keys = obj1.save()
    connection = configure.get_connection()
    raw_results = connection.hgetall(keys["hash"])
    assert {k.decode() for k in raw_results} == {"id", "name", "house_name", "email", "password", "metadata"}
    assert json.loads(raw_results[b"metadata"])["value"] == {"yay": "this is json baby!"}


# -- attribute types, defaults and empty values -----------------------------------------------


def test_attribute_types_exist() -> None:
    """Every attribute type of SPEC §1 is exported by repocket.attributes and derives from Attribute."""
    for name in ("Unicode", "Bytes", "JSON", "UUID", "AutoUUID", "Pointer", "ByteStream",
                 "DateTime", "Decimal", "Integer", "Float"):
        cls = getattr(attributes, name)
        assert issubclass(cls, attributes.Attribute), name


def test_omitted_attributes_take_the_empty_values() -> None:
    """An omitted attribute without default is '', b'', 0, 0.0, Decimal('0') or None by type."""
    record = Empty()
    assert record.uni == "" and type(record.uni) is str
    assert record.doc == "" and type(record.doc) is str
    assert record.byt == b"" and type(record.byt) is bytes
    assert record.log == b"" and type(record.log) is bytes
    assert record.count == 0 and type(record.count) is int
    assert record.ratio == 0.0 and type(record.ratio) is float
    assert record.amount == decimal.Decimal("0") and type(record.amount) is decimal.Decimal
    assert record.ref_id is None
    assert record.when is None
    assert record.target is None
    assert record.id is None


def test_empty_values_save_and_round_trip(repocket_connection: redis_py.Redis) -> None:
    """The empty values are valid at save and come back from get with their types."""
    record = Empty()
    record.save()
    loaded = Empty.objects.get(id=record.id)
    assert loaded == record
    assert loaded.to_dict(simple=True) == {
        "id": record.id, "uni": "", "byt": b"", "doc": "", "ref_id": None, "when": None,
        "amount": decimal.Decimal("0"), "count": 0, "ratio": 0.0, "log": b"", "target": None,
    }
    assert type(loaded.amount) is decimal.Decimal and type(loaded.ratio) is float


def test_default_value_is_used() -> None:
    """An omitted attribute takes its default; a given value overrides it."""
    assert Defaults().title == "untitled"
    assert Defaults().blob == b"\x00blob"
    assert Defaults(title="given").title == "given"


def test_callable_default_is_called_per_instance() -> None:
    """A callable default is called for each new instance, so mutable defaults are never shared."""
    first, second = Defaults(), Defaults()
    assert first.tags == [] and second.tags == []
    assert first.tags is not second.tags
    first.tags.append("x")
    assert second.tags == []
    assert second.number == first.number + 1
    assert first.created.tzinfo is not None


def test_callable_default_is_cast() -> None:
    """A default's value goes through the attribute's cast like any value."""
    class WithCastDefault(ActiveRecord):
        level = attributes.Integer(default=lambda: "7")

    assert WithCastDefault().level == 7


def test_defaults_round_trip(repocket_connection: redis_py.Redis) -> None:
    """Default values are saved and read back like given ones."""
    record = Defaults.create()
    assert Defaults.objects.get(id=record.id) == record


# -- DateTime(auto_now=True) --------------------------------------------------------------------


def test_auto_now_set_on_first_save(repocket_connection: redis_py.Redis) -> None:
    """DateTime(auto_now=True) is set to the current UTC time, timezone-aware, when saved."""
    project = Project.create(name="repocket")
    build = Build(project=project)
    assert build.ended_at is None
    before = dt.datetime.now(UTC)
    build.save()
    after = dt.datetime.now(UTC)
    assert build.ended_at.tzinfo is not None
    assert build.ended_at.utcoffset() == dt.timedelta(0)
    assert before <= build.ended_at <= after
    assert Build.objects.get(id=build.id).ended_at == build.ended_at


def test_auto_now_set_on_every_save(repocket_connection: redis_py.Redis) -> None:
    """auto_now overwrites the attribute on every save, even a value set by hand."""
    project = Project.create(name="repocket")
    build = Build.create(project=project)
    build.ended_at = dt.datetime(2000, 1, 1, tzinfo=UTC)
    build.save()
    assert build.ended_at > dt.datetime(2020, 1, 1, tzinfo=UTC)
    assert build.ended_at.utcoffset() == dt.timedelta(0)
    stored = Build.objects.get(id=build.id).ended_at
    assert stored == build.ended_at and stored.utcoffset() == dt.timedelta(0)


def test_datetime_without_auto_now_keeps_value(repocket_connection: redis_py.Redis) -> None:
    """A DateTime without auto_now is saved as given, naive or aware."""
    project = Project.create(name="repocket")
    started = dt.datetime(2015, 8, 29, 12, 0, 1, 5)
    build = Build.create(project=project, started_at=started)
    build.save()
    assert build.started_at == started
    assert Build.objects.get(id=build.id).started_at == started


# -- primary keys --------------------------------------------------------------------------------


def test_implicit_id_is_autouuid() -> None:
    """A model that declares no AutoUUID gets ``id = AutoUUID()``."""
    assert isinstance(User.id, attributes.AutoUUID)
    assert isinstance(fields(User)["id"], attributes.AutoUUID)
    assert [name for name, attr in fields(User).items() if isinstance(attr, attributes.AutoUUID)] == ["id"]


def test_declared_id_is_the_primary_key() -> None:
    """A declared ``id = AutoUUID()`` is the primary key, not doubled."""
    assert [name for name, attr in fields(Build).items() if isinstance(attr, attributes.AutoUUID)] == ["id"]


def test_custom_primary_key_name(repocket_connection: redis_py.Redis) -> None:
    """An AutoUUID under another name is the key: no ``id`` attribute, ``get(uid=)`` and ``get(pk=)`` work."""
    assert "id" not in fields(Token)
    token = Token.create(value="secret")
    assert isinstance(token.uid, uuid.UUID)
    assert token.save()["hash"] == f"{prefix(Token)}:{token.uid}"
    assert Token.objects.get(uid=token.uid) == token
    assert Token.objects.get(uid=str(token.uid)) == token
    assert Token.objects.get(pk=token.uid) == token
    with pytest.raises(TypeError):
        Token(id=token.uid)


def test_two_autouuids_is_a_definition_error() -> None:
    """Two AutoUUID attributes raise RepocketActiveRecordDefinitionError at class creation."""
    with pytest.raises(errors.RepocketActiveRecordDefinitionError) as info:
        class TwoKeys(ActiveRecord):
            first = attributes.AutoUUID()
            second = attributes.AutoUUID()
    assert "TwoKeys" in str(info.value)


def test_inherited_and_own_autouuid_is_a_definition_error() -> None:
    """A subclass adding a second AutoUUID to an inherited one is a definition error."""
    with pytest.raises(errors.RepocketActiveRecordDefinitionError):
        class TwoKeysChild(Token):
            other = attributes.AutoUUID()


@pytest.mark.parametrize("name", ["save", "delete", "objects", "_x", "to_dict", "matches"])
def test_reserved_names_are_definition_errors(name: str) -> None:
    """An attribute named like a model method, ``objects`` or a private name is a definition error naming it."""
    with pytest.raises(errors.RepocketActiveRecordDefinitionError) as info:
        type(f"Reserved_{name.strip('_')}", (ActiveRecord,), {"__module__": MODULE, name: attributes.Unicode()})
    assert name in str(info.value)


def test_non_autouuid_id_is_a_definition_error() -> None:
    """An ``id`` that is not an AutoUUID on a model without one is a definition error."""
    with pytest.raises(errors.RepocketActiveRecordDefinitionError):
        class BadId(ActiveRecord):
            id = attributes.Unicode()


def test_id_assigned_on_first_save_is_uuid1(repocket_connection: redis_py.Redis) -> None:
    """A missing id is assigned on first save, as a uuid1, and kept on later saves."""
    cat = Cat(name="Tom")
    assert cat.id is None
    cat.save()
    assert isinstance(cat.id, uuid.UUID) and cat.id.version == 1
    first = cat.id
    cat.save()
    assert cat.id == first
    assert Cat.objects.get(id=first) == cat


def test_given_id_is_kept(repocket_connection: redis_py.Redis) -> None:
    """An id given at construction is saved as is."""
    cat = Cat.create(id=uuid.UUID(HARRY_ID), name="Tom")
    assert cat.id == uuid.UUID(HARRY_ID)
    assert cat.save()["hash"] == f"{prefix(Cat)}:{HARRY_ID}"


def test_id_given_as_str_is_cast_to_uuid() -> None:
    """An id given as a string is cast to uuid.UUID (also upper-case or without hyphens)."""
    for text in (HARRY_ID, HARRY_ID.upper(), HARRY_ID.replace("-", "")):
        cat = Cat(id=text)
        assert isinstance(cat.id, uuid.UUID) and cat.id == uuid.UUID(HARRY_ID)
    cat = Cat()
    cat.id = HARRY_ID
    assert cat.id == uuid.UUID(HARRY_ID)


def test_invalid_id_raises_value_error_naming_it() -> None:
    """An invalid id raises ValueError naming the value."""
    with pytest.raises(ValueError, match="not-a-uuid-at-all"):
        Cat(id="not-a-uuid-at-all")
    cat = Cat()
    with pytest.raises(ValueError, match="zzzz"):
        cat.id = "zzzz"


# -- instances ------------------------------------------------------------------------------------


def test_model_kwargs_and_attribute_access() -> None:
    """``Model(**fields)`` sets attributes readable as ``instance.attr`` and ``instance["attr"]``."""
    harry = make_harry()
    assert harry.name == "Harry Potter" == harry["name"]
    assert harry.email == b"harry@hogwards.uk" == harry["email"]
    assert harry.metadata == {"known_tricks": ["Protego", "Expelliarmus"]} == harry["metadata"]
    harry.name = "Harry James Potter"
    assert harry["name"] == "Harry James Potter"


def test_getitem_unknown_name_is_keyerror_listing_valid_names() -> None:
    """``instance["unknown"]`` raises KeyError listing the valid attribute names."""
    with pytest.raises(KeyError) as info:
        make_harry()["wand"]
    message = str(info.value)
    assert "wand" in message
    for name in ("id", "name", "house_name", "email", "password", "metadata"):
        assert name in message


def test_unknown_kwarg_is_typeerror_listing_valid_names() -> None:
    """An unknown keyword argument raises TypeError listing the valid names."""
    with pytest.raises(TypeError) as info:
        User(name="Harry", wand="holly")
    message = str(info.value)
    assert "wand" in message
    for name in ("id", "name", "house_name", "email", "password", "metadata"):
        assert name in message


def test_positional_arguments_are_rejected() -> None:
    """Models take keyword arguments only."""
    with pytest.raises(TypeError):
        User("Harry")


def test_save_returns_keys_without_bytestream(repocket_connection: redis_py.Redis) -> None:
    """save() returns ``{"hash": <hash key>, "strings": {}}`` for a model without ByteStream."""
    assert make_harry().save() == {"hash": f"{prefix(User)}:{HARRY_ID}", "strings": {}}


def test_save_returns_keys_with_bytestreams(repocket_connection: redis_py.Redis) -> None:
    """save() returns the ByteStream string keys under "strings", by attribute name."""
    build = Build(id=RON_ID, project=Project.create(name="p"))
    record = f"{prefix(Build)}:{RON_ID}"
    assert build.save() == {
        "hash": record,
        "strings": {"stdout": f"{record}:field:stdout", "stderr": f"{record}:field:stderr"},
    }


def test_keys_after_create_and_delete(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Creating a record writes its hash and id set; deleting it leaves no key at all."""
    harry = make_harry()
    harry.save()
    assert all_keys(redis) == {f"{prefix(User)}:{HARRY_ID}", f"{prefix(User)}:_ids"}
    assert redis.type(f"{prefix(User)}:{HARRY_ID}") == b"hash"
    assert redis.smembers(f"{prefix(User)}:_ids") == {HARRY_ID.encode()}
    assert harry.delete() == 1
    assert all_keys(redis) == set()


def test_delete_counts_bytestream_keys(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """delete() returns 1 plus the number of non-empty ByteStreams, and removes all of the record's keys."""
    project = Project.create(name="p")
    project_keys = all_keys(redis)
    cases = [({}, 1), ({"stdout": b"out"}, 2), ({"stdout": b"out", "stderr": b"err"}, 3)]
    for streams, expected in cases:
        build = Build.create(project=project, **streams)
        record = build.save()["hash"]
        created = all_keys(redis) - project_keys
        assert record in created
        for name, value in streams.items():
            assert redis.get(f"{record}:field:{name}") == value
        assert {k for k in created if not k.startswith(record)} <= {
            k for k in created if k.startswith(prefix(Build) + ":_")
        }
        assert build.delete() == expected
        assert all_keys(redis) == project_keys


def test_delete_unsaved_record_returns_zero(repocket_connection: redis_py.Redis) -> None:
    """Deleting a record never saved deletes nothing and returns 0."""
    assert Cat(name="Tom").delete() == 0


def test_matches() -> None:
    """matches() is True when every given field equals the record's value, else False."""
    harry = make_harry()
    assert harry.matches({"name": "Harry Potter"})
    assert harry.matches({"name": "Harry Potter", "house_name": "Gryffindor"})
    assert harry.matches({"email": b"harry@hogwards.uk"})
    assert not harry.matches({"name": "Harry Potter", "house_name": "Slytherin"})
    assert not harry.matches({"name": "Ron Weasley"})
    assert harry.matches({})


def test_to_dict_simple(repocket_connection: redis_py.Redis) -> None:
    """to_dict(simple=True) gives plain Python values in declaration order."""
    harry = make_harry()
    assert harry.to_dict(simple=True) == {
        "id": uuid.UUID(HARRY_ID),
        "name": "Harry Potter",
        "house_name": "Gryffindor",
        "email": b"harry@hogwards.uk",
        "password": b"$2b$04$somethingsecret",
        "metadata": {"known_tricks": ["Protego", "Expelliarmus"]},
    }
    assert list(harry.to_dict(simple=True)) == list(fields(User))


def test_to_dict_simple_nests_pointers(repocket_connection: redis_py.Redis) -> None:
    """to_dict(simple=True) renders a Pointer as the target's own simple dict."""
    project = Project.create(name="repocket", git_uri=b"git@x:y.git", metadata={"a": 1})
    build = Build.create(project=project, stdout=b"out")
    loaded = Build.objects.get(id=build.id)
    simple = loaded.to_dict(simple=True)
    assert simple["project"] == project.to_dict(simple=True)
    assert simple["project"] == {
        "id": project.id, "name": "repocket", "git_uri": b"git@x:y.git", "metadata": {"a": 1},
    }
    assert simple["stdout"] == b"out" and simple["stderr"] == b""


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_to_dict_envelopes_match_storage(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """to_dict() gives each attribute's stored envelope, equal to the hash field."""
    harry = make_harry()
    key = harry.save()["hash"]
    envelopes = harry.to_dict()
    assert envelopes["name"] == {"type": "Unicode", "value": "Harry Potter", "module": "repocket.attributes"}
    assert envelopes["id"] == {"type": "AutoUUID", "value": HARRY_ID, "module": "repocket.attributes"}
    for field, raw in redis.hgetall(key).items():
        assert envelopes[field.decode()] == json.loads(raw)


def test_repr() -> None:
    """repr() is ``module.Model(id='...', field=...)`` in declaration order."""
    assert repr(Cat(id=HARRY_ID, name="Tom")) == f"{MODULE}.Cat(id='{HARRY_ID}', name='Tom')"
    assert repr(Person(id=RON_ID, name="Ann", city="Oslo", age=3)) == (
        f"{MODULE}.Person(id='{RON_ID}', name='Ann', city='Oslo', age=3)"
    )


def test_repr_unsaved_has_id_none() -> None:
    """repr() of a record without id shows ``id=None``."""
    assert repr(Cat(name="Tom")) == f"{MODULE}.Cat(id=None, name='Tom')"


# -- equality --------------------------------------------------------------------------------------


def test_equal_same_class_and_values() -> None:
    """Records of the same class with equal values are equal."""
    assert Cat(id=HARRY_ID, name="Tom") == Cat(id=HARRY_ID, name="Tom")
    assert not (Cat(id=HARRY_ID, name="Tom") != Cat(id=HARRY_ID, name="Tom"))


def test_not_equal_different_values() -> None:
    """Records whose values differ (id or any field) are not equal."""
    assert Cat(id=HARRY_ID, name="Tom") != Cat(id=HARRY_ID, name="Jerry")
    assert Cat(id=HARRY_ID, name="Tom") != Cat(id=RON_ID, name="Tom")


def test_not_equal_different_class() -> None:
    """Records of different classes with the same values are not equal."""
    assert Cat(id=HARRY_ID, name="Tom") != Dog(id=HARRY_ID, name="Tom")
    assert not (Cat(id=HARRY_ID, name="Tom") == Dog(id=HARRY_ID, name="Tom"))


@pytest.mark.parametrize("other", [None, 1, "Tom", HARRY_ID, uuid.UUID(HARRY_ID), {"name": "Tom"}, [], object()])
def test_compare_with_non_model_is_false(other: object) -> None:
    """Comparing with a non-model is False (NotImplemented), never raises."""
    cat = Cat(id=HARRY_ID, name="Tom")
    assert (cat == other) is False
    assert (other == cat) is False
    assert cat != other
    assert cat.__eq__(other) is NotImplemented


def test_loaded_record_equals_saved(repocket_connection: redis_py.Redis) -> None:
    """A record read back equals the one saved."""
    harry = make_harry()
    harry.save()
    assert User.objects.get(id=HARRY_ID) == harry


# -- create / objects -----------------------------------------------------------------------------


def test_model_create_saves_and_returns(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Model.create(**kwargs) saves immediately and returns the instance."""
    cat = Cat.create(name="Tom")
    assert isinstance(cat, Cat) and cat.name == "Tom" and cat.id is not None
    assert redis.exists(f"{prefix(Cat)}:{cat.id}") == 1


def test_objects_create(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """objects.create(**kwargs) saves and returns the instance."""
    cat = Cat.objects.create(name="Tom")
    assert isinstance(cat, Cat) and cat.id is not None
    assert Cat.objects.get(id=cat.id) == cat


def test_objects_get(repocket_connection: redis_py.Redis) -> None:
    """objects.get(id=...) returns the record, whether the id is a UUID or a string."""
    harry = make_harry()
    harry.save()
    assert User.objects.get(id=uuid.UUID(HARRY_ID)) == harry
    assert User.objects.get(id=HARRY_ID) == harry


def test_objects_get_missing_raises_model_does_not_exist(repocket_connection: redis_py.Redis) -> None:
    """objects.get of a missing id raises Model.DoesNotExist, a repocket.errors.DoesNotExist."""
    with pytest.raises(User.DoesNotExist) as info:
        User.objects.get(id=HARRY_ID)
    assert isinstance(info.value, errors.DoesNotExist)
    assert isinstance(info.value, errors.RepocketError)


def test_does_not_exist_is_per_model() -> None:
    """Each model has its own DoesNotExist subclass of repocket.errors.DoesNotExist."""
    assert issubclass(User.DoesNotExist, errors.DoesNotExist)
    assert issubclass(Cat.DoesNotExist, errors.DoesNotExist)
    assert User.DoesNotExist is not Cat.DoesNotExist
    assert not issubclass(User.DoesNotExist, Cat.DoesNotExist)


def test_objects_all_and_filter(repocket_connection: redis_py.Redis) -> None:
    """all() returns every record of the model (only that model); filter(**kw) those matching."""
    tom = Cat.create(name="Tom")
    felix = Cat.create(name="Felix")
    Dog.create(name="Tom")
    assert sorted(c.name for c in Cat.objects.all()) == ["Felix", "Tom"]
    assert all(isinstance(c, Cat) for c in Cat.objects.all())
    assert list(Cat.objects.filter(name="Tom")) == [tom]
    assert list(Cat.objects.filter(name="Felix")) == [felix]
    assert len(Cat.objects.filter(name="Garfield")) == 0


def test_objects_not_accessible_on_instances() -> None:
    """``objects`` is reached through the model class, not an instance."""
    with pytest.raises(AttributeError):
        Cat(name="Tom").objects  # noqa: B018


# -- ResultSet -------------------------------------------------------------------------------------

PEOPLE = [
    ("Ann", "Paris", 30),
    ("Bob", "Oslo", None),
    ("Cid", "Paris", 25),
    ("Dan", "Oslo", 30),
    ("Eve", "Rome", None),
    ("Fay", "Oslo", 41),
    ("Gus", "Paris", 30),
    ("Hal", "Oslo", 25),
]


@pytest.fixture
def people(repocket_connection: redis_py.Redis) -> list[Person]:
    # created in an order unrelated to any sort key, so no test passes by insertion order
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    return [Person.create(name=n, city=c, age=a) for n, c, a in (PEOPLE[i] for i in order)]


def names(records: Any) -> list[str]:
    return [r.name for r in records]


def test_result_set_supports_list_operations(people: list[Person]) -> None:
    """filter()/all() results support len, indexing (also negative), slicing, iteration."""
    results = Person.objects.all().order_by("name")
    assert len(results) == len(PEOPLE)
    assert results[0].name == "Ann"
    assert results[-1].name == "Hal"
    assert names(results[1:3]) == ["Bob", "Cid"]
    assert names(list(results)) == sorted(n for n, _, _ in PEOPLE)


def test_negative_index_on_unevaluated_results(people: list[Person]) -> None:
    """Negative indexing works on filter()/all() results, as on a list, before anything else evaluated them."""
    assert Person.objects.all().order_by("name")[-1].name == "Hal"
    assert Person.objects.filter(city="Oslo").order_by("name")[-2].name == "Fay"


def test_filter_results_behave_as_a_result_set_list(people: list[Person]) -> None:
    """filter() and all() give a lazy query that acts as the ResultSet list of SPEC §1 (issue 3)."""
    results = Person.objects.filter(city="Oslo")
    expected = sorted((p for p in people if p.city == "Oslo"), key=lambda p: str(p.id))
    assert len(results) == len(expected) == 4
    assert sorted(results, key=lambda p: str(p.id)) == expected
    assert results[0] in expected and results[-1] in expected
    assert isinstance(ResultSet(results), list)
    assert names(ResultSet(results).order_by("name")) == names(results.order_by("name"))
    assert len(Person.objects.all()) == len(people)


def test_order_by_ascending(people: list[Person]) -> None:
    """order_by("field") sorts ascending."""
    assert names(Person.objects.all().order_by("name")) == ["Ann", "Bob", "Cid", "Dan", "Eve", "Fay", "Gus", "Hal"]


def test_order_by_descending(people: list[Person]) -> None:
    """order_by("-field") sorts descending."""
    assert names(Person.objects.filter(city="Oslo").order_by("-name")) == ["Hal", "Fay", "Dan", "Bob"]


def test_order_by_several_keys(people: list[Person]) -> None:
    """order_by with several keys sorts by the first, then the next for ties."""
    assert names(Person.objects.all().order_by("city", "-age", "name")) == [
        "Fay", "Dan", "Hal", "Bob",  # Oslo: 41, 30, 25, None (None last descending)
        "Ann", "Gus", "Cid",  # Paris: 30 (Ann, Gus by name), 25
        "Eve",  # Rome
    ]


def test_order_by_none_first_ascending_last_descending(people: list[Person]) -> None:
    """None sorts first ascending and last descending."""
    assert names(Person.objects.all().order_by("age", "name")) == [
        "Bob", "Eve", "Cid", "Hal", "Ann", "Dan", "Gus", "Fay",
    ]
    assert names(Person.objects.all().order_by("-age", "name")) == [
        "Fay", "Ann", "Dan", "Gus", "Cid", "Hal", "Bob", "Eve",
    ]


def test_result_set_order_by_is_stable(people: list[Person]) -> None:
    """ResultSet.order_by is stable: ties keep the order they had."""
    by_name = ResultSet(sorted(Person.objects.all(), key=lambda p: p.name))
    assert names(by_name.order_by("city")) == ["Bob", "Dan", "Fay", "Hal", "Ann", "Cid", "Gus", "Eve"]
    reverse_names = ResultSet(sorted(Person.objects.all(), key=lambda p: p.name, reverse=True))
    assert names(reverse_names.order_by("city")) == ["Hal", "Fay", "Dan", "Bob", "Gus", "Cid", "Ann", "Eve"]


def test_result_set_order_by_returns_result_set(people: list[Person]) -> None:
    """ResultSet.order_by returns a new ResultSet and leaves the original list as it was."""
    original = ResultSet(sorted(Person.objects.all(), key=lambda p: p.name, reverse=True))
    snapshot = list(original)
    ordered = original.order_by("name")
    assert isinstance(ordered, ResultSet)
    assert list(original) == snapshot
    assert names(ordered) == sorted(names(snapshot))


def test_order_by_chained_is_stable(people: list[Person]) -> None:
    """Chained order_by calls sort stably: ``.order_by("name").order_by("city")`` is city, then name."""
    results = Person.objects.all().order_by("name").order_by("city")
    assert names(results) == ["Bob", "Dan", "Fay", "Hal", "Ann", "Cid", "Gus", "Eve"]


def test_order_by_unknown_field_is_rejected(people: list[Person]) -> None:
    """Ordering by a name that is not an attribute raises an error naming it."""
    with pytest.raises((KeyError, TypeError, errors.RepocketError), match="shoe_size"):
        list(Person.objects.all().order_by("shoe_size"))


# -- ByteStream append ----------------------------------------------------------------------------


def test_append_is_a_bound_method() -> None:
    """Every ByteStream ``name`` gives instances a bound method ``append_<name>``."""
    build = Build()
    assert inspect.ismethod(build.append_stdout) and build.append_stdout.__self__ is build
    assert inspect.ismethod(build.append_stderr)
    assert not hasattr(Project(), "append_name")


def test_append_appends_in_redis_and_memory(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """append_<name> APPENDs to the Redis string, updates memory and returns the string's key."""
    build = Build.create(project=Project.create(name="p"), stdout=b"start:")
    string_key = build.save()["strings"]["stdout"]
    assert build.append_stdout(b"hello ") == string_key
    assert build.stdout == b"start:hello "
    assert redis.get(string_key) == b"start:hello "
    assert build.append_stdout("wörld") == string_key
    assert build.stdout == "start:hello wörld".encode()
    assert redis.get(string_key) == "start:hello wörld".encode()
    assert Build.objects.get(id=build.id).stdout == "start:hello wörld".encode()


def test_append_to_empty_stream(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """append_<name> on an empty ByteStream creates the string; get reads it back."""
    build = Build.create(project=Project.create(name="p"))
    key = build.append_stderr(b"\x00\xff oops")
    assert key == f"{prefix(Build)}:{build.id}:field:stderr"
    assert redis.get(key) == b"\x00\xff oops"
    assert Build.objects.get(id=build.id).stderr == b"\x00\xff oops"
    assert Build.objects.get(id=build.id).stdout == b""


def test_append_is_one_call_without_read(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """append_<name> is one Redis call and never overwrites what others appended (no read-modify-write)."""
    build = Build.create(project=Project.create(name="p"))
    key = build.append_stdout(b"a")  # first use may load the script
    redis.append(key, b"[other]")
    with count_round_trips() as trips:
        assert build.append_stdout(b"b") == key
    assert trips.count == 1, trips.names()
    assert redis.get(key) == b"a[other]b"
    assert build.stdout == b"ab"
    assert Build.objects.get(id=build.id).stdout == b"a[other]b"


def test_save_after_append_keeps_appended_data(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Saving other fields after an append keeps the stream's appended bytes (also those of others)."""
    build = Build.create(project=Project.create(name="p"))
    key = build.append_stdout(b"one ")
    redis.append(key, b"two ")
    build.started_at = dt.datetime(2015, 1, 1)
    build.save()
    assert redis.get(key) == b"one two "


# -- Pointer -----------------------------------------------------------------------------------------


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_pointer_stores_target_key(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Saving a Pointer stores the target's hash key."""
    project = Project.create(name="repocket")
    build = Build.create(project=project)
    raw = redis.hget(build.save()["hash"], "project")
    assert json.loads(raw) == {"type": "Pointer", "value": f"{prefix(Project)}:{project.id}", "module": "repocket.attributes"}


def test_pointer_loads_target_instance(repocket_connection: redis_py.Redis) -> None:
    """Loading a record retrieves the pointed-to record automatically."""
    project = Project.create(name="repocket", git_uri=b"git@github.com:x/repocket.git", metadata={"stars": 5})
    build = Build.create(project=project)
    loaded = Build.objects.get(id=build.id)
    assert isinstance(loaded.project, Project)
    assert loaded.project == project
    assert loaded.project.git_uri == b"git@github.com:x/repocket.git"
    assert [b.project.name for b in Build.objects.all()] == ["repocket"]


def test_pointer_to_unsaved_target_raises_reference_error(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """Saving a Pointer to a record never saved raises the builtin ReferenceError, writing nothing."""
    build = Build(project=Project(name="unsaved"))
    with pytest.raises(ReferenceError):
        build.save()
    assert all_keys(redis) == set()


def test_pointer_null_target_deleted_loads_none(repocket_connection: redis_py.Redis) -> None:
    """A null=True Pointer whose target was deleted loads as None."""
    project = Project.create(name="gone")
    note = Note.create(project=project, text="hi")
    project.delete()
    loaded = Note.objects.get(id=note.id)
    assert loaded.project is None
    assert loaded.text == "hi"


def test_pointer_null_none_round_trips(repocket_connection: redis_py.Redis) -> None:
    """A null=True Pointer left None saves and loads as None."""
    note = Note.create(text="orphan")
    assert Note.objects.get(id=note.id).project is None


def test_pointer_broken_raises_naming_both_keys(repocket_connection: redis_py.Redis) -> None:
    """A non-null Pointer whose target was deleted loads; reading it raises BrokenReferenceError naming both keys."""
    project = Project.create(name="gone")
    build = Build.create(project=project)
    project_key = f"{prefix(Project)}:{project.id}"
    build_key = f"{prefix(Build)}:{build.id}"
    project.delete()
    loaded = Build.objects.get(id=build.id)
    with pytest.raises(errors.BrokenReferenceError) as info:
        loaded.project  # noqa: B018
    assert project_key in str(info.value) and build_key in str(info.value)
    assert isinstance(info.value, errors.RepocketError)


def test_pointer_wrong_model_is_rejected() -> None:
    """Assigning a record of another model to a Pointer raises ValidationError."""
    with pytest.raises(errors.ValidationError):
        Build(project=Cat(name="Tom"))


# -- namespaces and inheritance ------------------------------------------------------------------


def test_meta_namespace_sets_key_prefix(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """``Meta.namespace`` replaces the module in the key prefix."""
    record = Moved.create(name="x")
    key = f"repocket:legacy.models:Moved:{record.id}"
    assert record.save()["hash"] == key
    assert redis.exists(key) == 1
    assert all(k.startswith("repocket:legacy.models:Moved:") for k in all_keys(redis))
    assert Moved.objects.get(id=record.id) == record


def test_dunder_namespace_sets_key_prefix(repocket_connection: redis_py.Redis, redis: redis_py.Redis) -> None:
    """A class-level ``__namespace__`` replaces the module in the key prefix."""
    record = Dunder.create(name="x")
    assert record.save()["hash"] == f"repocket:legacy.dunder:Dunder:{record.id}"
    assert all(k.startswith("repocket:legacy.dunder:Dunder:") for k in all_keys(redis))
    assert Dunder.objects.get(id=record.id) == record


def test_inheritance_attribute_order() -> None:
    """A subclass has the inherited attributes first, then its own, each in declaration order."""
    assert [name for name in fields(Bird) if name != "id"] == ["name", "legs", "wingspan", "song"]
    assert [name for name in fields(Animal) if name != "id"] == ["name", "legs"]
    assert list(Bird(name="Tweety").to_dict(simple=True)) == list(fields(Bird))


def test_inheritance_own_key_prefix(repocket_connection: redis_py.Redis) -> None:
    """A subclass stores under its own key prefix; base and subclass queries do not mix."""
    animal = Animal.create(name="Rex", legs=4)
    bird = Bird.create(name="Tweety", legs=2, wingspan=0.2, song="tweet")
    assert bird.save()["hash"] == f"{prefix(Bird)}:{bird.id}"
    assert animal.save()["hash"] == f"{prefix(Animal)}:{animal.id}"
    assert list(Animal.objects.all()) == [animal]
    assert list(Bird.objects.all()) == [bird]
    loaded = Bird.objects.get(id=bird.id)
    assert (loaded.name, loaded.legs, loaded.wingspan, loaded.song) == ("Tweety", 2, 0.2, "tweet")
    with pytest.raises(Animal.DoesNotExist):
        Animal.objects.get(id=bird.id)


# -- connections ---------------------------------------------------------------------------------------


def test_connection_pool_signature_defaults() -> None:
    """configure.connection_pool keeps the original signature and defaults (localhost, 6379, 0)."""
    params = inspect.signature(configure.connection_pool).parameters
    assert list(params)[:3] == ["hostname", "port", "db"]
    assert (params["hostname"].default, params["port"].default, params["db"].default) == ("localhost", 6379, 0)
    assert "url" in params


def test_get_connection_returns_redis(repocket_connection: redis_py.Redis) -> None:
    """configure.get_connection() returns a redis.Redis on the global pool."""
    conn = configure.get_connection()
    assert isinstance(conn, redis_py.Redis)
    assert conn.ping() is True


def test_connection_pool_redis_url(redis: redis_py.Redis, redis_url: str, restore_pool: None) -> None:
    """configure.connection_pool(url="redis://...") points repocket at that server."""
    configure.connection_pool(url=redis_url)
    cat = Cat.create(name="Tom")
    assert redis.exists(f"{prefix(Cat)}:{cat.id}") == 1
    assert isinstance(configure.get_connection(), redis_py.Redis)


def test_connection_pool_url_selects_db(redis: redis_py.Redis, redis_url: str, restore_pool: None) -> None:
    """The database number in a redis:// URL is the one written to."""
    parts = urlsplit(redis_url)
    if parts.scheme != "redis":
        pytest.skip("needs a redis:// URL")
    other_url = urlunsplit(parts._replace(path="/3", query=""))
    other = redis_py.Redis.from_url(other_url)
    other.flushdb()
    try:
        configure.connection_pool(url=other_url)
        cat = Cat.create(name="Tom")
        assert other.exists(f"{prefix(Cat)}:{cat.id}") == 1
        assert redis.exists(f"{prefix(Cat)}:{cat.id}") == 0
    finally:
        other.flushdb()
        other.close()


def test_connection_pool_hostname_port_db(redis: redis_py.Redis, redis_url: str, restore_pool: None) -> None:
    """configure.connection_pool(hostname=..., port=..., db=...) connects as the original did."""
    parts = urlsplit(redis_url)
    if parts.scheme != "redis" or parts.password or parts.username:
        pytest.skip("needs a plain redis:// URL")
    db = int(parts.path.strip("/") or 0)
    configure.connection_pool(hostname=parts.hostname, port=parts.port or 6379, db=db)
    cat = Cat.create(name="Tom")
    assert redis.exists(f"{prefix(Cat)}:{cat.id}") == 1


@pytest.fixture
def unix_server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A second redis-server listening on a unix socket only (short path: sun_path is ~100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    server = RedisServer(unix_socket=directory / "redis.sock")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_connection_pool_unix_url(unix_server: RedisServer, restore_pool: None) -> None:
    """configure.connection_pool(url="unix://...") talks to a server on a unix socket."""
    assert unix_server.unix_socket is not None
    configure.connection_pool(url=f"unix://{unix_server.unix_socket}")
    assert configure.get_connection().ping() is True
    cat = Cat.create(name="Tom")
    direct = redis_py.Redis(unix_socket_path=unix_server.unix_socket)
    try:
        assert direct.exists(f"{prefix(Cat)}:{cat.id}") == 1
    finally:
        direct.close()
    assert Cat.objects.get(id=cat.id) == cat
