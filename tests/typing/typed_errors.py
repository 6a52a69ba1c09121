"""Deliberate mistakes: with ``plugins = repocket.mypy``, mypy reports each line marked ``# E: <code>``.

Checked by tests/unit/test_typing.py (every marked line errors with that code, no other line does).
Never run.
"""

from __future__ import annotations

from repocket import ActiveRecord, attributes


class Project(ActiveRecord):
    name = attributes.Unicode(index=True)
    note = attributes.Unicode(null=True)


class User(ActiveRecord):
    login = attributes.Unicode(unique=True)


class Build(ActiveRecord):
    project = attributes.Pointer(Project)
    owner = attributes.Pointer("User", null=True)
    status = attributes.Integer(default=0)


project = Project(name="repocket")
user = User(login="ana")

Project(nmae="repocket")  # E: call-arg
Project.create(nmae="repocket")  # E: call-arg
Project.objects.create(title="repocket")  # E: call-arg
Project(name=42)  # E: arg-type
Project(name=None)  # E: arg-type
Build(status="3")  # E: arg-type
Build.objects.create(status=1.5)  # E: arg-type
Build(project=user)  # E: arg-type
Build(owner=project)  # E: arg-type
Project.objects.filter(name="x").update(name=1)  # E: arg-type
Project("repocket")  # E: call-arg
project.name = None  # E: assignment
project.name = 3  # E: assignment

found: User = Project.objects.get(name="repocket")  # E: assignment
first_name: str = Project.objects.first().name  # E: union-attr
note: str = project.note  # E: assignment
Build.objects.get(status=0).project.name + 1  # E: operator
