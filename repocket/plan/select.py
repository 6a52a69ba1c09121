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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repocket import aggregates, attributes, errors, indexes, keys, registry
from repocket.plan import hooks, load, write
from repocket.plan.lookups import (
    EXACT_OPS,
    EXACT_SCORE_LIMITS,
    Lookup,
    counted_by_index,
    exact_index,
    index_read,
    members,
    record_id,
    set_keys,
    token,
)
from repocket.plan.rounds import Command, Emit, Eval, Pipeline, Plan, command, one, script_read
from repocket.plan.scatter import gather, gather_in_turn

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
            target_ids = yield from target_candidates(lookup.attr.to_model._meta, lookup.sub)  # type: ignore[attr-defined]
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


def target_candidates(meta: ModelOptions, lookup: Lookup) -> Plan[set[str] | None]:
    """:func:`candidate_ids` of one lookup over every partition of ``meta`` (the union), or None: unknown.

    During a move (``Meta.moving_from``) the source partitions are read first,
    then the current ones: a record moved meanwhile is found in one or the other.
    """
    if not meta.scatters:
        return (yield from candidate_ids(meta, [lookup]))
    found = yield from gather_in_turn([candidate_ids(view, [lookup]) for view in meta.scatter_views()],
                                      len(meta.sources()))
    union: set[str] = set()
    for ids in found:
        if ids is None:
            return None
        union |= ids
    return union


def candidates(q: Query) -> Plan[tuple[list[str] | None, bool]]:
    """Candidate ids (None: every record) and whether every filter used an index (and none excludes)."""
    meta = q.meta
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
    attr = q.meta.fields.get(q._order[0].lstrip("-"))
    if attr is None or not attr.index or isinstance(attr, attributes.Decimal):
        return None  # (distinct Decimals can share a score: they are ordered in Python)
    return attr if indexes.is_ordered(attr) or indexes.is_lex(attr) else None


def pk_ordered(q: Query, ids: list[str] | None) -> Plan[tuple[list[str], bool] | None]:
    """Candidates in primary key order, when that is the query's order: ids sort as their UUIDs do."""
    pk = q.meta.pk
    if q._order not in ((pk,), ("-" + pk,)):
        return None
    ordered = sorted((yield from all_ids(q.meta)) if ids is None else ids)
    return (ordered[::-1] if q._order[0].startswith("-") else ordered), False


def ordered_ids(q: Query, ids: list[str] | None,
                attr: attributes.Attribute[Any]) -> Plan[tuple[list[str], bool] | None]:
    """Ids in the query's order, read from the order attribute's index.

    Returns ``(ids, windowed)``: when ``windowed``, the ids are exactly the
    query's slice; otherwise every candidate in order. None when the index
    cannot give the true order (scores past 2**53, Unicode values with NUL).
    A slice with an end whose lookups the index answers exactly is served by
    :func:`ordered_page` instead, at the page's cost.
    """
    meta = q.meta
    descending = q._order[0].startswith("-")
    lex = indexes.is_lex(attr)
    index_key = (keys.lex_index_key if lex else keys.sorted_index_key)(meta.prefix, attr.name)
    null_key = keys.null_index_key(meta.prefix, attr.name)
    limit = _score_limit(attr)
    sliced = (bool(q._low) or q._high is not None) and not meta.expiring
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


def _score_limit(attr: attributes.Attribute[Any]) -> float:
    """The magnitude from which the attribute's scores may tie distinct values (inf: never)."""
    for kind, limit in EXACT_SCORE_LIMITS.items():
        if isinstance(attr, kind):
            return limit
    return math.inf


def _exact_score(attr: attributes.Attribute[Any], score: float) -> bool:
    """Whether ``score`` stands for one value only: a Float's score is its value, ±inf included."""
    return isinstance(attr, attributes.Float) or abs(score) < _score_limit(attr)


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


# -- ordered pages ----------------------------------------------------------------------------
#
# A page (``filter(...).order_by(f)[low:high]``) of a filter the indexes answer exactly. Its
# order is the index's: the candidates whose ``f`` is None first (by id), then the index
# order (value, then id), then those the index lacks (a Float NaN) by id; descending, the
# index order reversed, with the NaN first and the None last, each by id. Every strategy
# below gives that same order, so pages never overlap or skip a record whichever strategy
# each of them used.
#
# Costs are counted in index entries read (one member of a ZRANGE reply). The planner reads
# the sizes first (one round trip: ZCARD of the order index, SCARD of the lookups' sets,
# ZLEXCOUNT of a prefix) and picks the cheapest of:
#
# - walk: read the order index from its start (its end, descending) in chunks, keeping the
#   candidates, until ``high`` of them are found: about high * indexed / candidates entries,
#   whatever the model's size when the filter keeps a fixed share of it. An entry is tested on
#   the server against the lookups' stored index sets (SMISMEMBER), then, for ``startswith``
#   or a long ``in``, on its stored field (HGET); or in Python once the candidate ids are read.
#   A lookup on the order field itself bounds the walk to its values (ZCOUNT, ZLEXCOUNT);
# - fetch: read every candidate's sort value (ZMSCORE, or an HGET of the field for Unicode)
#   and sort them in Python: O(candidates), cheap when they are few;
# - load them all: when there are hardly more candidates than the page holds, load them
#   and sort the records in Python, with no round trip for sort values.
#
# Nothing is written: no temporary key holds an intersection. SINTERSTORE would cost
# O(candidates) on the server for every page (where the walk's tests cost O(entries walked)),
# a round trip to delete it, and a write that a replica or a read-only ACL user refuses.

#: Per candidate id read into Python, from one stored set (SMEMBERS, kept as bytes); through
#: :func:`candidate_ids` (decoded and checked); from a ``startswith`` range (``value NUL id``).
READ_COST = 1
CANDIDATE_COST = 2
PREFIX_COST = 3
#: Per index entry walked.
WALK_COST = 1
#: Per walked id tested against one stored set with SMISMEMBER (sent, tested, answered).
PROBE_COST = 2
#: Per candidate whose score is read (ZMSCORE).
SCORE_COST = 3
#: Per field read and checked in Python, or per candidate whose Unicode sort field is read (one HGET each).
FIELD_COST = 25
#: Per record loaded and built, beyond the page's own.
LOAD_COST = 32
#: Per round trip.
ROUND_COST = 200
#: The walk's first chunk is its estimated length times WALK_MARGIN (at least WALK_MIN); each next
#: chunk is twice the last, up to WALK_CHUNK, so a walk whose estimate was low takes few round trips.
WALK_MARGIN = 1.25
WALK_MIN = 64
WALK_CHUNK = 1 << 16
#: The most stored sets of an ``in`` that each walked entry is tested against; with more, the
#: lookup is checked on the field of the entries left instead.
PROBE_KEYS = 8
#: An ``in`` with more values than this is not counted (one SCARD each): half the records, say.
COUNTED_KEYS = 64

#: A page is ``(ids, True)``, the page's ids in order; or ``(ids, False)``, every candidate, to be
#: loaded, put in index order in Python and sliced (see :func:`page_records`).
Page = tuple[list[str], bool]


@dataclass(slots=True)
class _Index:
    """The order index a page is read from, and the sizes read of it."""

    meta: ModelOptions
    attr: attributes.Attribute[Any]
    descending: bool
    lex: bool
    key: str
    null_key: str
    #: Entries in the index, records of the model, records whose value is None.
    indexed: int = 0
    total: int = 0
    null_total: int = 0
    #: The part of the index a walk reads: from rank ``start`` (counted in the walk's direction),
    #: ``span`` entries. The whole index, unless a lookup on the order field bounds its values.
    start: int = 0
    span: int = 0

    def size_reads(self) -> list[Command]:
        """The sizes, and for scores the two edges (whose magnitudes say whether scores are exact)."""
        reads = [command("ZCARD", self.key), command("SCARD", self.meta.ids_key), command("SCARD", self.null_key)]
        if not self.lex:
            reads += [command("ZRANGE", self.key, 0, 0, "WITHSCORES", withscores=True),
                      command("ZRANGE", self.key, -1, -1, "WITHSCORES", withscores=True)]
        return reads

    def take_sizes(self, replies: Sequence[Any]) -> bool:
        """Keep the sizes; whether the index orders exactly (no score past its exact range)."""
        self.indexed, self.total, self.null_total = (int(reply) for reply in replies[:3])
        self.start, self.span = 0, self.indexed
        if self.lex:
            return True
        return all(_exact_score(self.attr, score) for edge in replies[3:5] for _, score in edge)

    def bound_reads(self, lookups: Sequence[Lookup]) -> tuple[list[Command], Lookup | None]:
        """Counts that bound the walk when a lookup bounds the order field's values (``exact``, ``in``,
        ``startswith``): the entries before the smallest, and those from the smallest to the largest;
        and that lookup. No counts when no lookup does."""
        for lookup in lookups:
            if lookup.field != self.attr.name or lookup.sub is not None:
                continue
            if lookup.op == "startswith" and self.lex:
                prefix = lookup.value.encode("utf-8")
                return [command("ZLEXCOUNT", self.key, "-", b"(" + prefix),
                        command("ZLEXCOUNT", self.key, b"[" + prefix, b"[" + prefix + b"\xff")], lookup
            if lookup.op not in ("exact", "in"):
                continue
            values = [v for v in ([lookup.value] if lookup.op == "exact" else lookup.value) if v is not None]
            if self.lex:
                texts = sorted(v.encode("utf-8") for v in values)
                if not texts:
                    continue
                low, high = texts[0] + b"\x00", texts[-1] + b"\x01"  # the entries are value NUL id
                return [command("ZLEXCOUNT", self.key, "-", b"(" + low),
                        command("ZLEXCOUNT", self.key, b"[" + low, b"(" + high)], lookup
            scores = [score for score in (indexes.score(self.attr, v) for v in values) if score is not None]
            if not scores:
                continue
            low_score, high_score = indexes.format_score(min(scores)), indexes.format_score(max(scores))
            return [command("ZCOUNT", self.key, "-inf", "(" + low_score),
                    command("ZCOUNT", self.key, low_score, high_score)], lookup
        return [], None

    def take_bounds(self, replies: Sequence[Any]) -> None:
        before, self.span = int(replies[0]), int(replies[1])
        self.start = self.indexed - before - self.span if self.descending else before

    @property
    def covered(self) -> bool:
        """Whether every record is in the index or the None set: none is NaN (or missing)."""
        return self.total == self.indexed + self.null_total


def page_attr(q: Query) -> attributes.Attribute[Any] | None:
    """The order attribute when :func:`ordered_page` serves the query, else None.

    That is a slice with an end, ordered by one indexed field whose index
    orders exactly (see :func:`order_attr`), filtered by lookups whose index
    reads are exactly their matches (``exact``, ``in``, ``isnull=True``,
    ``startswith``, and those through a Pointer), with no exclude.
    """
    if q._high is None or not q._filters or q._excludes or q.meta.expiring:
        return None  # (an expiring model's page may hold records past their deadline: see strategy())
    attr = order_attr(q)
    meta = q.meta
    if attr is None or not all(exact_index(meta, lookup) and lookup.op in EXACT_OPS for lookup in q._filters):
        return None
    return attr


def _index(q: Query, attr: attributes.Attribute[Any]) -> _Index:
    meta = q.meta
    lex = indexes.is_lex(attr)
    key = (keys.lex_index_key if lex else keys.sorted_index_key)(meta.prefix, attr.name)
    return _Index(meta, attr, q._order[0].startswith("-"), lex, key, keys.null_index_key(meta.prefix, attr.name))


def ordered_page(q: Query, attr: attributes.Attribute[Any]) -> Plan[Page]:
    """A page of the query (see :func:`page_attr`), at about the page's cost.

    When every lookup has stored index sets (``exact``, ``in``, ``isnull=True``),
    the candidates need not be read at all: the sizes of those sets and of the
    order index (one round trip) say whether to walk the index testing entries
    against the sets, or to read the candidates and continue as
    :func:`candidates_page`. Other lookups read the candidates first. When
    the index cannot say the exact order (a value holding NUL, scores past
    2**53, an index that lacks a candidate), every candidate is loaded and
    ordered in Python, in the same order.
    """
    if q._low >= q._high:
        return [], True
    meta = q.meta
    index = _index(q, attr)
    read: set[bytes] | None = None
    if all(set_keys(meta, lookup) is not None or lookup.op == "startswith" and lookup.sub is None
           for lookup in q._filters):
        page, read = yield from _keyed_page(q, index)
        if page is not None:
            return page
    if read is None:  # (a page of candidates read that gave no page is not tried again)
        ids = yield from candidate_ids(meta, q._filters)
        read = {pk.encode() for pk in ids or ()}
        page = yield from candidates_page(q, index, read)
        if page is not None:
            return page
    return sorted(members(read)), False


@dataclass(slots=True)
class _Tests:
    """How a walk tells the candidates among the index entries it reads.

    An entry is one when its id is in every set of ``singles``, in one of
    ``union`` (SMISMEMBER, one round trip for all), and passes every lookup of
    ``checks`` on its stored field (one HGET each, for the entries left, in
    one more round trip). With none of them every entry is one (the walk is
    bounded to the only lookup's values).
    """

    singles: list[str]
    union: list[str]
    checks: list[Lookup]


#: The most None candidates that are checked on their fields; with more, the candidates are read.
NULL_CHECKS = 4096


def _keyed_page(q: Query, index: _Index) -> Plan[tuple[Page | None, set[bytes] | None]]:
    """A page of lookups with stored index sets, or ``startswith``, read without reading the candidates
    when that costs less.

    Each lookup is either probed (its sets tested with SMISMEMBER: every
    ``exact`` or ``isnull=True``, and one ``in`` of at most PROBE_KEYS values)
    or checked on the stored field of the entries left (``startswith``, other
    ``in`` lookups). Its size (SCARD, ZLEXCOUNT) comes with the order index's
    in one round trip. Returns ``(None, None)`` when this does not apply (the
    index lacks some records, its scores are not exact, many None candidates
    to check), for the caller to read the candidates instead.
    """
    meta = q.meta
    singles: list[str] = []
    union: list[str] = []
    checks: list[Lookup] = []
    for lookup in q._filters:
        sets = set_keys(meta, lookup)
        if sets is not None and not sets:
            return ([], True), None  # an empty ``in`` matches nothing
        if sets is not None and len(sets) == 1:
            singles.append(sets[0])
        elif sets is not None and not union and len(sets) <= PROBE_KEYS:
            union = sets
        elif sets is None or not isinstance(lookup.attr, attributes.Pointer):
            checks.append(lookup)
        else:
            return None, None  # (a Pointer's field holds a key, not the value the lookup compares)
    singles = list(dict.fromkeys(singles))
    bounds, bounded_by = index.bound_reads(q._filters)
    prefixed = [lookup for lookup in checks if lookup.op == "startswith" and lookup.field == index.attr.name]
    # The entries within a prefix's bounds all start with it: that check is done.
    walk_checks = [lookup for lookup in checks if lookup is not bounded_by or lookup.op != "startswith"]
    # The candidates whose order value is None: the None set intersected with the probed sets (then
    # checked on their fields), or the None set itself, if small, when every lookup is checked.
    if prefixed:
        null_reads = []  # None never starts with a prefix
    elif union:
        null_reads = [command("SINTER", index.null_key, *singles, key) for key in union]
    elif singles:
        null_reads = [command("SINTER", index.null_key, *singles)]
    else:
        null_reads = [command("SRANDMEMBER", index.null_key, NULL_CHECKS + 1)]
    counted = [(lookup, set_keys(meta, lookup)) for lookup in checks]
    counts = [command("SCARD", key) for key in singles + union]
    for lookup, sets in counted:
        if sets is None:
            counts.append(_count_read(meta, lookup))
        elif len(sets) <= COUNTED_KEYS:
            counts += [command("SCARD", key) for key in sets]
    size_reads = index.size_reads()
    replies = yield Pipeline(bounds + size_reads + counts + null_reads, False, meta.label)
    exact = index.take_sizes(replies[len(bounds):len(bounds) + len(size_reads)])
    if bounds:
        index.take_bounds(replies[:len(bounds)])
    replies = replies[len(bounds) + len(size_reads):]
    null_ids = sorted(set().union(*(members(reply) for reply in replies[len(counts):])))
    if not exact or not index.covered or len(null_ids) > NULL_CHECKS:
        return None, None
    sizes = iter(int(n) for n in replies[:len(counts)])
    total = max(index.total, 1)
    probed = [next(sizes) for _ in singles] + ([sum(next(sizes) for _ in union)] if union else [])
    checked = []
    for _, sets in counted:
        if sets is None or len(sets) <= COUNTED_KEYS:
            checked.append(next(sizes) if sets is None else sum(next(sizes) for _ in sets))
        else:
            checked.append(max(total // 2, 1))  # too many values to count: half the records, say
    if min(probed + checked) == 0:
        return ([], True), None
    nulls = null_ids
    if checks and null_ids:
        passed, _ = yield from _checked(meta, [pk.encode() for pk in null_ids], checks)
        nulls = [null_ids[position] for position in passed]
    one_group = len(probed) + len(checked) == 1
    # The number of candidates: exact for one lookup; for several, as if they were independent.
    sized = probed + checked
    found = sized[0] if one_group else max(round(math.prod(n / total for n in sized) * total), 1)
    ranked = max(found - len(nulls), 0)
    low, high = q._low, q._high
    lead = [] if index.descending else nulls
    need = max(high - len(lead), 0)
    if one_group:
        need = min(need, ranked)
        if need <= max(low - len(lead), 0):  # the page holds none of the indexed candidates
            return (_assemble(index, low, high, nulls, [], [], ranked), True), None
    walked = _walk_length(index, need, ranked)
    probes = len(singles) + len(union)
    passing = math.prod(n / total for n in probed)
    per_entry = WALK_COST + probes * PROBE_COST + passing * FIELD_COST * len(walk_checks)
    walking = walked * per_entry + (1 + bool(probes) + bool(walk_checks)) * ROUND_COST
    prefixes = sum(n for n, (_, sets) in zip(checked, counted) if sets is None)
    per_id = READ_COST if len(singles) == 1 and not union and not checks else CANDIDATE_COST
    reading = ((sum(probed) + sum(checked) - prefixes) * per_id + prefixes * PREFIX_COST
               + _python_strategy(index, found, ranked, need, high - low)[1])
    if walking >= reading:
        if len(singles) == 1 and not union and not checks:  # one stored set: read with the walk's first chunk
            return (yield from _read_then_page(q, index, singles[0], found, nulls, need))
        ids = yield from candidate_ids(meta, q._filters)
        if ids is None:
            return None, None
        wanted = {pk.encode() for pk in ids}
        return (yield from _python_page(q, index, wanted, nulls, [])), wanted
    hits = yield from _walk(index, need, _first_chunk(walked), None, _Tests(singles, union, walk_checks))
    if hits is None or (one_group and len(hits) < need):
        return None, None  # a value holding NUL, or the index lacks a candidate: the caller reads them
    total_ranked = ranked if one_group else len(hits) if len(hits) < need else None
    return (_assemble(index, low, high, nulls, [], hits, total_ranked), True), None


def _count_read(meta: ModelOptions, lookup: Lookup) -> Command:
    """How many index entries a ``startswith`` lookup's index read holds (ZLEXCOUNT of its range)."""
    read = index_read(meta, lookup)
    assert read is not None and read[0].args[0] == "ZRANGEBYLEX"
    return command("ZLEXCOUNT", *read[0].args[1:])


class _Fields:
    """What :meth:`Lookup.matches` reads of a record: its ``_data``."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data


def _checked(meta: ModelOptions, ids: list[bytes], checks: list[Lookup],
             read_ahead: Command | None = None) -> Plan[tuple[list[int], Any]]:
    """The positions of the ``ids`` whose stored fields pass every lookup of ``checks`` (one HGET
    each); and the reply of ``read_ahead``, sent in the same round trip (None without it)."""
    reads = [command("HGET", meta.key(pk.decode()), lookup.field) for pk in ids for lookup in checks]
    if not reads and read_ahead is None:
        return [], None
    replies = yield Pipeline(reads + ([read_ahead] if read_ahead is not None else []), False, meta.label)
    passed = []
    for position, pk in enumerate(ids):
        key = meta.key(pk.decode())
        values = replies[position * len(checks):(position + 1) * len(checks)]
        record = _Fields({lookup.field: load.stored_value(meta, lookup.attr, key, lookup.field, raw)
                          for lookup, raw in zip(checks, values)})
        if all(lookup.matches(record) for lookup in checks):
            passed.append(position)
    return passed, replies[-1] if read_ahead is not None else None


def _read_then_page(q: Query, index: _Index, key: str, found: int, nulls: list[str],
                    need: int) -> Plan[tuple[Page | None, set[bytes] | None]]:
    """Read one stored candidate set, and the walk's first chunk with it when the walk is likely."""
    meta = q.meta
    ranked = max(found - len(nulls), 0)
    walked = _walk_length(index, need, ranked)
    strategy, _ = _python_strategy(index, found, ranked, need, q._high - q._low)
    reads = [command("SMEMBERS", key)]
    first_size = _first_chunk(walked)
    if strategy == "walk":
        reads.append(_chunk_read(index, index.start, min(first_size, index.span)))
    replies = yield Pipeline(reads, False, meta.label)
    wanted: set[bytes] = set(replies[0])  # (an entry that is no id matches no index entry's id)
    first = replies[1] if strategy == "walk" else None
    return (yield from _python_page(q, index, wanted, nulls, [], first, first_size)), wanted


def candidates_page(q: Query, index: _Index, wanted: set[bytes]) -> Plan[Page | None]:
    """A page of a candidate set already read (``startswith``, Pointer traversals, several ``in``).

    One round trip reads the sizes (and, when some record is None, which
    candidates are); then ``_python_page``. When the index lacks some
    records (NaN), scores say which candidates they are; a Unicode index
    that lacks one is no order (None).
    """
    meta = q.meta
    if not wanted:
        return [], True
    replies = yield Pipeline(index.size_reads(), False, meta.label)
    if not index.take_sizes(replies):
        return None
    nulls: list[str] = []
    if index.null_total:
        if index.null_total <= 4 * len(wanted):
            null_ids = (yield one("SMEMBERS", index.null_key, label=meta.label))[0]
            nulls = sorted(pk.decode() for pk in wanted.intersection(null_ids))
        else:
            ordered = sorted(wanted)
            flags = (yield one("SMISMEMBER", index.null_key, *ordered, label=meta.label))[0]
            nulls = [pk.decode() for pk, flag in zip(ordered, flags) if flag]
    if index.covered:
        return (yield from _python_page(q, index, wanted, nulls, []))
    if index.lex:
        return None  # the Unicode index lacks a record: its order is unknown
    return (yield from _python_page(q, index, wanted, nulls, None))


def _python_strategy(index: _Index, found: int, ranked: int, need: int, span: int) -> tuple[str, float]:
    """Which of walk, fetch and load is cheapest once the ``found`` candidate ids are in Python, and its cost."""
    costs = {
        "load": max(found - span, 0) * LOAD_COST,  # (first: the one taken on a tie)
        "walk": _walk_length(index, need, ranked) * WALK_COST + ROUND_COST,
        "fetch": ranked * (FIELD_COST if index.lex else SCORE_COST) + ROUND_COST,
    }
    best = min(costs, key=costs.__getitem__)
    return best, costs[best]


def _python_page(q: Query, index: _Index, wanted: set[bytes], nulls: list[str], rest: list[str] | None,
                 first: list[bytes] | None = None, first_size: int = 0) -> Plan[Page | None]:
    """A page of candidates whose ids are in Python (``wanted``), ``nulls`` among them.

    ``rest`` lists the candidates the index lacks, or is None when unknown
    (some record is NaN): then every candidate's score is read, which tells.
    """
    low, high = q._low, q._high
    if rest is not None:
        found = len(wanted)
        ranked = found - len(nulls) - len(rest)
        lead = rest if index.descending else nulls
        need = min(max(high - len(lead), 0), ranked)
        if need <= max(low - len(lead), 0):  # the page holds none of the indexed candidates
            return _assemble(index, low, high, nulls, rest, [], ranked), True
        strategy, _ = _python_strategy(index, found, ranked, need, high - low)
        if strategy == "load":
            return sorted(members(wanted)), False
        if strategy == "walk":
            size = first_size if first is not None else _first_chunk(_walk_length(index, need, ranked))
            hits = yield from _walk(index, need, size, wanted, None, first)
            if hits is None or len(hits) < need:
                return None  # a value holding NUL, or the index lacks a candidate
            return _assemble(index, low, high, nulls, rest, hits, ranked), True
    null_ids = set(nulls)
    ids = sorted(pk for pk in members(wanted) if pk not in null_ids)
    if index.lex:
        ordered = yield from _ranked_by_field(index.meta, index.attr, ids)
        rest = []
    else:
        scores = (yield one("ZMSCORE", index.key, *ids, label=index.meta.label))[0] if ids else []
        if any(score is not None and not _exact_score(index.attr, score) for score in scores):
            return None
        ordered = [pk for _, pk in sorted((score, pk) for pk, score in zip(ids, scores) if score is not None)]
        rest = [pk for pk, score in zip(ids, scores) if score is None]
    if index.descending:
        ordered.reverse()
    lead = rest if index.descending else nulls
    window = [pk.encode() for pk in ordered[:max(high - len(lead), 0)]]
    return _assemble(index, low, high, nulls, rest, window, len(ordered)), True


def _assemble(index: _Index, low: int, high: int, nulls: list[str], rest: list[str], hits: list[bytes],
              ranked: int | None) -> list[str]:
    """The page ``[low:high]`` of None, indexed and NaN candidates in the index's order.

    ``hits`` are the first indexed candidates in the query's direction (at
    least as far as the page reaches), ``ranked`` how many there are in all
    (None: more than the page reaches).
    """
    lead, tail = (rest, nulls) if index.descending else (nulls, rest)
    page = lead[low:high]
    start, stop = max(low - len(lead), 0), max(high - len(lead), 0)
    page += [pk.decode() for pk in hits[start:stop]]
    if ranked is not None:
        after = len(lead) + ranked
        page += tail[max(low - after, 0):max(high - after, 0)]
    return page


def _walk_length(index: _Index, need: int, ranked: int) -> int:
    """How many index entries hold ``need`` of ``ranked`` candidates spread evenly over the walk's part."""
    if need <= 0:
        return 0
    return min(index.span, -(-need * index.span // max(ranked, 1)))


def _first_chunk(walked: int) -> int:
    return min(max(int(walked * WALK_MARGIN) + 16, WALK_MIN), WALK_CHUNK)


def _chunk_read(index: _Index, start: int, size: int) -> Command:
    return command("ZREVRANGE" if index.descending else "ZRANGE", index.key, start, start + size - 1)


def _walk(index: _Index, need: int, size: int, wanted: set[bytes] | None,
          tests: _Tests | None, first: list[bytes] | None = None) -> Plan[list[bytes] | None]:
    """The first ``need`` candidates in the index's order (fewer if its walked part ends first), or None.

    The index is read from ``index.start`` in the query's direction, in
    chunks of ``size`` entries, then twice the last (up to WALK_CHUNK). An
    entry is a candidate when its id is in ``wanted``, or else when it
    passes ``tests``. Testing a chunk on the server is one more round trip
    (or two), so once a chunk has come up short the next one is read in the
    same round trip as the last test of the last. None when a Unicode value holds NUL
    near the page: it may sort out of place against the separator.
    """
    label = index.meta.label
    found: list[bytes] = []
    at, end = index.start, index.start + index.span
    entries = first
    short = False  # whether a chunk has come up short: then the next is read ahead
    while True:
        asked = min(size, end - at)
        if entries is None:
            if asked <= 0:
                return found
            entries = (yield Pipeline([_chunk_read(index, at, asked)], False, label))[0]
        last = len(entries) < asked or at + len(entries) >= end  # the walked part ends here
        if index.lex:
            if b"".join(entries).count(b"\x00") != len(entries):
                return None  # a value holding NUL sorts ambiguously against the separator
            ids = [member[-36:] for member in entries]  # an id is 36 characters (checked on hits)
        else:
            ids = entries
        after, size = at + len(entries), min(size * 2, WALK_CHUNK)
        ahead: list[bytes] | None = None
        if wanted is not None:
            hits = [position for position, pk in enumerate(ids) if pk in wanted]
        else:
            read_ahead = _chunk_read(index, after, min(size, end - after)) if short and not last else None
            hits, ahead = yield from _test(index.meta, ids, tests or _Tests([], [], []), read_ahead)
        for position in hits:
            if not record_id(ids[position]) or (index.lex and entries[position][-37:-36] != b"\x00"):
                continue  # not a record's id
            found.append(ids[position])
            if len(found) == need:
                if index.lex and index.descending:
                    safe = yield from _tie_block_safe(index, entries, position, last)
                    if not safe:
                        return None
                return found
        if last:
            return found
        at, entries, short = after, ahead, True


def _test(meta: ModelOptions, ids: list[bytes], tests: _Tests,
          read_ahead: Command | None) -> Plan[tuple[list[int], list[bytes] | None]]:
    """The positions of the ``ids`` that pass ``tests``; and the reply of ``read_ahead``, sent
    with the last round trip of the tests (alone when there are none)."""
    singles, union = tests.singles, tests.union
    probes = [command("SMISMEMBER", key, *ids) for key in singles + union] if ids else []
    ahead: list[bytes] | None = None
    keep = list(range(len(ids)))
    if probes or (read_ahead is not None and not tests.checks):
        last = read_ahead if not tests.checks else None
        replies = yield Pipeline(probes + ([last] if last is not None else []), False, meta.label)
        if last is not None:
            ahead = replies[-1]
        flags = [all(member) for member in zip(*replies[:len(singles)])] if singles else [True] * len(ids)
        if union:
            flags = [f and any(member) for f, member in zip(flags, zip(*replies[len(singles):len(probes)]))]
        keep = [position for position, f in zip(keep, flags) if f]
    if tests.checks:
        passed, ahead = yield from _checked(meta, [ids[position] for position in keep], tests.checks, read_ahead)
        keep = [keep[position] for position in passed]
    return keep, ahead


def _tie_block_safe(index: _Index, entries: list[bytes], position: int, at_end: bool) -> Plan[bool]:
    """Whether no value holding NUL hides among the unread ties of a descending page's last value.

    A value ``v + "\\x00" + s`` sorts after ``v`` in Python but among ``v``'s
    entries in the index: walking down from the end, it would come right
    before them. When the chunk read ends inside the last value's ties, one
    round trip compares the index entries starting ``v\\x00`` with the records
    whose value is ``v``.
    """
    value = entries[position].rpartition(b"\x00")[0]
    if at_end or entries[-1].rpartition(b"\x00")[0] != value:
        return True  # every tie was read (and checked)
    meta = index.meta
    text = value.decode("utf-8", "surrogateescape")
    lexed, equal = yield Pipeline([
        command("ZLEXCOUNT", index.key, b"[" + value + b"\x00", b"(" + value + b"\x01"),
        command("SCARD", keys.eq_index_key(meta.prefix, index.attr.name, token(index.attr, text))),
    ], False, meta.label)
    return int(lexed) == int(equal)


def _ranked_by_field(meta: ModelOptions, attr: attributes.Attribute[Any], ids: list[str]) -> Plan[list[str]]:
    """``ids`` in the order of their stored values of ``attr`` (ties by id), from HGETs of that field."""
    name = attr.name
    raws = yield Pipeline([command("HGET", meta.key(pk), name) for pk in ids], False, meta.label)
    keyed = []
    for pk, raw in zip(ids, raws):
        value = load.stored_value(meta, attr, meta.key(pk), name, raw)
        keyed.append(("" if value is None else value, pk))
    keyed.sort()
    return [pk for _, pk in keyed]


def page_records(q: Query, page: Page, chunk_size: int) -> Plan[None]:
    """Emit a page's records: its ids loaded, or every candidate loaded, ordered as the index would and sliced."""
    ids, exact = page
    if exact:
        yield from fetch_matching(q, ids, chunk_size, 0, None)
        return
    records = yield from collect(fetch_matching(q, ids, chunk_size, 0, None))
    found = index_order(records, q._order[0])[q._low:q._high]
    if found:
        yield Emit(found)


def index_order(records: list[Any], field: str) -> list[Any]:
    """Records in the order a page has (see above): None first by id, then (value, id), then NaN by id.

    Descending: NaN first, then (value, id) reversed, then None; None and
    NaN by id in both directions, as in the index plans.
    """
    descending = field.startswith("-")
    name = field.lstrip("-")
    nulls: list[tuple[str, Any]] = []
    nans: list[tuple[str, Any]] = []
    ranked: list[tuple[tuple[Any, str], Any]] = []
    for record in records:
        value = record._data[name]
        pk = str(record._pk())
        if value is None:
            nulls.append((pk, record))
        elif _is_nan(value):
            nans.append((pk, record))
        else:
            ranked.append(((record._meta.fields[name].comparable(value), pk), record))
    nulls.sort(key=lambda item: item[0])
    nans.sort(key=lambda item: item[0])
    ranked.sort(key=lambda item: item[0], reverse=descending)
    middle = [record for _, record in ranked]
    if descending:
        return [r for _, r in nans] + middle + [r for _, r in nulls]
    return [r for _, r in nulls] + middle + [r for _, r in nans]


def order_window(q: Query, index_key: str, null_key: str, limit: float,
                 descending: bool) -> Plan[tuple[list[str], bool] | None]:
    """The slice of every record in order, reading only that part of the index.

    Possible when every record is either scored or None (no NaN): then the
    order is the None ids (by id) and the sorted set, or the reverse.
    """
    meta = q.meta
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
    meta = q.meta
    fields = loaded_fields(q)
    keys_ = [meta.key(pk) for pk in ids]
    records = [r for r in (yield from load.load(meta, keys_, dict(q._known), fields=fields)) if r is not None]
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
    from the start until the slice is full, and checked in Python. So are
    those of an expiring model (``Meta.ttl``): its indexes may still name
    records past their deadline, which loading leaves out. A query
    ``materialize``-d whole, with nothing sliced, is sorted in Python:
    cheaper than reading the index.
    """
    if q.meta.scatters:
        if materialize and not q._low and q._high is None and not q.meta.sources():
            return (yield from flat(q, chunk_size)), True
        return (yield from scattered(q, chunk_size)), True
    page_by = page_attr(q)
    if page_by is not None:
        page = yield from ordered_page(q, page_by)
        return page_records(q, page, chunk_size), True
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
        elif indexed and all(lookup.op in EXACT_OPS for lookup in q._filters) and not q.meta.expiring:
            window, skip, limit = ordered[q._low:q._high], 0, None
        else:
            window, skip = ordered, q._low
            limit = None if q._high is None else q._high - q._low
        return fetch_matching(q, window, chunk_size, skip, limit), True
    if ids is None:
        ids = yield from all_ids(q.meta)
    if q._order:  # sorted in Python afterwards: every candidate is needed
        return fetch_matching(q, ids, chunk_size, 0, None), False
    # Unordered: any order is the query's order, so a slice stops when it is full.
    limit = None if q._high is None else q._high - q._low
    return fetch_matching(q, ids, chunk_size, q._low, limit), True


# -- scatter and gather: a model spread over partitions --------------------------------------


def parts(q: Query) -> list[Query]:
    """The query bound to each partition of its spread model, each reading its first ``offset + limit``.

    During a move (``Meta.moving_from``) the source layout's partitions come first.
    """
    out = []
    for number in range(len(q.meta.scatter_views())):
        part = q._clone()
        part._partition, part._low = number, 0  # (the slice is taken from the merged runs)
        out.append(part)
    return out


def _part_records(part: Query, moving: ModelOptions | None = None) -> Plan[list[Any]]:
    """One partition's matches, in the query's order, up to the slice's end.

    During a move, ``moving`` is the model's options, and only the records
    that this partition holds for the model are kept (see :func:`_held`); a
    sliced read that kept too few is read again, further.
    """
    want = reach = part._high
    while True:
        source, in_order = yield from strategy(part, chunk_size=10**9, materialize=True)
        read = _arranged(part, (yield from collect(source)), in_order)
        if moving is None:
            return read
        kept = yield from _held(moving, part.meta, read)
        if want is None or reach is None or len(read) < reach or len(kept) >= want:
            return kept[:want]
        reach += 2 * (want - len(kept))  # (read further: as many more as were dropped, twice)
        part = part._clone()
        part._high = reach


def _held(meta: ModelOptions, view: ModelOptions, records: list[Any]) -> Plan[list[Any]]:
    """The records read in partition ``view`` that hold the model's data while a move runs.

    A current partition keeps the records whose id belongs to it (one that
    shares its keys with a source partition also holds records not moved yet,
    which the source's read returns). A source partition keeps the records
    that have no copy at their current key yet (one EXISTS each), marked with
    where they are (``_origin``) so that a write moves them first.
    """
    pk = meta.pk
    if view.partition_index != -1:  # a current partition
        return [record for record in records if meta.prefix_for(record._data[pk]) == view.prefix]
    if not records:
        return []
    placed = yield Pipeline([command("EXISTS", meta.key(record._data[pk])) for record in records], False, meta.label)
    kept = [record for record, there in zip(records, placed) if not there]
    for record in kept:
        record._origin = view
    return kept


def scattered(q: Query, chunk_size: int) -> Plan[Plan[None]]:
    """Run the query on every partition side by side, merge their sorted runs and slice.

    Each partition reads at most ``offset + limit`` records, with its own
    indexes (so an ordered page costs each partition about the page); the
    runs are merged by the query's order (Timsort merges presorted runs in
    O(n log P)), and the slice is taken from the merge.

    During a move (``Meta.moving_from``) the source partitions are read first,
    each keeping its records that have no copy at their current key, then the
    current ones: a record moved meanwhile is in the current read, or kept
    from the source read (and then dropped as a duplicate of its current copy).
    """
    meta = q.meta
    sources = len(meta.sources())
    moving = meta if sources else None
    found = yield from gather_in_turn([_part_records(part, moving) for part in parts(q)], sources)
    runs, current = found[:sources], found[sources:]
    if sources:
        here = {record._data[meta.pk] for run in current for record in run}
        runs = [[record for record in run if record._data[meta.pk] not in here] for run in runs]
    merged = _in_query_order(q, [record for run in [*runs, *current] for record in run])
    return _emit(merged[q._low:q._high], chunk_size)


def flat(q: Query, chunk_size: int) -> Plan[Plan[None]]:
    """A whole query over a spread model, nothing sliced: every partition's candidates, then one load of them all.

    With no slice, no partition has to read its matches in order: the ids
    that every partition's indexes give are read side by side (one round),
    and all of their records in one more (one pipeline per primary), then
    put in order once, as :func:`scattered` orders its merge.
    """
    found = yield from gather([_part_candidates(part) for part in parts(q)])
    ids = [pk for part_ids in found for pk in part_ids]
    records = yield from collect(fetch_matching(q, ids, 10**9, 0, None))
    return _emit(_in_query_order(q, records), chunk_size)


def _part_candidates(part: Query) -> Plan[list[str]]:
    """One partition's candidate ids: from its indexes, or its id set."""
    ids, _ = yield from candidates(part)
    return (yield from all_ids(part.meta)) if ids is None else ids


def _in_query_order(q: Query, records: list[Any]) -> list[Any]:
    """Records in the query's order, ties by id as a page orders them (:func:`index_order`).

    So ``qs[:n]`` is always ``list(qs)[:n]``, whichever plan served each, on one
    partition or merged from several.
    """
    if len(q._order) == 1 and order_attr(q) is not None:  # as one partition's index orders them
        return index_order(records, q._order[0])
    if q._order:
        pk = q.meta.pk
        return sort_records(sorted(records, key=lambda record: str(record._data[pk])), q._order)
    return records


def _emit(records: list[Any], chunk_size: int) -> Plan[None]:
    for start in range(0, len(records), chunk_size):
        yield Emit(records[start:start + chunk_size])


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


def materialize(q: Query) -> Plan[list[Any]]:
    """:func:`evaluate`, then the reverse accessors ``prefetch_related()`` names, for every record at once."""
    records = yield from evaluate(q)
    for name in q._prefetch:
        yield from prefetch(q.model, records, name)
    return records


def prefetch(model: type[Any], records: list[Any], name: str) -> Plan[None]:
    """Load the referrers behind the reverse accessor ``name`` of ``records``, for all of them at once.

    On one server, one call of the ``related`` script reads every index set
    and the records in them: one round trip for the relation (their other
    Pointers load as any load's do). On a cluster, or while the referring model
    moves (``Meta.moving_from``), one query for all of them: two round trips.
    """
    accessors = registry.relations(model)
    relation = accessors.get(name)
    if relation is None:
        valid = sorted(accessors)
        raise errors.UnknownFieldError(f"{model._meta.label} has no reverse accessor {name!r} to prefetch; "
                                       f"valid names: {', '.join(valid) or 'none'}", model=model._meta.label,
                                       field=name, valid=valid)
    found: dict[int, list[Any]] = {id(record): [] for record in records}
    if records:
        known = {record._key(): record for record in records}  # (the referrers' Pointers resolve to these)
        meta = relation.model._meta
        if keys.LAYOUT.cluster or meta.sources():
            referring = relation.model.objects.filter(**{f"{relation.field}__in": records})
            referring._known = known
            referrers = yield from evaluate(referring)
        else:
            referrers = yield from _related(meta, relation.field, records, known)
        for referrer in referrers:
            value = referrer._data[relation.field]
            for target in value if isinstance(value, list) else [value]:
                if id(target) in found:
                    found[id(target)].append(referrer)
    for record in records:
        record._prefetched = {**record._prefetched, name: found[id(record)]}


def _related(meta: ModelOptions, field: str, records: list[Any], identity: dict[str, Any]) -> Plan[list[Any]]:
    """The records of ``meta`` whose ``field`` names one of ``records``, from one ``related`` script call."""
    sets = [(view, keys.eq_index_key(view.prefix, field, str(record.pk))) for record in records
            for view in meta.views()]
    reply = yield Eval("related", [key for _, key in sets],
                       [len(meta.streams), *meta.streams, *(view.prefix for view, _ in sets)], meta.label)
    pending: load.Pending = []
    out: dict[str, Any] = {}
    width = 2 + len(meta.streams)
    for (view, _), found in zip(sets, reply):
        for start in range(0, len(found), width):
            pk = found[start].decode()
            key = view.key(pk) if keys.CANONICAL_ID.fullmatch(pk) else None
            if key is None or key in out:
                continue  # (not a record's id; or in two sets: a PointerList naming two of them)
            flat = found[start + 1]
            fetched = (dict(zip(flat[::2], flat[1::2])),
                       {name: found[start + 2 + n] for n, name in enumerate(meta.streams)})
            out[key] = identity.get(key) or load.build(view, key, fetched, pending)
    if pending:
        yield from load.resolve_pointers(pending, identity)
    return sorted(out.values(), key=lambda record: str(record.pk))


def _arranged(q: Query, records: list[Any], in_order: bool) -> list[Any]:
    """The loaded matches in the query's order, sliced unless they came as the slice already."""
    records = _in_query_order(q, records)  # in order too: ties the index scores could not tell apart
    return records if in_order else records[q._low:q._high]


def iterate(q: Query, chunk_size: int) -> Plan[None]:
    """Emit the matching records ``chunk_size`` per round trip (all at once when sorted in Python)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if q._cache is not None or q._empty:
        yield Emit(list(q._cache or ()))
        return
    if q.meta.partitioned and not q.meta.sources() and not q._order and not q._low and q._high is None:
        for part in parts(q):  # in any order: one partition after another, chunk by chunk
            yield from iterate(part, chunk_size)
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
    counted = _counted_by(q)
    if counted is not None and q.meta.expiring:
        return (yield from _live_count(q))
    if counted is not None:
        sizes = yield Pipeline([command("SCARD", key) for key in counted], False, q.meta.label)
        return sum(int(size) for size in sizes)
    if q.meta.sources():  # during a move: the matches' ids, from both layouts
        q = q._clone()
        q._fields = frozenset({q.meta.pk})
    return len((yield from evaluate(q)))


def _live_count(q: Query) -> Plan[int]:
    """:func:`count` from the sets :func:`_counted_by` names, leaving out the records past their deadline.

    One ``count`` script call on one server (every partition's sets at once);
    on a cluster one per partition, each in its partition's slot, sent in one
    pipeline (one request per node).
    """
    groups = [(part.meta.expiry_key, _counted_by(part) or []) for part in parts(q)] if q.meta.partitioned else [
        (q.meta.expiry_key, _counted_by(q) or [])]
    calls = [groups] if not keys.LAYOUT.cluster else [[group] for group in groups]
    reads = [script_read("count", [key for expiry_key, sets in call for key in (expiry_key, *sets)],
                         [len(call), *(len(sets) for _, sets in call)]) for call in calls]
    return sum(int(total) for total in (yield Pipeline(reads, False, q.meta.label)))


def _counted_by(q: Query) -> list[str] | None:
    """The sets whose sizes add up to the query's count, if some do: the id sets, or one exact index's sets."""
    if q.meta.sources():
        return None  # (a move is under way: a record may be in both layouts, or in a partition not its own)
    if q.meta.partitioned:
        if q._low or q._high is not None:
            return None  # (each part reads from its start: a slice is taken after the merge)
        found = [_counted_by(part) for part in parts(q)]
        return None if found[0] is None else [key for keys_ in found for key in keys_ or ()]
    key = _counted_key(q)
    return None if key is None else [key]


def _counted_key(q: Query) -> str | None:
    """The set whose size is the query's count, if one is: the id set, or one exact index set."""
    if q._excludes or q._low or q._high is not None:
        return None
    meta = q.meta
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
    probe._fields = frozenset({q.meta.pk})
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
        raise q.model.DoesNotExist(f"{q.meta.label}: no record to order by {', '.join(fields)}")
    return found


def latest(q: Query, fields: Sequence[str]) -> Plan[Any]:
    """The last record ordered by ``fields`` (the first in descending order)."""
    return (yield from earliest(q, [f[1:] if f.startswith("-") else "-" + f for f in fields]))


def get_by_pk(model: type[Any], value: Any) -> Plan[Any]:
    """The record with primary key ``value``, read by key in one round trip."""
    meta = model._meta
    pk = meta.fields[meta.pk].cast(value)
    key = meta.key(pk)
    if meta.streams or meta.pointers or meta.pointer_lists or meta.expiring or meta.sources():
        record = (yield from load.load(meta, [key]))[0]
    else:  # the commonest read, kept short: one HGETALL, one build
        raw = (yield Pipeline([Command(("HGETALL", key), key)], False, meta.label))[0]
        record = load.build(meta, key, (raw, {}), []) if raw else None
    if record is None:
        raise model.DoesNotExist(f"{meta.label} matching {meta.pk}={str(pk)!r} does not exist (no key {key})")
    return record


def get(q: Query, args: Sequence[Any], lookups: dict[str, Any]) -> Plan[Any]:
    """The one matching record; ``get(pk)``, ``get(id=pk)`` and ``get(pk=pk)`` read it by key."""
    meta = q.meta
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
        if name not in q.meta.fields:
            raise q.meta.unknown_field(name)
        setattr(record, name, value)
    yield from record._save_plan(False)
    return record, False


def _create_or_get(q: Query, lookups: dict[str, Any], defaults: dict[str, Any] | None) -> Plan[tuple[Any, bool]]:
    meta = q.meta
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
    meta = q.meta
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
    meta = q.meta
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
    if unfiltered and not meta.sources() and not meta.expiring and all(agg.from_index(meta)
                                                                       for agg in named.values()):
        if meta.partitioned:
            found = yield from gather([aggregate_from_indexes(view, named) for view in meta.views()])
            return {alias: _combine(agg, [part[alias] for part in found]) for alias, agg in named.items()}
        return (yield from aggregate_from_indexes(meta, named))
    if q._cache is not None:
        records: Sequence[Any] = q._cache
    else:
        probe = q._clone()
        if probe._low == 0 and probe._high is None:
            probe._order = ()  # the order matters only to say which records a slice holds
        records = yield from evaluate(probe.only(*(agg.field_name(meta) for agg in named.values())))
    return {alias: agg.compute(meta, records) for alias, agg in named.items()}


def _combine(agg: aggregates.Aggregate, values: list[Any]) -> Any:
    """One index-served aggregate over a spread model from its partitions' values: a sum, a min or a max."""
    if isinstance(agg, aggregates.Count):
        return sum(values)
    present = [value for value in values if value is not None]
    if not present:
        return None
    return max(present) if isinstance(agg, aggregates.Max) else min(present)


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
    meta = q.meta
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
    write.updatable(q.meta, values)
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
    meta = q.meta
    yield from hooks.deleting(records)  # (every record's, before the first batch: one that raises deletes nothing)
    deleted = 0
    for start in range(0, len(records), 500):
        batch = records[start:start + 500]
        counts = yield from write.delete(meta, batch)
        deleted += sum(1 for n in counts if n)
        for record in batch:
            record._stored = None
            record._stored_streams = {}
    yield from hooks.deleted(records)
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
    if isinstance(meta.fields[head], attributes.PointerList):
        return [target.pk for target in value]
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
