"""One OTLP span (with its resource and scope) -> the v1 `Trace`/`Span` the price stage and
`stages.rows.span_row` consume (OTLP.md §2). Plain functions, no I/O.

Each OTLP span becomes a one-span `Trace`: the trace-level columns (user, session, environment,
...) come from that span's own attributes, so spans of one trace may be sent in any requests.
A span that cannot be stored (bad ids, end before start) is a `Problem`; everything else is stored,
with over-long strings truncated rather than refused.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from stages.otlp_decode import Attributes, OtlpSpan
from stages.otlp_io import extract_input, extract_output, is_io_key
from stages.payload import Cost, Span, Trace, Usage

KINDS = frozenset({"llm", "embedding", "tool", "retrieval", "agent", "chain", "custom"})
AGGREGATE_KINDS = frozenset({"agent", "chain"})  # usage summed over children: not priced
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EARLIEST_NS = -2208988800 * 10**9  # 1900-01-01, as stages.validate.EARLIEST
_LATEST_NS = 10413791999 * 10**9  # 2299-12-31T23:59:59
_MAX_TOKENS = 2**53 - 1
_HEX = re.compile(r"[0-9a-f]*")
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_json = msgspec.json.Encoder()

# Limits of stages.payload (a Trace/Span built here is never re-validated): cut, don't refuse.
_LIMITS = {"name": 512, "trace_name": 512, "user_id": 256, "session_id": 256, "environment": 64,
           "release": 128, "tag": 128, "model": 256, "provider": 64}  # fmt: skip
_MAX_TAGS = 50

USER = ("foglamp.user.id", "user.id", "ai.telemetry.metadata.userId",
        "traceloop.association.properties.user_id")  # fmt: skip
SESSION = ("foglamp.session.id", "session.id", "gen_ai.conversation.id",
           "ai.telemetry.metadata.sessionId", "traceloop.association.properties.session_id")  # fmt: skip
ENVIRONMENT = ("foglamp.environment", "deployment.environment.name", "deployment.environment")
TAGS = ("foglamp.trace.tags", "tag.tags", "ai.telemetry.metadata.tags")
MODEL = ("gen_ai.response.model", "llm.response.model_name", "llm.model_name", "ai.response.model",
         "gen_ai.request.model", "ai.model.id", "embedding.model_name")  # fmt: skip
PROVIDER = ("gen_ai.provider.name", "llm.provider", "gen_ai.system", "llm.system", "ai.model.provider")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "llm.token_count.prompt", "gen_ai.usage.prompt_tokens",
                "ai.usage.inputTokens", "ai.usage.promptTokens")  # fmt: skip
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "llm.token_count.completion",
                 "gen_ai.usage.completion_tokens", "ai.usage.outputTokens",
                 "ai.usage.completionTokens")  # fmt: skip
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
              "llm.token_count.prompt_details.cache_read",
              "ai.usage.inputTokenDetails.cacheReadTokens", "ai.usage.cachedInputTokens")  # fmt: skip
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
               "llm.token_count.prompt_details.cache_write",
               "ai.usage.inputTokenDetails.cacheWriteTokens")  # fmt: skip
REASONING = ("gen_ai.usage.reasoning.output_tokens", "llm.token_count.completion_details.reasoning",
             "gen_ai.usage.reasoning_tokens", "llm.usage.reasoning_tokens",
             "ai.usage.outputTokenDetails.reasoningTokens", "ai.usage.reasoningTokens")  # fmt: skip
TOTAL_TOKENS = ("gen_ai.usage.total_tokens", "llm.token_count.total", "ai.usage.totalTokens")
COST = ("foglamp.cost.total", "gen_ai.usage.cost", "llm.cost.total", "operation.cost")

# Provider names emitters send that are not the price table's ids (the table's own aliases,
# stages.price._ALIASES, take care of the rest); values that name a framework, not a provider.
_PROVIDERS = {"openai.chat": "openai", "openai.responses": "openai", "gcp.vertex_ai": "google",
              "gcp.gemini": "google", "gcp.gen_ai": "google", "aws.bedrock": "aws",
              "azure.ai.openai": "azure", "azure.ai.inference": "azure", "mistral_ai": "mistral",
              "x_ai": "xai"}  # fmt: skip
_NOT_PROVIDERS = frozenset({"langchain", "llamaindex", "llama_index", "gcp.vertex.agent", "crewai",
                            "haystack", "dspy", "openinference", "traceloop"})  # fmt: skip

_OPENINFERENCE_KINDS = {"LLM": "llm", "EMBEDDING": "embedding", "TOOL": "tool",
                        "RETRIEVER": "retrieval", "RERANKER": "retrieval", "AGENT": "agent",
                        "CHAIN": "chain"}  # fmt: skip
_OPERATION_KINDS = {"chat": "llm", "text_completion": "llm", "generate_content": "llm",
                    "embeddings": "embedding", "execute_tool": "tool", "retrieval": "retrieval",
                    "invoke_agent": "agent", "create_agent": "agent", "invoke_workflow": "chain"}  # fmt: skip
_TRACELOOP_KINDS = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
_REQUEST_TYPES = {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "retrieval"}

# Attributes that became columns: not repeated in `attributes`.
_MAPPED = frozenset({*USER, *SESSION, *ENVIRONMENT, *TAGS, *MODEL, *PROVIDER, *INPUT_TOKENS,
                     *OUTPUT_TOKENS, *CACHE_READ, *CACHE_WRITE, *REASONING, *TOTAL_TOKENS, *COST,
                     "foglamp.trace.name", "foglamp.release", "foglamp.span.kind", "metadata"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one span cannot be stored; `path` names it in the request."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def usable(span: OtlpSpan) -> str | None:
    """None when the span can be stored, else the reason it cannot."""
    if not _valid_id(span.trace_id, 32):
        return f"invalid trace id {span.trace_id[:64]!r}: must be 16 bytes, not all zero"
    if not _valid_id(span.span_id, 16):
        return f"invalid span id {span.span_id[:64]!r}: must be 8 bytes, not all zero"
    if span.parent_span_id and not _is_root(span.parent_span_id) and not _valid_id(span.parent_span_id, 16):
        return f"invalid parent span id {span.parent_span_id[:64]!r}: must be 8 bytes"
    if span.parent_span_id == span.span_id:
        return "parent span id equals the span id"
    start, end = span.start_ns or span.end_ns, span.end_ns
    if not start:
        return "startTimeUnixNano and endTimeUnixNano are both 0"
    for value in (start, end):
        if value and not _EARLIEST_NS <= value <= _LATEST_NS:
            return "timestamp must be between 1900-01-01 and 2299-12-31 (UTC)"
    if end and end < start:
        return "endTimeUnixNano is before startTimeUnixNano"
    return None


def map_span(span: OtlpSpan, root_name: str = "") -> Trace | Problem:
    reason = usable(span)
    if reason is not None:
        return Problem(span.path, reason)
    attrs, resource = span.attributes, span.resource
    model = _cut(_text(attrs, resource, MODEL), "model")
    usage = usage_of(attrs, resource)
    kind = kind_of(attrs, model, usage)
    cost = _number(attrs, resource, COST)
    status_message = span.status_message or _exception_message(span.events)
    parent = None if _is_root(span.parent_span_id) else span.parent_span_id
    out = Span(
        id=span.span_id,
        parent_id=parent,
        name=_cut(span.name, "name") or "",
        kind=kind,
        start_time=nanos_to_datetime(span.start_ns or span.end_ns),
        end_time=nanos_to_datetime(span.end_ns) if span.end_ns else None,
        status=_STATUS.get(span.status_code, "unset"),
        status_message=status_message or None,
        model=model,
        provider=_cut(provider_of(attrs, resource), "provider"),
        usage=usage,
        cost=Cost(total=cost) if cost is not None and 0 <= cost <= 1e12 else None,
        attributes=attributes_of(span),
    )
    out.input = extract_input(attrs, span.events)
    out.output = extract_output(attrs, span.events)
    name = _text(attrs, resource, ("foglamp.trace.name",)) or (span.name if parent is None else root_name)
    return Trace(
        id=span.trace_id,
        name=_cut(name, "trace_name"),
        user_id=_cut(_text(attrs, resource, USER), "user_id"),
        session_id=_cut(_text(attrs, resource, SESSION), "session_id"),
        environment=_cut(_text(attrs, resource, ENVIRONMENT), "environment") or "default",
        release=_cut(_text(attrs, resource, ("foglamp.release",)) or _str(resource.get("service.version")),
                     "release"),  # fmt: skip
        tags=tags_of(attrs, resource),
        metadata=metadata_of(attrs, resource),
        spans=[out],
    )


# --------------------------------------------------------------------------- columns
def kind_of(attrs: Attributes, model: str | None, usage: Usage | None) -> str:
    """The v1 kind of a span, first matching rule wins (OTLP.md §2)."""
    value = _str(attrs.get("foglamp.span.kind"))
    if value and value.lower() in KINDS:
        return value.lower()
    value = _str(attrs.get("openinference.span.kind"))
    if value:
        return _OPENINFERENCE_KINDS.get(value.upper(), "custom")
    value = _str(attrs.get("gen_ai.operation.name"))
    if value and value in _OPERATION_KINDS:
        return _OPERATION_KINDS[value]
    value = _str(attrs.get("traceloop.span.kind"))
    if value and value in _TRACELOOP_KINDS:
        return _TRACELOOP_KINDS[value]
    value = _str(attrs.get("llm.request.type"))
    if value and value in _REQUEST_TYPES:
        return _REQUEST_TYPES[value]
    operation = _str(attrs.get("ai.operationId"))
    if operation and operation.startswith("ai."):
        if operation.endswith((".doGenerate", ".doStream")):
            return "llm"
        if operation.startswith("ai.embed") and operation.endswith(".doEmbed"):
            return "embedding"
        if operation == "ai.toolCall":
            return "tool"
        if operation in ("ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject"):
            return "chain"
    if attrs.get("gen_ai.tool.name") not in (None, ""):
        return "tool"
    if model and usage is not None:
        return "llm"
    return "custom"


def usage_of(attrs: Attributes, resource: Attributes) -> Usage | None:
    """Token counts with the two repairs and the total-tokens fill; None when none is given."""
    found = [_count(attrs, resource, keys) for keys in (INPUT_TOKENS, OUTPUT_TOKENS, CACHE_READ,
                                                          CACHE_WRITE, REASONING, TOTAL_TOKENS)]  # fmt: skip
    if all(value is None for value in found):
        return None
    input_tokens, output_tokens, cache_read, cache_write, reasoning, total = (v or 0 for v in found)
    if cache_read + cache_write > input_tokens:  # input reported without cache
        input_tokens += cache_read + cache_write
    if reasoning > output_tokens:  # output reported without reasoning
        output_tokens += reasoning
    if total:
        if found[0] is None and found[1] is not None:
            input_tokens = max(input_tokens, total - output_tokens)
        elif found[1] is None and found[0] is not None:
            output_tokens = max(output_tokens, total - input_tokens)
    clamp = lambda n: min(n, _MAX_TOKENS)  # noqa: E731
    return Usage(input_tokens=clamp(input_tokens), output_tokens=clamp(output_tokens),
                 cache_read_tokens=clamp(cache_read), cache_write_tokens=clamp(cache_write),
                 reasoning_tokens=clamp(reasoning))  # fmt: skip


def provider_of(attrs: Attributes, resource: Attributes) -> str | None:
    for source in (attrs, resource):
        for key in PROVIDER:
            value = _str(source.get(key))
            if not value:
                continue
            normal = value.strip().lower()
            if normal in _NOT_PROVIDERS:
                continue
            return _PROVIDERS.get(normal, normal)
    return None


def tags_of(attrs: Attributes, resource: Attributes) -> list[str] | None:
    for source in (attrs, resource):
        for key in TAGS:
            value = source.get(key)
            tags = _as_list(value)
            if tags:
                return [_cut(str(tag), "tag") or "" for tag in tags if str(tag)][:_MAX_TAGS]
    return None


def metadata_of(attrs: Attributes, resource: Attributes) -> dict[str, Any] | None:
    metadata: dict[str, Any] = {}
    raw = attrs.get("metadata")
    if isinstance(raw, str):
        parsed = _loads(raw)
        if isinstance(parsed, dict):
            metadata.update({str(k): _scalar(v) for k, v in parsed.items()})
    elif isinstance(raw, dict):
        metadata.update({str(k): _scalar(v) for k, v in raw.items()})
    for source in (resource, attrs):  # the span's own values win
        for key, value in source.items():
            if key.startswith("foglamp.trace.metadata."):
                metadata[key.removeprefix("foglamp.trace.metadata.")] = _scalar(value)
    return metadata or None


def attributes_of(span: OtlpSpan) -> dict[str, Any]:
    """Every span attribute not mapped to a column, resource attributes under `resource.`,
    scope name/version under `scope.`, values as scalars (lists and maps as JSON text)."""
    out = {key: _scalar(value) for key, value in span.attributes.items()
           if key not in _MAPPED and not is_io_key(key) and not key.startswith("foglamp.trace.metadata.")}  # fmt: skip
    for key, value in span.resource.items():
        out["resource." + key] = _scalar(value)
    if span.scope_name:
        out["scope.name"] = span.scope_name
    if span.scope_version:
        out["scope.version"] = span.scope_version
    if span.dropped_attributes:
        out["otel.dropped_attributes_count"] = span.dropped_attributes
    return out


def nanos_to_datetime(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


# --------------------------------------------------------------------------- helpers
def _is_root(parent: str) -> bool:
    return not parent or not parent.strip("0")


def _valid_id(value: str, length: int) -> bool:
    return len(value) == length and _HEX.fullmatch(value) is not None and value.strip("0") != ""


def _exception_message(events: list[tuple[str, Attributes]]) -> str:
    for name, attrs in events:
        if name == "exception":
            return _str(attrs.get("exception.message")) or _str(attrs.get("exception.type")) or ""
    return ""


def _text(attrs: Attributes, resource: Attributes, keys: tuple[str, ...]) -> str | None:
    for source in (attrs, resource):
        for key in keys:
            value = _str(source.get(key))
            if value:
                return value
    return None


def _count(attrs: Attributes, resource: Attributes, keys: tuple[str, ...]) -> int | None:
    for source in (attrs, resource):
        for key in keys:
            value = _int(source.get(key))
            if value is not None:
                return value
    return None


def _number(attrs: Attributes, resource: Attributes, keys: tuple[str, ...]) -> float | None:
    for source in (attrs, resource):
        for key in keys:
            value = source.get(key)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    continue
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def _cut(value: str | None, field: str) -> str | None:
    limit = _LIMITS[field]
    return value[:limit] if value is not None and len(value) > limit else value


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [v for v in value if v is not None]
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("["):
            parsed = _loads(text)
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in text.split(",") if part.strip()]
    return []


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _scalar(value: Any) -> str | int | float | bool:
    """An attribute value for the v1 `ScalarMap`: scalars as they are, the rest as JSON text."""
    if isinstance(value, str | bool | int):
        return value if not isinstance(value, int) or abs(value) <= 2**63 - 1 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if value is None:
        return ""
    return _json.encode(_jsonable(value)).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
