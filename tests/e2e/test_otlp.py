"""`POST /v1/traces` end to end (OTLP.md): spans exported through the real `opentelemetry-sdk` and
`OTLPSpanExporter` (protobuf) or posted as OTLP JSON with httpx, read back with `SELECT … FINAL`;
answers decoded with the client's own protobuf types (`ExportTraceServiceResponse`,
`google.rpc.Status`)."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status as OtelStatus
from opentelemetry.trace import StatusCode

from tests.nodes import Node, batch, create_key, create_org, query, span, trace, wait_for_rows

T0 = 1_795_000_000_000_000_000  # 2026-11-18T11:06:40Z, in ns
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("otlp")
    node = Node(root / "data", env={"INGEST_FLUSH_INTERVAL_MS": "200", "INGEST_MAX_BODY_BYTES": "200000",
                                    "INGEST_MAX_DECOMPRESSED_BYTES": "400000"}).start()  # fmt: skip
    yield node
    assert node.stop() == 0


@pytest.fixture(scope="module")
def key(node: Node) -> str:
    return create_key(node.data_dir, create_org(node.data_dir, "otlp"))


def record(resource: dict[str, Any] | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", **(resource or {})}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def genai_trace(tag: str) -> list[ReadableSpan]:
    """An agent span with a GenAI-semconv chat child, a tool child and a retrieval child."""
    provider, memory = record({"service.version": "3.1.0", "deployment.environment.name": "prod"})
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0")
    root = tracer.start_span(f"invoke_agent {tag}", start_time=T0, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 3000,
        "gen_ai.usage.output_tokens": 300, "foglamp.user.id": "user-42", "session.id": "sess-9",
        "foglamp.trace.tags": ["otlp", "e2e"], "foglamp.trace.metadata.plan": "pro"})  # fmt: skip
    from opentelemetry import trace as api

    context = api.set_span_in_context(root)
    chat = tracer.start_span("chat gpt-4o-mini", context=context, start_time=T0 + SECOND, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1_000_000,
        "gen_ai.usage.output_tokens": 1_000_000, "gen_ai.request.temperature": 0.2,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Yo"}]}]),
    })  # fmt: skip
    chat.set_status(OtelStatus(StatusCode.OK))
    chat.end(end_time=T0 + 3 * SECOND)
    tool = tracer.start_span("execute_tool search", context=context, start_time=T0 + 4 * SECOND, attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
        "gen_ai.tool.call.arguments": '{"q": "weather"}'})  # fmt: skip
    tool.record_exception(ValueError("search backend down"))
    tool.set_status(OtelStatus(StatusCode.ERROR))
    tool.end(end_time=T0 + 5 * SECOND)
    retrieval = tracer.start_span("retrieval docs", context=context, start_time=T0 + 5 * SECOND,
                                  attributes={"gen_ai.operation.name": "retrieval"})  # fmt: skip
    retrieval.end(end_time=T0 + 6 * SECOND)
    root.end(end_time=T0 + 7 * SECOND)
    return list(memory.get_finished_spans())


def exporter(node: Node, key: str, *, gzip_on: bool) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{node.url}/v1/traces", headers={"Authorization": f"Bearer {key}"},
                            compression=Compression.Gzip if gzip_on else Compression.NoCompression)  # fmt: skip


def otlp_json(spans: list[ReadableSpan]) -> dict[str, Any]:
    """OTLP JSON as the spec writes it: hex ids (json_format would give base64), int64 as strings."""
    document = MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for item in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in item:
                        item[name] = base64.b64decode(item[name]).hex()
    return document


def rows(node: Node, trace_id: str, expected: int) -> dict[str, dict[str, Any]]:
    sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = '{trace_id}'"
    assert wait_for_rows(node.data_dir, sql, expected) == expected
    found = query(node.data_dir, f"SELECT * FROM foglamp.spans FINAL WHERE trace_id = '{trace_id}'")
    return {row["name"].split(" ")[0]: row for row in found}


def check_genai_rows(by_name: dict[str, dict[str, Any]], spans: list[ReadableSpan]) -> None:
    root = next(s for s in spans if s.parent is None)
    agent, chat = by_name["invoke_agent"], by_name["chat"]
    tool, retrieval = by_name["execute_tool"], by_name["retrieval"]
    for row in by_name.values():
        assert row["trace_name"] == root.name
        assert (row["user_id"], row["session_id"], row["environment"], row["release"]) == (
            "user-42", "sess-9", "prod", "3.1.0") or row is not agent  # fmt: skip
    assert agent["span_id"] == format(root.context.span_id, "016x") and agent["parent_span_id"] is None
    assert chat["parent_span_id"] == agent["span_id"]
    assert (agent["kind"], chat["kind"], tool["kind"], retrieval["kind"]) == ("agent", "llm", "tool", "retrieval")
    assert agent["tags"] == ["otlp", "e2e"] and json.loads(agent["metadata"]) == {"plan": "pro"}
    # the agent's usage is summed over its children: stored, not priced
    assert (agent["input_tokens"], agent["output_tokens"], agent["priced"], agent["total_cost"],
            agent["price_source"]) == (3000, 300, False, None, "aggregate")  # fmt: skip
    assert (chat["model"], chat["provider"], chat["input_tokens"], chat["output_tokens"]) == (
        "gpt-4o-mini", "openai", 1_000_000, 1_000_000)  # fmt: skip
    assert chat["priced"] and chat["price_source"] == "genai-prices"
    assert chat["total_cost"] == pytest.approx(0.15 + 0.60)
    assert chat["status"] == "ok" and chat["duration_ms"] == pytest.approx(2000)
    assert str(chat["start_time"]).startswith("2026-11-18 11:06:41")
    assert json.loads(chat["input"]) == [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]
    assert json.loads(chat["output"])[0]["parts"][0]["content"] == "Yo"
    attributes = json.loads(chat["attributes"])
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["resource.service.name"] == "support-bot"
    assert attributes["scope.name"] == "opentelemetry.instrumentation.openai_v2"
    assert (tool["status"], tool["status_message"]) == ("error", "search backend down")
    assert json.loads(tool["input"]) == {"q": "weather"}
    assert retrieval["priced"] is False and retrieval["price_source"] == "unpriced"


@pytest.mark.parametrize("gzip_on", [True, False])
def test_protobuf_export_through_the_real_exporter(node: Node, key: str, gzip_on: bool) -> None:
    spans = genai_trace(f"pb-{gzip_on}")
    assert exporter(node, key, gzip_on=gzip_on).export(spans) == SpanExportResult.SUCCESS
    trace_id = format(spans[0].context.trace_id, "032x")
    check_genai_rows(rows(node, trace_id, 4), spans)


@pytest.mark.parametrize("gzip_on", [True, False])
def test_otlp_json(node: Node, key: str, gzip_on: bool) -> None:
    spans = genai_trace(f"json-{gzip_on}")
    body = json.dumps(otlp_json(spans)).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "Authorization": f"Bearer {key}"}
    if gzip_on:
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    response = httpx.post(f"{node.url}/v1/traces", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json" and response.json() == {}
    check_genai_rows(rows(node, format(spans[0].context.trace_id, "032x"), 4), spans)


def test_x_api_key_header_and_json_quirks(node: Node, key: str) -> None:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    document = {"resourceSpans": [{"unknownKey": 1, "resource": {"attributes": [
        {"key": "deployment.environment", "value": {"stringValue": "staging"}}]},
        "scopeSpans": [{"scope": {"name": "vercel"}, "spans": [{
            "traceId": trace_id.upper(), "spanId": span_id, "name": "ai.generateText.doGenerate", "kind": 3,
            "startTimeUnixNano": str(T0), "endTimeUnixNano": T0 + SECOND, "extra": {"x": [1]},
            "attributes": [
                {"key": "ai.operationId", "value": {"stringValue": "ai.generateText.doGenerate"}},
                {"key": "ai.model.provider", "value": {"stringValue": "openai.chat"}},
                {"key": "ai.model.id", "value": {"stringValue": "gpt-4o-mini"}},
                {"key": "ai.usage.promptTokens", "value": {"intValue": "1000000"}},
                {"key": "ai.usage.completionTokens", "value": {"intValue": 0}},
                {"key": "ai.settings.temperature", "value": {"doubleValue": "NaN"}},
                {"key": "ai.blob", "value": {"bytesValue": base64.b64encode(b"\x01\x02").decode()}},
                {"key": "ai.list", "value": {"arrayValue": {"values": [{"boolValue": True}]}}},
                {"key": "ai.map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "7"}}]}}},
            ], "status": {"code": 1}}]}]}]}  # fmt: skip
    response = httpx.post(f"{node.url}/v1/traces", json=document, headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 200, response.text
    row = rows(node, trace_id, 1)["ai.generateText.doGenerate"]
    assert (row["kind"], row["provider"], row["environment"], row["status"]) == ("llm", "openai", "staging", "ok")
    assert row["input_tokens"] == 1_000_000 and row["total_cost"] == pytest.approx(0.15)
    attributes = json.loads(row["attributes"])
    assert attributes["ai.settings.temperature"] == "nan" and attributes["ai.blob"] == "0102"
    assert json.loads(attributes["ai.map"]) == {"k": 7} and json.loads(attributes["ai.list"]) == [True]


def test_v1_and_otlp_price_the_same_call(node: Node, key: str) -> None:
    provider, memory = record()
    call = provider.get_tracer("t").start_span("chat", start_time=T0, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12_000, "gen_ai.usage.cache_read.input_tokens": 4_000,
        "gen_ai.usage.output_tokens": 900})  # fmt: skip
    call.end(end_time=T0 + SECOND)
    assert exporter(node, key, gzip_on=True).export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    otlp_trace = format(call.get_span_context().trace_id, "032x")
    v1_trace = uuid.uuid4().hex
    v1 = batch(trace(v1_trace, span("v1chat", kind="llm", model="gpt-4o", provider="openai",
                                    startTime="2026-11-18T11:06:40Z", endTime="2026-11-18T11:06:41Z",
                                    usage={"inputTokens": 12_000, "cacheReadTokens": 4_000,
                                           "outputTokens": 900})))  # fmt: skip
    assert node.post(v1, key=key).status_code == 202
    columns = ("input_cost", "output_cost", "cache_read_cost", "cache_write_cost", "total_cost", "priced",
               "price_model", "price_source")  # fmt: skip
    by_otlp = next(iter(rows(node, otlp_trace, 1).values()))
    by_v1 = next(iter(rows(node, v1_trace, 1).values()))
    assert by_otlp["total_cost"] > 0
    assert {c: by_otlp[c] for c in columns} == {c: by_v1[c] for c in columns}


def test_retried_export_never_duplicates(node: Node, key: str) -> None:
    spans = genai_trace("retry")
    for _ in range(3):  # what an exporter's retries send: the same spans again
        assert exporter(node, key, gzip_on=True).export(spans) == SpanExportResult.SUCCESS
    trace_id = format(spans[0].context.trace_id, "032x")
    rows(node, trace_id, 4)
    sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = '{trace_id}'"
    assert query(node.data_dir, sql)[0]["c"] == 4


# --------------------------------------------------------------------------- malformed requests
def post(node: Node, body: bytes, key: str | None, content_type: str = "application/x-protobuf",
         path: str = "/v1/traces", **headers: str) -> httpx.Response:  # fmt: skip
    all_headers = {"Content-Type": content_type, **headers}
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{node.url}{path}", content=body, headers=all_headers, timeout=30)


def status_of(response: httpx.Response) -> Status:
    assert response.headers["content-type"] == "application/x-protobuf"
    return Status.FromString(response.content)


def test_bad_ids_are_a_partial_success(node: Node, key: str) -> None:
    request = encode_spans(genai_trace("bad-ids"))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].span_id = b"\x00" * 8
    spans[2].trace_id = b"\x01\x02"
    response = post(node, request.SerializeToString(), key)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    message = answer.partial_success.error_message
    assert "resourceSpans[0].scopeSpans[0].spans[1]: invalid span id" in message
    assert "resourceSpans[0].scopeSpans[0].spans[2]: invalid trace id" in message
    good = format(int.from_bytes(spans[0].trace_id), "032x")
    assert len(rows(node, good, 2)) == 2  # the two usable spans are stored
    # the same in JSON: an answer the JSON client reads
    document = otlp_json(genai_trace("bad-json"))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "xyz"
    response = httpx.post(f"{node.url}/v1/traces", json=document, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_truncated_protobuf_is_400(node: Node, key: str) -> None:
    body = encode_spans(genai_trace("cut")).SerializeToString()
    response = post(node, body[: len(body) // 2], key)
    assert response.status_code == 400
    status = status_of(response)
    assert status.code == 3 and "protobuf" in status.message


def test_not_json_is_400_in_json(node: Node, key: str) -> None:
    response = post(node, b'{"resourceSpans": [', key, "application/json")
    assert response.status_code == 400 and response.json()["code"] == 3


def test_wrong_media_type_is_415(node: Node, key: str) -> None:
    response = post(node, b"<xml/>", key, "application/xml")
    assert response.status_code == 415 and "unsupported_media_type" in response.json()["message"]
    assert post(node, b"", key, "application/x-protobuf", **{"Content-Encoding": "br"}).status_code == 415


def test_logs_payload_is_refused(node: Node, key: str) -> None:
    logs = ExportLogsServiceRequest()
    record_ = logs.resource_logs.add().scope_logs.add().log_records.add()
    record_.time_unix_nano, record_.severity_text = T0, "INFO"
    record_.body.string_value = "hello"
    response = post(node, logs.SerializeToString(), key)
    assert response.status_code == 400 and "not an OTLP traces request" in status_of(response).message
    response = post(node, json.dumps(MessageToDict(logs)).encode(), key, "application/json")
    assert response.status_code == 400 and "logs" in response.json()["message"]


@pytest.mark.parametrize("path", ["/v1/logs", "/v1/metrics"])
def test_other_signals_are_404(node: Node, key: str, path: str) -> None:
    response = post(node, b"", key, path=path)
    assert response.status_code == 404 and "traces only" in status_of(response).message


def test_oversize_is_413(node: Node, key: str) -> None:
    response = post(node, b"\x00" * 300_000, key)
    assert response.status_code == 413 and status_of(response).code == 8
    bomb = gzip.compress(b'{"resourceSpans": []}' + b" " * 1_000_000)
    response = post(node, bomb, key, "application/json", **{"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "400000" in response.json()["message"]


def test_unauthorized_is_401_status(node: Node) -> None:
    response = post(node, ExportTraceServiceRequest().SerializeToString(), "fl_nope")
    assert response.status_code == 401 and status_of(response).code == 16


def test_empty_request_is_a_success(node: Node, key: str) -> None:
    response = post(node, b"", key)
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()


# --------------------------------------------------------------------------- durability
def test_kill_9_right_after_a_200_loses_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path / "data", env={"INGEST_FLUSH_INTERVAL_MS": "60000"}).start()
    key = create_key(node.data_dir, create_org(node.data_dir, "crash"))
    traces = [genai_trace(f"crash-{i}") for i in range(5)]
    exp = exporter(node, key, gzip_on=True)
    for spans in traces:
        assert exp.export(spans) == SpanExportResult.SUCCESS
    node.kill()
    node = Node(tmp_path / "data", port=node.port).start()
    try:
        ids = ", ".join(f"'{format(spans[0].context.trace_id, '032x')}'" for spans in traces)
        sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id IN ({ids})"
        assert wait_for_rows(node.data_dir, sql, 20) == 20
    finally:
        assert node.stop() == 0


def test_openapi_documents_v1_traces(node: Node) -> None:
    doc = httpx.get(f"{node.url}/openapi.json").json()
    traces = doc["paths"]["/v1/traces"]["post"]
    assert set(traces["requestBody"]["content"]) == {"application/x-protobuf", "application/json"}
    assert {"200", "400", "401", "413", "415", "429", "503"} <= set(traces["responses"])
    assert "foglamp.trace.name" in traces["description"] and "foglamp.cost.total" in traces["description"]


def test_rate_limit_and_quota_answers(node: Node) -> None:
    slow = create_key(node.data_dir, create_org(node.data_dir, "otlp-slow"), "--rate-limit", "0.5")
    body = ExportTraceServiceRequest().SerializeToString()
    answers = [post(node, body, slow) for _ in range(3)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and "retry-after" in limited[0].headers
    assert status_of(limited[0]).code == 8 and "rate_limited" in status_of(limited[0]).message
    org = create_org(node.data_dir, "otlp-quota", "--monthly-span-quota", "1")
    capped = create_key(node.data_dir, org)
    spans = encode_spans(genai_trace("quota")).SerializeToString()
    assert post(node, spans, capped).status_code == 200  # the batch that crosses the line is accepted whole
    response = post(node, spans, capped)
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert "quota_exceeded" in status_of(response).message
