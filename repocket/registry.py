"""The registry of declared models: how stored names resolve to classes without importing.

A model registers itself when its class is created. Pointers declared with a
string (``Pointer("Project")``) and stored record keys resolve through this
table only; nothing named by stored data is ever imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    MODELS[prefix] = model  # redefining the same class (a reload, a test) replaces it


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
