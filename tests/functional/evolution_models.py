"""Models for the schema-evolution tests, importable as ``tests.functional.evolution_models.Product``.

Each current declaration comes with :func:`declared_before`, the same model
(same class name, module and namespace, so the same keys) as an earlier
release declared it, to write the records that release left behind.
"""

from __future__ import annotations

from typing import Any

from repocket import ActiveRecord, attributes, registry


class Product(ActiveRecord):
    """The current declaration: ``label`` was renamed ``title``, ``price`` was an Integer,
    ``legacy`` was dropped and ``stock`` added."""

    class Meta:
        namespace = "evolution"

    name = attributes.Unicode(index=True)
    title = attributes.Unicode(index=True)
    price = attributes.Unicode(index=True)
    stock = attributes.Integer(default=5)


class Counter(ActiveRecord):
    """``hits`` was a Unicode holding digits (mostly), and is an Integer now."""

    class Meta:
        namespace = "evolution"

    hits = attributes.Integer(index=True, null=True)


def declared_before(current: type[ActiveRecord], **attrs: Any) -> type[Any]:
    """``current`` as an earlier release declared it, with the attributes ``attrs`` (its Meta kept).

    The current class stays the registered one, as in the application after
    its upgrade.
    """
    meta = {key: value for key, value in vars(current.Meta).items() if not key.startswith("__")}  # type: ignore[attr-defined]
    before = type(current.__name__, (ActiveRecord,), {
        "__module__": current.__module__, "Meta": type("Meta", (), meta), **attrs})
    registry.register(current)
    return before


def old_product() -> type[Any]:
    """Product before: ``label`` (indexed), ``price`` an indexed Integer, ``legacy`` a plain Unicode."""
    return declared_before(Product, name=attributes.Unicode(index=True), label=attributes.Unicode(index=True),
                           price=attributes.Integer(index=True), legacy=attributes.Unicode(null=True))


def old_counter() -> type[Any]:
    """Counter before: ``hits`` an indexed Unicode."""
    return declared_before(Counter, hits=attributes.Unicode(index=True, null=True))


class Tally(ActiveRecord):
    """A plain-format model (whose fields record no type): ``count`` was an indexed Integer."""

    class Meta:
        namespace = "evolution"
        format = "plain"

    count = attributes.Unicode(index=True)


def old_tally() -> type[Any]:
    """Tally before: ``count`` an indexed Integer."""
    return declared_before(Tally, count=attributes.Integer(index=True))


class Account(ActiveRecord):
    """``mail`` was renamed ``email``, which is unique; ``pin`` is a secret Integer that was text."""

    class Meta:
        namespace = "evolution"
        partitions = 1  # (as its earlier declaration, which had no unique field to keep it on one)

    email = attributes.Unicode(unique=True, null=True)
    pin = attributes.Integer(secret=True, null=True)


def old_account() -> type[Any]:
    """Account before: ``mail`` (not unique) and ``pin`` a secret Unicode."""
    return declared_before(Account, mail=attributes.Unicode(null=True), pin=attributes.Unicode(secret=True, null=True))


class Ledger(ActiveRecord):
    """A versioned model: ``amount`` was named ``total``."""

    class Meta:
        namespace = "evolution"
        versioned = True

    amount = attributes.Integer(default=0)


def old_ledger() -> type[Any]:
    """Ledger before: ``total``."""
    return declared_before(Ledger, total=attributes.Integer(default=0))
