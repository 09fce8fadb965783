"""The OTLP -> v1 span mapping (OTLP.md §2) as plain functions: every row of the table, every
`kind` rule, the token repairs, and attribute sets copied from each emitter family's output."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from stages.otlp_decode import OtlpSpan
from stages.otlp_map import Problem, kind_of, map_span, usage_of
from stages.payload import Span, Trace, Usage

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
PARENT = "eee19b7ec3c1b173"
START = 1_700_000_000_123_456_789


def otlp(attrs: dict[str, Any] | None = None, *, resource: dict[str, Any] | None = None,
         events: list | None = None, **fields: Any) -> OtlpSpan:  # fmt: skip
    values: dict[str, Any] = dict(
        path="resourceSpans[0].scopeSpans[0].spans[0]", trace_id=TRACE, span_id=SPAN,
        parent_span_id="", name="chat gpt-4o", start_ns=START, end_ns=START + 1_500_000_000,
        attributes=attrs or {}, dropped_attributes=0, events=events or [], status_code=0,
        status_message="", resource=resource or {}, scope_name="", scope_version="",
    )  # fmt: skip
    values.update(fields)
    return OtlpSpan(**values)


def mapped(attrs: dict[str, Any] | None = None, root: str = "", **kwargs: Any) -> tuple[Trace, Span]:
    trace = map_span(otlp(attrs, **kwargs), root)
    assert isinstance(trace, Trace), trace
    return trace, trace.spans[0]


def io(value: bytes | None) -> Any:
    return None if value is None else json.loads(value)


# --------------------------------------------------------------------------- ids, times, status
def test_ids_are_lowercase_hex_and_a_zero_parent_is_null() -> None:
    trace, span = mapped(trace_id=TRACE.upper().lower(), parent_span_id="0000000000000000")
    assert (trace.id, span.id, span.parent_id) == (TRACE, SPAN, None)
    _, child = mapped(parent_span_id=PARENT)
    assert child.parent_id == PARENT


@pytest.mark.parametrize(("fields", "reason"), [
    ({"trace_id": "0" * 32}, "invalid trace id"),
    ({"trace_id": "abc"}, "invalid trace id"),
    ({"trace_id": "zz" * 16}, "invalid trace id"),
    ({"span_id": "0" * 16}, "invalid span id"),
    ({"span_id": "01" * 9}, "invalid span id"),
    ({"parent_span_id": "12345"}, "invalid parent span id"),
    ({"end_ns": START - 1}, "before startTimeUnixNano"),
    ({"start_ns": 0, "end_ns": 0}, "both 0"),
])  # fmt: skip
def test_unusable_spans_are_problems_named_by_path(fields: dict[str, Any], reason: str) -> None:
    problem = map_span(otlp(**fields))
    assert isinstance(problem, Problem)
    assert reason in problem.reason
    assert str(problem).startswith("resourceSpans[0].scopeSpans[0].spans[0]: ")


def test_timestamps_in_microseconds_and_zero_end_is_null() -> None:
    _, span = mapped()
    assert span.start_time == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC)
    assert span.end_time == span.start_time + dt.timedelta(seconds=1.5)
    _, open_span = mapped(end_ns=0)
    assert open_span.end_time is None


@pytest.mark.parametrize(("code", "status"), [(0, "unset"), (1, "ok"), (2, "error"), (9, "unset")])
def test_status_codes(code: int, status: str) -> None:
    assert mapped(status_code=code)[1].status == status


def test_status_message_else_the_exception_event() -> None:
    event = ("exception", {"exception.type": "RateLimitError", "exception.message": "429 Too Many"})
    assert mapped(status_code=2, events=[event])[1].status_message == "429 Too Many"
    assert mapped(status_code=2, status_message="boom", events=[event])[1].status_message == "boom"
    assert mapped()[1].status_message is None


# --------------------------------------------------------------------------- trace-level columns
def test_trace_name_foglamp_then_root_name() -> None:
    assert mapped({"foglamp.trace.name": "support-bot"})[0].name == "support-bot"
    assert mapped(name="agent run")[0].name == "agent run"  # the root itself
    assert mapped(parent_span_id=PARENT, root="agent run")[0].name == "agent run"
    assert mapped(parent_span_id=PARENT)[0].name == ""


@pytest.mark.parametrize("key", ["foglamp.user.id", "user.id", "ai.telemetry.metadata.userId",
                                 "traceloop.association.properties.user_id"])  # fmt: skip
def test_user_id_sources(key: str) -> None:
    assert mapped({key: "u-1"})[0].user_id == "u-1"


def test_user_id_precedence_and_resource_fallback() -> None:
    assert mapped({"user.id": "b", "foglamp.user.id": "a"})[0].user_id == "a"
    assert mapped({"user.id": ""}, resource={"user.id": "r"})[0].user_id == "r"
    assert mapped({"user.id": "s"}, resource={"foglamp.user.id": "r"})[0].user_id == "s"


@pytest.mark.parametrize("key", ["foglamp.session.id", "session.id", "gen_ai.conversation.id",
                                 "ai.telemetry.metadata.sessionId",
                                 "traceloop.association.properties.session_id"])  # fmt: skip
def test_session_id_sources(key: str) -> None:
    assert mapped({key: "s-1"})[0].session_id == "s-1"


def test_environment_sources_and_default() -> None:
    assert mapped()[0].environment == "default"
    assert mapped(resource={"deployment.environment": "staging"})[0].environment == "staging"
    assert mapped(resource={"deployment.environment.name": "prod", "deployment.environment": "x"}
                  )[0].environment == "prod"  # fmt: skip
    assert mapped({"foglamp.environment": "dev"}, resource={"deployment.environment.name": "prod"}
                  )[0].environment == "dev"  # fmt: skip


def test_release_foglamp_then_service_version() -> None:
    assert mapped(resource={"service.version": "1.2.3"})[0].release == "1.2.3"
    assert mapped({"foglamp.release": "r9"}, resource={"service.version": "1.2.3"})[0].release == "r9"
    assert mapped()[0].release is None


@pytest.mark.parametrize(("attrs", "tags"), [
    ({"foglamp.trace.tags": ["a", "b"]}, ["a", "b"]),
    ({"tag.tags": '["x", "y"]'}, ["x", "y"]),
    ({"ai.telemetry.metadata.tags": "one, two"}, ["one", "two"]),
    ({"foglamp.trace.tags": ["a"], "tag.tags": ["b"]}, ["a"]),
    ({}, None),
])  # fmt: skip
def test_tags(attrs: dict[str, Any], tags: list[str] | None) -> None:
    assert mapped(attrs)[0].tags == tags


def test_metadata_from_foglamp_prefix_and_openinference_json() -> None:
    trace, span = mapped({"foglamp.trace.metadata.plan": "pro", "foglamp.trace.metadata.seats": 3,
                          "metadata": '{"tenant": "acme", "nested": {"a": 1}}'})  # fmt: skip
    assert trace.metadata == {"tenant": "acme", "nested": '{"a":1}', "plan": "pro", "seats": 3}
    assert "metadata" not in span.attributes and "foglamp.trace.metadata.plan" not in span.attributes


# --------------------------------------------------------------------------- model, provider
@pytest.mark.parametrize("key", ["gen_ai.response.model", "llm.response.model_name", "llm.model_name",
                                 "ai.response.model", "gen_ai.request.model", "ai.model.id",
                                 "embedding.model_name"])  # fmt: skip
def test_model_sources(key: str) -> None:
    assert mapped({key: "gpt-4o-mini"})[1].model == "gpt-4o-mini"


def test_response_model_beats_request_model() -> None:
    attrs = {"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"}
    assert mapped(attrs)[1].model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize(("attrs", "provider"), [
    ({"gen_ai.provider.name": "openai"}, "openai"),
    ({"llm.provider": "anthropic"}, "anthropic"),
    ({"gen_ai.system": "openai.chat"}, "openai"),
    ({"gen_ai.system": "gcp.vertex_ai"}, "google"),
    ({"gen_ai.provider.name": "aws.bedrock"}, "aws"),
    ({"gen_ai.provider.name": "azure.ai.openai"}, "azure"),
    ({"gen_ai.system": "mistral_ai"}, "mistral"),
    ({"llm.system": "OpenAI"}, "openai"),
    ({"ai.model.provider": "openai.chat"}, "openai"),
    ({"gen_ai.system": "langchain", "llm.provider": "openai"}, "openai"),
    ({"gen_ai.provider.name": "gcp.vertex.agent"}, None),
    ({"gen_ai.provider.name": "anthropic", "gen_ai.system": "openai"}, "anthropic"),
])  # fmt: skip
def test_provider_normalisation(attrs: dict[str, Any], provider: str | None) -> None:
    assert mapped(attrs)[1].provider == provider


# --------------------------------------------------------------------------- tokens
@pytest.mark.parametrize(("key", "field"), [
    ("gen_ai.usage.input_tokens", "input_tokens"), ("llm.token_count.prompt", "input_tokens"),
    ("gen_ai.usage.prompt_tokens", "input_tokens"), ("ai.usage.inputTokens", "input_tokens"),
    ("ai.usage.promptTokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"), ("llm.token_count.completion", "output_tokens"),
    ("gen_ai.usage.completion_tokens", "output_tokens"), ("ai.usage.outputTokens", "output_tokens"),
    ("ai.usage.completionTokens", "output_tokens"),
])  # fmt: skip
def test_token_sources(key: str, field: str) -> None:
    usage = usage_of({key: 42}, {})
    assert usage is not None and getattr(usage, field) == 42


@pytest.mark.parametrize("key", ["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                                 "llm.token_count.prompt_details.cache_read",
                                 "ai.usage.inputTokenDetails.cacheReadTokens",
                                 "ai.usage.cachedInputTokens"])  # fmt: skip
def test_cache_read_sources(key: str) -> None:
    assert usage_of({"gen_ai.usage.input_tokens": 100, key: 30}, {}) == Usage(input_tokens=100, cache_read_tokens=30)


@pytest.mark.parametrize("key", ["gen_ai.usage.cache_creation.input_tokens",
                                 "gen_ai.usage.cache_creation_input_tokens",
                                 "llm.token_count.prompt_details.cache_write",
                                 "ai.usage.inputTokenDetails.cacheWriteTokens"])  # fmt: skip
def test_cache_write_sources(key: str) -> None:
    assert usage_of({"gen_ai.usage.input_tokens": 100, key: 20}, {}) == Usage(input_tokens=100, cache_write_tokens=20)


@pytest.mark.parametrize("key", ["gen_ai.usage.reasoning.output_tokens", "llm.token_count.completion_details.reasoning",
                                 "gen_ai.usage.reasoning_tokens", "llm.usage.reasoning_tokens",
                                 "ai.usage.outputTokenDetails.reasoningTokens",
                                 "ai.usage.reasoningTokens"])  # fmt: skip
def test_reasoning_sources(key: str) -> None:
    assert usage_of({"gen_ai.usage.output_tokens": 50, key: 10}, {}) == Usage(output_tokens=50, reasoning_tokens=10)


def test_repair_input_reported_without_cache() -> None:
    # Anthropic-style: input_tokens excludes the cache; the sum exceeds it, so add it back.
    usage = usage_of({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.cache_read_input_tokens": 900,
                      "gen_ai.usage.cache_creation_input_tokens": 100,
                      "gen_ai.usage.output_tokens": 5}, {})  # fmt: skip
    assert usage == Usage(input_tokens=1010, output_tokens=5, cache_read_tokens=900, cache_write_tokens=100)


def test_repair_output_reported_without_reasoning() -> None:
    usage = usage_of({"gen_ai.usage.output_tokens": 20, "gen_ai.usage.reasoning_tokens": 64}, {})
    assert usage == Usage(output_tokens=84, reasoning_tokens=64)


@pytest.mark.parametrize("key", ["gen_ai.usage.total_tokens", "llm.token_count.total", "ai.usage.totalTokens"])
def test_total_tokens_fills_a_missing_count(key: str) -> None:
    assert usage_of({"gen_ai.usage.input_tokens": 30, key: 100}, {}) == Usage(input_tokens=30, output_tokens=70)
    assert usage_of({"gen_ai.usage.output_tokens": 30, key: 100}, {}) == Usage(input_tokens=70, output_tokens=30)


def test_token_values_as_strings_and_floats_and_none() -> None:
    assert usage_of({"llm.token_count.prompt": "12", "llm.token_count.completion": 3.0}, {}) == Usage(
        input_tokens=12, output_tokens=3)  # fmt: skip
    assert usage_of({}, {}) is None
    assert usage_of({"gen_ai.usage.input_tokens": -5}, {}) is None


# --------------------------------------------------------------------------- cost
@pytest.mark.parametrize("key", ["foglamp.cost.total", "gen_ai.usage.cost", "llm.cost.total", "operation.cost"])
def test_caller_cost_sources(key: str) -> None:
    span = mapped({key: 0.25})[1]
    assert span.cost is not None and span.cost.total == 0.25
    assert key not in span.attributes


def test_no_cost_without_attribute_and_nonfinite_cost_ignored() -> None:
    assert mapped()[1].cost is None
    assert mapped({"foglamp.cost.total": float("nan")})[1].cost is None


# --------------------------------------------------------------------------- kind
@pytest.mark.parametrize(("attrs", "kind"), [
    ({"foglamp.span.kind": "retrieval", "gen_ai.operation.name": "chat"}, "retrieval"),
    ({"foglamp.span.kind": "nonsense", "gen_ai.operation.name": "chat"}, "llm"),
    ({"openinference.span.kind": "LLM"}, "llm"),
    ({"openinference.span.kind": "EMBEDDING"}, "embedding"),
    ({"openinference.span.kind": "TOOL"}, "tool"),
    ({"openinference.span.kind": "RETRIEVER"}, "retrieval"),
    ({"openinference.span.kind": "RERANKER"}, "retrieval"),
    ({"openinference.span.kind": "AGENT"}, "agent"),
    ({"openinference.span.kind": "CHAIN"}, "chain"),
    ({"openinference.span.kind": "GUARDRAIL", "gen_ai.operation.name": "chat"}, "custom"),
    ({"gen_ai.operation.name": "chat"}, "llm"),
    ({"gen_ai.operation.name": "text_completion"}, "llm"),
    ({"gen_ai.operation.name": "generate_content"}, "llm"),
    ({"gen_ai.operation.name": "embeddings"}, "embedding"),
    ({"gen_ai.operation.name": "execute_tool"}, "tool"),
    ({"gen_ai.operation.name": "retrieval"}, "retrieval"),
    ({"gen_ai.operation.name": "invoke_agent"}, "agent"),
    ({"gen_ai.operation.name": "create_agent"}, "agent"),
    ({"gen_ai.operation.name": "invoke_workflow"}, "chain"),
    ({"traceloop.span.kind": "workflow"}, "chain"),
    ({"traceloop.span.kind": "task"}, "chain"),
    ({"traceloop.span.kind": "agent"}, "agent"),
    ({"traceloop.span.kind": "tool"}, "tool"),
    ({"llm.request.type": "chat"}, "llm"),
    ({"llm.request.type": "completion"}, "llm"),
    ({"llm.request.type": "embedding"}, "embedding"),
    ({"llm.request.type": "rerank"}, "retrieval"),
    ({"ai.operationId": "ai.generateText.doGenerate"}, "llm"),
    ({"ai.operationId": "ai.streamText.doStream"}, "llm"),
    ({"ai.operationId": "ai.embed.doEmbed"}, "embedding"),
    ({"ai.operationId": "ai.embedMany.doEmbed"}, "embedding"),
    ({"ai.operationId": "ai.toolCall"}, "tool"),
    ({"ai.operationId": "ai.generateText"}, "chain"),
    ({"ai.operationId": "ai.streamText"}, "chain"),
    ({"gen_ai.tool.name": "search"}, "tool"),
    ({}, "custom"),
])  # fmt: skip
def test_kind_rules(attrs: dict[str, Any], kind: str) -> None:
    assert mapped(attrs)[1].kind == kind


def test_kind_model_and_usage_is_llm() -> None:
    assert kind_of({}, "gpt-4o", Usage(input_tokens=1)) == "llm"
    assert kind_of({}, "gpt-4o", None) == "custom"
    assert kind_of({}, None, Usage(input_tokens=1)) == "custom"


# --------------------------------------------------------------------------- attributes
def test_other_attributes_with_resource_and_scope_prefixes() -> None:
    _, span = mapped({"gen_ai.request.temperature": 0.2, "gen_ai.request.model": "gpt-4o",
                      "gen_ai.response.finish_reasons": ["stop"], "http.status": 200},
                     resource={"service.name": "bot"}, scope_name="opentelemetry.instrumentation.openai",
                     scope_version="0.1", dropped_attributes=4)  # fmt: skip
    assert span.attributes == {
        "gen_ai.request.temperature": 0.2, "gen_ai.response.finish_reasons": '["stop"]', "http.status": 200,
        "resource.service.name": "bot", "scope.name": "opentelemetry.instrumentation.openai",
        "scope.version": "0.1", "otel.dropped_attributes_count": 4,
    }  # fmt: skip


def test_over_long_strings_are_cut_not_refused() -> None:
    trace, span = mapped({"gen_ai.request.model": "m" * 1000, "user.id": "u" * 1000}, name="n" * 2000)
    assert (len(span.name), len(span.model or ""), len(trace.user_id or "")) == (512, 256, 256)


# --------------------------------------------------------------------------- input / output
def test_semconv_messages_with_system_instructions_first() -> None:
    _, span = mapped({
        "gen_ai.system_instructions": '[{"type": "text", "content": "Be brief."}]',
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]',
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}],'
                                  ' "finish_reason": "stop"}]',
    })  # fmt: skip
    assert io(span.input) == [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                              {"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]  # fmt: skip
    assert io(span.output)[0]["parts"][0]["content"] == "Hello"
    assert not any(key.startswith("gen_ai.input") for key in span.attributes)


def test_inference_details_event() -> None:
    event = ("gen_ai.client.inference.operation.details", {
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Q"}]}]',
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "A"}]}]'})  # fmt: skip
    _, span = mapped(events=[event])
    assert io(span.input)[0]["role"] == "user" and io(span.output)[0]["parts"][0]["content"] == "A"


def test_openinference_flattened_messages() -> None:
    _, span = mapped({
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "Be brief.",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "Hi",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "Hello",
    })  # fmt: skip
    assert io(span.input) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert io(span.output) == [{"role": "assistant", "content": "Hello"}]
    assert span.attributes == {}


def test_openinference_values_parsed_only_when_json() -> None:
    _, span = mapped({"input.value": '{"query": "q"}', "input.mime_type": "application/json",
                      "output.value": '{"not": "parsed"}', "output.mime_type": "text/plain"})  # fmt: skip
    assert io(span.input) == {"query": "q"}
    assert io(span.output) == '{"not": "parsed"}'


def test_openllmetry_indexed_prompt_and_completion() -> None:
    _, span = mapped({"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi",
                      "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Hey",
                      "gen_ai.completion.0.finish_reason": "stop"})  # fmt: skip
    assert io(span.input) == [{"role": "user", "content": "Hi"}]
    assert io(span.output) == [{"role": "assistant", "content": "Hey", "finish_reason": "stop"}]


def test_legacy_message_and_choice_events() -> None:
    events = [("gen_ai.system.message", {"gen_ai.system": "openai", "content": "Be brief."}),
              ("gen_ai.user.message", {"gen_ai.system": "openai", "content": "Hi"}),
              ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello"}})]  # fmt: skip
    _, span = mapped(events=events)
    assert io(span.input) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}}
    assert io(span.output) == [choice]


def test_vercel_prompt_and_response() -> None:
    _, span = mapped({"ai.prompt.messages": '[{"role":"user","content":[{"type":"text","text":"Hi"}]}]',
                      "ai.response.text": "Hello there"})  # fmt: skip
    assert io(span.input)[0]["content"][0]["text"] == "Hi"
    assert io(span.output) == "Hello there"
    _, outer = mapped({"ai.prompt": '{"prompt": "Write a haiku"}', "ai.response.object": '{"a": 1}'})
    assert io(outer.input) == {"prompt": "Write a haiku"} and io(outer.output) == {"a": 1}


@pytest.mark.parametrize(("attrs", "inp", "out"), [
    ({"gen_ai.tool.call.arguments": '{"city": "Paris"}', "gen_ai.tool.call.result": '{"temp": 21}'},
     {"city": "Paris"}, {"temp": 21}),
    ({"ai.toolCall.args": '{"q": 1}', "ai.toolCall.result": "done"}, {"q": 1}, "done"),
    ({"traceloop.entity.input": '{"inputs": {"x": 1}}', "traceloop.entity.output": '{"outputs": 2}'},
     {"inputs": {"x": 1}}, {"outputs": 2}),
])  # fmt: skip
def test_tool_and_entity_io(attrs: dict[str, Any], inp: Any, out: Any) -> None:
    _, span = mapped(attrs)
    assert (io(span.input), io(span.output)) == (inp, out)


def test_no_io_is_null() -> None:
    _, span = mapped()
    assert span.input is None and span.output is None


# --------------------------------------------------------------------------- emitter families
def test_genai_semconv_current() -> None:
    """opentelemetry-instrumentation-openai-v2 with semconv ≥ 1.37 names."""
    trace, span = mapped({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-123", "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
        "gen_ai.usage.cache_read.input_tokens": 1024, "gen_ai.conversation.id": "conv-7",
        "server.address": "api.openai.com",
    }, resource={"service.name": "support", "service.version": "2.0.1", "deployment.environment.name": "prod"},
       scope_name="opentelemetry.instrumentation.openai_v2")  # fmt: skip
    assert (span.kind, span.model, span.provider) == ("llm", "gpt-4o-mini-2024-07-18", "openai")
    assert span.usage == Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1024)
    assert (trace.session_id, trace.release, trace.environment) == ("conv-7", "2.0.1", "prod")
    assert span.attributes["gen_ai.response.id"] == "chatcmpl-123"


def test_genai_semconv_pre_1_37() -> None:
    trace, span = mapped({
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 500, "gen_ai.usage.completion_tokens": 40,
    }, resource={"deployment.environment": "staging"})  # fmt: skip
    assert (span.kind, span.model, span.provider, trace.environment) == ("llm", "gpt-4o", "openai", "staging")
    assert span.usage == Usage(input_tokens=500, output_tokens=40)


def test_openinference() -> None:
    trace, span = mapped({
        "openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-sonnet-20241022", "llm.provider": "anthropic",
        "llm.system": "anthropic", "llm.token_count.prompt": 2000, "llm.token_count.completion": 300,
        "llm.token_count.total": 2300, "llm.token_count.prompt_details.cache_read": 1500,
        "llm.invocation_parameters": '{"max_tokens": 1024}', "session.id": "sess-1", "user.id": "user-1",
        "metadata": '{"tier": "gold"}', "tag.tags": ["beta"],
        "input.value": '{"messages": []}', "input.mime_type": "application/json",
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Hi",
    })  # fmt: skip
    assert (span.kind, span.model, span.provider) == ("llm", "claude-3-5-sonnet-20241022", "anthropic")
    assert span.usage == Usage(input_tokens=2000, output_tokens=300, cache_read_tokens=1500)
    assert (trace.session_id, trace.user_id) == ("sess-1", "user-1")
    assert (trace.metadata, trace.tags) == ({"tier": "gold"}, ["beta"])
    assert io(span.input) == [{"role": "user", "content": "Hi"}]  # llm.input_messages beats input.value
    assert span.attributes == {"llm.invocation_parameters": '{"max_tokens": 1024}', "openinference.span.kind": "LLM"}


def test_vercel_ai_sdk() -> None:
    trace, span = mapped({
        "operation.name": "ai.generateText.doGenerate my-fn", "ai.operationId": "ai.generateText.doGenerate",
        "ai.model.provider": "openai.chat", "ai.model.id": "gpt-4o-mini", "ai.response.model": "gpt-4o-mini-2024-07-18",
        "ai.usage.promptTokens": 30, "ai.usage.completionTokens": 12, "ai.telemetry.functionId": "my-fn",
        "ai.telemetry.metadata.userId": "u-9", "ai.telemetry.metadata.sessionId": "s-9",
        "ai.telemetry.metadata.tags": '["web"]', "gen_ai.system": "openai.chat",
        "ai.prompt.messages": '[{"role":"user","content":"Hi"}]', "ai.response.text": "Hello!",
    })  # fmt: skip
    assert (span.kind, span.model, span.provider) == ("llm", "gpt-4o-mini-2024-07-18", "openai")
    assert span.usage == Usage(input_tokens=30, output_tokens=12)
    assert (trace.user_id, trace.session_id, trace.tags) == ("u-9", "s-9", ["web"])
    assert io(span.output) == "Hello!"


def test_openllmetry() -> None:
    trace, span = mapped({
        "llm.request.type": "chat", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.prompt_tokens": 100,
        "gen_ai.usage.completion_tokens": 20, "llm.usage.total_tokens": 120,
        "traceloop.association.properties.user_id": "u-3", "traceloop.association.properties.session_id": "s-3",
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Hello",
    })  # fmt: skip
    assert (span.kind, span.model, span.provider) == ("llm", "gpt-4o-2024-08-06", "openai")
    assert (trace.user_id, trace.session_id) == ("u-3", "s-3")
    assert io(span.output) == [{"role": "assistant", "content": "Hello"}]
    _, workflow = mapped({"traceloop.span.kind": "workflow", "traceloop.entity.name": "pipeline"})
    assert workflow.kind == "chain"
