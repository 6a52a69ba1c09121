"""HTML forms in and out: a record's attributes as form inputs, and submitted text as attribute values.

A form gives text; each attribute's text becomes its JSON form value
(``"42"`` an Integer 42, a JSON textarea parsed, a PointerList one id a
line) and is then read exactly as the REST routes read a body
(:func:`repocket.web.bodies.request_values`, which casts with the
attribute's own ``cast``). So a refused value raises repocket's
ValidationError naming the model and the field, and the form shows it there.
A secret input is always rendered empty: left empty, the value is kept.
Text with line ends is a textarea, whose CRLF line ends (as browsers send
them) are read as LF.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from repocket import attributes, errors, schema
from repocket.model import ActiveRecord
from repocket.web.bodies import request_values

__all__ = ["FormField", "editable", "form_fields", "form_values"]


@dataclass
class FormField:
    """One input of a record's form: what the template needs to render it."""

    name: str
    kind: str  # the attribute type's name: Unicode, Integer, JSON, ...
    widget: str  # text, number, textarea, password
    text: str
    required: bool
    help: str
    error: str | None = None


def editable(model: type[ActiveRecord]) -> list[str]:
    """The attributes a form sets: all but the primary key, ``auto_now`` DateTimes and ByteStreams."""
    meta = model._meta
    return [name for name in meta.fields if name != meta.pk and name not in meta.auto_now
            and name not in meta.streams]


def _widget(attr: attributes.Attribute[Any]) -> str:
    if attr.secret:
        return "password"
    if isinstance(attr, (attributes.JSON, attributes.PointerList, attributes.Bytes)):
        return "textarea"
    return "number" if isinstance(attr, attributes.Integer) else "text"


def _help(attr: attributes.Attribute[Any]) -> str:
    if attr.secret:
        return "secret: never shown; leave empty to keep the stored value"
    if isinstance(attr, attributes.PointerList):
        return f"ids of {attr.to_model._meta.name} records, one a line"
    if isinstance(attr, attributes.Pointer):
        return f"the id of a {attr.to_model._meta.name}" + (" (empty: none)" if attr.null else "")
    hints = {attributes.JSON: "a JSON document", attributes.Bytes: "base64 text",
             attributes.DateTime: "ISO 8601, e.g. 2026-01-31T12:00:00+00:00", attributes.Decimal: "a decimal number"}
    hint = next((text for cls, text in hints.items() if isinstance(attr, cls)), "")
    return hint + (" (empty: none)" if attr.null and hint else " (empty: none)" if attr.null else "")


def _as_text(attr: attributes.Attribute[Any], value: Any) -> str:
    """A JSON form value as the text of its input."""
    if value is None or attr.secret:
        return ""
    if isinstance(attr, attributes.PointerList):
        return "\n".join(str(item) for item in value)
    if isinstance(attr, attributes.JSON):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def form_fields(model: type[ActiveRecord], record: ActiveRecord | None, submitted: dict[str, str] | None = None,
                failure: Exception | None = None) -> list[FormField]:
    """The inputs of ``record``'s form (None: a new record), showing ``submitted`` text when given, and
    ``failure``'s message at the field it names."""
    meta = model._meta
    stored = schema.json_form(record) if record is not None else {}
    wrong = getattr(failure, "field", None)
    out = []
    for name in editable(model):
        attr = meta.fields[name]
        if submitted is not None and name in submitted and not attr.secret:
            text = submitted[name]
        elif record is not None:
            text = _as_text(attr, stored.get(name))
        else:
            text = _as_text(attr, schema.json_form(model()).get(name)) if attr.default is not None else ""
        required = record is None and not attr.null and attr.default is None and not isinstance(
            attr, attributes.PointerList)
        widget = _widget(attr)
        if widget == "text" and ("\n" in text or "\r" in text):
            widget = "textarea"  # (an <input> would drop the line ends)
        out.append(FormField(name, type(attr).__name__, widget, text, required, _help(attr),
                             str(failure) if failure is not None and wrong == name else None))
    return out


def _invalid(model: type[ActiveRecord], name: str, attr: attributes.Attribute[Any], expected: str) -> errors.ValidationError:
    label = model._meta.label
    shown = "the secret value" if attr.secret else "the text given"
    return errors.ValidationError(f"{label}.{name}: cannot use {shown}; expected {expected}",
                                  model=label, field=name, value=None, expected=expected)


def _json_value(model: type[ActiveRecord], name: str, attr: attributes.Attribute[Any], text: str) -> Any:
    """The JSON form value of an input's text (None for an empty input of a null=True attribute)."""
    if isinstance(attr, attributes.PointerList):
        return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]
    if text.strip() == "" and (attr.null or not isinstance(attr, attributes.Unicode)):
        return None  # (refused by read_value below unless the attribute holds None)
    if isinstance(attr, attributes.JSON):
        try:
            return json.loads(text)
        except ValueError:
            raise _invalid(model, name, attr, "a JSON document") from None
    if isinstance(attr, attributes.Integer):
        try:
            return int(text.strip())
        except ValueError:
            raise _invalid(model, name, attr, "a whole number") from None
    if isinstance(attr, attributes.Float):
        try:
            number = float(text.strip())
        except ValueError:
            raise _invalid(model, name, attr, "a number, NaN, Infinity or -Infinity") from None
        return number if math.isfinite(number) else text.strip()
    if isinstance(attr, attributes.Unicode):
        return text.replace("\r\n", "\n")  # (a browser sends a textarea's line ends as CRLF)
    return text.strip() if isinstance(attr, (attributes.Pointer, attributes.UUID, attributes.DateTime,
                                             attributes.Decimal, attributes.Bytes)) else text


def form_values(model: type[ActiveRecord], submitted: dict[str, str]) -> dict[str, Any]:
    """The attribute values of a submitted form (Pointers still ids: resolve them next).

    Raises:
        repocket.errors.ValidationError: a value its attribute cannot take, naming the field.
        repocket.errors.UnknownFieldError: an input that is not an editable attribute.
    """
    meta = model._meta
    body: dict[str, Any] = {}
    allowed = set(editable(model))
    for name, text in submitted.items():
        if name not in allowed:
            raise meta.unknown_field(name)
        attr = meta.fields[name]
        if attr.secret and text == "":
            continue  # (kept as stored)
        body[name] = _json_value(model, name, attr, text)
    return request_values(model, body)
