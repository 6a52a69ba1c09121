"""The query engine on a real Redis: indexes, lookups, lazy QuerySets, bulk operations, round trips.

Every lookup is checked against a brute-force Python filter written here,
independently of repocket, over the same records; each indexed attribute has a
``plain_`` twin without an index holding the same value, so both paths (index
read and full scan) are compared with the same answer.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, QuerySet, ResultSet, attributes, errors, keys
from tests.roundtrips import count_round_trips

#: Every test runs through the sync executor and again through the asyncio one (tests/drivers.py).
pytestmark = pytest.mark.usefixtures("driver")

# -- models ----------------------------------------------------------------------------------


class Team(ActiveRecord):
    name = attributes.Unicode(index=True)


class Project(ActiveRecord):
    name = attributes.Unicode(index=True)
    slug = attributes.Unicode()
    team = attributes.Pointer(Team, null=True)


class Item(ActiveRecord):
    name = attributes.Unicode(index=True, null=True)
    code = attributes.Bytes(index=True, null=True)
    ref = attributes.UUID(index=True, null=True)
    rank = attributes.Integer(index=True, null=True)
    score = attributes.Float(index=True, null=True)
    price = attributes.Decimal(index=True, null=True)
    when = attributes.DateTime(index=True, null=True)
    project = attributes.Pointer(Project, null=True)  # indexed by default
    plain_name = attributes.Unicode(null=True)
    plain_code = attributes.Bytes(null=True)
    plain_ref = attributes.UUID(null=True)
    plain_rank = attributes.Integer(null=True)
    plain_score = attributes.Float(null=True)
    plain_price = attributes.Decimal(null=True)
    plain_when = attributes.DateTime(null=True)
    plain_project = attributes.Pointer(Project, null=True, index=False)
    tags = attributes.JSON(null=True)


class Build(ActiveRecord):
    number = attributes.Integer(index=True)
    project = attributes.Pointer(Project)
    stdout = attributes.ByteStream()
    stderr = attributes.ByteStream()


class Log(ActiveRecord):
    title = attributes.Unicode()
    out = attributes.ByteStream()
    err = attributes.ByteStream()


class Counter(ActiveRecord):
    n = attributes.Integer(index=True, null=True)
    word = attributes.Unicode(index=True, null=True)


def _legacy_model(indexed: bool) -> type[ActiveRecord]:
    """The same model (same qualname, same keys) declared without and then with an index."""

    class Legacy(ActiveRecord):
        level = attributes.Integer(index=indexed)
        label = attributes.Unicode(index=indexed)

        class Meta:
            namespace = "tests.functional.test_queries.legacy"

    return Legacy


# -- the dataset -------------------------------------------------------------------------------

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)
U1, U2, U3 = (uuid.UUID(int=n) for n in (1, 2, 3))
SCALARS: dict[str, list[Any]] = {
    "name": [None, "", "alpha", "Alpha", "alphabet", "beta", "BETA", "gamma", "ünïcode", "ÜNÏCODE",
             "日本語", "😀 emoji", "a\x00b", "straße"],
    "code": [None, b"", b"abc", b"abd", b"ABC", b"\xff\xfe", b"ab\x00c", b"xyz"],
    "ref": [None, U1, U2, U3],
    "rank": [None, -5, 0, 1, 2, 3, 10, 2**53, 2**53 + 1, 2**64 + 7, -(2**70)],
    "score": [None, -0.0, 0.0, 1.5, -2.25, 3.0, 1e300, math.inf, -math.inf, math.nan, 2.0**60],
    "price": [None, Decimal("1.10"), Decimal("1.1"), Decimal("0"), Decimal("-0.0"), Decimal("-3.5"),
              Decimal("12345678901234567890.123456789"), Decimal("12345678901234567890.123456788"),
              Decimal("Infinity"), Decimal("-Infinity"), Decimal("1E+5")],
    "when": [None, T0, T0.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))),
             T0 + dt.timedelta(hours=1), T0 + dt.timedelta(microseconds=1),
             (T0 - dt.timedelta(days=1)).astimezone(dt.timezone(dt.timedelta(hours=-8))),
             dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)],
}
PROJECT_NAMES = ["apollo", "Artemis", "gemini"]


@dataclass
class Dataset:
    items: list[Item]
    projects: dict[str, Project]

    def project(self, name: str) -> Project:
        return self.projects[name]


def _make_items(projects: list[Project | None], count: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        values: dict[str, Any] = {}
        for field, choices in SCALARS.items():
            # Every choice appears at least once (i cycles through them), then at random.
            value = choices[i % len(choices)] if i < 2 * len(choices) else rng.choice(choices)
            values[field] = value
            values[f"plain_{field}"] = value
        target = projects[i % len(projects)] if i < 8 else rng.choice(projects)
        values["project"] = values["plain_project"] = target
        values["tags"] = {"i": i, "even": i % 2 == 0}
        out.append(Item(**values))
    return out


@pytest.fixture
def dataset(repocket_connection: Any) -> Dataset:
    team = Team.create(name="core")
    projects = {name: Project.create(name=name, slug=f"sl-{name}", team=team) for name in PROJECT_NAMES}
    items = _make_items([None, *projects.values()], 48, seed=1234)
    Item.objects.bulk_create(items, batch_size=10)
    return Dataset(items=items, projects=projects)


def _warm_scripts(repocket_connection: Any) -> None:
    """Load the write script on the server, so counted saves never pay for SCRIPT LOAD."""
    Log.create(title="warm-up").delete()


# -- brute force -------------------------------------------------------------------------------


@dataclass(frozen=True)
class P:
    """A project named in a test case, resolved against the dataset."""

    name: str


def _resolve(value: Any, data: Dataset) -> Any:
    if isinstance(value, P):
        return data.project(value.name)
    if isinstance(value, list):
        return [_resolve(v, data) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, data) for v in value)
    return value


def _ident(value: Any) -> Any:
    return value.pk if isinstance(value, ActiveRecord) else value


def _holds(op: str, value: Any, wanted: Any) -> bool:
    """The lookup's meaning, written independently of repocket."""
    value, wanted = _ident(value), (
        [_ident(w) for w in wanted] if op == "in" else tuple(_ident(w) for w in wanted) if op == "range" else _ident(wanted)
    )
    if op == "isnull":
        return (value is None) is wanted
    if value is None:
        return op == "exact" and wanted is None
    try:
        if op == "exact":
            return bool(value == wanted)
        if op == "iexact":
            return bool(value.casefold() == wanted.casefold())
        if op == "in":
            return any(value == w for w in wanted)
        if op == "gt":
            return bool(value > wanted)
        if op == "gte":
            return bool(value >= wanted)
        if op == "lt":
            return bool(value < wanted)
        if op == "lte":
            return bool(value <= wanted)
        if op == "range":
            return bool(wanted[0] <= value <= wanted[1])
        if op == "startswith":
            return bool(value.startswith(wanted))
        if op == "contains":
            return wanted in value
        if op == "icontains":
            return wanted.casefold() in value.casefold()
    except TypeError:
        return False
    raise AssertionError(f"unknown lookup {op}")


def brute_force(records: list[Any], path: str, op: str, wanted: Any) -> set[uuid.UUID]:
    """Ids of the records whose ``path`` (``field`` or ``pointer__field``) satisfies ``op``."""
    out = set()
    for record in records:
        value = record
        for part in path.split("__"):
            value = getattr(value, part)
            if value is None:
                break
        if value is None and "__" in path:
            continue  # a null pointer has no fields to match
        if _holds(op, value, wanted):
            out.add(record.pk)
    return out


def pks(records: Any) -> list[uuid.UUID]:
    return [record.pk for record in records]


# -- every lookup on every type, indexed and not --------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: str
    op: str
    value: Any
    brute: Any = None  # the value as the brute force compares it, when it is not ``value`` itself

    def ident(self) -> str:
        return f"{self.path}__{self.op}={self.value!r}"[:60]


CASES = [
    Case("name", "exact", "alpha"),
    Case("name", "exact", ""),
    Case("name", "exact", None),
    Case("name", "exact", "a\x00b"),
    Case("name", "iexact", "ALPHA"),
    Case("name", "iexact", "ünïcode"),
    Case("name", "in", ["alpha", "beta", "nope"]),
    Case("name", "in", []),
    Case("name", "gt", "beta"),
    Case("name", "gte", "beta"),
    Case("name", "lt", "alpha"),
    Case("name", "lte", "alpha"),
    Case("name", "range", ("alpha", "beta")),
    Case("name", "isnull", True),
    Case("name", "isnull", False),
    Case("name", "startswith", "alph"),
    Case("name", "startswith", ""),
    Case("name", "startswith", "a\x00"),
    Case("name", "startswith", "ü"),
    Case("name", "startswith", "😀"),
    Case("name", "contains", "ph"),
    Case("name", "contains", "ß"),
    Case("name", "icontains", "PH"),
    Case("name", "icontains", "ÜNï"),
    Case("code", "exact", b"abc"),
    Case("code", "exact", "abc", b"abc"),
    Case("code", "in", [b"abc", b"\xff\xfe"]),
    Case("code", "isnull", True),
    Case("code", "startswith", b"ab"),
    Case("code", "contains", b"\x00"),
    Case("code", "gt", b"abc"),
    Case("ref", "exact", U1),
    Case("ref", "exact", str(U2), U2),
    Case("ref", "in", [U1, U3]),
    Case("ref", "isnull", True),
    Case("ref", "isnull", False),
    Case("rank", "exact", 2**53 + 1),
    Case("rank", "exact", 0),
    Case("rank", "exact", "10", 10),
    Case("rank", "exact", None),
    Case("rank", "in", [1, 2**64 + 7, 99]),
    Case("rank", "gt", 2),
    Case("rank", "gte", 2),
    Case("rank", "lt", 0),
    Case("rank", "lte", 0),
    Case("rank", "gt", 2**53),
    Case("rank", "gte", 2**53 + 1),
    Case("rank", "lt", 2**53 + 1),
    Case("rank", "range", (1, 10)),
    Case("rank", "range", (2**53, 2**53 + 1)),
    Case("rank", "range", (2**53 + 1, 2**64 + 7)),
    Case("rank", "lt", -(2**70) + 1),
    Case("rank", "isnull", True),
    Case("score", "exact", -0.0),
    Case("score", "exact", 1.5),
    Case("score", "exact", math.inf),
    Case("score", "gt", 1.5),
    Case("score", "gte", 1.5),
    Case("score", "lt", 0),
    Case("score", "lte", 0.0),
    Case("score", "gt", -math.inf),
    Case("score", "lt", math.inf),
    Case("score", "range", (-math.inf, math.inf)),
    Case("score", "range", (-3, 3)),
    Case("score", "in", [1.5, 3.0]),
    Case("score", "isnull", False),
    Case("price", "exact", Decimal("1.1")),
    Case("price", "exact", "1.10", Decimal("1.10")),
    Case("price", "exact", 0, Decimal(0)),
    Case("price", "in", ["1.1", "-3.5"], [Decimal("1.1"), Decimal("-3.5")]),
    Case("price", "gt", 1, Decimal(1)),
    Case("price", "gte", Decimal("1.10")),
    Case("price", "lt", 0, Decimal(0)),
    Case("price", "lte", 0, Decimal(0)),
    Case("price", "range", (0, 2), (Decimal(0), Decimal(2))),
    Case("price", "gt", Decimal("12345678901234567890.123456788")),
    Case("price", "lt", Decimal("12345678901234567890.123456789")),
    Case("price", "gte", Decimal("Infinity")),
    Case("price", "lte", Decimal("-Infinity")),
    Case("price", "isnull", True),
    Case("when", "exact", T0),
    Case("when", "exact", T0.astimezone(dt.timezone(dt.timedelta(hours=-3)))),
    Case("when", "gt", T0),
    Case("when", "gte", T0),
    Case("when", "lt", T0),
    Case("when", "lte", T0),
    Case("when", "range", (T0 - dt.timedelta(days=2), T0)),
    Case("when", "in", [T0, T0 + dt.timedelta(hours=1)]),
    Case("when", "isnull", True),
    Case("project", "exact", P("apollo")),
    Case("project", "exact", None),
    Case("project", "in", [P("apollo"), P("gemini")]),
    Case("project", "isnull", True),
    Case("project", "isnull", False),
    Case("project__name", "exact", "apollo"),
    Case("project__name", "startswith", "a"),
    Case("project__name", "in", ["Artemis", "gemini"]),
    Case("project__name", "icontains", "EMI"),
    Case("project__slug", "exact", "sl-gemini"),
]


def _twin(path: str) -> str:
    head, sep, rest = path.partition("__")
    return f"plain_{head}{sep}{rest}"


@pytest.mark.parametrize("plain", [False, True], ids=["indexed", "not-indexed"])
@pytest.mark.parametrize("case", CASES, ids=Case.ident)
def test_filter_matches_brute_force(dataset: Dataset, case: Case, plain: bool) -> None:
    """filter(field__op=value) returns exactly the records a Python filter finds, each once."""
    path = _twin(case.path) if plain else case.path
    value = _resolve(case.value, dataset)
    wanted = _resolve(case.brute if case.brute is not None else case.value, dataset)
    found = pks(Item.objects.filter(**{f"{path}__{case.op}": value}))
    assert len(found) == len(set(found))
    assert set(found) == brute_force(dataset.items, path, case.op, wanted)


@pytest.mark.parametrize("plain", [False, True], ids=["indexed", "not-indexed"])
@pytest.mark.parametrize("case", CASES[::3], ids=Case.ident)
def test_exclude_is_the_complement_of_filter(dataset: Dataset, case: Case, plain: bool) -> None:
    """exclude(field__op=value) returns every record the Python filter rejects."""
    path = _twin(case.path) if plain else case.path
    value = _resolve(case.value, dataset)
    wanted = _resolve(case.brute if case.brute is not None else case.value, dataset)
    found = set(pks(Item.objects.exclude(**{f"{path}__{case.op}": value})))
    assert found == set(pks(dataset.items)) - brute_force(dataset.items, path, case.op, wanted)


def test_filters_combine_with_and_and_exclude(dataset: Dataset) -> None:
    """Chained filter() calls AND their lookups; exclude() removes records matching all of its lookups."""
    query = Item.objects.filter(rank__gte=0).filter(name__startswith="a").exclude(project=dataset.project("apollo"), score__gt=0)
    expected = (
        brute_force(dataset.items, "rank", "gte", 0)
        & brute_force(dataset.items, "name", "startswith", "a")
    ) - (
        brute_force(dataset.items, "project", "exact", dataset.project("apollo"))
        & brute_force(dataset.items, "score", "gt", 0)
    )
    assert set(pks(query)) == expected
    assert len(expected) > 0


def test_exact_is_the_default_lookup(dataset: Dataset) -> None:
    """filter(field=value) means filter(field__exact=value)."""
    assert set(pks(Item.objects.filter(rank=1))) == set(pks(Item.objects.filter(rank__exact=1)))
    assert set(pks(Item.objects.filter(rank=1))) == brute_force(dataset.items, "rank", "exact", 1)


def test_pointers_are_indexed_by_default() -> None:
    """A Pointer keeps an index unless index=False says otherwise."""
    assert Item._meta.fields["project"].index is True
    assert Item._meta.fields["plain_project"].index is False


@pytest.mark.one_partition
def test_pointer_filter_reads_the_index_sets(dataset: Dataset, redis: Any) -> None:
    """Reverse lookups (filter(project=p)) are answered from an index set holding exactly those ids."""
    apollo = dataset.project("apollo")
    key = keys.eq_index_key(Item._meta.prefix, "project", str(apollo.pk))
    stored = {uuid.UUID(m.decode()) for m in redis.smembers(key)}
    assert stored == brute_force(dataset.items, "project", "exact", apollo)
    with count_round_trips() as trips:
        assert Item.objects.filter(project=apollo).count() == len(stored)
    assert trips.count == 1


def test_decimal_nan_in_data_does_not_break_comparisons(repocket_connection: Any) -> None:
    """A stored Decimal NaN matches no ordering lookup (and exclude keeps it) instead of raising InvalidOperation."""
    Item.objects.bulk_create([Item(price=Decimal("NaN"), plain_price=Decimal("NaN")),
                              Item(price=Decimal(5), plain_price=Decimal(5))])
    for field in ("price", "plain_price"):
        assert [r.price for r in Item.objects.filter(**{f"{field}__gt": 1})] == [Decimal(5)]
        assert [r.price for r in Item.objects.filter(**{f"{field}__range": (0, 10)})] == [Decimal(5)]
        kept = Item.objects.exclude(**{f"{field}__gt": 1})
        assert len(kept) == 1 and kept[0].price.is_nan()


def test_lookup_deeper_than_one_pointer_level_is_refused(dataset: Dataset) -> None:
    """Pointer traversal goes one level deep; a deeper path raises UnknownFieldError naming it."""
    with pytest.raises(errors.UnknownFieldError, match="project__team__name"):
        Item.objects.filter(project__team__name="core")


def test_filter_accepts_pk_as_the_primary_key(dataset: Dataset) -> None:
    """filter(pk=...) and exclude(pk=...) mean the primary key, whatever it is called (as get(pk=...) does)."""
    one = dataset.items[3]
    assert pks(Item.objects.filter(pk=one.pk)) == [one.pk]
    assert pks(Item.objects.filter(pk__in=[one.pk, dataset.items[4].pk])) in (
        [one.pk, dataset.items[4].pk], [dataset.items[4].pk, one.pk])
    assert one.pk not in set(pks(Item.objects.exclude(pk=one.pk)))


def test_unknown_field_in_filter_is_refused(repocket_connection: Any) -> None:
    """A lookup on a name that is not an attribute raises UnknownFieldError listing the valid names."""
    with pytest.raises(errors.UnknownFieldError, match="plain_rank"):
        Item.objects.filter(nope=1)


# -- hypothesis: random datasets ------------------------------------------------------------------

small_ints = st.integers(-3, 3) | st.sampled_from([2**53, 2**53 + 1, 2**53 + 2, -(2**53) - 1, 2**64]) | st.none()
words = st.text(alphabet="abAB\x00é😀", max_size=3) | st.none()
int_lookups = st.sampled_from(["exact", "gt", "gte", "lt", "lte", "range", "in", "isnull"])
word_lookups = st.sampled_from(["exact", "startswith", "gt", "lte", "in", "iexact", "contains"])


def _lookup_value(data: st.DataObject, op: str, values: st.SearchStrategy[Any]) -> Any:
    if op == "isnull":
        return data.draw(st.booleans())
    if op == "in":
        return data.draw(st.lists(values.filter(lambda v: v is not None), max_size=3))
    if op == "range":
        return tuple(sorted(data.draw(st.lists(values.filter(lambda v: v is not None), min_size=2, max_size=2))))
    drawn = data.draw(values.filter(lambda v: v is not None) if op != "exact" else values)
    return drawn


@settings(max_examples=40)
@given(rows=st.lists(st.tuples(small_ints, words), max_size=25), data=st.data())
def test_random_datasets_filter_like_python(repocket_connection: Any, rows: list[tuple[Any, Any]], data: st.DataObject) -> None:
    """On random data, indexed Integer and Unicode lookups return exactly what a Python filter returns."""
    repocket_connection.flushdb()
    records = Item.objects.bulk_create(
        [Item(rank=n, plain_rank=n, name=w, plain_name=w) for n, w in rows]
    ) if rows else []
    for field, ops, values in (("rank", int_lookups, small_ints), ("name", word_lookups, words)):
        op = data.draw(ops)
        value = _lookup_value(data, op, values)
        expected = brute_force(records, field, op, value)
        assert set(pks(Item.objects.filter(**{f"{field}__{op}": value}))) == expected
        assert set(pks(Item.objects.filter(**{f"plain_{field}__{op}": value}))) == expected
        assert Item.objects.filter(**{f"{field}__{op}": value}).count() == len(expected)


def _python_order(values: list[Any], descending: bool) -> list[Any]:
    """None first ascending, last descending; otherwise Python's order."""
    ordered = sorted(values, key=lambda v: (v is not None, v))
    return ordered[::-1] if descending else ordered


@settings(max_examples=40)
@given(
    rows=st.lists(st.tuples(small_ints, words), max_size=20),
    field=st.sampled_from(["n", "word"]),
    descending=st.booleans(),
    low=st.integers(0, 22),
    size=st.integers(0, 22) | st.none(),
)
def test_random_order_by_with_slices_like_python(
    repocket_connection: Any, rows: list[tuple[Any, Any]], field: str, descending: bool, low: int, size: int | None
) -> None:
    """order_by on an indexed Integer or Unicode, sliced, gives Python's order (None first ascending)."""
    repocket_connection.flushdb()
    if rows:
        Counter.objects.bulk_create([Counter(n=n, word=w) for n, w in rows])
    values = [n if field == "n" else w for n, w in rows]
    high = None if size is None else low + size
    query = Counter.objects.order_by(("-" if descending else "") + field)[low:high]
    assert [getattr(r, field) for r in query] == _python_order(values, descending)[low:high]


# -- order_by, slicing -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["rank", "name", "plain_rank", "plain_name"])
@pytest.mark.parametrize("descending", [False, True])
def test_order_by_sorts_like_python_with_none_first(dataset: Dataset, field: str, descending: bool) -> None:
    """order_by("f") / order_by("-f") sorts every record, None first ascending and last descending."""
    values = [getattr(r, field) for r in dataset.items]
    found = Item.objects.order_by(("-" if descending else "") + field)
    assert [getattr(r, field) for r in found] == _python_order(values, descending)
    assert [getattr(r, field) for r in found[3:9]] == _python_order(values, descending)[3:9]


def test_order_by_on_a_filtered_query_with_slice(dataset: Dataset) -> None:
    """filter + order_by + slice equals Python's filter, sort and slice."""
    matching = [r for r in dataset.items if r.pk in brute_force(dataset.items, "rank", "gte", 0)]
    expected = _python_order([r.rank for r in matching], True)[1:4]
    assert [r.rank for r in Item.objects.filter(rank__gte=0).order_by("-rank")[1:4]] == expected


def test_slicing_and_indexing(dataset: Dataset) -> None:
    """Slices, slices of slices and indexes pick the records Python's list slicing would."""
    ordered = sorted(dataset.items, key=lambda r: (r.rank is not None, r.rank if r.rank is not None else 0, str(r.pk)))
    ranks = [r.rank for r in ordered]
    query = Item.objects.order_by("rank")
    assert [r.rank for r in query[5:12]] == ranks[5:12]
    assert [r.rank for r in query[5:12][2:4]] == ranks[7:9]
    assert [r.rank for r in query[40:]] == ranks[40:]
    assert [r.rank for r in query[100:]] == []
    assert query[6].rank == ranks[6]
    with pytest.raises(IndexError):
        query[len(ranks)]
    assert query[-1].rank == ranks[-1]  # as on the original ResultSet list
    with pytest.raises(ValueError):
        query[-3:]


COLLIDING = {
    "integer": ("n", [2**53 + 1, 2**53, 2**53 + 1, 2**53, 2**53 + 1, 2**53, -(2**64) - 1, -(2**64)]),
    "unicode-nul": ("word", ["a", "a\x000", "a\x00", "a\x00f", "b", "a"]),
}


@pytest.mark.parametrize("case", list(COLLIDING), ids=list(COLLIDING))
@pytest.mark.parametrize("descending", [False, True])
def test_order_by_slice_is_exact_when_scores_collide(repocket_connection: Any, case: str, descending: bool) -> None:
    """Slices of an index-ordered query hold the right records even when index order cannot tell values apart."""
    field, values = COLLIDING[case]
    Counter.objects.bulk_create([Counter(**{field: v}) for v in values])
    expected = _python_order(values, descending)
    query = Counter.objects.order_by(("-" if descending else "") + field)
    for low in range(len(values)):
        for high in range(low, len(values) + 1):
            assert [getattr(c, field) for c in query[low:high]] == expected[low:high], (low, high)


def test_filter_after_slice_is_refused(dataset: Dataset) -> None:
    """A sliced query cannot be filtered any more (TypeError), as in Django."""
    with pytest.raises(TypeError):
        Item.objects.all()[:3].filter(rank=1)


# -- laziness, immutability, caching ---------------------------------------------------------------


def test_querysets_are_lazy(dataset: Dataset) -> None:
    """Building, chaining and slicing a query sends nothing to Redis; evaluating it does."""
    with count_round_trips() as trips:
        query = Item.objects.filter(rank__gte=0).exclude(name="alpha").filter(project__name="apollo")
        query = query.order_by("-rank")[1:5]
        assert isinstance(query, QuerySet)
    assert trips.count == 0
    with count_round_trips() as trips:
        list(query)
    assert trips.count > 0


def test_evaluated_querysets_are_cached(dataset: Dataset) -> None:
    """Once evaluated, iterating, len(), indexing and count() again send nothing."""
    query = Item.objects.filter(rank__gte=0)
    first = list(query)
    with count_round_trips() as trips:
        assert list(query) == first
        assert len(query) == len(first)
        assert query[0] == first[0]
        assert query.count() == len(first)
    assert trips.count == 0


def test_chained_calls_return_clones(dataset: Dataset) -> None:
    """filter, exclude, order_by and slicing return new queries and leave the original unchanged."""
    base = Item.objects.all()
    filtered = base.filter(rank__gte=0)
    excluded = filtered.exclude(name="alpha")
    ordered = filtered.order_by("rank")
    sliced = ordered[:3]
    assert len({id(q) for q in (base, filtered, excluded, ordered, sliced)}) == 5
    assert set(pks(base)) == set(pks(dataset.items))
    assert set(pks(filtered)) == brute_force(dataset.items, "rank", "gte", 0)
    assert set(pks(excluded)) == brute_force(dataset.items, "rank", "gte", 0) - brute_force(dataset.items, "name", "exact", "alpha")
    assert len(ordered) == len(filtered) and len(sliced) == 3
    assert [r.rank for r in ordered] == sorted(r.rank for r in filtered)


def test_manager_hands_out_a_new_query_each_time(dataset: Dataset) -> None:
    """Model.objects.all() twice gives two independent queries."""
    one, two = Item.objects.all(), Item.objects.all()
    assert one is not two
    list(one)
    Item.create(name="late")
    assert len(two) == len(dataset.items) + 1
    assert len(one) == len(dataset.items)


def test_evaluated_query_gives_resultsets(dataset: Dataset) -> None:
    """Slicing an evaluated query gives a ResultSet (a list) whose order_by sorts in memory, as the original's did."""
    query = Item.objects.filter(rank__gte=0)
    list(query)
    with count_round_trips() as trips:
        records = query[:]
        assert isinstance(records, ResultSet) and isinstance(records, list)
        ranks = [r.rank for r in records.order_by("-rank")]
    assert trips.count == 0
    assert ranks == sorted((r.rank for r in records), reverse=True)
    assert len(records) == len(brute_force(dataset.items, "rank", "gte", 0))


# -- count / exists / first / last / get ------------------------------------------------------------


def test_count_and_exists(dataset: Dataset) -> None:
    """count() and exists() agree with the Python filter, for indexed, non-indexed and empty results."""
    assert Item.objects.count() == len(dataset.items)
    assert Item.objects.all().count() == len(dataset.items)
    for lookups, brute in (
        ({"rank": 1}, ("rank", "exact", 1)),
        ({"plain_rank": 1}, ("plain_rank", "exact", 1)),
        ({"rank__gt": 2}, ("rank", "gt", 2)),
        ({"name__icontains": "ALP"}, ("name", "icontains", "ALP")),
    ):
        expected = brute_force(dataset.items, *brute)
        assert Item.objects.filter(**lookups).count() == len(expected) > 0
        assert Item.objects.filter(**lookups).exists()
    assert Item.objects.filter(rank=999).count() == 0
    assert not Item.objects.filter(rank=999).exists()
    assert not Item.objects.filter(plain_rank=999).exists()


def test_first_and_last(dataset: Dataset) -> None:
    """first()/last() give the ends of the ordering, and None for an empty query."""
    ranks = [r.rank for r in dataset.items if r.rank is not None]
    query = Item.objects.filter(rank__isnull=False).order_by("rank")
    assert query.first().rank == min(ranks)
    assert query.last().rank == max(ranks)
    assert Item.objects.filter(rank__isnull=False).order_by("-rank").first().rank == max(ranks)
    assert Item.objects.filter(rank=999).first() is None
    assert Item.objects.filter(rank=999).last() is None
    assert Item.objects.first() in dataset.items


def test_get_one_none_or_several(repocket_connection: Any) -> None:
    """get(**lookups) returns the one match, raises DoesNotExist for none and MultipleObjectsReturned for more."""
    only = Counter.create(n=1, word="only")
    Counter.create(n=2, word="twin")
    Counter.create(n=3, word="twin")
    assert Counter.objects.get(word="only") == only
    assert Counter.objects.filter(n__gte=1).get(word="only") == only
    assert Counter.objects.get(pk=only.pk) == only
    with pytest.raises(Counter.DoesNotExist):
        Counter.objects.get(word="none")
    with pytest.raises(errors.DoesNotExist):
        Counter.objects.get(id=uuid.uuid1())
    with pytest.raises(Counter.MultipleObjectsReturned):
        Counter.objects.get(word="twin")
    with pytest.raises(errors.MultipleObjectsReturned):
        Counter.objects.filter(n__gte=2).get()


# -- values / values_list / iterator --------------------------------------------------------------


def test_values_and_values_list(dataset: Dataset) -> None:
    """values() and values_list() give the stored values (Pointers as the target's id)."""
    query = Item.objects.filter(rank__gte=0)
    matching = [r for r in dataset.items if r.pk in brute_force(dataset.items, "rank", "gte", 0)]
    by_id = {row["id"]: row for row in query.values("id", "rank", "project")}
    assert by_id == {r.pk: {"id": r.pk, "rank": r.rank, "project": _ident(r.project)} for r in matching}
    assert sorted(query.values_list("rank", flat=True)) == sorted(r.rank for r in matching)
    assert sorted(query.values_list("id", "name"), key=str) == sorted(((r.pk, r.name) for r in matching), key=str)
    everything = Item.objects.filter(id=matching[0].pk).values()
    assert list(everything[0]) == list(Item._meta.fields)
    with pytest.raises(TypeError):
        query.values_list("rank", "name", flat=True)
    with pytest.raises(errors.UnknownFieldError):
        query.values("nope")


@pytest.mark.parametrize("query", ["all", "filtered", "ordered"])
def test_iterator_yields_every_record_once_across_chunks(dataset: Dataset, query: str) -> None:
    """iterator(chunk_size=7) yields each matching record exactly once, in order when ordered."""
    qs = {
        "all": Item.objects.all(),
        "filtered": Item.objects.filter(rank__gte=0),
        "ordered": Item.objects.filter(rank__isnull=False).order_by("rank"),
    }[query]
    expected = {
        "all": set(pks(dataset.items)),
        "filtered": brute_force(dataset.items, "rank", "gte", 0),
        "ordered": brute_force(dataset.items, "rank", "isnull", False),
    }[query]
    seen = list(qs.iterator(chunk_size=7))
    assert len(seen) == len(expected) > 7
    assert set(pks(seen)) == expected
    if query == "ordered":
        assert [r.rank for r in seen] == sorted(r.rank for r in seen)


@pytest.mark.one_partition
def test_iterator_fetches_one_chunk_at_a_time(dataset: Dataset) -> None:
    """iterator() reads records chunk_size at a time instead of loading them all first."""
    def item_reads(trips: Any) -> int:
        prefix = Item._meta.prefix.encode() + b":"
        return sum(1 for c in trips.commands() if c[0].upper() == b"HGETALL" and c[1].startswith(prefix))

    with count_round_trips() as trips:
        stream = Item.objects.all().iterator(chunk_size=7)
        next(stream)
    assert item_reads(trips) == 7
    with count_round_trips() as trips:
        rest = list(stream)
    assert len(rest) == len(dataset.items) - 1
    assert item_reads(trips) == len(dataset.items) - 7


# -- update / delete / bulk_create -----------------------------------------------------------------


def test_update_rewrites_records_and_their_index_entries(dataset: Dataset) -> None:
    """update(**kw) changes every match; filters by the new value find them, by the old value do not."""
    targets = brute_force(dataset.items, "name", "exact", "alpha")
    assert Item.objects.filter(name="alpha").update(name="omega", rank=777) == len(targets) > 0
    assert set(pks(Item.objects.filter(name="omega"))) == targets
    assert set(pks(Item.objects.filter(rank=777))) == targets
    assert set(pks(Item.objects.filter(name__startswith="om"))) == targets
    assert set(pks(Item.objects.filter(rank__gte=777))) >= targets
    assert Item.objects.filter(name="alpha").count() == 0
    assert Item.objects.filter(rank=777).count() == len(targets)
    assert all(r.name == "omega" and r.rank == 777 for r in (Item.objects.get(id=pk) for pk in targets))
    assert Item.objects.check().ok


def test_delete_on_a_queryset_removes_records_and_index_entries(dataset: Dataset, redis: Any) -> None:
    """delete() removes every match with its index entries and returns how many it deleted."""
    doomed = brute_force(dataset.items, "rank", "lt", 0)
    assert Item.objects.filter(rank__lt=0).delete() == len(doomed) > 0
    assert Item.objects.filter(rank__lt=0).count() == 0
    assert Item.objects.count() == len(dataset.items) - len(doomed)
    for pk in doomed:
        assert not redis.exists(Item._meta.key(pk))
        with pytest.raises(Item.DoesNotExist):
            Item.objects.get(id=pk)
    assert Item.objects.check().ok


def test_bulk_create_saves_every_record_with_index_entries(repocket_connection: Any) -> None:
    """bulk_create(batch_size=7) saves all records, assigns ids and keeps indexes consistent."""
    made = Counter.objects.bulk_create([Counter(n=i % 5, word=f"w{i}") for i in range(30)], batch_size=7)
    assert len({c.pk for c in made}) == 30 and all(c.pk is not None for c in made)
    assert Counter.objects.count() == 30
    assert set(pks(Counter.objects.filter(n=3))) == {c.pk for c in made if c.n == 3}
    assert {c.word for c in Counter.objects.filter(word__startswith="w2")} == {"w2", *(f"w{i}" for i in range(20, 30))}
    assert Counter.objects.check().ok


# -- reindex and check ---------------------------------------------------------------------------------


def _bookkeeping(redis: Any, prefix: str) -> dict[bytes, Any]:
    """Every bookkeeping key under a model's prefix with its content."""
    out: dict[bytes, Any] = {}
    for key in redis.scan_iter(match=keys.escape_glob(prefix + ":_") + "*"):
        kind = redis.type(key)
        if kind == b"set":
            out[key] = ("set", frozenset(redis.smembers(key)))
        elif kind == b"zset":
            out[key] = ("zset", tuple(redis.zrange(key, 0, -1, withscores=True)))
        elif kind == b"hash":
            out[key] = ("hash", tuple(sorted(redis.hgetall(key).items())))
    return out


@pytest.mark.one_partition
def test_reindex_rebuilds_deleted_indexes_idempotently(dataset: Dataset, redis: Any) -> None:
    """reindex() rebuilds index keys deleted behind its back, reports progress, and is idempotent."""
    before = _bookkeeping(redis, Item._meta.prefix)
    assert any(b":_sort:" in k for k in before) and any(b":_lex:" in k for k in before)
    redis.delete(*before)
    assert Item.objects.filter(rank=1).count() == 0  # no index, no answer: reindex is needed
    calls: list[tuple[int, int]] = []
    total = len(dataset.items)
    assert Item.objects.reindex(batch_size=10, progress=lambda done, of: calls.append((done, of))) == total
    assert calls == [(min(n, total), total) for n in range(10, total + 10, 10)]
    assert _bookkeeping(redis, Item._meta.prefix) == before
    assert Item.objects.reindex() == total
    assert _bookkeeping(redis, Item._meta.prefix) == before
    assert set(pks(Item.objects.filter(rank=1))) == brute_force(dataset.items, "rank", "exact", 1)


@pytest.mark.one_partition
def test_reindex_builds_an_index_added_to_a_model_with_data(repocket_connection: Any) -> None:
    """Records saved without index=True become queryable by index after the model adds it and reindexes."""
    plain_model = _legacy_model(indexed=False)
    saved = [plain_model.create(level=i % 4, label=f"l{i % 3}") for i in range(12)]
    indexed_model = _legacy_model(indexed=True)
    assert indexed_model._meta.prefix == plain_model._meta.prefix
    assert indexed_model.objects.reindex(batch_size=5) == 12
    assert {r.pk for r in indexed_model.objects.filter(level=3)} == {r.pk for r in saved if r.level == 3}
    assert indexed_model.objects.filter(level=3).count() == 3
    assert [r.level for r in indexed_model.objects.order_by("level")] == sorted(r.level for r in saved)
    assert {r.pk for r in indexed_model.objects.filter(label__startswith="l1")} == {r.pk for r in saved if r.label == "l1"}
    assert indexed_model.objects.check().ok


def test_check_is_empty_after_normal_operations(dataset: Dataset) -> None:
    """check() finds nothing wrong after creates, updates, saves and deletes."""
    Item.objects.filter(rank__gt=2).update(score=9.5, name=None)
    record = Item.objects.filter(rank=0).first()
    record.rank, record.when = 5, None
    record.save()
    Item.objects.filter(name="beta").delete()
    report = Item.objects.check()
    assert len(report) == 0 and report.ok
    assert report.records == Item.objects.count()


@pytest.mark.one_partition
def test_check_reports_and_repairs_entries_changed_behind_its_back(dataset: Dataset, redis: Any) -> None:
    """check() lists index entries removed or added behind repocket's back; repair=True fixes them."""
    victim = next(r for r in dataset.items if r.rank == 1)
    eq_key = keys.eq_index_key(Item._meta.prefix, "rank", "1")
    sort_key = keys.sorted_index_key(Item._meta.prefix, "rank")
    bogus = str(uuid.uuid1())
    assert redis.srem(eq_key, str(victim.pk)) == 1
    assert redis.zrem(sort_key, str(victim.pk)) == 1
    redis.sadd(eq_key, bogus)
    report = Item.objects.check()
    assert (eq_key, str(victim.pk)) in report.missing_entries
    assert (sort_key, str(victim.pk)) in report.missing_entries
    assert (eq_key, bogus) in report.stale_entries
    assert len(report) == 3 and not report.ok
    assert Item.objects.check(repair=True).repaired
    assert Item.objects.check().ok
    assert victim.pk in set(pks(Item.objects.filter(rank=1)))
    assert victim.pk in set(pks(Item.objects.filter(rank__range=(1, 1))))


# -- round trips (issue 3 item 4) -------------------------------------------------------------------


def test_round_trip_counter_counts_requests_of_this_thread_only(redis: Any) -> None:
    """The counter sees one per command and one per pipeline, and nothing sent by other threads."""
    import threading

    redis.ping()  # connect first: the handshake is not counted anyway
    with count_round_trips() as trips:
        redis.set("k", b"v\r\n")
        pipe = redis.pipeline(transaction=False)
        pipe.get("k")
        pipe.get("k")
        pipe.execute()
        worker = threading.Thread(target=lambda: redis.get("k"))
        worker.start()
        worker.join()
    assert trips.count == 2
    assert trips.commands() == [[b"SET", b"k", b"v\r\n"], [b"GET", b"k"], [b"GET", b"k"]]
    redis.get("k")
    assert trips.count == 2


def test_save_is_one_round_trip(repocket_connection: Any) -> None:
    """save() of a new record and of a changed record (indexes, pointer, streams) is one round trip each."""
    _warm_scripts(repocket_connection)
    project = Project.create(name="p", slug="s")
    item = Item(name="x", rank=1, when=T0, price=Decimal(1), score=1.0, ref=U1, code=b"c", project=project)
    with count_round_trips() as trips:
        item.save()
    assert trips.count == 1
    item.rank, item.name = 2, "y"
    with count_round_trips() as trips:
        item.save()
    assert trips.count == 1
    build = Build(number=1, project=project, stdout=b"out", stderr=b"err")
    with count_round_trips() as trips:
        build.save()
    assert trips.count == 1


def test_get_is_one_round_trip(repocket_connection: Any) -> None:
    """get() by id reads the hash in one round trip, with its ByteStreams in that same round trip."""
    item = Item.create(name="x", rank=1)
    log = Log.create(title="t", out=b"stdout bytes", err=b"stderr bytes")
    with count_round_trips() as trips:
        assert Item.objects.get(id=item.pk) == item
    assert trips.count == 1
    with count_round_trips() as trips:
        loaded = Log.objects.get(id=log.pk)
    assert trips.count == 1
    assert (loaded.out, loaded.err) == (b"stdout bytes", b"stderr bytes")
    assert trips.names().count(b"GET") == 2 and trips.names().count(b"HGETALL") == 1


def test_get_with_a_pointer_is_one_more_round_trip(repocket_connection: Any) -> None:
    """get() of a record with a Pointer takes one round trip for it and one for its target."""
    build = Build.create(number=1, project=Project.create(name="p", slug="s"))
    with count_round_trips() as trips:
        assert Build.objects.get(id=build.pk).project.name == "p"
    assert trips.count == 2


@pytest.mark.parametrize("lookups", [{"name": "hit"}, {"rank__gte": 100}, {"name__startswith": "hi"},
                                     {"name__in": ["hit", "nothing"]}])
def test_indexed_filter_round_trips_do_not_grow_with_the_result(repocket_connection: Any, lookups: dict[str, Any]) -> None:
    """An indexed filter materialises in at most 2 round trips, the same for 10 matches as for 500."""
    counts = []
    for size in (10, 500):
        repocket_connection.flushdb()
        Item.objects.bulk_create([Item(name="hit", rank=100 + i) for i in range(size)]
                                 + [Item(name="miss", rank=i) for i in range(50)])
        with count_round_trips() as trips:
            found = list(Item.objects.filter(**lookups))
        assert len(found) == size
        counts.append(trips.count)
    assert counts[0] == counts[1] <= 2


def test_count_is_one_round_trip(dataset: Dataset) -> None:
    """count() on all(), on the manager and on an indexed equality filter is one round trip."""
    for query in (Item.objects.all(), Item.objects.filter(rank=1), Item.objects.filter(project=dataset.project("gemini"))):
        with count_round_trips() as trips:
            query.count()
        assert trips.count == 1
    with count_round_trips() as trips:
        assert Item.objects.count() == len(dataset.items)
    assert trips.count == 1
    with count_round_trips() as trips:
        assert Item.objects.filter(rank=1).exists()
    assert trips.count == 1


@pytest.mark.parametrize("query", ["filtered", "all"])
def test_pointers_of_a_result_set_load_in_one_round_trip_per_level(repocket_connection: Any, query: str) -> None:
    """50 Builds pointing to 50 Projects load with their Projects in at most 3 round trips, not 50+."""
    projects = Project.objects.bulk_create([Project(name=f"p{i}", slug=f"s{i}") for i in range(50)])
    Build.objects.bulk_create([Build(number=i, project=p) for i, p in enumerate(projects)])
    qs = Build.objects.filter(number__gte=0) if query == "filtered" else Build.objects.all()
    with count_round_trips() as trips:
        builds = list(qs)
        names = {b.project.name for b in builds}
    assert len(builds) == 50 and names == {f"p{i}" for i in range(50)}
    assert trips.count <= 3


def test_two_pointer_levels_take_one_more_round_trip(repocket_connection: Any) -> None:
    """Build -> Project -> Team for 30 Builds loads in at most 4 round trips."""
    teams = Team.objects.bulk_create([Team(name=f"t{i}") for i in range(30)])
    projects = Project.objects.bulk_create([Project(name=f"p{i}", slug="s", team=t) for i, t in enumerate(teams)])
    Build.objects.bulk_create([Build(number=i, project=p) for i, p in enumerate(projects)])
    with count_round_trips() as trips:
        teams_seen = {b.project.team.name for b in Build.objects.filter(number__lt=100)}
    assert teams_seen == {f"t{i}" for i in range(30)}
    assert trips.count <= 4


@pytest.mark.one_partition
def test_bulk_create_is_one_round_trip_per_batch(repocket_connection: Any) -> None:
    """bulk_create of 1,000 records with batch_size=500 is 2 round trips."""
    _warm_scripts(repocket_connection)
    records = [Counter(n=i, word=f"w{i}") for i in range(1000)]
    with count_round_trips() as trips:
        Counter.objects.bulk_create(records, batch_size=500)
    assert trips.count == 2
    assert Counter.objects.count() == 1000
    assert Counter.objects.filter(n__gte=990).count() == 10


@pytest.mark.one_partition
def test_queryset_update_and_delete_are_batched(repocket_connection: Any) -> None:
    """update() and delete() on 300 matches take a bounded number of round trips, not one per record."""
    _warm_scripts(repocket_connection)
    Counter.objects.bulk_create([Counter(n=1, word="a") for _ in range(300)])
    with count_round_trips() as trips:
        assert Counter.objects.filter(n=1).update(word="b") == 300
    assert trips.count <= 3
    with count_round_trips() as trips:
        assert Counter.objects.filter(word="b").delete() == 300
    assert trips.count <= 3
    assert Counter.objects.count() == 0
