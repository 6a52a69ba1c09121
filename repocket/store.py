"""Reading records from Redis and writing them back: the only module that runs record commands.

Reads fetch every requested record in one pipeline (hash and ByteStreams in one
MULTI, so they are one snapshot), then resolve Pointers one level per round
trip, each target fetched once (no N+1). Writes go through the ``write`` Lua
script: one atomic call for a record or a whole batch of them (all of it or
nothing), re-planned when a record changed under it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ConnectionError as RedisPyConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisPyTimeoutError

from repocket import errors, keys, serialization
from repocket.attributes import ATTRIBUTE_TYPES, Attribute
from repocket.indexes import WritePlan
from repocket.scripts import get as get_script

if TYPE_CHECKING:
    from repocket.model import ActiveRecord, ModelOptions

#: How many times a write is re-planned when the record changed under it.
MAX_WRITE_ATTEMPTS = 16
#: The same for a guarded increment (Float, Decimal), which contends by design.
INCREMENT_ATTEMPTS = 200

_ENVELOPE = frozenset({"type", "value", "module"})


# -- errors ---------------------------------------------------------------------


def wrap_redis_error(exc: BaseException, meta: ModelOptions | None, key: str | None) -> errors.RepocketError:
    """The repocket error for a redis-py error met while working on ``key``."""
    if isinstance(exc, errors.RepocketError):
        return exc
    where = f" ({key})" if key else ""
    if isinstance(exc, (RedisPyConnectionError, RedisPyTimeoutError)):
        return errors.RedisConnectionError(f"Redis is unreachable{where}: {exc}")
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE") and key:
        return errors.CorruptRecordError(f"{key} holds the wrong type of Redis value: {exc}", key=key)
    label = meta.label if meta else "repocket"
    return errors.RepocketError(f"{label}: Redis refused a command{where}: {exc}")


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
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    try:
        envelope = serialization.loads(raw)
    except ValueError as exc:
        raise _corrupt(key, name, f"not valid JSON ({exc})") from None
    if type(envelope) is not dict:
        raise _corrupt(key, name, f"expected a JSON object envelope, found {type(envelope).__name__}")
    tag = envelope.get("type")
    expected = type(attr).__name__
    if tag != expected and not (isinstance(tag, str) and tag in attr.compatible_tags):
        if isinstance(tag, str) and tag in ATTRIBUTE_TYPES:
            raise _corrupt(key, name, f"stored as {tag}, but {meta.label}.{name} is {expected}")
        raise _corrupt(key, name, f"unknown type tag {tag!r}")
    module = envelope.get("module")
    if module != type(attr).__module__:
        raise _corrupt(
            key, name, f"module {module!r} is not {type(attr).__module__!r} (nothing was imported)"
        )
    if "value" not in envelope:
        raise _corrupt(key, name, "the envelope has no 'value' member")
    extra = envelope.keys() - _ENVELOPE - attr.extra_members
    if extra:
        raise _corrupt(key, name, f"unexpected envelope members {sorted(extra)}")
    try:
        return attr.decode(envelope["value"], envelope)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise _corrupt(key, name, f"invalid {expected} value {envelope['value']!r} ({exc})") from None


Fetched = tuple[dict[Any, Any], dict[str, bytes]]


def fetch(conn: redis.Redis, items: Sequence[tuple[ModelOptions, str]]) -> list[Fetched | None]:
    """Raw hashes and ByteStream strings of many records, in one round trip.

    A record with ByteStreams is read in one MULTI, so its hash and strings are
    one snapshot. Missing records come back as None.
    """
    if not items:
        return []
    if len(items) == 1 and not items[0][0].streams:
        meta, key = items[0]
        try:
            raw = conn.hgetall(key)
        except RedisError as exc:
            raise wrap_redis_error(exc, meta, key) from exc
        return [(raw, {}) if raw else None]
    transaction = any(meta.streams for meta, _ in items)
    pipe = conn.pipeline(transaction=transaction)
    for meta, key in items:
        pipe.hgetall(key)
        for name in meta.streams:
            pipe.get(keys.stream_key(key, name))
    try:
        replies = pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise wrap_redis_error(exc, items[0][0], items[0][1]) from exc
    out: list[Fetched | None] = []
    position = 0
    for meta, key in items:
        raw = replies[position]
        if isinstance(raw, Exception):
            raise wrap_redis_error(raw, meta, key)
        streams = {}
        for offset, name in enumerate(meta.streams, start=1):
            value = replies[position + offset]
            if isinstance(value, Exception):
                raise wrap_redis_error(value, meta, keys.stream_key(key, name))
            streams[name] = value or b""
        position += 1 + len(meta.streams)
        out.append((raw, streams) if raw else None)
    return out


Pending = list[tuple["ActiveRecord", str, str]]


def _read_version(key: str, raw_hash: dict[bytes, bytes]) -> int:
    raw = raw_hash.get(b"_version", b"0")
    try:
        return int(raw)
    except ValueError:
        raise _corrupt(key, "_version", f"the version counter {raw!r} is not an integer") from None


def build(meta: ModelOptions, key: str, fetched: Fetched, pending: Pending) -> ActiveRecord:
    """An instance from its raw hash and strings; its Pointers go into ``pending``."""
    raw_hash, raw_streams = fetched
    if raw_hash and not isinstance(next(iter(raw_hash)), bytes):  # a client that decodes responses
        raw_hash = {field.encode(): value for field, value in raw_hash.items()}
    model = meta.model
    instance = model.__new__(model)
    data: dict[str, Any] = {}
    for field, name, attr, read in meta.layout:
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
        target = data[name]
        if target is not None:
            pending.append((instance, name, target))
            data[name] = None
    instance._data = data
    instance._version = _read_version(key, raw_hash) if meta.versioned else None
    instance._stored = raw_hash  # what save() compares with to write only changes
    instance._stored_streams = dict(raw_streams) if raw_streams else {}
    return instance


def load(
    conn: redis.Redis,
    meta: ModelOptions,
    record_keys: Sequence[str],
    identity: dict[str, ActiveRecord] | None = None,
) -> list[ActiveRecord | None]:
    """Instances for record keys (None where missing), Pointers resolved level by level."""
    identity = {} if identity is None else identity
    pending: Pending = []
    out: list[ActiveRecord | None] = []
    for key, fetched in zip(record_keys, fetch(conn, [(meta, key) for key in record_keys])):
        if fetched is None:
            out.append(None)
            continue
        instance = identity.get(key)
        if instance is None:
            instance = identity[key] = build(meta, key, fetched, pending)
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
            target = identity.get(target_key)
            if target is None:
                attr = instance._meta.fields[name]
                if not attr.null:
                    source = instance._meta.key(instance._data[instance._meta.pk])
                    raise errors.BrokenReferenceError(
                        f"{source} field {name!r} points to {target_key}, which does not exist",
                        key=source,
                        field=name,
                        target=target_key,
                    )
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
               attempts: int = MAX_WRITE_ATTEMPTS) -> None:
    """Write every job in one call of the ``write`` script: all of them, or none.

    When records changed under us, nothing was written: those jobs are
    re-planned from what Redis holds and the whole batch is sent again.
    """
    script = get_script("write")
    for attempt in range(attempts):
        if attempt > 1:  # contended: step aside a little so the writers interleave
            time.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        plans = [job.make_plan(job) for job in jobs]
        script_keys: list[str] = []
        args: list[Any] = [len(plans)]
        for plan in plans:
            script_keys.extend(plan.keys)
            args.extend(plan.args())
        try:
            reply = script(conn, script_keys, args)
        except RedisError as exc:
            raise wrap_redis_error(exc, meta, plans[0].keys[0]) from exc
        if reply[0] == b"ok":
            for job, deleted in zip(jobs, reply[1:]):
                job.deleted = int(deleted)
            return
        refusals = list(zip(reply[1::2], reply[2::2]))
        for number, refusal in refusals:  # a refusal we cannot retry wins
            job, plan = jobs[int(number) - 1], plans[int(number) - 1]
            status = refusal[0]
            if status == b"missing" and job.must_exist:
                raise meta.model.DoesNotExist(f"{plan.keys[0]} does not exist; nothing was written")
            if status == b"stale" or (status == b"missing" and meta.versioned):
                found = refusal[1].decode() if len(refusal) > 1 and refusal[1] else "no record"
                raise errors.ConflictError(
                    f"{plan.keys[0]}: changed by someone else since it was loaded "
                    f"(stored version: {found}); nothing was written. Call refresh() and retry."
                )
            if status not in (b"missing", b"conflict"):
                raise_for_reply(refusal, meta, plan)
        for number, refusal in refusals:
            jobs[int(number) - 1].retry_from(refusal)
    raise errors.ConflictError(
        f"{meta.label}: records kept changing during the write; nothing was written"
    )


def raise_for_reply(reply: list[Any], meta: ModelOptions, plan: WritePlan) -> None:
    """Turn a refusal from the write script into the matching exception."""
    status = reply[0]
    if status == b"wrongtype":
        key, have = reply[1].decode(), reply[2].decode()
        raise errors.CorruptRecordError(
            f"{key} is a Redis {have}, not what repocket keeps there; nothing was written", key=key
        )
    if status == b"taken":
        slot, token, holder = int(reply[1]), reply[2].decode(), reply[3].decode()
        field = plan.keys[slot - 1].rsplit(":", 1)[-1]
        value = plan.unique_values.get(token, token)
        shown = "'***' (secret)" if meta.fields[field].secret else repr(value)
        raise errors.UniqueConstraintError(
            f"{meta.label}.{field}: the value {shown} is already used by {meta.key(holder)}; "
            "nothing was written",
            model=meta.label,
            field=field,
            value=value,
        )
    raise errors.RepocketError(f"{meta.label}: unexpected reply from the write script: {reply!r}")


def _old_value(meta: ModelOptions, record: str, name: str, raw: bytes) -> Any:
    """The decoded stored value, or _UNREADABLE when it is corrupt (its entries cannot be found)."""
    try:
        return decode_field(meta, meta.fields[name], record, name, raw)
    except errors.CorruptRecordError:
        return _UNREADABLE


_UNREADABLE: Any = object()


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
        plan.remove_entries(meta, name, old, pk)
        if unique_slot and old is not None:
            plan.write("udel", unique_slot, attr.index_token(old), pk)
    if new is _UNREADABLE:
        return
    plan.add_entries(meta, name, new, pk)
    if unique_slot and new is not None:
        token = attr.index_token(new)
        plan.check("unique", unique_slot, token, pk)
        plan.unique_values[token] = new
        plan.write("uset", unique_slot, token, pk)


def save_instances(conn: redis.Redis, meta: ModelOptions, instances: Sequence[ActiveRecord], force: bool = False) -> None:
    """Write validated instances (ids assigned) in one script call: all of them, or none."""
    prepared = []
    jobs = []
    for instance in instances:
        pk = str(instance._data[meta.pk])
        record = meta.key(pk)
        encoded = {field: attr.encode(instance._data[name])
                   for field, name, attr, _ in meta.layout if field is not None}
        streams = {name: instance._data[name] or b"" for name in meta.streams}
        prepared.append((instance, encoded, streams))

        def make_plan(job: WriteJob, instance: ActiveRecord = instance, pk: str = pk, record: str = record,
                      encoded: dict[bytes, bytes] = encoded, streams: dict[str, bytes] = streams) -> WritePlan:
            plan = WritePlan(record)
            stored = job.stored
            if meta.versioned:
                plan.check("version", str(instance._version or ""))
                plan.write("bump")
            if stored is None:
                changed = encoded
            else:
                plan.check("exists")
                changed = {field: raw for field, raw in encoded.items() if stored.get(field) != raw}
            for name in meta.indexed:
                if name.encode() in changed:
                    _plan_index_change(plan, meta, job, record, pk, name, instance._data[name])
            for field, raw in changed.items():
                plan.write("hset", field, raw)
            old_streams = instance._stored_streams if stored is not None else None
            for name, value in streams.items():
                if old_streams is None or old_streams.get(name, b"") != value:
                    slot = plan.slot(keys.stream_key(record, name), "t")
                    if value:
                        plan.write("set", slot, value)
                    else:
                        plan.write("del", slot)
            plan.write("sadd", plan.slot(meta.ids_key, "s"), pk)
            return plan

        jobs.append(WriteJob(make_plan, None if force else instance._stored))
    run_writes(conn, meta, jobs)
    for instance, encoded, streams in prepared:
        instance._stored = encoded
        instance._stored_streams = streams
        if meta.versioned:
            instance._version = (instance._version or 0) + 1


def delete_records(conn: redis.Redis, meta: ModelOptions, instances: Sequence[ActiveRecord]) -> list[int]:
    """Delete records with their strings and index entries, each atomically; keys deleted per record."""
    jobs = []
    for instance in instances:
        pk = str(instance._data[meta.pk])
        record = meta.key(pk)

        def make_plan(job: WriteJob, pk: str = pk, record: str = record,
                      instance: ActiveRecord = instance) -> WritePlan:
            plan = WritePlan(record)
            if meta.versioned:
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
        script_keys = [record]
        eq_prefix = ""
        if attr.index:
            script_keys.append(keys.sorted_index_key(meta.prefix, name))
            eq_prefix = keys.eq_index_key(meta.prefix, name, "")
        try:
            reply = get_script("incr")(conn, script_keys, [name, step, pk, eq_prefix, "1" if meta.versioned else ""])
        except RedisError as exc:
            raise wrap_redis_error(exc, meta, record) from exc
        status = reply[0]
        if status == b"ok":
            if meta.versioned and reply[2] == (instance._version or 0) + 1:
                instance._version = reply[2]  # nobody else wrote in between: still current
            return _settle_increment(instance, name, int(reply[1]))
        if status == b"missing":
            raise meta.model.DoesNotExist(f"{record} does not exist; nothing was incremented")
        if status == b"wrongtype":
            raise errors.CorruptRecordError(
                f"{reply[1].decode()} is a Redis {reply[2].decode()}, not an index; nothing was written",
                key=reply[1].decode(),
            )
        # "shape" (null or unusual text) and "big" fall through to the exact path below.
    result: dict[str, Any] = {}
    # A versioned instance whose version is current stays current after its own
    # increment; the first try checks that, and a stale one retries without it.
    state = {"check_version": meta.versioned}

    def make_plan(job: WriteJob) -> WritePlan:
        plan = WritePlan(record)
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
                raise _cannot_add_to_none(meta, name, amount, attr)
            return plan  # absent with a None default: written only if the guard holds
        result["value"] = new = current + step
        if attr.index:
            _plan_index_change(plan, meta, job, record, pk, name, new)
        plan.write("hset", name, attr.encode(new))
        if meta.versioned:
            plan.write("bump")
        return plan

    try:
        run_writes(conn, meta, [WriteJob(make_plan, {}, must_exist=True)], INCREMENT_ATTEMPTS)
    except errors.ConflictError:
        if not state["check_version"]:
            raise
        state["check_version"] = False
        run_writes(conn, meta, [WriteJob(make_plan, {}, must_exist=True)], INCREMENT_ATTEMPTS)
    else:
        if meta.versioned:
            instance._version = (instance._version or 0) + 1
    if "value" not in result:
        raise _cannot_add_to_none(meta, name, amount, attr)
    return _settle_increment(instance, name, result["value"])


def _cannot_add_to_none(meta: ModelOptions, name: str, amount: Any, attr: Attribute[Any]) -> errors.ValidationError:
    return errors.ValidationError(
        f"{meta.label}.{name}: cannot add {amount!r} to None", model=meta.label, field=name,
        value=None, expected=attr._expected(),
    )


def _settle_increment(instance: ActiveRecord, name: str, value: Any) -> Any:
    attr = instance._meta.fields[name]
    instance._data[name] = value
    if instance._stored is not None:
        instance._stored[name.encode()] = attr.encode(value)
    return value
