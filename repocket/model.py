"""``ActiveRecord``, the base class of every model, and the metaclass that builds models.

::

    class User(ActiveRecord):
        name = attributes.Unicode()
        email = attributes.Bytes()
        metadata = attributes.JSON()

    harry = User.create(name="Harry Potter", email=b"harry@hogwarts.uk")
    User.objects.get(id=harry.id)

The metaclass collects the declared attributes (inherited ones first, then the
class's own, in declaration order), checks the declaration, adds ``id =
AutoUUID()`` when there is no primary key, and keeps everything on ``_meta``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from repocket import errors, keys, registry
from repocket.attributes import (
    Attribute,
    AutoUUID,
    BrokenReference,
    ByteStream,
    Pointer,
    PointerList,
    _short_repr,
)
from repocket.io import clients
from repocket.manager import ManagerDescriptor
from repocket.options import ModelOptions  # where it lived before; plan/ imports it from options
from repocket.plan import changes, expiry, hooks, lists, load, select, write
from repocket.plan.rounds import Plan

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from typing_extensions import Self

__all__ = ["ActiveRecord", "ModelOptions", "fields"]


def fields(model: type[ActiveRecord] | ActiveRecord) -> dict[str, Attribute[Any]]:
    """The attributes of a model (or of an instance's model), in declaration order."""
    return dict(model._meta.fields)


_RESERVED = {"pk", "objects", "DoesNotExist", "MultipleObjectsReturned", "Meta"}


class ActiveRecordMeta(type):
    """Builds models: collects attributes, checks them, registers the model, adds ``objects``."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> Any:
        if not any(isinstance(base, ActiveRecordMeta) for base in bases):
            return super().__new__(mcs, name, bases, namespace, **kwargs)  # ActiveRecord itself

        label = f"{namespace.get('__module__', '?')}.{namespace.get('__qualname__', name)}"
        collected: dict[str, Attribute[Any]] = {}
        for base in reversed(bases):
            for field, attr in getattr(getattr(base, "_meta", None), "fields", {}).items():
                collected[field] = copy.copy(attr)
        own = sorted(
            ((field, attr) for field, attr in namespace.items() if isinstance(attr, Attribute)),
            key=lambda item: item[1]._order,
        )
        for field, attr in own:
            _check_name(label, field)
            collected.pop(field, None)
            collected[field] = attr

        primary = [field for field, attr in collected.items() if isinstance(attr, AutoUUID)]
        if len(primary) > 1:
            raise errors.RepocketActiveRecordDefinitionError(
                f"{label} declares {len(primary)} AutoUUID attributes ({', '.join(primary)}); "
                "a model has exactly one primary key"
            )
        if not primary:
            if "id" in collected:
                raise errors.RepocketActiveRecordDefinitionError(
                    f"{label}.id is a {type(collected['id']).__name__}, but a model without an "
                    "AutoUUID uses 'id' as its primary key; declare id = attributes.AutoUUID()"
                )
            pk_attr: Attribute[Any] = AutoUUID()
            collected = {"id": pk_attr, **collected}
        for field, attr in collected.items():
            _check_attribute(label, field, attr)
            namespace[field] = attr

        options = _read_options(label, namespace)
        for field in [f for f, a in collected.items() if isinstance(a, ByteStream)]:
            namespace[f"append_{field}"], namespace[f"aappend_{field}"] = _make_appenders(field)
        for field in [f for f, a in collected.items() if isinstance(a, PointerList)]:
            for add in (True, False):
                for method in _make_list_editors(field, add):
                    namespace[method.__name__] = method

        cls: Any = super().__new__(mcs, name, bases, namespace, **kwargs)
        for field, attr in collected.items():
            attr.__set_name__(cls, field)
            attr.model = cls
        cls._meta = ModelOptions(cls, collected, options)
        cls.DoesNotExist = type(
            "DoesNotExist", (_inherited_error(bases, "DoesNotExist", errors.DoesNotExist),),
            {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.DoesNotExist"},
        )
        cls.MultipleObjectsReturned = type(
            "MultipleObjectsReturned",
            (_inherited_error(bases, "MultipleObjectsReturned", errors.MultipleObjectsReturned),),
            {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.MultipleObjectsReturned"},
        )
        registry.register(cls)
        return cls


def _inherited_error(bases: tuple[type, ...], name: str, default: type[Exception]) -> type[Exception]:
    for base in bases:
        if isinstance(base, ActiveRecordMeta) and hasattr(base, "_meta"):
            return getattr(base, name)  # type: ignore[no-any-return]
    return default


def _check_name(label: str, field: str) -> None:
    if field.startswith(("_", "append_", "aappend_")) or field in _RESERVED or hasattr(ActiveRecord, field):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.{field}: the name is reserved by repocket (it starts with '_' or "
            "'append_' or 'aappend_', or is a method of ActiveRecord); choose another"
        )


def _check_attribute(label: str, field: str, attr: Attribute[Any]) -> None:
    if attr.index and not attr.indexable:
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.{field}: {type(attr).__name__} attributes cannot be indexed or unique"
        )
    if isinstance(attr, AutoUUID) and (attr.null or attr.default is not None):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.{field}: the primary key cannot be null or have a default"
        )


#: The most partitions a model may spread over: a cluster has 16384 slots, and each partition is one.
MAX_PARTITIONS = 16384
#: The longest ``Meta.ttl`` or ``expire()`` (seconds): ten years.
MAX_TTL = 10 * 365 * 24 * 3600


def _check_changes_options(label: str, options: dict[str, Any]) -> None:
    """``Meta.changes`` is True, ``{"maxlen": n}`` or ``{"max_age": seconds}``; ``Meta.history`` a count."""
    declared = options.get("changes")
    if declared not in (None, False, True):
        number: Any = None
        if isinstance(declared, dict) and len(declared) == 1 and set(declared) <= {"maxlen", "max_age"}:
            number = next(iter(declared.values()))
        if type(number) not in (int, float) or not 0.001 <= number <= MAX_TTL or (
                "maxlen" in declared and (type(number) is not int or number < 1)):
            raise errors.RepocketActiveRecordDefinitionError(
                f"{label}.Meta: changes must be True, {{'maxlen': <entries>}} or {{'max_age': <seconds>}}, "
                f"not {declared!r}")
    history = options.get("history")
    if history is not None and (type(history) is not int or not 0 <= history <= 100_000):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.Meta: history must be the number of versions to keep (0 to 100000), not {history!r}")


def _read_options(label: str, namespace: dict[str, Any]) -> dict[str, Any]:
    meta = namespace.get("Meta")
    options = {k: v for k, v in vars(meta).items() if not k.startswith("_")} if meta else {}
    if "__namespace__" in namespace:
        options.setdefault("namespace", namespace["__namespace__"])
    unknown = set(options) - {"namespace", "versioned", "format", "partitions", "moving_from", "ttl", "changes",
                              "history"}
    if unknown:
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.Meta: unknown options {sorted(unknown)}; known: changes, format, history, moving_from, "
            "namespace, partitions, ttl, versioned"
        )
    _check_changes_options(label, options)
    ttl = options.get("ttl")
    if ttl is not None and (type(ttl) not in (int, float) or not 0.001 <= ttl <= MAX_TTL):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.Meta: ttl must be a number of seconds from 0.001 to {MAX_TTL}, or None (records expire "
            f"only when expire() says), not {ttl!r}"
        )
    partitions = options.get("partitions")
    if partitions is not None and (type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.Meta: partitions must be an int from 1 to {MAX_PARTITIONS}, not {partitions!r}"
        )
    moving_from = options.get("moving_from")
    if moving_from is not None and moving_from != "standalone" and (
            type(moving_from) is not int or not 1 <= moving_from <= MAX_PARTITIONS):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}.Meta: moving_from must be 'standalone' or a partition count from 1 to {MAX_PARTITIONS}, "
            f"not {moving_from!r}"
        )
    ns = options.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not ns or any(c in ns for c in ":{}*?[]\\ \n")):
        raise errors.RepocketActiveRecordDefinitionError(
            f"{label}: namespace {ns!r} must be a non-empty string without ': {{ }} * ? [ ] \\' or spaces"
        )
    return options


def _make_appenders(field: str) -> tuple[Any, Any]:
    """``append_<field>`` and its async twin ``aappend_<field>``."""

    def append(self: ActiveRecord, data: bytes | str, *, connection: redis.Redis | None = None) -> str:
        return clients.run(self._append_plan(field, data), connection)

    async def aappend(self: ActiveRecord, data: bytes | str, *, connection: aioredis.Redis | None = None) -> str:
        return await clients.run_async(self._append_plan(field, data), connection)

    append.__name__ = f"append_{field}"
    append.__doc__ = (
        f"Append ``data`` to the ByteStream ``{field}`` in one Redis call (APPEND, no read)\n"
        "and to the value in memory. Returns the string's key."
    )
    aappend.__name__ = f"aappend_{field}"
    aappend.__doc__ = f"The async twin of ``append_{field}``."
    return append, aappend


def _make_list_editors(field: str, add: bool) -> tuple[Any, Any]:
    """``append_<field>``/``remove_<field>`` of a PointerList (``add`` says which), and its async twin."""
    verb = "append" if add else "remove"

    def edit(self: ActiveRecord, target: Any, *, connection: redis.Redis | None = None) -> bool:
        return clients.run(self._list_plan(field, target, add), connection)

    async def aedit(self: ActiveRecord, target: Any, *, connection: aioredis.Redis | None = None) -> bool:
        return await clients.run_async(self._list_plan(field, target, add), connection)

    edit.__name__, aedit.__name__ = f"{verb}_{field}", f"a{verb}_{field}"
    edit.__doc__ = (
        f"{'Append' if add else 'Remove'} a record {'to' if add else 'from'} the PointerList ``{field}`` inside "
        "Redis, in one guarded write that keeps every concurrent change of the list (and its index).\n"
        f"Returns whether the stored list changed (False: it {'held it already' if add else 'did not hold it'}); "
        "the list in memory becomes the stored one."
        + ("" if add else " A broken entry is removed by its key or id.")
    )
    aedit.__doc__ = f"The async twin of ``{verb}_{field}``."
    return edit, aedit


class ActiveRecord(metaclass=ActiveRecordMeta):
    """Base model class: subclass it and declare attributes to get a model stored in Redis.

    ::

        class User(ActiveRecord):
            id = attributes.AutoUUID()
            name = attributes.Unicode()
            github_metadata = attributes.JSON()

        user = User(name="foo", github_metadata={"yay": "this is json baby!"})
        keys = user.save()
        configure.get_connection().hgetall(keys["hash"])

    Options go in an inner ``class Meta`` (``namespace``, ``versioned``, ``format``) or, for the
    namespace, a class-level ``__namespace__``.
    """

    _meta: ClassVar[ModelOptions]
    #: ``Model.objects``, a :class:`~repocket.manager.Manager` of the model (``Manager[Model]`` to type checkers).
    objects: ClassVar[ManagerDescriptor] = ManagerDescriptor()
    DoesNotExist: ClassVar[type[errors.DoesNotExist]]
    MultipleObjectsReturned: ClassVar[type[errors.MultipleObjectsReturned]]

    _data: dict[str, Any]
    #: The hash as last read from or written to Redis (field name bytes -> value
    #: bytes), for writing only what changed; None: never saved or loaded.
    _stored: dict[bytes, bytes] | None
    #: ByteStream values as last read from or written to Redis.
    _stored_streams: dict[str, bytes]
    #: For ``Meta.versioned`` models: the version counter as loaded (None: never saved).
    _version: int | None
    #: Attributes not loaded (``only()``/``defer()``): save() never writes them.
    _deferred: frozenset[str] = frozenset()
    #: The client a record with deferred attributes was loaded with (None: the global one).
    _loaded_with: redis.Redis | None = None
    #: During a move (``Meta.moving_from``): the source partition the record was read from, not yet
    #: moved to its current key (its next write moves it first); None otherwise.
    _origin: ModelOptions | None = None
    #: The phases ("save", "delete") whose lifecycle hooks are running for this instance
    #: (see :mod:`repocket.plan.hooks`): a save from inside them runs no hooks again.
    _hooks_running: frozenset[str] = frozenset()
    #: A deadline ``expire()``/``persist()`` set before the record was saved, for its next save to write
    #: (milliseconds from then, or None: never); False: none asked for.
    _expire_next: int | None | bool = False
    #: A past version read from the history (see :attr:`version_info`): read-only.
    _snapshot: Any = None
    #: Reverse accessors loaded by ``prefetch_related()``: name -> the referring records.
    _prefetched: dict[str, list[Any]] = {}  # noqa: RUF012 - never changed in place: replaced per instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(f"{self._meta.label}() takes keyword arguments only")
        meta = self._meta
        unknown = [name for name in kwargs if name not in meta.fields]
        if unknown:
            raise meta.unknown_field(unknown[0], "attribute")
        self._data = {}
        self._stored = None
        self._stored_streams = {}
        self._version = None
        for name, attr in meta.fields.items():
            value = kwargs[name] if name in kwargs else attr.get_default()
            self._data[name] = attr.clean(value)

    # -- identity ------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """A reverse accessor (see :class:`~repocket.attributes.Pointer`'s ``related_name``): the records
        pointing at this one, as a lazy QuerySet served by the Pointer's index."""
        if name.startswith("_"):
            raise AttributeError(name)
        relation = registry.relations(type(self)).get(name)
        if relation is None:
            raise AttributeError(f"{type(self).__qualname__!r} object has no attribute {name!r}")
        if self._data.get(self._meta.pk) is None:
            raise errors.UnsavedReferenceError(
                f"{self._meta.label} has no id yet: save it before reading {name} (the records pointing at it)")
        referring = relation.model.objects.filter(**{relation.field: self})
        referring._known = {self._key(): self}  # (their Pointer to this record resolves to it, unread)
        if name in self._prefetched:  # loaded with this record: answered from memory
            referring._remember(self._prefetched[name])
        return referring

    @property
    def pk(self) -> uuid.UUID | None:
        """The primary key value, whatever the primary key attribute is called."""
        return self._data[self._meta.pk]  # type: ignore[no-any-return]

    def _pk(self) -> uuid.UUID:
        pk = self._data[self._meta.pk]
        if pk is None:
            raise errors.UnsavedReferenceError(f"{self._meta.label} has no id yet: save it first")
        return pk  # type: ignore[no-any-return]

    def _key(self) -> str:
        """The record's hash key (the instance must have an id): where it is read, during a move too."""
        return (self._origin or self._meta).key(self._pk())

    def _calculate_hash_key(self) -> str:
        """The original API's name for the record's hash key."""
        return self._key()

    def _calculate_key_for_field(self, name: str) -> str:
        """The key of the string that holds the ByteStream ``name``."""
        if name not in self._meta.streams:
            raise self._meta.unknown_field(name, "ByteStream")
        return keys.stream_key(self._key(), name)

    # -- python protocol -------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        if name not in self._meta.fields:
            raise self._meta.unknown_field(name)
        return getattr(self, name)

    def _load_deferred(self, name: str) -> Any:
        """Fetch the attributes ``only()``/``defer()`` left out (one round trip); return ``name``'s value.

        Raises:
            DoesNotExist: the record is no longer stored.
        """
        meta = self._meta
        if name not in self._deferred:
            raise AttributeError(name)
        wanted = frozenset(self._deferred) | {meta.pk}
        fresh = clients.run(load.load(meta, [self._key()], fields=wanted), self._loaded_with)[0]
        if fresh is None:
            raise self.DoesNotExist(f"{self._key()} no longer exists; its deferred attributes cannot be read")
        for field in self._deferred:
            self._data[field] = fresh._data[field]
            if field in meta.streams:
                self._stored_streams[field] = fresh._stored_streams.get(field, b"")
        if self._stored is not None:
            for field_bytes, raw in (fresh._stored or {}).items():
                self._stored.setdefault(field_bytes, raw)  # what save() compares with
        self._deferred = frozenset()
        return self._data[name]

    def __repr__(self) -> str:
        parts = []
        for name, attr in self._meta.fields.items():
            if name in self._deferred:
                parts.append(f"{name}=<deferred>")
                continue
            value = self._data[name]
            if attr.secret and value is not None:
                shown = "'***'"
            elif name == self._meta.pk:
                shown = repr(None if value is None else str(value))
            elif isinstance(value, ActiveRecord):
                shown = f"{value._meta.label}(id={str(value.pk)!r})"
            else:
                shown = _short_repr(value)
            parts.append(f"{name}={shown}")
        return f"{self._meta.label}({', '.join(parts)})"

    def _comparable(self) -> list[Any]:
        out = []
        for name in self._meta.fields:
            value = self[name]
            if isinstance(value, ActiveRecord):
                value = (type(value), value.pk)
            out.append(value)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActiveRecord):
            return NotImplemented
        return type(self) is type(other) and self._comparable() == other._comparable()

    def __hash__(self) -> int:
        if self.pk is None:
            raise TypeError(f"{self._meta.label} instances without an id are unhashable")
        return hash((type(self), self.pk))

    # -- conversions -------------------------------------------------------------

    def to_dict(self, simple: bool = False, *, reveal: bool = False) -> dict[str, Any]:
        """The record as a dict, in declaration order.

        Args:
            simple: plain Python values (Pointers as nested dicts) instead of the
                stored envelopes ``{"type": ..., "value": ..., "module": ...}``.
            reveal: with ``simple``, show ``secret=True`` values instead of ``"***"``.
        """
        out: dict[str, Any] = {}
        for name, attr in self._meta.fields.items():
            value = self._data[name] if name in self._data else getattr(self, name)
            if simple and attr.secret and not reveal and value is not None:
                out[name] = "***"
            else:
                out[name] = attr.to_python(value, simple=simple)
        return out

    def matches(self, kw: dict[str, Any]) -> bool:
        """Whether every ``field: value`` in ``kw`` equals this record's value (cast first)."""
        meta = self._meta
        for name, expected in kw.items():
            attr = meta.fields.get(name)
            if attr is None:
                raise meta.unknown_field(name)
            value = self._data[name] if name in self._data else getattr(self, name)
            if isinstance(attr, Pointer):
                if (value.pk if value is not None else None) != (
                    expected.pk if isinstance(expected, ActiveRecord) else expected
                ):
                    return False
            elif attr.comparable(value) != attr.comparable(attr.cast(expected)):
                return False
        return True

    # -- schemas ---------------------------------------------------------------

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this model's records in their JSON form (``to_dict(simple=True)`` as JSON, Pointers as ids).

        See :func:`repocket.schema.json_schema`.
        """
        from repocket import schema

        return schema.json_schema(cls)

    @classmethod
    def pydantic_model(cls) -> type[Any]:
        """A pydantic v2 model with this model's fields (the optional ``pydantic`` extra).

        See :func:`repocket.schema.pydantic_model`.
        """
        from repocket import schema

        return schema.pydantic_model(cls)

    def to_pydantic(self) -> Any:
        """This record as its :meth:`pydantic_model` instance; see :func:`repocket.schema.to_pydantic`."""
        from repocket import schema

        return schema.to_pydantic(self)

    @classmethod
    def from_pydantic(cls, obj: Any, *, connection: redis.Redis | None = None) -> Any:
        """A new, unsaved record from a :meth:`pydantic_model` instance; see :func:`repocket.schema.from_pydantic`."""
        from repocket import schema

        return schema.from_pydantic(obj, connection=connection)

    @classmethod
    async def afrom_pydantic(cls, obj: Any, *, connection: aioredis.Redis | None = None) -> Any:
        """The async twin of :meth:`from_pydantic`."""
        from repocket import schema

        return await schema.afrom_pydantic(obj, connection=connection)

    # -- persistence -----------------------------------------------------------
    # Each operation is one plan (repocket.plan), run by a sync method and by its
    # async twin (a-prefixed): the same commands, round trips and errors.

    @classmethod
    def create(cls, *, connection: redis.Redis | None = None, **kwargs: Any) -> Self:
        """Build an instance from ``kwargs``, save it, and return it."""
        instance = cls(**kwargs)
        instance.save(connection=connection)
        return instance

    @classmethod
    async def acreate(cls, *, connection: aioredis.Redis | None = None, **kwargs: Any) -> Self:
        """The async twin of :meth:`create`."""
        instance = cls(**kwargs)
        await instance.asave(connection=connection)
        return instance

    def save(self, *, force: bool = False, connection: redis.Redis | None = None) -> dict[str, Any]:
        """Persist the record in one atomic round trip; assign an id (uuid1) first if it has none.

        Only attributes that changed since the record was loaded or last saved
        are written (and their index entries), so concurrent writers changing
        different attributes both keep their change. ``force=True`` writes all.

        Returns:
            ``{"hash": <hash key>, "strings": {<ByteStream name>: <string key>}}``.

        Raises:
            ValidationError: a ``null=False`` attribute holds None (nothing is written).
            UnsavedReferenceError: a Pointer names a record never saved.
        """
        return clients.run(self._save_plan(force), connection)

    async def asave(self, *, force: bool = False, connection: aioredis.Redis | None = None) -> dict[str, Any]:
        """The async twin of :meth:`save`."""
        return await clients.run_async(self._save_plan(force), connection)

    def _create_plan(self) -> Plan[Any]:
        yield from self._save_plan(False)
        return self

    def _save_plan(self, force: bool) -> Plan[dict[str, Any]]:
        meta = self._meta
        yield from hooks.saving([self])  # (what it raises ends the save here: nothing is written)
        for name in meta.auto_now:
            setattr(self, name, meta.fields[name].now())  # type: ignore[attr-defined]
        self._validate_for_save()
        fresh: tuple[str, ...] = ()
        if self._data[meta.pk] is None:
            self._data[meta.pk] = meta.fields[meta.pk].generate()  # type: ignore[attr-defined]
            fresh = (str(self._data[meta.pk]),)
        created = self._stored is None
        yield from write.save(meta, [self], force=force, fresh=fresh)
        yield from hooks.saved([self], [created])
        record = self._key()
        return {
            "hash": record,
            "strings": {name: keys.stream_key(record, name) for name in meta.streams},
        }

    def _validate_for_save(self, names: Iterable[str] | None = None) -> None:
        """Refuse None in a null=False attribute and Pointers to unsaved records (of ``names``, or all loaded)."""
        meta = self._meta
        for name in meta.fields if names is None else names:
            attr = meta.fields[name]
            if name in self._deferred:
                continue  # not loaded: save() leaves it as stored
            value = self._data[name]
            if value is None:
                if not attr.null and name != meta.pk:
                    raise errors.ValidationError(
                        f"{meta.label}.{name}: None is not allowed (the attribute is not null=True); "
                        f"expected {attr._expected()}",
                        model=meta.label,
                        field=name,
                        value=None,
                        expected=attr._expected(),
                    )
            elif isinstance(attr, Pointer) and type(value) is not BrokenReference and value._stored is None:
                raise errors.UnsavedReferenceError(
                    f"{meta.label}.{name} points to an unsaved {value._meta.label}; "
                    "save the target before the record that points to it"
                )
            elif isinstance(attr, PointerList):
                attr.cast(value)  # (changed in place, it may hold a duplicate or a stranger now)
                for target in value:
                    if type(target) is not BrokenReference and target._stored is None:
                        raise errors.UnsavedReferenceError(
                            f"{meta.label}.{name} holds an unsaved {target._meta.label}; "
                            "save the targets before the record that lists them")

    def delete(self, *, connection: redis.Redis | None = None) -> int:
        """Delete the record, its ByteStream strings and its index entries, atomically.

        Returns:
            The number of the record's own keys deleted (hash plus ByteStream strings):
            1 for a saved record without ByteStreams, 0 when it was not stored.
        """
        return clients.run(self._delete_plan(), connection)

    async def adelete(self, *, connection: aioredis.Redis | None = None) -> int:
        """The async twin of :meth:`delete`."""
        return await clients.run_async(self._delete_plan(), connection)

    def _delete_plan(self) -> Plan[int]:
        if self._data[self._meta.pk] is None:
            return 0
        yield from hooks.deleting([self])
        deleted = (yield from write.delete(self._meta, [self]))[0]
        self._stored = None
        self._stored_streams = {}
        self._version = None
        yield from hooks.deleted([self])
        return deleted

    def refresh(self, *, connection: redis.Redis | None = None) -> None:
        """Reload every attribute from Redis, discarding unsaved changes.

        Raises:
            DoesNotExist: the record is no longer stored.
        """
        clients.run(self._refresh_plan(), connection)

    async def arefresh(self, *, connection: aioredis.Redis | None = None) -> None:
        """The async twin of :meth:`refresh`."""
        await clients.run_async(self._refresh_plan(), connection)

    def _refresh_plan(self) -> Plan[None]:
        fresh = yield from select.get_by_pk(type(self), self._pk())
        self._data = fresh._data
        self._stored = fresh._stored
        self._stored_streams = fresh._stored_streams
        self._version = fresh._version
        self._deferred = frozenset()

    def incr(self, name: str, amount: Any = 1, *, connection: redis.Redis | None = None) -> Any:
        """Add ``amount`` to a number attribute inside Redis, atomically; returns the new value.

        Concurrent increments never lose an update, the stored format and any
        index on the attribute stay exact, and only this attribute is written.
        Integer attributes take one call; Float and Decimal use a guarded write.

        Raises:
            ValidationError: the attribute is not Integer, Float or Decimal, or holds None.
            DoesNotExist: the record is not stored.
        """
        return clients.run(self._incr_plan(name, amount), connection)

    async def aincr(self, name: str, amount: Any = 1, *, connection: aioredis.Redis | None = None) -> Any:
        """The async twin of :meth:`incr`."""
        return await clients.run_async(self._incr_plan(name, amount), connection)

    def decr(self, name: str, amount: Any = 1, *, connection: redis.Redis | None = None) -> Any:
        """Subtract ``amount`` from a number attribute inside Redis; see :meth:`incr`."""
        return clients.run(self._incr_plan(name, amount, minus=True), connection)

    async def adecr(self, name: str, amount: Any = 1, *, connection: aioredis.Redis | None = None) -> Any:
        """The async twin of :meth:`decr`."""
        return await clients.run_async(self._incr_plan(name, amount, minus=True), connection)

    def _incr_plan(self, name: str, amount: Any, minus: bool = False) -> Plan[Any]:
        attr = self._meta.fields.get(name)
        if attr is None:
            raise self._meta.unknown_field(name)
        if minus:
            step = attr.cast(amount)
            if step is None:
                raise attr._invalid(amount)
            amount = -step
        return (yield from write.increment(self, name, amount))

    def _list_plan(self, field: str, target: Any, add: bool) -> Plan[bool]:
        if self._stored is None:  # not saved yet: change the list in memory, and the next save() writes it
            current = self._data[field]
            if add and target in current or not add and target not in current:
                return False
            setattr(self, field, [*current, target] if add else [item for item in current if item != target])
            return True
        return (yield from lists.edit(self, field, target, add))

    # -- history (Meta.history; see repocket.plan.changes) --------------------------

    def history(self, *, connection: redis.Redis | None = None) -> list[ActiveRecord]:
        """The versions of this record that ``Meta.history`` keeps, newest first (the current one
        included), as read-only instances whose ``version_info`` gives revision, time, actor and op."""
        return clients.run(changes.history(self._meta, str(self._pk())), connection)

    async def ahistory(self, *, connection: aioredis.Redis | None = None) -> list[ActiveRecord]:
        """The async twin of :meth:`history`."""
        return await clients.run_async(changes.history(self._meta, str(self._pk())), connection)

    @property
    def version_info(self) -> changes.Snapshot | None:
        """For a past version (:meth:`history`, ``Model.objects.as_of()``): its revision, time, actor
        and op; None for a record read as it is now."""
        snapshot: changes.Snapshot | None = self._snapshot
        return snapshot

    # -- expiry (Meta.ttl; see repocket.plan.expiry) -------------------------------

    def expire(self, seconds: float, *, connection: redis.Redis | None = None) -> None:
        """Make the record expire ``seconds`` from now (the server's clock), in one write call.

        From that instant it is gone everywhere: ``get`` raises DoesNotExist,
        and no query, count or index returns it. On a record not saved yet,
        its first save sets the deadline. A later save keeps it, unless the
        model's ``Meta.ttl`` sets a new one.

        Raises:
            ValidationError: the model declares no ``Meta.ttl``, or ``seconds`` is not a number of seconds.
            DoesNotExist: the record is not stored (or expired already).
        """
        clients.run(expiry.set_deadline(self, seconds), connection)

    async def aexpire(self, seconds: float, *, connection: aioredis.Redis | None = None) -> None:
        """The async twin of :meth:`expire`."""
        await clients.run_async(expiry.set_deadline(self, seconds), connection)

    def persist(self, *, connection: redis.Redis | None = None) -> None:
        """Make the record never expire (until a save with ``Meta.ttl`` set, or :meth:`expire`)."""
        clients.run(expiry.set_deadline(self, None), connection)

    async def apersist(self, *, connection: aioredis.Redis | None = None) -> None:
        """The async twin of :meth:`persist`."""
        await clients.run_async(expiry.set_deadline(self, None), connection)

    def ttl(self, *, connection: redis.Redis | None = None) -> float | None:
        """Seconds left before the record expires (one PTTL), or None when it never expires.

        Raises:
            DoesNotExist: the record is not stored (or expired already).
        """
        return clients.run(expiry.time_left(self), connection)

    async def attl(self, *, connection: aioredis.Redis | None = None) -> float | None:
        """The async twin of :meth:`ttl`."""
        return await clients.run_async(expiry.time_left(self), connection)

    def _append_plan(self, field: str, data: bytes | str) -> Plan[str]:
        attr = self._meta.fields[field]
        chunk = attr.cast(data)
        if chunk is None:
            raise attr._invalid(data)
        if self._stored is None:  # not saved yet: the next save() writes it all
            self._data[field] = (self._data[field] or b"") + chunk
            return self._calculate_key_for_field(field)
        return (yield from write.append(self, field, chunk))
