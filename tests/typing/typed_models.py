"""What type checkers see of typed models: each ``reveal_type`` line ends with the type revealed.

Checked by tests/unit/test_typing.py with mypy (``plugins = repocket.mypy``) and, when it is
installed, pyright (no plugin). Types are written without module paths (``UUID``, not
``uuid.UUID``); ``# pyright: <type>`` follows where pyright, lacking the plugin, sees another.
Never run: the models are declared without annotations, as users write them.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import TYPE_CHECKING

from repocket import ActiveRecord, attributes

if TYPE_CHECKING:
    from typing_extensions import reveal_type


class Project(ActiveRecord):
    name = attributes.Unicode(index=True)
    note = attributes.Unicode(null=True)


class Build(ActiveRecord):
    project = attributes.Pointer(Project)
    parent = attributes.Pointer("Build", null=True)
    started = attributes.DateTime(auto_now=True)
    finished = attributes.DateTime(null=True)
    status = attributes.Integer(default=0)
    cost = attributes.Decimal(null=True)
    ratio = attributes.Float()
    log = attributes.ByteStream()
    digest = attributes.Bytes(null=True)
    token = attributes.UUID(null=True)
    meta = attributes.JSON()
    reviewers = attributes.PointerList(Project)


class NightlyBuild(Build):
    """Inherits every attribute of Build."""

    schedule = attributes.Unicode()


class Ticket(ActiveRecord):
    key = attributes.AutoUUID()
    title = attributes.Unicode()


project = Project(name="repocket", note=None)
build = Build(project=project, status=1, cost=decimal.Decimal("1.10"), token="7d2f0b52-8d3c-11ee-b9d1-0242ac120002")

# -- values ---------------------------------------------------------------------------
reveal_type(project.name)  # str
reveal_type(project.note)  # str | None
reveal_type(project.id)  # UUID  # pyright: Any
reveal_type(project.pk)  # UUID | None
reveal_type(build.project)  # Project
reveal_type(build.parent)  # Build | None  # pyright: Any | None
reveal_type(build.started)  # datetime
reveal_type(build.finished)  # datetime | None
reveal_type(build.status)  # int
reveal_type(build.cost)  # Decimal | None
reveal_type(build.ratio)  # float
reveal_type(build.log)  # bytes
reveal_type(build.digest)  # bytes | None
reveal_type(build.token)  # UUID | None
reveal_type(build.meta)  # Any
reveal_type(build.reviewers)  # list[Project]
reveal_type(NightlyBuild().project)  # Project
reveal_type(NightlyBuild().schedule)  # str
reveal_type(Ticket().key)  # UUID

# -- the attributes themselves, on the class ---------------------------------------------
reveal_type(Project.name)  # Unicode[Never]
reveal_type(Project.note)  # Unicode[None]
reveal_type(Build.project)  # Pointer[Project, Never]
reveal_type(Build.reviewers)  # PointerList[Project]

# -- managers and queries ------------------------------------------------------------------
reveal_type(Project.objects)  # Manager[Project]
reveal_type(Project.objects.get(name="repocket"))  # Project
reveal_type(Project.objects.filter(name="repocket"))  # QuerySet[Project]
reveal_type(Project.objects.exclude(note=None).order_by("-name"))  # QuerySet[Project]
reveal_type(Project.objects.all()[:10])  # QuerySet[Project]
reveal_type(Project.objects.all()[0])  # Project
reveal_type(Project.objects.first())  # Project | None
reveal_type(Project.objects.filter(name="x").last())  # Project | None
reveal_type(Project.objects.count())  # int
reveal_type(Project.objects.get_or_create(name="x"))  # tuple[Project, bool]
reveal_type(Project.objects.in_bulk())  # dict[Any, Project]
reveal_type(Project.objects.all().order_by("name").iterator())  # Iterator[Project]
reveal_type(Build.objects.filter(project=project).first())  # Build | None
reveal_type(NightlyBuild.objects.get(schedule="daily"))  # NightlyBuild
for each in Project.objects.filter(note=None):
    reveal_type(each)  # Project

# -- creating ------------------------------------------------------------------------------
reveal_type(Project.create(name="x"))  # Project
reveal_type(Project.objects.create(name="x"))  # Project
NightlyBuild(project=project, schedule="daily", status=2, reviewers=[project])
Build(started=datetime.date(2024, 1, 1), token=uuid.uuid4(), digest=b"\x00", meta={"any": ["json"]})
Project.objects.filter(name="x").update(note="checked")


async def asynchronous() -> None:
    """The async twins return awaitables of the same types."""
    reveal_type(await Project.objects.aget(name="x"))  # Project
    reveal_type(await Project.objects.filter(name="x").afirst())  # Project | None
    reveal_type(await Project.objects.acount())  # int
    reveal_type(await Project.acreate(name="x"))  # Project
    reveal_type(await Project.objects.acreate(name="x"))  # Project
    reveal_type(await Project.objects.aget_or_create(name="x"))  # tuple[Project, bool]
    async for each in Project.objects.all():
        reveal_type(each)  # Project
    async for each in Project.objects.aiterator():
        reveal_type(each)  # Project
