"""Ordered slices served from indexes pick exactly the records Python's sort would."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes
from tests.roundtrips import count_round_trips


class Reading(ActiveRecord):
    """Indexed values with None and NaN, to order and slice."""

    level = attributes.Integer(index=True, null=True)
    ratio = attributes.Float(index=True)
    site = attributes.Unicode(index=True)


def _key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if value != value:
        return (2, 0)
    return (1, value)


def _expected(records: list[Reading], field: str, descending: bool, low: int, high: int | None) -> list[Any]:
    by_id = sorted(records, key=lambda r: str(r.id))
    ordered = sorted(by_id, key=lambda r: _key(getattr(r, field)), reverse=descending)
    return [_plain(getattr(r, field)) for r in ordered[low:high]]


def _plain(value: Any) -> Any:
    return "nan" if isinstance(value, float) and math.isnan(value) else value


@pytest.fixture
def readings(repocket_connection: redis_py.Redis) -> list[Reading]:
    rng = random.Random(7)
    records = [
        Reading(level=rng.choice([None, -4, 1, 2, 3, 50]),
                ratio=rng.choice([1.0, 2.5, -0.5, math.nan]),
                site=rng.choice("ab"))
        for _ in range(60)
    ]
    Reading.objects.bulk_create(records)
    return records


@settings(max_examples=60)
@given(field=st.sampled_from(["level", "ratio"]), descending=st.booleans(),
       low=st.integers(0, 65), span=st.one_of(st.none(), st.integers(0, 30)),
       site=st.sampled_from([None, "a"]))
def test_ordered_slices_match_python(readings: list[Reading], field: str, descending: bool,
                                     low: int, span: int | None, site: str | None) -> None:
    """order_by(f)[low:high], with and without an indexed filter, equals sorting in Python."""
    high = None if span is None else low + span
    query = Reading.objects.all() if site is None else Reading.objects.filter(site=site)
    pool = [r for r in readings if site is None or r.site == site]
    got = [_plain(getattr(r, field)) for r in query.order_by(("-" if descending else "") + field)[low:high]]
    assert got == _expected(pool, field, descending, low, high)


def test_an_unfiltered_slice_reads_only_its_window(readings: list[Reading]) -> None:
    """Without NaN in the index, an unfiltered slice is 2 index round trips and fetches only its records."""
    with count_round_trips() as trips:
        page = list(Reading.objects.order_by("level")[10:15])
    assert [r.level for r in page] == _expected(readings, "level", False, 10, 15)
    assert trips.count == 3  # index sizes and edges, the window, the 5 records
    hgetalls = [command for command in trips.commands() if command[0].upper() == b"HGETALL"]
    assert len(hgetalls) == 5


def test_first_of_an_unordered_query_fetches_one_record(readings: list[Reading]) -> None:
    """first() without an order reads the candidates' ids and then a single record."""
    with count_round_trips() as trips:
        first = Reading.objects.filter(site="a").first()
    assert first is not None and first.site == "a"
    hgetalls = [command for command in trips.commands() if command[0].upper() == b"HGETALL"]
    assert len(hgetalls) == 1


def test_an_unindexed_slice_fetches_in_growing_chunks(readings: list[Reading]) -> None:
    """A slice no index serves stops when full: it reads chunks of 1, 2, 4... not every record."""
    by_id = sorted(readings, key=lambda r: str(r.id))
    position = next(i for i, r in enumerate(by_id) if r.level == 50)  # the first match, in id order
    with count_round_trips() as trips:
        found = list(Reading.objects.exclude(level__lt=50).exclude(level__isnull=True)[:1])
    assert [r.id for r in found] == [by_id[position].id]
    hgetalls = [command for command in trips.commands() if command[0].upper() == b"HGETALL"]
    assert len(hgetalls) < max(2 * (position + 1), 2)  # the chunks up to the first match, at most
    assert trips.count <= 2 + (position + 1).bit_length()  # the id set, then one round trip per chunk


class Entry(ActiveRecord):
    """A Unicode order (the lexicographic index) over a filtered subset, with ties, prefixes and None."""

    name = attributes.Unicode(index=True, null=True)
    group = attributes.Integer(index=True)


NAMES = [None, "", "a", "ab", "abc", "b", "B", "é", "z", "zz", "ab"]


@pytest.fixture
def entries(repocket_connection: redis_py.Redis) -> list[Entry]:
    rng = random.Random(11)
    records = [Entry(name=rng.choice(NAMES), group=rng.choice([1, 2, 3])) for _ in range(90)]
    Entry.objects.bulk_create(records)
    return records


@settings(max_examples=60)
@given(descending=st.booleans(), low=st.integers(0, 40), span=st.integers(0, 30),
       group=st.sampled_from([1, 2]), with_in=st.booleans())
def test_ordered_unicode_slices_of_a_filter_match_python(entries: list[Entry], descending: bool, low: int,
                                                          span: int, group: int, with_in: bool) -> None:
    """filter(...).order_by(unicode)[low:high] equals sorting the matches in Python, both directions."""
    query = Entry.objects.filter(group__in=[group, 3]) if with_in else Entry.objects.filter(group=group)
    pool = [e for e in entries if e.group in ((group, 3) if with_in else (group,))]
    got = [e.name for e in query.order_by(("-" if descending else "") + "name")[low:low + span]]
    assert got == _expected(pool, "name", descending, low, low + span)


def test_a_page_of_a_large_filter_reads_part_of_the_order_index(repocket_connection: redis_py.Redis) -> None:
    """A 10-record page of 1 match in 10, ordered by name, reads a few hundred index entries, not all 3,000."""
    Entry.objects.bulk_create(Entry(name=f"n{i:05d}", group=7 if i % 10 == 0 else 1) for i in range(3000))
    with count_round_trips() as trips:
        page = list(Entry.objects.filter(group=7).order_by("name")[20:30])
    assert [e.name for e in page] == [f"n{i:05d}" for i in range(200, 300, 10)]
    ranges = [c for c in trips.commands() if c[0].upper() == b"ZRANGE"]
    read = sum(int(c[3]) - int(c[2]) + 1 for c in ranges)
    assert 0 < read < 1000  # the whole index is 3,000 entries
    assert sum(1 for c in trips.commands() if c[0].upper() == b"HGETALL") == 10
    with count_round_trips() as trips:
        last = list(Entry.objects.filter(group=7).order_by("-name")[:3])
    assert [e.name for e in last] == ["n02990", "n02980", "n02970"]
    assert sum(1 for c in trips.commands() if c[0].upper() == b"HGETALL") == 3


def test_a_page_of_few_candidates_fetches_their_sort_field_only(repocket_connection: redis_py.Redis) -> None:
    """With 5 candidates among 2,000 records, the page sorts their names (HGET) and reads no index range."""
    Entry.objects.bulk_create(Entry(name=f"m{i:05d}", group=9 if i in (5, 700, 1500, 1999, 3) else 1)
                              for i in range(2000))
    with count_round_trips() as trips:
        page = list(Entry.objects.filter(group=9).order_by("-name")[1:3])
    assert [e.name for e in page] == ["m01500", "m00700"]
    names = [c[0].upper() for c in trips.commands()]
    assert b"ZRANGE" not in names and b"ZREVRANGE" not in names
    assert names.count(b"HGET") == 5 and names.count(b"HGETALL") == 2


def test_an_iterator_sorted_in_python_reads_its_candidates_once(readings: list[Reading]) -> None:
    """iterator() over an order no index serves reads the filter's index once, then sorts what it loaded."""
    site_key = f"{Reading._meta.prefix}:_eq:site:a".encode()
    with count_round_trips() as trips:
        got = [(r.level, r.ratio) for r in Reading.objects.filter(site="a").order_by("level", "ratio").iterator(7)]
    expected = [(r.level, r.ratio) for r in Reading.objects.filter(site="a").order_by("level", "ratio")]
    assert [_plain(v) for pair in got for v in pair] == [_plain(v) for pair in expected for v in pair]
    reads = [c for c in trips.commands() if c[0].upper() == b"SMEMBERS" and c[1] == site_key]
    assert len(reads) == 1
