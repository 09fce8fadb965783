"""`stages.otlp_raw`: attribute lists read from their encoded bytes give exactly what upb's own
`KeyValue` gives, for every form (the exporters' usual one, and any other bytes), and a request
decodes to the same spans as through opentelemetry-proto's `ExportTraceServiceRequest`."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from stages import otlp_raw
from stages.decompress import Undecodable
from stages.otlp_decode import decode_protobuf
from stages.otlp_raw import PAIRS, key_value


def _upb_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_upb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _upb_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _upb(raw: bytes) -> tuple[str, Any] | type[Exception]:
    try:
        kv = KeyValue.FromString(raw)
    except DecodeError:
        return DecodeError
    return kv.key, _upb_value(kv.value)


def _ours(raw: bytes) -> tuple[str, Any] | type[Exception]:
    PAIRS.clear()  # read, not remembered
    try:
        first = key_value(raw)
    except (DecodeError, UnicodeDecodeError):
        return DecodeError
    assert key_value(raw) == first or repr(key_value(raw)) == repr(first)  # remembered: the same
    return first


def _same(raw: bytes) -> None:
    expected, found = _upb(raw), _ours(raw)
    assert repr(found) == repr(expected)  # repr: NaN equals NaN, and True is not 1
    if isinstance(found, tuple) and isinstance(found[1], float) and not math.isnan(found[1]):
        assert struct.pack("<d", found[1]) == struct.pack("<d", expected[1])  # type: ignore[index]


def _kv(key: str, **value: Any) -> bytes:
    kv = KeyValue(key=key)
    if value:
        kv.value.CopyFrom(AnyValue(**value))
    return kv.SerializeToString()


EXPORTER_FORMS = [
    _kv("gen_ai.operation.name", string_value="chat"),
    _kv("k", string_value=""),
    _kv("gen_ai.input.messages", string_value='[{"role": "user", "content": "' + "é" * 300 + '"}]'),
    _kv("ü" * 40, string_value="x"),
    _kv("k" * 200, string_value="long key: a two-byte length"),
    *(_kv("s", string_value="v" * n) for n in (122, 123, 124, 125, 126, 127, 128, 16377, 16378, 16379, 16383, 16384)),
    _kv("y", bytes_value=b"\x00" * 200),  # one- to three-byte lengths, around their bounds
    _kv("n", int_value=0), _kv("n", int_value=1), _kv("n", int_value=-1), _kv("n", int_value=2**63 - 1),
    _kv("n", int_value=-(2**63)), _kv("n", int_value=300),
    _kv("b", bool_value=True), _kv("b", bool_value=False),
    _kv("d", double_value=0.2), _kv("d", double_value=-0.0), _kv("d", double_value=math.inf),
    _kv("d", double_value=math.nan), _kv("d", double_value=1e308),
    _kv("y", bytes_value=b"\x00\xff"), _kv("y", bytes_value=b""),
    _kv("tags", array_value={"values": [AnyValue(string_value="a"), AnyValue(int_value=2)]}),
    _kv("map", kvlist_value={"values": [KeyValue(key="a", value=AnyValue(bool_value=True))]}),
    _kv("empty"), _kv(""), b"", KeyValue(key="k", value=AnyValue()).SerializeToString(),
]  # fmt: skip

OTHER_FORMS = [
    b"\x12\x06\x0a\x04chat\x0a\x01k",  # value before key
    b"\x0a\x01k\x12\x06\x0a\x04chat\x0a\x01j",  # key again after the value
    b"\x0a\x01k\x12\x07\x8a\x00\x04chat",  # a non-minimal tag
    b"\x0a\x01k\x12\x07\x0a\x84\x00chat",  # a non-minimal length
    b"\x0a\x01k\x12\x86\x00\x0a\x04chat",  # a non-minimal length of the value
    b"\x0a\x01k\x12\x86\x80\x00\x0a\x04chat",  # the same in three bytes
    b"\x0a\x01k\x12\x86",  # a length cut short
    b"\x0a\x01k\x12\x03\x18\x80\x00",  # a non-minimal int
    b"\x0a\x01k\x12\x0b\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # -1 as ten bytes
    b"\x0a\x01k\x12\x0b\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # past 64 bits
    b"\x0a\x01k\x12\x02\x10\x02",  # bool 2
    b"\x0a\x01k\x12\x04\x0a\x01a\x18\x05",  # two fields in the value: the last wins
    b"\x0a\x01k\x12\x06\x0a\x04chat\x1a\x00",  # an unknown field in the pair
    b"\x0a\x01k\x12\x06\x0a\x04ch",  # truncated
    b"\x0a\x01k\x12\x03\x0a\x01\xff",  # a value that is not UTF-8
    b"\x0a\x01\xff\x12\x03\x0a\x01a",  # a key that is not UTF-8
    b"\x0a\x01k\x12\x05\x21\x00\x00\x00\x00",  # a short double
    b"\x0a\x01k\x12\x02\x18",  # an int without its varint
    b"\x0a\x01k\x12\x06\x0a\x04chat\x12\x03\x0a\x01b",  # the value twice (merged)
]  # fmt: skip


@pytest.mark.parametrize("raw", EXPORTER_FORMS + OTHER_FORMS)
def test_key_value_reads_what_upb_reads(raw: bytes) -> None:
    _same(raw)


# One scalar value under a key shorter than 128 bytes: what `_simple` reads.
SCALAR_FORMS = [raw for raw in EXPORTER_FORMS if len(raw) >= 4 and raw[1] < 0x80 and KeyValue.FromString(raw)
                .value.WhichOneof("value") not in (None, "array_value", "kvlist_value")]  # fmt: skip


@pytest.mark.parametrize("raw", SCALAR_FORMS)
def test_the_exporters_scalar_pairs_are_read_without_upb(raw: bytes) -> None:
    """The fast path is taken for what exporters send (upb is the fallback: a wrong read there
    would cost speed, not correctness, and show only here)."""
    assert otlp_raw._simple(raw) is not None
    _same(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_key_value_on_any_bytes(raw: bytes) -> None:
    _same(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EXPORTER_FORMS + OTHER_FORMS), st.integers(0, 40), st.binary(min_size=1, max_size=3))
def test_key_value_on_damaged_forms(raw: bytes, at: int, junk: bytes) -> None:
    at = min(at, len(raw))
    _same(raw[:at] + junk + raw[at + 1 :])
    _same(raw[:at])


def _request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "scope"
    span = scope_spans.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat", start_time_unix_nano=5)
    for key, value in [("a", AnyValue(string_value="x")), ("n", AnyValue(int_value=-3)),
                       ("a", AnyValue(bool_value=True)),
                       ("l", AnyValue(array_value={"values": [AnyValue(double_value=1.5)]}))]:  # fmt: skip
        span.attributes.add(key=key, value=value)
    event = span.events.add(name="exception")
    event.attributes.add(key="exception.message", value=AnyValue(string_value="boom"))
    return request


def test_a_request_decodes_as_through_opentelemetry_proto() -> None:
    spans = decode_protobuf(_request().SerializeToString())
    assert not isinstance(spans, Undecodable)
    (span,) = spans
    assert span.attributes == {"a": True, "n": -3, "l": [1.5]}
    assert list(span.attributes) == ["a", "n", "l"]  # order as sent, a repeated key where it came first
    assert span.resource == {"service.name": "svc"}
    assert span.events == [("exception", {"exception.message": "boom"})]


def test_an_attribute_upb_would_refuse_refuses_the_body() -> None:
    body = _request().SerializeToString().replace(b"\x0a\x01x", b"\x0a\x01\xff")  # "a" = "x" -> not UTF-8
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(body)
    found = decode_protobuf(body)
    assert isinstance(found, Undecodable)
    assert found.message.startswith("body is not a valid ExportTraceServiceRequest protobuf")
