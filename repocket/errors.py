"""Every exception repocket raises on purpose.

All of them inherit from :class:`RepocketError`, so ``except RepocketError``
catches anything repocket means to tell you. Where a builtin has the same
meaning, the exception inherits it too, so code written against the builtin
keeps working::

    RepocketError
    ├── RepocketActiveRecordDefinitionError   a model declaration is inconsistent
    ├── ValidationError (ValueError)          a value cannot be cast or is missing
    ├── UnknownFieldError (KeyError, TypeError) a name that is not an attribute
    ├── UnsavedReferenceError (ReferenceError) a Pointer to a record never saved
    ├── DoesNotExist                          no record for that id or query
    │   └── <Model>.DoesNotExist
    ├── MultipleObjectsReturned               get() matched more than one record
    │   └── <Model>.MultipleObjectsReturned
    ├── CorruptRecordError                    stored data is not what repocket writes
    ├── BrokenReferenceError                  a stored Pointer names a missing record
    ├── UniqueConstraintError                 a unique value is already taken
    ├── ConflictError                         a versioned record changed under you
    ├── ServerNotFoundError                   no redis-server binary to start
    └── RedisConnectionError (ConnectionError) Redis could not be reached (wraps redis-py)
        ├── RedisAuthenticationError          Redis refused the credentials
        ├── PermissionDeniedError (PermissionError) the Redis user may not run that command or use that key
        └── ReplicationError                  a write's WAIT saw too few replicas
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BrokenReferenceError",
    "ChangesTrimmedError",
    "ConflictError",
    "CorruptRecordError",
    "CrossPartitionError",
    "DoesNotExist",
    "MultipleObjectsReturned",
    "PermissionDeniedError",
    "ProtectedError",
    "RedisAuthenticationError",
    "RedisConnectionError",
    "ReplicationError",
    "RepocketActiveRecordDefinitionError",
    "RepocketError",
    "ServerNotFoundError",
    "UniqueConstraintError",
    "UnknownFieldError",
    "UnsavedReferenceError",
    "ValidationError",
]


class RepocketError(Exception):
    """The root of every error repocket raises on purpose."""


class RepocketActiveRecordDefinitionError(RepocketError):
    """A model declaration is inconsistent (two primary keys, a reserved name, ...).

    Raised when the class is created, naming the model and the attribute.
    """


class ValidationError(RepocketError, ValueError):
    """A value cannot be cast to its attribute's type, or a required value is missing.

    Raised before anything is written. ``model``, ``field``, ``value`` and
    ``expected`` carry the facts the message states.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        field: str | None = None,
        value: Any = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.field = field
        self.value = value
        self.expected = expected


class UnknownFieldError(RepocketError, KeyError, TypeError):
    """A name that is not an attribute of the model.

    A :class:`KeyError` for ``instance["name"]`` and a :class:`TypeError` for
    ``Model(name=...)`` and ``filter(name=...)``, like the builtins raise.
    """

    def __init__(self, message: str, *, model: str, field: str, valid: list[str]) -> None:
        super().__init__(message)
        self.model = model
        self.field = field
        self.valid = valid

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnsavedReferenceError(RepocketError, ReferenceError):
    """A Pointer names a record that has never been saved, so it has no key to store."""


class DoesNotExist(RepocketError):
    """No record matched. Each model has its own subclass, ``Model.DoesNotExist``."""


class MultipleObjectsReturned(RepocketError):
    """``get()`` matched more than one record. Each model has ``Model.MultipleObjectsReturned``."""


class CorruptRecordError(RepocketError):
    """Stored data is not what repocket writes (bad JSON, unknown type tag, wrong shape).

    ``key`` and ``field`` say where; nothing named by the data is ever imported.
    """

    def __init__(self, message: str, *, key: str, field: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.field = field


class BrokenReferenceError(RepocketError):
    """A stored Pointer names a record that no longer exists (and the Pointer is not ``null``)."""

    def __init__(self, message: str, *, key: str, field: str, target: str) -> None:
        super().__init__(message)
        self.key = key
        self.field = field
        self.target = target


class UniqueConstraintError(RepocketError):
    """A ``unique=True`` value is already held by another record; nothing was written."""

    def __init__(self, message: str, *, model: str, field: str, value: Any) -> None:
        super().__init__(message)
        self.model = model
        self.field = field
        self.value = value


class ProtectedError(RepocketError):
    """A delete refused by a Pointer with ``on_delete=PROTECT``: records point at the target; nothing was deleted."""

    def __init__(self, message: str, *, model: str, field: str, record: str, referrers: list[str]) -> None:
        super().__init__(message)
        #: The referring model and Pointer, the key of the record whose delete was refused, the referrers' keys.
        self.model, self.field, self.record, self.referrers = model, field, record, referrers


class ChangesTrimmedError(RepocketError):
    """A read of a model's changes from a point the trimming (``Meta.changes``) has passed: some are gone."""

    def __init__(self, message: str, *, model: str, since: str, trimmed: str) -> None:
        super().__init__(message)
        #: The model, where the reader asked to start, and the newest change entry the trimming removed.
        self.model, self.since, self.trimmed = model, since, trimmed


class CrossPartitionError(RepocketError):
    """A write that would span several slots of a Redis Cluster in one atomic call; nothing was written."""


class ConflictError(RepocketError):
    """A versioned record was changed by someone else since it was loaded; nothing was written."""


class ServerNotFoundError(RepocketError, FileNotFoundError):
    """No ``redis-server`` binary could be found to start an embedded or test server."""


class RedisConnectionError(RepocketError, ConnectionError):
    """Redis could not be reached or the connection broke; wraps the redis-py error.

    Also the builtin :class:`ConnectionError`, so ``except ConnectionError`` works.
    """


class ReplicationError(RedisConnectionError):
    """A write was applied on the primary, but fewer replicas than ``wait_replicas`` confirmed it in time.

    Raised after the write, by the ``WAIT`` that follows it: the write is in
    the primary and may reach the replicas later, but if the primary fails
    before they have it, it is lost. Also a :class:`RedisConnectionError`,
    whose other cases leave a write's outcome unknown too.
    """


class RedisAuthenticationError(RedisConnectionError):
    """Redis refused the credentials: a wrong password or user name, or none given where one is needed.

    Never says the password; fix the URL or the ``username``/``password`` options.
    """


class PermissionDeniedError(RedisConnectionError, PermissionError):
    """Redis refused a command because of the ACL user's permissions (``NOPERM``): the
    command, or one of its keys, is not allowed to the user the connection logged in as.

    Raised for a command repocket sends and for one a repocket script runs. A
    refused command did nothing; a script whose keys are refused runs nothing,
    but one refused midway keeps the writes it made before (Redis never undoes
    a script). ``model``, ``command`` and ``key`` say who, what and where; the
    message quotes Redis's reason, never the credentials. Also the builtin
    :class:`PermissionError`. docs/servers.rst gives the ``ACL SETUSER`` line
    with what repocket needs.
    """

    def __init__(self, message: str, *, model: str, command: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.model, self.command, self.key = model, command, key
