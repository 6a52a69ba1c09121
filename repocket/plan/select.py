"""How a query runs: candidates from indexes, the ordering strategies, chunked matching, counts.

Planning only (see :mod:`repocket.plan`): each function is a plan over a
query's state ``q`` (a :class:`~repocket.query.QuerySet`, read here and never
changed), or pure. Evaluation:

1. **Candidates** come from indexes when a lookup can use one (equality sets,
   sorted sets for ranges, the lexicographic set for ``startswith``, pointer
   sets for ``project=`` and ``project__name=``), read in one round trip;
   otherwise from the model's id set (every record: O(model size)).
2. **Order**: by primary key, the sorted candidate ids; by one indexed field,
   the index (only the slice's part when that is exact); else in Python.
3. **Records** are fetched in chunks, Pointers one level per round trip, and
   **every lookup is checked again in Python**, so an index only narrows the
   search and never changes an answer.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from repocket import aggregates, attributes, errors, indexes, keys
from repocket.plan import load, write
from repocket.plan.lookups import (
    EXACT_OPS,
    EXACT_SCORE_LIMITS,
    Lookup,
    counted_by_index,
    exact_index,
    index_read,
    members,
    token,
)
from repocket.plan.rounds import Command, Emit, Pipeline, Plan, command, one

if TYPE_CHECKING:
    from repocket.options import ModelOptions

#: What plans read of a query: a QuerySet (its model, lookups, order, slice, fields, cache).
Query = Any

#: How many members at each end of a sorted index Min/Max reads, to see the values tied on
#: the edge's score in the same round trip.
EDGE_READ = 16


# -- ordering in Python ------------------------------------------------------------------


def _sort_key(field: str) -> Callable[[Any], Any]:
    path = field.split("__")

    def key(record: Any) -> Any:
        value = record
        for part in path:
            if value is None:
                break
            value = value._data[part]
        if value is None or type(value) is attributes.BrokenReference:
            return (0, 0)
        if getattr(value, "_meta", None) is not None:  # a Pointer's target
            return (1, str(value.pk))
        if _is_nan(value):
            return (2, 0)  # NaN has no order: after every number
        if isinstance(value, datetime.datetime):
            value = attributes.as_aware(value)  # naive counts as UTC
        return (1, value)

    return key


def _is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    return False


def _arrange(ranked: list[str], nulls: set[str], universe: set[str], descending: bool) -> list[str]:
    """Candidates in order: None first (by id), index order, then unscored ones (NaN) last."""
    ranked = [pk for pk in ranked if pk in universe]
    placed = set(ranked) | nulls
    rest = sorted(pk for pk in universe if pk not in placed)
    null_ids = sorted(pk for pk in nulls if pk in universe)
    if descending:
        return rest + ranked[::-1] + null_ids
    return null_ids + ranked + rest


def sort_records(records: list[Any], fields: Sequence[str]) -> list[Any]:
    """Records sorted by ``fields`` (``-`` descending), stably; None first when ascending."""
    out = list(records)
    for field in reversed(fields):
        descending = field.startswith("-")
        name = field.lstrip("-")
        attr = out[0]._meta.fields.get(name) if out else None
        if isinstance(attr, attributes.DateTime) or name == "pk":
            out.sort(key=_sort_key(out[0]._meta.pk if name == "pk" else name), reverse=descending)
        elif attr is not None and not isinstance(attr, attributes.Pointer):
            out.sort(key=_plain_sort_key(name), reverse=descending)
        else:
            out.sort(key=_sort_key(name), reverse=descending)
    return out


def _plain_sort_key(name: str) -> Callable[[Any], Any]:
    """The sort key of one non-Pointer attribute: None first, NaN (never equal to itself) last."""

    def key(record: Any) -> Any:
        value = record._data[name]
        if value is None:
            return (0, 0)
        return (2, 0) if value != value else (1, value)

    return key


# -- candidates ---------------------------------------------------------------------------


def candidate_ids(meta: ModelOptions, lookups: Sequence[Lookup]) -> Plan[set[str] | None]:
    """Ids that may match every lookup (from indexes, in one round trip), or None: unknown.

    A Pointer traversal (``project__name=...``) first finds the targets' ids the
    same way, one more round trip per level.
    """
    reads: list[tuple[Command, Callable[[Any], set[str]]]] = []
    for lookup in lookups:
        if not lookup.attr.index:
            continue
        if lookup.sub is not None:
            target_ids = yield from candidate_ids(lookup.attr.to_model._meta, [lookup.sub])  # type: ignore[attr-defined]
            if target_ids is None:
                continue
            eq = [keys.eq_index_key(meta.prefix, lookup.field, pk) for pk in sorted(target_ids)]
            if not eq:
                return set()  # no target matches: no record can
            reads.append((command("SUNION", *eq, key=keys.eq_index_key(meta.prefix, lookup.field, "*")), members))
            continue
        read = index_read(meta, lookup)
        if read is not None:
            reads.append(read)
    if not reads:
        return None
    replies = yield Pipeline([read for read, _ in reads], False, meta.label)
    result: set[str] | None = None
    for (_, parse), reply in zip(reads, replies):
        ids = parse(reply)
        result = ids if result is None else result & ids
        if not result:
            break
    return result


def candidates(q: Query) -> Plan[tuple[list[str] | None, bool]]:
    """Candidate ids (None: every record) and whether every filter used an index (and none excludes)."""
    meta = q.model._meta
    ids = yield from candidate_ids(meta, q._filters)
    indexed = all(exact_index(meta, lookup) for lookup in q._filters) and not q._excludes
    return (None if ids is None else list(ids)), indexed


def all_ids(meta: ModelOptions) -> Plan[list[str]]:
    """Every record's id, in primary key order."""
    reply = yield one("SMEMBERS", meta.ids_key, label=meta.label)
    return sorted(members(reply[0]))


def matches(q: Query, record: Any) -> bool:
    """Whether a loaded record passes every filter and no exclude group."""
    return all(lookup.matches(record) for lookup in q._filters) and not any(
        all(lookup.matches(record) for lookup in group) for group in q._excludes
    )


# -- order ------------------------------------------------------------------------------------


def order_attr(q: Query) -> attributes.Attribute[Any] | None:
    """The attribute of a single-key order that an index can serve exactly, else None."""
    if len(q._order) != 1:
        return None
    attr = q.model._meta.fields.get(q._order[0].lstrip("-"))
    if attr is None or not attr.index or isinstance(attr, attributes.Decimal):
        return None  # (distinct Decimals can share a score: they are ordered in Python)
    return attr if indexes.is_ordered(attr) or indexes.is_lex(attr) else None


def pk_ordered(q: Query, ids: list[str] | None) -> Plan[tuple[list[str], bool] | None]:
    """Candidates in primary key order, when that is the query's order: ids sort as their UUIDs do."""
    pk = q.model._meta.pk
    if q._order not in ((pk,), ("-" + pk,)):
        return None
    ordered = sorted((yield from all_ids(q.model._meta)) if ids is None else ids)
    return (ordered[::-1] if q._order[0].startswith("-") else ordered), False


def ordered_ids(q: Query, ids: list[str] | None,
                attr: attributes.Attribute[Any]) -> Plan[tuple[list[str], bool] | None]:
    """Ids in the query's order, read from the order attribute's index.

    Returns ``(ids, windowed)``: when ``windowed``, the ids are exactly the
    query's slice; otherwise every candidate in order. None when the index
    cannot give the true order (scores past 2**53, Unicode values with NUL).
    """
    meta = q.model._meta
    descending = q._order[0].startswith("-")
    lex = indexes.is_lex(attr)
    index_key = (keys.lex_index_key if lex else keys.sorted_index_key)(meta.prefix, attr.name)
    null_key = keys.null_index_key(meta.prefix, attr.name)
    limit = EXACT_SCORE_LIMITS.get(type(attr), math.inf)
    sliced = bool(q._low) or q._high is not None
    if lex and sliced and ids is not None:
        page = yield from lex_page(q, ids, attr, index_key, null_key, descending)
        if page is not None:
            return page
    if not lex and sliced and ids is not None:
        return (yield from order_candidates(meta, ids, index_key, null_key, limit, descending))
    if not lex and sliced:
        window = yield from order_window(q, index_key, null_key, limit, descending)
        if window is not None:
            return window
    reads = [command("ZRANGE", index_key, 0, -1, *(() if lex else ("WITHSCORES",)), withscores=not lex),
             command("SMEMBERS", null_key)]
    if ids is None:
        reads.append(command("SMEMBERS", meta.ids_key))
    replies = yield Pipeline(reads, False, meta.label)
    if lex:
        if any(member.count(b"\x00") > 1 for member in replies[0]):
            return None  # a value holding NUL sorts ambiguously against the separator
        ranked = [indexes.lex_member_id(m).decode("utf-8", "replace") for m in replies[0]]
    else:
        if replies[0] and max(abs(replies[0][0][1]), abs(replies[0][-1][1])) >= limit:
            return None  # scores past 2**53 (or far-future times) can tie distinct values
        ranked = [m.decode("utf-8", "replace") for m, _ in replies[0]]
    universe = set(ids) if ids is not None else members(replies[2])
    return _arrange(ranked, members(replies[1]), universe, descending), False


def lex_page(q: Query, ids: list[str], attr: attributes.Attribute[Any], index_key: str, null_key: str,
             descending: bool) -> Plan[tuple[list[str], bool] | None]:
    """The slice of a known candidate set ordered by an indexed Unicode field, at the page's cost.

    The lexicographic index holds every record, so reading it all costs
    O(model). Instead, when candidates are many, it is read from its start
    (its end, descending) in growing chunks, keeping the candidates, until
    the page is full: O(page / share of the model that matches). When they
    are few, only their sort field is fetched (HGET) and sorted in Python:
    O(candidates). Either way only the page's records are loaded. None when
    this does not apply (no end to the slice, lookups whose index reads are
    wider than their matches, a value holding NUL): the caller reads the
    whole index instead.
    """
    if q._high is None or not all(lookup.op in EXACT_OPS for lookup in q._filters):
        return None
    if not ids:
        return [], True
    meta = q.model._meta
    zcard, is_null = yield Pipeline([command("ZCARD", index_key), command("SMISMEMBER", null_key, *ids)],
                                    False, meta.label)
    nulls = sorted(pk for pk, flag in zip(ids, is_null) if flag)
    wanted = {pk for pk, flag in zip(ids, is_null) if not flag}
    # The order: None first by id, then the index; descending, the index reversed, then None.
    need = max(q._high - (0 if descending else len(nulls)), 0)
    ranked: list[str] | None = []
    if need and wanted:
        scan = need * zcard / len(wanted)  # index entries to read, if candidates are spread evenly
        if len(wanted) * LEX_FETCH_COST <= scan:
            ranked = yield from _ranked_by_field(meta, attr, sorted(wanted), descending)
        else:
            ranked = yield from _ranked_by_walk(meta, index_key, wanted, need, int(scan), descending)
    if ranked is None:
        return None
    ordered = ranked + nulls if descending else nulls + ranked
    return ordered[q._low:q._high], True


#: The cost of fetching one candidate's sort field, counted in index entries read. When
#: walking the index would read fewer entries than this per candidate, it is walked.
LEX_FETCH_COST = 16
#: The most index entries one round trip of the walk reads.
LEX_WALK_CHUNK = 20_000


def _ranked_by_walk(meta: ModelOptions, index_key: str, wanted: set[str], need: int, scan: int,
                    descending: bool) -> Plan[list[str] | None]:
    """The first ``need`` of ``wanted`` in index order, reading the index in chunks from one end."""
    found: list[str] = []
    start, size = 0, min(max(scan + scan // 4, 64), LEX_WALK_CHUNK)
    while True:
        reply = yield one("ZREVRANGE" if descending else "ZRANGE", index_key, start, start + size - 1,
                          label=meta.label)
        members = reply[0]
        for member in members:
            if member.count(b"\x00") != 1:
                return None  # a value holding NUL sorts ambiguously against the separator
            pk = indexes.lex_member_id(member).decode("utf-8", "replace")
            if pk in wanted:
                found.append(pk)
                if len(found) == need:
                    return found
        if len(members) < size:  # the whole index is read
            return found if len(found) == len(wanted) else None  # a candidate the index lacks: be exact
        start += size
        size = min(size * 2, LEX_WALK_CHUNK)


def _ranked_by_field(meta: ModelOptions, attr: attributes.Attribute[Any], ids: list[str],
                     descending: bool) -> Plan[list[str]]:
    """``ids`` in the order of their stored values of ``attr`` (ties by id), from HGETs of that field."""
    name = attr.name
    raws = yield Pipeline([command("HGET", meta.key(pk), name) for pk in ids], False, meta.label)
    keyed = []
    for pk, raw in zip(ids, raws):
        value = attr.get_default() if raw is None else load.decode_field(meta, attr, meta.key(pk), name, raw)
        keyed.append(("" if value is None else value, pk))
    keyed.sort(reverse=descending)
    return [pk for _, pk in keyed]


def order_candidates(meta: ModelOptions, ids: list[str], index_key: str, null_key: str, limit: float,
                     descending: bool) -> Plan[tuple[list[str], bool] | None]:
    """A known candidate set in order, from its scores alone: O(candidates), not O(model)."""
    if not ids:
        return [], False
    scores, is_null = yield Pipeline([command("ZMSCORE", index_key, *ids), command("SMISMEMBER", null_key, *ids)],
                                     False, meta.label)
    if any(score is not None and abs(score) >= limit for score in scores):
        return None
    ranked = [pk for _, pk in sorted((score, pk) for pk, score in zip(ids, scores) if score is not None)]
    nulls = {pk for pk, flag in zip(ids, is_null) if flag}
    return _arrange(ranked, nulls, set(ids), descending), False


def order_window(q: Query, index_key: str, null_key: str, limit: float,
                 descending: bool) -> Plan[tuple[list[str], bool] | None]:
    """The slice of every record in order, reading only that part of the index.

    Possible when every record is either scored or None (no NaN): then the
    order is the None ids (by id) and the sorted set, or the reverse.
    """
    meta = q.model._meta
    total, scored, null_reply, lowest, highest = yield Pipeline([
        command("SCARD", meta.ids_key),
        command("ZCARD", index_key),
        command("SMEMBERS", null_key),
        command("ZRANGE", index_key, 0, 0, "WITHSCORES", withscores=True),
        command("ZRANGE", index_key, -1, -1, "WITHSCORES", withscores=True),
    ], False, meta.label)
    nulls = sorted(members(null_reply))
    if any(abs(score) >= limit for _, score in lowest + highest) or total != scored + len(nulls):
        return None
    high = total if q._high is None else min(q._high, total)
    if q._low >= high:
        return [], True
    # Positions of the scored part and of the None part in the whole order.
    scored_at, nulls_at = (0, scored) if descending else (len(nulls), 0)
    start, stop = max(q._low - scored_at, 0), max(min(high - scored_at, scored), 0)
    window: list[str] = []
    if start < stop:
        reply = yield one("ZREVRANGE" if descending else "ZRANGE", index_key, start, stop - 1, label=meta.label)
        window = [m.decode() for m in reply[0]]
    null_part = nulls[max(q._low - nulls_at, 0):max(high - nulls_at, 0)]
    return (window + null_part if descending else null_part + window), True


# -- records ----------------------------------------------------------------------------------


def loaded_fields(q: Query) -> frozenset[str] | None:
    """What to fetch of each record: ``only()``'s fields plus those the query checks or orders by."""
    if q._fields is None:
        return None
    needed = {lookup.field for lookup in q._filters}
    needed.update(lookup.field for group in q._excludes for lookup in group)
    needed.update(field.lstrip("-").split("__")[0] for field in q._order)
    return q._fields | needed  # type: ignore[no-any-return]


def load_records(q: Query, ids: Sequence[str]) -> Plan[list[Any]]:
    """The records of ``ids`` that exist, with only the query's fields when it has ``only()``."""
    meta = q.model._meta
    fields = loaded_fields(q)
    records = [r for r in (yield from load.load(meta, [meta.key(pk) for pk in ids], fields=fields)) if r is not None]
    if fields is not None:
        for record in records:
            record._loaded_with = q._connection  # where its deferred attributes are read
    return records


def fetch_matching(q: Query, ids: list[str], chunk_size: int, skip: int, limit: int | None) -> Plan[None]:
    """Load ``ids`` in chunks, emitting matches after ``skip`` of them, at most ``limit``.

    With a limit, the first chunk is just large enough to fill the slice if
    every record matches, and each next one twice the last (up to
    ``chunk_size``), so a slice costs few records and few round trips.
    """
    size = chunk_size if limit is None else max(1, min(chunk_size, skip + limit))
    check = q._filters or q._excludes
    start = 0
    while start < len(ids) and limit != 0:
        chunk = ids[start:start + size]
        start += size
        size = min(size * 2, chunk_size)
        found = []
        for record in (yield from load_records(q, chunk)):
            if check and not matches(q, record):
                continue
            if skip:
                skip -= 1
                continue
            if limit is not None:
                if limit == 0:
                    break
                limit -= 1
            found.append(record)
        if found:
            yield Emit(found)


def strategy(q: Query, chunk_size: int, materialize: bool = False) -> Plan[tuple[Plan[None], bool]]:
    """How to fetch the query's records: a plan that emits them, and whether in the query's order.

    With an indexed order, only the ids of the slice are fetched when every
    filter's index read is exact; otherwise records are fetched in chunks
    from the start until the slice is full, and checked in Python. A query
    ``materialize``-d whole, with nothing sliced, is sorted in Python:
    cheaper than reading the index.
    """
    ids, indexed = yield from candidates(q)
    attr = order_attr(q) if indexed else None
    unsliced = not q._low and q._high is None
    plan = yield from pk_ordered(q, ids)
    if plan is None and attr is not None and not (materialize and unsliced):
        plan = yield from ordered_ids(q, ids, attr)
    if plan is not None:
        ordered, windowed = plan
        if windowed:
            window, skip, limit = ordered, 0, None
        elif indexed and all(lookup.op in EXACT_OPS for lookup in q._filters):
            window, skip, limit = ordered[q._low:q._high], 0, None
        else:
            window, skip = ordered, q._low
            limit = None if q._high is None else q._high - q._low
        return fetch_matching(q, window, chunk_size, skip, limit), True
    if ids is None:
        ids = yield from all_ids(q.model._meta)
    if q._order:  # sorted in Python afterwards: every candidate is needed
        return fetch_matching(q, ids, chunk_size, 0, None), False
    # Unordered: any order is the query's order, so a slice stops when it is full.
    limit = None if q._high is None else q._high - q._low
    return fetch_matching(q, ids, chunk_size, q._low, limit), True


def collect(plan: Plan[Any]) -> Plan[list[Any]]:
    """Run ``plan`` inside this one, gathering what it emits instead of passing it on."""
    items: list[Any] = []
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration:
            return items
        reply, error = None, None
        if isinstance(step, Emit):
            items.extend(step.items)
            continue
        try:
            reply = yield step
        except GeneratorExit:
            plan.close()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the inner plan, which may catch it
            error = exc


def evaluate(q: Query) -> Plan[list[Any]]:
    """Every matching record, in order and sliced: what iterating the query gives."""
    if q._cache is not None:
        return list(q._cache)
    if q._empty:
        return []
    source, in_order = yield from strategy(q, chunk_size=10**9, materialize=True)
    return _arranged(q, (yield from collect(source)), in_order)


def _arranged(q: Query, records: list[Any], in_order: bool) -> list[Any]:
    """The loaded matches in the query's order, sliced unless they came as the slice already."""
    records = sort_records(records, q._order)  # in order too: ties the index scores could not tell apart
    return records if in_order else records[q._low:q._high]


def iterate(q: Query, chunk_size: int) -> Plan[None]:
    """Emit the matching records ``chunk_size`` per round trip (all at once when sorted in Python)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if q._cache is not None or q._empty:
        yield Emit(list(q._cache or ()))
        return
    source, in_order = yield from strategy(q, chunk_size)
    if in_order:
        yield from source
    else:  # sorted in Python: every match is needed first
        yield Emit(_arranged(q, (yield from collect(source)), in_order))


# -- terminal operations ------------------------------------------------------------------


def count(q: Query) -> Plan[int]:
    """How many records match; one SCARD when the id set or one exact index answers alone.

    Those two trust the index, which every write keeps exact (``check()``
    reports drift); anything else loads the candidates and checks them.
    """
    if q._cache is not None:
        return len(q._cache)
    if q._empty:
        return 0
    key = _counted_by(q)
    if key is not None:
        return int((yield one("SCARD", key, label=q.model._meta.label))[0])
    return len((yield from evaluate(q)))


def _counted_by(q: Query) -> str | None:
    """The set whose size is the query's count, if one is: the id set, or one exact index set."""
    if q._excludes or q._low or q._high is not None:
        return None
    meta = q.model._meta
    if not q._filters:
        return meta.ids_key  # type: ignore[no-any-return]
    if len(q._filters) != 1 or not counted_by_index(q._filters[0]):
        return None
    lookup = q._filters[0]
    if lookup.value is None:
        return keys.null_index_key(meta.prefix, lookup.field)
    return keys.eq_index_key(meta.prefix, lookup.field, token(lookup.attr, lookup.value))


def exists(q: Query) -> Plan[bool]:
    """Whether any record matches; stops at the first match instead of counting them all."""
    if q._cache is not None:
        return bool(q._cache)
    if q._empty:
        return False
    if _counted_by(q) is not None:
        return (yield from count(q)) > 0  # one SCARD
    probe = q._clone()
    probe._order = ()  # any match will do
    probe._fields = frozenset({q.model._meta.pk})
    return bool((yield from evaluate(probe[0:1])))


def first(q: Query) -> Plan[Any]:
    """The first matching record by the query's order (by primary key when unordered), or None."""
    if q._cache is not None:
        return q._cache[0] if q._cache else None
    found = yield from evaluate((q if q._order else q.order_by("pk"))[0:1])
    return found[0] if found else None


def last(q: Query) -> Plan[Any]:
    """The last matching record by the query's order (by primary key when unordered), or None."""
    if q._cache is None and not q._order:
        return (yield from first(q.order_by("-pk")))
    found = yield from evaluate(q)
    return found[-1] if found else None


def earliest(q: Query, fields: Sequence[str]) -> Plan[Any]:
    """The first record ordered by ``fields``; DoesNotExist when there is none."""
    if not fields:
        raise TypeError("earliest() and latest() take the field names to order by")
    found = yield from first(q.order_by(*fields))
    if found is None:
        raise q.model.DoesNotExist(f"{q.model._meta.label}: no record to order by {', '.join(fields)}")
    return found


def latest(q: Query, fields: Sequence[str]) -> Plan[Any]:
    """The last record ordered by ``fields`` (the first in descending order)."""
    return (yield from earliest(q, [f[1:] if f.startswith("-") else "-" + f for f in fields]))


def get_by_pk(model: type[Any], value: Any) -> Plan[Any]:
    """The record with primary key ``value``, read by key in one round trip."""
    meta = model._meta
    pk = meta.fields[meta.pk].cast(value)
    key = meta.key(pk)
    record = (yield from load.load(meta, [key]))[0]
    if record is None:
        raise model.DoesNotExist(f"{meta.label} matching {meta.pk}={str(pk)!r} does not exist (no key {key})")
    return record


def get(q: Query, args: Sequence[Any], lookups: dict[str, Any]) -> Plan[Any]:
    """The one matching record; ``get(pk)``, ``get(id=pk)`` and ``get(pk=pk)`` read it by key."""
    meta = q.model._meta
    if args:
        if len(args) > 1 or lookups:
            raise TypeError("get() takes one primary key or keyword lookups")
        lookups = {meta.pk: args[0]}
    pk_names = {meta.pk, "pk", f"{meta.pk}__exact"}
    direct = [name for name in lookups if name in pk_names]
    if (direct and len(lookups) == 1 and not q._filters and not q._excludes
            and not q._empty and q._fields is None):
        return (yield from get_by_pk(q.model, lookups[direct[0]]))
    lookups = dict(lookups)
    if "pk" in lookups:
        lookups[meta.pk] = lookups.pop("pk")
    found = yield from evaluate((q.filter(**lookups) if lookups else q)[:2])
    if not found:
        raise q.model.DoesNotExist(f"{meta.label} matching {_describe(meta, lookups)} does not exist")
    if len(found) > 1:
        raise q.model.MultipleObjectsReturned(f"more than one {meta.label} matches {_describe(meta, lookups)}")
    return found[0]


def get_or_create(q: Query, defaults: dict[str, Any] | None, lookups: dict[str, Any]) -> Plan[tuple[Any, bool]]:
    """The record matching ``lookups``, or a new one made of them and ``defaults``; see QuerySet."""
    try:
        return (yield from get(q, (), lookups)), False
    except q.model.DoesNotExist:
        pass
    return (yield from _create_or_get(q, lookups, defaults))


def update_or_create(q: Query, defaults: dict[str, Any] | None, create_defaults: dict[str, Any] | None,
                     lookups: dict[str, Any]) -> Plan[tuple[Any, bool]]:
    """Update the record matching ``lookups`` with ``defaults``, or create it; see QuerySet."""
    try:
        record = yield from get(q, (), lookups)
    except q.model.DoesNotExist:
        record, created = yield from _create_or_get(q, lookups, defaults if create_defaults is None else create_defaults)
        if created:
            return record, True
    for name, value in (defaults or {}).items():
        if name not in q.model._meta.fields:
            raise q.model._meta.unknown_field(name)
        setattr(record, name, value)
    yield from record._save_plan(False)
    return record, False


def _create_or_get(q: Query, lookups: dict[str, Any], defaults: dict[str, Any] | None) -> Plan[tuple[Any, bool]]:
    meta = q.model._meta
    params = {meta.pk if name == "pk" else name.removesuffix("__exact"): value
              for name, value in lookups.items() if "__" not in name.removesuffix("__exact")}
    params.update(defaults or {})
    record = q.model(**params)
    try:
        yield from record._save_plan(False)
        return record, True
    except errors.UniqueConstraintError as clash:
        error = clash
    try:
        return (yield from get(q, (), lookups)), False  # another caller created it first
    except q.model.DoesNotExist:
        raise error from None  # the clash was on another value


def in_bulk(q: Query, id_list: Iterable[Any] | None, field_name: str) -> Plan[dict[Any, Any]]:
    """The matching records keyed by ``field_name``; by primary key read directly in one round trip."""
    meta = q.model._meta
    name = meta.pk if field_name == "pk" else field_name
    attr = meta.fields.get(name)
    if attr is None:
        raise meta.unknown_field(name)
    if name != meta.pk and not attr.unique:
        raise errors.ValidationError(
            f"{meta.label}.{name}: in_bulk() needs the primary key or a unique=True attribute",
            model=meta.label, field=name, value=None, expected="a unique attribute",
        )
    q._check_unsliced("in_bulk")
    if id_list is None:
        return {record._data[name]: record for record in (yield from evaluate(q))}
    wanted = list(id_list)
    if not wanted or q._empty:
        return {}
    if name != meta.pk:
        found = yield from evaluate(q.filter(**{f"{name}__in": wanted}))
        return {record._data[name]: record for record in found}
    pks = sorted({str(attr.cast(pk)) for pk in wanted})
    found = [r for r in (yield from load_records(q, pks)) if not (q._filters or q._excludes) or matches(q, r)]
    return {record._data[name]: record for record in found}


def aggregate(q: Query, named: dict[str, aggregates.Aggregate]) -> Plan[dict[str, Any]]:
    """Summary values over the matching records; see QuerySet.aggregate."""
    meta = q.model._meta
    for alias, agg in named.items():
        if not isinstance(agg, aggregates.Aggregate):
            raise TypeError(f"aggregate() takes Count, Sum, Avg, Min or Max, not {agg!r} for {alias!r}")
        agg.check(meta)
    if not named:
        return {}
    if q._empty:
        return {alias: agg.empty() for alias, agg in named.items()}
    unfiltered = (not q._filters and not q._excludes and q._low == 0 and q._high is None
                  and q._cache is None)
    if unfiltered and all(agg.from_index(meta) for agg in named.values()):
        return (yield from aggregate_from_indexes(meta, named))
    if q._cache is not None:
        records: Sequence[Any] = q._cache
    else:
        probe = q._clone()
        if probe._low == 0 and probe._high is None:
            probe._order = ()  # the order matters only to say which records a slice holds
        records = yield from evaluate(probe.only(*(agg.field_name(meta) for agg in named.values())))
    return {alias: agg.compute(meta, records) for alias, agg in named.items()}


def aggregate_from_indexes(meta: ModelOptions, named: dict[str, aggregates.Aggregate]) -> Plan[dict[str, Any]]:
    """Count and Min/Max of a whole model from its indexes: one round trip, plus one for
    a Min/Max whose score is not exactly its value (DateTime, Decimal, integers past 2**53),
    and one more when over 16 values share the edge's score."""
    reads: list[Command] = []
    for agg in named.values():
        name = agg.field_name(meta)
        if isinstance(agg, aggregates.Count):
            reads.append(command("SCARD", meta.ids_key))
            if name != meta.pk:
                reads.append(command("SCARD", keys.null_index_key(meta.prefix, name)))
        else:
            # The edge and its neighbours: the values sharing the edge's score, if it is not exact.
            sort_key = keys.sorted_index_key(meta.prefix, name)
            start, stop = (-EDGE_READ, -1) if isinstance(agg, aggregates.Max) else (0, EDGE_READ - 1)
            reads.append(command("ZRANGE", sort_key, start, stop, "WITHSCORES", withscores=True))
    replies = iter((yield Pipeline(reads, False, meta.label)))
    out: dict[str, Any] = {}
    for alias, agg in named.items():
        name = agg.field_name(meta)
        attr = meta.fields[name]
        if isinstance(agg, aggregates.Count):
            total = int(next(replies))
            out[alias] = total if name == meta.pk else total - int(next(replies))
            continue
        edge = next(replies)
        if not edge:
            out[alias] = None
            continue
        if isinstance(agg, aggregates.Max):
            edge = edge[::-1]
        score = edge[0][1]
        if isinstance(attr, attributes.Float):
            out[alias] = attr.cast(score)  # the score is the value
        elif isinstance(attr, attributes.Integer) and abs(score) < 2**53:
            out[alias] = int(score)
        else:  # every value sharing the extreme score, compared exactly
            tied = [m.decode() for m, s in edge if s == score]
            if len(tied) == len(edge) == EDGE_READ:  # the tie may go on past what was read
                sort_key = keys.sorted_index_key(meta.prefix, name)
                tied = [m.decode() for m in (yield one("ZRANGEBYSCORE", sort_key, score, score, label=meta.label))[0]]
            records = [r for r in (yield from load.load(meta, [meta.key(pk) for pk in tied],
                                                        fields=frozenset({meta.pk, name}))) if r is not None]
            out[alias] = agg.compute(meta, records) if records else None
    return out


def value_fields(q: Query, fields: Sequence[str]) -> list[str]:
    """The names values() returns, checked: attributes, ``pk``, or ``pointer__field``."""
    meta = q.model._meta
    for name in fields:
        head, _, rest = name.partition("__")
        if head == "pk" and not rest:
            continue
        if head not in meta.fields:
            raise meta.unknown_field(head)
        if rest:
            attr = meta.fields[head]
            target = attr.to_model._meta if isinstance(attr, attributes.Pointer) else None  # type: ignore[attr-defined]
            if target is None or (rest not in target.fields and rest != "pk"):
                raise meta.unknown_field(name, "attribute path (a Pointer's attribute: pointer__field)")
    return list(fields) or meta.field_names()


def value_records(q: Query, fields: Sequence[str]) -> Plan[list[Any]]:
    """The records for values(): only the attributes named are fetched (whatever only() said)."""
    if q._cache is not None:
        return list(q._cache)
    probe = q._clone()
    probe._fields = None
    if fields:
        probe = probe.only(*{name.partition("__")[0] for name in fields})
    return (yield from evaluate(probe))


def values(q: Query, fields: Sequence[str]) -> Plan[list[dict[str, Any]]]:
    """A dict per record of the given attributes; see QuerySet.values."""
    names = value_fields(q, fields)
    rows = [{name: _plain(record, name) for name in names} for record in (yield from value_records(q, fields))]
    if q._distinct:
        rows = [dict(row) for row in _unique_rows(tuple(row.items()) for row in rows)]
    return rows


def values_list(q: Query, fields: Sequence[str], flat: bool) -> Plan[list[Any]]:
    """A tuple per record of the given attributes, or the values with ``flat``; see QuerySet."""
    names = value_fields(q, fields)
    if flat and len(names) != 1:
        raise TypeError("values_list(flat=True) takes exactly one field")
    records = yield from value_records(q, fields)
    rows: list[Any] = ([_plain(record, names[0]) for record in records] if flat
                       else [tuple(_plain(record, name) for name in names) for record in records])
    return _unique_rows(rows) if q._distinct else rows


def update(q: Query, values: dict[str, Any]) -> Plan[int]:
    """Set attributes on every matching record and save them, 500 per script call."""
    write.updatable(q.model._meta, values)
    records = yield from evaluate(q)
    for record in records:
        for name, value in values.items():
            setattr(record, name, value)
    yield from write.bulk_save(q.model, records, 500)
    return len(records)


def delete(q: Query) -> Plan[int]:
    """Delete every matching record (with strings and index entries), 500 per script call."""
    if q._empty:
        return 0
    records = yield from evaluate(q)
    meta = q.model._meta
    deleted = 0
    for start in range(0, len(records), 500):
        batch = records[start:start + 500]
        counts = yield from write.delete(meta, batch)
        deleted += sum(1 for n in counts if n)
        for record in batch:
            record._stored = None
            record._stored_streams = {}
    return deleted


# -- values -----------------------------------------------------------------------------------


def _plain(record: Any, name: str) -> Any:
    """A values() cell: the attribute, a Pointer's target id, or ``pointer__field`` of its target."""
    head, _, rest = name.partition("__")
    meta = record._meta
    if head == "pk":
        head = meta.pk
    value = record._data[head] if head in record._data else getattr(record, head)  # deferred: loads
    if rest:  # a missing or broken target has no fields: None, as an outer join gives
        return _plain(value, rest) if getattr(value, "_meta", None) is not None else None
    if isinstance(meta.fields[head], attributes.Pointer):
        return None if value is None else value.pk
    return value


def _unique_rows(rows: Iterable[Any]) -> list[Any]:
    """Rows without repeats, first occurrences in order (unhashable rows compared by equality)."""
    seen: set[Any] = set()
    kept: list[Any] = []
    for row in rows:
        try:
            if row in seen:
                continue
            seen.add(row)
        except TypeError:  # a JSON value (dict, list) in the row
            if row in kept:
                continue
        kept.append(row)
    return kept


class _Masked:
    def __repr__(self) -> str:
        return "'***'"


def _describe(meta: ModelOptions, lookups: dict[str, Any]) -> str:
    """Lookups for a message, secret values masked (``{'token': '***'}``)."""
    shown: dict[str, Any] = {}
    for name, value in lookups.items():
        parts = name.split("__")
        attr = meta.fields.get(meta.pk if parts[0] == "pk" else parts[0])
        secret = attr is not None and attr.secret
        if attr is not None and isinstance(attr, attributes.Pointer) and len(parts) > 1:
            target = attr.to_model._meta.fields.get(parts[1])
            secret = secret or (target is not None and target.secret)
        shown[name] = _Masked() if secret else value
    return repr(shown)
