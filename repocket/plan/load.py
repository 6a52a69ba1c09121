"""Loading records: fetch hashes and ByteStreams, build instances, resolve Pointers.

Planning only (see :mod:`repocket.plan`): every function that needs Redis is a
plan that yields its rounds. :func:`fetch` reads every requested record in one
pipeline (hash and ByteStreams in one MULTI, so they are one snapshot);
:func:`load` builds instances and resolves their Pointers one level per round
trip, each target fetched once (no N+1). :func:`build` and the per-field
readers are the hot path of every read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from repocket import errors, keys
from repocket.attributes import Attribute, BrokenReference, _short_repr
from repocket.formats import SECRET_MASK
from repocket.plan import expiry
from repocket.plan.rounds import Command, Pipeline, Plan, command

if TYPE_CHECKING:
    from repocket.model import ActiveRecord
    from repocket.options import ModelOptions

__all__ = ["Fetched", "Pending", "SECRET_MASK", "build", "decode_field", "fetch", "fetch_moving", "load", "place", "resolve_pointers",
           "stored_value"]

#: What a ``_version`` counter holds: a plain non-negative integer (checked against int64 too).
_VERSION = re.compile(rb"(?:0|[1-9][0-9]{0,18})")
_INT64_MAX = 2**63 - 1

#: A record as read, its hash (field bytes -> value bytes) and its ByteStreams.
Fetched = tuple[dict[Any, Any], dict[str, bytes]]
#: The Pointers still to resolve, each as the instance, the attribute's name, the target's key and the
#: target's position in a PointerList (None for a Pointer).
Pending = list[tuple["ActiveRecord", str, str, "int | None"]]


def place(instance: ActiveRecord, name: str, position: int | None, value: Any) -> None:
    """Put a resolved target (or what stands for it) where its Pending entry says."""
    if position is None:
        instance._data[name] = value
    else:
        instance._data[name][position] = value


def _corrupt(key: str, field: str | None, message: str) -> errors.CorruptRecordError:
    where = f"{key} field {field!r}" if field else key
    return errors.CorruptRecordError(f"{where}: {message}", key=key, field=field)


def decode_field(meta: ModelOptions, attr: Attribute[Any], key: str, name: str, raw: bytes | str) -> Any:
    """The Python value of one stored hash field, or CorruptRecordError saying what is wrong.

    The model's storage format (:mod:`repocket.formats`) reads it. In the
    envelope format, type tags resolve through the closed table of attribute
    types and the ``module`` member must be the declared attribute's module:
    nothing is imported. The message never quotes the value of a ``secret=True`` attribute, and the
    error has no ``__context__``: an exception being handled by the caller
    (a parser's, say) may hold the stored bytes.
    """
    if isinstance(raw, str):  # a client that decodes responses
        raw = raw.encode("utf-8", "surrogatepass")
    value, problem = meta.format.decode(meta, attr, name, raw)
    if problem is not None:
        _raise_alone(_corrupt(key, name, problem))
    return value


def stored_value(meta: ModelOptions, attr: Attribute[Any], key: str, name: str, raw: bytes | str | None) -> Any:
    """:func:`decode_field` of one field read alone (HGET, HMGET); a missing field (None) reads as
    the format says: None in the plain format where null is allowed, else the default."""
    return meta.format.absent(attr) if raw is None else decode_field(meta, attr, key, name, raw)


def _raise_alone(exc: BaseException) -> NoReturn:
    """Raise ``exc`` with no ``__context__`` (``raise ... from None`` only hides it)."""
    try:
        raise exc
    except BaseException as raised:
        raised.__context__ = None
        raise


def fetch(items: Sequence[tuple[ModelOptions, str]],
          fields: frozenset[str] | None = None) -> Plan[list[Fetched | None]]:
    """Raw hashes and ByteStream strings of many records, in one round trip.

    A record with ByteStreams is read in one MULTI, so its hash and strings are
    one snapshot. Missing records come back as None. With ``fields`` (attribute
    names, the primary key among them), only those are read, with HMGET.
    """
    if not items:
        return []
    if len(items) == 1 and fields is None and not items[0][0].streams and not items[0][0].expiring:
        meta, key = items[0]  # get by id: one HGETALL
        raw = (yield Pipeline([Command(("HGETALL", key), key)], False, meta.label))[0]
        return [(raw, {}) if raw else None]
    wanted = [_wanted(meta, fields) for meta, _ in items]
    commands: list[Command] = []
    for (meta, key), (hash_fields, streams) in zip(items, wanted):
        commands.append(command("HGETALL", key) if hash_fields is None else command("HMGET", key, *hash_fields))
        commands.extend(command("GET", keys.stream_key(key, name)) for name in streams)
        if meta.expiring:  # (its TTL says whether it is past its deadline: repocket.plan.expiry)
            commands.append(expiry.ttl_command(key))
    transaction = any(streams for _, streams in wanted)
    replies = yield Pipeline(commands, transaction, items[0][0].label)
    out: list[Fetched | None] = []
    position = 0
    for (meta, _key), (hash_fields, streams) in zip(items, wanted):
        raw = replies[position]
        if hash_fields is not None:  # HMGET: the primary key is absent only when the record is
            raw = {f: v for f, v in zip(hash_fields, raw) if v is not None} if raw[0] is not None else {}
        stream_values = {name: replies[position + offset] or b""
                         for offset, name in enumerate(streams, start=1)}
        position += 1 + len(streams)
        if meta.expiring:
            if expiry.is_past(int(replies[position])):
                raw = {}  # gone at its deadline
            position += 1
        out.append((raw, stream_values) if raw else None)
    return out


def fetch_moving(items: Sequence[tuple[ModelOptions, str]], fields: frozenset[str] | None = None
                 ) -> Plan[tuple[list[Fetched | None], dict[int, str]]]:
    """:func:`fetch`, and during a move (``Meta.moving_from``) the records not at their current keys yet.

    Those are read at their keys in the source layout, and a record missing
    there too is read at its current key again (the move may have taken it
    there meanwhile: it writes the new copy before deleting the old one).
    Returns what :func:`fetch` does, and the source key each record found
    there was read at, by position.
    """
    fetched = yield from fetch(items, fields)
    missing = [i for i, found in enumerate(fetched) if found is None and items[i][0].sources()]
    if not missing:
        return fetched, {}
    strays: dict[int, str] = {}
    for i in missing:
        meta, key = items[i]
        pk = key.rpartition(":")[2]
        strays[i] = meta.source_for(pk).key(pk)  # type: ignore[union-attr]
    found = yield from fetch([(items[i][0], strays[i]) for i in missing], fields)
    again = [i for i, there in zip(missing, found) if there is None]
    for i, there in zip(missing, found):
        fetched[i] = there
    current = [(items[i][0], items[i][0].key(strays[i].rpartition(":")[2])) for i in again]
    for i, there in zip(again, (yield from fetch(current, fields)) if again else []):
        fetched[i] = there
        del strays[i]
    return fetched, strays


def _wanted(meta: ModelOptions, fields: frozenset[str] | None) -> tuple[list[bytes] | None, list[str]]:
    """The hash fields (None: all, by HGETALL) and ByteStreams to read of a record."""
    if fields is None:
        return None, meta.streams
    hash_fields = [meta.pk.encode()]
    hash_fields += [field for field, name, _, _ in meta.layout
                    if field is not None and name in fields and name != meta.pk]
    if meta.versioned:
        hash_fields.append(b"_version")
    return hash_fields, [name for name in meta.streams if name in fields]


def _read_version(key: str, raw_hash: dict[bytes, Any]) -> int:
    """The stored ``_version`` counter (0 when absent), as the write scripts accept it.

    Anything but a plain non-negative integer within int64 is CorruptRecordError:
    the scripts could not add to it (HINCRBY), so such a record is refused at get().
    """
    raw = raw_hash.get(b"_version", b"0")
    if isinstance(raw, str):  # a client that decodes responses
        raw = raw.encode("utf-8", "surrogatepass")
    if _VERSION.fullmatch(raw) and int(raw) <= _INT64_MAX:
        return int(raw)
    raise _corrupt(key, "_version", f"the version counter {_short_repr(raw)} is not a plain integer within 64 bits")


def build(meta: ModelOptions, key: str, fetched: Fetched, pending: Pending,
          fields: frozenset[str] | None = None) -> ActiveRecord:
    """An instance from its raw hash and strings; its Pointers go into ``pending``.

    With ``fields``, the other attributes are left out of the instance (deferred).
    """
    raw_hash, raw_streams = fetched
    if raw_hash and not isinstance(next(iter(raw_hash)), bytes):  # a client that decodes responses
        raw_hash = {field.encode(): value for field, value in raw_hash.items()}
    model = meta.model
    absent = meta.format.absent
    instance = model.__new__(model)
    data: dict[str, Any] = {}
    pk, key_id = meta.pk, key[key.rindex(":") + 1:]
    id_from_key = False
    for field, name, attr, read in meta.layout:
        if fields is not None and name not in fields:
            continue
        if field is None:
            data[name] = raw_streams.get(name, b"")
            continue
        raw = raw_hash.get(field)
        if raw is None:  # a None in the plain format, or an attribute added after the record was written
            data[name] = absent(attr)
        elif name == pk and keys.CANONICAL_ID.fullmatch(key_id) and raw == meta.format.encode(attr, key_id):
            # The field is exactly what repocket writes for the key's id (a UUID is encoded
            # from its text): the id is the key's, with no parse of the field and no comparison.
            data[name] = uuid.UUID(key_id)
            id_from_key = True
        else:
            try:
                data[name] = read(raw)  # what repocket writes: parse the value only
            except (TypeError, ValueError, ArithmeticError):
                data[name] = decode_field(meta, attr, key, name, raw)  # checks, and says what is wrong
    if not id_from_key and str(data[pk]) != key_id:
        try:
            meta.parse_key(key)
        except ValueError as exc:
            raise _corrupt(key, None, str(exc)) from None
        raise _corrupt(key, meta.pk, f"holds id {data[meta.pk]!s}, which is not the id in its key")
    for name in meta.pointers:
        target = data.get(name)
        if target is not None:
            pending.append((instance, name, target, None))
            data[name] = None
    for name in meta.pointer_lists:
        targets = data.get(name)
        if targets:
            pending.extend((instance, name, target, position) for position, target in enumerate(targets))
            data[name] = [None] * len(targets)
    instance._data = data
    if fields is not None:
        instance._deferred = frozenset(meta.fields).difference(fields)
    instance._version = _read_version(key, raw_hash) if meta.versioned else None
    instance._stored = raw_hash  # what save() compares with to write only changes
    instance._stored_streams = dict(raw_streams) if raw_streams else {}
    return instance


def _built(meta: ModelOptions, key: str, fetched: Fetched, pending: Pending, fields: frozenset[str] | None,
           stray: str | None) -> ActiveRecord:
    """:func:`build`, of a record read at ``stray`` in the source layout of a move if not None (see fetch_moving)."""
    if stray is None:
        return build(meta, key, fetched, pending, fields)
    instance = build(meta, stray, fetched, pending, fields)
    instance._origin = meta.source_for(instance._data[meta.pk])
    return instance


def load(
    meta: ModelOptions,
    record_keys: Sequence[str],
    identity: dict[str, ActiveRecord] | None = None,
    fields: frozenset[str] | None = None,
) -> Plan[list[ActiveRecord | None]]:
    """Instances for record keys (None where missing), Pointers resolved level by level.

    With ``fields`` (which must hold the primary key), only those attributes are
    loaded; Pointer targets are always loaded whole.
    """
    identity = {} if identity is None else identity
    pending: Pending = []
    out: list[ActiveRecord | None] = []
    fetched_all, strays = yield from fetch_moving([(meta, key) for key in record_keys], fields)
    for position, (key, fetched) in enumerate(zip(record_keys, fetched_all)):
        if fetched is None:
            out.append(None)
            continue
        instance = identity.get(key)
        if instance is None:
            instance = identity[key] = _built(meta, key, fetched, pending, fields, strays.get(position))
        out.append(instance)
    if pending:
        yield from resolve_pointers(pending, identity)
    return out


def resolve_pointers(pending: Pending, identity: dict[str, ActiveRecord]) -> Plan[None]:
    """Replace stored pointer keys (of Pointers and PointerLists) with instances: one round trip per level of depth."""
    while pending:
        wanted: dict[str, ModelOptions] = {}
        for instance, name, target_key, _ in pending:
            if target_key not in identity:
                attr = instance._meta.fields[name]
                wanted[target_key] = attr.to_model._meta  # type: ignore[attr-defined]
        items = list(wanted.items())
        next_pending: Pending = []
        fetched_all, strays = yield from fetch_moving([(m, k) for k, m in items])
        for number, ((target_key, target_meta), fetched) in enumerate(zip(items, fetched_all)):
            if fetched is not None:
                identity[target_key] = _built(target_meta, target_key, fetched, next_pending, None,
                                              strays.get(number))
        for instance, name, target_key, position in pending:
            target: Any = identity.get(target_key)
            if target is None and not instance._meta.fields[name].null:
                # Loading never fails for a missing target: the record can still be
                # listed, updated and deleted; reading the attribute raises.
                source = instance._meta.key(instance._data[instance._meta.pk])
                target = BrokenReference(target_key, source, name)
            place(instance, name, position, target)
        pending = next_pending
