"""repocket: a Redis-native active-record ORM.

Declare models with typed attributes, save them to Redis as hashes you can
read with ``redis-cli``, and query them through ``Model.objects``::

    from repocket import ActiveRecord, attributes

    class User(ActiveRecord):
        name = attributes.Unicode(index=True)

    User.create(name="Harry Potter")
    User.objects.filter(name__startswith="Harry")
"""

from __future__ import annotations

from importlib import metadata as _metadata

from repocket import attributes, errors
from repocket.aggregates import Avg, Count, Max, Min, Sum
from repocket.changes import actor
from repocket.connections import configure
from repocket.errors import (
    BrokenReferenceError,
    ChangesTrimmedError,
    ConflictError,
    CorruptRecordError,
    DoesNotExist,
    MultipleObjectsReturned,
    RepocketActiveRecordDefinitionError,
    RepocketError,
    ValidationError,
)
from repocket.manager import Manager
from repocket.model import ActiveRecord, fields
from repocket.query import QuerySet, ResultSet
from repocket.transaction import atomic

try:
    __version__ = _metadata.version("repocket")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ActiveRecord",
    "Avg",
    "BrokenReferenceError",
    "ChangesTrimmedError",
    "ConflictError",
    "CorruptRecordError",
    "Count",
    "DoesNotExist",
    "Manager",
    "Max",
    "Min",
    "MultipleObjectsReturned",
    "QuerySet",
    "RepocketActiveRecordDefinitionError",
    "RepocketError",
    "ResultSet",
    "Sum",
    "ValidationError",
    "__version__",
    "actor",
    "atomic",
    "attributes",
    "configure",
    "errors",
    "fields",
]
