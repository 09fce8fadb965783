"""The slow path of validation: find every issue by walking the generic value against the Structs.

Runs only when msgspec's typed decode raised `ValidationError` (it stops at the first error): the
body is decoded without a type and `_check` walks it against the same Struct definitions,
converting each field on its own with `msgspec.convert`, so that every issue is found with its
path. Invalid values become None in the partial `Batch` it builds, and the cross-field rules run
on what is valid.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from msgspec import Raw

from stages.payload import Batch
from stages.validate_issues import InvalidBody, InvalidPayload, Media, Path
from stages.validate_issues import Issues as _Issues
from stages.validate_issues import allowed as _allowed
from stages.validate_issues import invalid_body as _invalid_body
from stages.validate_issues import kind as _kind
from stages.validate_rules import _check_rules, ints_in_usage

GENERIC: dict[str, Callable[..., Any]] = {"json": msgspec.json.decode, "msgpack": msgspec.msgpack.decode}
# What msgspec raises on a body it cannot read (bad syntax, bad UTF-8, nesting too deep).
NOT_DECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# What turning a decoded msgpack value into JSON text raises (Ext types, odd keys, depth).
NOT_JSON = (TypeError, ValueError, msgspec.DecodeError, RecursionError)


def explain(
    body: bytes | bytearray, media: Media, first: msgspec.ValidationError, issues: _Issues
) -> InvalidBody | InvalidPayload:
    try:
        value = GENERIC[media](body)
    except msgspec.ValidationError:  # a JSON number out of range: no walk possible; `first`
        issues.add_error([], first)  # has its path (the generic decode's error has none)
        return issues.result()
    except NOT_DECODABLE as exc:
        return _invalid_body(media, exc)
    if not isinstance(value, dict):
        return InvalidBody(f"the body must be an object at the root, got {_kind(value)}")
    batch = _check(ints_in_usage(value), Batch, [], issues)
    _check_rules(batch, issues)
    if not issues.items:  # msgspec saw something the walk did not: report it as is
        issues.add_error([], first)
    return issues.result()


def _check(value: Any, tp: Any, path: Path, issues: _Issues) -> Any:
    """Return ``value`` converted to ``tp``, adding an issue for every violation inside it.

    Invalid values become None; a Struct is always built (with its invalid fields None).
    """
    kind, container, item = _shape(tp)
    if kind == "optional":
        return None if value is None else _check(value, item, path, issues)
    if kind == "raw":
        _check_raw(value, path, issues)
        return None
    if kind == "struct":
        if isinstance(value, dict):
            return _check_struct(value, item, path, issues)
        _convert(value, item, path, issues)
        return item(**{field.name: None for field in msgspec.structs.fields(item)})
    if kind == "list" and isinstance(value, list):
        if container is not None:  # the list's own constraints (length), then each item
            _convert(value, container, path, issues)
        return [_check(v, item, [*path, i], issues) for i, v in _until_full(value, issues)]
    if kind == "dict" and isinstance(value, dict):
        _convert(value, container, path, issues)  # the keys first, then each value
        return {k: _check(v, item, [*path, k], issues) for k, v in value.items()}
    return _convert(value, tp, path, issues)


@cache
def _shape(tp: Any) -> tuple[str, Any, Any]:
    """How ``_check`` walks ``tp``: (kind, container type to check first, inner type)."""
    base, metas = (get_args(tp)[0], get_args(tp)[1:]) if get_origin(tp) is Annotated else (tp, ())
    origin = get_origin(base)
    if base is Raw:
        return "raw", None, None
    if origin is Union or origin is types.UnionType:
        options = [arg for arg in get_args(base) if arg is not type(None)]
        if len(options) == 1 and len(get_args(base)) == 2 and not metas:
            return "optional", None, options[0]
    elif isinstance(base, type) and issubclass(base, msgspec.Struct):
        return "struct", None, base
    elif origin is list:
        return "list", Annotated[(list[Any], *metas)] if metas else None, get_args(base)[0]
    elif origin is dict:
        key, item = get_args(base)
        return "dict", Annotated[(dict[key, Any], *metas)] if metas else dict[key, Any], item  # type: ignore[valid-type]  # a runtime type
    return "leaf", None, None


def _check_struct(value: dict, cls: type[msgspec.Struct], path: Path, issues: _Issues) -> Any:
    raw_fields = _raw_fields(cls)
    stripped = value
    if raw_fields:  # msgspec.convert cannot make a Raw: leave those fields out
        stripped = value.copy()
        for name in raw_fields:
            stripped.pop(name, None)
    try:  # shortcut: most of a mostly-valid batch converts in one call
        converted = msgspec.convert(stripped, cls)
    except msgspec.ValidationError:
        pass
    else:
        for name in raw_fields.intersection(value):
            _check_raw(value[name], [*path, name], issues)
        return converted
    kwargs = {}
    for field in msgspec.structs.fields(cls):
        where = [*path, field.encode_name]
        if field.encode_name in value:
            kwargs[field.name] = _check(value[field.encode_name], field.type, where, issues)
        elif field.required:
            issues.add(where, "required", f"`{field.encode_name}` is required")
            kwargs[field.name] = None
    return cls(**kwargs)


def _check_raw(value: Any, path: Path, issues: _Issues) -> None:
    """``input``/``output`` take any value that has a JSON text."""
    if issues.from_json:
        return
    try:
        msgspec.json.encode(value)
    except NOT_JSON as exc:
        issues.add(path, "invalid_value", f"value cannot be represented as JSON: {exc}")


def _convert(value: Any, tp: Any, path: Path, issues: _Issues) -> Any:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        issues.add_error(path, exc, _allowed(tp))
        return None


def _until_full(items: list, issues: _Issues) -> Iterator[tuple[int, Any]]:
    for pair in enumerate(items):
        if issues.full:
            return
        yield pair


@cache
def _raw_fields(cls: type[msgspec.Struct]) -> frozenset[str]:
    """Wire names of the fields of ``cls`` typed ``Raw`` (``msgspec.convert`` cannot make one)."""
    return frozenset(f.encode_name for f in msgspec.structs.fields(cls) if f.type is Raw)
