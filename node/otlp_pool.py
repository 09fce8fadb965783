"""OTLP protobuf request bodies for `run.py loadtest --otlp` and the bench's OTLP phase.

The spans are the v1 load generator's (`bench.loadgen._BatchBuilder`: the same traces, LLM spans
with tool and retrieval children), written as an OTel GenAI-semconv instrumentation would send
them: one `ExportTraceServiceRequest` per body, `gen_ai.*` attributes, messages as JSON text.
Same seed, same spans as the v1 pool: the two phases of the bench compare wire formats only.

Each pooled body is serialized once, split at an 8-byte placeholder that heads every trace id;
`body(seq)` joins the pieces with the request's stamp (run id + epoch), so every request carries
fresh trace ids without re-encoding (as `BodyPool` does for v1).
"""

from __future__ import annotations

import gzip
import json
import random
import secrets
import struct
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from node.loadgen import PLACEHOLDER, PooledBodies, _BatchBuilder, _Text

ENCODINGS = ("identity", "gzip")
_KINDS = {"llm": Span.SPAN_KIND_CLIENT, "tool": Span.SPAN_KIND_INTERNAL, "retrieval": Span.SPAN_KIND_CLIENT}
_OPERATIONS = {"llm": "chat", "tool": "execute_tool", "retrieval": "retrieval", "agent": "invoke_agent",
               "chain": "invoke_workflow"}  # fmt: skip


def _ns(stamp: str) -> int:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _set(target: Any, key: str, value: Any) -> None:
    kv: KeyValue = target.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        for item in value:
            kv.value.array_value.values.add().string_value = item
    else:
        kv.value.string_value = value if isinstance(value, str) else json.dumps(value)


def _attributes(span: dict[str, Any], trace: dict[str, Any], root: bool) -> dict[str, Any]:
    kind = span["kind"]
    out: dict[str, Any] = {"gen_ai.operation.name": _OPERATIONS.get(kind, kind)}
    if root:
        out |= {"foglamp.trace.name": trace["name"], "user.id": trace["userId"], "session.id": trace["sessionId"],
                "foglamp.trace.tags": trace["tags"]}  # fmt: skip
        out |= {f"foglamp.trace.metadata.{k}": v for k, v in trace["metadata"].items()}
    if kind == "llm":
        usage = span["usage"]
        out |= {"gen_ai.provider.name": span["provider"], "gen_ai.request.model": span["model"],
                "gen_ai.response.model": span["model"], "gen_ai.usage.input_tokens": usage["inputTokens"],
                "gen_ai.usage.output_tokens": usage["outputTokens"],
                "gen_ai.request.temperature": float(span["attributes"]["temperature"]),
                "gen_ai.input.messages": [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
                                          for m in span["input"]],
                "gen_ai.output.messages": [{"role": "assistant", "finish_reason": "stop", "parts": [
                    {"type": "text", "content": span["output"]["content"]}]}]}  # fmt: skip
        for name, key in (("cacheReadTokens", "gen_ai.usage.cache_read.input_tokens"),
                          ("cacheWriteTokens", "gen_ai.usage.cache_creation.input_tokens"),
                          ("reasoningTokens", "gen_ai.usage.reasoning.output_tokens")):  # fmt: skip
            if name in usage:
                out[key] = usage[name]
    elif kind == "tool":
        out |= {"gen_ai.tool.name": span["attributes"]["tool.name"],
                "gen_ai.tool.call.arguments": span["input"]["arguments"],
                "gen_ai.tool.call.result": span["output"]["content"]}  # fmt: skip
    else:
        out |= {"input.value": span["input"], "input.mime_type": "application/json", "output.value": span["output"],
                "output.mime_type": "application/json"}  # fmt: skip
        out |= {k: v for k, v in span.get("attributes", {}).items() if k not in ("tool.name",)}
    return out


def to_request(batch: dict[str, Any], body: int, placeholder: bytes) -> ExportTraceServiceRequest:
    """A v1 batch (from `_BatchBuilder`) as one OTLP request; trace ids start with `placeholder`."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (("service.name", "loadtest-app"), ("service.version", batch["traces"][0]["release"]),
                       ("deployment.environment.name", batch["traces"][0]["environment"])):  # fmt: skip
        _set(resource_spans.resource.attributes, key, value)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = "opentelemetry.instrumentation.genai", "0.1b0"
    for t, trace in enumerate(batch["traces"]):
        trace_id = placeholder + struct.pack(">II", body, t)
        ids = {span["id"]: struct.pack(">II", t + 1, i + 1) for i, span in enumerate(trace["spans"])}
        for span in trace["spans"]:
            out = scope_spans.spans.add()
            out.trace_id, out.span_id, out.name = trace_id, ids[span["id"]], span["name"]
            if span.get("parentId"):
                out.parent_span_id = ids[span["parentId"]]
            out.kind = _KINDS.get(span["kind"], Span.SPAN_KIND_INTERNAL)
            out.start_time_unix_nano, out.end_time_unix_nano = _ns(span["startTime"]), _ns(span["endTime"])
            out.status.code = Status.STATUS_CODE_ERROR if span["status"] == "error" else Status.STATUS_CODE_OK
            if span.get("statusMessage"):
                out.status.message = span["statusMessage"]
            for key, value in _attributes(span, trace, span.get("parentId") is None).items():
                _set(out.attributes, key, value)
    return request


class OtlpBodyPool(PooledBodies):
    """`size` distinct OTLP protobuf bodies of `spans_per_request` spans each; `body(seq)` has
    trace ids unique for every `seq` (and across runs: the run id is random)."""

    content_type = "application/x-protobuf"

    def __init__(self, size: int, spans_per_request: int, encoding: str = "identity", *, seed: int | None = None):
        if encoding not in ENCODINGS:
            raise ValueError(f"OTLP load supports {ENCODINGS}, not {encoding!r}")
        rng = random.Random(seed)
        self.size, self.spans, self.encoding = size, spans_per_request, encoding
        builder = _BatchBuilder(rng, _Text(rng), datetime.now(UTC))
        self.placeholder = secrets.token_bytes(8)
        self._pieces: list[list[bytes]] = []
        for index in range(size):
            batch = builder.batch(PLACEHOLDER, index, spans_per_request)
            raw = to_request(batch, index, self.placeholder).SerializeToString()
            pieces = raw.split(self.placeholder)
            if len(pieces) != spans_per_request + 1:  # the placeholder heads every span's trace id only
                raise AssertionError(f"placeholder found {len(pieces) - 1} times, expected {spans_per_request}")
            self._pieces.append(pieces)
        self.run_id = secrets.token_bytes(4)
        self._first = [self._render(i, 0) for i in range(size)]

    def _render(self, index: int, epoch: int) -> bytes:
        raw = (self.run_id + struct.pack(">I", epoch)).join(self._pieces[index])
        return gzip.compress(raw, compresslevel=1) if self.encoding == "gzip" else raw

    def needs_work(self, seq: int) -> bool:
        return seq >= self.size and self.encoding == "gzip"

