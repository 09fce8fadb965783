"""Decoding and validation of an ingest body (SPEC §2). Pure functions, no I/O.

``decode_batch(body, media)`` returns a ``Batch``, or the reason it is refused as a value:
``InvalidBody`` (not JSON / msgpack, not UTF-8, not an object at the root -> 400 invalid_body)
or ``InvalidPayload`` (every schema / rule violation -> 400 invalid_payload).

How (one schema, in ``stages.payload``):
1. Fast path (this module): ``msgspec`` decodes the body straight into ``Batch`` (per-field
   constraints are ``Meta`` annotations), then ``stages.validate_rules`` checks the cross-field
   rules and ``_json_texts`` turns ``Span.input`` / ``Span.output`` into JSON text.
2. Only when msgspec raises ``ValidationError`` (it stops at the first error):
   ``stages.validate_walk`` finds every issue with its path (``stages.validate_issues``).

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

import msgspec
from msgspec import Raw

from stages.payload import Batch, Span
from stages.validate_issues import InvalidBody, InvalidPayload, Media, Path
from stages.validate_issues import Issues as _Issues
from stages.validate_issues import invalid_body as _invalid_body
from stages.validate_rules import EARLIEST, LATEST, OUT_OF_RANGE, _at, _check_rules, ints_in_usage
from stages.validate_walk import GENERIC as _GENERIC
from stages.validate_walk import NOT_DECODABLE as _NOT_DECODABLE
from stages.validate_walk import NOT_JSON as _NOT_JSON
from stages.validate_walk import explain as _explain

__all__ = [
    "EARLIEST",
    "LATEST",
    "OUT_OF_RANGE",
    "InvalidBody",
    "InvalidPayload",
    "Media",
    "Path",
    "decode_batch",
    "integral_floats_as_ints",
    "ints_in_usage",
]

_DECODERS = {"json": msgspec.json.Decoder(Batch), "msgpack": msgspec.msgpack.Decoder(Batch)}
_ANY_MSGPACK = msgspec.msgpack.Decoder()
_JSON = msgspec.json.Encoder()


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


# -- input / output as JSON text (fast path) ---------------------------------------------------


def _json_texts(batch: Batch, media: Media, issues: _Issues) -> None:
    """Replace each span's Raw ``input``/``output`` by its JSON text (bytes), or None."""
    if media == "json":  # the Raw is already JSON text: one copy out of the body, no re-encode
        for trace in batch.traces:
            for span in trace.spans:
                text = b"" + span.input  # a copy into bytes, cheaper than bytes(raw)
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
