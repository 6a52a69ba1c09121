"""The registry of declared models: how stored names resolve to classes without importing.

A model registers itself when its class is created. Pointers declared with a
string (``Pointer("Project")``) and stored record keys resolve through this
table only; nothing named by stored data is ever imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from repocket.errors import RepocketActiveRecordDefinitionError

if TYPE_CHECKING:
    from repocket.model import ActiveRecord

#: Models by their key prefix (``repocket:<namespace>:<ModelName>``).
MODELS: dict[str, type[ActiveRecord]] = {}


def register(model: type[ActiveRecord]) -> None:
    """Record a model; a second, different class with the same key prefix is an error."""
    prefix = model._meta.standalone_prefix
    existing = MODELS.get(prefix)
    if existing is not None and existing.__qualname__ != model.__qualname__:
        raise RepocketActiveRecordDefinitionError(
            f"{model.__module__}.{model.__qualname__}: its keys ({prefix}:*) would mix with "
            f"those of {existing.__module__}.{existing.__qualname__}; set Meta.namespace"
        )
    from repocket.attributes import Reference

    for field, attr in model._meta.fields.items():  # (a target named by a string is checked on first use)
        if isinstance(attr, Reference) and not isinstance(attr._to_model, str):
            _check_strategy(model, field, attr, attr.to_model)
    MODELS[prefix] = model  # redefining the same class (a reload, a test) replaces it
    _AIMED.clear()


#: The strategies that need the target's delete to run, which an expiry is not (docs/expiry.rst).
_NEED_A_DELETE = ("PROTECT", "CASCADE", "UNLINK")


def _check_strategy(model: type[ActiveRecord], field: str, attr: Any, target: Any) -> None:
    """Refuse an ``on_delete`` strategy aimed at a model whose records expire: nothing runs at an expiry."""
    if getattr(target, "_meta", None) is not None and target._meta.expiring and attr.on_delete in _NEED_A_DELETE:
        raise RepocketActiveRecordDefinitionError(
            f"{model.__module__}.{model.__qualname__}.{field}: on_delete={attr.on_delete} cannot run when a "
            f"{target.__qualname__} expires (Meta.ttl), which deletes nothing at that instant; use DO_NOTHING "
            "or SET_NULL (a pointer to an expired record reads as None when null=True, as one to a deleted record)")


def resolve_model(name: str, near: type[ActiveRecord] | None = None) -> type[ActiveRecord]:
    """Find a registered model by ``"Name"`` or ``"namespace.Name"``.

    A bare name prefers a model in the same namespace as ``near``.

    Raises:
        RepocketActiveRecordDefinitionError: no model, or more than one, has that name.
    """
    namespace, _, model_name = name.rpartition(".")
    candidates = [
        m
        for m in MODELS.values()
        if m.__name__ == model_name and (not namespace or m._meta.namespace == namespace)
    ]
    if len(candidates) > 1 and near is not None:
        same = [m for m in candidates if m._meta.namespace == near._meta.namespace]
        candidates = same or candidates
    if len(candidates) != 1:
        found = "no model" if not candidates else f"{len(candidates)} models"
        raise RepocketActiveRecordDefinitionError(
            f"Pointer({name!r}): {found} with that name is declared; "
            "use the class itself or 'namespace.Name'"
        )
    return candidates[0]


class Relation(NamedTuple):
    """A Pointer ``field`` of ``model`` aimed at another model, seen from that target: its reverse accessor ``name``."""

    name: str
    model: type[ActiveRecord]
    field: str


def relations(target: type[ActiveRecord]) -> dict[str, Relation]:
    """The reverse accessors of ``target``'s instances, by name: every declared Pointer aimed at it.

    Raises:
        RepocketActiveRecordDefinitionError: two Pointers give ``target`` one
            related name, or one names an attribute ``target`` already has.
    """
    found: dict[str, Relation] = {}
    for model, field, attr in pointers_to(target):
        if attr.related_name != "+":
            _add(found, target, model, field, attr.related_name or f"{model.__name__.lower()}_set")
    return found


def _add(found: dict[str, Relation], target: type[ActiveRecord], model: type[ActiveRecord], field: str,
         name: str) -> None:
    """Add ``target``'s reverse accessor ``name``, refusing one that clashes."""
    if name in found or hasattr(target, name):
        other = found.get(name)
        clash = f"{other.model.__qualname__}.{other.field} too" if other is not None else (
            f"an attribute of {target.__qualname__}")
        raise RepocketActiveRecordDefinitionError(
            f"{model.__module__}.{model.__qualname__}.{field}: its reverse accessor {target.__qualname__}.{name} "
            f"is {clash}; give the Pointer another related_name")
    found[name] = Relation(name, model, field)


#: pointers_to() by target, until the next model is registered.
_AIMED: dict[type[ActiveRecord], list[tuple[type[ActiveRecord], str, Any]]] = {}


def pointers_to(target: type[ActiveRecord]) -> list[tuple[type[ActiveRecord], str, Any]]:
    """Every declared Pointer and PointerList aimed at ``target``: ``(model, field, attribute)`` (kept until a model is declared)."""
    from repocket.attributes import Reference

    found = _AIMED.get(target)
    if found is None:
        found = [(model, field, attr) for model in list(MODELS.values()) for field, attr in model._meta.fields.items()
                 if isinstance(attr, Reference) and _target(attr) is target]
        for model, field, attr in found:
            _check_strategy(model, field, attr, target)
        _AIMED[target] = found  # (a Pointer naming a model declared later resolves once it is: register() clears)
    return found


def _target(attr: object) -> object:
    try:
        return attr.to_model  # type: ignore[attr-defined]
    except RepocketActiveRecordDefinitionError:
        return None  # (a name no model has yet: not aimed at anyone declared)
