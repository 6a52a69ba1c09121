"""``ModelOptions``: everything repocket knows about one model, on ``Model._meta``.

It lives apart from :mod:`repocket.model` so that the planning code (which
decides what to send to Redis) needs the model's description but never
``ActiveRecord`` itself, and no import cycle runs through the model module.
"""

from __future__ import annotations

import binascii
import copy
import uuid
from typing import TYPE_CHECKING, Any

from repocket import errors, formats, keys
from repocket.attributes import Attribute, AutoUUID, Pointer, PointerList, Reference

if TYPE_CHECKING:
    from repocket.model import ActiveRecord

__all__ = ["CLUSTER_PARTITIONS", "DEFAULT_FORMAT", "DEFAULT_PARTITIONS", "ModelOptions", "partition_of"]

#: The storage format of a model whose ``Meta`` names none (see :mod:`repocket.formats`).
#: Set it before the models are declared to change the default of a whole program.
DEFAULT_FORMAT = "envelope"
#: How many partitions a model spreads over on a Redis Cluster when its ``Meta`` names none
#: (on a standalone server the default is 1: the keys of the storage format, exactly).
CLUSTER_PARTITIONS = 16
#: The partition count of a model whose ``Meta`` names none, on any server; None (the default)
#: means CLUSTER_PARTITIONS on a cluster and 1 on one server.
DEFAULT_PARTITIONS: int | None = None


def partition_of(pk: uuid.UUID | str, partitions: int) -> int:
    """The partition of the record ``pk``: CRC16 (XMODEM, as Redis Cluster hashes keys) of its canonical id, mod P."""
    if partitions == 1:
        return 0
    return binascii.crc_hqx(str(pk).encode("ascii"), 0) % partitions


class ModelOptions:
    """Everything repocket knows about one model, on ``Model._meta``."""

    def __init__(self, model: type[ActiveRecord], fields: dict[str, Attribute[Any]], options: dict[str, Any]) -> None:
        self.model = model
        self.name = model.__name__
        self.namespace: str = options.get("namespace") or model.__module__
        #: ``repocket:<namespace>:<ModelName>``, and its hash-tagged form on a cluster (see :mod:`repocket.keys`).
        self.standalone_prefix = keys.model_prefix(self.namespace, self.name)
        self.cluster_prefix = keys.cluster_prefix(self.standalone_prefix)
        self.label = f"{model.__module__}.{model.__qualname__}"
        self.fields = fields
        self.versioned: bool = bool(options.get("versioned", False))
        #: Whether records can expire (``Meta.ttl`` declared, even as None): reads then ask the server's
        #: clock, and each partition keeps its deadlines in a sorted set (docs/expiry.rst).
        self.expiring = "ttl" in options
        #: ``Meta.ttl``: the seconds a record lives after each save; None: until ``expire()`` says.
        self.ttl: float | None = options.get("ttl")
        #: ``Meta.changes``: None, or how the change stream is trimmed, as ``(policy, limit)``:
        #: ("none", 0), ("maxlen", entries) or ("minid", milliseconds of age) (docs/changes.rst).
        self.changes: tuple[str, int] | None = _trim_policy(options.get("changes"))
        #: ``Meta.history``: how many versions of each record are kept (0: none).
        self.history: int = int(options.get("history") or 0)
        #: How the record hash stores values (``Meta.format``: "envelope" or "plain").
        self.format = formats.format_named(options.get("format", DEFAULT_FORMAT), self.label)
        self.pk = next(name for name, attr in fields.items() if isinstance(attr, AutoUUID))
        #: For every attribute in declaration order, the tuple (hash field name
        #: as bytes or None for a ByteStream, name, attribute, fast reader).
        self.layout = [(name.encode() if attr.stored_in_hash else None, name, attr, self.format.reader(attr))
                       for name, attr in fields.items()]
        #: The attributes kept in the record hash, as ``(name, attribute)``, in order.
        self.hash_fields = [(name, attr) for name, attr in fields.items() if attr.stored_in_hash]
        self.streams = [name for name, attr in fields.items() if not attr.stored_in_hash]
        self.pointers = [name for name, attr in fields.items() if isinstance(attr, Pointer)]
        self.pointer_lists = [name for name, attr in fields.items() if isinstance(attr, PointerList)]
        #: The Pointers and PointerLists with an ``on_delete`` strategy: a save that sets one checks,
        #: in its script, that each target exists (so that its delete cannot miss this record).
        self.guarded_pointers = [name for name, attr in fields.items()
                                 if isinstance(attr, Reference) and attr.on_delete != "DO_NOTHING"]
        self.auto_now = [name for name, attr in fields.items() if getattr(attr, "auto_now", False)]
        self.indexed = [name for name, attr in fields.items() if attr.index]
        self.unique = [name for name, attr in fields.items() if attr.unique]
        #: ``Meta.partitions``, or None: the default of the configured server (see :attr:`partitions`).
        self.declared_partitions: int | None = options.get("partitions")
        #: In a partition's view (:meth:`partition`), its number and the model's partition count.
        self.partition_index: int | None = None
        #: ``Meta.moving_from``: the layout ``repartition()`` moves records out of ("standalone" or a
        #: partition count), read as well as the current one until the move is done (see :meth:`sources`).
        self.moving_from: str | int | None = options.get("moving_from")
        self._pinned: int | None = None
        self._fixed_prefix: str | None = None
        self._views: dict[Any, list[ModelOptions]] = {}

    # -- partitions -------------------------------------------------------------------------

    @property
    def partitions(self) -> int:
        """How many partitions the model spreads over, ``Meta.partitions`` or else the default.

        The default is 16 on a cluster and 1 on one server (see :data:`repocket.options.DEFAULT_PARTITIONS`).
        """
        if self._pinned is not None:
            return self._pinned
        if self.declared_partitions is not None:
            return self.declared_partitions
        if DEFAULT_PARTITIONS is not None:
            return DEFAULT_PARTITIONS
        return CLUSTER_PARTITIONS if keys.LAYOUT.cluster else 1

    @property
    def partitioned(self) -> bool:
        """True when queries scatter over several partitions (more than one, and this is not one partition's view)."""
        return self.partition_index is None and self.partitions > 1

    @property
    def scatters(self) -> bool:
        """Whether a query runs over several sets of keys (partitions, or also a layout being moved from)."""
        return self.partitioned or (self.partition_index is None and bool(self.sources()))

    def scatter_views(self) -> list[ModelOptions]:
        """The views a query runs over, in the order it reads them: the sources (:meth:`sources`), then the partitions."""
        cache_key = ("scatter", self.partitions, self.moving_from, keys.LAYOUT.cluster)
        cached = self._views.get(cache_key)
        if cached is not None:
            return cached
        current = self.views()
        if self.partitions == 1:  # the one partition as a view, whose prefix still follows the configured layout
            whole = copy.copy(self)
            whole.partition_index, whole._pinned, whole._views, whole.moving_from = 0, 1, {}, None
            current = [whole]
        views = self._views[cache_key] = [*self.sources(), *current]
        return views

    def sources(self) -> list[ModelOptions]:
        """The partitions of the layout named by ``Meta.moving_from``, as views; empty when none is named.

        A source partition whose keys are also a current partition's (``{...:3}``
        is partition 3 of 4 and of 8) is listed too: it still holds the records
        that the move has not taken to their partition yet.
        """
        if self.moving_from is None or self.partition_index is not None:
            return []
        cache_key = ("sources", self.partitions, self.moving_from, keys.LAYOUT.cluster)
        cached = self._views.get(cache_key)
        if cached is not None:
            return cached
        origins = [self.with_prefix(self.standalone_prefix)] if self.moving_from == "standalone" else [
            self.with_prefix(keys.cluster_prefix(self.standalone_prefix, n)) for n in range(int(self.moving_from))]
        if [view.prefix for view in origins] == [view.prefix for view in self.views()]:
            origins = []  # the current layout itself: nothing to move
        self._views[cache_key] = origins
        return origins

    def source_for(self, pk: uuid.UUID | str) -> ModelOptions | None:
        """The source partition (see :meth:`sources`) where the record ``pk`` was, or None when nothing moves."""
        origins = self.sources()
        if not origins:
            return None
        return origins[partition_of(pk, len(origins))]

    def partition(self, number: int) -> ModelOptions:
        """The view of partition ``number``: the same model, whose keys are those of that partition only."""
        return self.views()[number]

    def views(self) -> list[ModelOptions]:
        """One view per partition, in order (``[self]`` when the model has one partition)."""
        count = self.partitions
        if count == 1 or self.partition_index is not None:
            return [self]
        views = self._views.get(count)
        if views is None:
            views = self._views[count] = [self._view(number, count) for number in range(count)]
        return views

    def _view(self, number: int, count: int) -> ModelOptions:
        view = copy.copy(self)
        view.partition_index, view._pinned, view.moving_from = number, count, None
        view._fixed_prefix = keys.cluster_prefix(self.standalone_prefix, number)
        view._views = {}
        return view

    def for_pk(self, pk: uuid.UUID | str) -> ModelOptions:
        """The view of the partition holding the record ``pk`` (the model itself when it has one)."""
        return self.partition(partition_of(pk, self.partitions)) if self.partitioned else self

    def prefix_for(self, pk: uuid.UUID | str) -> str:
        """The prefix of the keys of record ``pk``: its partition's."""
        return self.for_pk(pk).prefix

    @property
    def prefix(self) -> str:
        """What every key of the model (or of this partition) starts with, in the configured server's layout.

        Raises:
            RuntimeError: the model spreads over several partitions, each with its own prefix
                (use :meth:`prefix_for` or :meth:`partition`).
        """
        if self._fixed_prefix is not None:
            return self._fixed_prefix
        if self.partitions > 1:
            raise RuntimeError(f"{self.label} spreads over {self.partitions} partitions: each has its own prefix")
        return self.cluster_prefix if keys.LAYOUT.cluster else self.standalone_prefix

    @property
    def records_changes(self) -> bool:
        """Whether a write also records a change entry or a version (``Meta.changes``, ``Meta.history``)."""
        return self.changes is not None or self.history > 0

    @property
    def changes_key(self) -> str:
        """The stream of this partition's changes."""
        return keys.changes_key(self.prefix)

    @property
    def expiry_key(self) -> str:
        """The sorted set of this partition's expiring record ids, scored by deadline (ms since the epoch)."""
        return keys.expiry_key(self.prefix)

    @property
    def ids_key(self) -> str:
        """The set of every saved record's id."""
        return keys.ids_key(self.prefix)

    @property
    def _key_start(self) -> str:
        """The prefix and its colon (of one partition: not for a model spread over several)."""
        return self.prefix + ":"

    def key(self, pk: uuid.UUID | str) -> str:
        """The hash key of the record with primary key ``pk`` (in its partition)."""
        return keys.record_key(self.prefix_for(pk), pk)

    def parse_key(self, key: str) -> uuid.UUID:
        """The primary key inside one of this model's record keys.

        Raises:
            ValueError: ``key`` is not ``<prefix>:<canonical uuid>`` of this model.
        """
        tail = key.rpartition(":")[2]
        pk = uuid.UUID(tail) if keys.CANONICAL_ID.fullmatch(tail) else None
        if pk is not None and key == self.key(pk):
            return pk
        if self.partitioned:  # any partition's prefix, {<model prefix>:<n>}
            start, expected = f"{{{self.standalone_prefix}:", f"{{{self.standalone_prefix}:<partition>}}:"
        else:
            start = expected = self._key_start
        if pk is None and key.startswith(start):
            raise ValueError(f"{key!r} does not end in a canonical UUID")
        raise ValueError(f"{key!r} is not a key of {self.label} (expected {expected}<uuid>)")

    def current_key(self, key: str) -> str:
        """The key now holding the record that ``key`` names in any layout of the model.

        A key of the standalone layout or of any partition count (a Pointer
        stored before a ``repartition()``) names the record by its id, which
        decides its key in the current layout.

        Raises:
            ValueError: ``key`` is not a record key of this model in any layout.
        """
        try:
            self.parse_key(key)
            return key
        except ValueError:
            head, _, tail = key.rpartition(":")
            tagged = head.startswith(f"{{{self.standalone_prefix}:") and head.endswith("}") and head[
                len(self.standalone_prefix) + 2:-1].isdigit()
            if keys.CANONICAL_ID.fullmatch(tail) and (head == self.standalone_prefix or tagged):
                return self.key(tail)
            raise

    def with_prefix(self, prefix: str) -> ModelOptions:
        """A view of the model whose keys start with ``prefix``: one partition of another layout."""
        view = copy.copy(self)
        view.partition_index, view._pinned, view._fixed_prefix, view._views = -1, 1, prefix, {}
        view.moving_from = None
        return view

    def field_names(self) -> list[str]:
        """The attribute names, in declaration order."""
        return list(self.fields)

    def unknown_field(self, name: str, what: str = "attribute") -> errors.UnknownFieldError:
        """The error for a name that is not an attribute, listing the valid ones."""
        valid = self.field_names()
        return errors.UnknownFieldError(
            f"{self.label} has no {what} {name!r}; valid names: {', '.join(valid)}",
            model=self.label,
            field=name,
            valid=valid,
        )


def _trim_policy(declared: Any) -> tuple[str, int] | None:
    """``Meta.changes`` as ``(policy, limit)`` (checked by the metaclass: ``True``, ``{"maxlen": n}`` or
    ``{"max_age": seconds}``)."""
    if not declared:
        return None
    if declared is True:
        return ("none", 0)
    if "maxlen" in declared:
        return ("maxlen", int(declared["maxlen"]))
    return ("minid", int(round(declared["max_age"] * 1000)))
