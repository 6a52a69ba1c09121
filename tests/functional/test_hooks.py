"""Lifecycle hooks and signals (SPEC §7): what runs around each save and delete, and what an exception stops.

Every test runs through the sync executor and the asyncio one (the ``driver``
fixture); coroutine hooks are awaited by the async methods and run to
completion by the sync ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from repocket import ActiveRecord, attributes, signals

pytestmark = pytest.mark.usefixtures("driver")

#: What the hooks and receivers saw, in order.
EVENTS: list[tuple[Any, ...]] = []


class Build(ActiveRecord):
    number = attributes.Integer(index=True)
    status = attributes.Unicode(index=True, null=True)

    def before_save(self) -> None:
        if self.status == "refuse":
            raise ValueError("refused by before_save")
        EVENTS.append(("before_save", self.number))

    def after_save(self, created: bool) -> None:
        EVENTS.append(("after_save", self.number, created))

    def before_delete(self) -> None:
        if self.status == "keep":
            raise PermissionError("kept by before_delete")
        EVENTS.append(("before_delete", self.number))

    def after_delete(self) -> None:
        EVENTS.append(("after_delete", self.number))


class Note(ActiveRecord):
    """No hooks of its own: only the signals' receivers run."""

    text = attributes.Unicode()


class Audit(ActiveRecord):
    """Written by the hooks of Stamp: a hook that saves another record."""

    what = attributes.Unicode(index=True)


class Stamp(ActiveRecord):
    label = attributes.Unicode()
    saves = attributes.Integer(default=0)

    async def after_save(self, created: bool) -> None:  # a coroutine hook
        await asyncio.sleep(0)
        Audit(what=f"saved {self.label}").save()  # (another record: its own save)
        if self.saves < 3:
            self.saves += 1
            self.save()  # itself again, from inside its hook: saved, without running the hook again


@pytest.fixture(autouse=True)
def events() -> Iterator[list[tuple[Any, ...]]]:
    EVENTS.clear()
    yield EVENTS
    EVENTS.clear()


def _receiver(name: str) -> Any:
    def receive(sender: type, instance: Any, **kwargs: Any) -> None:
        EVENTS.append((name, sender.__name__, getattr(instance, "number", None), kwargs.get("created")))
    return receive


def test_hooks_and_receivers_run_in_order_around_save_and_delete(repocket_connection: redis_py.Redis) -> None:
    pre, post = _receiver("pre_save"), _receiver("post_save")
    signals.pre_save.connect(pre, sender=Build)
    signals.post_save.connect(post)
    try:
        build = Build.objects.create(number=1)
        build.status = "ok"
        build.save()
        build.delete()
    finally:
        assert signals.pre_save.disconnect(pre, sender=Build) and signals.post_save.disconnect(post)
    assert EVENTS == [
        ("before_save", 1), ("pre_save", "Build", 1, None), ("after_save", 1, True), ("post_save", "Build", 1, True),
        ("before_save", 1), ("pre_save", "Build", 1, None), ("after_save", 1, False),
        ("post_save", "Build", 1, False),
        ("before_delete", 1), ("after_delete", 1),
    ]
    assert not signals.pre_save.disconnect(pre, sender=Build)  # (already gone)


def test_a_receiver_for_one_model_hears_no_other(repocket_connection: redis_py.Redis) -> None:
    heard = _receiver("pre_save")
    signals.pre_save.connect(heard, sender=Note)
    try:
        Build.objects.create(number=2)
        Note.objects.create(text="n")
    finally:
        signals.pre_save.disconnect(heard, sender=Note)
    assert [event for event in EVENTS if event[0] == "pre_save"] == [("pre_save", "Note", None, None)]


def test_an_exception_before_a_write_writes_nothing(repocket_connection: redis_py.Redis) -> None:
    with pytest.raises(ValueError, match="refused by before_save"):
        Build.objects.create(number=3, status="refuse")
    assert Build.objects.count() == 0 and not repocket_connection.keys("*Build*")

    def refuse(sender: type, instance: Any, **kwargs: Any) -> None:
        raise RuntimeError("refused by a receiver")

    kept = Build.objects.create(number=4, status="keep")
    signals.pre_save.connect(refuse, sender=Build)
    try:
        kept.number = 40
        with pytest.raises(RuntimeError, match="refused by a receiver"):
            kept.save()
    finally:
        signals.pre_save.disconnect(refuse, sender=Build)
    assert Build.objects.get(kept.pk).number == 4
    with pytest.raises(PermissionError, match="kept by before_delete"):
        kept.delete()
    assert Build.objects.filter(pk=kept.pk).exists()


def test_a_queryset_delete_runs_every_records_hooks_and_one_refusal_deletes_none(
        repocket_connection: redis_py.Redis) -> None:
    Build.objects.bulk_create([Build(number=n) for n in range(5)])  # (bulk_create runs no per-record hooks)
    assert EVENTS == []
    assert Build.objects.filter(number__lt=3).delete() == 3
    assert sorted(EVENTS) == sorted([("before_delete", n) for n in range(3)] + [("after_delete", n) for n in range(3)])
    EVENTS.clear()
    Build.objects.filter(number=4).update(status="keep")  # (update() runs none either)
    assert EVENTS == []
    with pytest.raises(PermissionError):
        Build.objects.all().delete()  # number 4 refuses: number 3 stays too
    assert sorted(Build.objects.values_list("number", flat=True)) == [3, 4]


def test_a_coroutine_hook_is_awaited_and_a_hook_saving_its_record_does_not_recurse(
        repocket_connection: redis_py.Redis, driver: str) -> None:
    if driver == "async":
        pytest.skip("the hook saves through the sync API, which a running loop cannot nest")
    stamp = Stamp.objects.create(label="s")
    assert Stamp.objects.get(stamp.pk).saves == 1  # saved again once by its hook (which did not run again)
    assert Audit.objects.filter(what="saved s").count() == 1


def test_the_async_methods_await_coroutine_hooks_and_receivers(repocket_connection: redis_py.Redis,
                                                               driver: str) -> None:
    if driver == "async":
        pytest.skip("runs asyncio itself")

    class Track(ActiveRecord):
        title = attributes.Unicode()

        async def after_save(self, created: bool) -> None:
            await Audit(what=f"track {self.title} {created}").asave()

    async def heard(sender: type, instance: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        EVENTS.append(("post_delete", instance.title))

    async def scenario() -> None:
        signals.post_delete.connect(heard, sender=Track)
        try:
            track = await Track.objects.acreate(title="t")
            track.title = "u"
            await track.asave()
            await track.adelete()
        finally:
            signals.post_delete.disconnect(heard, sender=Track)

    asyncio.run(scenario())
    assert sorted(Audit.objects.values_list("what", flat=True)) == ["track t True", "track u False"]
    assert EVENTS == [("post_delete", "u")]


def test_a_sync_call_refuses_a_coroutine_hook_inside_a_running_loop(repocket_connection: redis_py.Redis,
                                                                    driver: str) -> None:
    if driver == "async":
        pytest.skip("drives the sync executor inside a loop")

    async def inside() -> None:
        Stamp(label="x").save()

    with pytest.raises(TypeError, match=r"Stamp\.after_save is a coroutine function.*asave"):
        asyncio.run(inside())
