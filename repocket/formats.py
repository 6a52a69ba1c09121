"""Storage formats: how one attribute's value becomes one hash field, and back.

A model stores its record hash in one of two formats (``Meta.format``):

``"envelope"`` (the default)
    SPEC §2: each field a JSON envelope naming its type, as the original
    repocket writes it.
``"plain"``
    Each field holds the value's plain text, typed by the declaration (UTF-8
    text, raw bytes, decimal numbers, ISO datetimes, canonical UUIDs, compact
    JSON); a None is a field left out. Smaller, readable in ``redis-cli``, and
    short enough to stay in Redis's compact listpack encoding.

Everything else (keys, indexes, queries, scripts, round trips) is the same in
both. This module is the only place that knows the difference: writers call
:meth:`Format.encode`, readers use :meth:`Format.reader` on the hot path and
:meth:`Format.decode`, which says what is wrong, when that fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from repocket import errors, serialization
from repocket.attributes import ATTRIBUTE_TYPES, Attribute, _short_repr

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["ENVELOPE", "FORMATS", "PLAIN", "SECRET_MASK", "Format", "format_named"]

#: How a ``secret=True`` value is shown in messages.
SECRET_MASK = "'***' (secret)"
_ENVELOPE_MEMBERS = frozenset({"type", "value", "module"})


class Format:
    """One storage format; the module-level :data:`ENVELOPE` and :data:`PLAIN` are the two."""

    name = ""

    def encode(self, attr: Attribute[Any], value: Any) -> bytes | None:
        """The hash field for ``value``, or None when the format leaves the field out."""
        raise NotImplementedError

    def reader(self, attr: Attribute[Any]) -> Callable[[bytes], Any]:
        """A fast reader of what :meth:`encode` writes; it raises TypeError, ValueError or
        ArithmeticError on anything else, and the caller then takes :meth:`decode`."""
        raise NotImplementedError

    def decode(self, meta: ModelOptions, attr: Attribute[Any], name: str, raw: bytes) -> tuple[Any, str | None]:
        """``(value, None)``, or ``(None, what is wrong)`` for a stored field this format does not write.

        The problem never quotes a ``secret=True`` value.
        """
        raise NotImplementedError

    def absent(self, attr: Attribute[Any]) -> Any:
        """The value of a field missing from a stored record."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<repocket storage format {self.name!r}>"


class _Envelope(Format):
    name = "envelope"

    def encode(self, attr: Attribute[Any], value: Any) -> bytes:
        return attr.encode(value)

    def reader(self, attr: Attribute[Any]) -> Callable[[bytes], Any]:
        return attr.reader()

    def decode(self, meta: ModelOptions, attr: Attribute[Any], name: str, raw: bytes) -> tuple[Any, str | None]:
        secret = attr.secret
        try:
            envelope = serialization.loads(raw)
        except (ValueError, RecursionError) as exc:
            return None, "not valid JSON" + ("" if secret else f" ({exc})")
        if type(envelope) is not dict:
            return None, f"expected a JSON object envelope, found {type(envelope).__name__}"
        tag = envelope.get("type")
        expected = type(attr).__name__
        if tag != expected and not (isinstance(tag, str) and tag in attr.compatible_tags):
            if isinstance(tag, str) and tag in ATTRIBUTE_TYPES:
                shown = SECRET_MASK if secret else _short_repr(envelope.get("value"))
                return None, f"stored as {tag} ({shown}), but {meta.label}.{name} is {expected}"
            return None, f"unknown type tag {_short_repr(tag)}"
        module = envelope.get("module")
        if module != type(attr).__module__:
            return None, f"module {_short_repr(module)} is not {type(attr).__module__!r} (nothing was imported)"
        if "value" not in envelope:
            return None, "the envelope has no 'value' member"
        extra = envelope.keys() - _ENVELOPE_MEMBERS - attr.extra_members
        if extra:
            return None, f"unexpected envelope members {_short_repr(sorted(extra))}"
        try:
            return attr.decode(envelope["value"], envelope), None
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            return None, _invalid(attr, envelope["value"], exc)

    def absent(self, attr: Attribute[Any]) -> Any:
        return attr.get_default()  # an attribute declared after the record was written


class _Plain(Format):
    name = "plain"

    def encode(self, attr: Attribute[Any], value: Any) -> bytes | None:
        return attr.to_plain(value)

    def reader(self, attr: Attribute[Any]) -> Callable[[bytes], Any]:
        return attr.from_plain

    def decode(self, meta: ModelOptions, attr: Attribute[Any], name: str, raw: bytes) -> tuple[Any, str | None]:
        try:
            return attr.from_plain(raw), None
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            return None, _invalid(attr, raw, exc)

    def absent(self, attr: Attribute[Any]) -> Any:
        return attr.plain_absent()


def _invalid(attr: Attribute[Any], stored: Any, exc: BaseException) -> str:
    """What is wrong with a stored value its type cannot read; a secret one is not quoted, nor is the cause."""
    expected = type(attr).__name__
    if attr.secret:  # the cause's text may quote the value too
        return f"invalid {expected} value {SECRET_MASK}"
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", "backslashreplace")
    return f"invalid {expected} value {_short_repr(stored)} ({exc})"


#: The default format, SPEC §2's JSON envelopes.
ENVELOPE: Format = _Envelope()
#: ``Meta.format = "plain"``, plain values typed by the declaration.
PLAIN: Format = _Plain()
#: Every format by its ``Meta.format`` name.
FORMATS: dict[str, Format] = {ENVELOPE.name: ENVELOPE, PLAIN.name: PLAIN}


def format_named(name: Any, model: str) -> Format:
    """The format ``Meta.format = name`` asks for, or ConfigurationError listing the valid names."""
    found = FORMATS.get(name) if isinstance(name, str) else None
    if found is None:
        raise errors.RepocketActiveRecordDefinitionError(
            f"{model}.Meta: format must be one of {', '.join(map(repr, FORMATS))}, not {_short_repr(name)}"
        )
    return found

