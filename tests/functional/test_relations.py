"""Reverse accessors (SPEC §7): ``project.builds``, the records whose Pointer names a record, from its index."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, errors
from tests.roundtrips import count_round_trips

pytestmark = pytest.mark.usefixtures("driver")


class Project(ActiveRecord):
    name = attributes.Unicode(index=True)


class Build(ActiveRecord):
    project = attributes.Pointer(Project, related_name="builds")
    number = attributes.Integer(index=True)
    reviewer = attributes.Pointer("Engineer", null=True)  # (declared below: a name, resolved later)


class Engineer(ActiveRecord):
    name = attributes.Unicode(index=True)


class Silent(ActiveRecord):
    project = attributes.Pointer(Project, related_name="+")


def test_a_reverse_accessor_is_a_lazy_queryset_of_the_referring_records(repocket_connection: redis_py.Redis) -> None:
    alpha, beta = Project.objects.create(name="alpha"), Project.objects.create(name="beta")
    ada = Engineer.objects.create(name="ada")
    for number in range(5):
        Build.objects.create(project=alpha if number % 2 else beta, number=number, reviewer=ada if number < 2 else None)
    builds = alpha.builds
    with count_round_trips() as trips:
        numbers = sorted(build.number for build in builds.filter(number__gte=2))
    assert numbers == [3]
    assert trips.count == 2  # the index reads, then the records: served by the Pointer's index
    assert all(build.project is alpha for build in alpha.builds)  # (their Pointer resolves to it, unread)
    assert sorted(b.number for b in beta.builds) == [0, 2, 4] and alpha.builds.count() == 2
    assert [b.number for b in ada.build_set.order_by("number")] == [0, 1]  # the default name, <model>_set
    assert list(Project.objects.create(name="empty").builds) == []


def test_reverse_accessor_errors_name_what_is_wrong(repocket_connection: redis_py.Redis) -> None:
    project = Project.objects.create(name="p")
    with pytest.raises(AttributeError, match="silent_set"):
        project.silent_set  # noqa: B018 - related_name="+": none
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        project.nothing  # noqa: B018
    with pytest.raises(errors.UnsavedReferenceError, match="save it before reading builds"):
        Project(name="unsaved").builds  # noqa: B018
    with pytest.raises(errors.RepocketActiveRecordDefinitionError, match="related_name"):
        attributes.Pointer(Project, related_name="not a name")


def test_a_related_name_that_clashes_is_a_definition_error(repocket_connection: redis_py.Redis) -> None:
    target: Any = type("Shelf", (ActiveRecord,), {"__module__": __name__, "books": attributes.Integer()})
    type("Book", (ActiveRecord,), {"__module__": __name__, "shelf": attributes.Pointer(target, related_name="books")})
    shelf = target.objects.create(books=1)
    with pytest.raises(errors.RepocketActiveRecordDefinitionError, match="Shelf.books is an attribute of Shelf"):
        shelf.book_set  # noqa: B018 - any reverse accessor of the target reports the clash


def test_prefetch_related_loads_every_records_referrers_in_one_round_trip(repocket_connection: redis_py.Redis) -> None:
    projects = [Project.objects.create(name=f"p{n}") for n in range(4)]
    for number in range(10):
        Build.objects.create(project=projects[number % 3], number=number)  # (p3 has none)
    list(Project.objects.prefetch_related("builds"))  # (loads the script: a first call also sends SCRIPT LOAD)
    with count_round_trips() as trips:
        loaded = list(Project.objects.order_by("name").prefetch_related("builds"))
        numbers = {p.name: sorted(b.number for b in p.builds) for p in loaded}
        assert all(b.project is p for p in loaded for b in p.builds)  # (resolved to the records in hand)
    assert numbers == {"p0": [0, 3, 6, 9], "p1": [1, 4, 7], "p2": [2, 5, 8], "p3": []}
    assert trips.count == 3  # the projects (their ids, then them), then the builds of all four: one script call
    assert sum(request.count(b"EVALSHA") for request in trips.requests[2:]) == 1
    assert sorted(b.number for b in loaded[0].builds.filter(number__gt=3)) == [6, 9]  # (queries Redis again)
    with pytest.raises(errors.UnknownFieldError, match="no reverse accessor 'nothing'.*builds"):
        list(Project.objects.prefetch_related("nothing"))
