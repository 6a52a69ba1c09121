"""Every Redis key repocket writes, built in this one place.

A model's keys all start with its prefix, ``repocket:<namespace>:<ModelName>``:

========================================  ============  ===================================================================
key                                       type          holds
========================================  ============  ===================================================================
``<prefix>:<uuid>``                       hash          one record, a field per attribute (``Meta.format``)
``<prefix>:<uuid>:field:<name>``          string        a ByteStream attribute's raw bytes
``<prefix>:_ids``                         set           the id of every saved record
``<prefix>:_eq:<field>:<token>``          set           ids whose indexed ``field`` equals token
``<prefix>:_null:<field>``                set           ids whose indexed ``field`` is None
``<prefix>:_sort:<field>``                sorted set    ids scored by an ordered indexed field
``<prefix>:_lex:<field>``                 sorted set    ``value\\x00id`` for Unicode prefix/order
``<prefix>:_unique:<field>``              hash          token -> id for ``unique=True`` fields
``<prefix>:_lease:<uuid>``                string        a writer's token: its lease on one record
``<prefix>:_revoked:<uuid>``              set           a spread model's record: claim generations revoked (a day)
``<prefix>:_format``                      string        the storage format ``migrate-format`` last converted every record to
``<prefix>:_migrating:<format>``          set           ids converted to ``<format>`` by a migration still under way
========================================  ============  ===================================================================

A lease lives at most 2 seconds (``PX 2000``): a writer whose guard missed
holds it while it writes again, and deletes it in that write (see
``repocket/lua/write.lua`` and docs/consistency.rst).

Bookkeeping segments start with ``_``, so they can never be mistaken for a
UUID.

On a Redis Cluster (``configure.cluster()``) the prefix carries a hash tag
naming the model and its partition, ``{repocket:<namespace>:<ModelName>:0}``,
so that every key of a model hashes to one slot and each write stays one
single-slot script call. Every other part of every key is the same. Only one
partition per model is kept so far (``Meta.partitions = 1``).
"""

from __future__ import annotations

import re
import uuid

RECORD_PREFIX = "repocket"
#: How repocket writes a record id into keys and index members, ``str(uuid.UUID)`` (lower-case hex).
CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: :data:`CANONICAL_ID` for ids read as bytes (index and id set members).
CANONICAL_ID_BYTES = re.compile(CANONICAL_ID.pattern.encode("ascii"))


def model_prefix(namespace: str, model_name: str) -> str:
    """``repocket:<namespace>:<ModelName>``: what every key of the model starts with."""
    return f"{RECORD_PREFIX}:{namespace}:{model_name}"


def cluster_prefix(prefix: str, partition: int = 0) -> str:
    """``{<prefix>:<partition>}``: the prefix of a partition's keys on a Redis Cluster (one hash tag)."""
    return f"{{{prefix}:{partition}}}"


class _Layout:
    """Whether keys take the cluster layout, set by ``configure.cluster()`` and cleared by ``connection_pool()``."""

    cluster = False


#: Which layout keys take now (``LAYOUT.cluster``), set by ``configure.cluster()`` and cleared by the
#: other configuration calls. Read by :attr:`repocket.options.ModelOptions.prefix`.
LAYOUT = _Layout()


def record_key(prefix: str, pk: uuid.UUID | str) -> str:
    """The hash holding one record."""
    return f"{prefix}:{pk}"


def stream_key(record: str, field: str) -> str:
    """The string holding a ByteStream's bytes."""
    return f"{record}:field:{field}"


def ids_key(prefix: str) -> str:
    """The set of every saved record's id."""
    return f"{prefix}:_ids"


def expiry_key(prefix: str) -> str:
    """The sorted set of expiring record ids, each scored by its deadline (milliseconds since the epoch)."""
    return f"{prefix}:_expiry"


def changes_key(prefix: str) -> str:
    """The stream of a partition's changes (``Meta.changes``), see repocket/lua/changes.lua."""
    return f"{prefix}:_changes"


def revisions_key(prefix: str) -> str:
    """The hash of each record's revision (id -> the number of its changes), kept after a delete."""
    return f"{prefix}:_revisions"


def trimmed_key(prefix: str) -> str:
    """The hash whose field ``id`` is the newest change entry the trimming removed."""
    return f"{prefix}:_trimmed"


def history_key(prefix: str, pk: str) -> str:
    """The stream of a record's last versions (``Meta.history``)."""
    return f"{prefix}:_history:{pk}"


def eq_index_key(prefix: str, field: str, token: str) -> str:
    """The set of ids whose indexed ``field`` has the equality token ``token``."""
    return f"{prefix}:_eq:{field}:{token}"


def null_index_key(prefix: str, field: str) -> str:
    """The set of ids whose indexed ``field`` is None."""
    return f"{prefix}:_null:{field}"


def sorted_index_key(prefix: str, field: str) -> str:
    """The sorted set scoring ids by an ordered field (Integer, Float, Decimal, DateTime)."""
    return f"{prefix}:_sort:{field}"


def lex_index_key(prefix: str, field: str) -> str:
    """The sorted set of ``value\\x00id`` members for a Unicode field (prefix search, ordering)."""
    return f"{prefix}:_lex:{field}"


def unique_key(prefix: str, field: str) -> str:
    """The hash mapping a unique field's token to the id holding it."""
    return f"{prefix}:_unique:{field}"


#: How many claims hashes hold each unique field's claims on a model spread over partitions.
CLAIM_BUCKETS = 256


def claims_key(model_prefix: str, field: str, bucket: int) -> str:
    """``{<model prefix>:_claims:<bucket>}:_unique:<field>``: one bucket of a spread model's unique claims."""
    return f"{{{model_prefix}:_claims:{bucket}}}:_unique:{field}"


def revoked_key(prefix: str, pk: uuid.UUID | str) -> str:
    """The set of a record's revoked claim generations (in its partition; see repocket/plan/claims.py)."""
    return f"{prefix}:_revoked:{pk}"


def lease_key(prefix: str, pk: uuid.UUID | str) -> str:
    """The string naming the writer that holds a short write lease on one record."""
    return f"{prefix}:_lease:{pk}"


def format_key(prefix: str) -> str:
    """The format every record was last converted to by ``migrate-format`` (absent: never migrated)."""
    return f"{prefix}:_format"


def migrating_key(prefix: str, format_name: str) -> str:
    """The ids a migration under way has converted to ``format_name``."""
    return f"{prefix}:_migrating:{format_name}"


def evolving_key(prefix: str) -> str:
    """The hash of each unfinished ``repocket migrate``'s SSCAN cursor, by the text of its edits."""
    return f"{prefix}:_evolving"


def escape_glob(text: str) -> str:
    """Escape ``* ? [ ] \\`` so ``text`` matches itself literally in SCAN/KEYS patterns."""
    out = []
    for char in text:
        if char in "*?[]\\":
            out.append("\\")
        out.append(char)
    return "".join(out)


def intents_key(prefix: str) -> str:
    """The hash of a partition's unfinished deletes on a cluster (token -> JSON intent), see repocket/plan/intents.py."""
    return f"{prefix}:_intents"
