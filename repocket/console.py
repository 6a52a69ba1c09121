"""What the ``repocket`` command line shows: tables, records field by field, statistics and progress bars.

Built on rich, writing plain text (no colour) when the output is not a
terminal, so that it reads the same in a log and can be compared in tests.
The commands themselves are in :mod:`repocket.cli`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from repocket import keys
from repocket.attributes import ATTRIBUTE_TYPES
from repocket.formats import SECRET_MASK
from repocket.io import clients
from repocket.plan import stats

if TYPE_CHECKING:
    import redis

    from repocket.model import ActiveRecord

__all__ = ["filters", "inspect_key", "json_line", "progress", "records_table", "stats_table"]



def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr); plain text, no colour, when it is not a terminal."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


@contextlib.contextmanager
def progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, with the count, elapsed time and ETA; yields the ``progress(done, of)``
    callback the resumable operations take."""
    out = console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=out)
    task = bar.add_task(what, total=None)

    def update(done: int, of: int) -> None:
        bar.update(task, completed=done, total=of)

    if not out.is_terminal:  # a log: the bar once, at the end (none after an error, which is one line)
        yield update
        out.print(bar.make_tasks_table(bar.tasks))
        return
    with bar:
        try:
            yield update
        except BaseException:
            bar.live.transient = True  # (the bar is not left above the error)
            raise


def filters(model: type[ActiveRecord], texts: Sequence[str]) -> dict[str, Any]:
    """``--filter field__lookup=value`` options as ``filter()`` keywords, each value cast by its attribute
    (``__in`` takes a comma-separated list, ``__isnull`` true or false)."""
    out: dict[str, Any] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        if not sep or not name:
            raise ValueError(f"a filter is field=value or field__lookup=value, not {text!r}")
        field, _, lookup = name.partition("__")
        field = model._meta.pk if field == "pk" else field
        if field not in model._meta.fields:
            raise model._meta.unknown_field(field)
        attr = model._meta.fields[field]
        if lookup == "isnull":
            out[name] = raw.lower() in ("1", "true", "yes")
        elif lookup == "in":
            out[name] = [_cast(attr, part) for part in raw.split(",") if part]
        else:
            out[name] = _cast(attr, raw)
    return out


def _cast(attr: Any, raw: str) -> Any:
    """A command-line value as the attribute takes it (text, else its JSON reading)."""
    for candidate in (raw, _json(raw)):
        try:
            return attr.cast(candidate)
        except Exception:  # noqa: BLE001,S112 - try the next reading; the query names a value that fits none
            continue
    return raw


def _json(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def json_line(record: ActiveRecord) -> str:
    """A record as one line of JSON (``to_dict(simple=True)``; bytes as text, secrets masked)."""
    return orjson.dumps(record.to_dict(simple=True), default=_plain).decode()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _shown(attr: Any, value: Any) -> str:
    if getattr(attr, "secret", False):
        return SECRET_MASK
    if value is None:
        return "-"
    if hasattr(value, "_key"):
        return str(value._key())
    if isinstance(value, list):
        return ", ".join(_shown(attr, item) for item in value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def records_table(model: type[ActiveRecord], records: Sequence[ActiveRecord]) -> Table:
    """The records as a table, one column per attribute (ByteStreams by length, secrets masked)."""
    table = Table(title=f"{model._meta.label}", title_justify="left")
    for name in model._meta.fields:
        table.add_column(name, overflow="fold")
    for record in records:
        table.add_row(*(_shown(attr, record._data.get(name)) for name, attr in model._meta.fields.items()))
    return table


def inspect_key(client: redis.Redis, key: str, model: type[ActiveRecord] | None = None) -> Table:
    """One stored record, field by field: its type and decoded value next to the raw stored bytes.

    The envelope format names each field's type, so a record reads without its
    model; a plain-format record needs the model (``--model``) for its types.
    A ByteStream shows its length; a secret attribute (of a given model) is masked.
    """
    kind = _str(client.type(key))
    if kind != "hash":
        raise ValueError(f"{key} is {'missing' if kind == 'none' else 'a ' + kind}, not a record hash")
    raw: dict[Any, Any] = client.hgetall(key)  # type: ignore[assignment]
    table = Table(title=key, title_justify="left")
    for column in ("field", "type", "value", "stored"):
        table.add_column(column, overflow="fold")
    declared = model._meta.fields if model is not None else {}
    for name in sorted(raw, key=_str):
        field, stored = _str(name), _str(raw[name])
        attr = declared.get(field)
        kind_name, value = _decoded(attr, stored)
        if attr is None and field not in declared and model is not None and not field.startswith("_"):
            kind_name = "(undeclared)"
        if attr is not None and getattr(attr, "secret", False):
            value = stored = SECRET_MASK
        table.add_row(field, kind_name, value, stored)
    for name in (model._meta.streams if model is not None else ()):
        length = client.strlen(keys.stream_key(key, name))
        table.add_row(name, "ByteStream", f"<{length} bytes>", f"{keys.stream_key(key, name)}")
    return table


def _decoded(attr: Any, stored: str) -> tuple[str, str]:
    """The type name and value shown for one stored field."""
    try:
        envelope = orjson.loads(stored)
    except orjson.JSONDecodeError:
        envelope = None
    if isinstance(envelope, dict) and set(envelope) == {"type", "value", "module"} and \
            envelope["type"] in ATTRIBUTE_TYPES:
        return envelope["type"], _text(envelope["value"])
    if attr is not None:
        return type(attr).__name__, stored
    return "?", stored


def _str(raw: Any) -> str:
    """A reply as text (a client may decode responses itself)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def stats_table(client: redis.Redis, models: Sequence[type[ActiveRecord]]) -> Table:
    """Per model: records, bytes per record (MEMORY USAGE of a sample), index keys and their entries."""
    table = Table(title="repocket models", title_justify="left")
    for column in ("model", "records", "bytes/record", "index keys", "index entries", "keys"):
        table.add_column(column, justify="left" if column == "model" else "right",
                         overflow="fold" if column == "model" else "ellipsis")
    for model in models:
        meta = model._meta
        records = model.objects.using(client).count()
        mean = clients.run(stats.bytes_per_record(meta), client)
        bookkeeping, entries, total = 0, 0, 0
        for view in meta.views():
            for key in client.scan_iter(match=keys.escape_glob(view.prefix + ":") + "*", count=1000):
                total += 1
                tail = _str(key)[len(view.prefix) + 1:]
                if tail.startswith(("_eq:", "_null:", "_sort:", "_lex:", "_unique:")):
                    bookkeeping += 1
                    kind = _str(client.type(key))
                    entries += {"set": client.scard, "zset": client.zcard, "hash": client.hlen}[kind](key) \
                        if kind in ("set", "zset", "hash") else 0
        per_record = f"{mean:,.0f}" if mean is not None else "-"
        table.add_row(meta.label, f"{records:,}", per_record, f"{bookkeeping:,}", f"{entries:,}", f"{total:,}")
    return table
