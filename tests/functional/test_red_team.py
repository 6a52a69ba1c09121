"""Defects a new user and a red team found, each reproduced as they reported it, on a real server.

Secrets in messages, naive and aware datetimes, records whose Pointer target was
deleted, unique nullable attributes, misleading lookup errors, and smaller ones.
"""

from __future__ import annotations

import datetime as dt
import traceback
import uuid
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st

from repocket import ActiveRecord, attributes, errors, keys

UTC = dt.timezone.utc


class Acct(ActiveRecord):
    token = attributes.Unicode(secret=True, index=True)
    pin = attributes.Integer(secret=True)
    owner = attributes.Unicode(index=True)


class Event(ActiveRecord):
    when = attributes.DateTime(index=True, null=True)
    plain_when = attributes.DateTime(null=True)


class Author(ActiveRecord):
    name = attributes.Unicode(index=True)


class Book(ActiveRecord):
    title = attributes.Unicode(index=True)
    pages = attributes.Integer(index=True)
    author = attributes.Pointer(Author)
    editor = attributes.Pointer(Author, null=True)


class VersionedBook(ActiveRecord):
    title = attributes.Unicode()
    author = attributes.Pointer(Author)

    class Meta:
        versioned = True


class Handle(ActiveRecord):
    nick = attributes.Unicode(unique=True, null=True)
    number = attributes.Integer(unique=True, null=True)


# -- 1. secrets never reach a message -------------------------------------------------------


SECRET = "TOPSECRET-x9"
PIN = "PINSECRET-x"


def _everything_said(exc: BaseException) -> str:
    """Every text an exception carries: message, repr, formatted traceback, and its whole chain."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), "".join(traceback.format_exception(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def test_a_secret_value_that_cannot_be_cast_is_not_in_the_message_or_its_cause() -> None:
    """Assigning a bad value to a secret Integer masks it in the message and in the cause chain."""
    account = Acct(token="t", owner="o")
    with pytest.raises(errors.ValidationError) as info:
        account.pin = PIN  # type: ignore[assignment]
    said = _everything_said(info.value)
    assert "'***' (secret)" in str(info.value)
    assert "Acct.pin" in str(info.value)
    assert PIN not in said


def test_get_and_multiple_objects_mask_secret_lookups(repocket_connection: redis_py.Redis) -> None:
    """DoesNotExist and MultipleObjectsReturned show '***' for a secret lookup value, not the value."""
    with pytest.raises(Acct.DoesNotExist) as missing:
        Acct.objects.get(token=SECRET)
    assert SECRET not in _everything_said(missing.value)
    assert "'token': '***'" in str(missing.value)
    Acct.create(token=SECRET, pin=1, owner="a")
    Acct.create(token=SECRET, pin=2, owner="b")
    with pytest.raises(Acct.MultipleObjectsReturned) as many:
        Acct.objects.get(token=SECRET)
    assert SECRET not in _everything_said(many.value)
    with pytest.raises(Acct.DoesNotExist) as plain:
        Acct.objects.get(owner="nobody")
    assert "'owner': 'nobody'" in str(plain.value)  # a value that is not secret is still named


def test_a_corrupt_stored_secret_is_not_quoted(repocket_connection: redis_py.Redis) -> None:
    """A secret field whose stored envelope is invalid raises CorruptRecordError without its value."""
    account = Acct.create(token="fine", pin=1, owner="a")
    key = account._key()
    for raw in ('{"type": "Integer", "value": "' + PIN + '", "module": "repocket.attributes"}',
                "not json " + PIN,
                '{"type": "Integer", "value": ' + "9" * 30 + "1.5" + PIN[:0] + ', "module": "x"}'):
        repocket_connection.hset(key, "pin", raw)
        with pytest.raises(errors.CorruptRecordError) as info:
            Acct.objects.get(id=account.id)
        assert PIN not in _everything_said(info.value), raw
        assert "pin" in str(info.value)


def test_repr_and_to_dict_mask_secrets(repocket_connection: redis_py.Redis) -> None:
    """repr() and to_dict(simple=True) never show a secret value."""
    account = Acct.create(token=SECRET, pin=4242, owner="a")
    assert SECRET not in repr(account) and "4242" not in repr(account)
    assert SECRET not in str(account.to_dict(simple=True))


# -- 3. naive and aware datetimes compare as instants ----------------------------------------


def test_naive_and_aware_values_compare_with_and_without_an_index(repocket_connection: redis_py.Redis) -> None:
    """A naive value counts as UTC: range filters, exact matches and ordering mix naive and aware."""
    naive = Event.create(when=dt.datetime(2024, 1, 1, 12), plain_when=dt.datetime(2024, 1, 1, 12))
    aware = Event.create(when=dt.datetime(2024, 1, 1, 13, tzinfo=UTC),
                         plain_when=dt.datetime(2024, 1, 1, 13, tzinfo=UTC))
    for field in ("when", "plain_when"):
        aware_bound = dt.datetime(2024, 1, 1, 11, tzinfo=UTC)
        naive_bound = dt.datetime(2024, 1, 1, 11)
        for bound in (aware_bound, naive_bound):
            found = {e.id for e in Event.objects.filter(**{f"{field}__gte": bound})}
            assert found == {naive.id, aware.id}, (field, bound)
        assert [e.id for e in Event.objects.order_by(field)] == [naive.id, aware.id]
        assert [e.id for e in Event.objects.order_by(f"-{field}")] == [aware.id, naive.id]
        same_instant = dt.datetime(2024, 1, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        assert [e.id for e in Event.objects.filter(**{field: same_instant})] == [naive.id]
    assert Event.objects.get(id=naive.id).when == dt.datetime(2024, 1, 1, 12)  # kept naive
    assert Event.objects.get(id=naive.id).when.tzinfo is None


def test_auto_now_values_and_naive_tutorial_values_sort_together(repocket_connection: redis_py.Redis) -> None:
    """order_by never raises a bare TypeError on a mix of naive values and aware auto_now ones."""

    class Stamp(ActiveRecord):
        at = attributes.DateTime(null=True)
        seen = attributes.DateTime(auto_now=True)

    Stamp.create(at=dt.datetime(2000, 1, 1))
    Stamp.create(at=dt.datetime.now(UTC))
    ordered = list(Stamp.objects.order_by("at"))
    assert ordered[0].at == dt.datetime(2000, 1, 1)
    assert ordered[0].at < ordered[1].at.replace(tzinfo=None)  # noqa: DTZ


moments = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
offsets = st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                           dt.timezone(dt.timedelta(hours=-8))])


def _instant(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@settings(max_examples=40)
@given(values=st.lists(st.tuples(moments, offsets), min_size=1, max_size=8),
       bound=st.tuples(moments, offsets), op=st.sampled_from(["gt", "gte", "lt", "lte", "exact"]))
def test_mixed_datetime_filters_match_the_utc_rule(repocket_connection: redis_py.Redis, values: list[Any],
                                                   bound: Any, op: str) -> None:
    """Over mixed naive and aware values, every lookup and the ordering follow 'naive is UTC'."""
    Event.objects.all().delete()
    stored = [Event.create(when=v.replace(tzinfo=tz), plain_when=v.replace(tzinfo=tz)) for v, tz in values]
    limit = bound[0].replace(tzinfo=bound[1])
    compare = {"gt": lambda a: a > _instant(limit), "gte": lambda a: a >= _instant(limit),
               "lt": lambda a: a < _instant(limit), "lte": lambda a: a <= _instant(limit),
               "exact": lambda a: a == _instant(limit)}[op]
    expected = {e.id for e in stored if compare(_instant(e.when))}
    for field in ("when", "plain_when"):
        name = field if op == "exact" else f"{field}__{op}"
        assert {e.id for e in Event.objects.filter(**{name: limit})} == expected, field
        ordered = [_instant(e.when) for e in Event.objects.order_by(field)]
        assert ordered == sorted(ordered)
    assert Event.objects.check().ok


# -- 5. records pointing at a deleted target --------------------------------------------------


def _orphans(n: int = 3) -> tuple[Author, list[Book]]:
    author = Author.create(name="gone")
    books = [Book.create(title=f"T{i}", pages=i, author=author) for i in range(n)]
    author.delete()
    return author, books


def test_records_whose_target_was_deleted_can_be_listed_read_and_deleted(repocket_connection: redis_py.Redis) -> None:
    """all(), values_list(), iterator() and filter(author=a).delete() work on orphans; the field raises on access."""
    author, books = _orphans()
    listed = list(Book.objects.all())
    assert {b.id for b in listed} == {b.id for b in books}
    assert sorted(Book.objects.values_list("title", flat=True)) == ["T0", "T1", "T2"]
    assert Book.objects.values_list("author", flat=True) == [author.id] * 3
    assert len(list(Book.objects.iterator(chunk_size=2))) == 3
    with pytest.raises(errors.BrokenReferenceError) as info:
        listed[0].author  # noqa: B018
    assert author._key() in str(info.value) and listed[0]._key() in str(info.value)
    assert "BrokenReference" in repr(listed[0])
    assert Book.objects.filter(author=author).update(pages=9) == 3
    assert Book.objects.filter(author=author).delete() == 3
    assert Book.objects.count() == 0
    assert Book.objects.check().ok


def test_an_orphan_can_be_saved_and_its_pointer_is_kept(repocket_connection: redis_py.Redis) -> None:
    """Saving an orphan after changing another field keeps the stored pointer as it was."""
    author, (book, *_) = _orphans(1)
    loaded = Book.objects.get(id=book.id)
    loaded.title = "renamed"
    loaded.save()
    raw = repocket_connection.hget(book._key(), "author")
    assert author._key().encode() in raw
    assert Book.objects.filter(author=author).count() == 1


def test_versioned_orphans_can_be_read_refreshed_and_deleted(repocket_connection: redis_py.Redis) -> None:
    """For a versioned model, get(), refresh() and Model(id=x).delete() work on a record whose target is gone."""
    author = Author.create(name="gone")
    book = VersionedBook.create(title="v", author=author)
    author.delete()
    loaded = VersionedBook.objects.get(id=book.id)
    loaded.refresh()
    assert loaded.title == "v"
    assert VersionedBook(id=book.id).delete() == 1
    assert not repocket_connection.exists(book._key())
    assert VersionedBook.objects.check().ok


@pytest.mark.one_partition
def test_check_reports_orphans_and_repair_nulls_only_nullable_pointers(repocket_connection: redis_py.Redis) -> None:
    """check() lists broken pointers; repair sets a null=True one to None and leaves a null=False one."""
    editor = Author.create(name="editor")
    kept = Author.create(name="kept")
    book = Book.create(title="t", pages=1, author=kept, editor=editor)
    editor.delete()
    report = Book.objects.check()
    assert report.broken_pointers == [(book._key(), "editor", editor._key())]
    Book.objects.check(repair=True)
    assert Book.objects.check().ok
    assert Book.objects.get(id=book.id).editor is None
    assert repocket_connection.sismember(keys.null_index_key(Book._meta.prefix, "editor"), str(book.id))
    kept.delete()
    assert Book.objects.check(repair=True).broken_pointers == [(book._key(), "author", kept._key())]
    assert Book.objects.check().broken_pointers == [(book._key(), "author", kept._key())]  # left as it is
    assert Book.objects.filter(author=kept.id).delete() == 1  # the documented way to remove them


# -- 7. a unique nullable attribute starts as None --------------------------------------------


@pytest.mark.one_partition
def test_unique_nullable_attributes_default_to_none_and_none_is_never_claimed(
        repocket_connection: redis_py.Redis) -> None:
    """Records that omit a unique null=True Unicode or Integer do not clash: None is not a value."""
    first, second = Handle.create(), Handle.create()
    assert first.nick is None and first.number is None
    assert Handle.objects.filter(nick__isnull=True).count() == 2
    Handle.create(nick="", number=0)  # the empty values are ordinary values
    with pytest.raises(errors.UniqueConstraintError):
        Handle.create(nick="")
    assert repocket_connection.hlen(keys.unique_key(Handle._meta.prefix, "nick")) == 1
    assert second.id != first.id


# -- 9. lookup errors that say what is wrong --------------------------------------------------


@pytest.mark.parametrize("lookup", ["pages__regexp", "title__endwith", "title__foo", "author__name__bar"])
def test_an_unknown_lookup_is_named_with_the_supported_ones(lookup: str) -> None:
    """A misspelt lookup names itself and lists the lookups, instead of 'is not a Pointer'."""
    with pytest.raises(errors.UnknownFieldError) as info:
        Book.objects.filter(**{lookup: 1})
    message = str(info.value)
    assert "is not a Pointer" not in message
    assert repr(lookup.rsplit("__", 1)[1]) in message and "startswith" in message


def test_endswith_iendswith_iexact_regex_iregex_by_scan(repocket_connection: redis_py.Redis) -> None:
    """The text lookups Django has work by scan, on indexed and unindexed attributes alike."""
    author = Author.create(name="a")
    for title in ("Tale 5", "tale 15", "Other", "TALE"):
        Book.create(title=title, pages=len(title), author=author)

    def titles(**lookup: Any) -> list[str]:
        return sorted(b.title for b in Book.objects.filter(**lookup))

    assert titles(title__endswith="5") == ["Tale 5", "tale 15"]
    assert titles(title__iendswith="LE") == ["TALE"]
    assert titles(title__iexact="tale") == ["TALE"]
    assert titles(title__regex=r"^[Tt]ale \d+$") == ["Tale 5", "tale 15"]
    assert titles(title__iregex=r"^tale") == ["TALE", "Tale 5", "tale 15"]
    assert Author.objects.filter(name__regex="^a$").count() == 1


def test_text_lookups_on_a_number_and_bad_patterns_raise_validation_errors() -> None:
    """regex on an Integer, and a pattern that does not compile, raise ValidationError naming the field."""
    with pytest.raises(errors.ValidationError, match="Book.pages.*Unicode"):
        Book.objects.filter(pages__regex=1)
    with pytest.raises(errors.ValidationError, match="regular expression"):
        Book.objects.filter(title__regex="(")


@pytest.mark.parametrize("value", ["T1", b"T1", 5])
def test_in_with_a_string_or_a_scalar_raises(value: Any) -> None:
    """title__in='T1' is refused instead of silently matching nothing (or single characters)."""
    with pytest.raises(errors.ValidationError, match="__in takes a list"):
        Book.objects.filter(title__in=value)


@pytest.mark.one_partition
def test_count_on_an_id_set_of_the_wrong_type_is_a_corrupt_record_error(repocket_connection: redis_py.Redis) -> None:
    """count() names the key when _ids holds the wrong Redis type."""
    repocket_connection.set(Book._meta.ids_key, "x")
    with pytest.raises(errors.CorruptRecordError) as info:
        Book.objects.count()
    assert info.value.key == Book._meta.ids_key


# -- 10. smaller ones -----------------------------------------------------------------------


def test_bulk_create_refuses_the_same_instance_twice(repocket_connection: redis_py.Redis) -> None:
    """bulk_create([r, r]) raises before writing anything, like duplicate ids do."""
    author = Author.create(name="a")
    book = Book(title="t", pages=1, author=author)
    with pytest.raises(ValueError, match="twice"):
        Book.objects.bulk_create([book, book])
    assert Book.objects.count() == 0


@pytest.mark.one_partition
def test_count_reads_the_index_and_check_finds_the_drift(repocket_connection: redis_py.Redis) -> None:
    """As documented, count() of one exact indexed lookup trusts the index, and check() reports a stale entry."""
    author = Author.create(name="a")
    Book.create(title="t", pages=1, author=author)
    stray = str(uuid.uuid1())
    repocket_connection.sadd(keys.eq_index_key(Book._meta.prefix, "title", "t"), stray)
    assert Book.objects.filter(title="t").count() == 2
    assert len(Book.objects.filter(title="t")) == 1
    report = Book.objects.check()
    assert (keys.eq_index_key(Book._meta.prefix, "title", "t"), stray) in report.stale_entries
