"""The mypy plugin: typed constructors for models declared without annotations.

Turn it on with ``plugins = repocket.mypy`` in the mypy configuration
(docs/typing.rst). Models declare fields as plain class-level assignments
(``name = attributes.Unicode()``), which ``dataclass_transform`` cannot see, so
this plugin gives mypy what it needs:

- ``Model(**fields)``, ``Model.create(**fields)``, ``Model.acreate(**fields)``,
  ``Model.objects.create(**fields)`` (and ``acreate``) and
  ``QuerySet.update(**fields)`` (and ``aupdate``) take exactly the model's
  attributes, inherited ones included, as optional keywords, each typed as
  its attribute accepts it (the value parameter of the attribute's ``__set__``).
- ``Pointer("Project")`` and ``PointerList("Project")``, given a model's name,
  point at that class when mypy can find it (in the declaring module, or by a
  full ``module.Class`` path).
- A model without an ``AutoUUID`` gets its implicit ``id`` attribute.

The signatures are made when a call is checked, from the types mypy inferred
for the class attributes, so every attribute class (a user's own subclass too)
is typed by its annotations alone: the plugin knows no attribute class by name.
"""

from __future__ import annotations

from collections.abc import Callable

import mypy.types  # noqa: F401  (first: importing mypy.expandtype first is circular, python/mypy#17726)
from mypy.expandtype import expand_type_by_instance
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import (
    ARG_NAMED_OPT,
    ARG_STAR,
    ARG_STAR2,
    MDEF,
    AssignmentStmt,
    CallExpr,
    RefExpr,
    StrExpr,
    SymbolTableNode,
    TypeInfo,
    Var,
)
from mypy.plugin import (
    ClassDefContext,
    FunctionContext,
    FunctionSigContext,
    MethodSigContext,
    Plugin,
)
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    ProperType,
    Type,
    TypeOfAny,
    TypeType,
    get_proper_type,
)
from mypy.typevars import fill_typevars_with_any

__all__ = ["RepocketPlugin", "plugin"]

ACTIVE_RECORD = "repocket.model.ActiveRecord"
ATTRIBUTE = "repocket.attributes.Attribute"
AUTO_UUID = "repocket.attributes.AutoUUID"
#: Constructors whose ``to_model`` may name the target model by a string.
REFERENCES = frozenset({"repocket.attributes.Pointer", "repocket.attributes.PointerList"})
#: Methods whose ``**kwargs`` are a model's attributes (mypy names a classmethod call by the model's class).
FIELD_METHODS = frozenset({
    "repocket.manager.Manager.create", "repocket.manager.Manager.acreate",
    "repocket.query.QuerySet.update", "repocket.query.QuerySet.aupdate",
})
MODEL_FIELD_METHODS = frozenset({"create", "acreate"})


class RepocketPlugin(Plugin):
    """Adds each model's attributes to its constructor and ``create`` signatures."""

    def _model_info(self, fullname: str) -> TypeInfo | None:
        """The TypeInfo of the model class ``fullname`` (None: not a model, or ActiveRecord itself)."""
        sym = self.lookup_fully_qualified(fullname)
        node = sym.node if sym is not None else None
        if isinstance(node, TypeInfo) and is_model(node):
            return node
        return None

    def get_base_class_hook(self, fullname: str) -> Callable[[ClassDefContext], None] | None:
        if fullname == ACTIVE_RECORD or self._model_info(fullname) is not None:
            return add_implicit_id
        return None

    def get_function_signature_hook(self, fullname: str) -> Callable[[FunctionSigContext], FunctionLike] | None:
        if self._model_info(fullname) is not None:
            return constructor_signature
        return None

    def get_method_signature_hook(self, fullname: str) -> Callable[[MethodSigContext], FunctionLike] | None:
        owner, _, method = fullname.rpartition(".")
        if fullname in FIELD_METHODS or method in MODEL_FIELD_METHODS and self._model_info(owner) is not None:
            return method_signature
        return None

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        if fullname in REFERENCES:
            return self._resolve_target
        return None

    def _resolve_target(self, ctx: FunctionContext) -> Type:
        """``Pointer("Project")``: the Pointer of the class named, when it can be found."""
        made = get_proper_type(ctx.default_return_type)
        if "to_model" not in ctx.callee_arg_names or not isinstance(made, Instance) or not made.args:
            return ctx.default_return_type
        given = ctx.args[ctx.callee_arg_names.index("to_model")]
        if len(given) != 1 or not isinstance(given[0], StrExpr):
            return ctx.default_return_type
        name = given[0].value
        sym = self.lookup_fully_qualified(name) if "." in name else _lookup_local(ctx, name)
        target = sym.node if sym is not None else None
        if not isinstance(target, TypeInfo) or not is_model(target):
            return ctx.default_return_type  # (resolved at run time through the registry; Any here)
        return made.copy_modified(args=[fill_typevars_with_any(target), *made.args[1:]])


def _lookup_local(ctx: FunctionContext, name: str) -> SymbolTableNode | None:
    """``name`` as the module being checked sees it."""
    try:
        return ctx.api.lookup_qualified(name)  # type: ignore[attr-defined, no-any-return]
    except KeyError:
        return None


def is_model(info: TypeInfo) -> bool:
    """Whether ``info`` is a model class (a subclass of ActiveRecord, not ActiveRecord itself)."""
    return info.fullname != ACTIVE_RECORD and info.has_base(ACTIVE_RECORD) and not info.fallback_to_any


# -- the implicit primary key ------------------------------------------------------------


def add_implicit_id(ctx: ClassDefContext) -> None:
    """Give a model that declares no AutoUUID (itself or by inheritance) its ``id``, as the metaclass does."""
    info = ctx.cls.info
    if info.get("id") is not None or any(_declares_primary_key(base) for base in info.mro if is_model(base)):
        return
    var = Var("id", ctx.api.named_type(AUTO_UUID))
    var.info = info
    var._fullname = f"{info.fullname}.id"
    var.is_initialized_in_class = True
    info.names["id"] = SymbolTableNode(MDEF, var, plugin_generated=True)


def _declares_primary_key(info: TypeInfo) -> bool:
    """Whether the class body assigns an AutoUUID (read from the source, or from inferred types in the cache)."""
    for sym in info.names.values():
        typ = get_proper_type(sym.type) if isinstance(sym.node, Var) else None
        if isinstance(typ, Instance) and typ.type.has_base(AUTO_UUID):
            return True
    for stmt in info.defn.defs.body:
        if isinstance(stmt, AssignmentStmt) and isinstance(stmt.rvalue, CallExpr):
            callee = stmt.rvalue.callee
            if isinstance(callee, RefExpr) and isinstance(callee.node, TypeInfo) and callee.node.has_base(AUTO_UUID):
                return True
    return False


# -- signatures ---------------------------------------------------------------------------


def model_fields(info: TypeInfo) -> dict[str, Type]:
    """The model's attributes, inherited ones first, each with the type its ``__set__`` accepts."""
    fields: dict[str, Type] = {}
    for base in reversed(info.mro):
        if not is_model(base):
            continue
        for name, sym in base.names.items():
            if not isinstance(sym.node, Var) or name.startswith("_"):
                continue
            if sym.node.type is None:  # not inferred yet: accept anything rather than guess
                fields.pop(name, None)
                fields[name] = AnyType(TypeOfAny.special_form)
                continue
            declared = get_proper_type(sym.node.type)
            if isinstance(declared, Instance) and declared.type.has_base(ATTRIBUTE):
                fields.pop(name, None)
                fields[name] = accepted_type(declared)
    return fields


def accepted_type(attribute: Instance) -> Type:
    """What assigning to an attribute of this type accepts: the value parameter of its ``__set__``."""
    sym = attribute.type.get("__set__")
    node = sym.node if sym is not None else None
    signature = get_proper_type(getattr(node, "type", None))
    if node is None or not isinstance(signature, CallableType) or len(signature.arg_types) < 3:
        return AnyType(TypeOfAny.special_form)
    owner = map_instance_to_supertype(attribute, node.info)  # type: ignore[attr-defined]
    return expand_type_by_instance(signature.arg_types[2], owner)


def with_fields(signature: CallableType, info: TypeInfo) -> CallableType:
    """``signature`` with its ``*args``/``**kwargs`` replaced by the model's attributes as optional keywords."""
    kept = [i for i, kind in enumerate(signature.arg_kinds) if kind not in (ARG_STAR, ARG_STAR2)]
    taken = {signature.arg_names[i] for i in kept}
    fields = {name: typ for name, typ in model_fields(info).items() if name not in taken}
    return signature.copy_modified(
        arg_types=[signature.arg_types[i] for i in kept] + list(fields.values()),
        arg_kinds=[signature.arg_kinds[i] for i in kept] + [ARG_NAMED_OPT] * len(fields),
        arg_names=[signature.arg_names[i] for i in kept] + list(fields),
    )


def _model_of(typ: Type | None) -> TypeInfo | None:
    proper: ProperType | None = get_proper_type(typ)
    if isinstance(proper, TypeType):
        proper = get_proper_type(proper.item)
    if isinstance(proper, CallableType) and proper.is_type_obj():
        proper = get_proper_type(proper.ret_type)
    if isinstance(proper, Instance) and is_model(proper.type):
        return proper.type
    return None


def constructor_signature(ctx: FunctionSigContext) -> FunctionLike:
    """``Model(**fields)``."""
    signature = ctx.default_signature
    info = _model_of(signature.ret_type)
    return signature if info is None else with_fields(signature, info)


def method_signature(ctx: MethodSigContext) -> FunctionLike:
    """``Model.create(**fields)``, ``Model.objects.create(**fields)``, ``queryset.update(**fields)``."""
    owner = get_proper_type(ctx.type)
    if isinstance(owner, Instance):  # Manager[M] or QuerySet[M]
        info = _model_of(owner.args[0]) if owner.args else None
    else:  # the model class itself
        info = _model_of(owner)
    return ctx.default_signature if info is None else with_fields(ctx.default_signature, info)


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls (``plugins = repocket.mypy``)."""
    return RepocketPlugin
