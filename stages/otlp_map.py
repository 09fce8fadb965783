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
_TIMEDELTA = dt.timedelta
_EARLIEST_NS = -2208988800 * 10**9  # 1900-01-01, as stages.validate.EARLIEST
_LATEST_NS = 10413791999 * 10**9  # 2299-12-31T23:59:59
_MAX_TOKENS = 2**53 - 1
_HEX_DIGITS = "0123456789abcdef"
_HEX_BYTES = _HEX_DIGITS.encode()
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16  # all-zero ids
_STATUS: dict[int, SpanStatus] = {0: "unset", 1: "ok", 2: "error"}
_json = msgspec.json.Encoder()

# Limits of stages.payload (a Trace/Span built here is never re-validated): cut, don't refuse.
_LIMITS = {"name": 512, "trace_name": 512, "user_id": 256, "session_id": 256, "environment": 64,
           "release": 128, "tag": 128, "model": 256, "provider": 64}  # fmt: skip
_MAX_TAGS = 50
_NAME_MAX = _LIMITS["name"]  # == the trace name's: a root's trace name is its (cut) span name

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
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    # The usual span passes one test: right lengths, ids not zero or equal, and every character of
    # the three ids lowercase hex (one C pass over their bytes: under half the cost of three
    # `str.strip`s). Anything else is named by `_id_problem`.
    ids = trace_id + span_id + parent
    if len(trace_id) != 32 or len(span_id) != 16 or (parent and len(parent) != 16) or parent == span_id \
            or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN or not ids.isascii() \
            or ids.encode().translate(None, _HEX_BYTES):  # fmt: skip
        reason = _id_problem(trace_id, span_id, parent)
        if reason is not None:
            return reason
    end = span.end_ns
    start = span.start_ns or end
    if not start:
        return "startTimeUnixNano and endTimeUnixNano are both 0"
    if not _EARLIEST_NS <= start <= _LATEST_NS or (end and not _EARLIEST_NS <= end <= _LATEST_NS):
        return "timestamp must be between 1900-01-01 and 2299-12-31 (UTC)"
    if end and end < start:
        return "endTimeUnixNano is before startTimeUnixNano"
    return None


def _id_problem(trace_id: str, span_id: str, parent: str) -> str | None:
    """What is wrong with a span's ids, if anything (`usable`'s checks one by one)."""
    if len(trace_id) != 32 or trace_id == _ZERO_TRACE or trace_id.strip(_HEX_DIGITS):
        return f"invalid trace id {trace_id[:64]!r}: must be 16 bytes, not all zero"
    if len(span_id) != 16 or span_id == _ZERO_SPAN or span_id.strip(_HEX_DIGITS):
        return f"invalid span id {span_id[:64]!r}: must be 8 bytes, not all zero"
    if parent and parent.strip("0") and (len(parent) != 16 or parent.strip(_HEX_DIGITS)):
        return f"invalid parent span id {parent[:64]!r}: must be 8 bytes"
    if parent == span_id:
        return "parent span id equals the span id"
    return None


def map_span(span: OtlpSpan, root_name: str = "", cache: dict[int, Any] | None = None) -> Trace | Problem:
    """One span as a one-span Trace, or why it cannot be stored. `cache` (one per request) keeps
    what a resource contributes, computed once for all its spans."""
    reason = usable(span)
    if reason is not None:
        return Problem(span.path, reason)
    attrs, events = span.attributes, span.events
    view = _resource_view(span.resource, cache)
    fields, others, metadata, io = _scan(attrs)
    if view.fields:
        fields = {**view.fields, **fields}
    get = fields.get  # string columns come cut to their limits (`_scan`)
    model = get("model")
    usage = _usage(fields)
    cost = get("cost")
    status_message = span.status_message or (_exception_message(events) if events else "")
    parent: str | None = span.parent_span_id
    if not parent or not parent.strip("0"):
        parent = None
    name = span.name
    if len(name) > _NAME_MAX:
        name = name[:_NAME_MAX]
    end_ns = span.end_ns
    others.update(view.attributes)
    if span.scope_name:
        others["scope.name"] = span.scope_name
    if span.scope_version:
        others["scope.version"] = span.scope_version
    if span.dropped_attributes:
        others["otel.dropped_attributes_count"] = span.dropped_attributes
    out = Span(
        id=span.span_id,
        parent_id=parent,
        name=name,
        kind=kind_of(attrs, model, usage),
        start_time=_EPOCH + _TIMEDELTA(0, 0, (span.start_ns or end_ns) // 1000),
        end_time=_EPOCH + _TIMEDELTA(0, 0, end_ns // 1000) if end_ns else None,
        status=_STATUS.get(span.status_code, "unset"),
        status_message=status_message or None,
        model=model,
        provider=get("provider"),
        usage=usage,
        cost=Cost(total=cost) if cost is not None else None,
        attributes=others,
    )
    if io or events:
        out.input = extract_input(attrs, events, io)  # type: ignore[assignment]  # JSON text, as decode_batch leaves it
        out.output = extract_output(attrs, events, io)  # type: ignore[assignment]
    else:
        out.input = out.output = None  # type: ignore[assignment]
    trace_name = get("trace_name")
    if not trace_name:
        trace_name = name if parent is None else root_name[:_NAME_MAX]
    raw_metadata = attrs.get("metadata")
    return Trace(
        id=span.trace_id,
        name=trace_name,
        user_id=get("user_id"),
        session_id=get("session_id"),
        environment=get("environment") or "default",
        release=get("release") or view.release,
        tags=get("tags"),
        metadata=_metadata(raw_metadata, view.metadata, metadata)
        if raw_metadata is not None or view.metadata or metadata
        else None,
        spans=[out],
    )


@dataclass(slots=True)
class _ResourceView:
    fields: dict[str, Any]  # column values from the resource's attributes
    attributes: dict[str, Any]  # its attributes under `resource.`
    metadata: list[tuple[str, Any]]
    release: str | None  # its `service.version`, cut


_NO_RESOURCE = _ResourceView({}, {}, [], None)


def _resource_view(resource: Attributes, cache: dict[int, Any] | None) -> _ResourceView:
    """What a resource contributes to each of its spans, computed once per request."""
    if not resource:
        return _NO_RESOURCE
    if cache is not None:
        hit = cache.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
    fields, _, metadata, _ = _scan(resource)
    view = _ResourceView(fields, {"resource." + key: _scalar(value) for key, value in resource.items()},
                         metadata, _cut(_str(resource.get("service.version")), "release"))  # fmt: skip
    if cache is not None:
        cache[id(resource)] = (resource, view)
    return view


# Key classes of `_scan` (a column's key is classed by its `_INDEX` entry instead; an input/output
# family's flattened keys by the family's index in IO_PREFIXES).
_SKIP, _OTHER, _META, _IO = -1, -2, -3, -4  # mapped; kept in `attributes`; metadata; input/output
_META_PREFIX = "foglamp.trace.metadata."
_KEY_CLASSES: dict[str, Any] = {}
_KEY_CLASSES_MAX = 8192  # distinct keys remembered: a bound on what clients can make it hold
_KEY_REMEMBERED = 256  # longest key remembered

# What `_scan` finds: column values (each from its highest-precedence usable key, strings cut to
# their column's limit), the attributes not mapped to a column (as scalars, in order),
# `foglamp.trace.metadata.*` (prefix removed, in order), and the input/output keys and flattened
# families present (`otlp_io.io_present`).
_Scan = tuple[dict[str, Any], dict[str, Any], list[tuple[str, Any]], set[str]]


def _key_class(key: str) -> Any:
    slot = _INDEX.get(key)
    if slot is not None:
        found: Any = slot
    elif key in IO_KEYS:
        found = _IO
    elif key in _MAPPED:
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
    """One pass over an attribute set (see `_Scan`). Keys are classed once (a table), not per span."""
    fields: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    others: dict[str, Any] = {}
    metadata: list[tuple[str, Any]] = []
    io: set[str] = set()
    classes = _KEY_CLASSES
    for key, value in attrs.items():
        found = classes.get(key)
        if found is None:
            found = _key_class(key)
        if found == _OTHER:
            kind = type(value)
            others[key] = value if kind is str or kind is bool else _scalar(value)
        elif type(found) is tuple:
            field, rank, convert, limit = found
            if ranks.get(field, 99) <= rank:
                continue
            converted = convert(value)
            if converted is not None:
                if limit and len(converted) > limit:
                    converted = converted[:limit]
                fields[field] = converted
                ranks[field] = rank
        elif found == _IO:
            io.add(key)
        elif found == _META:
            metadata.append((key[len(_META_PREFIX) :], _scalar(value)))
        elif found >= 0:
            io.add(IO_PREFIXES[found])
    return fields, others, metadata, io


def collect(attrs: Attributes) -> dict[str, Any]:
    """Column values from one attribute set, each from its highest-precedence key whose value is usable."""
    return _scan(attrs)[0]


# --------------------------------------------------------------------------- columns
def kind_of(attrs: Attributes, model: str | None, usage: Usage | None) -> SpanKind:
    """The v1 kind of a span, first matching rule wins (OTLP.md §2)."""
    get = attrs.get
    value = get("foglamp.span.kind")
    if value is not None:
        value = _str(value)
        if value and value.lower() in KINDS:
            return value.lower()  # type: ignore[return-value]  # one of KINDS
    value = get("openinference.span.kind")
    if value is not None and value != "":
        value = _str(value)
        if value:
            return _OPENINFERENCE_KINDS.get(value.upper(), "custom")
    value = get("gen_ai.operation.name")
    if type(value) is str and value in _OPERATION_KINDS:  # the kinds' names are strings only
        return _OPERATION_KINDS[value]
    value = get("traceloop.span.kind")
    if type(value) is str and value in _TRACELOOP_KINDS:
        return _TRACELOOP_KINDS[value]
    value = get("llm.request.type")
    if type(value) is str and value in _REQUEST_TYPES:
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


# --------------------------------------------------------------------------- helpers
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
_INDEX: dict[str, tuple[str, int, Any, int]] = {
    key: (field, rank, _CONVERTERS[kind], _LIMITS.get(field, 0) if kind in ("str", "provider") else 0)
    for field, keys, kind in _GROUPS
    for rank, key in enumerate(keys)
}
