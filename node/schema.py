"""The one schema checker: a TOML table (or any plain mapping) against a dataclass's field types.

Config files, GPU profiles and the harness's parameters all load through it, so a wrong type or
an unknown key reads the same everywhere: ``<where>.<key>: expected an integer, got 'x'``. Each
caller passes its own error class, so its callers catch what they already catch."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class SchemaError(ValueError):
    """A value that does not fit the schema; the message names where."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(tp: Any, value: Any, where: str, error: type[Exception] = SchemaError) -> Any:
    """Check one value against a field type (int, float, bool, str, lists, optionals); ints are
    accepted for floats, bools never for ints."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        return coerce(args[0], value, where, error)
    if origin is list:
        if not isinstance(value, list):
            raise error(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, f"{where}[{i}]", error) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise error(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise error(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise error(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise error(f"{where}: expected a string, got {value!r}")
        return value
    raise error(f"{where}: unsupported type {_type_name(tp)}")


def build(cls: type[T], table: Any, where: str, error: type[Exception] = SchemaError, *, required: bool = False) -> T:
    """``cls(**table)`` after checking every key and value; unknown keys are errors, and with
    ``required`` so are missing ones (else the dataclass's defaults fill them)."""
    if not isinstance(table, dict):
        raise error(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    if required and (missing := [k for k in names if k not in table]):
        raise error(f"{where}: missing key(s) {', '.join(missing)}")
    kwargs = {k: coerce(hints[k], v, f"{where}.{k}", error) for k, v in table.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: {exc}") from None


def toml_value(v: Any) -> str:
    """A Python value (bool, number, string, list of them) as a TOML value, for the configs gpow
    writes (gpow init, the harness)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string is a JSON string for the characters used here
