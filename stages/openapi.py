"""GET /openapi.json: the OpenAPI 3.1 document of the ingest API.

The batch's JSON Schema is generated from the same msgspec types the validate stage decodes with
(`stages.payload`), so the document cannot drift from what the node accepts.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from stages.payload import Batch

_REF = "#/components/schemas/{name}"
CROSS_FIELD_RULES = (
    "startTime and endTime between 1900-01-01T00:00:00Z and 2299-12-31T23:59:59Z (invalid_timestamp)",
    "endTime not before startTime (end_before_start)",
    "parentId not equal to the span's id (parent_is_self)",
    "inputTokens >= cacheReadTokens + cacheWriteTokens, outputTokens >= reasoningTokens (token_counts)",
    "span ids unique within a trace id, across the batch (duplicate_id)",
    "input and output representable as JSON: msgpack only (invalid_value)",
)


def _error(code: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {"error": {"type": "string", "const": code}, **(extra or {})}
    return {"type": "object", "properties": props, "required": ["error"]}


def _response(description: str, *schemas: dict[str, Any], headers: tuple[str, ...] = ()) -> dict:
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": list(schemas)}
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": schema}}}  # fmt: skip
    if headers:
        response["headers"] = {h: {"schema": {"type": "string"}} for h in headers}
    return response


@functools.cache
def openapi_document() -> dict[str, Any]:
    (batch_schema,), components = msgspec.json.schema_components([Batch], ref_template=_REF)
    issue = {
        "type": "object",
        "required": ["path", "code", "message"],
        "properties": {
            "path": {"type": "array", "items": {"type": ["string", "integer"]}},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    components["Issue"] = issue
    # What the schema cannot say: the rules across fields, checked after it (stages/validate.py).
    components["Batch"]["description"] = (components["Batch"].get("description", "") + "\n\nRules beyond "
                                          "this schema (400 invalid_payload): " + "; ".join(CROSS_FIELD_RULES))
    components["Batch"]["x-cross-field-rules"] = list(CROSS_FIELD_RULES)  # fmt: skip
    body = {"application/json": {"schema": batch_schema}, "application/msgpack": {"schema": batch_schema}}
    ingest = {
        "summary": "Ingest a batch of traces",
        "security": [{"bearer": []}, {"apiKey": []}],
        "parameters": [{"name": "Content-Encoding", "in": "header", "required": False,
                        "schema": {"enum": ["identity", "gzip", "zstd"]}}],  # fmt: skip
        "requestBody": {"required": True, "content": body},
        "responses": {
            "202": _response("Accepted into the write-ahead spool", {
                "type": "object", "properties": {"accepted": {"type": "integer"}}}),  # fmt: skip
            "400": _response("Invalid body or payload",
                             _error("invalid_body", {"message": {"type": "string"}}),
                             _error("invalid_payload", {"issues": {
                                 "type": "array", "maxItems": 100, "items": {"$ref": _REF.format(name="Issue")}}}),
                             ),  # fmt: skip
            "401": _response("Missing, malformed, unknown or revoked key", _error("unauthorized"),
                             headers=("WWW-Authenticate",)),  # fmt: skip
            "408": _response("The body did not arrive in time (Connection: close)", _error("request_timeout")),
            "413": _response("Body or decompressed body too large",
                             _error("payload_too_large", {"limit": {"type": "integer"}})),  # fmt: skip
            "415": _response("Unsupported Content-Type or Content-Encoding", _error("unsupported_media_type")),
            "429": _response("Rate limited (with Retry-After) or monthly quota exceeded (without)",
                             _error("rate_limited"), _error("quota_exceeded"),
                             headers=("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                                      "X-RateLimit-Reset")),  # fmt: skip
            "503": _response("Draining (Connection: close) or overloaded (Retry-After)",
                             _error("draining"), _error("overloaded"), headers=("Retry-After",)),
        },
    }
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Foglamp ingest API", "version": "1"},
        "paths": {
            "/ingest": {"post": ingest},
            "/healthz": {"get": {"responses": {"200": _response("The process runs", status)}}},
            "/readyz": {"get": {"responses": {"200": _response("Ready", status),
                                              "503": _response("Draining or degraded", status)}}},  # fmt: skip
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text exposition"}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
