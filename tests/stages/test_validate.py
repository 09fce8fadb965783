"""Unit tests of stages.validate.decode_batch: one or more tests per rule of SPEC §2, for both media."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import msgspec
import pytest

from stages.payload import Batch, Usage
from stages.validate import InvalidBody, InvalidPayload, decode_batch

T0 = "2025-01-01T10:00:00Z"
T1 = "2025-01-01T10:00:01.250Z"
DROP = object()  # a field value meaning "leave the field out"


def span(**fields: Any) -> dict[str, Any]:
    """A minimal valid span, with ``fields`` set (or dropped with DROP)."""
    return _with({"id": "s1", "name": "call", "startTime": T0}, fields)


def trace(*spans: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return _with({"id": "t1", "spans": list(spans) or [span()]}, fields)


def batch(*traces: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return _with({"version": "v1", "traces": list(traces) or [trace()]}, fields)


def _with(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    for key, value in fields.items():
        if value is DROP:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def encode(payload: Any, media: str) -> bytes:
    return msgspec.json.encode(payload) if media == "json" else msgspec.msgpack.encode(payload)


def ok(payload: Any, media: str = "json") -> Batch:
    result = decode_batch(encode(payload, media), media)
    assert isinstance(result, Batch), result
    return result


def issues(payload: Any, media: str = "json", **kwargs: Any) -> list[tuple[list, str]]:
    """(path, code) of every issue; asserts the payload was refused as invalid_payload."""
    result = decode_batch(encode(payload, media), media, **kwargs)
    assert isinstance(result, InvalidPayload), result
    for issue in result.issues:
        assert set(issue) == {"path", "code", "message"} and issue["message"]
    return [(issue["path"], issue["code"]) for issue in result.issues]


def at(si: int, *rest: str | int, ti: int = 0) -> list:
    return ["traces", ti, "spans", si, *rest]


@pytest.fixture(params=["json", "msgpack"])
def media(request: pytest.FixtureRequest) -> str:
    return request.param


# -- valid batches ------------------------------------------------------------------------


def test_minimal_batch_gets_spec_defaults(media: str) -> None:
    result = ok(batch(), media)
    t, s = result.traces[0], result.traces[0].spans[0]
    assert (result.version, result.sdk, t.id, t.environment) == ("v1", None, "t1", "default")
    assert (s.id, s.name, s.kind, s.status, s.parent_id, s.end_time) == ("s1", "call", "custom", "unset", None, None)
    assert s.input is None and s.output is None and s.usage is None and s.cost is None


def test_full_batch_decodes_every_field(media: str) -> None:
    payload = batch(
        trace(
            span(
                id="s1",
                parentId="s0",
                name="chat",
                kind="llm",
                endTime=T1,
                status="error",
                statusMessage="boom",
                model="gpt-4o-mini",
                provider="openai",
                usage={
                    "inputTokens": 10,
                    "outputTokens": 5,
                    "cacheReadTokens": 4,
                    "cacheWriteTokens": 6,
                    "reasoningTokens": 5,
                },
                cost={"total": 0.25},
                input=[{"role": "user"}],
                output="hi",
                attributes={"a": "x", "b": 1, "c": 1.5, "d": True},
            ),
            name="run",
            userId="u",
            sessionId="sess",
            environment="prod",
            release="1.2",
            tags=["a", "b"],
            metadata={"k": "v", "n": 2},
        ),
        sdk={"name": "foglamp-py", "version": "0.1"},
    )
    result = ok(payload, media)
    t, s = result.traces[0], result.traces[0].spans[0]
    assert (t.name, t.user_id, t.session_id, t.environment, t.release) == ("run", "u", "sess", "prod", "1.2")
    assert t.tags == ["a", "b"] and t.metadata == {"k": "v", "n": 2}
    assert (s.parent_id, s.kind, s.status, s.status_message, s.model, s.provider) == (
        "s0",
        "llm",
        "error",
        "boom",
        "gpt-4o-mini",
        "openai",
    )
    assert s.usage == Usage(
        input_tokens=10, output_tokens=5, cache_read_tokens=4, cache_write_tokens=6, reasoning_tokens=5
    )
    assert s.cost is not None and s.cost.total == 0.25
    assert s.attributes == {"a": "x", "b": 1, "c": 1.5, "d": True}
    assert s.end_time - s.start_time == timedelta(seconds=1.25)
    assert (result.sdk.name, result.sdk.version) == ("foglamp-py", "0.1")


def test_json_and_msgpack_give_the_same_batch() -> None:
    payload = batch(
        trace(
            span(usage={"inputTokens": 3}, input={"q": [1, 2.5, None, "é"]}, output=7, attributes={"x": False}),
            metadata={"m": 1.5},
        ),
        sdk={"name": "n", "version": "v"},
    )
    assert ok(payload, "json") == ok(payload, "msgpack")


def test_absent_usage_counts_are_zero(media: str) -> None:
    assert ok(batch(trace(span(usage={"outputTokens": 2}))), media).traces[0].spans[0].usage == (Usage(output_tokens=2))


@pytest.mark.parametrize("field", ["name", "userId", "sessionId", "release", "tags", "metadata"])
def test_optional_trace_fields_accept_null(media: str, field: str) -> None:
    ok(batch(trace(**{field: None})), media)


@pytest.mark.parametrize(
    "field",
    ["parentId", "endTime", "statusMessage", "model", "provider", "usage", "cost", "attributes"],
)
def test_optional_span_fields_accept_null(media: str, field: str) -> None:
    ok(batch(trace(span(**{field: None}))), media)


def test_unknown_fields_are_ignored_everywhere(media: str) -> None:
    extra = {"future": {"nested": [1, "x"]}, "newField": None}
    payload = batch(
        trace(span(usage={"inputTokens": 1, **extra}, cost={"total": 1, **extra}, **extra), **extra),
        sdk={"name": "n", "version": "v", **extra},
        **extra,
    )
    assert ok(payload, media) == ok(
        batch(trace(span(usage={"inputTokens": 1}, cost={"total": 1})), sdk={"name": "n", "version": "v"}),
        media,
    )


# -- input / output as JSON text ------------------------------------------------------------


def test_json_input_output_keep_the_raw_text() -> None:
    body = (
        b'{"version":"v1","traces":[{"id":"t","spans":[{"id":"s","name":"n","startTime":"'
        + T0.encode()
        + b'","input": {"b" : [1, 2.50] ,"a":"\\u00e9"} ,"output":"caf\xc3\xa9"}]}]}'
    )
    s = decode_batch(body, "json").traces[0].spans[0]
    assert s.input == b'{"b" : [1, 2.50] ,"a":"\\u00e9"}' and type(s.input) is bytes
    assert s.output == '"café"'.encode()


@pytest.mark.parametrize("value", [{"a": [1, {"b": None}]}, [1, "x"], "text", 3, 2.5, True, False])
def test_input_output_are_json_text(media: str, value: Any) -> None:
    s = ok(batch(trace(span(input=value, output=value))), media).traces[0].spans[0]
    assert isinstance(s.input, bytes) and json.loads(s.input) == value
    assert isinstance(s.output, bytes) and json.loads(s.output) == value


def test_input_output_null_or_absent_are_none(media: str) -> None:
    spans = ok(batch(trace(span(id="a", input=None, output=None), span(id="b"))), media)
    assert [(s.input, s.output) for s in spans.traces[0].spans] == [(None, None), (None, None)]


def test_msgpack_input_without_a_json_text_is_an_issue() -> None:
    ext = msgpack.ExtType(42, b"\x00")
    body = msgpack.packb(batch(trace(span(id="a", output=[ext]), span(id="b", input=ext))))
    result = decode_batch(body, "msgpack")
    assert isinstance(result, InvalidPayload)
    assert [(i["path"], i["code"]) for i in result.issues] == [
        (at(0, "output"), "invalid_value"),
        (at(1, "input"), "invalid_value"),
    ]


def test_msgpack_input_without_a_json_text_is_found_with_other_issues() -> None:
    body = msgpack.packb(batch(trace(span(name="", input=msgpack.ExtType(42, b"")))))
    result = decode_batch(body, "msgpack")
    assert isinstance(result, InvalidPayload)
    assert [(i["path"], i["code"]) for i in result.issues] == [
        (at(0, "name"), "too_short"),
        (at(0, "input"), "invalid_value"),
    ]


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset"),
    [("2025-01-01T10:00:00Z", 0), ("2025-01-01T10:00:00.123456+05:30", 330), ("2025-01-01T10:00:00-08:00", -480)],
)
def test_timestamps_are_timezone_aware(media: str, text: str, offset: int) -> None:
    s = ok(batch(trace(span(startTime=text, endTime=text))), media).traces[0].spans[0]
    assert s.start_time.utcoffset() == timedelta(minutes=offset) and s.end_time == s.start_time


def test_msgpack_native_timestamp_is_accepted() -> None:
    when = datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    s = ok(batch(trace(span(startTime=when))), "msgpack").traces[0].spans[0]
    assert s.start_time == when


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2025-01-01T10:00:00", "invalid_timestamp"),
        ("2025-01-01", "invalid_timestamp"),
        ("yesterday", "invalid_timestamp"),
        ("2025-13-01T10:00:00Z", "invalid_timestamp"),
        (1735725600, "invalid_type"),
        (None, "invalid_type"),
    ],
)
def test_start_time_must_be_rfc3339_with_offset(media: str, value: Any, code: str) -> None:
    assert issues(batch(trace(span(startTime=value))), media) == [(at(0, "startTime"), code)]


def test_end_time_must_be_rfc3339_with_offset(media: str) -> None:
    payload = batch(trace(span(endTime="2025-01-01T10:00:01")))
    assert issues(payload, media) == [(at(0, "endTime"), "invalid_timestamp")]


def test_end_before_start(media: str) -> None:
    payload = batch(trace(span(id="a", startTime=T1, endTime=T0), span(id="b", endTime=T0)))
    assert issues(payload, media) == [(at(0, "endTime"), "end_before_start")]


def test_end_before_start_compares_instants_across_offsets(media: str) -> None:
    # 10:30+02:00 is 08:30Z: an end at 09:00Z is after it.
    ok(batch(trace(span(startTime="2025-01-01T10:30:00+02:00", endTime="2025-01-01T09:00:00Z"))), media)
    payload = batch(trace(span(startTime="2025-01-01T09:00:00Z", endTime="2025-01-01T10:30:00+02:00")))
    assert issues(payload, media) == [(at(0, "endTime"), "end_before_start")]


# -- batch and trace structure -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"), [("v2", "invalid_value"), (1, "invalid_type"), (None, "invalid_type"), ("", "invalid_value")]
)
def test_version_must_be_v1(media: str, value: Any, code: str) -> None:
    assert issues(batch(version=value), media) == [(["version"], code)]


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        (batch(version=DROP), ["version"]),
        (batch(traces=DROP), ["traces"]),
        (batch(trace(id=DROP)), ["traces", 0, "id"]),
        (batch(trace(spans=DROP)), ["traces", 0, "spans"]),
        (batch(trace(span(id=DROP))), at(0, "id")),
        (batch(trace(span(name=DROP))), at(0, "name")),
        (batch(trace(span(startTime=DROP))), at(0, "startTime")),
        (batch(trace(span(cost={}))), at(0, "cost", "total")),
        (batch(sdk={"version": "1"}), ["sdk", "name"]),
        (batch(sdk={"name": "n"}), ["sdk", "version"]),
    ],
)
def test_required_fields(media: str, payload: dict, path: list) -> None:
    assert issues(payload, media) == [(path, "required")]


def test_traces_count_limits(media: str) -> None:
    assert issues(batch(traces=[]), media) == [(["traces"], "too_few")]
    many = [trace(id=f"t{i}") for i in range(1001)]
    assert issues(batch(*many), media) == [(["traces"], "too_many")]
    assert len(ok(batch(*many[:1000]), media).traces) == 1000


def test_spans_count_limits(media: str) -> None:
    assert issues(batch(trace(spans=[])), media) == [(["traces", 0, "spans"], "too_few")]
    many = [span(id=f"s{i}") for i in range(2001)]
    assert issues(batch(trace(*many)), media) == [(["traces", 0, "spans"], "too_many")]
    assert len(ok(batch(trace(*many[:2000])), media).traces[0].spans) == 2000


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        (batch(traces={"id": "t1"}), ["traces"]),
        (batch(traces=[5]), ["traces", 0]),
        (batch(trace(spans="s")), ["traces", 0, "spans"]),
        (batch(trace(spans=[None])), at(0)),
        (batch(trace(span(name=5))), at(0, "name")),
        (batch(trace(span(id=7))), at(0, "id")),
        (batch(trace(span(parentId=7))), at(0, "parentId")),
        (batch(trace(span(kind=None))), at(0, "kind")),
        (batch(trace(span(statusMessage=["x"]))), at(0, "statusMessage")),
        (batch(trace(span(usage=[1]))), at(0, "usage")),
        (batch(trace(span(cost=1.0))), at(0, "cost")),
        (batch(trace(span(attributes=["x"]))), at(0, "attributes")),
        (batch(trace(tags="a,b")), ["traces", 0, "tags"]),
        (batch(trace(environment=None)), ["traces", 0, "environment"]),
        (batch(sdk="foglamp"), ["sdk"]),
        (batch(sdk={"name": 1, "version": "v"}), ["sdk", "name"]),
        (batch(sdk={"name": "n", "version": 2}), ["sdk", "version"]),
    ],
)
def test_wrong_types(media: str, payload: dict, path: list) -> None:
    assert issues(payload, media) == [(path, "invalid_type")]


# -- string limits (in characters) ---------------------------------------------------------

_TRACE_LIMITS = [
    ("id", 1, 128),
    ("name", 0, 512),
    ("userId", 0, 256),
    ("sessionId", 0, 256),
    ("environment", 0, 64),
    ("release", 0, 128),
]
_SPAN_LIMITS = [("id", 1, 128), ("name", 1, 512), ("model", 0, 256), ("provider", 0, 64)]


@pytest.mark.parametrize(("field", "low", "high"), _TRACE_LIMITS)
def test_trace_string_limits(media: str, field: str, low: int, high: int) -> None:
    ok(batch(trace(**{field: "é" * high})), media)  # characters, not bytes
    assert issues(batch(trace(**{field: "x" * (high + 1)})), media) == [(["traces", 0, field], "too_long")]
    if low:
        assert issues(batch(trace(**{field: ""})), media) == [(["traces", 0, field], "too_short")]
    else:
        ok(batch(trace(**{field: ""})), media)


@pytest.mark.parametrize(("field", "low", "high"), _SPAN_LIMITS)
def test_span_string_limits(media: str, field: str, low: int, high: int) -> None:
    ok(batch(trace(span(**{field: "é" * high}))), media)
    assert issues(batch(trace(span(**{field: "x" * (high + 1)}))), media) == [(at(0, field), "too_long")]
    if low:
        assert issues(batch(trace(span(**{field: ""}))), media) == [(at(0, field), "too_short")]
    else:
        ok(batch(trace(span(**{field: ""}))), media)


def test_tags_limits(media: str) -> None:
    ok(batch(trace(tags=[f"t{i}" for i in range(50)])), media)
    ok(batch(trace(tags=["é" * 128])), media)
    assert issues(batch(trace(tags=["x"] * 51)), media) == [(["traces", 0, "tags"], "too_many")]
    assert issues(batch(trace(tags=["ok", "x" * 129, 3, "y" * 129])), media) == [
        (["traces", 0, "tags", 1], "too_long"),
        (["traces", 0, "tags", 2], "invalid_type"),
        (["traces", 0, "tags", 3], "too_long"),
    ]


# -- enums ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llm", "embedding", "tool", "retrieval", "agent", "chain", "custom"])
def test_every_kind_is_accepted(media: str, kind: str) -> None:
    assert ok(batch(trace(span(kind=kind))), media).traces[0].spans[0].kind == kind


@pytest.mark.parametrize("status", ["ok", "error", "unset"])
def test_every_status_is_accepted(media: str, status: str) -> None:
    assert ok(batch(trace(span(status=status))), media).traces[0].spans[0].status == status


@pytest.mark.parametrize(("field", "value"), [("kind", "LLM"), ("kind", "http"), ("status", "failed"), ("status", "")])
def test_enum_values(media: str, field: str, value: str) -> None:
    assert issues(batch(trace(span(**{field: value}))), media) == [(at(0, field), "invalid_value")]


# -- metadata / attributes --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["metadata", "attributes"])
def test_map_values_are_scalars(media: str, field: str) -> None:
    bad = {"ok": "s", "list": [1], "obj": {"a": 1}, "null": None, "n": 1, "f": 0.5, "b": True}
    payload = batch(trace(metadata=bad)) if field == "metadata" else batch(trace(span(attributes=bad)))
    base = ["traces", 0] if field == "metadata" else at(0)
    assert issues(payload, media) == [
        ([*base, field, "list"], "invalid_type"),
        ([*base, field, "obj"], "invalid_type"),
        ([*base, field, "null"], "invalid_type"),
    ]


def test_msgpack_map_keys_must_be_strings() -> None:
    body = msgpack.packb(batch(trace(metadata={1: "x"})))
    result = decode_batch(body, "msgpack")
    assert isinstance(result, InvalidPayload)
    assert [(i["path"], i["code"]) for i in result.issues] == [(["traces", 0, "metadata"], "invalid_type")]


# -- span ids ------------------------------------------------------------------------------------


def test_duplicate_span_ids_report_each_duplicate(media: str) -> None:
    payload = batch(trace(span(id="a"), span(id="b"), span(id="a"), span(id="a")))
    assert issues(payload, media) == [(at(2, "id"), "duplicate_id"), (at(3, "id"), "duplicate_id")]


def test_same_span_id_in_different_traces_is_fine(media: str) -> None:
    ok(batch(trace(span(id="a"), id="t1"), trace(span(id="a"), id="t2")), media)


def test_same_trace_id_twice_shares_span_ids(media: str) -> None:
    payload = batch(trace(span(id="a"), id="t1"), trace(span(id="b"), span(id="a"), id="t1"))
    assert issues(payload, media) == [(at(1, "id", ti=1), "duplicate_id")]


def test_parent_is_self(media: str) -> None:
    payload = batch(trace(span(id="a", parentId="a"), span(id="b", parentId="a")))
    assert issues(payload, media) == [(at(0, "parentId"), "parent_is_self")]


def test_unknown_parent_is_fine(media: str) -> None:
    ok(batch(trace(span(parentId="in-another-batch"))), media)


# -- usage and cost ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens", "reasoningTokens"]
)
@pytest.mark.parametrize(
    ("value", "code"),
    [
        (-1, "invalid_value"),
        (1.5, "invalid_type"),
        ("3", "invalid_type"),
        (True, "invalid_type"),
        (None, "invalid_type"),
        (2**53, "invalid_value"),
    ],
)
def test_token_counts_are_integers_ge_0(media: str, field: str, value: Any, code: str) -> None:
    usage = {"inputTokens": 10, "outputTokens": 10, field: value}
    assert issues(batch(trace(span(usage=usage))), media) == [(at(0, "usage", field), code)]


def test_cache_tokens_within_input_tokens(media: str) -> None:
    fine = {"inputTokens": 10, "cacheReadTokens": 4, "cacheWriteTokens": 6}
    ok(batch(trace(span(usage=fine))), media)
    payload = batch(
        trace(span(id="a", usage={**fine, "cacheWriteTokens": 7}), span(id="b", usage={"cacheReadTokens": 1}))
    )
    assert issues(payload, media) == [
        (at(0, "usage", "inputTokens"), "token_counts"),
        (at(1, "usage", "inputTokens"), "token_counts"),
    ]


def test_reasoning_tokens_within_output_tokens(media: str) -> None:
    ok(batch(trace(span(usage={"outputTokens": 5, "reasoningTokens": 5}))), media)
    payload = batch(trace(span(usage={"outputTokens": 5, "reasoningTokens": 6})))
    assert issues(payload, media) == [(at(0, "usage", "outputTokens"), "token_counts")]


def test_token_sums_use_the_valid_counts_of_a_partly_invalid_usage(media: str) -> None:
    usage = {"inputTokens": 1, "cacheReadTokens": 2, "outputTokens": -1, "reasoningTokens": 9}
    assert issues(batch(trace(span(usage=usage))), media) == [
        (at(0, "usage", "outputTokens"), "invalid_value"),
        (at(0, "usage", "inputTokens"), "token_counts"),
    ]


@pytest.mark.parametrize(("value", "code"), [(-0.01, "invalid_value"), ("1", "invalid_type"), (None, "invalid_type")])
def test_cost_total_is_a_number_ge_0(media: str, value: Any, code: str) -> None:
    assert issues(batch(trace(span(cost={"total": value}))), media) == [(at(0, "cost", "total"), code)]


def test_cost_total_accepts_zero_and_integers(media: str) -> None:
    payload = batch(trace(span(id="a", cost={"total": 0}), span(id="b", cost={"total": 2})))
    assert [s.cost.total for s in ok(payload, media).traces[0].spans] == [0.0, 2.0]


# -- many issues -------------------------------------------------------------------------------


def test_every_issue_is_reported_with_its_path(media: str) -> None:
    payload = batch(
        trace(
            span(id="a", name="", kind="x"),
            span(id="a", startTime="nope", parentId="a"),
            span(id="c", startTime=T1, endTime=T0, usage={"outputTokens": 1, "reasoningTokens": 2}),
            tags=["x" * 200],
        ),
        trace(id="", spans=[]),
        sdk={"name": "n"},
        version="v0",
    )
    assert issues(payload, media) == [
        (["version"], "invalid_value"),
        (["traces", 0, "tags", 0], "too_long"),
        (at(0, "name"), "too_short"),
        (at(0, "kind"), "invalid_value"),
        (at(1, "startTime"), "invalid_timestamp"),
        (["traces", 1, "id"], "too_short"),
        (["traces", 1, "spans"], "too_few"),
        (["sdk", "version"], "required"),
        (at(1, "parentId"), "parent_is_self"),
        (at(2, "endTime"), "end_before_start"),
        (at(2, "usage", "outputTokens"), "token_counts"),
        (at(1, "id"), "duplicate_id"),
    ]


def _bad_spans(n: int) -> dict:
    return batch(trace(*[span(id=f"s{i}", name="") for i in range(n)]))


def test_issues_are_capped_at_100(media: str) -> None:
    found = issues(_bad_spans(150), media)
    assert len(found) == 100
    assert found[:99] == [(at(i, "name"), "too_short") for i in range(99)]
    assert found[99] == ([], "too_many_issues")


def test_issue_cap_is_configurable_and_exact(media: str) -> None:
    assert issues(_bad_spans(5), media, max_issues=5) == [(at(i, "name"), "too_short") for i in range(5)]
    assert issues(_bad_spans(6), media, max_issues=5)[-1] == ([], "too_many_issues")
    assert len(issues(_bad_spans(6), media, max_issues=5)) == 5
    assert issues(_bad_spans(3), media, max_issues=1) == [([], "too_many_issues")]


def test_cap_also_counts_cross_field_issues(media: str) -> None:
    payload = batch(trace(*[span(id=f"s{i}", parentId=f"s{i}") for i in range(120)]))
    found = issues(payload, media)
    assert len(found) == 100 and found[-1] == ([], "too_many_issues")
    assert found[0] == (at(0, "parentId"), "parent_is_self")


# -- bodies that are not a payload ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"version": "v1",}',
        b"not json",
        b'{"version":"v1"} trailing',
        b"\xff{}",
        b'{"version":"v1","traces":[{"id":"\xc3\x28"}]}',
        b'{"future":"\xff"}',
        b"\xef\xbb\xbf{}",
        b"[1, 2]",
        b'"v1"',
        b"null",
        b"42",
    ],
)
def test_invalid_json_bodies(body: bytes) -> None:
    result = decode_batch(body, "json")
    assert isinstance(result, InvalidBody) and result.message


def test_invalid_json_syntax_after_the_first_schema_error_is_invalid_body() -> None:
    body = b'{"version":"v2","traces":[{'
    assert isinstance(decode_batch(body, "json"), InvalidBody)


def test_root_must_be_an_object_message() -> None:
    result = decode_batch(b"[]", "json")
    assert isinstance(result, InvalidBody) and "object" in result.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        b"\x81\xa1a",
        msgpack.packb([1, 2]),
        msgpack.packb("v1"),
        msgpack.packb({"version": "v1"}) + b"\x00",
        b"\x81\xa7version\xa2\xff\xfe",
    ],
)
def test_invalid_msgpack_bodies(body: bytes) -> None:
    result = decode_batch(body, "msgpack")
    assert isinstance(result, InvalidBody) and result.message


def test_json_number_out_of_range_is_an_issue() -> None:
    body = (
        b'{"version":"v1","traces":[{"id":"t","spans":[{"id":"s","name":"n","startTime":"'
        + T0.encode()
        + b'","usage":{"inputTokens":1e999}}]}]}'
    )
    result = decode_batch(body, "json")
    assert isinstance(result, InvalidPayload)
    assert result.issues[0]["path"] == at(0, "usage", "inputTokens")


def test_deeply_nested_bodies_are_invalid_body(media: str) -> None:
    body = encode(batch(trace(span(input=None))), media)
    if media == "json":
        body = body.replace(b'"input":null', b'"input":' + b"[" * 5000 + b"]" * 5000)
    else:  # 5000 one-item arrays around an empty one
        body = body.replace(b"\xa5input\xc0", b"\xa5input" + b"\x91" * 5000 + b"\x90")
    result = decode_batch(body, media)
    assert isinstance(result, InvalidBody) and "deep" in result.message


def test_enum_issues_list_the_allowed_values(media: str) -> None:
    result = decode_batch(encode(batch(trace(span(kind="http"))), media), media)
    assert isinstance(result, InvalidPayload)
    assert '"llm"' in result.issues[0]["message"] and '"custom"' in result.issues[0]["message"]


# --- added with the store's limits: values the ClickHouse columns cannot hold are issues
@pytest.mark.parametrize("field", ["startTime", "endTime"])
@pytest.mark.parametrize("value", ["1899-12-31T23:59:59Z", "2300-01-01T00:00:00Z", "0001-01-01T00:00:00Z"])
def test_timestamps_outside_the_store_range_are_issues(field: str, value: str) -> None:
    span = {"id": "s", "name": "n", "startTime": "2026-01-01T00:00:00Z", field: value}
    if field == "endTime":
        span["startTime"] = "1900-01-01T00:00:00Z"
    body = json.dumps({"version": "v1", "traces": [{"id": "t", "spans": [span]}]}).encode()
    result = decode_batch(body, "json")
    assert isinstance(result, InvalidPayload)
    assert {"path": ["traces", 0, "spans", 0, field], "code": "invalid_timestamp"}.items() <= result.issues[0].items()


def test_infinite_caller_cost_from_msgpack_is_an_issue() -> None:
    span = {"id": "s", "name": "n", "startTime": "2026-01-01T00:00:00Z", "cost": {"total": float("inf")}}
    result = decode_batch(msgpack.packb({"version": "v1", "traces": [{"id": "t", "spans": [span]}]}), "msgpack")
    assert isinstance(result, InvalidPayload)
    assert result.issues[0]["path"] == ["traces", 0, "spans", 0, "cost", "total"]
