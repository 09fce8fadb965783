"""Answers of `POST /v1/traces` in the request's encoding (OTLP.md §1): `ExportTraceServiceResponse`
on success (with `partial_success` when some spans were unusable) and `google.rpc.Status` for
errors, as protobuf or as OTLP JSON. Plain functions, no I/O.

`google.rpc.Status` is two fields (code = 1, message = 2); it is encoded here by hand so that the
node does not need googleapis-common-protos for one message.
"""

from __future__ import annotations

from typing import Any

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

PROTOBUF, JSON = "otlp-protobuf", "otlp-json"
CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}

# HTTP status -> gRPC code (google.rpc.Code) of the Status body.
_GRPC_CODES = {400: 3, 401: 16, 404: 5, 413: 8, 415: 3, 429: 8, 503: 14}
_json = msgspec.json.Encoder()


def otlp_media_of(content_type: str | None) -> str | None:
    """`application/x-protobuf` -> "otlp-protobuf", `application/json; charset=utf-8` ->
    "otlp-json"; parameters are ignored; None when unsupported (-> 415)."""
    if not content_type:
        return None
    return MEDIA_TYPES.get(content_type.partition(";")[0].strip().lower())


def answer_media(content_type: str | None) -> str:
    """The encoding of the answer: the request's, else JSON (a client that sent neither has no
    protobuf types at hand)."""
    return otlp_media_of(content_type) or JSON


def success(media: str, rejected: int = 0, message: str = "") -> bytes:
    if media == PROTOBUF:
        response = ExportTraceServiceResponse()
        if rejected or message:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
        return response.SerializeToString()
    if not (rejected or message):
        return b"{}"
    return _json.encode({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}})


def status(media: str, http_status: int, message: str) -> bytes:
    code = _GRPC_CODES.get(http_status, 2)  # 2: UNKNOWN
    if media == PROTOBUF:
        text = message.encode()
        return b"\x08" + _varint(code) + (b"\x12" + _varint(len(text)) + text if text else b"")
    return _json.encode({"code": code, "message": message})


def error_message(body: dict[str, Any]) -> str:
    """A v1 error body (`{"error": ..., ...}`) as one sentence for a Status message."""
    error = body.get("error", "error")
    if "message" in body:
        return f"{error}: {body['message']}"
    if "limit" in body:
        return f"{error}: the body is larger than {body['limit']} bytes"
    if "issues" in body:
        issues = "; ".join(f"{issue.get('path')}: {issue.get('message')}" for issue in body["issues"][:5])
        return f"{error}: {issues}"
    return str(error)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
