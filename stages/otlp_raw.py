"""`ExportTraceServiceRequest` read with its attribute lists left as bytes, for `otlp_decode`.

upb builds a Python object for every `KeyValue` and `AnyValue` a span's attributes are read
through; that is most of the cost of decoding a span. `RawRequest` is the same message (its
descriptors are copied from opentelemetry-proto at import) except that `Resource.attributes`,
`Span.attributes` and `Span.Event.attributes` are `repeated bytes`: the same wire format (a
length-delimited field), so upb hands over each `KeyValue`'s encoding as one `bytes`, and
`key_value` reads it. Every other field, and what upb checks about it, is unchanged.

`key_value` reads the form every OTLP exporter writes (key, then a value of one scalar field)
itself, remembers short pairs (the same attribute recurs across spans and requests), and gives
anything else (lists, maps, other field orders, malformed bytes) to upb's own `KeyValue`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

_PACKAGE = "foglamp.otlp_raw"
_COPIED = {  # message -> the file it is copied from
    "ExportTraceServiceRequest": trace_service_pb2,
    "ResourceSpans": trace_pb2,
    "ScopeSpans": trace_pb2,
    "Span": trace_pb2,
    "Resource": resource_pb2,
}
_AS_BYTES = {("Resource", "attributes"), ("Span", "attributes"), ("Event", "attributes")}


def _build() -> Any:
    renamed = {f".{module.DESCRIPTOR.package}.{name}": f".{_PACKAGE}.{name}" for name, module in _COPIED.items()}
    file = descriptor_pb2.FileDescriptorProto(
        name="foglamp/otlp_raw.proto", package=_PACKAGE, syntax="proto3",
        dependency=[trace_pb2.DESCRIPTOR.name, "opentelemetry/proto/common/v1/common.proto"],
    )  # fmt: skip
    for name, module in _COPIED.items():
        message = file.message_type.add()
        module.DESCRIPTOR.message_types_by_name[name].CopyToProto(message)
        _rewrite(message, renamed)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest"))


def _rewrite(message: descriptor_pb2.DescriptorProto, renamed: dict[str, str]) -> None:
    for field in message.field:
        if (message.name, field.name) in _AS_BYTES:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
            continue
        for old, new in renamed.items():  # the copied messages and what is nested in them
            if field.type_name == old or field.type_name.startswith(old + "."):
                field.type_name = new + field.type_name[len(old) :]
    for nested in message.nested_type:
        _rewrite(nested, renamed)


RawRequest: Any = _build()

_STRING, _BOOL, _INT, _DOUBLE, _BYTES = 0x0A, 0x10, 0x18, 0x21, 0x3A  # AnyValue field tags
_DOUBLE_AT = struct.Struct("<d").unpack_from
_PAIRS_MAX = 16384  # remembered pairs (then forgotten all at once)
_PAIR_REMEMBERED = 256  # longest encoding remembered: longer values (messages, text) rarely recur


class _Pairs(dict[bytes, tuple[str, Any]]):
    """Encoded `KeyValue` -> (key, value): short scalar pairs are remembered, the rest read each
    time. A dict, so that a list of pairs becomes a dict in one C call (`attributes`)."""

    def __missing__(self, raw: bytes) -> tuple[str, Any]:
        found = _simple(raw)
        if found is None:
            kv = KeyValue.FromString(raw)
            return kv.key, _value(kv.value)
        if len(raw) <= _PAIR_REMEMBERED:
            if len(self) >= _PAIRS_MAX:
                self.clear()
            self[raw] = found
        return found


PAIRS = _Pairs()
_pair = PAIRS.__getitem__


def key_value(raw: bytes) -> tuple[str, Any]:
    """(key, value) of one encoded `KeyValue`, values as `otlp_decode` gives them. Raises
    UnicodeDecodeError or google.protobuf DecodeError for bytes upb would not have parsed."""
    return _pair(raw)


def attributes(pairs: Sequence[bytes]) -> dict[str, Any]:
    """A list of encoded `KeyValue`s as a dict, in order (a repeated key: the last value, where
    the key came first)."""
    return dict(map(_pair, pairs[:]))  # a upb repeated field slices in C, iterates in Python


def _simple(raw: bytes) -> tuple[str, Any] | None:
    """The pair when `raw` is `key` (field 1) then `value` (field 2) holding one scalar field, each
    once; None for any other form. One-byte lengths (the common case) are read inline."""
    end = len(raw)
    if end < 4 or raw[0] != 0x0A or raw[1] >= 0x80:
        return None
    pos = 2 + raw[1]
    if pos + 2 > end or raw[pos] != 0x12:
        return None
    length = raw[pos + 1]
    if length < 0x80:
        at = pos + 2
    elif pos + 2 < end and raw[pos + 2] < 0x80:  # two bytes: up to 16 KiB
        length, at = (length & 0x7F) | raw[pos + 2] << 7, pos + 3
    else:
        length, at = _varint(raw, pos + 1)
    if length < 2 or at + length != end:
        return None
    key = raw[2:pos].decode()
    tag = raw[at]
    if tag == _STRING or tag == _BYTES:
        length = raw[at + 1]
        if length < 0x80:
            start = at + 2
        elif at + 2 < end and raw[at + 2] < 0x80:
            length, start = (length & 0x7F) | raw[at + 2] << 7, at + 3
        else:
            length, start = _varint(raw, at + 1)
        if start + length != end:
            return None
        return key, raw[start:end].decode() if tag == _STRING else raw[start:end]
    if tag == _INT or tag == _BOOL:
        number, after = _varint(raw, at + 1)
        if after != end or number >= 1 << 64:
            return None
        if tag == _BOOL:
            return key, number != 0
        return key, number - (1 << 64) if number >= 1 << 63 else number
    if tag == _DOUBLE and at + 9 == end:
        return key, _DOUBLE_AT(raw, at + 1)[0]
    return None


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); a varint running past the end reads as one that does not fit."""
    byte = raw[pos] if pos < len(raw) else 0x80
    if byte < 0x80:
        return byte, pos + 1
    value, shift = 0, 0
    while pos < len(raw) and shift < 70:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    return 1 << 70, len(raw) + 1  # fits nowhere: the caller falls back to upb


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind is not None else None
