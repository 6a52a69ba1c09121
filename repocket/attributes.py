"""Typed attributes: declare them on a model, and each value is cast, stored and read back exactly.

An attribute is a data descriptor. On the class it returns itself; on an
instance it returns that instance's value. Assigning casts the value to the
attribute's type at once, so a wrong value fails where it is written, with the
model, the field and the value named.

Each attribute owns its conversions: :meth:`Attribute.encode` writes the hash
field (the JSON envelope of SPEC §2) and :meth:`Attribute.decode` reads the
envelope's value back. The model never branches on type.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import decimal as _decimal
import itertools
import math
import re
import uuid as _uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, NoReturn, TypeVar, overload

import dateutil.parser
import orjson

from repocket import serialization
from repocket.errors import RepocketActiveRecordDefinitionError, ValidationError

if TYPE_CHECKING:
    import typing_extensions
    from typing_extensions import Never, Self

    from repocket.model import ActiveRecord

__all__ = [
    "CASCADE",
    "DO_NOTHING",
    "JSON",
    "PROTECT",
    "SET_NULL",
    "Attribute",
    "AutoUUID",
    "BrokenReference",
    "ByteStream",
    "Bytes",
    "DateTime",
    "Decimal",
    "Float",
    "Integer",
    "Pointer",
    "PointerList",
    "Reference",
    "UNLINK",
    "UUID",
    "Unicode",
]

T = TypeVar("T")
#: What an attribute adds to its value type: None for ``null=True``, Never (nothing) otherwise.
#: Each attribute class's ``__init__`` overloads pick it from ``null``; see docs/typing.rst.
if TYPE_CHECKING:
    N = typing_extensions.TypeVar("N", default=Any)
else:
    N = TypeVar("N")
#: The target model of a Pointer or PointerList.
if TYPE_CHECKING:
    M = typing_extensions.TypeVar("M", bound="ActiveRecord", default=Any)
else:
    M = TypeVar("M", bound="ActiveRecord")
_counter = itertools.count()
_NOT_GIVEN: Any = object()

#: Every attribute type by the name stored in its envelope's ``type`` member.
#: Reading resolves type tags through this closed table only; nothing is imported.
ATTRIBUTE_TYPES: dict[str, type[Attribute[Any]]] = {}


class _CastError(Exception):
    """Raised inside ``cast`` implementations; turned into a ValidationError with context."""


class _hybridmethod:
    """A method that also works on the class, bound to a default-configured instance.

    The original API documents ``cast`` and friends as classmethods
    (``Integer.cast("4")``); ours depend on per-attribute settings such as
    ``encoding``, so on the class they use a default instance.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, cls: type[Any]) -> Callable[..., Any]:
        if obj is None:
            obj = cls._prototype()
        return self.func.__get__(obj, cls)  # type: ignore[no-any-return]


class Attribute(Generic[T, N]):
    """Base of every attribute type.

    Type checkers read an attribute as ``Attribute[T, N]``: instances hold ``T``,
    and ``N`` is None for ``null=True`` (otherwise Never), so ``instance.attr``
    is ``T | N`` (docs/typing.rst).

    Args:
        null: whether ``None`` may be saved. With ``null=False`` (the default) a
            ``None`` left in the attribute makes ``save()`` raise ValidationError.
        default: the value an omitted attribute takes; a callable is called
            for each new instance. Without one, the type's empty value is used.
        encoding: how text and bytes convert into each other for this attribute.
        index: keep a secondary index so queries on it run inside Redis.
        unique: no two records may hold the same value (implies ``index``).
        secret: mask the value in ``repr()`` and ``to_dict(simple=True)``.
    """

    __base_type__: ClassVar[Any] = bytes
    __empty_value__: ClassVar[Any] = b""
    #: Whether the value lives in the record hash (ByteStream lives in its own string).
    stored_in_hash: ClassVar[bool] = True
    #: Other type tags whose stored values this type reads (same value shape).
    compatible_tags: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``index=True`` is meaningful (scalar types).
    indexable: ClassVar[bool] = False
    _prototypes: ClassVar[dict[type[Any], Any]] = {}

    name: str
    model: type[ActiveRecord]

    def __init__(
        self,
        null: bool = False,
        default: Any = None,
        encoding: str = "utf-8",
        *,
        index: bool = False,
        unique: bool = False,
        secret: bool = False,
    ) -> None:
        self.null = null
        self.default = default
        self.encoding = encoding
        self.index = index or unique
        self.unique = unique
        self.secret = secret
        self._order = next(_counter)
        self.name = ""
        cls = type(self)
        self._prefix = serialization.envelope_prefix(cls.__name__)
        self._suffix = serialization.envelope_suffix(cls.__module__)

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not abstract:  # (a shared base is no type a record can store)
            ATTRIBUTE_TYPES[cls.__name__] = cls

    @property
    def can_be_null(self) -> bool:
        """The original name of :attr:`null`."""
        return self.null

    @classmethod
    def _prototype(cls) -> Attribute[Any]:
        proto = Attribute._prototypes.get(cls)
        if proto is None:
            proto = Attribute._prototypes[cls] = cls()
        return proto  # type: ignore[no-any-return]

    # -- descriptor protocol -------------------------------------------------

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type[Any]) -> T | N: ...
    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is None:
            return self
        try:
            return instance._data[self.name]
        except KeyError:  # deferred by only()/defer(): fetched now
            return instance._load_deferred(self.name)

    def __set__(self, instance: Any, value: T | N) -> None:
        instance._data[self.name] = self.clean(value)
        if instance._deferred:
            instance._deferred = instance._deferred - {self.name}

    def __repr__(self) -> str:
        where = f" {self.model.__name__}.{self.name}" if self.name else ""
        return f"<{type(self).__module__}.{type(self).__name__}{where}>"

    # -- values ----------------------------------------------------------------

    @classmethod
    def get_base_type(cls) -> Any:
        """Return the Python type values of this attribute have (``__base_type__``)."""
        return cls.__base_type__

    def get_empty_value(self) -> Any:
        """The value an omitted attribute takes when it has no ``default``."""
        return self.__empty_value__

    def get_default(self) -> Any:
        """The value a new instance starts with: ``default`` (called if callable), else empty.

        A ``unique=True, null=True`` attribute without a default starts as None, as
        in SQL: None is never claimed, so records that omit it do not clash.
        """
        if self.default is None:
            return None if self.unique and self.null else self.get_empty_value()
        return self.default() if callable(self.default) else self.default

    @_hybridmethod
    def cast(self, value: Any) -> T:
        """Cast ``value`` to this attribute's type; ``None`` stays ``None``.

        Raises:
            ValidationError: the value cannot be cast (naming model and field
                when the attribute belongs to one).
        """
        if value is None:
            none: T = self._none()
            return none
        try:
            return self._cast(value)
        except (_CastError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            error = self._invalid(value, exc)
        # Raised outside the handler, so the cause (which may quote a secret value)
        # is not even kept as __context__.
        raise error

    clean = cast  # what the descriptor calls on assignment

    def _cast(self, value: Any) -> T:
        raise NotImplementedError

    def _none(self) -> Any:
        """What ``None`` becomes on assignment (None: checked against ``null`` at save)."""
        return None

    def _expected(self) -> str:
        base = self.__base_type__
        return getattr(base, "__name__", str(base))

    def _invalid(self, value: Any, exc: BaseException | None = None) -> ValidationError:
        model = getattr(self, "model", None)
        model_name = f"{model.__module__}.{model.__name__}" if model else None
        where = f"{model_name}.{self.name}" if model_name else f"{type(self).__name__} attribute"
        # The cause's text often quotes the value ("invalid literal for int(): 'x'"),
        # so a secret value gets neither.
        detail = f" ({exc})" if exc is not None and str(exc) and not self.secret else ""
        shown = "'***' (secret)" if self.secret else _short_repr(value)
        return ValidationError(
            f"{where}: cannot use {shown} of type {type(value).__name__}; "
            f"expected {self._expected()}{detail}",
            model=model_name,
            field=self.name or None,
            value=value,
            expected=self._expected(),
        )

    # -- storage ---------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """The hash field for ``value``: the JSON envelope of SPEC §2, as bytes."""
        if value is None:
            return self._prefix + b"null" + self._suffix
        return self._prefix + self._encode_value(value) + self._suffix

    def _encode_value(self, value: Any) -> bytes:
        """JSON text for the envelope's ``value`` member (``value`` is not None)."""
        return orjson.dumps(value)

    def decode(self, stored: Any, envelope: dict[str, Any]) -> T:
        """The Python value for an envelope's ``value`` member (already JSON-parsed).

        Raises ValueError or TypeError when the shape is wrong; the caller turns
        that into a CorruptRecordError naming the key and field.
        """
        if stored is None:
            return None  # type: ignore[return-value]
        return self._decode(stored, envelope)

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> T:
        raise NotImplementedError

    #: Envelope members allowed besides type/value/module.
    extra_members: ClassVar[frozenset[str]] = frozenset()

    def reader(self) -> Callable[[bytes], Any]:
        """A function reading a stored field that is exactly what :meth:`encode` writes.

        It parses only the value between the envelope's fixed prefix and suffix
        (the hot path of every read). Anything else raises, and the caller
        takes the full, checking path instead.
        """
        prefix, suffix = self._prefix, self._suffix
        start, stop = len(prefix), -len(suffix)
        shortest = len(prefix) + len(suffix)
        loads, exact_loads = orjson.loads, serialization.loads
        no_members: dict[str, Any] = {}
        # Most types map null to None themselves; JSON (which overrides decode) keeps it.
        plain = type(self).decode is Attribute.decode
        decode = self._decode if plain else self.decode
        # Unicode and JSON values that are JSON strings need no further decoding.
        text_is_value = type(self) in (Unicode, JSON)

        def read(raw: bytes) -> Any:
            if len(raw) <= shortest or not raw.startswith(prefix) or not raw.endswith(suffix):
                raise ValueError("not a plain envelope")
            text = raw[start:stop]
            if text[:1] == b'"':
                value = loads(text)
                return value if text_is_value else decode(value, no_members)
            value = loads(text) if len(text) < 19 else exact_loads(text)
            if value is None and plain:
                return None
            return decode(value, no_members)

        return read

    # -- the plain format (``Meta.format = "plain"``) ---------------------------

    def to_plain(self, value: Any) -> bytes | None:
        """The hash field for ``value`` in the plain format; None: the field is left out.

        A null value has no field (it reads back as None); every other value
        is its plain text, typed by the declaration (see docs/storage.rst).
        """
        if value is None:
            return None
        return self._plain(value)

    def _plain(self, value: Any) -> bytes:
        """Plain text of a value that is not None."""
        raise NotImplementedError

    def from_plain(self, raw: bytes) -> T:
        """The value of a plain-format hash field; ValueError, TypeError or UnicodeError when it is not one.

        ``str(raw, "utf-8")`` raises TypeError for text (a client that decodes
        responses), so the caller takes its checking path, as for an envelope.
        """
        return self._decode(str(raw, "utf-8"), {})

    def plain_absent(self) -> Any:
        """What a plain-format field that is absent reads as: None when null is allowed, else the default.

        An absent field is how the plain format stores None; an attribute added
        after a record was written is absent too, and reads as its default
        unless it allows null.
        """
        return None if self.null else self.get_default()

    def to_string(self, value: Any) -> str:
        """Utility method that knows how to safely convert the value into a string."""
        value = self.cast(value)
        return "" if value is None else str(value)

    def to_python(self, value: Any, simple: bool = False) -> Any:
        """The value as plain Python (``simple=True``), or as its stored envelope, a dict.

        The envelope dict is json-safe: it is exactly what the hash field holds.
        """
        if simple:
            return value
        return serialization.loads(self.encode(value))

    # -- indexes ---------------------------------------------------------------

    def index_token(self, value: Any) -> str:
        """The text an equality index uses for ``value``: equal values, equal tokens."""
        raise TypeError(f"{type(self).__name__} attributes cannot be indexed")

    def comparable(self, value: Any) -> Any:
        """``value`` as queries compare and order it (``None`` stays ``None``).

        The identity, except for DateTime, where a naive value counts as UTC.
        """
        return value


def _short_repr(value: Any, limit: int = 80) -> str:
    """A repr for messages that is short and never fails (huge ints, broken __repr__)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a message must not fail because of the value it describes
        return f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The largest integer magnitude stored, in bits: Python's own int-to-text limit (4300 digits).
MAX_INT_BITS = 14_000


def _check_int(value: int) -> int:
    if value.bit_length() > MAX_INT_BITS:
        raise _CastError(f"integers are stored up to {MAX_INT_BITS} bits")
    return value


class Unicode(Attribute[str, N]):
    """Handles unicode-safe values. ``__base_type__ = str``; bytes are decoded with ``encoding``."""

    if TYPE_CHECKING:  # null=True adds None to the value type (docs/typing.rst)
        @overload
        def __init__(self: Unicode[Never], null: Literal[False] = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        @overload
        def __init__(self: Unicode[None], null: bool, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        def __init__(self, null: bool = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...

        def __set__(self, instance: Any, value: str | bytes | N) -> None: ...

    __base_type__ = str
    __empty_value__ = ""
    indexable = True

    def _cast(self, value: Any) -> str:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode(self.encoding)
        if not isinstance(value, str):
            raise _CastError()
        text = str(value)
        if not text.isascii():
            text.encode("utf-8")  # lone surrogates cannot be stored; fail now, not at save
        return text

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> str:
        if not isinstance(stored, str):
            raise TypeError(f"expected a JSON string, got {type(stored).__name__}")
        return stored

    def _plain(self, value: Any) -> bytes:
        return value.encode("utf-8")  # type: ignore[no-any-return]

    def from_plain(self, raw: bytes) -> str:
        return str(raw, "utf-8")

    def index_token(self, value: Any) -> str:
        return str(value)


class Bytes(Attribute[bytes, N]):
    """Handles raw byte strings. ``__base_type__ = bytes``; text is encoded with ``encoding``.

    Stored as a JSON string when the bytes decode under ``encoding``; otherwise
    as base64 with an extra envelope member ``"encoding": "base64"``, so every
    byte value round-trips.
    """

    __base_type__ = bytes
    __empty_value__ = b""
    indexable = True
    extra_members = frozenset({"encoding"})

    if TYPE_CHECKING:
        def __set__(self, instance: Any, value: bytes | bytearray | memoryview | str | N) -> None: ...

    @overload
    def __init__(self: Bytes[Never], null: Literal[False] = False, default: Any = None,
                 encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                 secret: bool = False) -> None: ...
    @overload
    def __init__(self: Bytes[None], null: bool, default: Any = None,
                 encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                 secret: bool = False) -> None: ...
    @overload
    def __init__(self, null: bool = False, default: Any = None,
                 encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                 secret: bool = False) -> None: ...
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._b64_suffix = serialization.envelope_suffix(
            type(self).__module__, {"encoding": "base64"}
        )

    def _cast(self, value: Any) -> bytes:
        if isinstance(value, str):
            return value.encode(self.encoding)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise _CastError()

    def encode(self, value: Any) -> bytes:
        if value is None:
            return super().encode(value)
        try:
            text = value.decode(self.encoding)
            exact = text.encode(self.encoding) == value
        except (UnicodeError, LookupError):
            exact = False
        if exact:
            return self._prefix + orjson.dumps(text) + self._suffix
        return self._prefix + orjson.dumps(base64.b64encode(value).decode("ascii")) + self._b64_suffix

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> bytes:
        if not isinstance(stored, str):
            raise TypeError(f"expected a JSON string, got {type(stored).__name__}")
        marker = envelope.get("encoding")
        if marker is None:
            return stored.encode(self.encoding)
        if marker != "base64":
            raise ValueError(f"unknown bytes encoding {marker!r}")
        try:
            return base64.b64decode(stored, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64: {exc}") from None

    def _plain(self, value: Any) -> bytes:
        return bytes(value)  # Redis strings are binary-safe: no base64

    def from_plain(self, raw: bytes) -> bytes:
        return bytes(raw)

    def to_string(self, value: Any) -> str:
        value = self.cast(value)
        return "" if value is None else value.decode(self.encoding, "backslashreplace")

    def index_token(self, value: Any) -> str:
        return base64.b64encode(value).decode("ascii")


class ByteStream(Bytes[NoReturn]):  # (never None: an empty stream is b"")
    """Bytes stored in a Redis string of their own, so ``append_<name>()`` can APPEND to them.

    The string lives at ``<hash key>:field:<name>`` and holds the raw bytes.
    """

    stored_in_hash = False
    indexable = False

    def __init__(
        self,
        null: bool = False,
        default: Any = None,
        encoding: str = "utf-8",
        *,
        secret: bool = False,
    ) -> None:
        super().__init__(null=null, default=default, encoding=encoding, secret=secret)

    def _none(self) -> bytes:
        return b""  # a stream is never None: an empty stream is b"" (no string key)


class JSON(Attribute[Any, NoReturn]):  # (a document, None included: Any)
    """Any JSON document: dicts with string keys, lists, strings, numbers, booleans, None.

    Stored as the document itself, nested and readable. Tuples become lists at
    assignment, so the value in memory is the value that will be read back.
    Floats must be finite (JSON has no NaN or Infinity). A string is a JSON
    string: it is never parsed as JSON text.
    """

    __base_type__ = object
    __empty_value__ = ""

    def _expected(self) -> str:
        return "a JSON document (dict with str keys, list, str, int, finite float, bool, None)"

    def _cast(self, value: Any) -> Any:
        return _json_value(value)

    def _encode_value(self, value: Any) -> bytes:
        return serialization.dumps(value)

    def decode(self, stored: Any, envelope: dict[str, Any]) -> Any:
        return stored  # null is a JSON document too

    def to_plain(self, value: Any) -> bytes:
        return serialization.dumps(value)  # None is the document null, kept as a field

    def from_plain(self, raw: bytes) -> Any:
        return serialization.loads(raw)

    def plain_absent(self) -> Any:
        return self.get_default()  # a JSON null is stored ("null"): absent means never written

    def get_default(self) -> Any:
        value = super().get_default()
        return _json_value(value)  # a fresh copy: defaults are never shared between instances


def _json_value(value: Any) -> Any:
    """A copy of ``value`` as JSON will read it back, or _CastError saying what is wrong."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        if not value.isascii():
            value.encode("utf-8")
        return str(value)
    if isinstance(value, int):
        return _check_int(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _CastError(f"{value!r} has no JSON form")
        return float(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _CastError(f"JSON object keys must be str, not {type(key).__name__}")
            out[_json_value(key)] = _json_value(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    raise _CastError(f"{type(value).__name__} is not a JSON type")


class UUID(Attribute[_uuid.UUID, N]):
    """A UUID, stored in its canonical hyphenated form. ``__base_type__ = uuid.UUID``."""

    if TYPE_CHECKING:  # null=True adds None to the value type (docs/typing.rst)
        @overload
        def __init__(self: UUID[Never], null: Literal[False] = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        @overload
        def __init__(self: UUID[None], null: bool, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        def __init__(self, null: bool = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...

        def __set__(self, instance: Any, value: _uuid.UUID | str | N) -> None: ...

    __base_type__ = _uuid.UUID
    __empty_value__ = None
    indexable = True
    compatible_tags = frozenset({"UUID", "AutoUUID"})

    def _cast(self, value: Any) -> _uuid.UUID:
        if isinstance(value, _uuid.UUID):
            return value
        if isinstance(value, str):
            return _uuid.UUID(value)
        raise _CastError()

    def _encode_value(self, value: Any) -> bytes:
        return b'"' + str(value).encode("ascii") + b'"'

    def _plain(self, value: Any) -> bytes:
        return str(value).encode("ascii")

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> _uuid.UUID:
        if not isinstance(stored, str):
            raise TypeError(f"expected a UUID string, got {type(stored).__name__}")
        return _uuid.UUID(stored)

    def index_token(self, value: Any) -> str:
        return str(value)


class AutoUUID(UUID[NoReturn]):  # (None until the first save: see docs/typing.rst)
    """The primary key: a UUID assigned (uuid1) on first save when none was given.

    A model has exactly one; a model that declares none gets ``id = AutoUUID()``.
    """

    def generate(self) -> _uuid.UUID:
        """A new primary key value."""
        return _uuid.uuid1()


class DateTime(Attribute[_dt.datetime, N]):
    """A datetime, stored as ISO-8601 text; a timezone, when present, is kept as its offset.

    Args:
        auto_now: set the value to the current time (timezone-aware, UTC) on every save.

    Strings are parsed as ISO-8601 (python-dateutil); a ``date`` becomes midnight.
    """

    __base_type__ = _dt.datetime
    __empty_value__ = None
    indexable = True

    if TYPE_CHECKING:
        def __set__(self, instance: Any, value: _dt.datetime | _dt.date | N) -> None: ...

    @overload
    def __init__(self: DateTime[Never], auto_now: bool = False, null: Literal[False] = False,
                 default: Any = None, encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                 secret: bool = False) -> None: ...
    @overload
    def __init__(self: DateTime[None], auto_now: bool = False, *, null: bool, default: Any = None,
                 encoding: str = "utf-8", index: bool = False, unique: bool = False,
                 secret: bool = False) -> None: ...
    @overload
    def __init__(self: DateTime[None], auto_now: bool, null: bool, default: Any = None,
                 encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                 secret: bool = False) -> None: ...
    def __init__(
        self,
        auto_now: bool = False,
        null: bool = False,
        default: Any = None,
        encoding: str = "utf-8",
        *,
        index: bool = False,
        unique: bool = False,
        secret: bool = False,
    ) -> None:
        super().__init__(
            null=null, default=default, encoding=encoding, index=index, unique=unique, secret=secret
        )
        self.auto_now = auto_now

    def now(self) -> _dt.datetime:
        """The value ``auto_now`` stores: the current time in UTC, timezone-aware."""
        return _dt.datetime.now(_dt.timezone.utc)

    def _cast(self, value: Any) -> _dt.datetime:
        if isinstance(value, _dt.datetime):
            moment = value
        elif isinstance(value, _dt.date):
            moment = _dt.datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            try:
                moment = dateutil.parser.isoparse(value)
            except (ValueError, OverflowError):
                moment = dateutil.parser.parse(value)
        else:
            raise _CastError()
        moment.isoformat()  # prove now that it can be stored (an offset past 24 h cannot)
        return moment

    def _encode_value(self, value: Any) -> bytes:
        text: str = value.isoformat()
        return b'"' + text.encode("ascii") + b'"'

    def _plain(self, value: Any) -> bytes:
        return value.isoformat().encode("ascii")  # type: ignore[no-any-return]

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> _dt.datetime:
        if not isinstance(stored, str):
            raise TypeError(f"expected an ISO-8601 string, got {type(stored).__name__}")
        offset = _SUBMINUTE_OFFSET.search(stored)
        if offset is None:
            return _dt.datetime.fromisoformat(stored)
        # Offsets with seconds or microseconds: some Pythons' fromisoformat drops them.
        sign, hours, minutes, seconds, micros = offset.groups()
        delta = _dt.timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds),
                              microseconds=int(micros or 0))
        naive = _dt.datetime.fromisoformat(stored[: offset.start()])
        return naive.replace(tzinfo=_dt.timezone(-delta if sign == "-" else delta))

    def index_token(self, value: Any) -> str:
        # The instant as whole microseconds since the epoch, a naive value read as
        # UTC: equal instants, equal tokens (plain arithmetic never overflows near
        # year 1 or 9999).
        return str(instant_microseconds(value))

    def comparable(self, value: Any) -> Any:
        """An aware datetime: a naive value is taken as UTC (and stored naive, as given)."""
        return None if value is None else as_aware(value)


def utc_microseconds(value: _dt.datetime) -> int | None:
    """Microseconds since 1970-01-01 UTC of an aware datetime; None for a naive one."""
    offset = value.utcoffset()
    if offset is None:
        return None
    naive = value.replace(tzinfo=None)
    since_epoch = naive - _dt.datetime(1970, 1, 1)
    return (since_epoch - offset) // _dt.timedelta(microseconds=1)


def as_aware(value: _dt.datetime) -> _dt.datetime:
    """``value`` as queries compare and order it: a naive datetime taken as UTC."""
    return value if value.utcoffset() is not None else value.replace(tzinfo=_dt.timezone.utc)


def instant_microseconds(value: _dt.datetime) -> int:
    """Microseconds since 1970-01-01 UTC, a naive value read as UTC: the one rule for
    comparing, ordering and indexing datetimes."""
    micros = utc_microseconds(value)
    if micros is None:
        return (value - _dt.datetime(1970, 1, 1)) // _dt.timedelta(microseconds=1)
    return micros


class Decimal(Attribute[_decimal.Decimal, N]):
    """A decimal.Decimal, stored as its exact string (``"1.10"`` stays ``"1.10"``)."""

    if TYPE_CHECKING:  # null=True adds None to the value type (docs/typing.rst)
        @overload
        def __init__(self: Decimal[Never], null: Literal[False] = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        @overload
        def __init__(self: Decimal[None], null: bool, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        def __init__(self, null: bool = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...

        def __set__(self, instance: Any, value: _decimal.Decimal | float | N) -> None: ...

    __base_type__ = _decimal.Decimal
    __empty_value__ = _decimal.Decimal("0")
    indexable = True

    def _cast(self, value: Any) -> _decimal.Decimal:
        if isinstance(value, _decimal.Decimal):
            result = value
        elif isinstance(value, bool):
            raise _CastError()
        elif isinstance(value, (int, str)):
            result = _decimal.Decimal(value)
        elif isinstance(value, float):
            result = _decimal.Decimal(repr(value))  # the float's shortest exact text, not its binary expansion
        else:
            raise _CastError()
        if result.is_snan():
            raise _CastError("a signalling NaN cannot be compared or stored")
        return result

    def _encode_value(self, value: Any) -> bytes:
        return b'"' + str(value).encode("ascii") + b'"'

    def _plain(self, value: Any) -> bytes:
        return str(value).encode("ascii")

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> _decimal.Decimal:
        if not isinstance(stored, str):
            raise TypeError(f"expected a decimal string, got {type(stored).__name__}")
        try:
            result = _decimal.Decimal(stored)
        except _decimal.InvalidOperation:
            raise ValueError(f"{stored!r} is not a decimal") from None
        if result.is_snan():
            raise ValueError("a signalling NaN is never stored by repocket")
        return result

    def index_token(self, value: Any) -> str:
        if value.is_nan():
            return "NaN"
        if value.is_zero():
            return "0"
        # Exact whatever the value's size: the default context would round to 28
        # digits (two values would share a token) and overflow past its exponents.
        exact = _decimal.Context(prec=max(len(value.as_tuple().digits), 1),
                                 Emax=_decimal.MAX_EMAX, Emin=_decimal.MIN_EMIN)
        return str(value.normalize(exact))


class Integer(Attribute[int, N]):
    """An int of any size, stored as a JSON number. Integral floats and numeric strings are cast."""

    if TYPE_CHECKING:  # null=True adds None to the value type (docs/typing.rst)
        @overload
        def __init__(self: Integer[Never], null: Literal[False] = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        @overload
        def __init__(self: Integer[None], null: bool, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        def __init__(self, null: bool = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...

    __base_type__ = int
    __empty_value__ = 0
    indexable = True

    def _cast(self, value: Any) -> int:
        if isinstance(value, int):
            return _check_int(int(value))
        if isinstance(value, str):
            if len(value) > 4000:
                raise _CastError("too many digits")
            return _check_int(int(value.strip()))
        if isinstance(value, (float, _decimal.Decimal)):
            if value != value or value in (math.inf, -math.inf) or value != int(value):
                raise _CastError("it is not a whole number")
            return _check_int(int(value))
        raise _CastError()

    def _encode_value(self, value: Any) -> bytes:
        return str(value).encode("ascii")

    _plain = _encode_value

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> int:
        if not isinstance(stored, int) or isinstance(stored, bool):
            raise TypeError(f"expected a JSON integer, got {type(stored).__name__}")
        return stored

    def from_plain(self, raw: bytes) -> int:
        # Only the canonical text repocket (and HINCRBY) writes: the index entries
        # are named from the value, and int() would also take " 7", "+7" or "0_7".
        if _PLAIN_INTEGER.fullmatch(raw) is None:
            raise ValueError("not a canonical decimal integer")
        return int(raw)

    def index_token(self, value: Any) -> str:
        return str(value)


_PLAIN_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")
#: Plain Float text: repr() of a float (``1.5``, ``1e+16``, ``-0.0``, ``inf``,
#: ``nan``), and the integral text HINCRBYFLOAT writes (``3``).
_PLAIN_FLOAT = re.compile(rb"-?(?:[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|inf)|nan")
_SUBMINUTE_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2}):(\d{2})(?:\.(\d{6}))?$")

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class Float(Attribute[float, N]):
    """A float, stored as a JSON number; NaN and ±Infinity as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.

    Every float round-trips exactly, -0.0 included; a NaN comes back as NaN
    (its sign and payload are not kept).
    """

    if TYPE_CHECKING:  # null=True adds None to the value type (docs/typing.rst)
        @overload
        def __init__(self: Float[Never], null: Literal[False] = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        @overload
        def __init__(self: Float[None], null: bool, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...
        def __init__(self, null: bool = False, default: Any = None,
                     encoding: str = "utf-8", *, index: bool = False, unique: bool = False,
                     secret: bool = False) -> None: ...

        def __set__(self, instance: Any, value: float | _decimal.Decimal | N) -> None: ...

    __base_type__ = float
    __empty_value__ = 0.0
    indexable = True

    def _cast(self, value: Any) -> float:
        if isinstance(value, (int, float, _decimal.Decimal)):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise _CastError()

    def _encode_value(self, value: Any) -> bytes:
        if math.isfinite(value):
            return orjson.dumps(value)
        if math.isnan(value):
            return b'"NaN"'
        return b'"Infinity"' if value > 0 else b'"-Infinity"'

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> float:
        if isinstance(stored, str):
            try:
                return _NON_FINITE[stored]
            except KeyError:
                raise ValueError(f"{stored!r} is not a float") from None
        if isinstance(stored, bool) or not isinstance(stored, (int, float)):
            raise TypeError(f"expected a JSON number, got {type(stored).__name__}")
        return float(stored)

    def _plain(self, value: Any) -> bytes:
        return repr(value).encode("ascii")  # the shortest text that reads back as the same float

    def from_plain(self, raw: bytes) -> float:
        if _PLAIN_FLOAT.fullmatch(raw) is None:
            raise ValueError("not a float's decimal text")
        return float(raw)

    def index_token(self, value: Any) -> str:
        if value == 0:
            return "0.0"  # -0.0 == 0.0
        return repr(value)


#: ``on_delete`` strategies of a Pointer or PointerList (SPEC §7): what deleting the target does to the
#: records pointing at it.
#: Nothing: they keep the pointer, which then loads as broken (the original repocket's behaviour).
DO_NOTHING = "DO_NOTHING"
#: The delete raises :exc:`~repocket.errors.ProtectedError` naming them, and writes nothing.
PROTECT = "PROTECT"
#: They are deleted too, in the same atomic write, and so are the records pointing at them (recursively).
CASCADE = "CASCADE"
#: Their pointer is set to None in the same atomic write (a Pointer with ``null=True``).
SET_NULL = "SET_NULL"
#: The deleted record is removed from their list in the same atomic write (a PointerList).
UNLINK = "UNLINK"
#: Every strategy ``on_delete`` accepts.
ON_DELETE = (DO_NOTHING, PROTECT, CASCADE, SET_NULL, UNLINK)


class Reference(Attribute[T, N], abstract=True):
    """What Pointer and PointerList share: a target model, a reverse accessor and an ``on_delete`` strategy."""

    #: The strategies this kind of reference accepts.
    strategies: ClassVar[tuple[str, ...]] = ON_DELETE

    def __init__(self, to_model: type[ActiveRecord] | str | None, null: bool, default: Any, index: bool,
                 unique: bool, secret: bool, related_name: str | None, on_delete: str) -> None:
        super().__init__(null=null, default=default, index=index, unique=unique, secret=secret)
        kind = type(self).__name__
        if on_delete not in self.strategies:
            raise RepocketActiveRecordDefinitionError(
                f"{kind}(on_delete={on_delete!r}): expected one of {', '.join(self.strategies)}")
        if on_delete != DO_NOTHING and not index:
            raise RepocketActiveRecordDefinitionError(
                f"{kind}(on_delete={on_delete}) needs its index (index=True): a delete finds the records "
                "pointing at its target there")
        self.on_delete = on_delete
        if related_name is not None and related_name != "+" and (
                not isinstance(related_name, str) or not related_name.isidentifier() or related_name.startswith("_")):
            raise RepocketActiveRecordDefinitionError(
                f"{kind}(related_name={related_name!r}): a related name is an identifier not starting with '_', "
                "or '+' for no reverse accessor")
        self._to_model = to_model
        self.related_name = related_name

    @property
    def to_model(self) -> type[ActiveRecord]:
        """The target model class (resolved through the model registry on first use)."""
        target = self._to_model
        if isinstance(target, str):
            from repocket.registry import resolve_model

            target = self._to_model = resolve_model(target, near=getattr(self, "model", None))
        if target is None:
            from repocket.model import ActiveRecord

            return ActiveRecord
        return target

    def _target_key(self, stored: Any) -> str:
        """A stored target key, checked for shape, as where the target is now (a key of another layout moves)."""
        if not isinstance(stored, str):
            raise TypeError(f"expected a record key string, got {type(stored).__name__}")
        return self.to_model._meta.current_key(stored)

    def target_token(self, value: Any) -> str:
        """The equality-index token of one target: its id (``value`` a record, a broken one, or a stored key)."""
        if isinstance(value, str):  # a stored key, read back from Redis
            return str(self.to_model._meta.parse_key(self.to_model._meta.current_key(value)))
        return str(value._pk())


class Pointer(Reference[M, N]):
    """Think of it as a soft foreign key: stores the target's hash key, loads the target.

    Args:
        to_model: the target model class, or its name (``"Project"`` or
            ``"namespace.Project"``) to point at a model declared later.
        null: whether the pointer may be empty. A pointer whose target was
            deleted loads as ``None`` when ``null=True``; otherwise reading it
            raises BrokenReferenceError.
        related_name: the name of the reverse accessor on the target's
            instances (``project.builds``: a QuerySet of the records pointing
            at it); ``<model name lowercased>_set`` by default, ``"+"`` for none.
        on_delete: what deleting the target does to the records pointing at
            it: :data:`DO_NOTHING` (the default), :data:`PROTECT`,
            :data:`CASCADE` or :data:`SET_NULL`, written atomically with the
            delete on one server (docs/relationships.rst). A strategy other than
            DO_NOTHING needs the Pointer's index.

    Pointers are indexed unless ``index=False``, so reverse lookups
    (``Build.objects.filter(project=p)``, ``project.build_set``) run inside Redis.
    """

    __base_type__ = None
    __empty_value__ = None
    indexable = True
    strategies = (DO_NOTHING, PROTECT, CASCADE, SET_NULL)

    # Typed: the target class gives M (a name gives Any, which the mypy plugin resolves); null=True gives N.
    @overload
    def __init__(self: Pointer[M, Never], to_model: type[M], null: Literal[False] = False, *,
                 default: Any = None, index: bool = True, unique: bool = False, secret: bool = False,
                 related_name: str | None = None, on_delete: str = DO_NOTHING) -> None: ...
    @overload
    def __init__(self: Pointer[M, None], to_model: type[M], null: bool, *,
                 default: Any = None, index: bool = True, unique: bool = False, secret: bool = False,
                 related_name: str | None = None, on_delete: str = DO_NOTHING) -> None: ...
    @overload
    def __init__(self: Pointer[Any, Never], to_model: str | None = None, null: Literal[False] = False, *,
                 default: Any = None, index: bool = True, unique: bool = False, secret: bool = False,
                 related_name: str | None = None, on_delete: str = DO_NOTHING) -> None: ...
    @overload
    def __init__(self: Pointer[Any, None], to_model: str | None, null: bool, *,
                 default: Any = None, index: bool = True, unique: bool = False, secret: bool = False,
                 related_name: str | None = None, on_delete: str = DO_NOTHING) -> None: ...
    def __init__(
        self,
        to_model: type[ActiveRecord] | str | None = None,
        null: bool = False,
        *,
        default: Any = None,
        index: bool = True,
        unique: bool = False,
        secret: bool = False,
        related_name: str | None = None,
        on_delete: str = DO_NOTHING,
    ) -> None:
        if on_delete == UNLINK:
            raise RepocketActiveRecordDefinitionError(
                "Pointer(on_delete=UNLINK): UNLINK removes the target from a PointerList; "
                "a Pointer takes SET_NULL (with null=True) instead")
        if on_delete == SET_NULL and not null:
            raise RepocketActiveRecordDefinitionError("Pointer(on_delete=SET_NULL) needs null=True")
        super().__init__(to_model, null, default, index, unique, secret, related_name, on_delete)

    def _expected(self) -> str:
        target = self.to_model
        return f"a saved {target.__module__}.{target.__name__} instance"

    def _cast(self, value: Any) -> Any:
        if isinstance(value, self.to_model):
            return value
        raise _CastError()

    def _encode_value(self, value: Any) -> bytes:
        return orjson.dumps(value._key())

    def _plain(self, value: Any) -> bytes:
        return value._key().encode("utf-8")  # type: ignore[no-any-return]

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> Any:  # (a key string, not yet the M instance)
        # The loader resolves the key into an instance; here only its shape is checked.
        return self._target_key(stored)

    def to_string(self, value: Any) -> str:
        value = self.cast(value)
        return "" if value is None else value._key()

    def to_python(self, value: Any, simple: bool = False) -> Any:
        if simple:
            return None if value is None else value.to_dict(simple=True)
        return super().to_python(value, simple=False)

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type[Any]) -> M | N: ...
    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        value = super().__get__(instance, owner)
        if type(value) is BrokenReference:
            raise value.error()
        return value

    def index_token(self, value: Any) -> str:
        return self.target_token(value)


class PointerList(Reference[list[M], NoReturn]):
    """An ordered list of distinct target records, stored as a JSON list of their hash keys.

    ``build.reviewers = [alice, bob]``; ``Build.objects.filter(reviewers=alice)``
    finds the builds whose list holds alice, and ``filter(reviewers__in=[...])``
    those holding any of them, both from the index. ``build.append_reviewers(carol)``
    and ``build.remove_reviewers(bob)`` change the stored list inside Redis,
    atomically, without losing a concurrent change of it.

    Args:
        to_model: the target model class, or its name (as for :class:`Pointer`).
        related_name: the reverse accessor on the targets (``user.reviewed``);
            ``<model name lowercased>_set`` by default, ``"+"`` for none.
        on_delete: :data:`DO_NOTHING` (the default: the list keeps the key,
            and reading it raises BrokenReferenceError), :data:`PROTECT`,
            :data:`CASCADE` or :data:`UNLINK` (the deleted target is removed
            from the list, in the same atomic write as the delete).

    The list is never None (empty: ``[]``) and is always indexed: one set
    member per target, in the target's equality set.
    """

    __base_type__ = list
    indexable = True
    strategies = (DO_NOTHING, PROTECT, CASCADE, UNLINK)

    if TYPE_CHECKING:
        def __set__(self, instance: Any, value: list[M] | tuple[M, ...]) -> None: ...

    @overload
    def __init__(self: PointerList[M], to_model: type[M], *, secret: bool = False,
                 related_name: str | None = None, on_delete: str = DO_NOTHING) -> None: ...
    @overload
    def __init__(self: PointerList[Any], to_model: str | None = None, *, secret: bool = False,
                 related_name: str | None = None, on_delete: str = DO_NOTHING) -> None: ...
    def __init__(
        self,
        to_model: type[ActiveRecord] | str | None = None,
        *,
        secret: bool = False,
        related_name: str | None = None,
        on_delete: str = DO_NOTHING,
    ) -> None:
        if on_delete == SET_NULL:
            raise RepocketActiveRecordDefinitionError(
                "PointerList(on_delete=SET_NULL): a list drops its deleted targets with UNLINK instead")
        super().__init__(to_model, False, None, True, False, secret, related_name, on_delete)

    def get_empty_value(self) -> list[Any]:
        return []  # (a new list for each instance)

    def _none(self) -> list[Any]:
        return []  # an empty list, the only "nothing" a list holds

    def _expected(self) -> str:
        target = self.to_model
        return f"a list of distinct saved {target.__module__}.{target.__name__} instances"

    def _cast(self, value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _CastError()
        seen: set[str] = set()
        for position, target in enumerate(value):
            if not isinstance(target, self.to_model) and type(target) is not BrokenReference:
                raise TypeError(f"item {position} is a {type(target).__name__}")
            pk = target.pk if type(target) is BrokenReference else target._data.get(target._meta.pk)  # type: ignore[union-attr]
            if pk is not None:
                token = str(pk)
                if token in seen:
                    raise ValueError(f"item {position} is in the list already: a PointerList holds distinct records")
                seen.add(token)
        return list(value)

    def _encode_value(self, value: Any) -> bytes:
        return orjson.dumps([target._key() for target in value])

    def _plain(self, value: Any) -> bytes:
        return self._encode_value(value)

    def from_plain(self, raw: bytes) -> Any:  # (key strings, as _decode)
        return self._decode(orjson.loads(raw), {})

    def _decode(self, stored: Any, envelope: dict[str, Any]) -> Any:  # (key strings, not yet M instances)
        # The loader resolves the keys into instances; here only their shape is checked.
        if not isinstance(stored, list):
            raise TypeError(f"expected a list of record keys, got {type(stored).__name__}")
        return [self._target_key(key) for key in stored]

    def to_string(self, value: Any) -> str:
        return orjson.dumps([target._key() for target in self.cast(value)]).decode()

    def to_python(self, value: Any, simple: bool = False) -> Any:
        if simple:
            return [target.to_dict(simple=True) for target in value]
        return super().to_python(value, simple=False)

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type[Any]) -> list[M]: ...
    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        value = super().__get__(instance, owner)
        if instance is not None:
            for target in value:
                if type(target) is BrokenReference:
                    raise target.error()
        return value

    def index_token(self, value: Any) -> str:
        return self.target_token(value)  # (of one item: see repocket.indexes.entries)


class BrokenReference:
    """What a non-null Pointer holds when the record it names no longer exists.

    Loading such a record succeeds, so it can still be listed, updated and
    deleted, and ``values_list`` of its other fields works. Reading the
    attribute (``book.author``) raises :class:`~repocket.errors.BrokenReferenceError`
    naming both keys. Saving the record leaves the stored pointer as it is.
    """

    __slots__ = ("field", "key", "source")

    def __init__(self, key: str, source: str, field: str) -> None:
        #: The hash key the pointer names, which does not exist.
        self.key = key
        #: The key of the record holding the pointer, and the attribute.
        self.source = source
        self.field = field

    @property
    def pk(self) -> _uuid.UUID:
        """The id the pointer names (the last segment of :attr:`key`)."""
        return _uuid.UUID(self.key.rsplit(":", 1)[-1])

    def _key(self) -> str:
        return self.key

    def _pk(self) -> _uuid.UUID:
        return self.pk

    def error(self) -> Exception:
        """The BrokenReferenceError that reading the attribute raises."""
        from repocket.errors import BrokenReferenceError

        return BrokenReferenceError(
            f"{self.source} field {self.field!r} points to {self.key}, which does not exist",
            key=self.source, field=self.field, target=self.key,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BrokenReference) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"<BrokenReference to {self.key}>"
