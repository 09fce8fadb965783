"""GET /openapi.json: the OpenAPI 3.1 document of the ingest API (also what GET /docs renders).

The batch's JSON Schema is generated from the same msgspec types the validate stage decodes with
(`stages.payload`), so the document cannot drift from what the node accepts. Every answer carries
an example (`stages.openapi_examples`), so the reference page shows what each status looks like.
A path is one entry of `paths` in `openapi_document`, built from `_response`/`_json_answer`.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from stages.openapi_examples import ANSWERS, INVALID_BATCH, VALID_BATCH
from stages.openapi_otlp import otlp_paths
from stages.payload import Batch

_REF = "#/components/schemas/{name}"
_HEADER = "#/components/headers/{name}"
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

DESCRIPTION = """\
Send LLM traces to this node. `POST /ingest` takes one batch (payload v1) as JSON or msgpack,
optionally gzip- or zstd-compressed, authorised with an API key from `run.py keys create`
(`Authorization: Bearer <key>` or `X-API-Key: <key>`). A 202 means the batch is in the node's
write-ahead spool: it will be stored, even across a crash. Checks run in this order: draining,
key, media type, size, rate limit, then the payload; the first failure answers.
"""
CROSS_FIELD_RULES = (
    "startTime and endTime between 1900-01-01T00:00:00Z and 2299-12-31T23:59:59Z (invalid_timestamp)",
    "endTime not before startTime (end_before_start)",
    "parentId not equal to the span's id (parent_is_self)",
    "inputTokens >= cacheReadTokens + cacheWriteTokens, outputTokens >= reasoningTokens (token_counts)",
    "span ids unique within a trace id, across the batch (duplicate_id)",
    "input and output representable as JSON: msgpack only (invalid_value)",
)


def _error(code: str, extra: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    props = {"error": {"type": "string", "const": code}, **(extra or {})}
    return {"type": "object", "properties": props, "required": ["error", *required]}


def _response(description: str, *schemas: dict[str, Any], headers: tuple[str, ...] = (),
              examples: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """A JSON answer: its schema (oneOf when several), the named `ANSWERS` as examples, and
    headers by name from components/headers."""
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": list(schemas)}
    content: dict[str, Any] = {"schema": schema}
    if examples:
        content["examples"] = {name: ANSWERS[name] for name in examples}
    response: dict[str, Any] = {"description": description, "content": {"application/json": content}}
    if headers:
        response["headers"] = {h: {"$ref": _HEADER.format(name=h)} for h in headers}
    return response


def _headers() -> dict[str, Any]:
    def integer(description: str) -> dict[str, Any]:
        return {"description": description, "schema": {"type": "integer", "minimum": 0}}

    return {
        # The limit is the key's requests per second: a whole number, or a decimal when configured so.
        "X-RateLimit-Limit": {"description": "Requests per second allowed for this key",
                              "schema": {"type": "number", "minimum": 0}},  # fmt: skip
        "X-RateLimit-Remaining": integer("Requests left in the key's bucket right now"),
        "X-RateLimit-Reset": integer("Seconds until the bucket is full again"),
        "Retry-After": integer("Seconds to wait before retrying"),
        "WWW-Authenticate": {"description": "Always `Bearer`", "schema": {"type": "string"}},
    }


def _ingest(batch_schema: dict[str, Any]) -> dict[str, Any]:
    examples = {"valid": VALID_BATCH, "invalid": INVALID_BATCH}
    body = {"application/json": {"schema": batch_schema, "examples": examples},
            "application/msgpack": {"schema": batch_schema}}  # fmt: skip
    issues = {"type": "array", "maxItems": 100, "items": {"$ref": _REF.format(name="Issue")}}
    return {
        "summary": "Ingest a batch of traces",
        "description": "Stores a batch of traces and their spans, priced. Send the `valid` example as is.",
        "operationId": "ingest",
        "tags": ["ingest"],
        "security": [{"bearer": []}, {"apiKey": []}],
        "parameters": [{"name": "Content-Encoding", "in": "header", "required": False,
                        "description": "Compression of the body (`identity` when absent)",
                        "schema": {"type": "string", "enum": ["identity", "gzip", "zstd"]}}],  # fmt: skip
        "requestBody": {"required": True, "content": body},
        "responses": {
            "202": _response("Accepted into the write-ahead spool: `accepted` spans will be stored",
                             {"type": "object", "required": ["accepted"],
                              "properties": {"accepted": {"type": "integer", "minimum": 0}}},
                             headers=RATE_LIMIT_HEADERS, examples=("accepted",)),  # fmt: skip
            "400": _response("Invalid body (not JSON/msgpack, not an object) or invalid payload: each issue has "
                             "the path of the offending value from the batch root",
                             _error("invalid_body", {"message": {"type": "string"}}, ("message",)),
                             _error("invalid_payload", {"issues": issues}, ("issues",)),
                             examples=("invalid_body", "invalid_payload")),  # fmt: skip
            "401": _response("Missing, malformed, unknown or revoked key", _error("unauthorized"),
                             headers=("WWW-Authenticate",), examples=("unauthorized",)),  # fmt: skip
            "408": _response("The body did not arrive within its deadline; the connection closes",
                             _error("request_timeout"), examples=("request_timeout",)),  # fmt: skip
            "413": _response("Body or decompressed body larger than the node's limit (bytes); the connection closes",
                             _error("payload_too_large", {"limit": {"type": "integer"}}, ("limit",)),
                             examples=("payload_too_large",)),  # fmt: skip
            "415": _response("Unsupported Content-Type or Content-Encoding", _error("unsupported_media_type"),
                             examples=("unsupported_media_type",)),  # fmt: skip
            "429": _response("`rate_limited`: over the key's requests per second, retry after `Retry-After`; "
                             "`quota_exceeded`: the organisation's monthly span quota is used up",
                             _error("rate_limited"), _error("quota_exceeded"),
                             headers=("Retry-After", *RATE_LIMIT_HEADERS),
                             examples=("rate_limited", "quota_exceeded")),  # fmt: skip
            "503": _response("`draining`: the node is shutting down (the connection closes), retry on another; "
                             "`overloaded`: retry after `Retry-After`",
                             _error("draining"), _error("overloaded"), headers=("Retry-After",),
                             examples=("draining", "overloaded")),  # fmt: skip
        },
    }


def _probes() -> dict[str, Any]:
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    return {
        "/healthz": {"get": {
            "summary": "Liveness", "operationId": "healthz", "tags": ["operations"],
            "responses": {"200": _response("The process runs", status, examples=("ok",))}}},
        "/readyz": {"get": {
            "summary": "Readiness", "operationId": "readyz", "tags": ["operations"],
            "description": "200 when the node accepts batches; 503 while draining or when storage is degraded.",
            "responses": {"200": _response("Ready", status, examples=("ready",)),
                          "503": _response("Draining or degraded", status, examples=("not_ready",))}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics", "operationId": "metrics", "tags": ["operations"],
            "responses": {"200": {"description": "Prometheus text exposition format 0.0.4",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }  # fmt: skip


@functools.cache
def openapi_document() -> dict[str, Any]:
    (batch_schema,), components = msgspec.json.schema_components([Batch], ref_template=_REF)
    components["Issue"] = {
        "type": "object",
        "required": ["path", "code", "message"],
        "properties": {
            "path": {"type": "array", "items": {"type": ["string", "integer"]}},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    # What the schema cannot say: the rules across fields, checked after it (stages/validate.py).
    components["Batch"]["description"] = (components["Batch"].get("description", "") + "\n\nRules beyond "
                                          "this schema (400 invalid_payload): " + "; ".join(CROSS_FIELD_RULES))
    components["Batch"]["x-cross-field-rules"] = list(CROSS_FIELD_RULES)  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "Foglamp ingest API", "version": "1", "description": DESCRIPTION},
        # Relative: the node that serves this document (and the /docs page's own origin).
        "servers": [{"url": "/", "description": "This node"}],
        "paths": {"/ingest": {"post": _ingest(batch_schema)}, **otlp_paths(), **_probes()},
        "components": {
            "schemas": components,
            "headers": _headers(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
