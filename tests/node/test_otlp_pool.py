"""`node/otlp_pool.py`: the OTLP load bodies decode and map like any client's, with fresh trace
ids per request, and carry the same spans as the v1 pool."""

from __future__ import annotations

import gzip

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from node.httpclient import Response
from node.loadtest import outcome
from node.otlp_pool import OtlpBodyPool
from pipeline.jobs import Rejected
from stages.otlp import Partial, check_otlp
from stages.otlp_answer import PROTOBUF


def test_bodies_map_to_genai_spans_with_fresh_ids() -> None:
    pool = OtlpBodyPool(2, 50, seed=7)
    partial = Partial()
    batch = check_otlp(pool.body(0), PROTOBUF, "identity", 10**8, partial)
    assert not isinstance(batch, Rejected) and partial.rejected == 0
    spans = [trace.spans[0] for trace in batch.traces]
    assert len(spans) == 50
    kinds = {span.kind for span in spans}
    assert {"llm", "tool"} <= kinds and kinds <= {"llm", "tool", "retrieval", "agent", "chain"}
    llm = next(span for span in spans if span.kind == "llm")
    assert llm.model and llm.provider and llm.usage is not None and llm.usage.input_tokens > 0 and llm.input
    ids = {t.id for t in batch.traces}
    later = check_otlp(pool.body(2), PROTOBUF, "identity", 10**8)
    assert not isinstance(later, Rejected) and ids.isdisjoint({t.id for t in later.traces})


def test_gzip_bodies() -> None:
    pool = OtlpBodyPool(1, 10, "gzip", seed=1)
    assert pool.needs_work(1) and not pool.needs_work(0)
    request = ExportTraceServiceRequest.FromString(gzip.decompress(pool.body(3)))
    assert sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans) == 10


def test_otlp_outcomes() -> None:
    proto = {"content-type": "application/x-protobuf"}
    assert outcome(Response(200, proto, b"", False)) == "200"
    assert outcome(Response(429, proto | {"retry-after": "1"}, b"", False)) == "429:rate_limited"
    assert outcome(Response(429, proto, b"", False)) == "429:quota_exceeded"
    assert outcome(Response(503, proto, b"", False)) == "503:overloaded"
