"""Reading records from Redis and writing them back: the only module that runs record commands.

Reads fetch every requested record in one pipeline (hash and ByteStreams in one
MULTI, so they are one snapshot), then resolve Pointers one level per round
trip, each target fetched once (no N+1). Writes go through the ``write`` Lua
script: one atomic call for a record or a whole batch of them (all of it or
nothing), re-planned when a record changed under it; the refusal gives the
writer a short lease on the record, so the re-plan converges (docs/consistency.rst).
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import redis
from redis.exceptions import AuthenticationError as RedisPyAuthenticationError
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors, keys, serialization
from repocket.attributes import ATTRIBUTE_TYPES, Attribute, BrokenReference, _short_repr
from repocket.indexes import WritePlan
from repocket.scripts import get as get_script

if TYPE_CHECKING:
    from repocket.model import ActiveRecord, ModelOptions

#: How long (seconds) a write keeps trying while other writers hold leases on
#: its records. A lease lives 2 seconds at most, so only a stuck server or a
#: writer that keeps changing data behind repocket's back exhausts it.
WRITE_BUDGET = 10.0
#: The pause (seconds) before calling again when another writer holds a lease:
#: random, so waiting writers do not all come back at once.
LEASE_PAUSE = (0.0005, 0.003)

_ENVELOPE = frozenset({"type", "value", "module"})
#: How a ``secret=True`` value is shown in messages.
SECRET_MASK = "'***' (secret)"
#: What a ``_version`` counter holds: a plain non-negative integer (checked against int64 too).
_VERSION = re.compile(rb"(?:0|[1-9][0-9]{0,18})")
_INT64_MAX = 2**63 - 1


# -- errors ---------------------------------------------------------------------


def wrap_redis_error(exc: BaseException, meta: ModelOptions | None, key: str | None) -> errors.RepocketError:
    """The repocket error for a redis-py error met while working on ``key``."""
    if isinstance(exc, errors.RepocketError):
        return exc
    where = f" ({key})" if key else ""
    if isinstance(exc, RedisPyAuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))
    ):
        return _authentication_error(exc, where)
    if isinstance(exc, (RedisPyConnectionError, RedisPyTimeoutError)):
        return errors.RedisConnectionError(f"Redis is unreachable{where}: {exc}")
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE") and key:
        return errors.CorruptRecordError(f"{key} holds the wrong type of Redis value: {exc}", key=key)
    label = meta.label if meta else "repocket"
    return errors.RepocketError(f"{label}: Redis refused a command{where}: {exc}")


def _authentication_error(exc: BaseException, where: str) -> errors.RedisAuthenticationError:
    """Redis refused the credentials. Says which way and how to fix it; never the password.

    Redis's own reply is not quoted: what it says is summed up here, and a
    message built from the connection's settings could carry the password.
    """
    text = str(exc)
    lowered = text.lower()  # NOAUTH's text: "... required", or HELLO's "... already authenticated ..."
    if text.startswith("NOAUTH") or "required" in lowered or "authenticated" in lowered:
        reason = "the server needs a password and none was sent"
    else:
        reason = "wrong password or user name (or the user is disabled)"
    return errors.RedisAuthenticationError(
        f"Redis refused the credentials{where}: {reason}. Fix the password and user name in "
        "the URL (redis://user:password@host:port/db) or in configure.connection_pool("
        "username=..., password=...)"
    )


def execute(pipe: Any, meta: ModelOptions, read_keys: Sequence[str | None]) -> list[Any]:
    """Run a pipeline of one command per key; a failed command raises naming its key."""
    try:
        replies = pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise wrap_redis_error(exc, meta, None) from exc
    for reply, key in zip(replies, read_keys):
        if isinstance(reply, Exception):
            raise wrap_redis_error(reply, meta, key)
    return list(replies)


def _corrupt(key: str, field: str | None, message: str) -> errors.CorruptRecordError:
    where = f"{key} field {field!r}" if field else key
    return errors.CorruptRecordError(f"{where}: {message}", key=key, field=field)


# -- reading --------------------------------------------------------------------


def decode_field(meta: ModelOptions, attr: Attribute[Any], key: str, name: str, raw: bytes | str) -> Any:
    """The Python value of one stored hash field, or CorruptRecordError saying what is wrong.

    Type tags resolve through the closed table of attribute types; the
    ``module`` member must be the declared attribute's module. Nothing is imported.
    The message never quotes the value of a ``secret=True`` attribute, and the
    error has no ``__context__``: an exception being handled by the caller
    (a parser's, say) may hold the stored bytes.
    """
    value, problem = _decode_envelope(meta, attr, name, raw)
    if problem is not None:
        _raise_alone(_corrupt(key, name, problem))
    return value


def _decode_envelope(meta: ModelOptions, attr: Attribute[Any], name: str, raw: bytes | str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, what is wrong)`` for a stored field that is not what repocket writes."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    secret = attr.secret
    try:
        envelope = serialization.loads(raw)
    except (ValueError, RecursionError) as exc:
        return None, "not valid JSON" + ("" if secret else f" ({exc})")
    if type(envelope) is not dict:
        return None, f"expected a JSON object envelope, found {type(envelope).__name__}"
    tag = envelope.get("type")
    expected = type(attr).__name__
    if tag != expected and not (isinstance(tag, str) and tag in attr.compatible_tags):
        if isinstance(tag, str) and tag in ATTRIBUTE_TYPES:
            return None, f"stored as {tag}, but {meta.label}.{name} is {expected}"
        return None, f"unknown type tag {_short_repr(tag)}"
    module = envelope.get("module")
    if module != type(attr).__module__:
        return None, f"module {_short_repr(module)} is not {type(attr).__module__!r} (nothing was imported)"
    if "value" not in envelope:
        return None, "the envelope has no 'value' member"
    extra = envelope.keys() - _ENVELOPE - attr.extra_members
    if extra:
        return None, f"unexpected envelope members {_short_repr(sorted(extra))}"
    try:
        return attr.decode(envelope["value"], envelope), None
    except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
        if secret:  # the cause's text may quote the value too
            return None, f"invalid {expected} value {SECRET_MASK}"
        return None, f"invalid {expected} value {_short_repr(envelope['value'])} ({exc})"


def _raise_alone(exc: BaseException) -> NoReturn:
    """Raise ``exc`` with no ``__context__`` (``raise ... from None`` only hides it)."""
    try:
        raise exc
    except BaseException as raised:
        raised.__context__ = None
        raise


Fetched = tuple[dict[Any, Any], dict[str, bytes]]


def fetch(conn: redis.Redis, items: Sequence[tuple[ModelOptions, str]],
          fields: frozenset[str] | None = None) -> list[Fetched | None]:
    """Raw hashes and ByteStream strings of many records, in one round trip.

    A record with ByteStreams is read in one MULTI, so its hash and strings are
    one snapshot. Missing records come back as None. With ``fields`` (attribute
    names, the primary key among them), only those are read, with HMGET.
    """
    if not items:
        return []
    if len(items) == 1 and not items[0][0].streams and fields is None:
        meta, key = items[0]
        try:
            raw = conn.hgetall(key)
        except RedisError as exc:
            raise wrap_redis_error(exc, meta, key) from exc
        return [(raw, {}) if raw else None]
    wanted = [_wanted(meta, fields) for meta, _ in items]
    transaction = any(streams for _, streams in wanted)
    pipe = conn.pipeline(transaction=transaction)
    for (_, key), (hash_fields, streams) in zip(items, wanted):
        if hash_fields is None:
            pipe.hgetall(key)
        else:
            pipe.hmget(key, hash_fields)
        for name in streams:
            pipe.get(keys.stream_key(key, name))
    try:
        replies = pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise wrap_redis_error(exc, items[0][0], items[0][1]) from exc
    out: list[Fetched | None] = []
    position = 0
    for (meta, key), (hash_fields, streams) in zip(items, wanted):
        raw = replies[position]
        if isinstance(raw, Exception):
            raise wrap_redis_error(raw, meta, key)
        if hash_fields is not None:  # HMGET: the primary key is absent only when the record is
            raw = {f: v for f, v in zip(hash_fields, raw) if v is not None} if raw[0] is not None else {}
        stream_values = {}
        for offset, name in enumerate(streams, start=1):
            value = replies[position + offset]
            if isinstance(value, Exception):
                raise wrap_redis_error(value, meta, keys.stream_key(key, name))
            stream_values[name] = value or b""
        position += 1 + len(streams)
        out.append((raw, stream_values) if raw else None)
    return out


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


Pending = list[tuple["ActiveRecord", str, str]]


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
    instance = model.__new__(model)
    data: dict[str, Any] = {}
    for field, name, attr, read in meta.layout:
        if fields is not None and name not in fields:
            continue
        if field is None:
            data[name] = raw_streams.get(name, b"")
            continue
        raw = raw_hash.get(field)
        if raw is None:  # an attribute added after the record was written
            data[name] = attr.get_default()
            continue
        try:
            data[name] = read(raw)  # what repocket writes: parse the value only
        except (TypeError, ValueError, ArithmeticError):
            data[name] = decode_field(meta, attr, key, name, raw)  # checks, and says what is wrong
    if str(data[meta.pk]) != key[len(meta.prefix) + 1:]:
        try:
            meta.parse_key(key)
        except ValueError as exc:
            raise _corrupt(key, None, str(exc)) from None
        raise _corrupt(key, meta.pk, f"holds id {data[meta.pk]!s}, which is not the id in its key")
    for name in meta.pointers:
        target = data.get(name)
        if target is not None:
            pending.append((instance, name, target))
            data[name] = None
    instance._data = data
    if fields is not None:
        instance._deferred = frozenset(meta.fields).difference(fields)
    instance._version = _read_version(key, raw_hash) if meta.versioned else None
    instance._stored = raw_hash  # what save() compares with to write only changes
    instance._stored_streams = dict(raw_streams) if raw_streams else {}
    return instance


def load(
    conn: redis.Redis,
    meta: ModelOptions,
    record_keys: Sequence[str],
    identity: dict[str, ActiveRecord] | None = None,
    fields: frozenset[str] | None = None,
) -> list[ActiveRecord | None]:
    """Instances for record keys (None where missing), Pointers resolved level by level.

    With ``fields`` (which must hold the primary key), only those attributes are
    loaded; Pointer targets are always loaded whole.
    """
    identity = {} if identity is None else identity
    pending: Pending = []
    out: list[ActiveRecord | None] = []
    for key, fetched in zip(record_keys, fetch(conn, [(meta, key) for key in record_keys], fields)):
        if fetched is None:
            out.append(None)
            continue
        instance = identity.get(key)
        if instance is None:
            instance = identity[key] = build(meta, key, fetched, pending, fields)
        out.append(instance)
    resolve_pointers(conn, pending, identity)
    return out


def resolve_pointers(conn: redis.Redis, pending: Pending, identity: dict[str, ActiveRecord]) -> None:
    """Replace stored pointer keys with instances: one round trip per level of depth."""
    while pending:
        wanted: dict[str, ModelOptions] = {}
        for instance, name, target_key in pending:
            if target_key not in identity:
                attr = instance._meta.fields[name]
                wanted[target_key] = attr.to_model._meta  # type: ignore[attr-defined]
        items = list(wanted.items())
        next_pending: Pending = []
        for (target_key, target_meta), fetched in zip(items, fetch(conn, [(m, k) for k, m in items])):
            if fetched is not None:
                identity[target_key] = build(target_meta, target_key, fetched, next_pending)
        for instance, name, target_key in pending:
            target: Any = identity.get(target_key)
            if target is None and not instance._meta.fields[name].null:
                # Loading never fails for a missing target: the record can still be
                # listed, updated and deleted; reading the attribute raises.
                source = instance._meta.key(instance._data[instance._meta.pk])
                target = BrokenReference(target_key, source, name)
            instance._data[name] = target
        pending = next_pending


# -- writing --------------------------------------------------------------------


class WriteJob:
    """One record's write: re-planned from what Redis holds when it changed under us."""

    def __init__(self, make_plan: Callable[[WriteJob], WritePlan], stored: dict[bytes, bytes] | None,
                 must_exist: bool = False) -> None:
        self.make_plan = make_plan
        #: A vanished record is an error (DoesNotExist), not something to write anew.
        self.must_exist = must_exist
        #: The hash fields as we believe Redis holds them (None: we assume nothing is stored).
        self.stored = stored
        #: Indexed fields' stored bytes, for removing old index entries.
        self.known_old: dict[bytes, bytes] | None = stored
        #: What the instance last read or wrote: its index entries are removed too
        #: when the stored value turns out unreadable (corrupted behind our back).
        self.last_seen: dict[bytes, bytes] = dict(stored or {})
        #: After the write: how many keys its ``del`` ops deleted.
        self.deleted = 0

    def retry_from(self, reply: list[Any]) -> None:
        status = reply[0]
        if status == b"missing":  # deleted under us: write it whole, as new
            self.stored = self.known_old = None
            return
        known = dict(self.known_old or {})
        for field, current in zip(reply[1::2], reply[2::2]):
            if current:
                known[field] = current
            else:
                known.pop(field, None)
        self.known_old = known


def run_writes(conn: redis.Redis, meta: ModelOptions, jobs: Sequence[WriteJob],
               budget: float = WRITE_BUDGET) -> None:
    """Write every job in one call of the ``write`` script: all of them, or none.

    When records changed under us, nothing was written: those jobs are
    re-planned from the values the refusal returned and the whole batch is
    sent again. That refusal also gave us a short lease on those records, so
    no other repocket writer changes them before our next call, which
    therefore succeeds: the re-plan converges however many writers contend.
    While another writer holds a lease on one of our records, we pause and
    call again, for ``budget`` seconds at most (then ConflictError).
    """
    script = get_script("write")
    token = secrets.token_hex(8)  # names our leases
    deadline = time.monotonic() + budget
    holding = False  # whether the script gave us leases that are still ours
    plans: list[WritePlan] = []
    try:
        while True:
            plans = [job.make_plan(job) for job in jobs]
            reply = _call_write(conn, meta, script, token, plans)
            if reply[0] == b"ok":  # the call deleted our leases
                holding = False
                for job, deleted in zip(jobs, reply[1:]):
                    job.deleted = int(deleted)
                return
            refusals = [(jobs[int(number) - 1], plans[int(number) - 1], refusal)
                        for number, refusal in zip(reply[1::2], reply[2::2])]
            statuses = {refusal[0] for _, _, refusal in refusals}
            if statuses <= {b"conflict", b"leased"}:  # leases granted only when none was met
                holding = holding or b"leased" not in statuses
            else:  # the script released ours: any other refusal is one we do not retry as is
                holding = False
            for job, plan, refusal in refusals:  # a refusal we cannot retry wins
                _raise_unless_retryable(meta, job, plan, refusal)
            if time.monotonic() > deadline:
                raise errors.ConflictError(
                    f"{meta.label}: for {budget:g} s the records kept changing or other writers "
                    "held them; nothing was written"
                )
            for job, _, refusal in refusals:
                if refusal[0] != b"leased":
                    job.retry_from(refusal)
            if b"leased" in statuses:
                time.sleep(random.uniform(*LEASE_PAUSE))
    finally:
        if holding:  # we give up with leases in hand (an error while re-planning, say)
            _release_leases(conn, token, plans)


def _call_write(conn: redis.Redis, meta: ModelOptions, script: Any, token: str,
                plans: Sequence[WritePlan]) -> Any:
    """One call of the ``write`` script for ``plans``, under the lease token ``token``."""
    script_keys: list[str] = []
    args: list[Any] = [len(plans), token]
    for plan in plans:
        script_keys.extend(plan.keys)
        args.extend(plan.args())
    try:
        return script(conn, script_keys, args)
    except RedisError as exc:
        raise wrap_redis_error(exc, meta, plans[0].keys[0]) from exc


def _release_leases(conn: redis.Redis, token: str, plans: Sequence[WritePlan]) -> None:
    """Give back the leases ``token`` holds on the plans' records, best effort: if this fails, they expire in 2 s."""
    try:
        get_script("release")(conn, [plan.keys[1] for plan in plans], [token])
    except (RedisError, errors.RepocketError):
        pass


def _raise_unless_retryable(meta: ModelOptions, job: WriteJob, plan: WritePlan, refusal: list[Any]) -> None:
    """Raise the exception for a refusal that re-planning cannot cure (missing, conflict, leased can be)."""
    status = refusal[0]
    if status == b"missing" and job.must_exist:
        raise meta.model.DoesNotExist(f"{plan.keys[0]} does not exist; nothing was written")
    if status == b"stale" or (status == b"missing" and meta.versioned):
        found = _text(refusal[1]) if len(refusal) > 1 and refusal[1] else "no record"
        raise errors.ConflictError(
            f"{plan.keys[0]}: changed by someone else since it was loaded "
            f"(stored version: {found[:40]}); nothing was written. Call refresh() and retry."
        )
    if status not in (b"missing", b"conflict", b"leased"):
        raise_for_reply(refusal, meta, plan)


def raise_for_reply(reply: list[Any], meta: ModelOptions, plan: WritePlan) -> None:
    """Turn a refusal from the write script into the matching exception."""
    status = reply[0]
    if status in (b"wrongtype", b"corrupt"):
        raise _stored_data_error(plan.keys[0], reply)
    if status in (b"taken", b"clash"):
        slot, token, other = int(reply[1]), _text(reply[2]), _text(reply[3])
        field = plan.keys[slot - 1].rsplit(":", 1)[-1]
        value = plan.unique_values.get(token, token)
        shown = SECRET_MASK if meta.fields[field].secret else _short_repr(value)
        if status == b"taken":
            where = f"is already used by {meta.key(other)}"
        else:  # claimed twice within the batch, which the script wrote none of
            where = (f"is given to two records of the same batch, {other} and "
                     f"{plan.keys[0].rsplit(':', 1)[-1]}")
        raise errors.UniqueConstraintError(
            f"{meta.label}.{field}: the value {shown} {where}; nothing was written",
            model=meta.label,
            field=field,
            value=value,
        )
    raise errors.RepocketError(f"{meta.label}: unexpected reply from the write script: {_text(status)!r}")


def _text(raw: bytes | str) -> str:
    """Text from a script's reply, whatever bytes the stored data held."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def _stored_data_error(record: str, reply: list[Any]) -> errors.CorruptRecordError:
    """The error for a script refusing stored data it cannot write over.

    ``{"wrongtype", key, type}``: a key of the wrong Redis type.
    ``{"corrupt", field, problem, value}``: a stored value a write command would fail on
    (only ``_version`` so far, which is never secret).
    """
    if reply[0] == b"wrongtype":
        key, have = _text(reply[1]), _text(reply[2])
        return errors.CorruptRecordError(
            f"{key} is a Redis {have}, not what repocket keeps there; nothing was written", key=key
        )
    field, problem, value = _text(reply[1]), _text(reply[2]), _text(reply[3])
    return _corrupt(record, field, f"the stored value {_short_repr(value)} {problem}; nothing was written")


def _old_value(meta: ModelOptions, record: str, name: str, raw: bytes) -> Any:
    """The decoded stored value, or _UNREADABLE when it is corrupt (its entries cannot be found)."""
    try:
        return decode_field(meta, meta.fields[name], record, name, raw)
    except errors.CorruptRecordError:
        return _UNREADABLE


_UNREADABLE: Any = object()


def _new_plan(meta: ModelOptions, pk: str) -> WritePlan:
    """An empty plan for the record ``pk``: its hash and its write lease are its first keys."""
    return WritePlan(meta.key(pk), keys.lease_key(meta.prefix, pk))


def _plan_index_change(plan: WritePlan, meta: ModelOptions, job: WriteJob, record: str, pk: str, name: str, new: Any) -> None:
    """Guard an indexed field, drop its old entries and add the new ones (``new`` may be _UNREADABLE: remove only)."""
    attr = meta.fields[name]
    field = name.encode()
    old_raw = (job.known_old or {}).get(field)
    plan.check("guard", name, old_raw or b"")
    unique_slot = plan.slot(keys.unique_key(meta.prefix, name), "h") if attr.unique else 0
    if old_raw is None and job.stored is not None:
        # The record exists but lacks the field (declared after it was written): it
        # reads as the default, and check() indexes it so. Removing absent entries is harmless.
        old = attr.get_default()
    elif old_raw is None:
        old = _UNREADABLE  # a new record: nothing to remove
    else:
        old = _old_value(meta, record, name, old_raw)
        if old is _UNREADABLE and field in job.last_seen:
            old = _old_value(meta, record, name, job.last_seen[field])
    if old is not _UNREADABLE:
        try:
            old_token = attr.index_token(old) if unique_slot and old is not None else None
            plan.remove_entries(meta, name, old, pk)
        except (ArithmeticError, ValueError, TypeError):
            pass  # a stored value whose entries cannot be named (Decimal past the exponent range): as if corrupt
        else:
            if old_token is not None:
                plan.write("udel", unique_slot, old_token, pk)
    if new is _UNREADABLE:
        return
    problem: Exception | None = None
    try:
        token = attr.index_token(new) if unique_slot and new is not None else None
        plan.add_entries(meta, name, new, pk)
    except (ArithmeticError, ValueError, TypeError) as exc:  # a value no index entry can name
        problem = exc
    if problem is not None:
        raise attr._invalid(new, problem)
    if token is not None:
        plan.check("unique", unique_slot, token, pk)
        plan.unique_values[token] = new
        plan.write("uset", unique_slot, token, pk)


def save_instances(conn: redis.Redis, meta: ModelOptions, instances: Sequence[ActiveRecord], force: bool = False,
                   *, fields: Collection[str] | None = None) -> None:
    """Write validated instances (ids assigned) in one script call: all of them, or none.

    An instance loaded or saved before writes only the attributes whose bytes
    changed since; a new one, or any with ``force``, writes all of them.
    With ``fields`` (attribute names), only those attributes are considered,
    and every record must already exist: a missing one raises
    ``Model.DoesNotExist`` naming its key, with nothing of the batch written.
    An instance's deferred attributes (``_deferred``, not loaded) are never
    written, indexed or compared, even with ``force``; such an instance must
    exist too, as its record cannot be written whole.
    """
    chosen = _chosen_fields(meta, fields)
    prepared = []
    jobs = []
    for instance in instances:
        pk = str(instance._data[meta.pk])
        record = meta.key(pk)
        names = chosen - instance._deferred
        partial = fields is not None or bool(instance._deferred)
        everything = force or instance._stored is None
        encoded = {field: attr.encode(instance._data[name])
                   for field, name, attr, _ in meta.layout if field is not None and name in names}
        streams = {name: instance._data[name] or b"" for name in meta.streams if name in names}
        # A partial write of an instance never loaded claims no version: it is not checked.
        claims_version = meta.versioned and not (partial and instance._version is None)
        prepared.append((instance, encoded, streams, partial, claims_version))

        def make_plan(job: WriteJob, instance: ActiveRecord = instance, pk: str = pk, record: str = record,
                      encoded: dict[bytes, bytes] = encoded, streams: dict[str, bytes] = streams,
                      everything: bool = everything, claims_version: bool = claims_version) -> WritePlan:
            plan = _new_plan(meta, pk)
            stored = job.stored
            if meta.versioned:
                if claims_version:
                    plan.check("version", str(instance._version or ""))
                plan.write("bump")
            if stored is not None:
                plan.check("exists")
            if everything or stored is None:
                changed = encoded
            else:
                changed = {field: raw for field, raw in encoded.items() if stored.get(field) != raw}
            for name in meta.indexed:
                if name.encode() in changed:
                    _plan_index_change(plan, meta, job, record, pk, name, instance._data[name])
            for field, raw in changed.items():
                plan.write("hset", field, raw)
            old_streams = None if everything or stored is None else instance._stored_streams
            for name, value in streams.items():
                if old_streams is None or old_streams.get(name, b"") != value:
                    slot = plan.slot(keys.stream_key(record, name), "t")
                    if value:
                        plan.write("set", slot, value)
                    else:
                        plan.write("del", slot)
            plan.write("sadd", plan.slot(meta.ids_key, "s"), pk)
            return plan

        believed: dict[bytes, bytes] | None
        if partial:  # the record exists: what we loaded is our best guess at what it holds
            believed = instance._stored if instance._stored is not None else {}
        else:
            believed = None if force else instance._stored
        jobs.append(WriteJob(make_plan, believed, must_exist=partial))
    run_writes(conn, meta, jobs)
    for instance, encoded, streams, partial, claims_version in prepared:
        if partial:
            instance._stored = {**(instance._stored or {}), **encoded}
            instance._stored_streams = {**instance._stored_streams, **streams}
        else:
            instance._stored = encoded
            instance._stored_streams = streams
        if claims_version:
            instance._version = (instance._version or 0) + 1


def _chosen_fields(meta: ModelOptions, fields: Collection[str] | None) -> frozenset[str]:
    """The attribute names a save considers: ``fields`` (checked), or every attribute."""
    if fields is None:
        return frozenset(meta.fields)
    chosen = frozenset([fields] if isinstance(fields, str) else fields)
    for name in sorted(chosen):
        if name not in meta.fields:
            raise meta.unknown_field(name)
    return chosen


def delete_records(conn: redis.Redis, meta: ModelOptions, instances: Sequence[ActiveRecord]) -> list[int]:
    """Delete records with their strings and index entries, each atomically; keys deleted per record.

    A versioned record is deleted only at the version its instance loaded; an
    instance never loaded (``Model(id=...)``) claims no version, so none is
    checked. Its stored values are unknown: the guards fetch them.
    """
    jobs = []
    for instance in instances:
        pk = str(instance._data[meta.pk])
        record = meta.key(pk)

        def make_plan(job: WriteJob, pk: str = pk, record: str = record,
                      claims_version: bool = meta.versioned and instance._stored is not None,
                      instance: ActiveRecord = instance) -> WritePlan:
            plan = _new_plan(meta, pk)
            if claims_version:
                plan.check("version", str(instance._version or ""))
            for name in meta.indexed:
                _plan_index_change(plan, meta, job, record, pk, name, _UNREADABLE)
            plan.write("del", 1)
            for name in meta.streams:
                plan.write("del", plan.slot(keys.stream_key(record, name), "t"))
            plan.write("srem", plan.slot(meta.ids_key, "s"), pk)
            return plan

        jobs.append(WriteJob(make_plan, instance._stored if instance._stored is not None else {}))
    run_writes(conn, meta, jobs)
    return [job.deleted for job in jobs]


def increment(conn: redis.Redis, instance: ActiveRecord, name: str, amount: Any) -> Any:
    """Add ``amount`` to a number attribute inside Redis; returns the stored result.

    Integers are added by the ``incr`` script in one call. Floats, Decimals,
    integers past 2**53 and unique fields use the ``write`` script with a guard
    on the current value, re-read and retried when another writer got there first.
    """
    from repocket.attributes import Decimal, Float, Integer

    meta = instance._meta
    attr = meta.fields[name]
    if not isinstance(attr, (Integer, Float, Decimal)):
        raise errors.ValidationError(
            f"{meta.label}.{name}: only Integer, Float and Decimal attributes can be incremented",
            model=meta.label, field=name, value=amount, expected="a number attribute",
        )
    step = attr.cast(amount)
    if step is None:
        raise attr._invalid(amount)
    pk = str(instance._pk())
    record = meta.key(pk)
    if isinstance(attr, Integer) and not attr.unique and abs(step) < 2**52:
        script_keys = [record, keys.lease_key(meta.prefix, pk)]
        eq_prefix = ""
        if attr.index:
            script_keys.append(keys.sorted_index_key(meta.prefix, name))
            eq_prefix = keys.eq_index_key(meta.prefix, name, "")
        deadline = time.monotonic() + WRITE_BUDGET
        while True:
            try:
                reply = get_script("incr")(conn, script_keys, [name, step, pk, eq_prefix, "1" if meta.versioned else ""])
            except RedisError as exc:
                raise wrap_redis_error(exc, meta, record) from exc
            if reply[0] != b"leased":
                break
            if time.monotonic() > deadline:  # another writer's lease: it is about to write the record
                raise errors.ConflictError(
                    f"{record}: other writers held it for {WRITE_BUDGET:g} s; nothing was incremented"
                )
            time.sleep(random.uniform(*LEASE_PAUSE))
        status = reply[0]
        if status == b"ok":
            if meta.versioned and reply[2] == (instance._version or 0) + 1:
                instance._version = reply[2]  # nobody else wrote in between: still current
            return _settle_increment(instance, name, int(reply[1]))
        if status == b"missing":
            raise meta.model.DoesNotExist(f"{record} does not exist; nothing was incremented")
        if status in (b"wrongtype", b"corrupt"):
            raise _stored_data_error(record, reply)
        # "shape" (null or unusual text) and "big" fall through to the exact path below.
    result: dict[str, Any] = {}
    # A versioned instance whose version is current stays current after its own
    # increment; the first try checks that, and a stale one retries without it.
    state = {"check_version": meta.versioned}

    def make_plan(job: WriteJob) -> WritePlan:
        plan = _new_plan(meta, pk)
        plan.check("exists")
        if state["check_version"]:
            plan.check("version", str(instance._version or ""))
        # The guard checks our belief about the stored bytes; when it is wrong, the
        # refusal brings the real ones and we plan again. Nothing known yet means
        # "absent": an attribute added after the record was written, whose value
        # is its default (as reading it would give).
        current_raw = (job.known_old or {}).get(name.encode())
        plan.check("guard", name, current_raw or b"")
        if current_raw is None:
            current = attr.get_default()
        else:
            current = decode_field(meta, attr, record, name, current_raw)
        if current is None:
            result.pop("value", None)
            if current_raw is not None:
                raise _cannot_add(meta, name, amount, None, attr)
            return plan  # absent with a None default: written only if the guard holds
        problem: ArithmeticError | None = None
        try:
            new = current + step
        except ArithmeticError as exc:  # Decimal: inf + -inf, or past the exponent range
            problem = exc
        if problem is not None:
            raise _cannot_add(meta, name, amount, current, attr, problem)
        result["value"] = new
        if attr.index:
            _plan_index_change(plan, meta, job, record, pk, name, new)
        plan.write("hset", name, attr.encode(new))
        if meta.versioned:
            plan.write("bump")
        return plan

    try:
        run_writes(conn, meta, [WriteJob(make_plan, {}, must_exist=True)])
    except errors.ConflictError:
        if not state["check_version"]:
            raise
        state["check_version"] = False
        run_writes(conn, meta, [WriteJob(make_plan, {}, must_exist=True)])
    else:
        if meta.versioned:
            instance._version = (instance._version or 0) + 1
    if "value" not in result:
        raise _cannot_add(meta, name, amount, None, attr)
    return _settle_increment(instance, name, result["value"])


def _cannot_add(meta: ModelOptions, name: str, amount: Any, current: Any, attr: Attribute[Any],
                exc: BaseException | None = None) -> errors.ValidationError:
    """The error for an increment that cannot be done: the stored value is None, or the sum fails."""
    if attr.secret:
        text = f"cannot add {SECRET_MASK} to {SECRET_MASK}"
    else:
        text = f"cannot add {_short_repr(amount)} to {_short_repr(current)}" + (f" ({exc})" if exc else "")
    return errors.ValidationError(
        f"{meta.label}.{name}: {text}", model=meta.label, field=name,
        value=current, expected=attr._expected(),
    )


def _settle_increment(instance: ActiveRecord, name: str, value: Any) -> Any:
    """Give the instance the stored result: its value and stored bytes are now known."""
    attr = instance._meta.fields[name]
    instance._data[name] = value
    if instance._stored is not None:
        instance._stored[name.encode()] = attr.encode(value)
    if name in instance._deferred:
        instance._deferred = instance._deferred - {name}
    return value
