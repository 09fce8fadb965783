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
from dataclasses import dataclass
from typing import Any

import msgspec

from stages.otlp_decode import Attributes, OtlpSpan
from stages.otlp_io import IO_KEYS, IO_PREFIXES, extract_input, extract_output, jsonable
from stages.payload import Cost, Span, SpanKind, SpanStatus, Trace, Usage

KINDS = frozenset({"llm", "embedding", "tool", "retrieval", "agent", "chain", "custom"})
AGGREGATE_KINDS = frozenset({"agent", "chain"})  # usage summed over children: not priced
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EARLIEST_NS = -2208988800 * 10**9  # 1900-01-01, as stages.validate.EARLIEST
_LATEST_NS = 10413791999 * 10**9  # 2299-12-31T23:59:59
_MAX_TOKENS = 2**53 - 1
_HEX_DIGITS = "0123456789abcdef"
_ZEROS = {32: "0" * 32, 16: "0" * 16}  # all-zero ids, by length
_STATUS: dict[int, SpanStatus] = {0: "unset", 1: "ok", 2: "error"}
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

_OPENINFERENCE_KINDS: dict[str, SpanKind] = {"LLM": "llm", "EMBEDDING": "embedding", "TOOL": "tool",
                        "RETRIEVER": "retrieval", "RERANKER": "retrieval", "AGENT": "agent",
                        "CHAIN": "chain"}  # fmt: skip
_OPERATION_KINDS: dict[str, SpanKind] = {"chat": "llm", "text_completion": "llm", "generate_content": "llm",
                    "embeddings": "embedding", "execute_tool": "tool", "retrieval": "retrieval",
                    "invoke_agent": "agent", "create_agent": "agent", "invoke_workflow": "chain"}  # fmt: skip
_TRACELOOP_KINDS: dict[str, SpanKind] = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
_REQUEST_TYPES: dict[str, SpanKind] = {"chat": "llm", "completion": "llm", "embedding": "embedding",
                                       "rerank": "retrieval"}  # fmt: skip

# Column values from attributes: key -> (field, precedence, converter to a usable value or None).
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
                 "total_tokens")  # fmt: skip
_GROUPS: tuple[tuple[str, tuple[str, ...], Any], ...] = (
    ("user_id", USER, "str"), ("session_id", SESSION, "str"), ("environment", ENVIRONMENT, "str"),
    ("tags", TAGS, "tags"), ("model", MODEL, "str"), ("provider", PROVIDER, "provider"),
    ("input_tokens", INPUT_TOKENS, "int"), ("output_tokens", OUTPUT_TOKENS, "int"),
    ("cache_read_tokens", CACHE_READ, "int"), ("cache_write_tokens", CACHE_WRITE, "int"),
    ("reasoning_tokens", REASONING, "int"), ("total_tokens", TOTAL_TOKENS, "int"), ("cost", COST, "cost"),
    ("trace_name", ("foglamp.trace.name",), "str"), ("release", ("foglamp.release",), "str"),
)  # fmt: skip

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


def map_span(span: OtlpSpan, root_name: str = "", cache: dict[int, Any] | None = None) -> Trace | Problem:
    """One span as a one-span Trace, or why it cannot be stored. `cache` (one per request) keeps
    what a resource contributes, computed once for all its spans."""
    reason = usable(span)
    if reason is not None:
        return Problem(span.path, reason)
    attrs, resource = span.attributes, span.resource
    view = _resource_view(resource, cache)
    scan = _scan(attrs)
    fields = {**view.fields, **scan.fields} if view.fields else scan.fields
    model = _cut(fields.get("model"), "model")
    usage = _usage(fields)
    kind = kind_of(attrs, model, usage)
    cost = fields.get("cost")
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
        provider=_cut(fields.get("provider"), "provider"),
        usage=usage,
        cost=Cost(total=cost) if cost is not None else None,
        attributes=_attributes(span, scan.others, view.attributes),
    )
    out.input = extract_input(attrs, span.events, scan.io_prefixes)  # type: ignore[assignment]  # JSON text, as decode_batch leaves it
    out.output = extract_output(attrs, span.events, scan.io_prefixes)  # type: ignore[assignment]
    name = fields.get("trace_name") or (span.name if parent is None else root_name)
    return Trace(
        id=span.trace_id,
        name=_cut(name, "trace_name"),
        user_id=_cut(fields.get("user_id"), "user_id"),
        session_id=_cut(fields.get("session_id"), "session_id"),
        environment=_cut(fields.get("environment"), "environment") or "default",
        release=_cut(fields.get("release") or _str(resource.get("service.version")), "release"),
        tags=fields.get("tags"),
        metadata=_metadata(attrs.get("metadata"), view.metadata, scan.metadata),
        spans=[out],
    )


@dataclass(slots=True)
class _Scan:
    """What one pass over an attribute set finds (`_scan`)."""

    fields: dict[str, Any]  # column values, each from its highest-precedence usable key
    others: dict[str, Any]  # the attributes not mapped to a column, as scalars, in order
    metadata: list[tuple[str, Any]]  # `foglamp.trace.metadata.*` (prefix removed), in order
    io_prefixes: set[str]  # the flattened input/output families present (otlp_io.IO_PREFIXES)


@dataclass(slots=True)
class _ResourceView:
    fields: dict[str, Any]  # column values from the resource's attributes
    attributes: dict[str, Any]  # its attributes under `resource.`
    metadata: list[tuple[str, Any]]


_NO_RESOURCE = _ResourceView({}, {}, [])


def _resource_view(resource: Attributes, cache: dict[int, Any] | None) -> _ResourceView:
    """What a resource contributes to each of its spans, computed once per request."""
    if not resource:
        return _NO_RESOURCE
    if cache is not None:
        hit = cache.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
    scan = _scan(resource)
    view = _ResourceView(scan.fields, {"resource." + key: _scalar(value) for key, value in resource.items()},
                         scan.metadata)  # fmt: skip
    if cache is not None:
        cache[id(resource)] = (resource, view)
    return view


# Key classes of `_scan` (a column's key is classed by its `_INDEX` slot instead).
_SKIP, _OTHER, _META = -1, -2, -3  # mapped or input/output; kept in `attributes`; metadata
_META_PREFIX = "foglamp.trace.metadata."
_KEY_CLASSES: dict[str, Any] = {}
_KEY_CLASSES_MAX = 8192  # distinct keys remembered: a bound on what clients can make it hold
_KEY_REMEMBERED = 256  # longest key remembered


def _key_class(key: str) -> Any:
    slot = _INDEX.get(key)
    if slot is not None:
        found: Any = slot
    elif key in _MAPPED or key in IO_KEYS:
        found = _SKIP
    elif key.startswith(IO_PREFIXES):
        found = next(i for i, prefix in enumerate(IO_PREFIXES) if key.startswith(prefix))
    elif key.startswith(_META_PREFIX):
        found = _META
    else:
        found = _OTHER
    if len(_KEY_CLASSES) < _KEY_CLASSES_MAX and len(key) <= _KEY_REMEMBERED:
        _KEY_CLASSES[key] = found
    return found


def _scan(attrs: Attributes) -> _Scan:
    """One pass over an attribute set: its column values, its other attributes, its metadata and
    which input/output families it has. Keys are classed once (a table), not per span."""
    fields: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    others: dict[str, Any] = {}
    metadata: list[tuple[str, Any]] = []
    io_prefixes: set[str] = set()
    classes = _KEY_CLASSES
    for key, value in attrs.items():
        found = classes.get(key)
        if found is None:
            found = _key_class(key)
        if found == _OTHER:
            others[key] = _scalar(value)
        elif type(found) is tuple:
            field, rank, convert = found
            if ranks.get(field, 99) <= rank:
                continue
            converted = convert(value)
            if converted is not None:
                fields[field] = converted
                ranks[field] = rank
        elif found == _META:
            metadata.append((key[len(_META_PREFIX) :], _scalar(value)))
        elif found >= 0:
            io_prefixes.add(IO_PREFIXES[found])
    return _Scan(fields, others, metadata, io_prefixes)


def collect(attrs: Attributes) -> dict[str, Any]:
    """Column values from one attribute set, each from its highest-precedence key whose value is usable."""
    return _scan(attrs).fields


# --------------------------------------------------------------------------- columns
def kind_of(attrs: Attributes, model: str | None, usage: Usage | None) -> SpanKind:
    """The v1 kind of a span, first matching rule wins (OTLP.md §2)."""
    value = _str(attrs.get("foglamp.span.kind"))
    if value and value.lower() in KINDS:
        return value.lower()  # type: ignore[return-value]  # one of KINDS
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
    return _usage({**collect(resource), **collect(attrs)})


def _usage(fields: dict[str, Any]) -> Usage | None:
    get = fields.get
    found_input, found_output = get("input_tokens"), get("output_tokens")
    cache_read, cache_write = get("cache_read_tokens"), get("cache_write_tokens")
    reasoning, total = get("reasoning_tokens"), get("total_tokens")
    if found_input is None and found_output is None and cache_read is None and cache_write is None \
            and reasoning is None and total is None:  # fmt: skip
        return None
    input_tokens, output_tokens = found_input or 0, found_output or 0
    cache_read, cache_write, reasoning = cache_read or 0, cache_write or 0, reasoning or 0
    if cache_read + cache_write > input_tokens:  # input reported without cache
        input_tokens += cache_read + cache_write
    if reasoning > output_tokens:  # output reported without reasoning
        output_tokens += reasoning
    if total:
        if found_input is None and found_output is not None:
            input_tokens = max(input_tokens, total - output_tokens)
        elif found_output is None and found_input is not None:
            output_tokens = max(output_tokens, total - input_tokens)
    return Usage(input_tokens=min(input_tokens, _MAX_TOKENS), output_tokens=min(output_tokens, _MAX_TOKENS),
                 cache_read_tokens=min(cache_read, _MAX_TOKENS), cache_write_tokens=min(cache_write, _MAX_TOKENS),
                 reasoning_tokens=min(reasoning, _MAX_TOKENS))  # fmt: skip


def _provider(value: Any) -> str | None:
    """A provider id of the price table, or None for a value that names no provider."""
    text = _str(value)
    if not text:
        return None
    normal = text.strip().lower()
    if normal in _NOT_PROVIDERS:
        return None
    return _PROVIDERS.get(normal, normal)


def _tags(value: Any) -> list[str] | None:
    tags = [_cut(str(tag), "tag") or "" for tag in _as_list(value) if str(tag)][:_MAX_TAGS]
    return tags or None


def _cost(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1e12:
        return float(value)  # NaN fails the range check
    return None


def _metadata(raw: Any, from_resource: list[tuple[str, Any]], own: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """OpenInference `metadata` (a JSON object), then `foglamp.trace.metadata.*` of the resource,
    then of the span: the span's own values win."""
    metadata: dict[str, Any] = {}
    if isinstance(raw, str):
        parsed = _loads(raw)
        if isinstance(parsed, dict):
            metadata.update({str(k): _scalar(v) for k, v in parsed.items()})
    elif isinstance(raw, dict):
        metadata.update({str(k): _scalar(v) for k, v in raw.items()})
    metadata.update(from_resource)
    metadata.update(own)
    return metadata or None


def _attributes(span: OtlpSpan, others: dict[str, Any], resource_attributes: dict[str, Any]) -> dict[str, Any]:
    """Every span attribute not mapped to a column (`others`), resource attributes under
    `resource.`, scope name/version under `scope.`, values as scalars (lists and maps as JSON text)."""
    out = others
    out.update(resource_attributes)
    if span.scope_name:
        out["scope.name"] = span.scope_name
    if span.scope_version:
        out["scope.version"] = span.scope_version
    if span.dropped_attributes:
        out["otel.dropped_attributes_count"] = span.dropped_attributes
    return out


def nanos_to_datetime(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(0, 0, ns // 1000)


# --------------------------------------------------------------------------- helpers
def _is_root(parent: str) -> bool:
    return not parent or not parent.strip("0")


def _valid_id(value: str, length: int) -> bool:
    return len(value) == length and value != _ZEROS[length] and not value.strip(_HEX_DIGITS)


def _exception_message(events: list[tuple[str, Attributes]]) -> str:
    for name, attrs in events:
        if name == "exception":
            return _str(attrs.get("exception.message")) or _str(attrs.get("exception.type")) or ""
    return ""


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
    kind = type(value)
    if kind is str or kind is bool:  # the common cases first, by exact type
        return value
    if isinstance(value, str | bool | int):
        return value if not isinstance(value, int) or abs(value) <= 2**63 - 1 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if value is None:
        return ""
    return _json.encode(jsonable(value)).decode()


_CONVERTERS = {"str": _str, "int": _int, "tags": _tags, "provider": _provider, "cost": _cost}
_INDEX: dict[str, tuple[str, int, Any]] = {
    key: (field, rank, _CONVERTERS[kind]) for field, keys, kind in _GROUPS for rank, key in enumerate(keys)
}
