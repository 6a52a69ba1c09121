"""JSON Schema and pydantic models of repocket models (repocket.schema), on a real Redis, and in a FastAPI app."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import struct
import subprocess
import sys
import uuid
from typing import Any

import fastapi
import jsonschema
import pydantic
import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors, schema

pytestmark = pytest.mark.usefixtures("repocket_connection")


class SchTeam(ActiveRecord):
    name = attributes.Unicode()


class SchRecord(ActiveRecord):
    text = attributes.Unicode()
    raw = attributes.Bytes()
    latin = attributes.Bytes(encoding="latin-1", null=True)
    stream = attributes.ByteStream()
    doc = attributes.JSON(null=True)
    ref = attributes.UUID(null=True)
    when = attributes.DateTime(null=True)
    stamp = attributes.DateTime(auto_now=True)
    amount = attributes.Decimal()
    number = attributes.Integer(default=7)
    ratio = attributes.Float(null=True)
    team = attributes.Pointer(SchTeam, null=True)
    members = attributes.PointerList(SchTeam)
    token = attributes.Unicode(secret=True, null=True)


class SchTask(ActiveRecord):
    title = attributes.Unicode()
    team = attributes.Pointer(SchTeam)
    due = attributes.DateTime(null=True)
    labels = attributes.JSON(default=list)


# -- checking JSON against a schema ------------------------------------------------------------------

formats = jsonschema.FormatChecker()


@formats.checks("date-time", raises=ValueError)
def _is_iso_datetime(value: object) -> bool:
    """ISO 8601 date and time, as ``isoformat()`` writes it (a naive value has no offset)."""
    return not isinstance(value, str) or ("T" in value and dt.datetime.fromisoformat(value) is not None)


def validator(model: type[ActiveRecord]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(model.json_schema(), format_checker=formats)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types: floats bit for bit (NaN as NaN), Decimals by text, datetimes with their offset."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, ActiveRecord):
        return type(a) is type(b) and a.pk == b.pk
    return bool(a == b)


def assert_same_record(a: ActiveRecord, b: ActiveRecord, *, skip: tuple[str, ...] = ()) -> None:
    for name in a._meta.fields:
        if name not in skip:
            assert same(a[name], b[name]), (name, a[name], b[name])


# -- strategies ----------------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(2**64, 2**300)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_docs = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
max_offset = dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
offsets = st.timedeltas(min_value=-max_offset, max_value=max_offset).map(dt.timezone)
datetimes = st.datetimes() | st.datetimes(timezones=offsets)
decimals = st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan())
floats = st.floats(allow_nan=True, allow_infinity=True)
records = st.fixed_dictionaries({
    "text": st.text(),
    "raw": st.binary(),
    "latin": st.none() | st.binary(),
    "stream": st.binary(),
    "doc": json_docs,
    "ref": st.none() | st.uuids(),
    "when": st.none() | datetimes,
    "amount": decimals,
    "number": st.integers() | st.integers(-(2**400), 2**400),
    "ratio": st.none() | floats,
    "token": st.none() | st.text(),
    "team": st.none() | st.integers(0, 2),
    "members": st.lists(st.integers(0, 2), unique=True, max_size=3),
})


@pytest.fixture
def teams() -> list[SchTeam]:
    return [SchTeam.create(name=name) for name in ("red", "green", "blue")]


def build(values: dict[str, Any], teams: list[SchTeam]) -> SchRecord:
    """A saved SchRecord with ``values``, its Pointers given as positions in ``teams``."""
    team = values["team"]
    record = SchRecord(**{**values, "team": None if team is None else teams[team],
                          "members": [teams[i] for i in values["members"]]})
    record.save()
    return SchRecord.objects.get(id=record.pk)


# -- json_schema() -------------------------------------------------------------------------------------


def test_json_schema_of_a_small_model() -> None:
    """The schema names the model, types every attribute, requires what a new record needs and forbids the rest."""
    assert SchTask.json_schema() == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SchTask",
        "description": "A tests.functional.test_schemas.SchTask record",
        "type": "object",
        "properties": {
            "id": {"type": ["string", "null"], "format": "uuid",
                   "description": "the primary key, assigned on first save", "default": None},
            "title": {"type": "string"},
            "team": {"type": "string", "format": "uuid",
                     "description": "the id of a tests.functional.test_schemas.SchTeam record"},
            "due": {"type": ["string", "null"], "format": "date-time", "default": None},
            "labels": {"not": {"type": "null"}},
        },
        "required": ["title", "team"],
        "additionalProperties": False,
    }


def test_json_schema_is_a_valid_2020_12_schema_for_every_type() -> None:
    """Each schema is itself valid under the draft 2020-12 metaschema."""
    for model in (SchTeam, SchRecord, SchTask):
        jsonschema.Draft202012Validator.check_schema(schema.json_schema(model))


def test_json_schema_types_per_attribute() -> None:
    """Bytes are base64, Floats allow the three non-finite strings, Decimals are their text, secrets may be '***'."""
    props = SchRecord.json_schema()["properties"]
    assert props["raw"] == {"type": "string", "contentEncoding": "base64"}
    assert props["latin"] == {"type": ["string", "null"], "contentEncoding": "base64", "default": ""}
    assert props["stream"] == {"type": "string", "contentEncoding": "base64", "default": ""}  # starts empty
    assert props["ratio"] == {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]},
                                        {"type": "null"}], "default": 0.0}
    assert props["amount"] == {"type": "string", "pattern": schema.DECIMAL_PATTERN}
    assert props["doc"] == {"default": ""}  # any JSON value, null included
    assert props["number"] == {"type": "integer", "default": 7}
    assert props["stamp"] == {"type": ["string", "null"], "format": "date-time", "default": None,
                              "description": "set to the current time on every save"}
    assert props["members"] == {
        "type": "array", "items": {"type": "string", "format": "uuid"}, "uniqueItems": True,
        "description": "ids of tests.functional.test_schemas.SchTeam records", "default": []}
    assert props["token"] == {"anyOf": [{"type": ["string", "null"]}, {"const": "***"}],
                              "description": "secret: '***' unless revealed", "default": ""}
    assert SchRecord.json_schema()["required"] == ["text", "raw", "amount"]


def test_an_attribute_type_without_json_form_is_named() -> None:
    """A custom Attribute subclass has no JSON Schema: TypeError naming the model and the field."""

    class Odd(attributes.Attribute):  # type: ignore[type-arg]
        def _cast(self, value: Any) -> Any:
            return value

    class SchOdd(ActiveRecord):
        thing = Odd()

    with pytest.raises(TypeError, match=r"test_schemas\..*SchOdd\.thing: Odd attributes have no JSON Schema"):
        SchOdd.json_schema()


@given(records)
@example({"text": "", "raw": b"\xff\x00", "latin": None, "stream": b"", "doc": None, "ref": None, "when": None,
          "amount": decimal.Decimal("-NaN"), "number": -(2**400), "ratio": -math.inf, "token": None, "team": None,
          "members": []})
@example({"text": "\x00", "raw": b"", "latin": b"\xe9", "stream": b"\xff", "doc": {"a": [2**70, -0.0]},
          "ref": uuid.UUID(int=0), "amount": decimal.Decimal("1.10E+5"), "number": 0, "ratio": -0.0,
          "token": "s3cret", "team": 2, "members": [2, 0],
          "when": dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-23, seconds=-59)))})
def test_saved_records_validate_against_their_schema(teams: list[SchTeam], values: dict[str, Any]) -> None:
    """Every saved record's JSON form (masked or revealed) is valid under json_schema(), after a JSON round trip."""
    record = build(values, teams)
    check = validator(SchRecord)
    for form in (schema.json_form(record), schema.json_form(record, reveal=True)):
        check.validate(json.loads(json.dumps(form)))


@given(records)
def test_json_form_is_to_dict_simple_made_json(teams: list[SchTeam], values: dict[str, Any]) -> None:
    """json_form() holds to_dict(simple=True)'s values in JSON: Pointers by id, bytes base64, text for the rest."""
    record = build(values, teams)
    simple, form = record.to_dict(simple=True), schema.json_form(record)
    assert list(form) == list(simple)
    assert form["team"] == (None if simple["team"] is None else str(simple["team"]["id"]))
    assert form["members"] == [str(member["id"]) for member in simple["members"]]
    assert form["raw"] == base64.b64encode(simple["raw"]).decode()
    assert form["id"] == str(simple["id"])
    assert form["amount"] == str(simple["amount"])
    assert form["token"] == simple["token"]  # "***" or None
    assert form["when"] == (None if simple["when"] is None else simple["when"].isoformat())
    assert same(form["doc"], simple["doc"]) and form["text"] == simple["text"] and form["number"] == simple["number"]


@pytest.mark.parametrize(("field", "value"), [
    ("text", 1), ("raw", 5), ("stream", None), ("amount", "1,5"), ("amount", True), ("number", "7"),
    ("number", 1.5), ("number", True), ("ratio", "inf"), ("ref", "not a uuid"), ("when", 17), ("team", 3),
    ("members", "x"), ("members", [str(uuid.UUID(int=1))] * 2), ("id", 12), ("nope", 1),
])
def test_schema_and_pydantic_both_refuse_a_wrong_value(field: str, value: Any) -> None:
    """A value of the wrong JSON type is refused by the JSON Schema and by the pydantic model, naming the field."""
    body = {"text": "t", "raw": "", "stream": "", "amount": "1", field: value}
    assert not validator(SchRecord).is_valid(body)
    with pytest.raises(pydantic.ValidationError) as info:
        SchRecord.pydantic_model().model_validate(body)
    assert [error["loc"] for error in info.value.errors()] == [(field,)]


# -- pydantic_model() --------------------------------------------------------------------------------


def test_pydantic_model_is_cached_per_model() -> None:
    """One pydantic class per model, named after it, from the function and the classmethod alike."""
    body = schema.pydantic_model(SchTask)
    assert body is SchTask.pydantic_model() is schema.pydantic_model(SchTask)
    assert issubclass(body, pydantic.BaseModel)
    assert body.__name__ == "SchTask" and body.__module__ == __name__
    assert schema.pydantic_model(SchTeam) is not body


@pytest.mark.parametrize("mode", ["validation", "serialization"])
def test_pydantic_json_schema_is_ours(mode: str) -> None:
    """The pydantic model's own JSON Schema (what FastAPI publishes) has our properties, required list and no extras."""
    for model in (SchRecord, SchTask):
        ours, theirs = model.json_schema(), model.pydantic_model().model_json_schema(mode=mode)
        untitled = {name: {k: v for k, v in prop.items() if k != "title"}
                    for name, prop in theirs["properties"].items()}
        assert untitled == ours["properties"]
        assert theirs["required"] == ours["required"]
        assert theirs["additionalProperties"] is False
        assert (theirs["title"], theirs["type"]) == (ours["title"], "object")
        assert theirs["description"] == ours["description"]


#: Each field's value type, as pydantic describes it on its own (its JSON mode).
NATIVE = {"text": str, "raw": bytes, "latin": bytes | None, "stream": bytes, "ref": uuid.UUID | None,
          "when": dt.datetime | None, "stamp": dt.datetime | None, "amount": decimal.Decimal, "number": int,
          "ratio": float | None, "team": uuid.UUID | None, "members": list[uuid.UUID], "id": uuid.UUID | None}


def _types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a property schema allows (formats included), ignoring enums and consts."""
    if "anyOf" in prop:
        return set().union(*(_types(part) for part in prop["anyOf"]))
    kinds = prop.get("type", [])
    kinds = kinds if isinstance(kinds, list) else [kinds]
    fmt = prop.get("format")
    items = f"[{','.join(sorted(_types(prop['items'])))}]" if "items" in prop else ""
    return {f"{kind}{items}:{fmt}" if fmt and kind == "string" else kind + items for kind in kinds}


@pytest.mark.parametrize("field", sorted(NATIVE))
def test_our_types_agree_with_pydantics_native_types(field: str) -> None:
    """For each field, pydantic's schema of the plain Python type allows the same JSON types as ours."""
    theirs = _types(pydantic.TypeAdapter(NATIVE[field]).json_schema(mode="serialization"))
    ours = _types(SchRecord.json_schema()["properties"][field])
    if field in ("raw", "latin", "stream"):
        theirs = {kind.replace(":binary", "") for kind in theirs}  # we say contentEncoding: base64 instead
    assert ours == theirs


@given(records)
@example({"text": "", "raw": b"", "latin": None, "stream": b"", "doc": "", "ref": None, "when": None,
          "amount": decimal.Decimal("NaN"), "number": 2**400, "ratio": math.nan, "token": "", "team": None,
          "members": [0, 1, 2]})
def test_record_to_pydantic_and_back_is_equal(teams: list[SchTeam], values: dict[str, Any]) -> None:
    """record -> pydantic -> record gives equal values for every type, in Python and through JSON, and saves."""
    record = build(values, teams)
    body = schema.to_pydantic(record)
    assert_same_record(schema.from_pydantic(body), record)
    wire = body.model_dump_json()
    validator(SchRecord).validate(json.loads(wire))
    again = type(body).model_validate_json(wire.replace('"token":"***"', json.dumps({"token": record.token})[1:-1]))
    copy = schema.from_pydantic(again)
    assert_same_record(copy, record)
    copy.save()
    assert_same_record(SchRecord.objects.get(id=record.pk), record, skip=("stamp",))


@given(st.datetimes(timezones=offsets), st.sampled_from(["Z", "+00:00", "-05:30", ""]))
def test_datetime_bodies_keep_their_offset(moment: dt.datetime, suffix: str) -> None:
    """Sub-minute offsets survive the JSON form; ISO text with 'Z' or another offset is read as written."""
    body = SchTask.pydantic_model()
    assert same(body.model_validate_json(json.dumps({"title": "t", "team": str(uuid.uuid4()),
                                                     "due": moment.isoformat()})).due, moment)
    text = moment.replace(tzinfo=None).isoformat() + suffix
    read = body.model_validate({"title": "t", "team": str(uuid.uuid4()), "due": text}).due
    assert read.replace(tzinfo=None) == moment.replace(tzinfo=None)
    assert read.utcoffset() == (None if not suffix else dt.datetime.fromisoformat("2000-01-01T00:00" + (
        "+00:00" if suffix == "Z" else suffix)).utcoffset())


def test_python_values_are_taken_as_an_assignment_takes_them(teams: list[SchTeam]) -> None:
    """In Python the model also takes bytes, datetimes, Decimals and target records, and dumps them back as such."""
    body = SchRecord.pydantic_model()(text=b"caf\xc3\xa9", raw=b"\xff", stream="c3RyZWFt", amount=1.5,
                                      when=dt.date(2015, 8, 27), team=teams[0], members=(teams[1], teams[2].pk))
    assert body.text == "café" and body.raw == b"\xff" and body.stream == b"stream"
    assert body.amount == decimal.Decimal("1.5") and body.when == dt.datetime(2015, 8, 27)
    assert body.team == teams[0].pk and body.members == [teams[1].pk, teams[2].pk]
    dumped = body.model_dump()
    assert dumped["raw"] == b"\xff" and dumped["team"] == teams[0].pk
    assert body.model_dump(mode="json")["raw"] == "/w=="


def test_secrets_are_masked_in_dumps_but_kept_in_conversions() -> None:
    """A secret is '***' in every dump and in the JSON form, and the real value in to_pydantic/from_pydantic."""
    record = SchRecord(text="t", amount=1, token="hunter2")
    body = schema.to_pydantic(record)
    assert body.token == "hunter2"
    assert body.model_dump()["token"] == body.model_dump(mode="json")["token"] == "***"
    assert "hunter2" not in body.model_dump_json()
    assert schema.json_form(record)["token"] == "***" and schema.json_form(record, reveal=True)["token"] == "hunter2"
    assert schema.from_pydantic(body).token == "hunter2"


def test_defaults_match_the_models() -> None:
    """A body that omits an attribute gets the model's default (a callable one called for each body)."""
    body = SchTask.pydantic_model()
    first, second = (body(title="t", team=str(uuid.uuid4())) for _ in range(2))
    assert first.labels == [] and first.labels is not second.labels
    assert first.id is None and first.due is None
    with pytest.raises(pydantic.ValidationError, match="team"):
        body(title="t")


def test_from_pydantic_refuses_a_missing_target() -> None:
    """A Pointer naming no stored record raises ValidationError naming the model, the field and the id."""
    missing = uuid.uuid4()
    body = SchTask.pydantic_model()(title="t", team=missing)
    with pytest.raises(errors.ValidationError, match=rf"SchTask\.team: no .*SchTeam has the id '{missing}'") as info:
        schema.from_pydantic(body)
    assert (info.value.field, info.value.value) == ("team", missing)


def test_from_pydantic_refuses_other_objects() -> None:
    """Only instances of a pydantic_model() class convert: TypeError naming the class otherwise."""

    class Other(pydantic.BaseModel):
        title: str

    with pytest.raises(TypeError, match="Other is not a model made by repocket.schema.pydantic_model"):
        schema.from_pydantic(Other(title="t"))


@pytest.mark.asyncio
async def test_afrom_pydantic_loads_the_targets(teams: list[SchTeam]) -> None:
    """The async twin loads the targets too, and gives the same record."""
    body = SchRecord.pydantic_model()(text="t", raw="", stream="", amount="2", team=teams[1].pk,
                                      members=[teams[2].pk])
    record = await schema.afrom_pydantic(body)
    assert record.team == teams[1] and record.members == [teams[2]]
    assert_same_record(record, schema.from_pydantic(body))


def test_pydantic_is_optional() -> None:
    """import repocket and json_schema() never import pydantic; pydantic_model() without it names the extra."""
    code = (
        "import sys\n"
        "sys.modules['pydantic'] = None\n"
        "from repocket import ActiveRecord, attributes, schema\n"
        "class M(ActiveRecord):\n    name = attributes.Unicode()\n"
        "assert M.json_schema()['title'] == 'M'\n"
        "try:\n    M.pydantic_model()\nexcept ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "repocket.schema.pydantic_model() needs pydantic 2: pip install 'repocket[pydantic]'"
    code = "import sys, repocket, repocket.schema; print('pydantic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# -- FastAPI -----------------------------------------------------------------------------------------------

TaskBody = SchTask.pydantic_model()


def make_app() -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.exception_handler(errors.ValidationError)
    def invalid(request: fastapi.Request, exc: errors.ValidationError) -> fastapi.responses.JSONResponse:
        return fastapi.responses.JSONResponse({"detail": str(exc), "field": exc.field}, status_code=422)

    @app.post("/tasks", response_model=TaskBody, status_code=201)
    def create(body: TaskBody) -> Any:  # type: ignore[valid-type]
        task = schema.from_pydantic(body)
        task.save()
        return schema.to_pydantic(task)

    @app.get("/tasks/{task_id}", response_model=TaskBody)
    def read(task_id: uuid.UUID) -> Any:
        try:
            return schema.to_pydantic(SchTask.objects.get(id=task_id))
        except SchTask.DoesNotExist:
            raise fastapi.HTTPException(404, f"no task {task_id}") from None

    @app.get("/tasks/{task_id}/record", response_model=TaskBody)
    def read_record(task_id: uuid.UUID) -> Any:
        return SchTask.objects.get(id=task_id)  # (FastAPI reads the record's attributes)

    @app.post("/async/tasks", response_model=TaskBody, status_code=201)
    async def acreate(body: TaskBody) -> Any:  # type: ignore[valid-type]
        task = await schema.afrom_pydantic(body)
        await task.asave()
        return schema.to_pydantic(task)

    @app.get("/async/tasks/{task_id}", response_model=TaskBody)
    async def aread(task_id: uuid.UUID) -> Any:
        return schema.to_pydantic(await SchTask.objects.aget(id=task_id))

    return app


@pytest.mark.parametrize("prefix", ["", "/async"])
def test_fastapi_post_creates_a_record_and_get_returns_it(prefix: str) -> None:
    """POST with the pydantic body creates the record; GET returns its JSON form."""
    team = SchTeam.create(name="core")
    with TestClient(make_app()) as client:
        created = client.post(f"{prefix}/tasks", json={"title": "Write docs", "team": str(team.pk),
                                                       "due": "2030-01-02T03:04:05+01:00", "labels": ["docs"]})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        stored = SchTask.objects.get(id=task_id)
        assert (stored.title, stored.team, stored.labels) == ("Write docs", team, ["docs"])
        assert stored.due == dt.datetime(2030, 1, 2, 2, 4, 5, tzinfo=dt.timezone.utc)
        got = client.get(f"{prefix}/tasks/{task_id}")
        direct = client.get(f"/tasks/{task_id}/record")
    assert got.status_code == direct.status_code == 200
    assert got.json() == created.json() == direct.json() == schema.json_form(stored)
    validator(SchTask).validate(got.json())


@pytest.mark.parametrize(("body", "field"), [
    ({"title": "t"}, "team"),
    ({"title": 3, "team": str(uuid.uuid4())}, "title"),
    ({"title": "t", "team": "nope"}, "team"),
    ({"title": "t", "team": str(uuid.uuid4()), "due": "soon"}, "due"),
    ({"title": "t", "team": str(uuid.uuid4()), "labels": None}, "labels"),
    ({"title": "t", "team": str(uuid.uuid4()), "colour": "red"}, "colour"),
])
def test_fastapi_invalid_bodies_get_422_naming_the_field(body: dict[str, Any], field: str) -> None:
    """A body that does not fit the schema gets 422, naming the field; nothing is stored."""
    with TestClient(make_app()) as client:
        response = client.post("/tasks", json=body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert SchTask.objects.count() == 0


def test_fastapi_missing_target_gets_422_and_unknown_id_404() -> None:
    """A body naming a team that does not exist gets 422 naming the field; an unknown task id 404."""
    with TestClient(make_app()) as client:
        response = client.post("/tasks", json={"title": "t", "team": str(uuid.uuid4())})
        assert response.status_code == 422 and response.json()["field"] == "team"
        assert client.get(f"/tasks/{uuid.uuid4()}").status_code == 404


def test_fastapi_publishes_our_schema() -> None:
    """The app's OpenAPI document describes the body with json_schema()'s properties."""
    published = make_app().openapi()["components"]["schemas"]["SchTask"]
    ours = {name: {k: v for k, v in prop.items() if k != "default" or v is not None}  # (FastAPI leaves out null ones)
            for name, prop in SchTask.json_schema()["properties"].items()}
    assert {name: {k: v for k, v in prop.items() if k != "title"}
            for name, prop in published["properties"].items()} == ours
    assert published["required"] == ["title", "team"]
