"""OTLP decoding (protobuf and JSON into one form), the answers, deflate, and `check_otlp`."""

from __future__ import annotations

import base64
import json
import math
import zlib

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline.jobs import Rejected
from stages.decompress import Undecodable, decompress
from stages.otlp import Partial, check_otlp
from stages.otlp_answer import JSON, PROTOBUF, otlp_media_of, status, success
from stages.otlp_decode import check_backend, decode_json, decode_protobuf

TRACE, SPAN, PARENT = bytes(range(1, 17)), bytes(range(1, 9)), bytes(range(9, 17))


def request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    resource_spans = req.resource_spans.add()
    kv = resource_spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bot"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = "lib", "1.0"
    span = scope_spans.spans.add()
    span.trace_id, span.span_id, span.parent_span_id, span.name = TRACE, SPAN, PARENT, "chat"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_000_000_000, 2_000_000_000
    span.status.code, span.status.message = 2, "boom"
    span.dropped_attributes_count = 3
    for key, kind, value in [("s", "string_value", "x"), ("i", "int_value", 2**62), ("b", "bool_value", True),
                             ("d", "double_value", 0.5), ("y", "bytes_value", b"\x01")]:  # fmt: skip
        kv = span.attributes.add()
        kv.key = key
        setattr(kv.value, kind, value)
    kv = span.attributes.add()
    kv.key = "a"
    kv.value.array_value.values.add().int_value = 1
    kv = span.attributes.add()
    kv.key = "m"
    inner = kv.value.kvlist_value.values.add()
    inner.key, inner.value.string_value = "k", "v"
    event = span.events.add()
    event.name = "exception"
    kv = event.attributes.add()
    kv.key, kv.value.string_value = "exception.message", "bad"
    return req


JSON_REQUEST = {"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
    "scopeSpans": [{"scope": {"name": "lib", "version": "1.0"}, "spans": [{
        "traceId": TRACE.hex().upper(), "spanId": SPAN.hex(), "parentSpanId": PARENT.hex(), "name": "chat",
        "kind": 3, "startTimeUnixNano": "1000000000", "endTimeUnixNano": 2000000000,
        "status": {"code": 2, "message": "boom"}, "droppedAttributesCount": 3, "futureField": {"x": 1},
        "attributes": [
            {"key": "s", "value": {"stringValue": "x"}}, {"key": "i", "value": {"intValue": str(2**62)}},
            {"key": "b", "value": {"boolValue": True}}, {"key": "d", "value": {"doubleValue": 0.5}},
            {"key": "y", "value": {"bytesValue": base64.b64encode(b"\x01").decode()}},
            {"key": "a", "value": {"arrayValue": {"values": [{"intValue": 1}]}}},
            {"key": "m", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}}],
        "events": [{"name": "exception", "timeUnixNano": "5",
                    "attributes": [{"key": "exception.message", "value": {"stringValue": "bad"}}]}]}]}]}]}  # fmt: skip


def test_protobuf_and_json_decode_to_the_same_spans() -> None:
    from_pb = decode_protobuf(request().SerializeToString())
    from_json = decode_json(json.dumps(JSON_REQUEST).encode())
    assert isinstance(from_pb, list) and from_pb == from_json
    span = from_pb[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE.hex(), SPAN.hex(), PARENT.hex())
    assert span.path == "resourceSpans[0].scopeSpans[0].spans[0]"
    assert span.attributes == {"s": "x", "i": 2**62, "b": True, "d": 0.5, "y": b"\x01", "a": [1], "m": {"k": "v"}}
    assert (span.status_code, span.status_message, span.dropped_attributes) == (2, "boom", 3)
    assert span.events == [("exception", {"exception.message": "bad"})]
    assert span.resource == {"service.name": "bot"} and (span.scope_name, span.scope_version) == ("lib", "1.0")


def test_json_special_doubles_and_enum_names() -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab", "status": {"code": "STATUS_CODE_OK"},
            "attributes": [{"key": "n", "value": {"doubleValue": "NaN"}},
                           {"key": "inf", "value": {"doubleValue": "-Infinity"}},
                           {"key": "q", "value": {"doubleValue": "1.5"}}]}]}]}]}  # fmt: skip
    span = decode_json(json.dumps(body).encode())[0]  # type: ignore[index]
    assert math.isnan(span.attributes["n"]) and span.attributes["inf"] == -math.inf and span.status_code == 1
    assert span.attributes["q"] == 1.5
    assert isinstance(decode_json(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "x", '
                                  b'"value": {"doubleValue": "many"}}]}]}]}]}'), Undecodable)


def test_undecodable_bodies() -> None:
    body = request().SerializeToString()
    assert isinstance(decode_protobuf(body[:-5]), Undecodable)
    assert isinstance(decode_json(b"{"), Undecodable)
    assert isinstance(decode_json(b'{"resourceSpans": 3}'), Undecodable)
    assert isinstance(decode_json(b'{"resourceLogs": [{}]}'), Undecodable)
    assert decode_protobuf(b"") == [] and decode_json(b"{}") == []


def test_check_otlp_partial_and_rejections() -> None:
    req = request()
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(req.resource_spans[0].scope_spans[0].spans[0])
    bad.span_id = b""
    partial = Partial()
    batch = check_otlp(req.SerializeToString(), PROTOBUF, "identity", 10_000, partial)
    assert not isinstance(batch, Rejected) and len(batch.traces) == 1
    assert partial.rejected == 1 and "spans[1]: invalid span id" in partial.message
    assert check_otlp(b"\xff\xff", PROTOBUF, "identity", 10_000).status == 400  # type: ignore[union-attr]
    assert check_otlp(b"{}" + b" " * 100, JSON, "identity", 10).status == 413  # type: ignore[union-attr]


def test_deflate_zlib_and_raw() -> None:
    data = b"x" * 1000
    raw = zlib.compressobj(wbits=-15)
    assert decompress(zlib.compress(data), "deflate", 2000) == data
    assert decompress(raw.compress(data) + raw.flush(), "deflate", 2000) == data
    assert isinstance(decompress(b"\x78\x9c\x00garbage", "deflate", 2000), Undecodable)


def test_answers_decode_with_the_client_types() -> None:
    assert ExportTraceServiceResponse.FromString(success(PROTOBUF)) == ExportTraceServiceResponse()
    partial = ExportTraceServiceResponse.FromString(success(PROTOBUF, 2, "two bad"))
    assert (partial.partial_success.rejected_spans, partial.partial_success.error_message) == (2, "two bad")
    assert json.loads(success(JSON, 2, "x")) == {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "x"}}
    assert Status.FromString(status(PROTOBUF, 429, "slow down " * 30)).code == 8
    assert Status.FromString(status(PROTOBUF, 400, "")) == Status(code=3)
    assert json.loads(status(JSON, 503, "busy")) == {"code": 14, "message": "busy"}


def test_media_types() -> None:
    assert otlp_media_of("application/x-protobuf") == PROTOBUF
    assert otlp_media_of("Application/JSON; charset=latin-1") == JSON
    assert otlp_media_of("application/msgpack") is None and otlp_media_of(None) is None


def test_upb_backend_in_use() -> None:
    assert check_backend() is None
