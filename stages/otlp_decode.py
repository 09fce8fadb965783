"""OTLP/HTTP trace bodies (OTLP.md §1) decoded into one plain intermediate form, `OtlpSpan`.

Two decoders, one output: `decode_protobuf` parses `ExportTraceServiceRequest` with
opentelemetry-proto's descriptors on protobuf's upb backend (attribute lists as bytes, read by
`stages.otlp_raw.key_value`) and reads the message fields directly (no
`MessageToDict`, no `json_format`: those cost ~150 µs a span and expect base64 ids);
`decode_json` reads OTLP JSON with typed msgspec Structs (hex ids, 64-bit integers as strings or
numbers, enums as integers, "NaN" doubles, unknown fields ignored). Plain functions, no I/O.
A body that does not decode at all is an `Undecodable` value (-> 400), never an exception.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import msgspec
from google.protobuf.message import DecodeError

from stages.decompress import Undecodable
from stages.otlp_raw import PAIRS, RawRequest, attributes

Attributes = dict[str, Any]  # values: str, bool, int, float, bytes, list, dict (kvlist)


class OtlpSpan(msgspec.Struct, gc=False):
    """One OTLP span with what it inherits from its resource and scope. Ids are lowercase hex
    as sent (checked by the mapping, not here); times are Unix nanoseconds (0: absent).
    A Struct: built in C, positionally, by the decoders (a dataclass's `__init__` is Python)."""

    path: str  # "resourceSpans[0].scopeSpans[1].spans[2]": how problems name the span
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    dropped_attributes: int
    events: list[tuple[str, Attributes]]
    status_code: int
    status_message: str
    resource: Attributes  # shared by every span of its resource
    scope_name: str
    scope_version: str


# --------------------------------------------------------------------------- protobuf
def decode_protobuf(body: bytes | bytearray) -> list[OtlpSpan] | Undecodable:
    try:
        request = RawRequest.FromString(bytes(body))
        spans = _pb_spans(request)
    except (DecodeError, RuntimeError, ValueError) as exc:  # UnicodeDecodeError: an attribute's text
        return Undecodable(f"body is not a valid ExportTraceServiceRequest protobuf: {exc}")
    if spans and all(not span.trace_id and not span.span_id for span in spans):
        # What a logs or metrics request parses to: its records where spans would be, no ids.
        return Undecodable("body has no span with ids: it is not an OTLP traces request (a logs or "
                           "metrics payload?); this node accepts traces only")
    return spans


def _pb_spans(request: Any) -> list[OtlpSpan]:
    """The spans of a `stages.otlp_raw.RawRequest` (attribute lists as encoded `KeyValue`s)."""
    spans: list[OtlpSpan] = []
    pair = PAIRS.__getitem__  # `attributes`, inlined for spans
    for ri, resource_spans in enumerate(request.resource_spans):
        resource = attributes(resource_spans.resource.attributes)
        for si, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope
            scope_name, scope_version = scope.name, scope.version
            path = f"resourceSpans[{ri}].scopeSpans[{si}].spans["
            for pi, span in enumerate(scope_spans.spans):
                status = span.status
                events = span.events
                spans.append(OtlpSpan(
                    f"{path}{pi}]",
                    span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name,
                    span.start_time_unix_nano, span.end_time_unix_nano,
                    dict(map(pair, span.attributes[:])), span.dropped_attributes_count,
                    [(event.name, attributes(event.attributes)) for event in events] if events else [],
                    status.code, status.message, resource, scope_name, scope_version,
                ))  # fmt: skip
    return spans


# --------------------------------------------------------------------------- OTLP JSON
class _J(msgspec.Struct, gc=False, omit_defaults=True):
    """OTLP JSON objects: lowerCamelCase names as declared, unknown fields ignored."""


class JArray(_J):
    values: list[JAnyValue] = []


class JKeyValue(_J):
    key: str = ""
    value: JAnyValue | None = None


class JKvList(_J):
    values: list[JKeyValue] = []


class JAnyValue(_J):
    stringValue: str | None = None  # noqa: N815 (wire names)
    boolValue: bool | None = None  # noqa: N815
    intValue: int | str | None = None  # noqa: N815
    doubleValue: float | str | None = None  # noqa: N815
    arrayValue: JArray | None = None  # noqa: N815
    kvlistValue: JKvList | None = None  # noqa: N815
    bytesValue: str | None = None  # noqa: N815


class JEvent(_J):
    name: str = ""
    attributes: list[JKeyValue] = []


class JStatus(_J):
    code: int | str = 0
    message: str = ""


class JSpan(_J):
    traceId: str = ""  # noqa: N815
    spanId: str = ""  # noqa: N815
    parentSpanId: str = ""  # noqa: N815
    name: str = ""
    startTimeUnixNano: int | str = 0  # noqa: N815
    endTimeUnixNano: int | str = 0  # noqa: N815
    attributes: list[JKeyValue] = []
    droppedAttributesCount: int = 0  # noqa: N815
    events: list[JEvent] = []
    status: JStatus | None = None


class JScope(_J):
    name: str = ""
    version: str = ""


class JScopeSpans(_J):
    scope: JScope | None = None
    spans: list[JSpan] = []


class JResource(_J):
    attributes: list[JKeyValue] = []


class JResourceSpans(_J):
    resource: JResource | None = None
    scopeSpans: list[JScopeSpans] = []  # noqa: N815


class JRequest(_J):
    resourceSpans: list[JResourceSpans] = []  # noqa: N815
    resourceLogs: list[Any] | None = None  # noqa: N815 (another signal: refused, see decode_json)
    resourceMetrics: list[Any] | None = None  # noqa: N815


_JSON_REQUEST = msgspec.json.Decoder(JRequest)
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_json(body: bytes | bytearray) -> list[OtlpSpan] | Undecodable:
    try:
        request = _JSON_REQUEST.decode(body)
    except msgspec.ValidationError as exc:
        return Undecodable(f"body is not a valid OTLP JSON ExportTraceServiceRequest: {exc}")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Undecodable(f"body is not valid JSON: {exc}")
    if not request.resourceSpans and (request.resourceLogs or request.resourceMetrics):
        signal = "logs" if request.resourceLogs else "metrics"
        return Undecodable(f"body is an OTLP {signal} request, not traces: this node accepts traces only")
    try:
        return _json_spans(request)
    except ValueError as exc:  # an int64 string that is not a number
        return Undecodable(f"body is not a valid OTLP JSON ExportTraceServiceRequest: {exc}")


def _json_spans(request: JRequest) -> list[OtlpSpan]:
    spans: list[OtlpSpan] = []
    for ri, resource_spans in enumerate(request.resourceSpans):
        res = resource_spans.resource
        resource = _j_attributes(res.attributes) if res is not None else {}
        for si, scope_spans in enumerate(resource_spans.scopeSpans):
            scope = scope_spans.scope or JScope()
            for pi, span in enumerate(scope_spans.spans):
                status = span.status or JStatus()
                code = status.code if isinstance(status.code, int) else _STATUS_NAMES.get(status.code, 0)
                spans.append(OtlpSpan(
                    f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]",
                    span.traceId.lower(), span.spanId.lower(), span.parentSpanId.lower(), span.name,
                    int(span.startTimeUnixNano), int(span.endTimeUnixNano),
                    _j_attributes(span.attributes), span.droppedAttributesCount,
                    [(event.name, _j_attributes(event.attributes)) for event in span.events],
                    code, status.message, resource, scope.name, scope.version,
                ))  # fmt: skip
    return spans


def _j_attributes(pairs: list[JKeyValue]) -> Attributes:
    return {kv.key: _j_value(kv.value) for kv in pairs}


def _j_value(value: JAnyValue | None) -> Any:
    if value is None:
        return None
    if value.stringValue is not None:
        return value.stringValue
    if value.boolValue is not None:
        return value.boolValue
    if value.intValue is not None:
        return int(value.intValue)
    if value.doubleValue is not None:
        double = value.doubleValue
        if isinstance(double, str):  # proto3 JSON: "NaN", "Infinity", "-Infinity" or a quoted number
            special = _SPECIAL_DOUBLES.get(double)
            return special if special is not None else float(double)
        return float(double)
    if value.arrayValue is not None:
        return [_j_value(item) for item in value.arrayValue.values]
    if value.kvlistValue is not None:
        return _j_attributes(value.kvlistValue.values)
    if value.bytesValue is not None:
        try:
            return base64.b64decode(value.bytesValue)
        except ValueError:
            return value.bytesValue
    return None


def check_backend() -> str | None:
    """None when protobuf runs on its upb backend, else why the node must not start."""
    from google.protobuf.internal import api_implementation

    backend = api_implementation.Type()
    if backend == "upb":
        return None
    return (f"protobuf is using its {backend!r} backend, not 'upb': OTLP decoding would be ~200x "
            "slower. Reinstall protobuf from a binary wheel and unset "
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION.")  # fmt: skip
