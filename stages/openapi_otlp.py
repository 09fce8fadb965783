"""The `/v1/traces` part of `/openapi.json` (OTLP.md): media types, answers, and the `foglamp.*`
span attributes a user can set. Bodies are protobuf messages of opentelemetry-proto; the
schemas below describe their OTLP JSON form."""

from __future__ import annotations

from typing import Any

import msgspec

from stages.openapi_examples import ANSWERS
from stages.otlp_answer import error_message, status

# The attributes a user sets on a span (or its resource) to fill Foglamp's columns.
FOGLAMP_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "foglamp.trace.name": ("string", "trace name (default: the root span's name)"),
    "foglamp.user.id": ("string", "user id"),
    "foglamp.session.id": ("string", "session id"),
    "foglamp.environment": ("string", "environment (default: deployment.environment.name, else `default`)"),
    "foglamp.release": ("string", "release (default: resource service.version)"),
    "foglamp.trace.tags": ("string[]", "tags: a string array, a JSON list string or a comma list"),
    "foglamp.trace.metadata.<key>": ("scalar", "one metadata entry per attribute"),
    "foglamp.span.kind": ("string", "llm, embedding, tool, retrieval, agent, chain or custom"),
    "foglamp.cost.total": ("number", "the span's cost in USD; overrides pricing"),
}

_MEDIA = ("application/x-protobuf", "application/json")
_PARTIAL_EXAMPLE = "1 span rejected: resourceSpans[0].scopeSpans[0].spans[3]: span id must be 8 bytes, not all zero"
_STATUS = {"type": "object", "description": "google.rpc.Status",
           "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}  # fmt: skip
_RESPONSE = {"type": "object", "description": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse",
             "properties": {"partialSuccess": {"type": "object", "properties": {
                 "rejectedSpans": {"type": "string", "description": "int64"},
                 "errorMessage": {"type": "string", "description": "the first problems, by span path"}}}}}  # fmt: skip


def _status_example(http_status: int, answer: str) -> dict[str, Any]:
    """What the node answers in OTLP JSON for the v1 answer named `answer` (stages.openapi_examples)."""
    value = msgspec.json.decode(status("json", http_status, error_message(ANSWERS[answer]["value"])))
    return {"summary": ANSWERS[answer].get("summary", answer), "value": value}


def _answer(description: str, schema: dict[str, Any], headers: tuple[str, ...] = (),
            examples: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    content: dict[str, Any] = {media: {"schema": schema} for media in _MEDIA}
    if examples:
        content["application/json"]["examples"] = examples
    answer: dict[str, Any] = {"description": description, "content": content}
    if headers:
        answer["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return answer


def _errors(http_status: int, *answers: str) -> dict[str, dict[str, Any]]:
    return {name: _status_example(http_status, name) for name in answers}


def otlp_paths() -> dict[str, Any]:
    attributes = "\n".join(f"- `{name}` ({kind}): {text}" for name, (kind, text) in FOGLAMP_ATTRIBUTES.items())
    traces = {
        "summary": "Ingest OpenTelemetry traces (OTLP/HTTP)",
        "operationId": "otlpTraces",
        "tags": ["ingest"],
        "description": (
            "An `ExportTraceServiceRequest` as protobuf or OTLP JSON; the answer is in the request's "
            "encoding. Spans are mapped to Foglamp spans from the GenAI semantic conventions, "
            "OpenInference, OpenLLMetry and the Vercel AI SDK, and priced like `/ingest` spans. "
            "Span or resource attributes a user can set:\n" + attributes
        ),
        "security": [{"bearer": []}, {"apiKey": []}],
        "parameters": [{"name": "Content-Encoding", "in": "header", "required": False,
                        "schema": {"enum": ["identity", "gzip", "deflate", "zstd"]}}],  # fmt: skip
        "requestBody": {"required": True, "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary",
                                                  "description": "ExportTraceServiceRequest"}},
            "application/json": {"schema": {"type": "object", "description": "ExportTraceServiceRequest (OTLP JSON)",
                                            "properties": {"resourceSpans": {"type": "array"}}}}}},  # fmt: skip
        "responses": {
            "200": _answer("Every stored span is in the spool on disk; unusable spans (bad ids, end before "
                           "start) are counted in partialSuccess", _RESPONSE,
                           ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
                           {"all": {"summary": "Every span stored", "value": {}},
                            "partial": {"summary": "Some spans unusable", "value": {"partialSuccess": {
                                "rejectedSpans": "1", "errorMessage": _PARTIAL_EXAMPLE}}}}),  # fmt: skip
            "400": _answer("The body does not decode (or is another signal's payload)", _STATUS,
                           examples=_errors(400, "invalid_body")),  # fmt: skip
            "401": _answer("Missing, malformed, unknown or revoked key", _STATUS, ("WWW-Authenticate",),
                           _errors(401, "unauthorized")),  # fmt: skip
            "413": _answer("Body or decompressed body too large", _STATUS, examples=_errors(413, "payload_too_large")),
            "415": _answer("Unsupported Content-Type or Content-Encoding", _STATUS,
                           examples=_errors(415, "unsupported_media_type")),  # fmt: skip
            "429": _answer("Rate limited (with Retry-After) or monthly quota exceeded (without)", _STATUS,
                           ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
                           _errors(429, "rate_limited", "quota_exceeded")),  # fmt: skip
            "503": _answer("Draining or overloaded (Retry-After)", _STATUS, ("Retry-After",),
                           _errors(503, "draining", "overloaded")),  # fmt: skip
        },
    }

    def other(signal: str) -> dict[str, Any]:
        message = f"this node accepts OTLP traces only (POST /v1/traces), not {signal}"
        example = {"summary": "Not a traces endpoint", "value": {"code": 5, "message": message}}
        return {"post": {"summary": f"Not accepted: OTLP {signal} (this node takes traces only)",
                         "operationId": f"otlp{signal.title()}", "tags": ["ingest"],
                         "responses": {"404": _answer("Not a traces endpoint", _STATUS,
                                                      examples={"404": example})}}}  # fmt: skip

    return {"/v1/traces": {"post": traces}, "/v1/metrics": other("metrics"), "/v1/logs": other("logs")}
