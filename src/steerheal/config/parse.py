"""Parsing and checking shared by every config: `from_dict` (unknown keys and wrong types are
errors naming the key) and `_check` (range checks with a fix)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

from ..errors import SteerhealError

Scope = Literal["all", "prompt", "generated"]
ExtractMethod = Literal["mean_diff", "pca"]

T = TypeVar("T")


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise SteerhealError(what, fix)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` checked against the field's type (JSON/TOML give lists for tuples, ints for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = SteerhealError(f"{name} must be {_describe(hint)}, got {value!r}", f"give {name} a value of that type")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except SteerhealError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise SteerhealError(f"{name} must be one of {list(args)}, got {value!r}", f"choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], name) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, name) for v, a in zip(value, args, strict=True))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint in (bool, str) and not isinstance(value, hint):
        raise bad
    return value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return {type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def merge_settings(a: dict, b: dict) -> dict:
    """`b` over `a`, nested tables merged key by key (a preset, then a config file or sweep run)."""
    out = dict(a)
    for key, value in b.items():
        prior = out.get(key)
        out[key] = merge_settings(prior if isinstance(prior, dict) else {}, value) if isinstance(value, dict) else value
    return out


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build a config dataclass from a dict, rejecting unknown keys and values of the wrong type.

    Nested config sections are built from their own tables, recursively."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SteerhealError(
            f"unknown key(s) {unknown} in {where}",
            f"use only {sorted(names)}",
        )
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints[key]
        if not dataclasses.is_dataclass(hint):
            data[key] = _coerce(value, hint, f"{where}.{key}")
        elif not isinstance(value, hint):  # a nested section ([heal], [compare.calibrate]) from its table
            if not isinstance(value, dict):
                raise SteerhealError(f"{where}.{key} must be a table of settings, got {value!r}",
                                     f"write {key} as an object of {hint.__name__} fields")
            data[key] = from_dict(hint, value, where=f"{where}.{key}")
    return cls(**data)
