"""Decoding and validation of an ingest body (SPEC §2). Pure functions, no I/O.

``decode_batch(body, media)`` returns a ``Batch``, or the reason it is refused as a value:
``InvalidBody`` (not JSON / msgpack, not UTF-8, not an object at the root -> 400 invalid_body)
or ``InvalidPayload`` (every schema / rule violation -> 400 invalid_payload).

How (one schema, in ``stages.payload``):
1. Fast path: ``msgspec`` decodes the body straight into ``Batch`` (per-field constraints are
   ``Meta`` annotations), then ``_check_rules`` checks the cross-field rules and
   ``_json_texts`` turns ``Span.input`` / ``Span.output`` into JSON text.
2. Only when msgspec raises ``ValidationError`` (it stops at the first error): the body is
   decoded without a type and ``_check`` walks it against the same Struct definitions,
   converting each field on its own with ``msgspec.convert``, so that every issue is found with
   its path. Invalid values become ``None`` in the partial ``Batch`` it builds, and the
   cross-field rules run on what is valid.

An issue is ``{"path": [...], "code": str, "message": str}``; the path holds wire (camelCase)
keys and list indexes from the batch root. Issue codes:

    required            a required field is absent
    invalid_type        wrong JSON type (string expected, got number, ...)
    too_short           string shorter than its minimum length
    too_long            string longer than its maximum length (in characters)
    too_few             list with fewer items than its minimum
    too_many            list with more items than its maximum
    invalid_value       right type, value not allowed (enum, version, number < 0, not JSON)
    invalid_timestamp   not an RFC 3339 timestamp with an offset or "Z"
    end_before_start    span endTime before its startTime
    duplicate_id        span id already used in the same trace (path of the later one)
    parent_is_self      span parentId equal to its own id
    token_counts        cacheRead + cacheWrite > inputTokens, or reasoning > outputTokens
    too_many_issues     last issue of a list cut at ``max_issues``

Ownership: ``decode_batch`` does not keep ``body``; the returned ``Batch`` holds copies
(``input``/``output`` are ``bytes``, not views of the body) and belongs to the caller.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Raw

from stages.payload import Batch, Span, Trace

Media = Literal["json", "msgpack"]
Path = list[str | int]

_DECODERS = {"json": msgspec.json.Decoder(Batch), "msgpack": msgspec.msgpack.Decoder(Batch)}
_GENERIC: dict[str, Callable[..., Any]] = {"json": msgspec.json.decode, "msgpack": msgspec.msgpack.decode}
_ANY_MSGPACK = msgspec.msgpack.Decoder()
_JSON = msgspec.json.Encoder()
_MEDIA_NAMES = {"json": "JSON", "msgpack": "msgpack"}
# What msgspec raises on a body it cannot read (bad syntax, bad UTF-8, nesting too deep).
_NOT_DECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# What turning a decoded msgpack value into JSON text raises (Ext types, odd keys, depth).
_NOT_JSON = (TypeError, ValueError, msgspec.DecodeError, RecursionError)


@dataclass(frozen=True, slots=True)
class InvalidBody:
    """The body is not valid JSON / msgpack (-> 400 invalid_body)."""

    message: str


@dataclass(frozen=True, slots=True)
class InvalidPayload:
    """The payload breaks the schema or a rule (-> 400 invalid_payload)."""

    issues: list[dict]


def decode_batch(
    body: bytes | bytearray, media: Media, *, max_issues: int = 100
) -> Batch | InvalidBody | InvalidPayload:
    """Decode and validate one ingest body. At most ``max_issues`` issues are returned."""
    if not body:
        return InvalidBody("body is empty")
    if media == "json" and not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return InvalidBody(f"body is not valid UTF-8 (byte {exc.start})")
    try:
        batch = _DECODERS[media].decode(body)  # type: ignore[attr-defined]  # a JSON or a msgpack Decoder
    except msgspec.ValidationError as exc:
        batch = integral_floats_as_ints(body, media) if INT_AS_FLOAT in str(exc) else None
        if batch is None:
            return _explain(body, media, exc, _Issues(max_issues, from_json=media == "json"))
    except _NOT_DECODABLE as exc:
        return _invalid_body(media, exc)
    issues = _Issues(max_issues)
    _check_rules(batch, issues)
    _json_texts(batch, media, issues)
    return issues.result() if issues.items else batch


INT_AS_FLOAT = "Expected `int`, got `float`"


def integral_floats_as_ints(body: bytes | bytearray, media: Media) -> Batch | None:
    """The batch with token counts written as integral floats (`12.0`, as JSON Schema counts them
    integers) read as integers; None if it still does not decode. Only on that error's path."""
    try:
        value = ints_in_usage(_GENERIC[media](body))
        encode = msgspec.json.encode if media == "json" else msgspec.msgpack.encode
        return _DECODERS[media].decode(encode(value))  # type: ignore[attr-defined]  # a JSON or a msgpack Decoder
    except (msgspec.ValidationError, *_NOT_DECODABLE, KeyError, TypeError, AttributeError):
        return None


def ints_in_usage(value: Any) -> Any:
    """`value` (a generic batch) with integral float token counts made ints, in place."""
    traces = value.get("traces") if isinstance(value, dict) else None
    for trace in traces if isinstance(traces, list) else ():
        spans = trace.get("spans") if isinstance(trace, dict) else None
        for span in spans if isinstance(spans, list) else ():
            usage = span.get("usage") if isinstance(span, dict) else None
            if isinstance(usage, dict):
                for name, count in usage.items():
                    if isinstance(count, float) and count.is_integer() and abs(count) < 2**63:
                        usage[name] = int(count)
    return value


class _Issues:
    """The issues of one decode, capped at ``cap``; ``full`` once more have been seen."""

    __slots__ = ("cap", "from_json", "full", "items")

    def __init__(self, cap: int, *, from_json: bool = False) -> None:
        self.cap = max(1, cap)
        self.from_json = from_json  # values decoded from JSON: each has a JSON text
        self.items: list[dict] = []
        self.full = False

    def add(self, path: Path, code: str, message: str) -> None:
        if len(self.items) < self.cap:
            self.items.append({"path": path, "code": code, "message": message})
        else:
            self.full = True

    def add_error(self, path: Path, exc: msgspec.ValidationError, hint: str = "") -> None:
        """Add a msgspec error raised while checking the value at ``path``."""
        message, where = _split_error(str(exc))
        self.add([*path, *where], _code(message), message + hint)

    def result(self) -> InvalidPayload:
        if not self.full:
            return InvalidPayload(self.items)
        kept = self.items[: self.cap - 1]
        cut = f"too many issues: only the first {len(kept)} are listed"
        return InvalidPayload([*kept, {"path": [], "code": "too_many_issues", "message": cut}])


# -- cross-field rules (both paths; on the slow path invalid values are None) -------------------


# The range the store's DateTime64(6) column holds; outside it a timestamp would be stored wrong.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2299, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
OUT_OF_RANGE = "timestamp must be between 1900-01-01 and 2299-12-31 (UTC)"


def _check_rules(batch: Batch, issues: _Issues) -> None:
    """End ≥ start, parentId ≠ id, token sums, span ids unique per trace id.

    Hot loop (runs on every valid batch): kept inline; paths are built only on a violation.
    """
    ids_by_trace: dict[str, set[str]] = {}
    for ti, trace in enumerate(batch.traces or ()):
        if issues.full:
            return
        spans = trace.spans or ()
        for si, span in enumerate(spans):
            pid = span.parent_id
            if pid is not None and pid == span.id:
                issues.add(_at(ti, si, "parentId"), "parent_is_self", "parentId equals the span id")
            start, end = span.start_time, span.end_time
            if start is not None and not EARLIEST <= start <= LATEST:
                issues.add(_at(ti, si, "startTime"), "invalid_timestamp", OUT_OF_RANGE)
            if end is not None and not EARLIEST <= end <= LATEST:
                issues.add(_at(ti, si, "endTime"), "invalid_timestamp", OUT_OF_RANGE)
            elif end is not None and start is not None and end < start:
                issues.add(_at(ti, si, "endTime"), "end_before_start", "endTime is before startTime")
            usage = span.usage
            if usage is None:
                continue
            it, cr, cw = usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens
            if it is not None and cr is not None and cw is not None and cr + cw > it:
                message = f"inputTokens ({it}) must include cacheReadTokens + cacheWriteTokens ({cr + cw})"
                issues.add(_at(ti, si, "usage", "inputTokens"), "token_counts", message)
            ot, rt = usage.output_tokens, usage.reasoning_tokens
            if ot is not None and rt is not None and rt > ot:
                message = f"outputTokens ({ot}) must include reasoningTokens ({rt})"
                issues.add(_at(ti, si, "usage", "outputTokens"), "token_counts", message)
        ids = {span.id for span in spans}
        earlier = ids_by_trace.get(trace.id)
        if len(ids) != len(spans) or (earlier is not None and not earlier.isdisjoint(ids)):
            _report_duplicates(trace, ti, earlier or set(), issues)
        if trace.id is not None:
            ids_by_trace[trace.id] = ids | earlier if earlier else ids


def _report_duplicates(trace: Trace, ti: int, seen: set[str], issues: _Issues) -> None:
    seen = set(seen)
    for si, span in enumerate(trace.spans or ()):
        if span.id is None:
            continue
        if span.id in seen:
            message = f"span id {span.id!r} is used more than once in trace {trace.id!r}"
            issues.add(_at(ti, si, "id"), "duplicate_id", message)
        seen.add(span.id)


def _at(ti: int, si: int, *rest: str) -> Path:
    return ["traces", ti, "spans", si, *rest]


# -- input / output as JSON text (fast path) ---------------------------------------------------


def _json_texts(batch: Batch, media: Media, issues: _Issues) -> None:
    """Replace each span's Raw ``input``/``output`` by its JSON text (bytes), or None."""
    if media == "json":  # the Raw is already JSON text: one copy out of the body, no re-encode
        for trace in batch.traces:
            for span in trace.spans:
                text = b"" + span.input  # a copy into bytes; twice as fast as bytes(raw)
                span.input = text if text and text != b"null" else None  # type: ignore[assignment]  # the Raw becomes its JSON text
                text = b"" + span.output
                span.output = text if text and text != b"null" else None  # type: ignore[assignment]
        return
    for ti, trace in enumerate(batch.traces):
        for si, span in enumerate(trace.spans):
            try:
                span.input = _msgpack_to_json(span.input)  # type: ignore[assignment]
                span.output = _msgpack_to_json(span.output)  # type: ignore[assignment]
            except _NOT_JSON:
                _report_not_json(span, _at(ti, si), issues)


def _msgpack_to_json(raw: Raw) -> bytes | None:
    value = _ANY_MSGPACK.decode(raw) if len(raw) else None
    return None if value is None else _JSON.encode(value)


def _report_not_json(span: Span, path: Path, issues: _Issues) -> None:
    """Finish a span whose input or output has no JSON text, reporting which one."""
    for name in ("input", "output"):
        raw = getattr(span, name)
        if not isinstance(raw, Raw):  # converted before the failure
            continue
        try:
            setattr(span, name, _msgpack_to_json(raw))
        except _NOT_JSON as exc:
            setattr(span, name, None)
            issues.add([*path, name], "invalid_value", f"value cannot be represented as JSON: {exc}")


# -- slow path: find every issue by walking the generic value against the Structs -----------


def _explain(
    body: bytes | bytearray, media: Media, first: msgspec.ValidationError, issues: _Issues
) -> InvalidBody | InvalidPayload:
    try:
        value = _GENERIC[media](body)
    except msgspec.ValidationError:  # a JSON number out of range: no walk possible; `first`
        issues.add_error([], first)  # has its path (the generic decode's error has none)
        return issues.result()
    except _NOT_DECODABLE as exc:
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
    except _NOT_JSON as exc:
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


# -- messages ---------------------------------------------------------------------------------

_CODES = (  # msgspec 0.22 message prefix -> issue code; first match wins
    ("Expected `str` of length >=", "too_short"),
    ("Expected `str` of length <=", "too_long"),
    ("Expected `array` of length >=", "too_few"),
    ("Expected `array` of length <=", "too_many"),
    ("Expected `object` of length >=", "too_few"),
    ("Expected `object` of length <=", "too_many"),
    ("Object missing required field", "required"),
    ("Invalid RFC3339", "invalid_timestamp"),
    ("Expected `datetime` with a timezone", "invalid_timestamp"),
)
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[\.\.\.\]")  # `[...]`: a key msgspec omits


def _code(message: str) -> str:
    for prefix, code in _CODES:
        if message.startswith(prefix):
            return code
    return "invalid_type" if ", got `" in message else "invalid_value"


def _split_error(text: str) -> tuple[str, Path]:
    """``"Expected `int` - at `$.a[0]`"`` -> ``("Expected `int`", ["a", 0])``."""
    message, sep, where = text.partition(" - at `")
    if not sep:
        return text, []
    where = where.rstrip("`").removeprefix("key` in `")
    path: Path = []
    for m in _STEP.finditer(where, 1):
        if m[1] is None and m[2] is None:
            break
        path.append(m[1] if m[1] is not None else int(m[2]))
    return message, path


def _invalid_body(media: Media, exc: BaseException) -> InvalidBody:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidBody(f"body is not valid {_MEDIA_NAMES[media]}: a string is not UTF-8")
    if isinstance(exc, RecursionError):
        return InvalidBody(f"body is not valid {_MEDIA_NAMES[media]}: nested too deeply")
    return InvalidBody(f"body is not valid {_MEDIA_NAMES[media]}: {exc}")


def _allowed(tp: Any) -> str:
    if get_origin(tp) is not Literal:
        return ""
    return " (allowed: " + ", ".join(f'"{value}"' for value in get_args(tp)) + ")"


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")
