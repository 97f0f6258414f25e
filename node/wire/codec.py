"""Canonical msgpack and the schema check that turns decoded maps into message dataclasses.

Canonical form: maps with string keys in sorted order, minimal integer widths, bin for bytes,
str for text, no floats, no ext types. A frame is accepted only if re-encoding its decoded value
gives back exactly the received bytes, so every bit flip either breaks decoding, breaks
canonicality or changes a signed value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from node.wire import constants as C
from node.wire.errors import MalformedMessage, OversizedMessage, SchemaViolation

T = TypeVar("T")


def fld(
    *,
    min: int | None = None,
    max: int | None = None,
    max_len: int | None = None,
    length: int | None = None,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with range metadata checked on decode (and on encode)."""
    meta = {"min": min, "max": max, "max_len": max_len, "length": length}
    kwargs: dict[str, Any] = {"metadata": meta}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


_SCALARS = frozenset({int, str, bytes, bool, type(None)})
_FIELD_ORDER: dict[type, tuple[str, ...]] = {}  # dataclass -> its field names, sorted


def _canonical(value: Any, depth: int = 0) -> Any:
    if depth > C.MAX_NESTING:
        raise SchemaViolation(f"nesting deeper than {C.MAX_NESTING}")
    t = type(value)
    if t in _SCALARS:
        return value
    names = _FIELD_ORDER.get(t)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_ORDER[t] = tuple(sorted(f.name for f in dataclasses.fields(value)))
    if names is not None:
        return {k: _canonical(getattr(value, k), depth + 1) for k in names}
    if isinstance(value, dict):
        return {k: _canonical(value[k], depth + 1) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, float):
        raise SchemaViolation("floats are not allowed on the wire; use integers")
    return value


def pack_canonical(value: Any) -> bytes:
    """Encode a value (dataclasses, dicts, lists, ints, bytes, str, bool, None) canonically."""
    return msgpack.packb(_canonical(value), use_bin_type=True)


def unpack_strict(data: bytes, *, max_bytes: int = C.DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """Decode bytes that must be canonical msgpack; the size is checked before any decoding."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedMessage(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    data = bytes(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=C.MAX_LIST,
            max_map_len=1024,
            ext_hook=_refuse_ext,
        )
    except MalformedMessage:
        raise
    except msgpack.ExtraData:
        raise MalformedMessage("trailing bytes after the message") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not valid msgpack: {exc.__class__.__name__}: {exc}") from None
    _check_shape(value)
    # Keys are in sorted order at every level (checked above), so the decoded value re-packs to
    # the canonical bytes as it stands: equal bytes mean minimal int widths, bin for bytes, etc.
    try:
        again = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"not encodable: {exc}") from None
    if again != data:
        raise MalformedMessage("message is not in canonical msgpack form (int width or types)")
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedMessage(f"msgpack ext type {code} is not allowed")


def _check_shape(value: Any) -> None:
    """One pass over a decoded value: nesting depth, string map keys in sorted order, no floats."""
    if type(value) is float:
        raise SchemaViolation("floats are not allowed on the wire; use integers")
    if type(value) not in (dict, list):
        return
    stack = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, d = pop()  # only maps and lists are pushed
        if v and d >= C.MAX_NESTING:  # its items would be deeper than the limit
            raise MalformedMessage(f"nesting deeper than {C.MAX_NESTING}")
        if type(v) is dict:
            prev = None
            for k in v:
                if type(k) is not str:
                    raise MalformedMessage(f"map keys must be strings, got {_tname(k)}")
                if prev is not None and k <= prev:
                    raise MalformedMessage("message is not in canonical msgpack form (map keys out of order)")
                prev = k
            items = v.values()
        else:
            items = v
        for x in items:
            tx = type(x)
            if tx is dict or tx is list:
                push((x, d + 1))
            elif tx is float:
                raise SchemaViolation("floats are not allowed on the wire; use integers")


# ---- schema: decoded maps -> dataclasses, with types and ranges checked -------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = typing.get_type_hints(cls)
        _HINTS[cls] = h
    return h


# Per type: a converter ``conv(value, where) -> value`` built once from the schema, so decoding
# makes no typing introspection and builds no error path unless a check fails.
Converter = Callable[[Any, str], Any]
_CONVERTERS: dict[Any, Converter] = {}


def _dataclass_converter(cls: type) -> Converter:
    cached = _CONVERTERS.get(cls)
    if cached is not None:
        return cached
    hints = _hints(cls)
    fs = dataclasses.fields(cls)
    names = frozenset(f.name for f in fs)
    fields: list[tuple[str, Converter | None, bool]] = []

    def conv(value: Any, where: str) -> Any:
        if type(value) is not dict:
            raise SchemaViolation(f"{where}: expected a map, got {_tname(value)}")
        if not names.issuperset(value):
            raise SchemaViolation(f"{where}: unknown field(s) {sorted(set(value) - names)}")
        kwargs = {}
        for name, fconv, optional in fields:
            if name not in value:
                if optional:
                    continue
                raise SchemaViolation(f"{where}.{name}: missing")
            kwargs[name] = fconv(value[name], where + "." + name)  # type: ignore[misc]
        return cls(**kwargs)

    _CONVERTERS[cls] = conv  # before the fields: a schema may refer to itself
    for f in fs:
        fields.append(
            (
                f.name,
                _converter(hints[f.name], f.metadata),
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
            )
        )
    return conv


def _converter(tp: Any, meta: Any) -> Converter:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        inner_conv = _converter(inner[0], meta)
        if type(None) not in args:
            return inner_conv

        def optional(v: Any, where: str) -> Any:
            return None if v is None else inner_conv(v, where)

        return optional
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        exact, mx = (meta.get("length"), meta.get("max_len")) if meta else (None, None)
        if item_tp in (bytes, str, int):
            # Lists of scalars (message ids, records, names): one type check per item, and the
            # item's path only when one fails.
            item_conv = _converter(item_tp, {})
            lim = C.MAX_STRING if item_tp is str else None

            def conv_scalars(v: Any, where: str) -> Any:
                if type(v) is not list:
                    raise SchemaViolation(f"{where}: expected a list, got {_tname(v)}")
                n = len(v)
                if (exact is not None and n != exact) or (mx is not None and n > mx):
                    _check_len(v, where, meta)
                for x in v:
                    if type(x) is not item_tp or (lim is not None and len(x) > lim):
                        return [item_conv(x, f"{where}[{i}]") for i, x in enumerate(v)]  # raises, naming the item
                return v

            return conv_scalars
        item_conv = _converter(item_tp, {})

        def conv_list(v: Any, where: str) -> Any:
            if type(v) is not list:
                raise SchemaViolation(f"{where}: expected a list, got {_tname(v)}")
            n = len(v)
            if (exact is not None and n != exact) or (mx is not None and n > mx):
                _check_len(v, where, meta)
            return [item_conv(x, f"{where}[{i}]") for i, x in enumerate(v)]

        return conv_list
    if dataclasses.is_dataclass(tp):
        return _dataclass_converter(tp)  # type: ignore[arg-type]
    if tp is bool:

        def conv_bool(v: Any, where: str) -> Any:
            if type(v) is not bool:
                raise SchemaViolation(f"{where}: expected a bool, got {_tname(v)}")
            return v

        return conv_bool
    if tp is int:
        lo, hi = (meta.get("min"), meta.get("max")) if meta else (None, None)

        def conv_int(v: Any, where: str) -> Any:
            if type(v) is not int:
                raise SchemaViolation(f"{where}: expected an integer, got {_tname(v)}")
            if lo is not None and v < lo:
                raise SchemaViolation(f"{where}: {v} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise SchemaViolation(f"{where}: {v} is above the maximum {hi}")
            return v

        return conv_int
    if tp is bytes or tp is str:
        m = meta or ({"max_len": C.MAX_STRING} if tp is str else {})
        exact, mx = m.get("length"), m.get("max_len")
        label = "bytes" if tp is bytes else "a string"

        def conv_blob(v: Any, where: str) -> Any:
            if type(v) is not tp:
                raise SchemaViolation(f"{where}: expected {label}, got {_tname(v)}")
            n = len(v)
            if (exact is not None and n != exact) or (mx is not None and n > mx):
                _check_len(v, where, m)
            return v

        return conv_blob
    raise TypeError(f"unsupported schema type {tp!r}")


def from_wire(cls: type[T], value: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a decoded map, checking every field's type and range."""
    built: T = _dataclass_converter(cls)(value, where or cls.__name__)
    return built


def check_fields(obj: Any) -> None:
    """Check an outgoing dataclass against its own schema (catches our own bugs early)."""
    from_wire(type(obj), _canonical(obj))


def _tname(v: Any) -> str:
    return type(v).__name__


def _check_len(v: Any, where: str, meta: Any) -> None:
    if not meta:
        return
    n = meta.get("length")
    if n is not None and len(v) != n:
        raise SchemaViolation(f"{where}: expected length {n}, got {len(v)}")
    mx = meta.get("max_len")
    if mx is not None and len(v) > mx:
        raise SchemaViolation(f"{where}: length {len(v)} exceeds {mx}")
