"""The mapping's shortcuts give what the full look-up gives: input/output families are looked for
only when the attribute pass saw their keys (`otlp_io.io_present`), string columns are cut once
in that pass, `kind_of` reads a rule's key only when it holds a value, and JSON-typed values are
kept as sent."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.otlp_decode import OtlpSpan
from stages.otlp_io import IO_KEYS, IO_PREFIXES, extract_input, extract_output, io_present
from stages.otlp_map import _id_problem, kind_of, map_span
from stages.payload import Trace

EVERY_FAMILY = frozenset({*IO_KEYS, *IO_PREFIXES})  # every family looked for: the full look-up

KEYS = sorted(IO_KEYS) + [
    "llm.input_messages.0.message.role", "llm.input_messages.0.message.content",
    "llm.input_messages.1.message.content", "llm.output_messages.0.message.content",
    "gen_ai.prompt.0.role", "gen_ai.prompt.0.content", "gen_ai.completion.0.content",
    "gen_ai.completion.1.finish_reason", "llm.input_messages", "gen_ai.promptx",
    "gen_ai.request.model", "gen_ai.operation.name", "metadata", "foglamp.trace.metadata.plan",
    "http.status", "input", "output",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(['[{"role": "user", "content": "Hi"}]', '{"q": 1}', ' {"q": 2}', '"text"', "[1,", "plain",
                     "", "application/json", "text/plain", "123"]),
    st.integers(-3, 3), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
)  # fmt: skip
EVENT_NAMES = ["gen_ai.client.inference.operation.details", "gen_ai.user.message", "gen_ai.choice",
               "gen_ai.system.message", "exception", "other"]  # fmt: skip
ATTRS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8)
EVENTS = st.lists(st.tuples(st.sampled_from(EVENT_NAMES), st.dictionaries(st.sampled_from(KEYS + ["content"]),
                                                                         VALUES, max_size=3)), max_size=3)  # fmt: skip


def _span(attrs: dict[str, Any], events: list, **fields: Any) -> OtlpSpan:
    values: dict[str, Any] = dict(
        path="resourceSpans[0].scopeSpans[0].spans[0]", trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174", parent_span_id="", name="span", start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_001_000_000_000, attributes=attrs, dropped_attributes=0, events=events, status_code=0,
        status_message="", resource={}, scope_name="", scope_version="",
    )  # fmt: skip
    values.update(fields)
    return OtlpSpan(**values)


@settings(max_examples=400, deadline=None)
@given(ATTRS, EVENTS)
def test_input_and_output_as_the_full_look_up_finds_them(attrs: dict[str, Any], events: list) -> None:
    present = io_present(attrs)
    assert extract_input(attrs, events, present) == extract_input(attrs, events, EVERY_FAMILY)
    assert extract_output(attrs, events, present) == extract_output(attrs, events, EVERY_FAMILY)
    trace = map_span(_span(attrs, events))
    assert isinstance(trace, Trace)
    (span,) = trace.spans
    assert span.input == extract_input(attrs, events, EVERY_FAMILY)
    assert span.output == extract_output(attrs, events, EVERY_FAMILY)


def test_io_present_names_keys_and_flattened_families() -> None:
    attrs = {"input.value": "x", "llm.input_messages.0.message.role": "user", "gen_ai.prompt": "no family",
             "http.status": 200}  # fmt: skip
    assert io_present(attrs) == {"input.value", "llm.input_messages."}


def test_every_string_column_is_cut_to_its_limit() -> None:
    long = "x" * 1000
    keys = ("gen_ai.provider.name", "session.id", "deployment.environment.name", "foglamp.release",
            "foglamp.trace.name", "user.id", "gen_ai.request.model")  # fmt: skip
    attrs = dict.fromkeys(keys, long)
    trace = map_span(_span(attrs, []))
    assert isinstance(trace, Trace)
    span = trace.spans[0]
    found = (len(span.provider or ""), len(trace.session_id or ""), len(trace.environment), len(trace.release or ""),
             len(trace.name or ""), len(trace.user_id or ""), len(span.model or ""))  # fmt: skip
    assert found == (64, 256, 64, 128, 512, 256, 256)
    from_resource = map_span(_span({}, [], resource={"service.version": long, "user.id": long}, name=long))
    assert isinstance(from_resource, Trace)
    assert (len(from_resource.release or ""), len(from_resource.user_id or ""), len(from_resource.name or "")) == (
        128, 256, 512)  # fmt: skip
    child = map_span(_span({}, [], parent_span_id="eee19b7ec3c1b173"), root_name=long)
    assert isinstance(child, Trace) and len(child.name or "") == 512


@pytest.mark.parametrize(("attrs", "kind"), [
    ({"gen_ai.operation.name": 5}, "custom"),
    ({"openinference.span.kind": 5, "gen_ai.operation.name": "chat"}, "custom"),  # "5": an unknown kind
    ({"openinference.span.kind": "", "gen_ai.operation.name": "chat"}, "llm"),
    ({"openinference.span.kind": ["LLM"], "gen_ai.operation.name": "chat"}, "llm"),  # not a string: skipped
    ({"foglamp.span.kind": "TOOL"}, "tool"),
    ({"foglamp.span.kind": 1, "gen_ai.operation.name": "embeddings"}, "embedding"),
    ({"traceloop.span.kind": True, "llm.request.type": "rerank"}, "retrieval"),
    ({"llm.request.type": ["chat"]}, "custom"),
    ({"gen_ai.operation.name": None, "gen_ai.tool.name": "search"}, "tool"),
])  # fmt: skip
def test_kind_rules_skip_values_that_are_not_their_strings(attrs: dict[str, Any], kind: str) -> None:
    assert kind_of(attrs, None, None) == kind


@pytest.mark.parametrize(("value", "stored"), [
    ('{"query":  "q" , "n": 1.0E2}', b'{"query":  "q" , "n": 1.0E2}'),  # as sent, not re-encoded
    ("123", b"123"),
    ("not json", b'"not json"'),
    (' [1, 2] ', b" [1, 2] "),
])  # fmt: skip
def test_json_typed_values_are_kept_as_sent(value: str, stored: bytes) -> None:
    trace = map_span(_span({"input.value": value, "input.mime_type": "application/json"}, []))
    assert isinstance(trace, Trace)
    assert trace.spans[0].input == stored
    assert json.loads(stored) == (json.loads(value) if stored != b'"not json"' else value)


@pytest.mark.parametrize(("attrs", "stored"), [
    ({"gen_ai.input.messages": '[{"role": "user",  "parts": []}]'}, b'[{"role": "user",  "parts": []}]'),
    ({"gen_ai.input.messages": '[{"role": "user"}]', "gen_ai.system_instructions": '[{"content": "Be brief"}]'},
     b'[{"role":"system","parts":[{"content":"Be brief"}]},{"role":"user"}]'),  # both decoded, combined
    ({"gen_ai.tool.call.arguments": ' {"q": 1}'}, b' {"q": 1}'),
    ({"gen_ai.tool.call.arguments": "{not json"}, b'"{not json"'),
])  # fmt: skip
def test_json_texts_are_stored_as_plain_bytes(attrs: dict[str, Any], stored: bytes) -> None:
    trace = map_span(_span(attrs, []))
    assert isinstance(trace, Trace)
    value = trace.spans[0].input
    assert type(value) is bytes and value == stored  # plain bytes: the small batches' MsgPack rows take them
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(value)) == stored


def _id(length: int) -> st.SearchStrategy[str]:
    """Ids that are mostly almost right: lowercase hex of about the right length, zeros, one odd
    character (uppercase, not hex, non-ASCII, a lone surrogate)."""
    odd = st.sampled_from(["A", "g", "x", " ", "é", "\udc80", "0", "f", "-"])
    hex_id = st.text("0123456789abcdef", min_size=length - 1, max_size=length + 1)
    spoiled = st.tuples(st.text("0123456789abcdef", min_size=length, max_size=length), st.integers(0, length - 1),
                        odd).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :])  # fmt: skip
    return st.one_of(hex_id, spoiled, st.just("0" * length), st.just(""), st.sampled_from(["00", "0" * 32]))


@settings(max_examples=2000, deadline=None)
@given(_id(32), _id(16), _id(16), st.booleans())
def test_id_checks_name_the_same_problem_as_each_id_checked_alone(trace_id: str, span_id: str, parent: str,
                                                                   same: bool) -> None:  # fmt: skip
    if same:
        parent = span_id
    span = _span({}, [], trace_id=trace_id, span_id=span_id, parent_span_id=parent)
    expected = _id_problem(trace_id, span_id, parent)  # each id checked on its own, as before
    result = map_span(span)
    if expected is None:
        assert isinstance(result, Trace)
    else:
        assert not isinstance(result, Trace) and result.reason == expected
