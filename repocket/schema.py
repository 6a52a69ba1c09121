"""JSON Schema and pydantic models derived from a model's attributes (docs/schemas.rst).

A record's JSON form is :meth:`~repocket.model.ActiveRecord.to_dict` with
``simple=True``, made JSON: a Pointer is its target's id (a PointerList, a list
of ids), bytes are base64, Decimals and non-finite Floats are strings, UUIDs and
datetimes their canonical text, secrets ``"***"``. :func:`json_form` gives it,
:func:`json_schema` describes it, and :func:`pydantic_model` builds a pydantic v2
model that reads and writes it, for FastAPI request and response bodies.

pydantic is optional (the ``repocket[pydantic]`` extra): it is imported by
:func:`pydantic_model` only, never by ``import repocket``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import math
import uuid as _uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from repocket import attributes, errors
from repocket.io import clients
from repocket.plan import load
from repocket.plan.rounds import Plan

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = [
    "DECIMAL_PATTERN", "MASK", "afrom_pydantic", "from_pydantic", "json_form", "json_schema", "pydantic_model",
    "read_value", "to_pydantic",
]

#: What the JSON form shows for a ``secret=True`` value (as ``to_dict(simple=True)`` does).
MASK = "***"
#: The text ``str()`` gives for every Decimal repocket stores (sNaN is never stored).
DECIMAL_PATTERN = r"^-?(?:[0-9]+(?:\.[0-9]+)?(?:E[-+][0-9]+)?|Infinity|NaN)$"
_NON_FINITE = ["NaN", "Infinity", "-Infinity"]
_JSON_NATIVE = (str, int, float, bool, list, dict)
_pydantic_models: dict[type[Any], type[Any]] = {}
_sources: dict[type[Any], type[Any]] = {}


# -- the JSON form ------------------------------------------------------------------------


def _id_text(target: Any) -> str:
    """A Pointer target's id as text: of a record, a broken reference, or an id already."""
    return str(target if isinstance(target, _uuid.UUID) else target._pk())


def _dump(attr: attributes.Attribute[Any], value: Any) -> Any:
    """The JSON form of one (unmasked) value of ``attr``."""
    if value is None:
        return None
    if isinstance(attr, attributes.PointerList):
        return [_id_text(target) for target in value]
    if isinstance(attr, attributes.Pointer):
        return _id_text(value)
    if isinstance(attr, attributes.Bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(attr, attributes.Float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(attr, (attributes.UUID, attributes.Decimal)):
        return str(value)
    if isinstance(attr, attributes.DateTime):
        return value.isoformat()
    return value  # Unicode, Integer, JSON: JSON already


def json_form(instance: ActiveRecord, *, reveal: bool = False) -> dict[str, Any]:
    """The record's JSON form: what :func:`json_schema` describes, ready for ``json.dumps``.

    Args:
        instance: the record.
        reveal: show ``secret=True`` values instead of ``"***"``.
    """
    out: dict[str, Any] = {}
    for name, attr in instance._meta.fields.items():
        value = instance._data[name] if name in instance._data else getattr(instance, name)
        out[name] = MASK if attr.secret and not reveal and value is not None else _dump(attr, value)
    return out


def _invalid(attr: attributes.Attribute[Any], value: Any) -> errors.ValidationError:
    """The error for a body value of the wrong shape, naming the model, the field and the value."""
    expected = _expected(attr)
    shown = "'***' (secret)" if attr.secret else attributes._short_repr(value)
    label = attr.model._meta.label
    return errors.ValidationError(
        f"{label}.{attr.name}: cannot use {shown} of type {type(value).__name__}; expected {expected}",
        model=label, field=attr.name, value=value, expected=expected)


def _expected(attr: attributes.Attribute[Any]) -> str:
    if isinstance(attr, attributes.Reference):
        target = attr.to_model._meta.label
        return f"a list of distinct {target} ids" if isinstance(attr, attributes.PointerList) else f"a {target} id"
    if isinstance(attr, attributes.Bytes):
        return "base64 text"
    if isinstance(attr, attributes.Float):
        return "a number, 'NaN', 'Infinity' or '-Infinity'"
    if isinstance(attr, attributes.Decimal):
        return "a decimal number's text"
    return attr._expected() if attr.get_base_type() is not None else "a JSON value"


def _target_id(attr: attributes.Reference[Any], value: Any) -> _uuid.UUID:
    """A target's id, from its text, a UUID, a record or a broken reference; TypeError or ValueError else."""
    if isinstance(value, str):
        return _uuid.UUID(value)
    if isinstance(value, _uuid.UUID):
        return value
    if isinstance(value, attr.to_model) or type(value) is attributes.BrokenReference:
        return value._pk()  # type: ignore[no-any-return]
    raise TypeError(f"not an id of {attr.to_model._meta.label}")


def _ids(attr: attributes.Reference[Any], value: Any) -> Any:
    """A Pointer's target id, or a PointerList's list of distinct ids."""
    if not isinstance(attr, attributes.PointerList):
        return _target_id(attr, value)
    if not isinstance(value, (list, tuple)):
        raise TypeError("not a list")
    ids = [_target_id(attr, item) for item in value]
    if len(set(ids)) != len(ids):
        raise ValueError("the same id twice")
    return ids


def _from_json(attr: attributes.Attribute[Any], value: Any) -> Any:
    """A JSON value (not None) as ``attr.cast`` takes it: the inverse of :func:`_dump`.

    Raises TypeError or ValueError when its JSON type is not the schema's.
    """
    if isinstance(attr, attributes.JSON):
        return value
    if isinstance(attr, attributes.Float):
        return attr._decode(value, {})  # a number, or one of the three strings
    if isinstance(attr, attributes.Integer) or isinstance(attr, attributes.Decimal) and not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("not a number")
        return value
    if not isinstance(value, str):
        raise TypeError("not a string")
    if isinstance(attr, attributes.Bytes):
        return base64.b64decode(value, validate=True)
    if isinstance(attr, attributes.DateTime):
        with contextlib.suppress(ValueError):
            return attr._decode(value, {})  # exactly what isoformat() wrote, sub-minute offsets included
    return value  # other ISO 8601 text ("Z"), UUIDs in any form uuid.UUID() takes, Unicode


def read_value(attr: attributes.Attribute[Any], value: Any) -> Any:
    """A body value as ``attr`` holds it: JSON values in the JSON form, Python objects as an assignment casts them.

    A Pointer holds its target's id. Raises repocket.errors.ValidationError.
    """
    if value is None:
        if _holds_none(attr):
            return None
        raise _invalid(attr, value)
    try:
        if isinstance(attr, attributes.Reference):
            return _ids(attr, value)
        if isinstance(value, _JSON_NATIVE):
            value = _from_json(attr, value)
    except (TypeError, ValueError):
        raise _invalid(attr, value) from None
    return attr.cast(value)


# -- JSON Schema -----------------------------------------------------------------------------


def _holds_none(attr: attributes.Attribute[Any]) -> bool:
    """Whether the JSON form can be null: ``null=True`` (a ByteStream or PointerList never holds None), or
    the primary key or an ``auto_now`` DateTime (None until the first save)."""
    if isinstance(attr, attributes.AutoUUID) or getattr(attr, "auto_now", False):
        return True
    return attr.null and not isinstance(attr, (attributes.ByteStream, attributes.PointerList))


def _automatic(model: type[ActiveRecord], name: str) -> bool:
    """Whether repocket fills the attribute in on save (the primary key, ``auto_now``)."""
    return name == model._meta.pk or name in model._meta.auto_now


def _is_required(model: type[ActiveRecord], name: str, attr: attributes.Attribute[Any]) -> bool:
    """Whether a new record must be given the attribute: not null, no default, not filled in by repocket
    (a PointerList or a ByteStream starts empty)."""
    return (not attr.null and attr.default is None and not _automatic(model, name)
            and not isinstance(attr, (attributes.PointerList, attributes.ByteStream)))


def _required(model: type[ActiveRecord]) -> list[str]:
    return [name for name, attr in model._meta.fields.items() if _is_required(model, name, attr)]


def _type_schema(attr: attributes.Attribute[Any]) -> dict[str, Any]:
    if isinstance(attr, attributes.Reference):
        target = attr.to_model._meta
        item = {"type": "string", "format": "uuid"}
        if isinstance(attr, attributes.PointerList):
            return {"type": "array", "items": item, "uniqueItems": True,
                    "description": f"ids of {target.label} records"}
        return {**item, "description": f"the id of a {target.label} record"}
    if isinstance(attr, attributes.Bytes):
        return {"type": "string", "contentEncoding": "base64"}
    if isinstance(attr, attributes.JSON):
        return {}
    if isinstance(attr, attributes.Float):
        return {"anyOf": [{"type": "number"}, {"enum": _NON_FINITE}]}
    if isinstance(attr, attributes.Decimal):
        return {"type": "string", "pattern": DECIMAL_PATTERN}
    if isinstance(attr, attributes.UUID):
        return {"type": "string", "format": "uuid"}
    if isinstance(attr, attributes.DateTime):
        return {"type": "string", "format": "date-time"}
    if isinstance(attr, attributes.Integer):
        return {"type": "integer"}
    if isinstance(attr, attributes.Unicode):
        return {"type": "string"}
    raise TypeError(f"{attr.model._meta.label}.{attr.name}: {type(attr).__name__} attributes have no JSON Schema")


def _property(model: type[ActiveRecord], name: str, attr: attributes.Attribute[Any]) -> dict[str, Any]:
    """The JSON Schema of one attribute's JSON form."""
    schema = _type_schema(attr)
    if _holds_none(attr):
        if "type" in schema:
            schema = {**schema, "type": [schema["type"], "null"]}
        elif schema:
            schema = {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}
    elif isinstance(attr, attributes.JSON):
        schema = {"not": {"type": "null"}}
    if attr.secret:
        schema = {"anyOf": [schema, {"const": MASK}], "description": f"secret: {MASK!r} unless revealed"}
    if name == model._meta.pk:
        schema["description"] = "the primary key, assigned on first save"
    elif name in model._meta.auto_now:
        schema["description"] = "set to the current time on every save"
    if not _is_required(model, name, attr) and not callable(attr.default):
        schema["default"] = _dump(attr, attr.get_default())
    return schema


def json_schema(model: type[ActiveRecord]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the model's records in their JSON form (:func:`json_form`).

    Every attribute is a property; ``required`` lists those a new record must
    be given (not ``null=True``, no ``default``, not filled in on save).

    Raises:
        TypeError: an attribute's type has no JSON form (a custom Attribute subclass).
    """
    meta = model._meta
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": model.__name__,
        "description": f"A {meta.label} record",
        "type": "object",
        "properties": {name: _property(model, name, attr) for name, attr in meta.fields.items()},
        "required": _required(model),
        "additionalProperties": False,
    }


# -- pydantic --------------------------------------------------------------------------------


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError:
        raise ImportError("repocket.schema.pydantic_model() needs pydantic 2: pip install 'repocket[pydantic]'") \
            from None
    if not pydantic.VERSION.startswith("2."):
        raise ImportError(f"repocket.schema.pydantic_model() needs pydantic 2, not {pydantic.VERSION}: "
                          "pip install 'repocket[pydantic]'")
    return pydantic


def _python_type(attr: attributes.Attribute[Any]) -> Any:
    if isinstance(attr, attributes.PointerList):
        return list[_uuid.UUID]
    if isinstance(attr, attributes.Pointer):
        base: Any = _uuid.UUID
    elif isinstance(attr, attributes.JSON):
        base = Any
    else:
        base = attr.get_base_type()
    return base | None if _holds_none(attr) else base


def _serializer(attr: attributes.Attribute[Any]) -> Callable[[Any, Any], Any]:
    """The field's serializer: the JSON form in JSON mode, the value itself in Python; secrets masked in both."""

    def serialize(value: Any, info: Any) -> Any:
        if attr.secret and value is not None:
            return MASK
        return _dump(attr, value) if info.mode == "json" else value

    return serialize


def pydantic_model(model: type[ActiveRecord]) -> type[Any]:
    """A pydantic v2 model with the model's attributes, for FastAPI bodies (one class per model, cached).

    It reads and writes the JSON form (:func:`json_form`), and its JSON Schema is
    :func:`json_schema`'s. In Python it also takes what an assignment takes
    (``bytes``, ``datetime``, a target record for a Pointer). A Pointer holds
    the target's id (``uuid.UUID``). Secret values are shown as ``"***"``.

    Raises:
        ImportError: pydantic 2 is not installed (the ``repocket[pydantic]`` extra).
    """
    cached = _pydantic_models.get(model)
    if cached is not None:
        return cached
    pydantic = _pydantic()
    required = _required(model)
    definitions: dict[str, Any] = {}
    for name, attr in model._meta.fields.items():
        annotation = Annotated[  # type: ignore[valid-type]
            _python_type(attr),
            pydantic.PlainValidator(functools.partial(read_value, attr)),
            pydantic.PlainSerializer(_serializer(attr)),
            pydantic.WithJsonSchema(_property(model, name, attr)),
        ]
        if name in required:
            definitions[name] = (annotation, ...)
        elif callable(attr.default):
            definitions[name] = (annotation, pydantic.Field(default_factory=attr.get_default))
        else:
            definitions[name] = (annotation, attr.get_default())
    config = pydantic.ConfigDict(extra="forbid", title=model.__name__,
                                 json_schema_extra={"description": f"A {model._meta.label} record"})
    created: type[Any] = pydantic.create_model(model.__name__, __config__=config, __module__=model.__module__,
                                               **definitions)
    _sources[created] = model
    return _pydantic_models.setdefault(model, created)


def to_pydantic(instance: ActiveRecord) -> Any:
    """The record as an instance of its :func:`pydantic_model` (secrets included, shown as ``"***"``)."""
    body = pydantic_model(type(instance))
    values = {name: instance._data[name] if name in instance._data else getattr(instance, name)
              for name in instance._meta.fields}
    return body.model_validate(values)


def _model_of(obj: Any) -> type[ActiveRecord]:
    for cls in type(obj).__mro__:
        if cls in _sources:
            return _sources[cls]
    raise TypeError(f"{type(obj).__name__} is not a model made by repocket.schema.pydantic_model()")


def _references(model: type[ActiveRecord], values: dict[str, Any]) -> list[tuple[str, ModelOptions, list[Any]]]:
    """Each Pointer and PointerList of a body: its name, its target model and the ids it holds (None: no target)."""
    out = []
    for name in (*model._meta.pointers, *model._meta.pointer_lists):
        attr: Any = model._meta.fields[name]
        ids = values[name] if isinstance(attr, attributes.PointerList) else [values[name]]
        out.append((name, attr.to_model._meta, ids))
    return out


def _wanted(model: type[ActiveRecord], values: dict[str, Any]) -> dict[ModelOptions, list[str]]:
    """The keys of the records a body names, by target model, each once."""
    by_model: dict[ModelOptions, list[str]] = {}
    for _, meta, ids in _references(model, values):
        by_model.setdefault(meta, []).extend(meta.key(pk) for pk in ids if pk is not None)
    return {meta: list(dict.fromkeys(keys)) for meta, keys in by_model.items() if keys}


def _load_targets(wanted: dict[ModelOptions, list[str]]) -> Plan[dict[str, Any]]:
    """The records by key: one round trip per target model (and per level of their own Pointers)."""
    identity: dict[str, Any] = {}
    for meta, record_keys in wanted.items():
        yield from load.load(meta, record_keys, identity)  # (it puts each record it finds in identity)
    return identity


def _assemble(model: type[ActiveRecord], values: dict[str, Any], targets: dict[str, Any]) -> ActiveRecord:
    """A new instance from a body's values, its ids replaced by their targets."""
    label = model._meta.label
    for name, meta, ids in _references(model, values):
        found: list[Any] = []
        for pk in ids:
            target = None if pk is None else targets.get(meta.key(pk))
            if target is None and pk is not None:
                raise errors.ValidationError(
                    f"{label}.{name}: no {meta.label} has the id {str(pk)!r}",
                    model=label, field=name, value=pk, expected=f"the id of a stored {meta.label}")
            found.append(target)
        values[name] = found if isinstance(model._meta.fields[name], attributes.PointerList) else found[0]
    return model(**values)


def _values(obj: Any) -> tuple[type[ActiveRecord], dict[str, Any]]:
    model = _model_of(obj)
    return model, {name: getattr(obj, name) for name in model._meta.fields}


def from_pydantic(obj: Any, *, connection: redis.Redis | None = None) -> Any:
    """A new, unsaved instance of the repocket model with the values of ``obj`` (a :func:`pydantic_model` instance).

    Pointer targets are loaded by id, in one round trip per target model; none
    is read when the model has no Pointers.

    Raises:
        repocket.errors.ValidationError: a Pointer names a record that does not exist.
        TypeError: ``obj`` was not made by a :func:`pydantic_model` class.
    """
    model, values = _values(obj)
    wanted = _wanted(model, values)
    return _assemble(model, values, clients.run(_load_targets(wanted), connection) if wanted else {})


async def afrom_pydantic(obj: Any, *, connection: aioredis.Redis | None = None) -> Any:
    """The async twin of :func:`from_pydantic`."""
    model, values = _values(obj)
    wanted = _wanted(model, values)
    return _assemble(model, values, await clients.run_async(_load_targets(wanted), connection) if wanted else {})

