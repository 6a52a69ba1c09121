"""The public surface: ``repocket.__all__`` agrees with what the package exports, all documented."""

from __future__ import annotations

import inspect
import types

import pytest

import repocket
import repocket.attributes
import repocket.errors

#: Dunder names that are public on purpose.
INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def _is_own_submodule(value: object) -> bool:
    """A ``repocket.*`` submodule, bound on the package by the import system."""
    return isinstance(value, types.ModuleType) and value.__name__.startswith("repocket.")


def _public_members(module: types.ModuleType) -> list[str]:
    """Names a user can import from ``module`` that look public (as httpx's test_exported_members)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if name.isidentifier()  # pytest's assertion rewriting adds "@py_builtins"
        and (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and type(value).__module__ != "__future__"  # ``from __future__ import annotations``
        and not (_is_own_submodule(value) and name not in module.__all__)
    )


def test_all_is_sorted() -> None:
    """``repocket.__all__`` is sorted and has no duplicates."""
    assert repocket.__all__ == sorted(set(repocket.__all__))


def test_all_matches_exported_members() -> None:
    """Every public name of the package is in ``__all__``, and every name in ``__all__`` exists."""
    assert repocket.__all__ == _public_members(repocket)


@pytest.mark.parametrize("module", [repocket.attributes, repocket.errors], ids=lambda m: m.__name__)
def test_submodule_all_is_sorted_and_exists(module: types.ModuleType) -> None:
    """The ``__all__`` of attributes and errors is sorted and names only existing objects."""
    assert sorted(module.__all__) == sorted(set(module.__all__))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_core_names_are_exported() -> None:
    """The names SPEC §1 imports from the package are exported."""
    for name in ("ActiveRecord", "attributes"):
        assert name in repocket.__all__
    from repocket.connections import configure

    assert repocket.configure is configure


def _documented_objects() -> list[tuple[str, object]]:
    out = []
    for module in (repocket, repocket.attributes, repocket.errors):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, (type, types.ModuleType)) or inspect.isroutine(value):
                out.append((f"{module.__name__}.{name}", value))
    return out


@pytest.mark.parametrize(("qualified", "value"), _documented_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_public_name_has_docstring(qualified: str, value: object) -> None:
    """Every public class, function and module has its own non-empty docstring."""
    doc = vars(value).get("__doc__") if isinstance(value, type) else getattr(value, "__doc__", None)
    assert isinstance(doc, str) and doc.strip(), f"{qualified} has no docstring"


def test_version_is_a_string() -> None:
    """``repocket.__version__`` is a non-empty string."""
    assert isinstance(repocket.__version__, str) and repocket.__version__
