"""What each admin page shows, as plain rows for the templates: fields, relations, history, changes.

Values are shown in repocket's JSON form (:func:`repocket.schema.json_form`),
so a ``secret=True`` value is never more than ``"***"``, and long values
are cut for a table cell.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from repocket import attributes, registry, schema
from repocket.model import ActiveRecord
from repocket.schema import MASK

if TYPE_CHECKING:
    from repocket.changes import Change

__all__ = ["Cell", "LinkTo", "cells", "change_rows", "describe", "history_rows", "relation_rows", "short"]

#: ``(model, id) -> the URL of its admin page``, or None when the admin does not serve that model.
LinkTo = Callable[[type[ActiveRecord], Any], "str | None"]

#: The longest text a table cell shows before cutting it.
CELL_TEXT = 80


def _when(at: datetime.datetime) -> str:
    """A time as the pages show it: UTC, to the second, without the offset (the column says UTC)."""
    return at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def short(text: str, most: int = CELL_TEXT) -> str:
    """``text`` cut to ``most`` characters, with an ellipsis when cut."""
    return text if len(text) <= most else text[: most - 1] + "…"


@dataclass
class Cell:
    """One attribute's value on a page: its text, and the records it links to (a Pointer's target)."""

    name: str
    kind: str
    flags: list[str]
    text: str
    links: list[tuple[str, str | None]] = field(default_factory=list)  # (label, URL or None: missing/not served)
    secret: bool = False
    stream: bool = False


def describe(attr: attributes.Attribute[Any]) -> list[str]:
    """The options that matter to a reader of a record: index, unique, null, secret, on_delete."""
    flags = [name for name in ("index", "unique", "null", "secret") if getattr(attr, name, False)]
    on_delete = getattr(attr, "on_delete", None)
    if on_delete and on_delete != attributes.DO_NOTHING:
        flags.append(f"on_delete={on_delete}")
    return flags


def _target_links(attr: attributes.Attribute[Any], value: Any, link_to: LinkTo) -> list[tuple[str, str | None]]:
    target: type[ActiveRecord] = attr.to_model  # type: ignore[attr-defined]
    items = value if isinstance(value, list) else [value]
    links: list[tuple[str, str | None]] = []
    for item in items:
        if item is None:
            continue
        missing = type(item) is attributes.BrokenReference
        pk = item._pk() if isinstance(item, (ActiveRecord, attributes.BrokenReference)) else item
        label = f"{target._meta.name} {pk}" + (" (missing)" if missing else "")
        links.append((label, None if missing else link_to(target, pk)))
    return links


def cells(record: ActiveRecord, link_to: LinkTo, *, with_streams: bool = True, cut: bool = True) -> list[Cell]:
    """The record's attributes, in declaration order (its ByteStreams as empty cells the page fills in)."""
    meta = record._meta
    form = schema.json_form(record)
    out = []
    for name, attr in meta.fields.items():
        stream = name in meta.streams
        if stream and not with_streams:
            continue
        cell = Cell(name, type(attr).__name__, describe(attr), "", secret=attr.secret, stream=stream)
        if stream:
            cell.text = MASK if attr.secret else ""
        elif attr.secret:
            cell.text = MASK  # (even for None: whether a secret is set is not shown either)
        elif isinstance(attr, attributes.Reference):
            cell.links = _target_links(attr, record._data.get(name), link_to)
            cell.text = "" if cell.links else ("[]" if isinstance(attr, attributes.PointerList) else "None")
        else:
            value = form[name]
            text = "None" if value is None else value if isinstance(value, str) else schema_text(value)
            if isinstance(attr, attributes.Bytes) and value is not None:
                text = _bytes_text(attr, record._data[name]) or f"{text} (base64)"
            cell.text = short(text) if cut else text
        out.append(cell)
    return out


def _bytes_text(attr: attributes.Bytes[Any], value: bytes) -> str | None:
    """Bytes as people read them: their text when they decode under the attribute's encoding, else None."""
    try:
        return value.decode(attr.encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def schema_text(value: Any) -> str:
    """A JSON form value that is not text, as JSON."""
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Relation:
    """A reverse accessor of a record: who points at it, how many, the first few, and the full list's URL."""

    name: str
    model: str
    field: str
    count: int
    first: list[tuple[str, str | None]]
    url: str | None


async def relation_rows(record: ActiveRecord, link_to: LinkTo, list_url: Callable[[type[ActiveRecord]], str | None],
                        most: int = 10) -> list[Relation]:
    """Every reverse accessor of ``record`` (``related_name``, docs/relationships.rst): its count and first records."""
    rows = []
    for name, relation in registry.relations(type(record)).items():
        query = getattr(record, name)
        count = await query.acount()
        first = [(f"{relation.model._meta.name} {found.pk}", link_to(relation.model, found.pk))
                 async for found in query[:most]]
        base = list_url(relation.model)
        rows.append(Relation(name, relation.model._meta.name, relation.field, count, first,
                             f"{base}?{relation.field}={record.pk}" if base else None))
    return rows


@dataclass
class Version:
    """One kept version of a record (``Meta.history``): its revision, op, time, actor and what it changed."""

    revision: int
    op: str
    at: str
    actor: str
    changed: list[tuple[str, str]]


async def history_rows(record: ActiveRecord) -> list[Version]:
    """The versions ``Meta.history`` keeps of ``record``, newest first, each with the values it changed."""
    versions = await record.ahistory()
    forms = [schema.json_form(version) for version in versions]
    streams = set(record._meta.streams)
    rows = []
    for number, (version, form) in enumerate(zip(versions, forms)):
        older = forms[number + 1] if number + 1 < len(forms) else {}
        changed = [(name, short(value if isinstance(value, str) else schema_text(value), 60))
                   for name, value in form.items() if name not in streams and older.get(name) != value]
        info = version.version_info
        if info is not None:
            rows.append(Version(info.revision, info.op, _when(info.at), info.actor, changed))
    return rows


@dataclass
class ChangeRow:
    """One entry of a model's change stream, as a table row."""

    at: str
    op: str
    revision: int
    actor: str
    record: tuple[str, str | None]
    fields: list[tuple[str, str]]


def change_rows(model: type[ActiveRecord], found: list[Change], link_to: LinkTo) -> list[ChangeRow]:
    """Change stream entries as rows; a secret field's value is shown as ``***``."""
    rows = []
    for change in found:
        fields = []
        for name, value in change.values().items():
            attr = model._meta.fields.get(name)
            text = MASK if attr is None or attr.secret else short(
                value if isinstance(value, str) else str(value), 60)
            fields.append((name, text))
        fields += [(name, f"+{len(data)} bytes") for name, data in change.appended.items()]
        rows.append(ChangeRow(_when(change.at), change.op, change.revision, change.actor,
                              (change.id, link_to(model, change.id) if change.op != "delete" else None), fields))
    return rows
