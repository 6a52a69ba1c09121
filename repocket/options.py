"""``ModelOptions``: everything repocket knows about one model, on ``Model._meta``.

It lives apart from :mod:`repocket.model` so that the planning code (which
decides what to send to Redis) needs the model's description but never
``ActiveRecord`` itself, and no import cycle runs through the model module.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from repocket import errors, formats, keys
from repocket.attributes import Attribute, AutoUUID, Pointer

if TYPE_CHECKING:
    from repocket.model import ActiveRecord

__all__ = ["DEFAULT_FORMAT", "ModelOptions"]

#: The storage format of a model whose ``Meta`` names none (see :mod:`repocket.formats`).
#: Set it before the models are declared to change the default of a whole program.
DEFAULT_FORMAT = "envelope"


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
        self.auto_now = [name for name, attr in fields.items() if getattr(attr, "auto_now", False)]
        self.indexed = [name for name, attr in fields.items() if attr.index]
        self.unique = [name for name, attr in fields.items() if attr.unique]

    @property
    def prefix(self) -> str:
        """What every key of the model starts with, in the layout of the configured server."""
        return self.cluster_prefix if keys.LAYOUT.cluster else self.standalone_prefix

    @property
    def ids_key(self) -> str:
        """The set of every saved record's id."""
        return keys.ids_key(self.prefix)

    @property
    def _key_start(self) -> str:
        return self.prefix + ":"

    def key(self, pk: uuid.UUID | str) -> str:
        """The hash key of the record with primary key ``pk``."""
        return keys.record_key(self.prefix, pk)

    def parse_key(self, key: str) -> uuid.UUID:
        """The primary key inside one of this model's record keys.

        Raises:
            ValueError: ``key`` is not ``<prefix>:<canonical uuid>`` of this model.
        """
        if not key.startswith(self._key_start):
            raise ValueError(f"{key!r} is not a key of {self.label} (expected {self.prefix}:<uuid>)")
        tail = key[len(self._key_start):]
        pk = uuid.UUID(tail) if len(tail) == 36 else None
        if pk is None or str(pk) != tail:
            raise ValueError(f"{key!r} does not end in a canonical UUID")
        return pk

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
