"""Signals sent around each save and delete: ``pre_save``, ``post_save``, ``pre_delete``, ``post_delete``.

As in Django, a receiver is any callable taking keyword arguments::

    from repocket import signals

    def stamp(sender, instance, **kwargs):
        instance.touched_by = "stamp"

    signals.pre_save.connect(stamp, sender=Build)

Receivers are called with ``sender`` (the model class), ``instance`` and, for
``post_save``, ``created``, in the order they were connected, after the
model's own hook (``before_save`` and ``before_delete`` run first, then the
``pre_*`` receivers; the ``post_*`` receivers run after ``after_save`` and
``after_delete``). An exception in a ``pre_*`` receiver aborts the operation
with nothing written. A coroutine function receiver is awaited by the async
methods (``asave()``, ``adelete()``); a sync method runs it to completion in
an event loop of its own, and refuses it inside a running loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Signal", "post_delete", "post_save", "pre_delete", "pre_save"]

Receiver = Callable[..., Any]


class Signal:
    """A list of receivers, each for one model (``sender``) or for every model (``sender=None``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._receivers: tuple[tuple[Receiver, type | None], ...] = ()

    def __repr__(self) -> str:
        return f"<Signal {self.name}: {len(self._receivers)} receivers>"

    def connect(self, receiver: Receiver, sender: type | None = None) -> Receiver:
        """Call ``receiver`` for every ``sender`` record (every model's, with None); returns ``receiver``.

        Connecting the same receiver for the same sender twice keeps one.
        The signal holds the receiver strongly: ``disconnect`` it when done.
        """
        if not callable(receiver):
            raise TypeError(f"{self.name}.connect() takes a callable, not {receiver!r}")
        with self._lock:
            if (receiver, sender) not in self._receivers:
                self._receivers = (*self._receivers, (receiver, sender))
        return receiver

    def disconnect(self, receiver: Receiver, sender: type | None = None) -> bool:
        """Stop calling ``receiver`` for ``sender``; whether it was connected."""
        with self._lock:
            kept = tuple(entry for entry in self._receivers if entry != (receiver, sender))
            found = len(kept) != len(self._receivers)
            self._receivers = kept
        return found

    def receivers(self, sender: type) -> list[Receiver]:
        """The receivers a record of model ``sender`` is sent to, in the order they were connected."""
        return [receiver for receiver, wanted in self._receivers if wanted is None or wanted is sender]


#: Sent before a record is saved (``instance``): ``save()``, ``create()``, ``get_or_create()``.
pre_save = Signal("pre_save")
#: Sent after a record is saved (``instance``, ``created``: whether it was new to this instance).
post_save = Signal("post_save")
#: Sent before a record is deleted (``instance``): ``delete()`` and ``QuerySet.delete()``.
pre_delete = Signal("pre_delete")
#: Sent after a record is deleted (``instance``).
post_delete = Signal("post_delete")
